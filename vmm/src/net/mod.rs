//! The host side of a VM's network card: where the frames of the virtio-net device
//! ([`crate::virtio::net::VirtioNet`]) go and come from. A [`NetBackend`] takes the guest's
//! frames; frames for the guest are read by the backend's own reader thread and handed to
//! the device with [`crate::virtio::net::VirtioNet::receive`].
//!
//! Backends: passt ([`passt`], user-mode NAT, one process per VM over a socketpair) and a
//! TAP device the user may open ([`tap`]).

pub mod network;
pub mod passt;
pub mod spec;
pub mod tap;

use std::io;
use std::os::fd::BorrowedFd;

use crate::disk::GuestSlice;

pub use network::{Network, NetworkError};
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
    /// The same frame as the guest's own buffers, in order: a backend that can write them
    /// where they are (`writev`) saves copying the frame, as QEMU's backends do. By default
    /// gathered into one buffer for [`NetBackend::send`].
    fn send_guest(&mut self, frame: &[GuestSlice<'_>]) -> io::Result<()> {
        self.send(&gather(frame))
    }
}

/// The bytes of `frame`'s pieces, in one buffer.
fn gather(frame: &[GuestSlice<'_>]) -> Vec<u8> {
    let mut buf = vec![0u8; crate::disk::slices_len(frame) as usize];
    let mut at = 0;
    for s in frame {
        s.copy_to(&mut buf[at..at + s.len()]);
        at += s.len();
    }
    buf
}

/// Where the frames for the guest come from: read by the network's reader thread, which
/// polls [`FrameSource::fd`] and then reads one frame at a time.
pub trait FrameSource: Send {
    /// Readable when a frame (or the end) is there.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Bytes already read from the fd and waiting in a buffer (so polling would wait for
    /// the next frame while one is at hand).
    fn buffered(&self) -> bool {
        false
    }
    /// The next frame into `frame` (its length set to the frame's); `Ok(false)` at the
    /// end (the backend went away).
    fn recv(&mut self, frame: &mut Vec<u8>) -> io::Result<bool>;
}

/// The network card as the reader thread sees it (the virtio-net device).
pub trait FrameReceiver: Send {
    /// A frame for the guest; `false` when the card cannot take it yet (its receive
    /// buffers are full): the caller keeps it and tries again when told there is room.
    fn receive(&mut self, frame: &[u8]) -> bool;
    /// The cable: a card whose backend died shows its link down.
    fn set_link(&mut self, up: bool);
}
