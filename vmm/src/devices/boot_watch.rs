//! What the firmware's boot did, read from SeaBIOS's log on the debug console: which
//! devices it tried, why each failed, whether it handed control to boot code, and "No
//! bootable device." at the end. In the style of vm-superio: [`BootWatch`] takes the
//! bytes the guest writes and yields [`BootEvent`]s; [`BootStatus`] adds them up and words
//! a failure for people ([`BootStatus::message`]). No VM is needed to test either.
//!
//! The lines are SeaBIOS's own (`src/boot.c`, `src/cdrom.c`, unchanged from 1.16 as Debian
//! 12 ships it to today): `Booting from Hard Disk...`, `Booting from DVD/CD...`,
//! `Booting from Floppy...`, `Booting from ROM...`, `Boot failed: not a bootable disk`,
//! `Boot failed: could not read the boot disk`, `Boot failed: Could not read from CDROM
//! (code %04x)`, `Booting from %04x:%04x` (the jump to the boot code), `No bootable
//! device.` (and `No bootable device.  Retrying in %d seconds.` with a reboot timeout).

use std::path::Path;

use serde_json::{Value, json};

/// Longest line kept; the rest of a longer one is dropped (SeaBIOS's are far shorter).
const MAX_LINE: usize = 160;

/// A kind of device as SeaBIOS's `Booting from …` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootTarget {
    Floppy,
    HardDisk,
    Cdrom,
    /// An option ROM's boot entry (BEV).
    Rom,
}

impl BootTarget {
    pub fn name(self) -> &'static str {
        match self {
            BootTarget::Floppy => "floppy",
            BootTarget::HardDisk => "disk",
            BootTarget::Cdrom => "cdrom",
            BootTarget::Rom => "rom",
        }
    }
}

/// Why one device did not boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootError {
    /// `Boot failed: not a bootable disk`: no 0x55AA signature in sector 0.
    NoBootSignature,
    /// `Boot failed: could not read the boot disk` (also what a machine without that
    /// drive gets).
    DiskUnreadable,
    /// `Boot failed: Could not read from CDROM (code N)`, N from SeaBIOS's `cdrom_boot`.
    Cdrom(u16),
    /// The boot code ran and gave up (INT 18h: an MBR with no active partition).
    BootCodeGaveUp,
}

impl BootError {
    /// What went wrong, in a few words.
    pub fn describe(self) -> String {
        match self {
            BootError::NoBootSignature => "no boot signature (the disk is empty)".into(),
            BootError::DiskUnreadable => "could not read the boot sector".into(),
            BootError::BootCodeGaveUp => "its boot code found nothing to start".into(),
            BootError::Cdrom(code) => match code {
                1 => "no CD drive".into(),
                3 => "could not read the disc (no disc in the drive?)".into(),
                4 | 5 => "no El Torito boot record (not a bootable CD)".into(),
                9 => "its boot catalog is for another platform (UEFI only?)".into(),
                7 | 8 | 10 => format!("damaged boot catalog (code {code})"),
                11 => "its boot entry is marked not bootable".into(),
                12 => "could not read its boot image".into(),
                13 => "it asks for floppy or hard disk emulation".into(),
                _ => format!("SeaBIOS CD boot error {code}"),
            },
        }
    }
}

/// One thing the firmware's log says about booting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootEvent {
    /// `Booting from Hard Disk...` and the like: a device is being tried.
    Trying(BootTarget),
    /// The device being tried did not boot.
    Failed(BootTarget, BootError),
    /// `Booting from 0000:7c00`: the firmware jumped to the device's boot code.
    Jumped { segment: u16, offset: u16 },
    /// `No bootable device.`: every device failed; `retry_secs` when the firmware will
    /// reboot and try again.
    NoBootableDevice { retry_secs: Option<u32> },
}

/// Turns the debug console's bytes into [`BootEvent`]s, a line at a time.
#[derive(Debug, Default)]
pub struct BootWatch {
    line: Vec<u8>,
    /// The device being tried (for `Boot failed: …` lines, which do not name it).
    current: Option<BootTarget>,
}

impl BootWatch {
    pub fn new() -> BootWatch {
        BootWatch::default()
    }

    /// Takes one byte of the log; returns the event its line made, once the line ends.
    pub fn push(&mut self, byte: u8) -> Option<BootEvent> {
        if byte != b'\n' {
            if self.line.len() < MAX_LINE {
                self.line.push(byte);
            }
            return None;
        }
        let line = std::mem::take(&mut self.line);
        let text = String::from_utf8_lossy(&line);
        self.line(text.trim_end_matches('\r'))
    }

