//! Making VMs: a new VM's description ([`NewVm`], what `vmdesk create` and the create
//! dialog fill in), its `--disk` options, the OS detection that may fill it, its firmware,
//! and the creation itself; and the settings `vmdesk set` changes on a stopped VM.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use vmm::disk::Preallocation;

use super::{Usage, VmService, usage};
use crate::disk;
use crate::library::{
    self, DiskBus, DiskDef, DiskFormat, Firmware, Forward, HostFacts, LibraryError, MacAddr,
    NetMode, VmDef,
};
use crate::nvram;
use crate::osinfo;

const MIB: u64 = 1 << 20;

/// A VM to make, as the person described it: `None` (and empty) for what they left out.
#[derive(Debug, Clone)]
pub struct NewVm {
    /// May be left out with a CD: the OS found on it names the VM.
    pub name: Option<String>,
    /// Guest RAM in bytes.
    pub memory: Option<u64>,
    pub cpus: Option<u32>,
    /// `--disk` options: `size=…[,path=…][,format=…][,preallocation=…][,bus=…]` or
    /// `path=…[,format=…][,bus=…]`.
    pub disks: Vec<String>,
    pub cdrom: Option<PathBuf>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    /// `ADDR:N`, `ADDR:auto`, `auto` or `none`.
    pub vnc: String,
    pub vnc_password_file: Option<PathBuf>,
    pub network: NetMode,
    pub forwards: Vec<Forward>,
    pub mac: Option<MacAddr>,
    /// `None`: [`VmService::resolve_firmware`]'s default.
    pub firmware: Option<Firmware>,
}

/// A change to a stopped VM's settings (`vmdesk set`): its network, its firmware.
#[derive(Debug, Clone, Default)]
pub struct VmChange {
    pub name: String,
    pub network: Option<NetMode>,
    /// Added to the forwards the VM has (after `no_forwards`).
    pub forwards: Vec<Forward>,
    /// Remove every forward first.
    pub no_forwards: bool,
    pub mac: Option<MacAddr>,
    /// UEFI makes the VM's variable store if it has none (or it has gone); BIOS keeps it.
    pub firmware: Option<Firmware>,
}

/// The default memory and vCPUs of `vmdesk create`.
const DEFAULT_MEMORY: u64 = 512 * MIB;
const DEFAULT_CPUS: u32 = 1;

impl VmService {
    /// A new VM with a CD that leaves out the name, or every figure (memory, vCPUs,
    /// disks): the OS on the ISO (osinfo-db) supplies them, as virt-install's and GNOME Boxes'
    /// detection does; what the person gave stays. Returns what detection found, to be shown.
    pub fn fill_from_iso(&self, a: &mut NewVm) -> anyhow::Result<Option<osinfo::Detection>> {
        let no_figures = a.memory.is_none() && a.cpus.is_none() && a.disks.is_empty();
        let Some(iso) = a.cdrom.as_ref().filter(|p| p.is_file()) else {
            return Ok(None);
        };
        if a.name.is_some() && !no_figures {
            return Ok(None);
        }
        let found = osinfo::detect(iso);
        match (found.proposal(), &a.name) {
            (Some(p), name) => {
                if name.is_none() {
                    a.name = Some(p.free_name(&|n| self.exists(n)));
                }
                if no_figures {
                    a.memory = Some(p.memory_mib * MIB);
                    a.cpus = Some(p.cpus);
                    a.disks = vec![format!("size={}", p.disk_bytes)];
                }
            }
            (None, None) => {
                return usage(format!(
                    "give the VM a name with --name ({})",
                    found.why_none().unwrap_or_default()
                ));
            }
            (None, Some(_)) => {}
        }
        Ok(Some(found))
    }

    /// The OS on `a`'s CD as osinfo-db knows it: its name and what it says of firmware.
    fn detected_os(a: &NewVm) -> Option<(String, osinfo::FirmwareNeed)> {
        let iso = a.cdrom.as_ref().filter(|p| p.is_file())?;
        let found = osinfo::detect(iso);
        let p = found.proposal()?;
        Some((p.os_name.clone(), p.firmware))
    }

