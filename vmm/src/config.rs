//! The `vmdesk-vmm` command line and its checks. Everything a user can get wrong is
//! caught here or when the named files are opened, with one line that says what is
//! wrong and how to fix it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use thiserror::Error;

use crate::firmware::FirmwareChoice;
use crate::memory::{GIB, KIB, MIB};
use crate::net::{Forward, MacAddr, NetMode};

#[derive(Debug, Parser)]
#[command(
    name = "vmdesk-vmm",
    version,
    about = "vmdesk's virtual machine monitor: one KVM virtual PC per process"
)]
pub struct Cli {
    /// Guest RAM: a number with K, M or G (plain numbers are MiB).
    #[arg(long, short = 'm', default_value = "512M", value_parser = parse_memory)]
    pub memory: u64,

    /// Number of virtual CPUs.
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,

    /// The firmware: bios (SeaBIOS, /usr/share/seabios/bios-256k.bin from the seabios
    /// package), uefi (OVMF, /usr/share/OVMF/OVMF_CODE_4M.fd from the ovmf package, with
    /// --efi-vars) or the path of an image, mapped read-only below 4 GiB.
    #[arg(long, default_value = "bios", value_name = "bios|uefi|PATH")]
    pub firmware: FirmwareChoice,

    /// With --firmware uefi: the VM's own EFI variable store (a copy of
    /// /usr/share/OVMF/OVMF_VARS_4M.fd), the second flash device; what the guest sets
    /// (boot entries, the setup's settings) is written to it. Locked while the VM runs.
    /// Without it the variables start from the template each run and are not kept.
    #[arg(long, value_name = "FILE", conflicts_with = "kernel")]
    pub efi_vars: Option<PathBuf>,

    /// Where SeaBIOS's debug log (port 0x402) goes: file:PATH, stdio or none.
    #[arg(long, default_value = "none", value_parser = parse_output, value_name = "file:PATH|stdio|none")]
    pub debugcon: OutputSpec,

    /// Where COM1 goes: stdio (input too), file:PATH or none.
    #[arg(long, default_value = "stdio", value_parser = parse_output, value_name = "stdio|file:PATH|none")]
    pub serial: OutputSpec,

    /// Also serve COM1 on a Unix socket at this path, for viewers (`vmdesk serial`,
    /// `socat - UNIX-CONNECT:PATH`): several at once, each sent the last 256 KiB of output
    /// first, then the output as it comes; what they send is COM1's input. Raw bytes.
    #[arg(long, value_name = "PATH")]
    pub serial_socket: Option<PathBuf>,

    /// Boot this Linux kernel (bzImage or ELF vmlinux) directly instead of the firmware.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// Initial ramdisk for --kernel.
    #[arg(long, value_name = "PATH", requires = "kernel")]
    pub initrd: Option<PathBuf>,

    /// Kernel command line for --kernel.
    #[arg(long, value_name = "TEXT", requires = "kernel")]
    pub cmdline: Option<String>,

    /// An ISO image in the IDE CD-ROM drive (secondary master, where QEMU's -cdrom goes),
    /// read-only.
    #[arg(long, value_name = "ISO")]
    pub cdrom: Option<PathBuf>,

    /// When no device boots, reboot after this many milliseconds (QEMU's
    /// `-boot reboot-timeout`); by default the firmware halts.
    #[arg(long, value_name = "MS")]
    pub reboot_timeout: Option<u32>,

    /// VNC server for the screen: HOST:N listens on port 5900+N, HOST:auto on the first
    /// free display from 0, none for no VNC.
    #[arg(long, default_value = "127.0.0.1:auto", value_parser = parse_vnc, value_name = "ADDR:N|ADDR:auto|none")]
    pub vnc: VncSpec,

    /// VNC Authentication password: the first line of this file.
    #[arg(long, value_name = "FILE")]
    pub vnc_password_file: Option<PathBuf>,

    /// Allow --vnc on a non-loopback address without a password (anyone who can reach it
    /// gets the screen and keyboard).
    #[arg(long)]
    pub vnc_allow_insecure: bool,

