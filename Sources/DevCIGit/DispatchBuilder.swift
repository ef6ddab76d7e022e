import DevCIWire

/// The one way to build the `dispatch` of a commit from a local repository: its `.devci.yml` at that commit
/// (the dispatcher never reaches the repository), and its title and author for people. The observer,
/// `devci dispatch` and the triggers to come all use it.
public enum DispatchBuilder {
    /// The dispatch of `commit` on `branch` of `repository`, named `repo` on the wire.
    public static func dispatch(of commit: String, in repository: GitRepository, repo: String, branch: String,
                                mark: MarkUpdate = .always) -> ClientMessage {
        let info = (try? repository.summary(of: commit)) ?? (title: "", author: "")
        return .dispatch(repo: repo, commit: commit, branch: branch, pipeline: pipeline(of: commit, in: repository),
                         title: info.title, author: info.author, mark: mark)
    }

    /// The `untested` message of a commit left unbuilt before `before`, for bisection.
    public static func untested(_ commit: String, before: String, in repository: GitRepository, repo: String, branch: String,
                                cut: Bool = false) -> ClientMessage {
        let info = (try? repository.summary(of: commit)) ?? (title: "", author: "")
        return .untested(UntestedCommit(repo: repo, branch: branch, commit: commit, before: before, pipeline: pipeline(of: commit, in: repository),
                                        title: info.title, author: info.author, cut: cut))
    }

    /// The pipeline file of `commit` as a dispatch carries it: its text, none, or why it cannot be sent.
    public static func pipeline(of commit: String, in repository: GitRepository) -> PipelineText {
        do {
            guard let text = try repository.file(pipelineFileName, at: commit, limit: pipelineFileLimit) else { return .none }
            // It must fit in one line of the wire once percent-encoded (spaces and newlines take three bytes each).
            let encoded = LineCodec.percentEncode(text).utf8.count
            guard encoded <= WireLimits.maxPipelineBytes else {
                return .unreadable("\(pipelineFileName) is too large to send: \(encoded) bytes encoded, over \(WireLimits.maxPipelineBytes)")
            }
            return .text(text)
        } catch {
            return .unreadable("\(pipelineFileName) could not be read: \(error)")
        }
    }
}
