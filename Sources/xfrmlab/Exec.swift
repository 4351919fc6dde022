import ArgumentParser
import Foundation
import Glibc
import Lab
import Namespaces

struct Exec: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "exec", abstract: "Run a command inside a host of a run (`xfrmlab exec west -- ping 192.1.3.33`).")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var selection: RunSelection

    @Argument(help: "The host.")
    var host: String

    @Argument(parsing: .postTerminator, help: "The command and its arguments, after `--`.")
    var command: [String] = []

    func validate() throws {
        if command.isEmpty { throw ValidationError("give the command after `--`, e.g. `xfrmlab exec west -- ip address`") }
    }

    func run() throws {
        global.bootstrap()
        try requireRoot()
        let found = try RunLookup.select(selection.id)
        guard let name = found.state?.namespaces[host] else {
            throw ValidationError("run \(found.id) has no host \(host) (hosts: \((found.state?.namespaces.keys.sorted() ?? []).joined(separator: ", ")))")
        }
        let fd = open(Namespace.directory + "/" + name, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ValidationError("cannot open namespace \(name): \(String(cString: strerror(errno)))") }
        let pid = try Namespaces.Process.spawn(command, namespaceFD: fd, stdin: 0, stdout: 1, stderr: 2)
        close(fd)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        throw ExitCode(code)
    }
}
