import ArgumentParser
import Foundation

/// `xfrmlab init DIR`: a package of one's own that tests with XfrmLab — one topology, a test that
/// needs no ESP and one that does, expectations for the matrix, a Makefile with `make run` and
/// `make test`, and CI files for GitHub Actions and GitLab CI on privileged runners.
struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Make a package that tests with XfrmLab: a topology, two tests, expectations, a Makefile, CI files.",
        discussion: """
            The package depends on XfrmLab by --path (default: this checkout) or by --url and --from (a version). \
            It refuses a folder that already has a Package.swift.
            """)

    @Argument(help: "The folder to make (created when missing).")
    var directory: String

    @Option(help: "Depend on XfrmLab at this local checkout (default: the one this xfrmlab was built from).")
    var path: String?

    @Option(help: "Depend on XfrmLab at this repository URL (with --from).")
    var url: String?

    @Option(help: "The lowest XfrmLab version to accept, with --url (semantic versioning: 0.1.0).")
    var from: String?

    @Option(help: "The package's name (default: the folder's name).")
    var name: String?

    func validate() throws {
        if url != nil && path != nil { throw ValidationError("--url or --path, not both") }
        if (url == nil) != (from == nil) { throw ValidationError("--url goes with --from VERSION") }
    }

    func run() throws {
        let target = URL(fileURLWithPath: directory).standardized.path
        let fm = FileManager.default
        guard !fm.fileExists(atPath: target + "/Package.swift") else {
            throw ValidationError("\(target)/Package.swift exists: xfrmlab init makes a new package")
        }
        let package = Starter.packageName(name ?? URL(fileURLWithPath: target).lastPathComponent)
        let dependency: Starter.Dependency
        if let url, let from {
            dependency = .url(url, from: from)
        } else {
            let checkout = URL(fileURLWithPath: path ?? packageRoot()).standardized.path
            guard fm.fileExists(atPath: checkout + "/Package.swift") else {
                throw ValidationError("--path \(checkout): no Package.swift there (an XfrmLab checkout is needed)")
            }
            dependency = .path(checkout)
        }
        let files = Starter.files(package: package, dependency: dependency)
        for (relative, text) in files.sorted(by: { $0.key < $1.key }) {
            let file = target + "/" + relative
            try fm.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: file, atomically: false, encoding: .utf8)
            print("  \(relative)")
        }
        print("""
            made \(package) in \(target), depending on XfrmLab \(dependency)
            next: cd \(target) && make run   (the tests on this machine's kernel)
                  make test                   (and in a VM on Debian's 6.1, which has ESP)
            """)
    }
}

/// The starter package's files.
enum Starter {
    enum Dependency: CustomStringConvertible {
        case path(String)
        case url(String, from: String)

        /// SwiftPM's identity of the package: the last path component, lower-cased.
        var identity: String {
            switch self {
            case .path(let p): return URL(fileURLWithPath: p).lastPathComponent.lowercased()
            case .url(let u, _):
                let last = URL(string: u)?.lastPathComponent ?? u
                return (last.hasSuffix(".git") ? String(last.dropLast(4)) : last).lowercased()
            }
        }

        var manifest: String {
            switch self {
            case .path(let p): return ".package(path: \"\(p)\")"
            case .url(let u, let from): return ".package(url: \"\(u)\", from: \"\(from)\")"
            }
        }

        var description: String {
            switch self {
            case .path(let p): return "at \(p)"
            case .url(let u, let from): return "from \(u), \(from) or later"
            }
        }
    }

    /// A Swift identifier made of the folder's name (`my-lab` → `MyLab`).
    static func packageName(_ raw: String) -> String {
        let words = raw.split { !$0.isLetter && !$0.isNumber }
        let name = words.map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined()
        guard let first = name.first, first.isLetter else { return "Lab" + name }
        return name
    }

