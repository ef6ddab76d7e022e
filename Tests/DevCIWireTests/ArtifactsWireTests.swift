import DevCIWire
import XCTest

/// Sizes, cache keys, artifact paths and the artifact messages of the wire (issue 11).
final class ArtifactsWireTests: XCTestCase {
    func testByteSizes() {
        XCTAssertEqual(ByteSize.parse("512m"), 512 << 20)
        XCTAssertEqual(ByteSize.parse("1.5g"), 3 << 29)
        XCTAssertEqual(ByteSize.parse("64K"), 64 << 10)
        XCTAssertEqual(ByteSize.parse("100"), 100)
        XCTAssertEqual(ByteSize.parse("2mb"), 2 << 20)
        for bad in ["", "m", "-1m", "1x", "1e3", "ten"] { XCTAssertNil(ByteSize.parse(bad), bad) }
        XCTAssertEqual(ByteSize.format(1 << 20), "1 MiB")
        XCTAssertEqual(ByteSize.format(2_000_000), "1.9 MiB")
        XCTAssertEqual(ByteSize.format(300), "300 B")
    }

    func testCacheKeys() {
        XCTAssertEqual(try CacheKey.parse("deps-{{ hash of requirements.txt }}-v2").get(), [.literal("deps-"), .hashOf("requirements.txt"), .literal("-v2")])
        XCTAssertEqual(try CacheKey.parse("{{hash of a/b.lock}}").get(), [.hashOf("a/b.lock")])
        for bad in ["", "a b", "{{ hash of ../x }}", "{{ hash of /etc/passwd }}", "x{{ hash of a", "{{ date }}", "a/b"] {
            XCTAssertThrowsError(try CacheKey.parse(bad).get(), bad)
        }
    }

    func testArtifactPathsNeverLeaveTheirFolder() {
        for good in ["a", "dist/app.bin", "a/b/c.txt", ".hidden", "ünïcode.txt"] { XCTAssertTrue(ArtifactPath.isSafe(good), good) }
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/.", "a\nb", "a\\b", String(repeating: "a", count: 256)] {
            XCTAssertFalse(ArtifactPath.isSafe(bad), bad)
        }
    }

    func testArtifactMessagesRoundTripAndBadOnesAreRefused() throws {
        let client: [ClientMessage] = [
            .artifactPut(job: 4, attempt: 2, path: "dist/a b.bin", size: 10, offset: 4, data: Data("hello!".utf8).base64EncodedString()),
            .artifactList(build: 3, job: "compile", from: 0), .artifactList(build: 3, job: nil, from: 7),
            .artifactGet(build: 3, job: "compile", path: "dist/app.bin", offset: 36_864),
        ]
        for m in client { XCTAssertEqual(try LineCodec.decodeClient(LineCodec.encode(m)), m) }
        let entries = [ArtifactEntry(job: "compile", path: "dist/a b.bin", size: 12), ArtifactEntry(job: "x", path: "y", size: 0)]
        let server: [ServerMessage] = [.artifactList(entries: entries, next: 0), .artifactList(entries: [], next: 5),
                                       .artifactData(size: 100, offset: 0, data: "aGk=")]
        for m in server { XCTAssertEqual(try LineCodec.decodeServer(LineCodec.encode(m)), m) }
        for bad in ["artifact_put job=1 attempt=1 path=../x size=1 offset=0 data=",
                    "artifact_put job=1 attempt=1 path=a size=1 offset=2 data=",
                    "artifact_put job=1 attempt=1 path=/etc/passwd size=1 offset=0 data=",
                    "artifact_get build=1 job=a path=a/../../b offset=0",
                    "artifact_get build=1 job=a%20b path=x offset=0",
                    "artifact_list build=0"] {
            XCTAssertThrowsError(try LineCodec.decodeClient(bad), bad)
        }
        // A full chunk fits in one line.
        let full = ClientMessage.artifactPut(job: 1, attempt: 1, path: "p", size: Int64(ArtifactPath.chunkBytes), offset: 0,
                                             data: Data(count: ArtifactPath.chunkBytes).base64EncodedString())
        XCTAssertLessThan(LineCodec.encode(full).utf8.count, WireLimits.maxLineBytes)
        XCTAssertEqual(try LineCodec.decodeClient(LineCodec.encode(full)), full)
    }

    func testListingsArePagedToFitTheLine() {
        let many = (0..<3000).map { ArtifactEntry(job: "compile", path: "reports/report-\($0).xml", size: Int64($0)) }
        var from = 0, seen: [ArtifactEntry] = []
        repeat {
            let page = ArtifactListing.page(many, from: from)
            let line = LineCodec.encode(ServerMessage.artifactList(entries: page.entries, next: page.next))
            XCTAssertLessThan(line.utf8.count, WireLimits.maxLineBytes)
            seen += page.entries
            from = page.next
        } while from > 0
        XCTAssertEqual(seen, many)
    }
}