    /// Takes a whole line (without its newline).
    pub fn line(&mut self, line: &str) -> Option<BootEvent> {
        if let Some(rest) = line.strip_prefix("Booting from ") {
            let target = match rest {
                "Hard Disk..." => Some(BootTarget::HardDisk),
                "DVD/CD..." => Some(BootTarget::Cdrom),
                "Floppy..." => Some(BootTarget::Floppy),
                "ROM..." => Some(BootTarget::Rom),
                _ => None,
            };
            if let Some(t) = target {
                self.current = Some(t);
                return Some(BootEvent::Trying(t));
            }
            let (seg, off) = rest.split_once(':')?;
            let hex = |s: &str| (s.len() == 4).then(|| u16::from_str_radix(s, 16).ok())?;
            return Some(BootEvent::Jumped {
                segment: hex(seg)?,
                offset: hex(off)?,
            });
        }
        if let Some(why) = line.strip_prefix("Boot failed: ") {
            let error = if why == "not a bootable disk" {
                BootError::NoBootSignature
            } else if why == "could not read the boot disk" {
                BootError::DiskUnreadable
            } else {
                let code = why
                    .strip_prefix("Could not read from CDROM (code ")?
                    .strip_suffix(')')?;
                BootError::Cdrom(u16::from_str_radix(code, 16).ok()?)
            };
            let target = match error {
                BootError::Cdrom(_) => BootTarget::Cdrom,
                _ => self.current.unwrap_or(BootTarget::HardDisk),
            };
            return Some(BootEvent::Failed(target, error));
        }
        if let Some(rest) = line.strip_prefix("No bootable device.") {
            self.current = None;
            let retry_secs = rest
                .trim()
                .strip_prefix("Retrying in ")
                .and_then(|r| r.strip_suffix(" seconds."))
                .and_then(|n| n.parse().ok());
            return Some(BootEvent::NoBootableDevice { retry_secs });
        }
        None
    }
}

/// Where the boot is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BootState {
    /// The firmware has not tried a device yet (POST).
    #[default]
    Firmware,
    /// Devices are being tried.
    Trying,
    /// The firmware jumped to a device's boot code.
    Booted,
    /// No device booted.
    Failed,
}

impl BootState {
    pub fn name(self) -> &'static str {
        match self {
            BootState::Firmware => "firmware",
            BootState::Trying => "trying",
            BootState::Booted => "booted",
            BootState::Failed => "failed",
        }
    }
}

/// One device tried, and why it did not boot (`None`: it booted, or is being tried).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub target: BootTarget,
    pub error: Option<BootError>,
}

/// The boot so far, from the events of one run of the firmware.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootStatus {
    pub state: BootState,
    /// In the order tried.
    pub tried: Vec<Attempt>,
    /// With [`BootState::Failed`]: the firmware reboots after this many seconds.
    pub retry_secs: Option<u32>,
}

/// What the machine has in its boot devices, for [`BootStatus::message`].
#[derive(Clone, Copy, Debug, Default)]
pub struct BootMedia<'a> {
    /// The machine has a CD drive.
    pub cdrom_drive: bool,
    /// The ISO in it.
    pub cdrom: Option<&'a Path>,
    /// The disk the firmware boots as its hard disk (the first in the boot order).
    pub disk: Option<&'a Path>,
}

impl BootStatus {
    /// Adds one event; true when it is the one that made the boot fail.
    pub fn apply(&mut self, event: BootEvent) -> bool {
        match event {
            BootEvent::Trying(target) => {
                match self.state {
                    // A new round (the firmware's retry): what failed before is history.
                    BootState::Failed => *self = BootStatus::default(),
                    // The boot code handed back (INT 18h) and the firmware goes on.
                    BootState::Booted => {
                        if let Some(a) = self.tried.last_mut() {
                            a.error.get_or_insert(BootError::BootCodeGaveUp);
                        }
                    }
                    _ => {}
                }
                self.state = BootState::Trying;
                self.tried.push(Attempt {
                    target,
                    error: None,
                });
                false
            }
            BootEvent::Failed(target, error) => {
                match self.tried.last_mut() {
                    Some(a) if a.target == target && a.error.is_none() => a.error = Some(error),
                    _ => self.tried.push(Attempt {
                        target,
                        error: Some(error),
                    }),
                }
                if self.state != BootState::Failed {
                    self.state = BootState::Trying;
                }
                false
            }
            BootEvent::Jumped { .. } => {
                self.state = BootState::Booted;
                self.retry_secs = None;
                false
            }
            BootEvent::NoBootableDevice { retry_secs } => {
                let newly = self.state != BootState::Failed;
                self.state = BootState::Failed;
                self.retry_secs = retry_secs;
                newly
            }
        }
    }

