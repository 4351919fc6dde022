// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "XfrmLab",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "xfrmlab", targets: ["xfrmlab"]),
        // The lab: netlink, namespaces, topologies, probes, XFRM, scenarios.
        .library(name: "XfrmLab", targets: ["Netlink", "Namespaces", "Topology", "Lab", "Probes", "Scenarios", "Xfrm"]),
        // Swift Testing traits and tags for suites that use the lab (this repository's suite uses it too).
        .library(name: "XfrmLabTesting", targets: ["XfrmLabTesting"]),
        // strongSwan and libreswan in lab namespaces.
        .library(name: "XfrmLabDaemons", targets: ["Daemons"]),
        // Bug reports as reproductions with a verdict per kernel.
        .library(name: "XfrmLabReports", targets: ["Reports"]),
        // The kernel matrix: catalogue, VMs, verdicts, reports.
        .library(name: "XfrmLabMatrix", targets: ["Matrix"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        // `make docs`: the API reference with DocC (a build-time plugin only; nothing links it).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // libmnl and the kernel's uapi headers (netlink, rtnetlink, xfrm, nfnetlink_log).
        .systemLibrary(name: "CNetlink", pkgConfig: "libmnl", providers: [.apt(["libmnl-dev"])]),
        // GNU-only syscalls and macros that Swift's Glibc import does not show.
        .target(name: "CXfrmLabShims"),
        .target(name: "Netlink", dependencies: ["CNetlink", "CXfrmLabShims"]),
        .target(name: "Namespaces", dependencies: ["Netlink", "CXfrmLabShims"]),
        .target(name: "Topology", dependencies: ["Yams"]),
        // /dev/kmsg records and what in them means trouble: read by the lab and by the matrix.
        .target(name: "Kmsg"),
        .target(name: "Probes", dependencies: ["Netlink", "Namespaces", "Topology", "CXfrmLabShims"]),
        // States, policies, tunnels from topology files, and the capability probe.
        .target(name: "Xfrm", dependencies: ["Netlink", "Namespaces", "Topology", "CNetlink"]),
        .target(name: "Lab", dependencies: [
            "Netlink", "Namespaces", "Topology", "Probes", "Xfrm", "Kmsg",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "Scenarios", dependencies: ["Lab", "Topology", "Netlink", "Namespaces", "Probes", "Xfrm"]),
        // The same suite on other kernels, in VMs (virtme-ng); verdicts against per-kernel expectations.
        .target(name: "Matrix", dependencies: ["Namespaces", "Kmsg", "Yams"]),
        // strongSwan (charon + swanctl/vici) and libreswan (pluto) in lab namespaces, each with its own files.
        .target(name: "Daemons", dependencies: ["Lab", "Namespaces", "Netlink", "Topology"]),
        // Public bug reports as reproductions: Fixtures/reports/<id>/report.yaml + Catalog/<id>.swift → verdict per kernel.
        .target(name: "Reports", dependencies: [
            "Lab", "Topology", "Netlink", "Namespaces", "Probes", "Xfrm", "Matrix", "Daemons", "CNetlink", "Yams",
        ]),
        .executableTarget(name: "xfrmlab", dependencies: [
            "Lab", "Topology", "Netlink", "Namespaces", "Probes", "Scenarios", "Xfrm", "Matrix", "Daemons", "Reports",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // `make fuzz`: libFuzzer over the topology loader and every netlink reply parser.
        .executableTarget(name: "XfrmLabFuzz", dependencies: ["Netlink", "Probes", "Topology"],
                          swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
        // What several test targets share (a replayable random generator).
        .target(name: "TestSupport"),
        // For other packages' suites as for ours: capability traits that probe once and skip with
        // the kernel's answer, tags, and expectations of a path that show the trace when they fail.
        .target(name: "XfrmLabTesting", dependencies: ["Namespaces", "Probes", "Xfrm", "Daemons"]),
        .testTarget(name: "NetlinkTests", dependencies: ["Netlink", "CNetlink", "TestSupport"]),
        .testTarget(name: "TopologyTests", dependencies: ["Topology", "TestSupport"], resources: [.copy("BadTopologies")]),
        .testTarget(name: "MatrixTests", dependencies: ["Matrix", "Kmsg"]),
        .testTarget(name: "LabTests", dependencies: ["Lab", "Topology", "Netlink", "Namespaces", "Probes", "Scenarios", "CNetlink", "Xfrm", "TestSupport", "Daemons", "Reports", "Matrix", "XfrmLabTesting"]),
    ]
)
