import DevCIStore
import DevCIWire
import Foundation

/// Artifacts at the dispatcher: an attempt's uploads go to the incoming folder (bounded per job), become its job's
/// kept artifacts when its result is recorded, and are served back to runners and tools in chunks. File work runs
/// on `artifactQueue`, in arrival order; the replies come back through the loop.
extension Dispatcher {
    func artifactPut(job: Int64, attempt: Int, path: String, size: Int64, offset: Int64, data: String, replyTo id: ConnectionID) {
        guard let folder = config.artifacts else {
            send(id, .error(code: .notFound, message: "this dispatcher keeps no artifacts"))
            return
        }
        guard scheduler.isLeased(job: job, attempt: attempt) else {
            send(id, .error(code: .notFound, message: "job \(job) attempt \(attempt) holds no lease: its artifacts are not kept"))
            return
        }
        let key = JobAttempt(job: job, attempt: attempt)
        let total = state.value.artifactUploads[key, default: ArtifactUpload()].total(with: path, size: size)
        guard total <= config.artifactLimit else {
            send(id, .error(code: .tooLarge, message: "the artifacts of job \(job) come to \(ByteSize.format(total)), over the limit of \(ByteSize.format(config.artifactLimit)) per job"))
            return
        }
        guard let bytes = Data(base64Encoded: data), offset + Int64(bytes.count) <= size else {
            send(id, .error(code: .badField, message: "data is not base64, or runs past the file's size"))
            return
        }
        state.value.artifactUploads[key, default: ArtifactUpload()].announce(path, size: size)
        artifactQueue.async {
            let reply: ServerMessage
            do {
                try folder.append(job: job, attempt: attempt, path: path, offset: offset, data: bytes)
                reply = .ok(what: "artifact_put")
            } catch {
                reply = .error(code: .store, message: "\(error)")
            }
            self.loop.execute {
                self.send(id, reply)
                self.flushWrites()
            }
        }
    }

    /// Keeps (or drops) what an attempt uploaded, as its result is recorded (or not).
    func settleArtifacts(job: Int64, attempt: Int, keep: Bool) {
        // Even with nothing announced in this process's life: uploads made before a restart are kept too.
        guard let folder = config.artifacts else { return }
        state.value.artifactUploads[JobAttempt(job: job, attempt: attempt)] = nil
        let build = state.value.coordinator.build(ofJob: job), name = state.value.coordinator.jobName(job)
        artifactQueue.async {
            guard keep, let build, let name else { return folder.discard(job: job, attempt: attempt) }
            do {
                let kept = try folder.commit(job: job, attempt: attempt, build: build, name: name)
                self.logger.info("job \(job) (\(name)) attempt \(attempt): kept \(kept) artifact file(s)")
            } catch {
                self.logger.error("\(error)")
            }
        }
    }

    /// Drops the uploads of attempts that hold no lease any more and sent nothing for a minute: their runner died
    /// or lost the job before its result, so they can never be kept.
    func sweepArtifacts() {
        guard let folder = config.artifacts else { return }
        artifactQueue.async {
            for upload in folder.incomingUploads() where Date().timeIntervalSince(upload.modified) > 60 {
                let leased = (try? self.loop.submit { self.scheduler.isLeased(job: upload.job, attempt: upload.attempt) }.wait()) ?? true
                guard !leased else { continue }
                folder.discard(job: upload.job, attempt: upload.attempt)
                self.logger.notice("dropped the unfinished artifact upload of job \(upload.job) attempt \(upload.attempt): it holds no lease")
            }
        }
    }

    func artifactList(build: Int64, job: String?, from: Int, replyTo id: ConnectionID) {
        guard let folder = config.artifacts else { return send(id, .artifactList(entries: [], next: 0)) }
        artifactQueue.async {
            let page = ArtifactListing.page(folder.list(build: build, job: job), from: from)
            self.loop.execute {
                self.send(id, .artifactList(entries: page.entries, next: page.next))
                self.flushWrites()
            }
        }
    }

    func artifactGet(build: Int64, job: String, path: String, offset: Int64, replyTo id: ConnectionID) {
        guard let folder = config.artifacts else { return send(id, .error(code: .notFound, message: "this dispatcher keeps no artifacts")) }
        artifactQueue.async {
            let reply: ServerMessage
            do {
                let (size, data) = try folder.read(build: build, job: job, path: path, offset: offset, count: ArtifactPath.chunkBytes)
                reply = .artifactData(size: size, offset: offset, data: data.base64EncodedString())
            } catch {
                reply = .error(code: .notFound, message: "\(error)")
            }
            self.loop.execute {
                self.send(id, reply)
                self.flushWrites()
            }
        }
    }
}
