import Foundation
import Netlink

/// A kernel's answer to one request, as evidence: `ip … → accepted` or
/// `ip … → EEXIST (File exists)`, with the extended-ack text when the kernel sent one.
struct Answer: CustomStringConvertible {
    var request: String
    var error: NetlinkError?
    var other: Error?

    var accepted: Bool { error == nil && other == nil }
    var errno: Int32? { error?.errno }

    var description: String {
        if let error {
            let text = error.kernelMessage.flatMap { $0.isEmpty ? nil : "\"\($0)\"" } ?? errnoText(error.errno)
            return "\(request) → \(errnoName(error.errno)) (\(text))"
        }
        if let other { return "\(request) → \(other)" }
        return "\(request) → accepted"
    }
}

/// Sends `request` on `socket` and keeps the answer instead of throwing a refusal.
func ask(_ socket: NetlinkSocket, _ request: Request) -> Answer {
    do {
        _ = try socket.request(request)
        return Answer(request: request.summary)
    } catch let e as NetlinkError {
        return Answer(request: request.summary, error: e)
    } catch {
        return Answer(request: request.summary, other: error)
    }
}

/// A step that could not be done, so the scenario says nothing about the bug.
struct Inconclusive: Error, CustomStringConvertible {
    var description: String
    init(_ text: String) { description = "inconclusive: " + text }
}
