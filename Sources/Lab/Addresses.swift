import Topology

extension IPAddress: IPAddressLike {
    public var addressBytes: [UInt8] { bytes }
}