    /// The firmware the new VM `a` gets: what the person chose, else UEFI where this host
    /// has OVMF and the OS on the CD supports it, else BIOS ([`nvram::default_firmware`]).
    /// Asking for UEFI without the `ovmf` package is bad input: one line naming it.
    pub fn resolve_firmware(&self, a: &NewVm) -> anyhow::Result<Firmware> {
        match a.firmware {
            Some(Firmware::Uefi) => {
                (self.ovmf)().map_err(|e| Usage(e.to_string()))?;
                Ok(Firmware::Uefi)
            }
            Some(Firmware::Bios) => Ok(Firmware::Bios),
            None => Ok(nvram::default_firmware(
                self.ovmf_available(),
                Self::detected_os(a).map(|(_, need)| need),
            )),
        }
    }

    /// Changes a stopped VM's settings in its definition (`vmdesk set`): the forwards in
    /// `a` are added to those it has, after `no_forwards` removed them. Returns the new
    /// definition and its warnings.
    pub fn set(&self, a: VmChange) -> anyhow::Result<(VmDef, Vec<library::Warning>)> {
        let name = &a.name;
        let mut def = self.get(name)?;
        if a.network.is_none()
            && a.forwards.is_empty()
            && !a.no_forwards
            && a.mac.is_none()
            && a.firmware.is_none()
        {
            return usage(format!(
                "'{name}': nothing to change: give --network, --forward, --no-forwards, --mac \
                 or --firmware"
            ));
        }
        if self.rt.state(name).is_live() {
            bail!(
                "'{name}' is running: shut it down first (its network and firmware are set up \
                 when it starts)"
            );
        }
        if a.no_forwards {
            def.forwards.clear();
        }
        if let Some(mode) = a.network {
            def.network = mode;
        }
        def.forwards.extend(a.forwards);
        if let Some(mac) = a.mac {
            def.mac = mac;
        }
        if let Some(f) = a.firmware {
            def.firmware = f;
        }
        let mut warnings = library::validate(&def, &HostFacts::detect())
            .map_err(|e| Usage(format!("'{name}': {e}")))?;
        warnings.extend(self.lib.network_clashes(&def, name));
        // Only when asked: a network change must not quietly replace a store that has gone.
        let made = match a.firmware {
            Some(Firmware::Uefi) => nvram::ensure(&mut def, &nvram::nvram_dir()?, self.ovmf)?,
            _ => None,
        };
        if let Err(e) = self.lib.update(&def) {
            if let Some(p) = made {
                let _ = std::fs::remove_file(p);
            }
            return Err(e.into());
        }
        Ok((def, warnings))
    }