    static func files(package: String, dependency: Dependency) -> [String: String] {
        let xfrmlab = dependency.identity
        return [
            "Package.swift": """
                // swift-tools-version: 6.1
                import PackageDescription

                let package = Package(
                    name: "\(package)",
                    platforms: [.macOS(.v15)],
                    dependencies: [
                        \(dependency.manifest),
                    ],
                    targets: [
                        .testTarget(name: "\(package)Tests", dependencies: [
                            .product(name: "XfrmLab", package: "\(xfrmlab)"),
                            .product(name: "XfrmLabTesting", package: "\(xfrmlab)"),
                        ]),
                    ]
                )

                """,
            "Tests/\(package)Tests/WestEastTests.swift": """
                import Lab
                import Probes
                import Testing
                import Topology
                import XfrmLabTesting

                /// The topology next to this package's Package.swift, wherever the tests run (a VM guest too).
                let topology = packageRoot() + "/Topologies/west-east.yaml"

                @Suite("west and east", .tags(.privileged), .needsNamespaces)
                struct WestEastTests {
                    /// Needs no ESP: runs on any kernel that lets root make namespaces.
                    @Test("west reaches east's public address through nic, and the answer comes back")
                    func plainRoundTrip() async throws {
                        var file = try Topology.load(path: topology)
                        file.tunnels = []  // the tunnel needs ESP; this test does not
                        try await file.withLab { lab in
                            let east = try lab.address(of: "east", interface: "eth1")
                            let trip = try Echo.udp(from: lab.namespace("west"), to: lab.namespace("east"), destination: east.bytes)
                            #expect(trip.answered, "\\(trip)")
                        }
                    }

                    /// Needs ESP: skipped, with the kernel's answer, where the kernel lacks it.
                    @Test("marked 0x1, west's subnet reaches east's through the tunnel: ESP on the wire", .requires(.esp))
                    func throughTheTunnel() async throws {
                        try await Topology.load(path: topology).withLab { lab in
                            let westInner = try lab.address(of: "west", interface: "eth0"), eastInner = try lab.address(of: "east", interface: "eth0")
                            let (trip, trace) = try lab.trace(hosts: ["west", "east"]) {
                                // The answer is marked too: east's policy, like west's, wants 0x1/0xff.
                                try Echo.udp(from: lab.namespace("west"), to: lab.namespace("east"), destination: eastInner.bytes,
                                             source: westInner.bytes, mark: 0x1, replyMark: 0x1)
                            }
                            #expect(trip.answered, "\\(trip)")
                            expectPath(PathExpectation("marked: through the tunnel both ways")
                                .then(.on("west", .postrouting).esp().out("eth1"))
                                .then(.on("east", .input).udp(to: eastInner.bytes))
                                .then(.on("east", .postrouting).esp().out("eth1"))
                                .then(.on("west", .input).udp(from: eastInner.bytes)), in: trace)
                        }
                    }
                }

                """,
            "Topologies/west-east.yaml": """
                # west and east behind nic, with an IPsec tunnel between their private subnets that only
                # packets marked 0x1/0xff take (keys made up per run). The format: XfrmLab's Topologies/README.md.
                name: west-east

                hosts:
                  west:
                    routes:
                      - { to: default, via: 192.1.2.254 }
                      - { to: 192.0.2.0/24, via: 192.1.2.23 }
                  east:
                    routes:
                      - { to: default, via: 192.1.2.254 }
                      - { to: 192.0.1.0/24, via: 192.1.2.45 }
                  nic:
                    forwarding: true

                networks:
                  - name: public
                    subnets: [192.1.2.0/24]
                    bridge: nic
                    members:
                      - { host: nic,  interface: eth1, addresses: [192.1.2.254] }
                      - { host: west, interface: eth1, addresses: [192.1.2.45] }
                      - { host: east, interface: eth1, addresses: [192.1.2.23] }
                  - name: west-private
                    subnets: [192.0.1.0/24]
                    members:
                      - { host: west, interface: eth0, addresses: [192.0.1.254] }
                  - name: east-private
                    subnets: [192.0.2.0/24]
                    members:
                      - { host: east, interface: eth0, addresses: [192.0.2.254] }

                tunnels:
                  - name: west-east
                    style: policy
                    mark: 0x1/0xff
                    left:  { host: west, address: 192.1.2.45, subnets: [192.0.1.0/24] }
                    right: { host: east, address: 192.1.2.23, subnets: [192.0.2.0/24] }

                """,
            "Fixtures/matrix/expectations.yaml": """
                # What each kernel may do besides passing, for `xfrmlab matrix --package .` (the format:
                # XfrmLab's Fixtures/matrix/expectations.yaml). A skip no rule names fails the matrix.
                expectations:
                  - kernel: host
                    note: a machine's own kernel may lack ESP; the tunnel's test then skips with the probe's answer
                    skip:
                      - test: "*"
                        reason: ["kernel lacks ESP with rfc4106(gcm(aes)):"]

                """,
            "Makefile": """
                # make run: the tests on this machine's kernel. make test: the same, then in a VM on Debian's 6.1
                # (from XfrmLab's kernel catalogue), which has ESP, with the report in .build/matrix/latest.
                SWIFT ?= swift
                XFRMLAB := .build/debug/xfrmlab
                export PATH := $(PATH):/opt/swift/usr/bin:/usr/sbin:/sbin
                KERNELS ?= 6.1

                .PHONY: build run test

                build:
                \t$(SWIFT) build --build-tests
                \t$(SWIFT) build --product xfrmlab

                run: build
                \t$(SWIFT) test --skip-build

                test: run
                \t$(XFRMLAB) matrix --package . --kernel host $(foreach k,$(KERNELS),--kernel $(k))

                """,
            ".github/workflows/xfrmlab.yml": """
                # The tests on the runner's kernel, then one job per kernel of XfrmLab's catalogue in a VM.
                # Needs a self-hosted, privileged Linux runner with Swift (network namespaces, /dev/kvm if
                # it works, else TCG) and Debian's package registry reachable for the kernels.
                name: xfrmlab
                on: [push, pull_request]
                jobs:
                  host:
                    runs-on: [self-hosted, linux]
                    steps:
                      - uses: actions/checkout@v4
                      - run: make run
                  kernels:
                    needs: host
                    runs-on: [self-hosted, linux]
                    strategy:
                      fail-fast: false
                      matrix:
                        kernel: ["5.10", "6.1", "6.12", "7.2"]
                    steps:
                      - uses: actions/checkout@v4
                      - uses: actions/cache@v4
                        with:
                          path: /var/lib/xfrmlab/kernels
                          key: xfrmlab-kernels-${{ matrix.kernel }}
                      - run: make build
                      - run: .build/debug/xfrmlab matrix --package . --kernel ${{ matrix.kernel }} --output results/${{ matrix.kernel }}
                      - uses: actions/upload-artifact@v4
                        if: always()
                        with:
                          name: matrix-${{ matrix.kernel }}
                          path: results/${{ matrix.kernel }}

                """,
            ".gitlab-ci.yml": """
                # The tests on the runner's kernel, then one job per kernel in a VM. Needs a privileged
                # runner (network namespaces; /dev/kvm if it works, else TCG) with Swift.
                stages: [host, kernels]

                host:
                  stage: host
                  script:
                    - make run

                kernels:
                  stage: kernels
                  parallel:
                    matrix:
                      - KERNEL: ["5.10", "6.1", "6.12", "7.2"]
                  cache:
                    key: xfrmlab-kernels-$KERNEL
                    paths: [.xfrmlab-kernels]
                  variables:
                    XFRMLAB_KERNEL_CACHE: $CI_PROJECT_DIR/.xfrmlab-kernels
                  script:
                    - make build
                    - .build/debug/xfrmlab matrix --package . --kernel $KERNEL --output results/$KERNEL
                  artifacts:
                    when: always
                    paths: [results/]

                """,
            "README.md": """
                # \(package)

                Tests of a network design against real kernels, with [XfrmLab](https://github.com/) (\(dependency)).
                As root on Linux:

                ```sh
                make run    # builds, runs the tests on this machine's kernel (the ESP test skips where the kernel lacks ESP)
                make test   # the same, then the suite in a VM on Debian's 6.1, which has ESP; report in .build/matrix/latest
                ```

                | file | what it is for |
                |---|---|
                | `Package.swift` | the package: one test target on XfrmLab and XfrmLabTesting |
                | `Topologies/west-east.yaml` | the network: west and east behind nic, a tunnel for packets marked 0x1 |
                | `Tests/\(package)Tests/WestEastTests.swift` | a test that needs no ESP, and one that does (`.requires(.esp)`) |
                | `Fixtures/matrix/expectations.yaml` | what a kernel may do besides passing (the host may lack ESP) |
                | `Makefile` | `make run` and `make test` |
                | `.github/workflows/xfrmlab.yml`, `.gitlab-ci.yml` | CI on privileged runners: the host, then a job per kernel |

                Another kernel: `make test KERNELS="5.10 6.12"` (any alias of XfrmLab's kernel catalogue:
                `.build/debug/xfrmlab kernels list`).

                The CI files run the tests on the runner's kernel, then a job per kernel, each:

                ```sh
                make build
                .build/debug/xfrmlab matrix --package . --kernel 6.1 --output results/6.1
                ```

                Kernels are fetched once into the kernel cache (/var/lib/xfrmlab/kernels, or
                `XFRMLAB_KERNEL_CACHE`), which the CI files keep between runs.

                """,
        ]
    }
}