    /// Load this option ROM (repeatable), as QEMU's `-option-rom`: the guest sees it as
    /// fw_cfg file genroms/NAME, and SeaBIOS boots it when it has a boot entry vector.
    #[arg(long = "option-rom", value_name = "FILE")]
    pub option_roms: Vec<PathBuf>,
    /// A disk: PATH[,format=raw|qcow2][,readonly=on][,if=virtio|ide]; repeatable. The
    /// format is probed when not given. if=virtio (the default) is a virtio-blk PCI device;
    /// if=ide an ATA disk on the IDE controller (primary master, primary slave, secondary
    /// slave: at most 3), for guests without virtio drivers.
    #[arg(long = "disk", value_parser = parse_disk, value_name = "PATH[,format=F][,readonly=on][,if=I]")]
    pub disks: Vec<DiskSpec>,

    /// Boot order: a comma-separated list of cdrom and disk [default: the CD first when
    /// there is one, then the disks].
    #[arg(long, value_parser = parse_boot_order, value_name = "cdrom,disk")]
    pub boot: Option<BootOrder>,

    /// Boot order for the first boot only, as QEMU's `-boot once=`: after a guest reset
    /// the machine boots by --boot's order (an installer on the CD reboots into the disk
    /// it installed).
    #[arg(long, value_parser = parse_boot_order, value_name = "cdrom,disk")]
    pub boot_once: Option<BootOrder>,

    /// Let SeaBIOS offer its boot menu (Esc during POST) and wait for it (QEMU's
    /// `-boot menu=on`).
    #[arg(long)]
    pub boot_menu: bool,

    /// The network card (virtio-net at PCI 00:03.0): user is NAT through a passt process of
    /// this VM's own (no root; the guest reaches this machine's loopback at its gateway
    /// address), tap:NAME an existing TAP device you may open, none no card.
    #[arg(
        long = "net",
        default_value = "none",
        value_name = "user|tap:NAME|none"
    )]
    pub net: NetMode,

    /// The network card's MAC address [default: 52:54:00:12:34:56].
    #[arg(long, value_name = "MAC")]
    pub mac: Option<MacAddr>,

    /// Forward a host port to the guest (with --net user), QEMU's hostfwd form:
    /// PROTO:[HOSTADDR]:HOSTPORT-:GUESTPORT, e.g. tcp::2222-:22 (the host address defaults
    /// to 127.0.0.1: this machine only). Repeatable.
    #[arg(long = "forward", value_name = "PROTO:[ADDR]:PORT-:GUESTPORT")]
    pub forwards: Vec<Forward>,

    /// Serve the control socket (JSON lines) at this path.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,

    /// Print what this host can run, then exit (0 when KVM is usable).
    #[arg(long)]
    pub check_host: bool,
}

/// One `--disk`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    pub path: PathBuf,
    pub format: Option<crate::disk::probe::ImageFormat>,
    pub read_only: bool,
    pub bus: DiskBus,
}

/// Where a disk is attached (`--disk …,if=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskBus {
    /// A virtio-blk PCI device.
    #[default]
    Virtio,
    /// An ATA disk on the PIIX3 IDE controller.
    Ide,
}

pub fn parse_disk(s: &str) -> Result<DiskSpec, String> {
    let mut parts = s.split(',');
    let path = parts
        .next()
        .filter(|p| !p.is_empty())
        .ok_or("--disk needs a path")?;
    let mut spec = DiskSpec {
        path: PathBuf::from(path),
        format: None,
        read_only: false,
        bus: DiskBus::Virtio,
    };
    for opt in parts {
        match opt.split_once('=') {
            Some(("format", "raw")) => spec.format = Some(crate::disk::probe::ImageFormat::Raw),
            Some(("format", "qcow2")) => spec.format = Some(crate::disk::probe::ImageFormat::Qcow2),
            Some(("format", f)) => return Err(format!("format '{f}': use raw or qcow2")),
            Some(("readonly", "on")) => spec.read_only = true,
            Some(("readonly", "off")) => spec.read_only = false,
            Some(("if", "virtio")) => spec.bus = DiskBus::Virtio,
            Some(("if", "ide")) => spec.bus = DiskBus::Ide,
            Some(("if", i)) => return Err(format!("if={i}: use virtio or ide")),
            _ => {
                return Err(format!(
                    "'{opt}': use format=raw|qcow2, readonly=on|off or if=virtio|ide"
                ));
            }
        }
    }
    Ok(spec)
}

