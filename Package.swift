// swift-tools-version: 6.1
import PackageDescription

// Module layout follows shared/DESIGN.md: each target is one room; lower rooms never import higher ones.
let package = Package(
    name: "DevCI",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "devci", targets: ["devci"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        // Default traits off: they pull in swift-configuration and make SwiftPM rebuild Hummingbird at random.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        // HMAC-SHA256 for GitHub's webhook signatures.
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        // The Docker Engine API over its Unix socket (http+unix://).
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        // /metrics: the metrics API, and Prometheus' text format behind it.
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // STARTTLS for notification mail (already built for async-http-client).
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.30.0"),
        // bcrypt for the reporter's sign-in (HummingbirdBcrypt).
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth", from: "2.5.0"),
        // The PostgreSQL store and the standby dispatcher's leader lock.
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
    ],
    targets: [
        // libgit2 from Debian's libgit2-dev.
        .systemLibrary(
            name: "CLibGit2",
            pkgConfig: "libgit2",
            providers: [.apt(["libgit2-dev"])]
        ),
        // fork/exec with a new process group and a parent-death signal: done in C so the child runs no Swift code.
        .target(name: "CDevCISpawn"),
        // The wire: messages, the line codec, shared models. Knows nothing of any process.
        .target(
            name: "DevCIWire",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // The pipeline file: parse, validate, plan.
        .target(name: "DevCIPipeline", dependencies: ["DevCIWire", .product(name: "Yams", package: "Yams")]),
        // The store: SQLite through GRDB behind a narrow interface.
        .target(
            name: "DevCIStore",
            dependencies: [
                "DevCIWire", .product(name: "GRDB", package: "GRDB.swift"), .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Git access through libgit2.
        .target(name: "DevCIGit", dependencies: ["CLibGit2", "DevCIWire"]),
        // The one process spawner: a command under a leader in its own process group, output line by line.
        .target(name: "DevCIProcess", dependencies: ["CDevCISpawn", "DevCIWire"]),
        // Jobs in containers: the Docker Engine API (Podman-compatible) behind the `Executor` seam.
        .target(
            name: "DevCIContainer",
            dependencies: [
                "DevCIProcess", "DevCIWire",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // The repository observer: what is new since last dispatched (pure), and the polling loop.
        .target(
            name: "DevCIObserver",
            dependencies: ["DevCIWire", "DevCIGit", "DevCIPipeline", .product(name: "Logging", package: "swift-log")]
        ),
        // The runner manager: the supervisor state machine and the processes it keeps alive.
        .target(
            name: "DevCIRunnerManager",
            dependencies: ["DevCIProcess", "DevCIGit", "DevCIWire", .product(name: "Logging", package: "swift-log")]
        ),
        // Metrics: swift-metrics in front, a Prometheus registry behind, `GET /metrics`, the process's own figures.
        .target(
            name: "DevCIMetrics",
            dependencies: [
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // Notifications: which an ended build sends (pure), and their delivery by mail (SMTP) and webhook.
        .target(
            name: "DevCINotify",
            dependencies: [
                "DevCIWire", "DevCIStore", "DevCIPipeline",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        // The dispatcher: the scheduler state machine and its NIO/SQLite edges.
        .target(
            name: "DevCIDispatcher",
            dependencies: [
                "DevCIWire", "DevCIStore", "DevCIPipeline", "DevCIMetrics", "DevCINotify",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ]
        ),
        // The runner: dials the dispatcher, executes jobs in its own clone.
        .target(
            name: "DevCIRunner",
            dependencies: [
                "DevCIWire", "DevCIGit", "DevCIProcess", "DevCIPipeline", "DevCIContainer", "DevCIMetrics",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The reporter: HTML, JSON, SVG and live Server-Sent Events from the database, read-only.
        .target(
            name: "DevCIReporter",
            dependencies: [
                "DevCIStore", "DevCIWire", "DevCIPipeline",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The command: flag parsing and wiring only.
        .executableTarget(
            name: "devci",
            dependencies: [
                "DevCIWire", "DevCIStore", "DevCIDispatcher", "DevCIRunner", "DevCIContainer", "DevCIProcess", "DevCIObserver", "DevCIRunnerManager", "DevCIGit", "DevCIPipeline", "DevCIReporter", "DevCIMetrics",
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "DevCIWireTests", dependencies: ["DevCIWire"]),
        .testTarget(name: "DevCINotifyTests", dependencies: ["DevCINotify", "DevCIStore", "DevCIPipeline", "DevCIWire"]),
        .testTarget(name: "DevCIContainerTests", dependencies: ["DevCIContainer", "DevCIWire", .product(name: "NIOCore", package: "swift-nio")]),
        .testTarget(
            name: "DevCIDispatcherTests",
            dependencies: [
                "DevCIDispatcher", "DevCIWire", "DevCIStore", "DevCIPipeline",
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Fixtures are read from the source folder (#filePath), not bundled.
        .testTarget(name: "DevCIPipelineTests", dependencies: ["DevCIPipeline", "DevCIWire"], exclude: ["Fixtures"]),
        .testTarget(name: "DevCIProcessTests", dependencies: ["DevCIProcess", "DevCIWire"]),
        .testTarget(name: "DevCIObserverTests", dependencies: ["DevCIObserver", "DevCIWire"]),
        .testTarget(name: "DevCIRunnerManagerTests", dependencies: ["DevCIRunnerManager", "DevCIWire"]),
        .testTarget(name: "DevCIStoreTests", dependencies: ["DevCIStore", "DevCIWire", .product(name: "GRDB", package: "GRDB.swift")]),
        .testTarget(name: "DevCIRunnerTests", dependencies: ["DevCIRunner", "DevCIWire", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "DevCIIntegrationTests", dependencies: ["DevCIWire", "DevCIStore"]),
    ],
    swiftLanguageModes: [.v6]
)
