import DevCIPipeline
import DevCIWire
import XCTest

/// `image`, its limits, `artifacts` and `cache` in `.devci.yml` (issue 11).
final class ContainerKeysTests: XCTestCase {
    func errors(_ text: String) -> [String] {
        do {
            _ = try PipelineParser.parse(text, file: ".devci.yml")
            XCTFail("no error for:\n\(text)")
            return []
        } catch {
            return error.errors.map(\.description)
        }
    }

    func testImageAndLimitsFromDefaultAndJobReachTheScript() throws {
        let p = try PipelineParser.parse("""
            default:
              image: debian:12
              memory: 512m
              cpus: 1.5
            jobs:
              a:
                run: make
                network: none
              b:
                image: registry.example/team/tool:1.2
                memory: 1g
                run: make
              c:
                run: make
                artifacts: [dist/, "*.log"]
                cache: {key: "deps-{{ hash of requirements.txt }}", paths: [.venv]}
              d:
                needs: [c]
                run: make
                artifacts: {paths: [out], when: on_failure}
            """)
        let a = try XCTUnwrap(p.job("a")), b = try XCTUnwrap(p.job("b")), c = try XCTUnwrap(p.job("c")), d = try XCTUnwrap(p.job("d"))
        XCTAssertEqual(a.container, ContainerSpec(image: "debian:12", memoryBytes: 512 << 20, nanoCPUs: 1_500_000_000, network: "none"))
        XCTAssertEqual(b.container, ContainerSpec(image: "registry.example/team/tool:1.2", memoryBytes: 1 << 30, nanoCPUs: 1_500_000_000))
        XCTAssertEqual(c.artifacts, ArtifactSpec(paths: ["dist/", "*.log"], when: .onSuccess))
        XCTAssertEqual(c.cache, CacheSpec(key: "deps-{{ hash of requirements.txt }}", paths: [".venv"]))
        XCTAssertEqual(d.artifacts, ArtifactSpec(paths: ["out"], when: .onFailure))
        // Through the wire and back, as a runner reads it.
        let script = try JobScript.from(json: a.script(pipelineEnv: [:]).json())
        XCTAssertEqual(script.container, a.container)
        XCTAssertEqual(try JobScript.from(json: c.script(pipelineEnv: [:]).json()).cache, c.cache)
    }

    func testAJobWithoutImageRunsOnTheHostAndDefaultLimitsAloneMakeNoContainer() throws {
        let p = try PipelineParser.parse("default:\n  memory: 1g\njobs:\n  a:\n    run: make\n")
        XCTAssertNil(p.jobs[0].container)
    }

    func testBadValuesAreErrorsWithTheirPlace() {
        XCTAssertEqual(errors("jobs:\n  a:\n    run: x\n    memory: 512m\n"),
                       [".devci.yml:4:13: jobs.a: memory, cpus and network apply to a job in a container: add 'image'"])
        XCTAssertEqual(errors("jobs:\n  a:\n    run: x\n    image: debian\n    memory: lots\n"),
                       [".devci.yml:5:13: jobs.a.memory: expected a size like 512m or 2g, found 'lots'"])
        XCTAssertEqual(errors("jobs:\n  a:\n    run: x\n    image: debian\n    memory: 1m\n"),
                       [".devci.yml:5:13: jobs.a.memory: must be at least 6m (the engine's floor), not 1m"])
        XCTAssertEqual(errors("jobs:\n  a:\n    run: x\n    image: debian\n    cpus: 0\n"),
                       [".devci.yml:5:11: jobs.a.cpus: expected a number of CPUs like 1 or 1.5, found '0'"])
        XCTAssertEqual(errors("jobs:\n  a:\n    run: x\n    image: \"debian; rm -rf /\"\n"),
                       [".devci.yml:4:12: jobs.a.image: 'debian; rm -rf /' is not an image name (like debian:12 or registry.example/team/tool:1.2)"])
        XCTAssertEqual(errors("jobs:\n  a:\n    run: x\n    image: debian\n    network: \"a b\"\n"),
                       [".devci.yml:5:14: jobs.a.network: expected none, host, bridge or a network's name, found 'a b'"])
        XCTAssertEqual(errors("jobs:\n  a:\n    run: x\n    artifacts: [../secrets]\n"),
                       [".devci.yml:4:17: jobs.a.artifacts: must be a relative path inside the workspace, not '../secrets'"])
        XCTAssertEqual(errors("jobs:\n  a:\n    run: x\n    artifacts: {paths: [a], when: sometimes}\n"),
                       [".devci.yml:4:35: jobs.a.artifacts.when: expected always, on_success or on_failure, found 'sometimes'"])
        XCTAssertEqual(errors("jobs:\n  a:\n    run: x\n    artifacts: {when: always}\n"),
                       [".devci.yml:4:16: jobs.a.artifacts: artifacts need 'paths'"])
        XCTAssertEqual(errors("jobs:\n  a:\n    run: x\n    cache: {key: \"a b\", paths: [x]}\n"),
                       [".devci.yml:4:18: jobs.a.cache.key: 'a b': a cache key's text is letters, digits, '.', '_' and '-'"])
        XCTAssertEqual(errors("jobs:\n  a:\n    run: x\n    cache: {key: \"{{ branch }}\", paths: [x]}\n"),
                       [".devci.yml:4:18: jobs.a.cache.key: only {{ hash of FILE }} may stand between '{{' and '}}' in a cache key"])
        XCTAssertEqual(errors("jobs:\n  a:\n    run: x\n    imag: debian\n"),
                       [".devci.yml:4:5: jobs.a: unknown key 'imag' in job 'a' — did you mean 'image'?"])
    }
}
