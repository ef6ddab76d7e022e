#pragma once
#include <sys/types.h>

/// How long the leader's final sweep may take at most, in seconds (see below). The runner's last-resort
/// SIGKILL of the group comes a margin after this.
#define DEVCI_LEADER_SWEEP_SECONDS 3

/// Starts `path` with `argv` and `envp` in `cwd`, under a small leader process in a new process group
/// (pgid == *pid, the leader's pid), with stdin from /dev/null, stdout and stderr on the given
/// descriptors and every other descriptor closed.
///
/// The leader is a child subreaper: whatever the command orphans (double-forked daemons, `setsid cmd &`)
/// is re-parented to it. When the job ends — the command exits, the leader receives
/// `devci_leader_stop_signal()` from its parent, or its parent dies — it sweeps: SIGKILL to its children
/// and to the rest of its group, reap, again, until it has no child left (or after
/// DEVCI_LEADER_SWEEP_SECONDS). So nothing the job started survives it, not even processes that left the
/// group or the session. Then it exits with the command's status (or dies of the signal that killed it);
/// after its parent died it exits 137. It ignores SIGTERM and SIGINT (those are for the command), and the
/// stop signal from anyone but its parent.
///
/// The parent-death signal follows the *thread* that calls this: call it from a thread that lives until
/// the leader is reaped. Returns 0 and sets *pid, or an errno value (the command could not be started).
int devci_spawn(const char *path, char *const argv[], char *const envp[], const char *cwd,
                int stdout_fd, int stderr_fd, pid_t *pid);

/// pipe2(fds, O_CLOEXEC): both ends close on exec, so no child inherits another job's pipe.
int devci_pipe_cloexec(int fds[2]);

/// The signal that asks a leader to end its job now: kill what is left, sweep, exit (SIGUSR1).
int devci_leader_stop_signal(void);

/// prctl(PR_SET_DUMPABLE, 0): other processes of the same user can no longer read this one's memory
/// (/proc/<pid>/mem, ptrace) or environment. Inherited across fork, reset by execve. Returns 0 or an errno value.
int devci_make_undumpable(void);