/// What `--boot` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootDevice {
    Cdrom,
    Disk,
}

/// `--boot`'s list (a newtype so clap takes the whole list as one value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootOrder(pub Vec<BootDevice>);

pub fn parse_boot_order(s: &str) -> Result<BootOrder, String> {
    s.split(',')
        .map(|d| match d {
            "cdrom" | "cd" => Ok(BootDevice::Cdrom),
            "disk" | "hd" => Ok(BootDevice::Disk),
            other => Err(format!("'{other}': use cdrom and disk, comma-separated")),
        })
        .collect::<Result<_, _>>()
        .map(BootOrder)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VncSpec {
    None,
    /// The first free display from 0 on this address.
    Auto(IpAddr),
    Display(SocketAddr),
}

pub fn parse_vnc(s: &str) -> Result<VncSpec, String> {
    if s == "none" {
        return Ok(VncSpec::None);
    }
    if let Some(host) = s.strip_suffix("auto") {
        let host = host
            .trim_end_matches(':')
            .trim_start_matches('[')
            .trim_end_matches(']');
        let ip = match host {
            "" | "localhost" => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            h => h
                .parse()
                .map_err(|_| format!("'{s}': bad address '{h}'; use ADDR:N, ADDR:auto or none"))?,
        };
        return Ok(VncSpec::Auto(ip));
    }
    display::rfb::server::parse_listen(s)
        .map(VncSpec::Display)
        .map_err(|_| format!("'{s}': use ADDR:N (port 5900+N), ADDR:auto or none"))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputSpec {
    None,
    Stdio,
    File(PathBuf),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--memory must be more than 0")]
    ZeroMemory,
    #[error("--memory {asked} MiB is more than this host's {host} MiB of RAM")]
    MemoryAboveHost { asked: u64, host: u64 },
    #[error("--memory {0} MiB is below the 2 MiB a PC firmware needs")]
    MemoryTooSmall(u64),
    #[error("--cpus must be at least 1")]
    ZeroCpus,
    #[error("--cpus {asked} is more than KVM allows here ({max})")]
    TooManyCpus { asked: u32, max: u32 },
}

/// `512`, `512M`, `2G`, `1048576K`: plain numbers are MiB.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "M"),
    };
    let mult = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "K" => KIB,
        "M" => MIB,
        "G" => GIB,
        _ => {
            return Err(format!(
                "'{s}' is not a size: use a number with K, M or G (e.g. 512M, 4G)"
            ));
        }
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size: use a number with K, M or G (e.g. 512M, 4G)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

pub fn parse_output(s: &str) -> Result<OutputSpec, String> {
    match s {
        "none" => Ok(OutputSpec::None),
        "stdio" => Ok(OutputSpec::Stdio),
        _ => match s.strip_prefix("file:") {
            Some("") | None => Err(format!("'{s}': use file:PATH, stdio or none")),
            Some(p) => Ok(OutputSpec::File(PathBuf::from(p))),
        },
    }
}

impl Cli {
    /// Checks that need facts about the host (its RAM, KVM's vCPU limit).
    pub fn check(&self, host_ram: Option<u64>, max_cpus: u32) -> Result<(), ConfigError> {
        if self.memory == 0 {
            return Err(ConfigError::ZeroMemory);
        }
        if self.memory < 2 * MIB {
            return Err(ConfigError::MemoryTooSmall(self.memory >> 20));
        }
        if let Some(host) = host_ram
            && self.memory > host
        {
            return Err(ConfigError::MemoryAboveHost {
                asked: self.memory >> 20,
                host: host >> 20,
            });
        }
        if self.cpus == 0 {
            return Err(ConfigError::ZeroCpus);
        }
        if self.cpus > max_cpus {
            return Err(ConfigError::TooManyCpus {
                asked: self.cpus,
                max: max_cpus,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("512"), Ok(512 * MIB));
        assert_eq!(parse_memory("512M"), Ok(512 * MIB));
        assert_eq!(parse_memory("4G"), Ok(4 * GIB));
        assert_eq!(parse_memory("4GiB"), Ok(4 * GIB));
        assert_eq!(parse_memory("65536k"), Ok(64 * MIB));
        assert_eq!(parse_memory("0"), Ok(0));
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("12X").is_err());
        assert!(parse_memory("99999999999999999999G").is_err());
    }

    #[test]
    fn disk_specs() {
        use crate::disk::probe::ImageFormat;
        let d = parse_disk("a.qcow2,format=qcow2,readonly=on").unwrap();
        assert_eq!(
            (d.path.to_str(), d.format, d.read_only),
            (Some("a.qcow2"), Some(ImageFormat::Qcow2), true)
        );
        assert_eq!(parse_disk("b.img").unwrap().format, None);
        assert!(parse_disk("b.img,format=vmdk").is_err());
        assert!(parse_disk("b.img,cache=none").is_err());
        assert!(parse_disk(",format=raw").is_err());
        assert_eq!(parse_disk("b.img").unwrap().bus, DiskBus::Virtio);
        assert_eq!(parse_disk("b.img,if=ide").unwrap().bus, DiskBus::Ide);
        assert!(
            parse_disk("b.img,if=scsi")
                .unwrap_err()
                .contains("virtio or ide")
        );
        assert_eq!(
            cli(&["--boot-once", "cdrom", "--boot", "disk,cdrom"]).boot_once,
            Some(BootOrder(vec![BootDevice::Cdrom]))
        );
        assert_eq!(
            parse_boot_order("cdrom,disk"),
            Ok(BootOrder(vec![BootDevice::Cdrom, BootDevice::Disk]))
        );
        assert_eq!(
            cli(&["--boot", "disk,cdrom"]).boot,
            Some(BootOrder(vec![BootDevice::Disk, BootDevice::Cdrom]))
        );
        assert_eq!(cli(&["--disk", "a.img", "--disk", "b.img"]).disks.len(), 2);
        assert!(parse_boot_order("net").is_err());
    }

    #[test]
    fn vnc_specs() {
        assert_eq!(parse_vnc("none"), Ok(VncSpec::None));
        assert_eq!(
            parse_vnc("127.0.0.1:auto"),
            Ok(VncSpec::Auto("127.0.0.1".parse().unwrap()))
        );
        assert_eq!(
            parse_vnc("127.0.0.1:1"),
            Ok(VncSpec::Display("127.0.0.1:5901".parse().unwrap()))
        );
        assert_eq!(
            parse_vnc(":3"),
            Ok(VncSpec::Display("127.0.0.1:5903".parse().unwrap()))
        );
        assert!(parse_vnc("127.0.0.1").is_err());
        assert!(parse_vnc("nowhere:auto").is_err());
        assert!(parse_vnc("1.2.3.4:99999").is_err());
    }

    #[test]
    fn outputs() {
        assert_eq!(parse_output("none"), Ok(OutputSpec::None));
        assert_eq!(
            parse_output("file:/tmp/x"),
            Ok(OutputSpec::File("/tmp/x".into()))
        );
        assert!(parse_output("file:").is_err());
        assert!(parse_output("tcp:1").is_err());
    }

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("vmdesk-vmm").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn checks() {
        let host = Some(8 * GIB);
        assert_eq!(
            cli(&["--memory", "0"]).check(host, 4),
            Err(ConfigError::ZeroMemory)
        );
        assert!(matches!(
            cli(&["--memory", "9G"]).check(host, 4),
            Err(ConfigError::MemoryAboveHost { .. })
        ));
        assert_eq!(
            cli(&["--cpus", "0"]).check(host, 4),
            Err(ConfigError::ZeroCpus)
        );
        assert_eq!(
            cli(&["--cpus", "5"]).check(host, 4),
            Err(ConfigError::TooManyCpus { asked: 5, max: 4 })
        );
        assert_eq!(
            cli(&["--cpus", "4", "--memory", "4G"]).check(host, 4),
            Ok(())
        );
    }

    #[test]
    fn cdrom_option() {
        assert_eq!(
            cli(&["--cdrom", "x.iso"]).cdrom,
            Some(PathBuf::from("x.iso"))
        );
        assert_eq!(cli(&[]).cdrom, None);
    }

    #[test]
    fn initrd_needs_kernel() {
        assert!(Cli::try_parse_from(["vmdesk-vmm", "--initrd", "x"]).is_err());
    }
}
