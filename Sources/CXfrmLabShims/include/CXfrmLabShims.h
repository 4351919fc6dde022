#ifndef XFRMLAB_SHIMS_H
#define XFRMLAB_SHIMS_H
#include <sys/types.h>
#include <stddef.h>

// unshare, setns, CLONE_NEWNET and mount flags need _GNU_SOURCE, which Swift's Glibc
// import is compiled without; these plain prototypes are defined in shims.c, which has it.

/// unshare(CLONE_NEWNET) for the calling thread. Returns 0 or -1 with errno.
int xl_unshare_netns(void);
/// setns(fd, CLONE_NEWNET) for the calling thread. Returns 0 or -1 with errno.
int xl_setns_net(int fd);
/// Bind-mounts `source` on `target` (an existing file): how a namespace outlives its thread.
int xl_bind_mount(const char *source, const char *target);
/// Lazy unmount (MNT_DETACH), so a busy namespace file still disappears from /run/netns.
int xl_umount_detach(const char *target);
/// Makes `path` a shared mount point, binding it on itself first when it is not one
/// (what `ip netns add` does for /run/netns, so other mount namespaces see our files).
int xl_make_shared_mountpoint(const char *path);
/// The kernel thread id of the caller.
pid_t xl_gettid(void);
/// MNL_SOCKET_BUFFER_SIZE, a macro that does not import.
size_t xl_mnl_socket_buffer_size(void);

/// fork()s a child that enters the network namespace `netns_fd` (skipped when < 0),
/// takes `stdin_fd`/`stdout_fd`/`stderr_fd` (each skipped when < 0), dies with its parent,
/// and execve()s `path`. Only async-signal-safe calls run between fork and exec.
/// Returns the child's pid, or -1 with errno when fork fails; a failed setns or exec
/// ends the child with status 126 / 127.
pid_t xl_spawn(const char *path, char *const argv[], char *const envp[],
               int netns_fd, int stdin_fd, int stdout_fd, int stderr_fd);

/// A network namespace owned by a new user namespace, made as an unprivileged user would: a
/// forked child takes `uid`/`gid`, unshares a user and a network namespace, the parent maps root
/// inside to `uid`/`gid` and bind-mounts the child's network namespace on `target` (an existing
/// file). Returns 0, or -1 with errno (of the step that failed; `*step` names it).
int xl_make_owned_netns(const char *target, uid_t uid, gid_t gid, const char **step);
/// The user namespace owning the namespace `ns_fd` (NS_GET_USERNS): a new descriptor, or -1.
int xl_owning_userns(int ns_fd);
/// socket(domain, type, protocol) opened by a forked child that entered `netns_fd` and then
/// the user namespace `userns_fd` as its root: the socket carries that root's credentials
/// (what netlink_ns_capable checks), and comes back over SCM_RIGHTS. Returns it, or -1 with errno.
int xl_socket_as(int userns_fd, int netns_fd, int domain, int type, int protocol);
/// Like xl_spawn, with the child entering `userns_fd` (as its root; skipped when < 0) after the
/// network namespace.
pid_t xl_spawn_as(const char *path, char *const argv[], char *const envp[],
                  int userns_fd, int netns_fd, int stdin_fd, int stdout_fd, int stderr_fd);

#endif