    /// Validates, creates the new disks (and a UEFI VM's variable store) and adds the VM to
    /// the library; on any failure nothing is left behind. `progress` hears (bytes
    /// reserved, bytes to reserve) while preallocated disks are made, and returns `false`
    /// to cancel (then nothing is left either).
    pub fn create(
        &self,
        a: NewVm,
        progress: &mut dyn FnMut(u64, u64) -> bool,
    ) -> anyhow::Result<(VmDef, Vec<library::Warning>)> {
        let lib = &self.lib;
        let Some(name) = a.name.clone() else {
            return usage("give the VM a name with --name");
        };
        let firmware = self.resolve_firmware(&a)?;
        // Allowed (the person may know better, or install OVMF later), but said.
        let needs_uefi = match (firmware, Self::detected_os(&a)) {
            (Firmware::Bios, Some((os, osinfo::FirmwareNeed::UefiRequired))) => Some(os),
            _ => None,
        };
        let memory = a.memory.unwrap_or(DEFAULT_MEMORY);
        let mut def = VmDef::new(&name, memory.div_ceil(MIB), a.cpus.unwrap_or(DEFAULT_CPUS));
        def.firmware = firmware;
        def.vnc = match a.vnc.as_str() {
            "auto" => "127.0.0.1:auto".into(),
            v => v.into(),
        };
        def.cmdline = a.cmdline;
        let file = |p: Option<PathBuf>, what: &str| -> anyhow::Result<Option<PathBuf>> {
            match p {
                None => Ok(None),
                Some(p) if p.is_file() => Ok(Some(absolute(&p)?)),
                Some(p) => usage(format!("'{name}': --{what} {}: no such file", p.display())),
            }
        };
        def.cdrom = file(a.cdrom, "cdrom")?;
        def.kernel = file(a.kernel, "kernel")?;
        def.initrd = file(a.initrd, "initrd")?;
        def.vnc_password_file = file(a.vnc_password_file, "vnc-password-file")?;
        def.network = a.network;
        def.forwards = a.forwards;
        if let Some(mac) = a.mac {
            def.mac = mac;
        }
        let disks: Vec<DiskOpt> = a
            .disks
            .iter()
            .map(|s| parse_disk_opt(s).map_err(Usage))
            .collect::<Result<_, _>>()?;
        let mut warnings = library::validate(&def, &HostFacts::detect())
            .map_err(|e| Usage(format!("'{name}': {e}")))?;
        warnings.extend(lib.network_clashes(&def, &name));
        if lib.path_of(&name).exists() {
            return usage(format!("a VM named '{name}' already exists"));
        }
        if let Some(os) = needs_uefi {
            warnings.push(library::Warning::NeedsUefi {
                vm: name.clone(),
                os,
            });
        }

        // New disks go to the images dir, named after the VM; never over an existing file.
        let mut created: Vec<PathBuf> = Vec::new();
        let to_reserve: u64 = disks
            .iter()
            .map(|d| match d {
                DiskOpt::New {
                    size,
                    preallocate: true,
                    ..
                } => *size,
                _ => 0,
            })
            .sum();
        let mut reserved = 0;
        let result = (|| -> anyhow::Result<()> {
            let mut new_index = 0;
            for d in disks {
                match d {
                    DiskOpt::Existing { path, format, bus } => {
                        if !path.is_file() {
                            return usage(format!(
                                "'{name}': --disk path={}: no such file",
                                path.display()
                            ));
                        }
                        def.disks.push(DiskDef {
                            path: absolute(&path)?,
                            format,
                            size: None,
                            preallocated: false,
                            bus,
                        });
                    }
                    DiskOpt::New {
                        size,
                        path,
                        format,
                        preallocate,
                        bus,
                    } => {
                        let path = match path {
                            Some(p) => absolute(&p)?,
                            None => {
                                let dir = images_dir()?;
                                std::fs::create_dir_all(&dir)
                                    .with_context(|| format!("cannot create {}", dir.display()))?;
                                let stem = match new_index {
                                    0 => name.clone(),
                                    n => format!("{name}-{n}"),
                                };
                                new_index += 1;
                                dir.join(format!("{stem}.{}", format.as_str()))
                            }
                        };
                        if std::fs::symlink_metadata(&path).is_ok() {
                            bail!(
                                "'{name}': {} already exists (delete it, or use --disk path={} \
                                 without size= to use it as it is)",
                                path.display(),
                                path.display()
                            );
                        }
                        let prealloc = if preallocate {
                            Preallocation::Full
                        } else {
                            Preallocation::Off
                        };
                        let before = reserved;
                        let mut report = |done: u64| {
                            reserved = before + done;
                            progress(reserved, to_reserve)
                        };
                        let made = vmm::disk::create_image_with(
                            &path,
                            format.into(),
                            size,
                            false,
                            prealloc,
                            &mut report,
                        );
                        match made {
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                                bail!("'{name}': cancelled while creating {}", path.display())
                            }
                            r => r.with_context(|| {
                                format!("'{name}': cannot create {}", path.display())
                            })?,
                        }
                        created.push(path.clone());
                        def.disks.push(DiskDef {
                            path,
                            format,
                            size: Some(size),
                            preallocated: preallocate,
                            bus,
                        });
                    }
                }
            }
            created.extend(nvram::ensure(&mut def, &nvram::nvram_dir()?, self.ovmf)?);
            lib.create(&def).map_err(|e| match e {
                LibraryError::Exists(_) => Usage(e.to_string()).into(),
                e => anyhow::Error::from(e),
            })
        })();
        if let Err(e) = result {
            for p in created {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        Ok((def, warnings))
    }
}

/// A `--disk` option, parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum DiskOpt {
    New {
        size: u64,
        /// Where to make it (`path=` beside `size=`); by default in vmdesk's images folder.
        path: Option<PathBuf>,
        format: DiskFormat,
        /// `preallocation=full`: reserve all its space at creation.
        preallocate: bool,
        bus: DiskBus,
    },
    Existing {
        path: PathBuf,
        format: DiskFormat,
        bus: DiskBus,
    },
}

