import Testing

extension Tag {
    /// Needs root: creates network namespaces.
    @Tag public static var privileged: Self
    /// Needs a kernel with ESP (and usually VTI or xfrm interfaces): runs in a VM under
    /// `xfrmlab matrix`; skipped elsewhere with the probed reason.
    @Tag public static var vm: Self
    /// Runs real IKE daemons (strongSwan's charon, libreswan's pluto) in lab namespaces.
    @Tag public static var daemons: Self
}
