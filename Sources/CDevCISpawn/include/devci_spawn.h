#pragma once
#include <sys/types.h>

/// Starts `path` with `argv` and `envp` in `cwd`, in a new process group of its own (pgid == pid), with
/// stdin from /dev/null, stdout and stderr on the given descriptors, every other descriptor closed, and
/// SIGKILL as its parent-death signal (the signal follows the *thread* that calls this: call it from a
/// thread that lives until the child is reaped). Returns 0 and sets *pid, or an errno value.
int devci_spawn(const char *path, char *const argv[], char *const envp[], const char *cwd,
                int stdout_fd, int stderr_fd, pid_t *pid);

/// pipe2(fds, O_CLOEXEC): both ends close on exec, so no child inherits another job's pipe.
int devci_pipe_cloexec(int fds[2]);
