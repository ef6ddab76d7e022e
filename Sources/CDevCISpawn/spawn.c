#define _GNU_SOURCE
#include "devci_spawn.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// The group leader between the runner and the command (Laminar's "leader", in miniature). It is a child
// subreaper, so whatever the command orphans (a double-forked daemon, a `setsid cmd &`) is re-parented to
// it instead of to init. When the job ends for any reason (the command exits, the runner's stop escalates,
// the runner dies) the leader sweeps: it SIGKILLs its children and the rest of its process group, reaps,
// and repeats until it has no children left, so nothing a job started survives it, even processes that left
// the group or the session. Only then does it exit, mirroring the command's status.
//
// Everything here runs after fork in a multi-threaded parent: async-signal-safe calls only (no malloc,
// stdio, opendir; /proc is read with open/read/getdents64/close).

// The runner asks the leader to end the job now (after the stop grace) with this signal; the leader takes it
// only from its parent. See devci_spawn.h.
#define LEADER_STOP_SIGNAL SIGUSR1
// The sweep gives up after this long (processes it may not signal, or stuck in the kernel), so the runner's
// last-resort kill of the group, DEVCI_LEADER_SWEEP_SECONDS + a margin after the stop signal, comes later.
#define SWEEP_MILLIS (DEVCI_LEADER_SWEEP_SECONDS * 1000)
#define SWEEP_MAX_ROUNDS 1000

static pid_t self_pid;

static int64_t now_millis(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
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

// Reaps every child that has ended, noting the command's status. Returns 1 when no child is left at all.
static int reap_ready(pid_t command, int *status, int *command_done) {
    for (;;) {
        int st;
        pid_t p = waitpid(-1, &st, WNOHANG);
        if (p > 0) {
            if (p == command) {
                *status = st;
                *command_done = 1;
            }
            continue;
        }
        if (p == 0) return 0;
        if (errno == EINTR) continue;
        return 1;  // ECHILD
    }
}

// /proc/<name>/stat → state, ppid, pgrp. 0 on success.
static int read_stat(int procfd, const char *name, char *state, pid_t *ppid, pid_t *pgrp) {
    char path[40];
    size_t len = strlen(name);
    if (len > sizeof path - 6) return -1;
    memcpy(path, name, len);
    memcpy(path + len, "/stat", 6);
    int fd = openat(procfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char buf[512];
    ssize_t n;
    do { n = read(fd, buf, sizeof buf - 1); } while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    // "pid (comm) S ppid pgrp ...": comm may hold spaces and ')', the fields after it are numbers.
    char *p = NULL;
    for (ssize_t i = n - 1; i >= 0; i--) {
        if (buf[i] == ')') { p = buf + i; break; }
    }
    if (!p || p[1] != ' ' || !p[2] || p[3] != ' ') return -1;
    *state = p[2];
    p += 4;
    long fields[2];
    for (int f = 0; f < 2; f++) {
        int neg = 0;
        long v = 0;
        if (*p == '-') { neg = 1; p++; }
        if (*p < '0' || *p > '9') return -1;
        while (*p >= '0' && *p <= '9') v = v * 10 + (*p++ - '0');
        if (*p != ' ') return -1;
        p++;
        fields[f] = neg ? -v : v;
    }
    *ppid = (pid_t)fields[0];
    *pgrp = (pid_t)fields[1];
    return 0;
}

// SIGKILL a member of our group that is not our child. A pidfd pins the process while we check it is still
// in the group, so a pid that was reused since the scan is never hit.
static int kill_group_member(int procfd, const char *name, pid_t pid) {
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0) {
        char state;
        pid_t ppid, pgrp;
        int ok = read_stat(procfd, name, &state, &ppid, &pgrp) == 0 && pgrp == self_pid &&
                 syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0) == 0;
        close(fd);
        return ok;
    }
    if (errno == ESRCH) return 0;
#endif
    return kill(pid, SIGKILL) == 0;  // no pidfds: the pid was in our group a moment ago
}

