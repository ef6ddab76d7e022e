#define _GNU_SOURCE
#include "devci_spawn.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

int devci_spawn(const char *path, char *const argv[], char *const envp[], const char *cwd,
                int stdout_fd, int stderr_fd, pid_t *pid_out) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return errno;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(report[0]);
        close(report[1]);
        return e;
    }
    if (pid == 0) {
        // Only async-signal-safe calls from here to exec.
        int err = 0;
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        for (int s = 1; s < 32; s++) {
            if (s != SIGKILL && s != SIGSTOP) signal(s, SIG_DFL);
        }
        signal(SIGPIPE, SIG_DFL);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(stdout_fd, 1) < 0 || dup2(stderr_fd, 2) < 0) err = errno;
        if (!err && cwd && chdir(cwd) != 0) err = errno;
        if (!err) {
            int keep = report[1];
            if (keep > 3) close_range(3, keep - 1, 0);
            if (close_range(keep + 1, ~0U, 0) != 0) {
                for (int fd = keep + 1; fd < 4096; fd++) close(fd);
            }
            execve(path, argv, envp);
            err = errno;
        }
        ssize_t w = write(report[1], &err, sizeof err);
        (void)w;
        _exit(127);
    }
    close(report[1]);
    setpgid(pid, pid);  // also here, so the group exists before the parent signals it
    int child_err = 0;
    ssize_t n;
    do { n = read(report[0], &child_err, sizeof child_err); } while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == sizeof child_err) {
        int status;
        waitpid(pid, &status, 0);
        return child_err ? child_err : ECHILD;
    }
    *pid_out = pid;
    return 0;
}

int devci_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
