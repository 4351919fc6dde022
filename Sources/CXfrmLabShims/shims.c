#define _GNU_SOURCE
#include "CXfrmLabShims.h"
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <sys/mount.h>
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
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) return pid;
    // Child: async-signal-safe calls only.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(125);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (netns_fd >= 0 && setns(netns_fd, CLONE_NEWNET) != 0) _exit(126);
    if (stdin_fd >= 0) dup2(stdin_fd, 0);
    if (stdout_fd >= 0) dup2(stdout_fd, 1);
    if (stderr_fd >= 0) dup2(stderr_fd, 2);
    // Everything above 2 is the parent's (sockets, namespace files): close it.
    if (syscall(SYS_close_range, 3U, ~0U, 0U) != 0)
        for (int fd = 3; fd < 1024; fd++) close(fd);
    execve(path, argv, envp);
    _exit(127);
}