fn parse_format(s: &str) -> Result<DiskFormat, String> {
    match s {
        "raw" => Ok(DiskFormat::Raw),
        "qcow2" => Ok(DiskFormat::Qcow2),
        _ => Err(format!("format={s}: use raw or qcow2")),
    }
}

pub fn parse_disk_opt(s: &str) -> Result<DiskOpt, String> {
    let (mut size, mut path, mut format, mut preallocate) = (None, None, None, None);
    let mut bus = DiskBus::Virtio;
    for part in s.split(',') {
        match part.split_once('=') {
            Some(("size", v)) => size = Some(disk::parse_size(v)?),
            Some(("path", v)) if !v.is_empty() => path = Some(PathBuf::from(v)),
            Some(("format", v)) => format = Some(parse_format(v)?),
            Some(("preallocation", "off")) => preallocate = Some(false),
            Some(("preallocation", "full")) => preallocate = Some(true),
            Some(("preallocation", v)) => {
                return Err(format!("preallocation={v}: use off or full"));
            }
            Some(("bus", "virtio")) => bus = DiskBus::Virtio,
            Some(("bus", "ide")) => bus = DiskBus::Ide,
            Some(("bus", v)) => return Err(format!("bus={v}: use virtio or ide")),
            _ => {
                return Err(format!(
                    "--disk {s}: '{part}' is not size=, path=, format=, preallocation= or bus="
                ));
            }
        }
    }
    match (size, path) {
        (Some(size), path) => {
            let format = match &path {
                // A new image at a path of the person's: its format follows its name.
                Some(p) => disk::new_image_format(p, format.map(Into::into))
                    .map_err(|e| format!("--disk {s}: {e}"))?
                    .into(),
                None => format.unwrap_or(DiskFormat::Qcow2),
            };
            let preallocate = preallocate.unwrap_or(false);
            if preallocate && format == DiskFormat::Qcow2 {
                return Err(format!(
                    "--disk {s}: preallocation=full is for raw disks (add format=raw; a \
                     qcow2 image grows as the guest writes)"
                ));
            }
            Ok(DiskOpt::New {
                size,
                path,
                format,
                preallocate,
                bus,
            })
        }
        (None, Some(_)) if preallocate.is_some() => Err(format!(
            "--disk {s}: preallocation= is for a new disk (size=), not an existing image"
        )),
        (None, Some(path)) => {
            // An existing image: as said, else as its name says, else raw (vmdesk-vmm
            // refuses to let a guest turn a raw image it probed into anything else).
            let format = format.unwrap_or_else(|| {
                vmm::disk::ImageFormat::from_name(&path).map_or(DiskFormat::Raw, Into::into)
            });
            Ok(DiskOpt::Existing { path, format, bus })
        }
        (None, None) => Err(format!(
            "--disk {s}: give size= (a new disk, with path= to say where) or path= (an \
             existing image)"
        )),
    }
}

