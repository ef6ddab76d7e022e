import DevCIStore
import DevCIWire
import Foundation
import XCTest

/// The artifact folder beside the database: uploads in order, kept with a result, never read outside itself.
final class ArtifactFolderTests: XCTestCase {
    var root = ""

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "devci-artifacts-\(UUID().uuidString.prefix(8))"
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: root)
    }

    func testUploadsAreKeptWithTheResultReplacingAnEarlierAttemptAndReadBackInChunks() throws {
        let folder = ArtifactFolder(root: root)
        try folder.append(job: 7, attempt: 1, path: "old.txt", offset: 0, data: Data("first attempt".utf8))
        try folder.commit(job: 7, attempt: 1, build: 3, name: "compile")
        try folder.append(job: 7, attempt: 2, path: "dist/app.bin", offset: 0, data: Data("hello ".utf8))
        try folder.append(job: 7, attempt: 2, path: "dist/app.bin", offset: 6, data: Data("world".utf8))
        XCTAssertThrowsError(try folder.append(job: 7, attempt: 2, path: "dist/app.bin", offset: 3, data: Data("x".utf8)))
        XCTAssertThrowsError(try folder.append(job: 7, attempt: 2, path: "../escape", offset: 0, data: Data()))
        XCTAssertEqual(try folder.commit(job: 7, attempt: 2, build: 3, name: "compile"), 1)
        XCTAssertEqual(folder.list(build: 3), [ArtifactEntry(job: "compile", path: "dist/app.bin", size: 11)])
        let (size, first) = try folder.read(build: 3, job: "compile", path: "dist/app.bin", offset: 0, count: 4)
        XCTAssertEqual(size, 11)
        XCTAssertEqual(first, Data("hell".utf8))
        XCTAssertEqual(try folder.read(build: 3, job: "compile", path: "dist/app.bin", offset: 4, count: 100).data, Data("o world".utf8))
        // A discarded attempt leaves nothing.
        try folder.append(job: 8, attempt: 1, path: "x", offset: 0, data: Data("x".utf8))
        XCTAssertEqual(folder.incomingUploads().map { "\($0.job)-\($0.attempt)" }, ["8-1"])
        folder.discard(job: 8, attempt: 1)
        XCTAssertTrue(folder.incomingUploads().isEmpty)
        XCTAssertEqual(try folder.commit(job: 8, attempt: 1, build: 3, name: "other"), 0)
        XCTAssertEqual(folder.list(build: 3).map(\.job), ["compile"])
    }

    func testNoPathOrLinkLeadsOutOfTheFolder() throws {
        let folder = ArtifactFolder(root: root)
        try folder.append(job: 1, attempt: 1, path: "ok.txt", offset: 0, data: Data("ok".utf8))
        try folder.commit(job: 1, attempt: 1, build: 1, name: "a")
        let secret = root + "/secret.txt"
        try "secret".write(toFile: secret, atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: root + "/builds/1/a/link", withDestinationPath: secret)
        try FileManager.default.createSymbolicLink(atPath: root + "/builds/1/a/dir", withDestinationPath: root)
        XCTAssertNotNil(folder.file(build: 1, job: "a", path: "ok.txt"))
        for bad in ["link", "dir/secret.txt", "../../../secret.txt", "/etc/passwd", "", "."] {
            XCTAssertNil(folder.file(build: 1, job: "a", path: bad), bad)
        }
        XCTAssertNil(folder.file(build: 1, job: "../a", path: "ok.txt"))
        XCTAssertEqual(folder.list(build: 1).map(\.path), ["ok.txt"], "links are not listed")
        XCTAssertEqual(ArtifactFolder.beside(database: "/var/lib/devci/devci.sqlite").root, "/var/lib/devci/devci-artifacts")
    }
}
