// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Flotilla",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "flotilla-server", targets: ["FlotillaServer"]),
        .executable(name: "flotilla-agent", targets: ["FlotillaAgent"]),
        .executable(name: "flotilla", targets: ["FlotillaCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // System libraries, found through pkg-config; scripts/setup installs the apt providers.
        .systemLibrary(name: "CNghttp2", pkgConfig: "libnghttp2", providers: [.apt(["libnghttp2-dev"])]),
        .systemLibrary(name: "CLibpq", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        // glibc calls Swift does not import (accept4) and OpenSSL macros Swift cannot call.
        .target(name: "CFlotillaShims", dependencies: ["COpenSSL"]),
        // Processes: one posix_spawn set-up for the agent's scripts and the store's children.
        .target(name: "FlotillaSystem"),

        // The pure core: no I/O, no clock, no Foundation (.ci/run enforces it).
        // JSON values, parser and writer: pure, shared by the core, the transport and the API.
        .target(name: "FlotillaJSON"),
        // The one wire contract of the server, the agent and the CLI: paths, report events
        // and answers, the manifest, execution states, error codes. Pure, like the core.
        .target(name: "FlotillaWire", dependencies: ["FlotillaJSON"]),
        .target(name: "FlotillaCore", dependencies: ["FlotillaJSON", "FlotillaWire"]),
        // HTTP/1.1 + HTTP/2 over raw sockets and Dispatch. Knows HTTP, nothing about fleets.
        .target(name: "FlotillaTransport", dependencies: ["FlotillaJSON", "CNghttp2", "COpenSSL", "CFlotillaShims"],
                // Every connection's state is confined to one serial queue, so the runtime's
                // exclusivity checks only cost time here (~3% of a request in the profile).
                swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]),
        // PostgreSQL through libpq: queries, pool, migrations, the embedded cluster.
        .target(name: "FlotillaStore", dependencies: [
            "CLibpq", "COpenSSL", "FlotillaJSON", "FlotillaSystem", .product(name: "Logging", package: "swift-log"),
        ]),
        // Flow files (YAML or JSON) → flow definitions, with each problem's line: for the
        // server's start-up, the API's tests and the CLI's offline `flows validate`.
        .target(name: "FlotillaFlowFiles", dependencies: ["FlotillaCore", "FlotillaJSON", .product(name: "Yams", package: "Yams")]),
        // The routes. Knows fleets, nothing about sockets.
        .target(name: "FlotillaAPI", dependencies: [
            "FlotillaCore", "FlotillaJSON", "FlotillaWire", "FlotillaTransport", "FlotillaStore", "FlotillaFlowFiles", "COpenSSL",
            .product(name: "Logging", package: "swift-log"),
        ]),

        .executableTarget(name: "FlotillaServer", dependencies: [
            "FlotillaAPI", "FlotillaTransport", "FlotillaStore", "FlotillaFlowFiles",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "FlotillaAgent", dependencies: [
            "FlotillaCore", "FlotillaJSON", "FlotillaSystem", "FlotillaWire", "FlotillaTransport", "COpenSSL", "CCurl",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // The operators' CLI: commands, the API session and the renderers live in a library so
        // tests can parse arguments and render without a process; the executable only runs it.
        .target(name: "FlotillaCLIKit", dependencies: [
            "FlotillaCore", "FlotillaJSON", "FlotillaWire", "FlotillaTransport", "FlotillaFlowFiles",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "FlotillaCLI", dependencies: ["FlotillaCLIKit"]),

        // Helpers shared by the test targets (raw sockets, processes, certificates).
        .target(name: "FlotillaTestSupport", dependencies: ["FlotillaTransport", "FlotillaStore"], path: "Tests/FlotillaTestSupport"),
        .testTarget(name: "FlotillaCoreTests", dependencies: ["FlotillaCore", "FlotillaWire"]),
        .testTarget(name: "FlotillaTransportTests", dependencies: ["FlotillaTransport", "FlotillaAPI", "CNghttp2", "FlotillaTestSupport"]),
        .testTarget(name: "FlotillaCLITests", dependencies: ["FlotillaCLIKit", "FlotillaFlowFiles"]),
        .testTarget(name: "FlotillaServerTests", dependencies: [
            "FlotillaStore", "FlotillaAPI", "FlotillaTransport", "FlotillaTestSupport", "FlotillaFlowFiles",
            .product(name: "Yams", package: "Yams"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