struct linux_dirent64_ {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

// One pass over /proc: SIGKILL every child of ours (orphans re-parented to us included) and every other
// member of our process group. A child is never reaped between the scan and the kill (we reap only
// elsewhere), so its pid cannot have been reused. Returns how many it signalled, -1 if /proc cannot be read.
static int kill_round(void) {
    int procfd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (procfd < 0) return -1;
    int signalled = 0;
    _Alignas(8) char buf[4096];
    for (;;) {
        long n = syscall(SYS_getdents64, procfd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (long off = 0; off < n;) {
            struct linux_dirent64_ *d = (struct linux_dirent64_ *)(buf + off);
            off += d->d_reclen;
            const char *name = d->d_name;
            if (name[0] < '1' || name[0] > '9') continue;
            long pid = 0;
            const char *c = name;
            while (*c >= '0' && *c <= '9' && pid < 0x7fffffff) pid = pid * 10 + (*c++ - '0');
            if (*c || pid == self_pid) continue;
            char state;
            pid_t ppid, pgrp;
            if (read_stat(procfd, name, &state, &ppid, &pgrp) != 0) continue;
            if (ppid == self_pid) {
                if (state == 'Z' || kill((pid_t)pid, SIGKILL) == 0) signalled++;
            } else if (pgrp == self_pid && state != 'Z') {
                signalled += kill_group_member(procfd, name, (pid_t)pid);
            }
        }
    }
    close(procfd);
    return signalled;
}

// Kills everything left of the job and reaps it. Each round kills our children and the rest of our group;
// a killed process's own children are re-parented to us (the subreaper) and fall in the next round, so
// whole trees go. Ends when no child is left, when nothing left can be signalled (say, a process that
// changed its user), or after SWEEP_MILLIS / SWEEP_MAX_ROUNDS, so a job that forks without end cannot
// hold the leader for ever. Returns -1 when /proc cannot be read (nothing was swept), else 0.
static int sweep(pid_t command, int *status, int *command_done) {
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    int64_t deadline = now_millis() + SWEEP_MILLIS;
    for (int round = 0; round < SWEEP_MAX_ROUNDS; round++) {
        if (reap_ready(command, status, command_done)) return 0;
        int64_t left = deadline - now_millis();
        if (left <= 0) return 0;
        int signalled = kill_round();
        if (signalled < 0 && round == 0) return -1;
        if (signalled <= 0) {
            // Nothing we may signal is left: grant what remains a last moment to be reaped, then go.
            struct timespec t = {0, 20 * 1000000};
            sigtimedwait(&chld, NULL, &t);
            reap_ready(command, status, command_done);
            return 0;
        }
        // Wait for a death (or a short while) before scanning again for the orphans it left us.
        if (left > 10) left = 10;
        struct timespec t = {0, (long)left * 1000000};
        sigtimedwait(&chld, NULL, &t);
    }
    return 0;
}

// Exit with the command's status, or die of the same signal, so the runner sees "killed by signal N".
static void exit_like(int status) {
    if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
    int sig = WTERMSIG(status);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    signal(sig, SIG_DFL);
    sigset_t only;
    sigemptyset(&only);
    sigaddset(&only, sig);
    sigprocmask(SIG_UNBLOCK, &only, NULL);
    kill(self_pid, sig);
    _exit(128 + sig);
}

static void leader(pid_t parent, pid_t command) {
    sigset_t waitset;
    sigemptyset(&waitset);
    sigaddset(&waitset, SIGCHLD);
    sigaddset(&waitset, SIGHUP);
    sigaddset(&waitset, LEADER_STOP_SIGNAL);
    int status = 0, command_done = 0, parent_died = 0;
    for (;;) {
        reap_ready(command, &status, &command_done);  // also reaps orphans that ended while the job runs
        if (command_done) break;
        siginfo_t si;
        int s = sigwaitinfo(&waitset, &si);
        if (s < 0) continue;  // EINTR
        // SIGHUP is the parent-death signal (SI_USER with the dying parent's pid; no other process can send
        // SI_USER with a pid not its own); a hang-up from the job is not for us.
        if (s == SIGHUP && ((si.si_code == SI_USER && si.si_pid == parent) || getppid() != parent)) {
            parent_died = 1;
            break;
        }
        if (s == LEADER_STOP_SIGNAL && si.si_code == SI_USER && si.si_pid == parent) break;
    }
    if (sweep(command, &status, &command_done) < 0) {
        // No /proc to find what left the group: fall back to the group itself. After the runner died, the whole
        // group goes, this leader with it; otherwise the command goes now and the runner kills the group once
        // this leader has exited.
        if (parent_died) kill(0, SIGKILL);
        if (!command_done) kill(command, SIGKILL);
        int st;
        while (!command_done && waitpid(command, &st, 0) == command) { status = st; command_done = 1; }
    }
    if (parent_died) _exit(137);
    if (!command_done) {
        // The command outlived the sweep (stuck in the kernel): it was sent SIGKILL, so say so.
        status = SIGKILL;
    }
    exit_like(status);
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
        self_pid = getpid();
        setpgid(0, 0);
        reset_signals();
        // Child deaths, the parent-death signal and the stop signal are taken with sigwaitinfo, never
        // delivered, so no wake-up is lost between a check and the wait.
        sigset_t waitset;
        sigemptyset(&waitset);
        sigaddset(&waitset, SIGCHLD);
        sigaddset(&waitset, SIGHUP);
        sigaddset(&waitset, LEADER_STOP_SIGNAL);
        sigprocmask(SIG_BLOCK, &waitset, NULL);
        signal(SIGTERM, SIG_IGN);  // a stop request is for the command; the runner escalates with LEADER_STOP_SIGNAL
        signal(SIGINT, SIG_IGN);
        signal(SIGTSTP, SIG_IGN);  // a job stopping its group must not stop the leader
        signal(SIGTTIN, SIG_IGN);
        signal(SIGTTOU, SIG_IGN);
        prctl(PR_SET_PDEATHSIG, SIGHUP);
        prctl(PR_SET_CHILD_SUBREAPER, 1);
        if (getppid() != parent) _exit(137);  // the runner died before the parent-death signal was set
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
            // The subreaper attribute and the parent-death signal are not inherited; the mask and ignores are.
            reset_signals();
            execve(path, argv, envp);
            err = errno;
            ssize_t w = write(report[1], &err, sizeof err);
            (void)w;
            _exit(127);
        }
        close(report[1]);  // exec succeeded or will report through its own copy
        leader(parent, command);
        _exit(127);  // not reached: the leader exits like the command
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

int devci_leader_stop_signal(void) { return LEADER_STOP_SIGNAL; }

int devci_make_undumpable(void) { return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0 ? 0 : errno; }
