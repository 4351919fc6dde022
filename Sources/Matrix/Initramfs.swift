import Foundation

/// vng's initramfs mounts the host's root over 9p with `msize=524288`. On 5.10 under TCG a 9p
/// request then costs tens of milliseconds, and so does each file lookup and exec (measured on
/// Debian's 5.10.262: `/bin/true` 270 ms, 6.1: 75 ms; the mark scenarios 2–3× as long as on
/// 6.12); with 64 KiB it is 113 ms: the cost follows the msize (6.1 is slower with 64 KiB, its
/// large reads twice as long). The msize of the guest's mount is the one thing changed.
public enum Initramfs {
    public static let vngMount = "msize=524288"

    /// The archive (cpio "newc", as vng writes it) with every `msize=524288` in its files made
    /// `msize=SIZE`. Throws when no file has it: vng changed, and the caller should know.
    public static func settingNinePMessageSize(_ archive: Data, to size: Int) throws -> Data {
        let from = Array(vngMount.utf8), to = Array("msize=\(size)".utf8)
        let bytes = [UInt8](archive)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 64)
        var at = 0, replaced = 0
        func field(_ i: Int) throws -> Int {
            let start = at + 6 + 8 * i
            guard start + 8 <= bytes.count, let v = Int(String(decoding: bytes[start..<start + 8], as: UTF8.self), radix: 16) else {
                throw InitramfsError("a cpio header field at offset \(start) is not hexadecimal")
            }
            return v
        }
        func padded(_ n: Int) -> Int { (n + 3) & ~3 }
        while at < bytes.count {
            // Padding between concatenated archives.
            if bytes[at] == 0 { out.append(0); at += 1; continue }
            guard at + 110 <= bytes.count, String(decoding: bytes[at..<at + 6], as: UTF8.self) == "070701" else {
                throw InitramfsError("no cpio newc header at offset \(at) (is the initramfs compressed?)")
            }
            let fileSize = try field(6), nameSize = try field(11)
            let nameEnd = at + 110 + nameSize, dataStart = at + padded(110 + nameSize)
            let dataEnd = dataStart + fileSize, next = dataStart + padded(fileSize)
            guard dataEnd <= bytes.count else { throw InitramfsError("a cpio entry at offset \(at) runs past the end") }
            var data = Array(bytes[dataStart..<dataEnd])
            let name = String(decoding: bytes[(at + 110)..<max(at + 110, nameEnd - 1)], as: UTF8.self)
            if let range = data.firstRange(of: from) {
                data.replaceSubrange(range, with: to)
                replaced += 1
            }
            var header = Array(bytes[at..<at + 110])
            header.replaceSubrange(54..<62, with: Array(String(format: "%08X", data.count).utf8))
            out += header
            out += bytes[(at + 110)..<nameEnd]
            out += [UInt8](repeating: 0, count: padded(110 + nameSize) - 110 - nameSize)
            out += data
            out += [UInt8](repeating: 0, count: padded(data.count) - data.count)
            at = min(next, bytes.count)
            if name == "TRAILER!!!" {
                out += bytes[at...]
                break
            }
        }
        guard replaced > 0 else { throw InitramfsError("no file in the initramfs mounts with \(vngMount): has vng changed?") }
        return Data(out)
    }
}

public struct InitramfsError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = "initramfs: " + d }
}
