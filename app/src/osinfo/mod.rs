//! Which operating system an installer ISO holds, and what to give its VM: the ISO's own
//! identifiers (its Primary Volume Descriptor) matched against osinfo-db's install media,
//! as libosinfo does for virt-manager and GNOME Boxes, and the OS's recommended memory,
//! disk and vCPUs from the same data.

pub mod db;
pub mod iso;

use std::path::Path;

use crate::library::Firmware;
pub use db::{FirmwareNeed, OsDb, Resources};
pub use iso::{IsoIds, read_ids};

impl Proposal {
    /// The VM name to use: the OS's short id, or with `-2`, `-3`, … after it when `taken`.
    pub fn free_name(&self, taken: &dyn Fn(&str) -> bool) -> String {
        (1..)
            .map(|i| match i {
                1 => self.vm_name.clone(),
                i => format!("{}-{i}", self.vm_name),
            })
            .find(|n| !taken(n))
            .expect("a free name among unbounded candidates")
    }
}

/// What vmdesk proposes for a new VM from an ISO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// osinfo's name, e.g. "Debian 11".
    pub os_name: String,
    /// A VM name: osinfo's short id, e.g. "debian11".
    pub vm_name: String,
    pub memory_mib: u64,
    pub disk_bytes: u64,
    pub cpus: u32,
    pub firmware: FirmwareNeed,
}

/// What a proposal takes where the OS's entry says nothing (the create dialog's defaults).
pub const DEFAULT_MEMORY_MIB: u64 = 1024;
pub const DEFAULT_DISK_BYTES: u64 = 10 << 30;
pub const DEFAULT_CPUS: u32 = 1;

/// The OS whose install media match `ids`, or `None`. When several match (Windows 10 and
/// 11 share their volume IDs), the most specific medium wins: the one that names the most
/// identifiers beside the volume ID, then the longest volume-ID pattern; then the newest
/// release, then the first by id.
pub fn identify<'a>(db: &'a OsDb, ids: &IsoIds) -> Option<&'a db::Os> {
    // A match that fails at run time (backtracking past its limit) is no match.
    let matches = |re: &Option<fancy_regex::Regex>, s: &str| {
        re.as_ref().is_none_or(|r| r.is_match(s).unwrap_or(false))
    };
    db.oses
        .iter()
        .filter_map(|os| {
            let best = os
                .media
                .iter()
                .filter(|m| {
                    matches(&m.volume_id, &ids.volume_id)
                        && matches(&m.system_id, &ids.system_id)
                        && matches(&m.publisher_id, &ids.publisher_id)
                        && matches(&m.application_id, &ids.application_id)
                        && m.volume_size.is_none_or(|s| s == ids.volume_size)
                })
                .map(|m| {
                    let given = [&m.system_id, &m.publisher_id, &m.application_id]
                        .iter()
                        .filter(|r| r.is_some())
                        .count()
                        + usize::from(m.volume_size.is_some());
                    (given, m.volume_id.as_ref().map_or(0, |r| r.as_str().len()))
                })
                .max()?;
            Some((best, os))
        })
        .max_by(|(a, x), (b, y)| {
            a.cmp(b)
                .then(x.release_date.cmp(&y.release_date))
                .then(y.id.cmp(&x.id))
        })
        .map(|(_, os)| os)
}

/// The proposal for `os`: its recommended figures (its minimum where it recommends none),
/// vmdesk's defaults where it says nothing.
pub fn propose(db: &OsDb, os: &db::Os) -> Proposal {
    let r = db.resources(os);
    Proposal {
        os_name: os.name.clone(),
        vm_name: os.short_id.clone(),
        memory_mib: r.ram.map_or(DEFAULT_MEMORY_MIB, |b| (b >> 20).max(1)),
        disk_bytes: r.storage.map_or(DEFAULT_DISK_BYTES, |b| b.max(1 << 20)),
        cpus: r.cpus.map_or(DEFAULT_CPUS, |c| c.clamp(1, 64)),
        firmware: db.firmware(os),
    }
}

/// What detection found for one ISO, in a form the CLI prints and the dialog shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detection {
    Found(Proposal),
    /// The ISO read, but no OS in the database has its identifiers.
    Unknown {
        volume_id: String,
    },
    /// No database, or an unreadable ISO: the reason, in one line.
    Failed(String),
}

