#define _GNU_SOURCE
#include "devci_spawn.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

// The group leader between the runner and the command (Laminar's "leader", in miniature): it outlives
// the command only to mirror its exit status, and if the runner dies it takes the whole group down, so
// nothing a job started survives its runner. Everything here runs after fork: async-signal-safe calls only.
static void leader_parent_died(int sig) {
    (void)sig;
    kill(0, SIGKILL);
    _exit(137);
}

static void reset_signals(void) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < 32; s++) {
        if (s != SIGKILL && s != SIGSTOP) signal(s, SIG_DFL);
    }
}

static void close_from(int lowest, int keep) {
    if (keep >= lowest) {
        if (keep > lowest) close_range(lowest, keep - 1, 0);
        lowest = keep + 1;
    }
    if (close_range(lowest, ~0U, 0) != 0) {
        for (int fd = lowest; fd < 4096; fd++) close(fd);
    }
}

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
        // The leader.
        int err = 0;
        setpgid(0, 0);
        reset_signals();
        signal(SIGHUP, leader_parent_died);
        signal(SIGTERM, SIG_IGN);  // a stop request is for the command; the runner escalates to SIGKILL
        signal(SIGINT, SIG_IGN);
        prctl(PR_SET_PDEATHSIG, SIGHUP);
        if (getppid() != parent) leader_parent_died(0);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(stdout_fd, 1) < 0 || dup2(stderr_fd, 2) < 0) err = errno;
        if (!err && cwd && chdir(cwd) != 0) err = errno;
        if (err) {
            ssize_t w = write(report[1], &err, sizeof err);
            (void)w;
            _exit(127);
        }
        close_from(3, report[1]);
        pid_t command = fork();
        if (command < 0) {
            err = errno;
            ssize_t w = write(report[1], &err, sizeof err);
            (void)w;
            _exit(127);
        }
        if (command == 0) {
            signal(SIGHUP, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
            signal(SIGINT, SIG_DFL);
            execve(path, argv, envp);
            err = errno;
            ssize_t w = write(report[1], &err, sizeof err);
            (void)w;
            _exit(127);
        }
        close(report[1]);  // exec succeeded or will report through its own copy
        int status;
        while (waitpid(command, &status, 0) < 0) {
            if (errno != EINTR) _exit(127);
        }
        if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
        // Die of the same signal, so the runner sees "killed by signal N", not a made-up exit status.
        int sig = WTERMSIG(status);
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        signal(sig, SIG_DFL);
        sigset_t only;
        sigemptyset(&only);
        sigaddset(&only, sig);
        sigprocmask(SIG_UNBLOCK, &only, NULL);
        kill(getpid(), sig);
        _exit(128 + sig);
    }
    close(report[1]);
    setpgid(pid, pid);  // also here, so the group exists before the runner signals it
    int child_err = 0;
    ssize_t n;
    do { n = read(report[0], &child_err, sizeof child_err); } while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == sizeof child_err) {
        kill(-pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        return child_err ? child_err : ECHILD;
    }
    *pid_out = pid;
    return 0;
}

int devci_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
