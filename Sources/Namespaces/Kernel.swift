import Glibc

/// The running kernel's release (`uname -r`).
public func kernelRelease() -> String {
    var u = utsname()
    uname(&u)
    return withUnsafeBytes(of: u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}
