import CXfrmLabShims
import Foundation
import Glibc
import Netlink

/// What a finished command left behind.
public struct ProcessResult: Sendable, CustomStringConvertible {
    public var command: [String]
    public var status: Int32
    public var standardOutput: String
    public var standardError: String
    public var succeeded: Bool { status == 0 }
    public var description: String {
        "\(command.joined(separator: " ")) exited \(status)" + (standardError.isEmpty ? "" : ": \(standardError.trimmingCharacters(in: .whitespacesAndNewlines))")
    }
}

/// A command that could not be run or failed.
public struct CommandFailed: Error, CustomStringConvertible, Sendable {
    public var result: ProcessResult
    public var namespace: String?
    public var description: String {
        (namespace.map { "in namespace \($0): " } ?? "") + result.description
    }
}

public enum Executable {
    static let searchPath = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]

    /// Finds `name` on PATH (and the sbin directories, where nft and ip live).
    public static func find(_ name: String) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        for dir in path + searchPath where access(dir + "/" + name, X_OK) == 0 {
            return dir + "/" + name
        }
        return nil
    }
}

extension Namespace {
    /// Runs a command inside the namespace and waits for it (killing it after `timeout`).
    ///
    /// Equivalent to `ip netns exec NAME COMMAND…`, without the extra mount namespace.
    public func execute(_ command: [String], input: String? = nil, timeout: Double = 60) throws -> ProcessResult {
        try Process.execute(command, namespaceFD: fd, input: input, timeout: timeout)
    }

    /// Runs a command inside the namespace; a non-zero exit is thrown as `CommandFailed`.
    @discardableResult
    public func check(_ command: [String], input: String? = nil, timeout: Double = 60) throws -> ProcessResult {
        let r = try execute(command, input: input, timeout: timeout)
        guard r.succeeded else { throw CommandFailed(result: r, namespace: name) }
        return r
    }

    /// Starts a long-running process inside the namespace with its output going to `logFD`
    /// (or inherited when < 0). The caller waits for it or kills it.
    public func spawn(_ command: [String], logFD: Int32 = -1, environment: [String: String]? = nil) throws -> pid_t {
        try Process.spawn(command, namespaceFD: fd, stdin: -1, stdout: logFD, stderr: logFD, environment: environment)
    }
}

/// Process start-up through the `xl_spawn` shim (fork, setns, execve).
public enum Process {
    /// With `userNamespaceFD` the child enters that user namespace as its root after the
    /// network namespace: it acts with that root's credentials.
    public static func spawn(_ command: [String], namespaceFD: Int32, stdin: Int32, stdout: Int32, stderr: Int32,
                             environment: [String: String]? = nil, userNamespaceFD: Int32 = -1) throws -> pid_t {
        guard let first = command.first, let path = Executable.find(first) else {
            throw SystemCallError("execve", errno: ENOENT, context: "\(command.first ?? "(empty command)") not found on PATH")
        }
        let env = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        let argv = command.map { strdup($0) } + [nil]
        let envp = env.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        let pid = userNamespaceFD >= 0
            ? xl_spawn_as(path, argv, envp, userNamespaceFD, namespaceFD, stdin, stdout, stderr)
            : xl_spawn(path, argv, envp, namespaceFD, stdin, stdout, stderr)
        guard pid > 0 else { throw SystemCallError("fork", context: command.joined(separator: " ")) }
        return pid
    }

    /// Runs a command to completion, capturing its output.
    public static func execute(_ command: [String], namespaceFD: Int32 = -1, input: String? = nil,
                               timeout: Double = 60, userNamespaceFD: Int32 = -1) throws -> ProcessResult {
        var inPipe: [Int32] = [-1, -1], outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1]
        // Close-on-exec matters little: the child closes everything above 2 before exec.
        guard pipe(&inPipe) == 0, pipe(&outPipe) == 0, pipe(&errPipe) == 0 else {
            throw SystemCallError("pipe")
        }
        for fd in inPipe + outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        let pid: pid_t
        do {
            pid = try spawn(command, namespaceFD: namespaceFD, stdin: inPipe[0], stdout: outPipe[1], stderr: errPipe[1],
                            userNamespaceFD: userNamespaceFD)
        } catch {
            (inPipe + outPipe + errPipe).forEach { close($0) }
            throw error
        }
        close(inPipe[0]); close(outPipe[1]); close(errPipe[1])
        // A child that exits without reading its input must not kill us with SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        if let input {
            let bytes = Array(input.utf8)
            var off = 0
            while off < bytes.count {
                let n = bytes[off...].withUnsafeBytes { write(inPipe[1], $0.baseAddress, $0.count) }
                if n <= 0 { break }
                off += n
            }
        }
        close(inPipe[1])
        var out: [UInt8] = [], err: [UInt8] = []
        var fds = [pollfd(fd: outPipe[0], events: Int16(POLLIN), revents: 0), pollfd(fd: errPipe[0], events: Int16(POLLIN), revents: 0)]
        let deadline = Date().addingTimeInterval(timeout)
        var open = 2
        var timedOut = false
        var chunk = [UInt8](repeating: 0, count: 65536)
        while open > 0 {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { timedOut = true; break }
            let n = poll(&fds, 2, Int32(min(left, 1) * 1000))
            if n < 0 && errno != EINTR { break }
            for i in 0..<2 where fds[i].fd >= 0 && fds[i].revents != 0 {
                let got = read(fds[i].fd, &chunk, chunk.count)
                if got > 0 {
                    if i == 0 { out += chunk[0..<got] } else { err += chunk[0..<got] }
                } else {
                    close(fds[i].fd)
                    fds[i].fd = -1
                    open -= 1
                }
            }
        }
        if timedOut { kill(pid, SIGKILL) }
        for f in fds where f.fd >= 0 { close(f.fd) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        var stderrText = String(decoding: err, as: UTF8.self)
        if timedOut { stderrText += "\n(killed after \(timeout) s)" }
        if code == 126 && namespaceFD >= 0 && out.isEmpty && err.isEmpty { stderrText = "could not enter the namespace (setns)" }
        return ProcessResult(command: command, status: code, standardOutput: String(decoding: out, as: UTF8.self),
                             standardError: stderrText)
    }
}
