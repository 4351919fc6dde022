import Foundation
import Glibc
import Namespaces

/// How qemu runs the guest.
public enum Accelerator: String, Codable, Sendable {
    case kvm, tcg
}

public enum AcceleratorProbe {
    /// KVM when it really works, else TCG. /dev/kvm is not enough: nested KVM on the machines
    /// this was written on either dies at once ("failed to set MSR 0x10a") or hangs after the
    /// kernel is decompressed. So boot `image` under KVM with no root filesystem and see whether
    /// the kernel's banner reaches the serial port within `timeout`; the kernel then panics
    /// (no root) and qemu exits, or is killed at the timeout.
    public static func detect(image: String, qemu: String = "qemu-system-x86_64", workDirectory: String,
                              timeout: Double = 8) -> (Accelerator, String) {
        guard access("/dev/kvm", R_OK | W_OK) == 0 else { return (.tcg, "no usable /dev/kvm") }
        guard let qemuPath = Executable.find(qemu) else { return (.tcg, "\(qemu) not found") }
        let serial = workDirectory + "/kvm-probe.serial"
        unlink(serial)
        let command = [qemuPath, "-machine", "accel=kvm", "-cpu", "host", "-m", "256M", "-smp", "1", "-nodefaults",
                       "-display", "none", "-no-reboot", "-serial", "file:\(serial)", "-kernel", image,
                       "-append", "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1 loglevel=7"]
        let started = Date()
        let result = try? Process.execute(command, timeout: timeout)
        let console = (try? String(contentsOfFile: serial, encoding: .utf8)) ?? ""
        unlink(serial)
        let seconds = String(format: "%.1f s", Date().timeIntervalSince(started))
        if console.contains("Linux version") { return (.kvm, "KVM booted the kernel (banner after \(seconds))") }
        let error = result?.standardError.split(separator: "\n").first { $0.contains("error") || $0.contains("rror:") }
        if let error { return (.tcg, "KVM fails: \(error)") }
        return (.tcg, "KVM hangs: no kernel banner within \(seconds)")
    }
}

/// One guest: `vng` booting a kernel with the host's root filesystem (read-only, with tmpfs
/// overlays) and a shared results directory, running one command.
///
/// vng runs in a session of its own, so stopping it stops qemu too (`kill(-pgid)`). If this
/// process is killed outright, vng gets a parent-death signal (`xl_spawn`) and qemu is killed
/// by a watchdog its wrapper starts; and `Leftovers` finds any qemu still holding a results
/// directory (the next matrix kills those of dead matrices).
public final class VirtualMachine {
    public struct Configuration: Sendable {
        public var kernel: Kernel
        public var accelerator: Accelerator
        public var cpus: Int
        public var memory: String
        /// Shared read-write with the guest: where the guest writes its results.
        public var resultsDirectory: String
        /// vng's temporary files, the qemu wrapper and the console log.
        public var workDirectory: String
        /// What the guest runs (a script under `resultsDirectory`).
        public var command: String
        public var consoleLog: String
        /// The kernel's console loglevel: 2 (emergencies and alerts: a panic's reason, an oops'
        /// first line) costs little under TCG; 7 (everything) slows the boot by seconds.
        public var consoleLevel: Int
        /// The 9p msize the guest mounts the host's root with, when not vng's own (`Initramfs`),
        /// and the xfrmlab that rewrites vng's initramfs for it.
        public var ninePMessageSize: Int? = nil
        public var xfrmlab: String? = nil

        public init(kernel: Kernel, accelerator: Accelerator, cpus: Int, memory: String, resultsDirectory: String,
                    workDirectory: String, command: String, consoleLog: String, consoleLevel: Int = 2) {
            self.kernel = kernel
            self.accelerator = accelerator
            self.cpus = cpus
            self.memory = memory
            self.resultsDirectory = resultsDirectory
            self.workDirectory = workDirectory
            self.command = command
            self.consoleLog = consoleLog
            self.consoleLevel = consoleLevel
        }
    }

    public let configuration: Configuration
    public private(set) var pid: pid_t = 0
    public private(set) var exitStatus: Int32?

    public init(_ configuration: Configuration) { self.configuration = configuration }

    /// The vng command line (for the report, and for a human to re-run by hand).
    public func vngArguments(vng: String, qemuWrapper: String, image: String) -> [String] {
        let c = configuration
        var args = [vng, "--run", image, "--user", "root", "--name", "xfrmlab-matrix",
                    "--cpus", String(c.cpus), "--memory", c.memory, "--verbose", "--append", "loglevel=\(c.consoleLevel)",
                    "--qemu", qemuWrapper, "--rwdir", c.resultsDirectory]
        // The crypto manager's self-tests run when a cipher is first used, in the first test to
        // add an SA; under TCG they cost seconds per algorithm, and a broken cipher would fail
        // the ESP tests anyway.
        args += ["--append", "cryptomgr.notests=1"]
        if c.accelerator == .tcg { args.append("--disable-kvm") }
        return args + ["--", c.command]
    }