    /// The attempts on devices `media` has (SeaBIOS also tries a floppy and a hard disk
    /// that are not there), one per kind of device.
    pub fn relevant<'s>(&'s self, media: &BootMedia) -> Vec<&'s Attempt> {
        let mut out: Vec<&Attempt> = Vec::new();
        for a in &self.tried {
            let present = match a.target {
                BootTarget::Floppy => false,
                BootTarget::HardDisk => media.disk.is_some(),
                BootTarget::Cdrom => media.cdrom_drive,
                BootTarget::Rom => true,
            };
            if present && !out.iter().any(|o| o.target == a.target) {
                out.push(a);
            }
        }
        out
    }

    /// For a failed boot: what is wrong, in one line naming each device and why it did not
    /// boot, e.g. "No bootable device: the CD /isos/data.iso is not bootable (no El Torito
    /// boot record: a data disc, or an ISO made without a boot image); the disk
    /// /vm/disk.qcow2 is empty (no boot signature)". `None` unless the boot failed.
    pub fn message(&self, media: &BootMedia) -> Option<String> {
        if self.state != BootState::Failed {
            return None;
        }
        let shown = |p: Option<&Path>| p.map(|p| p.display().to_string()).unwrap_or_default();
        let mut parts: Vec<String> = self
            .relevant(media)
            .into_iter()
            .map(|a| match (a.target, a.error) {
                (BootTarget::Cdrom, e) => {
                    let cd = shown(media.cdrom);
                    match e {
                        Some(BootError::Cdrom(3)) if media.cdrom.is_none() => {
                            "the CD drive is empty".to_string()
                        }
                        Some(BootError::Cdrom(3)) => format!("the CD {cd} could not be read"),
                        Some(BootError::Cdrom(4 | 5)) => format!(
                            "the CD {cd} is not bootable (no El Torito boot record: a data \
                             disc, or an ISO made without a boot image)"
                        ),
                        Some(BootError::Cdrom(9)) => format!(
                            "the CD {cd} boots only with UEFI (its boot catalog is for \
                             another platform; this VM's firmware is a BIOS)"
                        ),
                        Some(e) => format!("the CD {cd} did not boot: {}", e.describe()),
                        None => format!("the CD {cd} did not boot"),
                    }
                }
                (BootTarget::HardDisk, e) => {
                    let disk = shown(media.disk);
                    match e {
                        Some(BootError::NoBootSignature) => format!(
                            "the disk {disk} is empty (no boot signature: nothing is \
                             installed on it)"
                        ),
                        Some(BootError::BootCodeGaveUp) => format!(
                            "the disk {disk}'s boot code found nothing to start (no active \
                             partition or boot loader)"
                        ),
                        Some(e) => format!("the disk {disk} did not boot: {}", e.describe()),
                        None => format!("the disk {disk} did not boot"),
                    }
                }
                (t, e) => format!(
                    "the {} did not boot{}",
                    if t == BootTarget::Rom {
                        "option ROM"
                    } else {
                        t.name()
                    },
                    e.map(|e| format!(": {}", e.describe())).unwrap_or_default()
                ),
            })
            .collect();
        if parts.is_empty() {
            parts.push(
                match (media.cdrom_drive, media.disk) {
                    (false, None) => "this VM has no disk and no CD",
                    _ => "nothing on its disk or CD could be started",
                }
                .into(),
            );
        }
        let retry = self
            .retry_secs
            .map(|s| format!(" (the firmware tries again in {s} s)"))
            .unwrap_or_default();
        Some(format!("No bootable device: {}{retry}", parts.join("; ")))
    }

    /// The control socket's `boot` object: `state`, the devices `tried` (each with the
    /// `error` that stopped it), and with a failed boot its `message`.
    pub fn to_json(&self, media: &BootMedia) -> Value {
        let tried: Vec<Value> = self
            .relevant(media)
            .into_iter()
            .map(|a| {
                let path = match a.target {
                    BootTarget::Cdrom => media.cdrom,
                    BootTarget::HardDisk => media.disk,
                    _ => None,
                };
                json!({
                    "device": a.target.name(),
                    "path": path,
                    "error": a.error.map(BootError::describe),
                })
            })
            .collect();
        let mut v = json!({ "state": self.state.name(), "tried": tried });
        if let Some(m) = self.message(media) {
            v["message"] = Value::String(m);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn feed(watch: &mut BootWatch, status: &mut BootStatus, log: &str) -> Vec<BootEvent> {
        let mut events = Vec::new();
        for &b in log.as_bytes() {
            if let Some(e) = watch.push(b) {
                status.apply(e);
                events.push(e);
            }
        }
        events
    }

    fn run(log: &str) -> (Vec<BootEvent>, BootStatus) {
        let mut status = BootStatus::default();
        let events = feed(&mut BootWatch::new(), &mut status, log);
        (events, status)
    }

    /// SeaBIOS 1.16.2 (Debian 12) under vmdesk-vmm with `--boot disk,cdrom`, an empty raw
    /// disk and an ISO xorriso made without a boot image, as its log has it.
    const DATA_CD_EMPTY_DISK: &str = "\
Searching bootorder for: HALT\n\
drive 0x000e89b0: PCHS=16/16/63 translation=none LCHS=16/16/63 s=16384\n\
Space available for UMB: ca000-e8000, f5500-f5980\n\
enter handle_19:\n  NULL\n\
Booting from Hard Disk...\n\
Boot failed: not a bootable disk\n\n\
enter handle_18:\n  NULL\n\
Booting from DVD/CD...\n\
Boot failed: Could not read from CDROM (code 0004)\n\
enter handle_18:\n  NULL\n\
Booting from Floppy...\n\
Boot failed: could not read the boot disk\n\n\
enter handle_18:\n  NULL\n\
No bootable device.\n";

    fn media<'a>(cd: Option<&'a Path>, disk: Option<&'a Path>) -> BootMedia<'a> {
        BootMedia {
            cdrom_drive: true,
            cdrom: cd,
            disk,
        }
    }

    #[test]
    fn a_data_cd_and_an_empty_disk_fail_with_both_reasons() {
        let (events, status) = run(DATA_CD_EMPTY_DISK);
        assert_eq!(
            events,
            [
                BootEvent::Trying(BootTarget::HardDisk),
                BootEvent::Failed(BootTarget::HardDisk, BootError::NoBootSignature),
                BootEvent::Trying(BootTarget::Cdrom),
                BootEvent::Failed(BootTarget::Cdrom, BootError::Cdrom(4)),
                BootEvent::Trying(BootTarget::Floppy),
                BootEvent::Failed(BootTarget::Floppy, BootError::DiskUnreadable),
                BootEvent::NoBootableDevice { retry_secs: None },
            ]
        );
        assert_eq!(status.state, BootState::Failed);
        let (iso, disk) = (PathBuf::from("/isos/data.iso"), PathBuf::from("/vm/d.raw"));
        let m = media(Some(&iso), Some(&disk));
        assert_eq!(
            status.message(&m).unwrap(),
            "No bootable device: the disk /vm/d.raw is empty (no boot signature: nothing is \
             installed on it); the CD /isos/data.iso is not bootable (no El Torito boot \
             record: a data disc, or an ISO made without a boot image)"
        );
        let j = status.to_json(&m);
        assert_eq!(j["state"], "failed");
        // The floppy SeaBIOS tries is not this machine's: not listed.
        assert_eq!(
            j["tried"],
            json!([
                {"device": "disk", "path": "/vm/d.raw", "error": "no boot signature (the disk is empty)"},
                {"device": "cdrom", "path": "/isos/data.iso", "error": "no El Torito boot record (not a bootable CD)"},
            ])
        );
        assert!(
            j["message"]
                .as_str()
                .unwrap()
                .starts_with("No bootable device: ")
        );
    }

    #[test]
    fn a_cd_that_boots_is_booted_and_has_no_message() {
        let (events, status) = run(
            "Booting from Hard Disk...\nBoot failed: not a bootable disk\n\n\
             Booting from DVD/CD...\nBooting from 0000:7c00\n",
        );
        assert_eq!(
            events.last(),
            Some(&BootEvent::Jumped {
                segment: 0,
                offset: 0x7c00
            })
        );
        assert_eq!(status.state, BootState::Booted);
        assert_eq!(status.message(&media(None, None)), None);
        assert!(status.to_json(&media(None, None)).get("message").is_none());
    }

    #[test]
    fn uefi_only_and_empty_drive_and_no_disk() {
        // An ISO with only an EFI El Torito entry (xorriso -e), and no disk: SeaBIOS still
        // tries a hard disk, which the message leaves out.
        let (_, status) = run("Booting from DVD/CD...\n\
             Boot failed: Could not read from CDROM (code 0009)\n\
             Booting from Floppy...\nBoot failed: could not read the boot disk\n\n\
             Booting from Hard Disk...\nBoot failed: could not read the boot disk\n\n\
             No bootable device.\n");
        let iso = PathBuf::from("efi.iso");
        let msg = status.message(&media(Some(&iso), None)).unwrap();
        assert_eq!(
            msg,
            "No bootable device: the CD efi.iso boots only with UEFI (its boot catalog is \
             for another platform; this VM's firmware is a BIOS)"
        );
        let (_, status) = run(
            "Booting from DVD/CD...\nBoot failed: Could not read from CDROM (code 0003)\n\
                 No bootable device.\n",
        );
        assert_eq!(
            status.message(&media(None, None)).unwrap(),
            "No bootable device: the CD drive is empty"
        );
        let none = BootMedia::default();
        assert_eq!(
            status.message(&none).unwrap(),
            "No bootable device: this VM has no disk and no CD"
        );
    }

    #[test]
    fn a_retry_starts_over_and_a_later_success_clears_the_failure() {
        let mut watch = BootWatch::new();
        let mut status = BootStatus::default();
        let fail = "Booting from Hard Disk...\nBoot failed: not a bootable disk\n\n\
                    No bootable device.  Retrying in 5 seconds.\n";
        feed(&mut watch, &mut status, fail);
        assert_eq!(status.state, BootState::Failed);
        assert_eq!(status.retry_secs, Some(5));
        let disk = PathBuf::from("d");
        assert!(
            status
                .message(&media(None, Some(&disk)))
                .unwrap()
                .ends_with("(the firmware tries again in 5 s)")
        );
        // Failing again is not a new failure.
        assert!(!status.apply(BootEvent::NoBootableDevice {
            retry_secs: Some(5)
        }));
        feed(&mut watch, &mut status, "Booting from Hard Disk...\n");
        assert_eq!(status.state, BootState::Trying);
        assert_eq!(status.tried.len(), 1, "the old round is gone");
        feed(&mut watch, &mut status, "Booting from 0000:7c00\n");
        assert_eq!(status.state, BootState::Booted);
        assert_eq!(status.message(&media(None, Some(&disk))), None);
    }

    #[test]
    fn boot_code_that_gives_up_is_named() {
        // An MBR with no active partition returns to the firmware with INT 18h.
        let (_, status) = run("Booting from Hard Disk...\nBooting from 0000:7c00\n\
             enter handle_18:\n  NULL\n\
             Booting from DVD/CD...\nBoot failed: Could not read from CDROM (code 0003)\n\
             No bootable device.\n");
        let disk = PathBuf::from("d.qcow2");
        let msg = status.message(&media(None, Some(&disk))).unwrap();
        assert_eq!(
            msg,
            "No bootable device: the disk d.qcow2's boot code found nothing to start (no \
             active partition or boot loader); the CD drive is empty"
        );
    }

    #[test]
    fn other_lines_and_garbage_make_no_events() {
        let (events, status) = run("SeaBIOS (version 1.16.2-debian-1.16.2-1)\n\
             Booting from Nowhere...\nBooting from 12:34\nBooting from zzzz:0000\n\
             Boot failed: Could not read from CDROM (code xyz)\nBoot failed: eh\n\
             No bootable devices here\r\n");
        assert_eq!(events, [], "only SeaBIOS's exact lines count");
        assert_eq!(status.state, BootState::Firmware);
        // An endless line neither grows without bound nor hides the next one.
        let mut w = BootWatch::new();
        for _ in 0..100_000 {
            assert_eq!(w.push(b'x'), None);
        }
        assert!(w.line.len() <= MAX_LINE);
        assert_eq!(w.push(b'\n'), None);
        let mut s = BootStatus::default();
        assert_eq!(
            feed(&mut w, &mut s, "Booting from DVD/CD...\r\n"),
            [BootEvent::Trying(BootTarget::Cdrom)]
        );
    }
}
