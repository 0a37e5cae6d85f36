//! A TAP device the user already has (`ip tuntap add NAME mode tap user $USER`, often on a
//! bridge such as br0): the VM's frames go to it and its frames come back, so the VM is on
//! whatever network the device is on. vmdesk never creates the device (that needs root,
//! and would leave one behind): opening a name that does not exist is an error that says
//! how to make it.
//!
//! The device is opened with IFF_VNET_HDR where the kernel offers it, with virtio 1.0's
//! 12-byte header, so checksum and segmentation offloads pass through unchanged between
//! the guest and the host's stack (TUNSETOFFLOAD says which the guest accepted).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use thiserror::Error;

use super::{FrameSource, NetBackend};
use crate::disk::GuestSlice;

const TUN_PATH: &str = "/dev/net/tun";
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
// _IOW('T', 202, int), _IOW('T', 208, unsigned int), _IOW('T', 216, int).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUN_F_CSUM: u32 = 0x01;
const TUN_F_TSO4: u32 = 0x02;
const TUN_F_TSO6: u32 = 0x04;
/// virtio 1.0's `virtio_net_hdr_mrg_rxbuf`.
pub const VNET_HDR_LEN: i32 = 12;
/// The largest frame a TAP device hands over (a 64 KiB GSO frame with its headers); the
/// read buffer is one byte longer, so a frame that is longer still shows as such and the
/// card drops it rather than taking a truncated one.
pub const MAX_FRAME: usize = crate::virtio::net::MAX_FRAME_LEN + VNET_HDR_LEN as usize;

#[derive(Debug, Error)]
pub enum TapError {
    #[error(
        "TAP device {0} does not exist: create it for your user with: sudo ip tuntap add {0} mode tap user $USER (and, for the LAN, add it to a bridge: sudo ip link set {0} master br0 up)"
    )]
    Missing(String),
    #[error(
        "{0} is a network interface but not a TAP device: give the name of one made with: sudo ip tuntap add NAME mode tap user $USER"
    )]
    NotTap(String),
    #[error(
        "cannot open {TUN_PATH}: {0} (load the tun module: sudo modprobe tun; the device must be readable and writable by you)"
    )]
    TunDevice(io::Error),
    #[error(
        "not allowed to open TAP device {0}: it belongs to another user or group; recreate it for yours: sudo ip tuntap del {0} mode tap && sudo ip tuntap add {0} mode tap user $USER"
    )]
    Permission(String),
    #[error(
        "TAP device {0} is busy: another VM or program has it open (a TAP device serves one VM)"
    )]
    Busy(String),
    #[error("cannot attach to TAP device {0}: {1}")]
    Attach(String, io::Error),
}

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags in the union.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// An open TAP device.
pub struct Tap {
    file: File,
    name: String,
    vnet_hdr: bool,
}

