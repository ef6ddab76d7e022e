import CDevCISpawn
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Keeps a secret this process was started with out of reach of the jobs it runs. A job runs as the same
/// user as its runner, so it can read `/proc/<runner>/environ` and `/proc/<runner>/cmdline`; those show the
/// memory the process was started with, which `unsetenv` alone leaves in place. So the secret's bytes are
/// overwritten where the kernel shows them, once it has been read.
public enum Secrets {
    /// Takes the token (or any secret) out of reach of the jobs this process starts: scrubs the variable and
    /// the option, and makes this process non-dumpable, so that a job of the same user cannot read this
    /// process's memory (`/proc/<pid>/mem`, ptrace) where the secret still lives. The job leader, a fork,
    /// inherits that; the job itself, after its `execve`, is an ordinary process again.
    public static func guardSecret(variable: String, option: String) {
        scrub(variable)
        scrubArgument(option)
        _ = devci_make_undumpable()
    }

    /// Removes `name` from the environment and zeroes its original bytes.
    public static func scrub(_ name: String) {
        let prefix = name + "="
        var originals: [UnsafeMutablePointer<CChar>] = []
        var i = 0
        while let entry = environ[i] {
            if strncmp(entry, prefix, prefix.utf8.count) == 0 { originals.append(entry) }
            i += 1
        }
        unsetenv(name)
        for entry in originals { memset(entry, 0, strlen(entry)) }
    }

    /// Zeroes the value of `--option VALUE` or `--option=VALUE` in this process's command line as the
    /// kernel shows it (after the arguments were parsed).
    public static func scrubArgument(_ option: String) {
        let argv = CommandLine.unsafeArgv
        for i in 1..<Int(CommandLine.argc) {
            guard let arg = argv[i] else { continue }
            let text = String(cString: arg)
            if text == option, i + 1 < Int(CommandLine.argc), let value = argv[i + 1] {
                memset(value, 0, strlen(value))
            } else if text.hasPrefix(option + "=") {
                let keep = option.utf8.count + 1
                memset(arg + keep, 0, strlen(arg) - keep)
            }
        }
    }
}