impl Detection {
    /// One line for a person: what was found and what it means for the new VM, which gets
    /// `firmware`.
    pub fn summary(&self, firmware: Firmware) -> String {
        match self {
            Detection::Found(p) => {
                let mut s = format!(
                    "{}: {} MiB memory, {} vCPU(s), a {} GiB disk recommended",
                    p.os_name,
                    p.memory_mib,
                    p.cpus,
                    p.disk_bytes >> 30
                );
                s += match (p.firmware, firmware) {
                    (FirmwareNeed::UefiRequired, Firmware::Uefi) => {
                        "; UEFI firmware (it needs UEFI)"
                    }
                    (FirmwareNeed::UefiRequired, Firmware::Bios) => {
                        "; it needs UEFI firmware, but the VM gets BIOS"
                    }
                    (FirmwareNeed::UefiSupported, Firmware::Uefi) => "; UEFI firmware",
                    (FirmwareNeed::UefiSupported, Firmware::Bios) => {
                        "; BIOS firmware (it supports UEFI too)"
                    }
                    (FirmwareNeed::Any, f) => match f {
                        Firmware::Bios => "; BIOS firmware",
                        Firmware::Uefi => "; UEFI firmware",
                    },
                };
                s
            }
            Detection::Unknown { .. } | Detection::Failed(_) => {
                format!(
                    "{}: the usual defaults apply",
                    self.why_none().unwrap_or_default()
                )
            }
        }
    }

    /// Why nothing was detected (`None` when something was).
    pub fn why_none(&self) -> Option<String> {
        match self {
            Detection::Found(_) => None,
            Detection::Unknown { volume_id } => Some(format!(
                "no OS detected: osinfo-db does not know this ISO (volume ID {volume_id:?})"
            )),
            Detection::Failed(why) => Some(format!("no OS detection: {why}")),
        }
    }

    pub fn proposal(&self) -> Option<&Proposal> {
        match self {
            Detection::Found(p) => Some(p),
            _ => None,
        }
    }
}

/// Detects the OS on the ISO at `iso` with the database at `db_dir`.
pub fn detect_with(db_dir: &Path, iso: &Path) -> Detection {
    detect_in(OsDb::load(db_dir).as_ref().map_err(|e| e.to_string()), iso)
}

fn detect_in(db: Result<&OsDb, String>, iso: &Path) -> Detection {
    let ids = match read_ids(iso) {
        Ok(ids) => ids,
        Err(e) => return Detection::Failed(e.to_string()),
    };
    let db = match db {
        Ok(db) => db,
        Err(e) => return Detection::Failed(e),
    };
    match identify(db, &ids) {
        Some(os) => Detection::Found(propose(db, os)),
        None => Detection::Unknown {
            volume_id: ids.volume_id,
        },
    }
}