impl Tap {
    /// Opens the existing TAP device `name` (see the module's doc for what is refused).
    pub fn open(name: &str) -> Result<Tap, TapError> {
        let sys = Path::new("/sys/class/net").join(name);
        if !sys.exists() {
            return Err(TapError::Missing(name.into()));
        }
        if !sys.join("tun_flags").exists() {
            return Err(TapError::NotTap(name.into()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(TUN_PATH)
            .map_err(TapError::TunDevice)?;
        // With the vnet header first; a kernel without it gets plain frames.
        let vnet_hdr = match set_iff(&file, name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) {
            Ok(()) => set_vnet_hdr_len(&file).is_ok(),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                set_iff(&file, name, IFF_TAP | IFF_NO_PI).map_err(|e| attach_error(name, e))?;
                false
            }
            Err(e) => return Err(attach_error(name, e)),
        };
        Ok(Tap {
            file,
            name: name.into(),
            vnet_hdr,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A second handle on the same queue: one for the guest's frames, one for the reader.
    pub fn try_clone(&self) -> io::Result<Tap> {
        Ok(Tap {
            file: self.file.try_clone()?,
            name: self.name.clone(),
            vnet_hdr: self.vnet_hdr,
        })
    }
}

fn attach_error(name: &str, e: io::Error) -> TapError {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => TapError::Permission(name.into()),
        Some(libc::EBUSY) => TapError::Busy(name.into()),
        _ => TapError::Attach(name.into(), e),
    }
}

fn set_iff(file: &File, name: &str, flags: i16) -> io::Result<()> {
    let mut req = IfReq {
        name: [0; 16],
        flags,
        _pad: [0; 22],
    };
    // The caller checked the name exists in /sys/class/net, so it is short and has no NUL.
    let n = name.len().min(15);
    req.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: TUNSETIFF reads (and may write back) one `struct ifreq`, which `req` is
    // (40 bytes, the layout above), valid for the call's duration.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_vnet_hdr_len(file: &File) -> io::Result<()> {
    let len: libc::c_int = VNET_HDR_LEN;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, valid for the call.
    let r = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            TUNSETVNETHDRSZ,
            &len as *const libc::c_int,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl NetBackend for Tap {
    fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    fn set_offloads(&mut self, guest_features: u64) {
        use virtio_bindings::virtio_net::{
            VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
        };
        if !self.vnet_hdr {
            return;
        }
        let has = |bit: u32| guest_features & (1u64 << bit) != 0;
        let mut flags = 0u32;
        if has(VIRTIO_NET_F_GUEST_CSUM) {
            flags |= TUN_F_CSUM;
            if has(VIRTIO_NET_F_GUEST_TSO4) {
                flags |= TUN_F_TSO4;
            }
            if has(VIRTIO_NET_F_GUEST_TSO6) {
                flags |= TUN_F_TSO6;
            }
        }
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is shared.
        let r =
            unsafe { libc::ioctl(self.file.as_raw_fd(), TUNSETOFFLOAD, flags as libc::c_ulong) };
        if r < 0 {
            tracing::warn!(
                "TAP device {}: cannot set offloads {flags:#x}: {}",
                self.name,
                io::Error::last_os_error()
            );
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        // A TAP device takes one frame per write, whole or not at all.
        self.file.write(frame).map(drop)
    }

    fn send_guest(&mut self, frame: &[GuestSlice<'_>]) -> io::Result<()> {
        if frame.len() > crate::iov::IOV_MAX {
            // More pieces than one writev takes: gathered first (a frame is one write).
            return self.send(&super::gather(frame));
        }
        // The guards keep the mappings valid while the kernel uses the pointers.
        let guards = crate::iov::guards(frame);
        let vecs: Vec<libc::iovec> = guards.iter().map(crate::iov::guest_iovec).collect();
        // One writev is one frame (never a part: a TAP device takes it whole or not at
        // all), so no resuming here.
        // SAFETY: every iovec points into guest memory that `guards` keeps mapped, with
        // vm-memory's checked length; writev only reads those bytes.
        let r = unsafe {
            libc::writev(
                self.file.as_raw_fd(),
                vecs.as_ptr(),
                vecs.len() as libc::c_int,
            )
        };
        crate::iov::syscall_result(r).map(drop)
    }
}

impl FrameSource for Tap {
    fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    fn recv(&mut self, frame: &mut Vec<u8>) -> io::Result<bool> {
        frame.resize(MAX_FRAME + 1, 0);
        let n = self.file.read(frame)?;
        frame.truncate(n);
        // A TAP device never ends; a zero-length read only happens when it goes away.
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_device_says_how_to_make_it() {
        let e = Tap::open("vmdesk-nonexistent0").err().unwrap().to_string();
        assert!(
            e.contains("does not exist") && e.contains("ip tuntap add vmdesk-nonexistent0"),
            "{e}"
        );
    }

    #[test]
    fn an_interface_that_is_not_a_tap_is_named() {
        let e = Tap::open("lo").err().unwrap().to_string();
        assert!(e.contains("lo is a network interface but not a TAP"), "{e}");
    }

    #[test]
    fn ifreq_has_the_kernels_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }
}
