import ArgumentParser
import DevCIWire
import Foundation
import HummingbirdBcrypt

struct UserCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user",
        abstract: "Manage the people who may sign in to the reporter.",
        subcommands: [Add.self]
    )

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a users: entry with a bcrypt hash of a password, for the configuration folder.",
            discussion: "The password is asked twice on a terminal, or read as one line from standard input (`devci user add ann < pw`). It is never taken from the command line."
        )

        @Argument(help: "The user name: letters, digits, '.', '_', '-'.") var name: String
        @Option(help: "bcrypt's cost (each step doubles the time a check takes).") var cost = 12

        func validate() throws {
            guard Validate.isRunnerName(name) else { throw ValidationError("the name must be 1-64 of letters, digits, '.', '_', '-'") }
            guard (10...16).contains(cost) else { throw ValidationError("--cost must be from 10 to 16") }
        }

        func run() throws {
            let password: String
            if isatty(STDIN_FILENO) == 1 {
                guard let first = getpass("Password for \(name): ").map({ String(cString: $0) }),
                      let second = getpass("Again: ").map({ String(cString: $0) }) else { throw Failure("no password read") }
                guard first == second else { throw Failure("the two passwords differ: nothing was written") }
                password = first
            } else {
                password = readLine(strippingNewline: true) ?? ""
            }
            guard password.count >= 8 else { throw Failure("the password must be at least 8 characters") }
            guard password.utf8.count <= 72 else { throw Failure("bcrypt uses only the first 72 bytes of a password: choose a shorter one") }
            let hash = Bcrypt.hash(password, cost: UInt8(cost))
            print("users:\n  \(name): \"\(hash)\"")
        }
    }
}