pub(crate) fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("{}", p.display()))
}

/// Where new disk images go: `$XDG_DATA_HOME/vmdesk/images`.
pub fn images_dir() -> anyhow::Result<PathBuf> {
    let base = library::xdg_dir("XDG_DATA_HOME", ".local/share")
        .context("neither XDG_DATA_HOME nor HOME is set: nowhere to put disk images")?;
    Ok(base.join("vmdesk").join("images"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_options() {
        assert_eq!(
            parse_disk_opt("size=10G"),
            Ok(DiskOpt::New {
                size: 10 << 30,
                path: None,
                format: DiskFormat::Qcow2,
                preallocate: false,
                bus: DiskBus::Virtio,
            })
        );
        assert_eq!(
            parse_disk_opt("size=64M,format=raw"),
            Ok(DiskOpt::New {
                size: 64 << 20,
                path: None,
                format: DiskFormat::Raw,
                preallocate: false,
                bus: DiskBus::Virtio,
            })
        );
        assert_eq!(
            parse_disk_opt("size=64M,format=raw,preallocation=full"),
            Ok(DiskOpt::New {
                size: 64 << 20,
                path: None,
                format: DiskFormat::Raw,
                preallocate: true,
                bus: DiskBus::Virtio,
            })
        );
        // A new disk at a path of the person's: its format follows its name.
        for (spec, format) in [
            ("size=1G,path=/x/t1.raw", DiskFormat::Raw),
            ("size=1G,path=/x/t1.IMG", DiskFormat::Raw),
            ("size=1G,path=/x/t1.qcow2", DiskFormat::Qcow2),
            ("size=1G,path=/x/t1", DiskFormat::Qcow2),
            ("size=1G,path=/x/t1,format=raw", DiskFormat::Raw),
            ("size=1G,path=/x/t1.raw,format=raw", DiskFormat::Raw),
        ] {
            match parse_disk_opt(spec) {
                Ok(DiskOpt::New {
                    path, format: f, ..
                }) => {
                    assert_eq!((path.is_some(), f), (true, format), "{spec}")
                }
                other => panic!("{spec}: {other:?}"),
            }
        }
        for (bad, says) in [
            ("size=1G,path=/x/t1.raw,format=qcow2", "its name says raw"),
            ("size=1G,path=/x/t1.qcow2,format=raw", "its name says qcow2"),
            (
                "size=1G,path=/x/t1.qcow2,preallocation=full",
                "is for raw disks",
            ),
            ("size=1G,preallocation=full", "is for raw disks"),
            ("size=1G,format=raw,preallocation=some", "use off or full"),
            ("path=/x/a.raw,preallocation=full", "is for a new disk"),
        ] {
            let e = parse_disk_opt(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert_eq!(
            parse_disk_opt("path=/x/a.qcow2"),
            Ok(DiskOpt::Existing {
                path: "/x/a.qcow2".into(),
                format: DiskFormat::Qcow2,
                bus: DiskBus::Virtio,
            })
        );
        assert_eq!(
            parse_disk_opt("path=/x/a.img"),
            Ok(DiskOpt::Existing {
                path: "/x/a.img".into(),
                format: DiskFormat::Raw,
                bus: DiskBus::Virtio,
            })
        );
        assert_eq!(
            parse_disk_opt("path=/x/a.raw,bus=ide"),
            Ok(DiskOpt::Existing {
                path: "/x/a.raw".into(),
                format: DiskFormat::Raw,
                bus: DiskBus::Ide,
            })
        );
        assert!(
            parse_disk_opt("size=1G,bus=scsi")
                .unwrap_err()
                .contains("use virtio or ide")
        );
        for bad in [
            "",
            "size=0",
            "format=qcow2",
            "size=1G,format=vmdk",
            "path=",
            "colour=red",
        ] {
            assert!(parse_disk_opt(bad).is_err(), "{bad}");
        }
    }
}
