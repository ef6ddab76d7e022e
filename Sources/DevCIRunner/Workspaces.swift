import DevCIGit
import DevCIWire
import Foundation

/// Where a runner's jobs run: slot 0 in the clone itself, further slots (`--parallel`) in clones of it beside
/// it (`<clone>.workspaces/<n>`), each checked out at the job's commit through libgit2 before the job starts.
struct Workspaces {
    let clonePath: String

    /// Why a workspace could not be made ready; the job ends as `error` with this reason.
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    func path(slot: Int) -> String {
        slot == 0 ? clonePath : "\(clonePath).workspaces/\(slot)"
    }

    /// Makes the slot's workspace hold the assignment's commit (cloning the slot the first time, fetching the
    /// job's repository when the commit is missing) and returns its path. `say` gets the steps for the job's log.
    func prepare(slot: Int, for a: JobAssignment, say: (String) -> Void) throws -> String {
        guard a.hasCheckout else { return try scratch(slot: slot, say: say) }
        let workspace = path(slot: slot)
        say("checking out \(a.commit) (\(a.branch)) in \(workspace)")
        do {
            if !FileManager.default.fileExists(atPath: workspace + "/.git") {
                try FileManager.default.createDirectory(atPath: (workspace as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                try GitRepository.clone(from: clonePath, to: workspace)
            }
            let repo = try GitRepository(path: workspace)
            if !repo.hasCommit(a.commit) {
                say("fetching \(a.repo)")
                try repo.fetch(from: a.repo)
            }
            guard repo.hasCommit(a.commit) else { throw Failure(description: "commit \(a.commit) is not in \(a.repo)") }
            // A job that was given secrets marks its workspace; the next checkout there drops ignored files too
            // (build caches included), so what that job left behind does not reach a job of another repository.
            let marker = workspace + "/.git/devci-had-secrets"
            let tainted = FileManager.default.fileExists(atPath: marker)
            if tainted { say("a job with secrets ran here before: removing ignored files too") }
            try repo.checkout(a.commit, removeIgnored: tainted)
            if tainted { try? FileManager.default.removeItem(atPath: marker) }
            if !a.secrets.isEmpty { FileManager.default.createFile(atPath: marker, contents: Data()) }
        } catch let failure as Failure {
            throw failure
        } catch {
            throw Failure(description: "checkout failed: \(error)")
        }
        return workspace
    }

    /// An empty folder for a job without a checkout (an ad-hoc job, a task run without a commit): emptied
    /// before each job, so nothing of an earlier one is left.
    func scratch(slot: Int, say: (String) -> Void) throws -> String {
        let folder = "\(clonePath).scratch/\(slot)"
        do {
            if FileManager.default.fileExists(atPath: folder) { try FileManager.default.removeItem(atPath: folder) }
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        } catch {
            throw Failure(description: "cannot make the empty folder \(folder): \(error)")
        }
        say("no checkout: running in the empty folder \(folder)")
        return folder
    }
}
