import DevCIWire
import NIOCore
import XCTest

@testable import DevCIContainer

/// The engine's multiplexed output (stdout and stderr frames) decoded from arbitrary chunk boundaries.
final class FrameDecoderTests: XCTestCase {
    func frame(_ stream: UInt8, _ text: String) -> [UInt8] {
        let payload = Array(text.utf8)
        let n = UInt32(payload.count)
        return [stream, 0, 0, 0, UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + payload
    }

    func testFramesSplitAnywhereComeOutWhole() {
        let bytes = frame(1, "out one\n") + frame(2, "err\n") + frame(1, String(repeating: "x", count: 70_000)) + frame(1, "")
        for cut in [1, 3, 8, 9, 13, 4096, 65_536] {
            var decoder = FrameDecoder()
            var got: [(LogStream, String)] = []
            var i = 0
            while i < bytes.count {
                decoder.push(ByteBuffer(bytes: bytes[i..<min(bytes.count, i + cut)]))
                while let (stream, payload) = decoder.next() { got.append((stream, String(buffer: payload))) }
                i += cut
            }
            XCTAssertEqual(got.map(\.0), [.out, .err, .out, .out], "cut \(cut)")
            XCTAssertEqual(got.map(\.1.count), [8, 4, 70_000, 0], "cut \(cut)")
        }
    }

    func testEngineAddresses() throws {
        XCTAssertEqual(try DockerEngine(address: "unix:///run/docker.sock").socketPath, "/run/docker.sock")
        XCTAssertEqual(try DockerEngine(address: "/run/podman/podman.sock").address, "unix:///run/podman/podman.sock")
        XCTAssertThrowsError(try DockerEngine(address: "tcp://10.0.0.1:2375"))
        XCTAssertThrowsError(try DockerEngine(address: "unix://relative.sock"))
        XCTAssertEqual(DockerEngine.defaultAddress(environment: [:]), "unix:///var/run/docker.sock")
        XCTAssertEqual(DockerEngine.defaultAddress(environment: ["DOCKER_HOST": "unix:///x.sock"]), "unix:///x.sock")
    }
}
