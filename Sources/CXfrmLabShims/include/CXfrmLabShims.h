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

#endif
