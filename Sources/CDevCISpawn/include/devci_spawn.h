#pragma once
#include <sys/types.h>

/// Starts `path` with `argv` and `envp` in `cwd`, under a small leader process in a new process group
/// (pgid == *pid, the leader's pid), with stdin from /dev/null, stdout and stderr on the given
/// descriptors and every other descriptor closed. The leader exits with the command's status (or dies
/// of the signal that killed it) and, when its parent dies, kills the whole group. The parent-death signal follows the
/// *thread* that calls this: call it from a thread that lives until the leader is reaped.
/// Returns 0 and sets *pid, or an errno value (the command could not be started).
int devci_spawn(const char *path, char *const argv[], char *const envp[], const char *cwd,
                int stdout_fd, int stderr_fd, pid_t *pid);

/// pipe2(fds, O_CLOEXEC): both ends close on exec, so no child inherits another job's pipe.
int devci_pipe_cloexec(int fds[2]);