    /// vng takes a kernel's modules from `ROOT/lib/modules/RELEASE`, ROOT being the nearest
    /// directory above the image that has `lib/modules` (the host's / for /boot images). For a
    /// bzImage with `--modules DIR`, a staging root of two symlinks makes that DIR: vng puts the
    /// boot modules in its initramfs and links /lib/modules/RELEASE to DIR in the guest.
    func stagedImage() throws -> String {
        let c = configuration
        guard let image = c.kernel.image else { throw VirtualMachineError("no kernel image") }
        guard let given = c.kernel.modules, let release = c.kernel.release else { return image }
        // The guest links /lib/modules/RELEASE to this path: it must not lead back there.
        let modules = URL(fileURLWithPath: given).resolvingSymlinksInPath().path
        if ["/lib/modules/", "/usr/lib/modules/"].contains(where: { URL(fileURLWithPath: $0 + release).resolvingSymlinksInPath().path == modules }) {
            return image
        }
        let root = c.workDirectory + "/root"
        try? FileManager.default.removeItem(atPath: root)
        try FileManager.default.createDirectory(atPath: root + "/boot", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/lib/modules", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: root + "/boot/vmlinuz-" + release, withDestinationPath: image)
        try FileManager.default.createSymbolicLink(atPath: root + "/lib/modules/" + release, withDestinationPath: modules)
        return root + "/boot/vmlinuz-" + release
    }

    public func start() throws {
        let c = configuration
        for dir in [c.workDirectory, c.workDirectory + "/tmp"] {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
        guard let vng = Executable.find("vng") else {
            throw VirtualMachineError("vng not found on PATH: `Scripts/install-vm-deps.sh` installs virtme-ng")
        }
        guard let qemu = Executable.find("qemu-system-x86_64") else {
            throw VirtualMachineError("qemu-system-x86_64 not found: `Scripts/install-vm-deps.sh` installs qemu-system-x86")
        }
        let wrapper = c.workDirectory + "/qemu"
        // vng passes its initramfs as -initrd PATH; with another msize, a rewritten copy instead.
        var initramfsRewrite = ""
        if let size = c.ninePMessageSize, let xfrmlab = c.xfrmlab {
            let copy = c.workDirectory + "/initramfs"
            initramfsRewrite = """
                n=$#; next=
                for a in "$@"; do
                    if [ -n "$next" ]; then
                        \(shellQuote(xfrmlab)) matrix-initramfs --msize \(size) "$a" \(shellQuote(copy)) || exit 1
                        a=\(shellQuote(copy)); next=
                    fi
                    [ "$a" = -initrd ] && next=1
                    set -- "$@" "$a"
                done
                shift "$n"

                """
        }
        // qemu dies with this process, whatever kills it: vng runs qemu under a shell and
        // virtme-run, which pass no parent-death signal on, so a watchdog beside qemu checks
        // once a second that this process still lives.
        let body = """
            #!/bin/sh
            # Written by xfrmlab matrix (pid \(getpid())) for vng --qemu: qemu, killed when that pid is gone.
            me=$$
            ( while kill -0 \(getpid()) 2>/dev/null && kill -0 "$me" 2>/dev/null; do sleep 1; done
              kill -9 "$me" 2>/dev/null ) </dev/null >/dev/null 2>&1 &
            \(initramfsRewrite)exec \(qemu) "$@"

            """
        try Data(body.utf8).write(to: URL(fileURLWithPath: wrapper))
        chmod(wrapper, 0o755)
        guard let setsid = Executable.find("setsid") else { throw VirtualMachineError("setsid (util-linux) not found") }

        let consoleFD = open(c.consoleLog, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard consoleFD >= 0 else { throw VirtualMachineError("cannot write \(c.consoleLog)") }
        defer { close(consoleFD) }
        var environment = ProcessInfo.processInfo.environment
        // vng's temporary files (the exit-status file, sockets) stay under the work directory.
        environment["TMPDIR"] = c.workDirectory + "/tmp"
        let devNull = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { close(devNull) }
        let image = try stagedImage()
        pid = try Process.spawn([setsid] + vngArguments(vng: vng, qemuWrapper: wrapper, image: image), namespaceFD: -1,
                                stdin: devNull, stdout: consoleFD, stderr: consoleFD, environment: environment)
    }

    /// The exit status once vng has exited, nil while it runs.
    public func poll() -> Int32? {
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid { exitStatus = exitCode(status) }
        return exitStatus
    }

    /// Stops the guest: SIGTERM to vng's session (vng and qemu), SIGKILL after a grace period,
    /// then makes sure no qemu holding our results directory is left.
    public func stop(grace: Double = 3) {
        if poll() == nil && pid > 0 {
            kill(-pid, SIGTERM)
            let deadline = KernelLog.monotonic() + grace
            while poll() == nil && KernelLog.monotonic() < deadline { usleep(50_000) }
            if poll() == nil {
                kill(-pid, SIGKILL)
                var status: Int32 = 0
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                exitStatus = exitCode(status)
            }
        }
        // qemu may outlive vng by a moment (or a killed matrix left one): kill what still holds
        // the results directory, and wait until it is gone.
        let deadline = KernelLog.monotonic() + 5
        while !Leftovers.kill(mentioning: configuration.resultsDirectory).isEmpty && KernelLog.monotonic() < deadline {
            usleep(100_000)
        }
    }
}

public struct VirtualMachineError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Processes (qemu, vng) that an earlier, killed matrix left running.
public enum Leftovers {
    /// Processes whose command line mentions `path` (qemu's does: `-fsdev …,path=RESULTS`).
    public static func processes(mentioning path: String) -> [pid_t] {
        let me = getpid()
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { name -> pid_t? in
            guard let pid = pid_t(name), pid != me,
                  let data = FileManager.default.contents(atPath: "/proc/\(name)/cmdline"), !data.isEmpty else { return nil }
            let text = String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            return text.contains(path) && !text.contains("xfrmlab matrix") ? pid : nil
        }
    }

    @discardableResult
    public static func kill(mentioning path: String) -> [pid_t] {
        let found = processes(mentioning: path)
        for pid in found { Glibc.kill(pid, SIGKILL) }
        return found
    }
}
