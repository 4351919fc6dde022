#define _GNU_SOURCE
#include "CXfrmLabShims.h"
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <grp.h>
#include <linux/nsfs.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <libmnl/libmnl.h>

int xl_unshare_netns(void) { return unshare(CLONE_NEWNET); }

int xl_setns_net(int fd) { return setns(fd, CLONE_NEWNET); }

int xl_bind_mount(const char *source, const char *target) {
    return mount(source, target, "none", MS_BIND, NULL);
}

int xl_umount_detach(const char *target) { return umount2(target, MNT_DETACH); }

int xl_make_shared_mountpoint(const char *path) {
    if (mount("", path, "none", MS_SHARED | MS_REC, NULL) == 0) return 0;
    if (errno != EINVAL) return -1;
    if (mount(path, path, "none", MS_BIND | MS_REC, NULL) != 0) return -1;
    return mount("", path, "none", MS_SHARED | MS_REC, NULL);
}

pid_t xl_gettid(void) { return (pid_t)syscall(SYS_gettid); }

size_t xl_mnl_socket_buffer_size(void) { return MNL_SOCKET_BUFFER_SIZE; }

pid_t xl_spawn(const char *path, char *const argv[], char *const envp[],
               int netns_fd, int stdin_fd, int stdout_fd, int stderr_fd) {
    return xl_spawn_as(path, argv, envp, -1, netns_fd, stdin_fd, stdout_fd, stderr_fd);
}

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = write(fd, text, strlen(text));
    int e = errno;
    close(fd);
    if (n != (ssize_t)strlen(text)) { errno = n < 0 ? e : EIO; return -1; }
    return 0;
}

int xl_make_owned_netns(const char *target, uid_t uid, gid_t gid, const char **step) {
    int ready[2], go[2];
    *step = "pipe";
    if (pipe2(ready, O_CLOEXEC) != 0) return -1;
    if (pipe2(go, O_CLOEXEC) != 0) { close(ready[0]); close(ready[1]); return -1; }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        // Child (single-threaded): become the unprivileged user, then unshare as that user.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(125);
        close(ready[0]);
        close(go[1]);  // else the read below never sees the parent's end close
        int err = 0;
        if (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0) err = errno ? errno : EPERM;
        else if (unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) err = errno;
        (void)!write(ready[1], &err, sizeof err);
        char c;
        (void)!read(go[0], &c, 1);  // until the parent has mapped and pinned it
        _exit(0);
    }
    close(ready[1]);
    close(go[0]);
    if (pid < 0) { *step = "fork"; close(ready[0]); close(go[1]); return -1; }
    int err = 0, result = 0;
    if (read(ready[0], &err, sizeof err) != (ssize_t)sizeof err) err = EIO;
    char path[64], text[64];
    if (err != 0) {
        *step = "unshare(CLONE_NEWUSER|CLONE_NEWNET) as the unprivileged user";
        result = -1;
    } else {
        snprintf(text, sizeof text, "0 %u 1\n", (unsigned)uid);
        snprintf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
        if (write_file(path, text) != 0) { *step = "write uid_map"; err = errno; result = -1; }
        snprintf(path, sizeof path, "/proc/%d/setgroups", (int)pid);
        if (result == 0 && write_file(path, "deny") != 0) { *step = "write setgroups"; err = errno; result = -1; }
        snprintf(text, sizeof text, "0 %u 1\n", (unsigned)gid);
        snprintf(path, sizeof path, "/proc/%d/gid_map", (int)pid);
        if (result == 0 && write_file(path, text) != 0) { *step = "write gid_map"; err = errno; result = -1; }
        snprintf(path, sizeof path, "/proc/%d/ns/net", (int)pid);
        if (result == 0 && mount(path, target, "none", MS_BIND, NULL) != 0) { *step = "mount(MS_BIND)"; err = errno; result = -1; }
    }
    close(go[1]);  // the child may go: the bind mount keeps the namespaces
    close(ready[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    errno = err;
    return result;
}

int xl_owning_userns(int ns_fd) { return ioctl(ns_fd, NS_GET_USERNS); }

int xl_socket_as(int userns_fd, int netns_fd, int domain, int type, int protocol) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(125);
        close(pair[0]);
        int err = 0, s = -1;
        // The network namespace first: once in the user namespace, root of the initial one
        // could no longer enter a namespace it does not own.
        if (setns(netns_fd, CLONE_NEWNET) != 0 || setns(userns_fd, CLONE_NEWUSER) != 0
            || setresgid(0, 0, 0) != 0 || setresuid(0, 0, 0) != 0) err = errno;
        else if ((s = socket(domain, type | SOCK_CLOEXEC, protocol)) < 0) err = errno;
        char control[CMSG_SPACE(sizeof(int))];
        memset(control, 0, sizeof control);
        struct iovec iov = { .iov_base = &err, .iov_len = sizeof err };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (s >= 0) {
            msg.msg_control = control;
            msg.msg_controllen = sizeof control;
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &s, sizeof(int));
        }
        (void)!sendmsg(pair[1], &msg, 0);
        _exit(0);
    }
    close(pair[1]);
    if (pid < 0) { close(pair[0]); return -1; }
    int err = EIO, fd = -1;
    char control[CMSG_SPACE(sizeof(int))];
    struct iovec iov = { .iov_base = &err, .iov_len = sizeof err };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    ssize_t n = recvmsg(pair[0], &msg, MSG_CMSG_CLOEXEC);
    if (n == (ssize_t)sizeof err && err == 0) {
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        if (c && c->cmsg_type == SCM_RIGHTS) memcpy(&fd, CMSG_DATA(c), sizeof(int));
        else err = EIO;
    }
    close(pair[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (fd < 0) { errno = err ? err : EIO; return -1; }
    return fd;
}

pid_t xl_spawn_as(const char *path, char *const argv[], char *const envp[],
                  int userns_fd, int netns_fd, int stdin_fd, int stdout_fd, int stderr_fd) {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(125);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    // Child: async-signal-safe calls only.
    if (netns_fd >= 0 && setns(netns_fd, CLONE_NEWNET) != 0) _exit(126);
    // Into the user namespace after the network namespace, as its root.
    if (userns_fd >= 0 && (setns(userns_fd, CLONE_NEWUSER) != 0 || setresgid(0, 0, 0) != 0 || setresuid(0, 0, 0) != 0)) _exit(126);
    if (stdin_fd >= 0) dup2(stdin_fd, 0);
    if (stdout_fd >= 0) dup2(stdout_fd, 1);
    if (stderr_fd >= 0) dup2(stderr_fd, 2);
    // Everything above 2 is the parent's (sockets, namespace files): close it.
    if (syscall(SYS_close_range, 3U, ~0U, 0U) != 0)
        for (int fd = 3; fd < 1024; fd++) close(fd);
    execve(path, argv, envp);
    _exit(127);
}
