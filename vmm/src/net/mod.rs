//! The host side of a VM's network card: where the frames of the virtio-net device
//! ([`crate::virtio::net::VirtioNet`]) go and come from. A [`NetBackend`] takes the guest's
//! frames; frames for the guest are read by the backend's own reader thread and handed to
//! the device with [`crate::virtio::net::VirtioNet::receive`].
//!
//! Backends: passt ([`passt`], user-mode NAT, one process per VM over a socketpair) and a
//! TAP device the user may open ([`tap`]).

pub mod spec;

use std::io;

pub use spec::{Forward, MacAddr, NetMode, Protocol, SpecError};

/// Where the guest's frames go. Called on the notifying vCPU's thread with the device's
/// lock held, so it must not block for long (a stream socket or a TAP fd in blocking mode
/// is fine: the host drains them).
pub trait NetBackend: Send {
    /// Whether every frame in both directions starts with virtio 1.0's 12-byte
    /// `virtio_net_hdr_mrg_rxbuf` (a TAP device with IFF_VNET_HDR). Only then may the
    /// device offer checksum and segmentation offloads: the header carries them through.
    fn vnet_hdr(&self) -> bool {
        false
    }
    /// The guest accepted these feature bits (VIRTIO_NET_F_GUEST_CSUM, GUEST_TSO4, ...):
    /// the backend may now hand it frames that use them. Called at DRIVER_OK.
    fn set_offloads(&mut self, _guest_features: u64) {}
    /// One frame from the guest: an Ethernet frame, with the header first when
    /// [`NetBackend::vnet_hdr`] is true.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
}