/// [`detect_with`] the system's database, read once per process (`VMDESK_OSINFO_DIR`
/// overrides where it is: for tests, and for a newer osinfo-db unpacked elsewhere).
pub fn detect(iso: &Path) -> Detection {
    static DB: std::sync::OnceLock<Result<OsDb, String>> = std::sync::OnceLock::new();
    let db = DB.get_or_init(|| {
        let dir = std::env::var_os("VMDESK_OSINFO_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| db::SYSTEM_DIR.into());
        OsDb::load(&dir).map_err(|e| e.to_string())
    });
    detect_in(db.as_ref().map_err(Clone::clone), iso)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of three entries in osinfo-db's layout, in a temporary folder.
    fn fixture(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vmdesk-osinfo-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("os/example.org")).unwrap();
        let os = |file: &str, body: &str| {
            std::fs::write(
                dir.join("os/example.org").join(file),
                format!("<?xml version=\"1.0\"?>\n<libosinfo version=\"0.0.1\">{body}</libosinfo>"),
            )
            .unwrap()
        };
        os(
            "base-1.xml",
            r#"<os id="http://example.org/base/1"><short-id>base1</short-id>
              <name>Base 1</name><name xml:lang="fr">Base un</name>
              <release-date>2020-01-01</release-date>
              <firmware arch="x86_64" type="efi"/>
              <resources arch="all"><minimum><n-cpus>2</n-cpus><ram>536870912</ram></minimum>
              <recommended><ram>2147483648</ram><storage>21474836480</storage></recommended>
              </resources>
              <media arch="x86_64"><iso><volume-id>Base 1\.\d+ amd64</volume-id></iso></media>
              <media arch="aarch64"><iso><volume-id>Base 1\.\d+ arm64</volume-id></iso></media>
            </os>"#,
        );
        os(
            "base-1.1.xml",
            r#"<os id="http://example.org/base/1.1"><short-id>base1.1</short-id>
              <name>Base 1.1</name><release-date>2021-01-01</release-date>
              <derives-from id="http://example.org/base/1"/>
              <resources arch="x86_64"><recommended><ram>4294967296</ram></recommended></resources>
              <media arch="x86_64"><iso><volume-id>Base 1\.1 amd64</volume-id>
              <publisher-id>BASE PROJECT</publisher-id></iso></media>
            </os>"#,
        );
        os(
            "win.xml",
            r#"<os id="http://example.org/win/11"><short-id>win11</short-id>
              <name>Win 11</name><release-date>2021-10-05</release-date>
              <firmware arch="x86_64" type="efi"/>
              <firmware arch="x86_64" type="bios" supported="false"/>
              <media arch="x86_64"><iso><volume-id>^CCCOMA_X64FRE_</volume-id></iso></media>
            </os>"#,
        );
        dir
    }

    fn ids(volume: &str, publisher: &str) -> IsoIds {
        IsoIds {
            volume_id: volume.into(),
            publisher_id: publisher.into(),
            ..IsoIds::default()
        }
    }

    #[test]
    fn identifies_by_the_iso_identifiers_and_proposes_the_recommended_figures() {
        let dir = fixture("identify");
        let db = OsDb::load(&dir).unwrap();
        assert_eq!(db.oses.len(), 3);
        let name = |v, p| identify(&db, &ids(v, p)).map(|os| os.name.as_str());
        assert_eq!(name("Base 1.4 amd64", ""), Some("Base 1"));
        // Another architecture's medium is not ours.
        assert_eq!(name("Base 1.4 arm64", ""), None);
        // Two match; the more specific pattern wins. Without the publisher only one does.
        assert_eq!(name("Base 1.1 amd64", "BASE PROJECT"), Some("Base 1.1"));
        assert_eq!(name("Base 1.1 amd64", "SOMEONE"), Some("Base 1"));
        assert_eq!(name("Other 3", ""), None);

        let base = propose(&db, db.get("http://example.org/base/1").unwrap());
        assert_eq!(
            (
                base.vm_name.as_str(),
                base.memory_mib,
                base.disk_bytes,
                base.cpus
            ),
            ("base1", 2048, 20 << 30, 2)
        );
        // A derived release: its own memory, the rest from what it derives from.
        let point = propose(&db, db.get("http://example.org/base/1.1").unwrap());
        assert_eq!(
            (point.memory_mib, point.disk_bytes, point.cpus),
            (4096, 20 << 30, 2)
        );
        // UEFI support said once, for the first release that had it, holds for the later.
        assert_eq!(base.firmware, FirmwareNeed::UefiSupported);
        assert_eq!(point.firmware, FirmwareNeed::UefiSupported);
        // Nothing said: the defaults; UEFI only is said.
        let win = identify(&db, &ids("CCCOMA_X64FRE_EN-US_DV9", "")).unwrap();
        let p = propose(&db, win);
        assert_eq!(
            (p.memory_mib, p.disk_bytes, p.cpus, p.firmware),
            (1024, 10 << 30, 1, FirmwareNeed::UefiRequired)
        );
        let found = Detection::Found(p);
        assert!(
            found
                .summary(Firmware::Uefi)
                .ends_with("; UEFI firmware (it needs UEFI)"),
            "{}",
            found.summary(Firmware::Uefi)
        );
        assert!(
            found
                .summary(Firmware::Bios)
                .ends_with("; it needs UEFI firmware, but the VM gets BIOS"),
            "{}",
            found.summary(Firmware::Bios)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_database_a_bad_pattern_and_bad_xml() {
        let e = OsDb::load(Path::new("/nonexistent/osinfo")).unwrap_err();
        assert!(e.to_string().contains("apt install osinfo-db"), "{e}");
        let dir = fixture("bad");
        // A pattern that does not compile: that medium is left out, the rest is there.
        // Look-ahead, as osinfo-db's Asianux entry has, does compile.
        std::fs::write(
            dir.join("os/example.org/odd.xml"),
            r#"<libosinfo><os id="x"><media><iso><volume-id>(</volume-id></iso></media>
               <media><iso><volume-id>Odd (7 (?!SP[12]))</volume-id></iso></media></os></libosinfo>"#,
        )
        .unwrap();
        let db = OsDb::load(&dir).unwrap();
        assert_eq!(db.oses.len(), 4);
        assert_eq!(db.skipped.len(), 1, "{:?}", db.skipped);
        assert!(identify(&db, &ids("Odd 7 SP3", "")).is_some());
        assert!(identify(&db, &ids("Odd 7 SP1", "")).is_none());
        // A file that is not XML names itself.
        std::fs::write(dir.join("os/example.org/bad.xml"), "<libosinfo><os").unwrap();
        let e = OsDb::load(&dir).unwrap_err().to_string();
        assert!(e.contains("bad.xml"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
