import ArgumentParser
import DevCIWire
import Foundation
import HummingbirdBcrypt
import Yams

struct UserCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user",
        abstract: "Manage the people who may sign in to the reporter.",
        subcommands: [Add.self]
    )

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a user with a bcrypt hash of a password into the configuration folder (or print the entry).",
            discussion: "The password is asked twice on a terminal, or read as one line from standard input (`devci user add ann < pw`). It is never taken from the command line."
        )

        @Argument(help: "The user name: letters, digits, '.', '_', '-'.") var name: String
        @Option(help: "bcrypt's cost (each step doubles the time a check takes).") var cost = 12
        @Option(help: "The configuration folder: the user is added to (or replaced in) its users.yml. Without it, the entry is printed.")
        var config: String?

        func validate() throws {
            guard Validate.isRunnerName(name) else { throw ValidationError("the name must be 1-64 of letters, digits, '.', '_', '-'") }
            guard (10...13).contains(cost) else { throw ValidationError("--cost must be from 10 to 13") }
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
            guard let config else {
                print("users:\n  \(name): \"\(hash)\"")
                return
            }
            let path = (config as NSString).appendingPathComponent("users.yml")
            var users: [String: String] = [:]
            if let data = FileManager.default.contents(atPath: path) {
                let text = String(decoding: data, as: UTF8.self)
                guard let root = try? Yams.load(yaml: text) as? [String: Any], Set(root.keys).isSubset(of: ["users"]),
                      let existing = (root["users"] ?? [String: String]()) as? [String: String] else {
                    throw Failure("\(path) holds more than a users: mapping of names to hashes: add the entry by hand")
                }
                users = existing
            }
            let replaced = users[name] != nil
            users[name] = hash
            let text = "# Made by devci user add: names and bcrypt hashes of who may sign in to the reporter.\nusers:\n"
                + users.keys.sorted().map { "  \($0): \"\(users[$0]!)\"\n" }.joined()
            let temporary = path + ".tmp-\(getpid())"
            guard FileManager.default.createFile(atPath: temporary, contents: Data(text.utf8), attributes: [.posixPermissions: 0o640]) else {
                throw Failure("cannot write \(temporary)")
            }
            guard rename(temporary, path) == 0 else {
                unlink(temporary)
                throw Failure("cannot replace \(path): \(String(cString: strerror(errno)))")
            }
            print("\(replaced ? "replaced" : "added") \(name) in \(path): a reporter following this folder takes it within seconds")
        }
    }
}
