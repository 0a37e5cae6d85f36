//! osinfo-db, read: the operating systems libosinfo knows (Debian's `osinfo-db` package,
//! `/usr/share/osinfo/os/<vendor>/<os>.xml`), with what vmdesk uses of them: the name, the
//! ISO identifiers of their x86 install media (regular expressions, as libosinfo matches
//! them: a search, not anchored), the resources they recommend, and their firmware.
//!
//! Read with roxmltree (a small, well-kept read-only XML parser; the files are a few MB in
//! all and read once per process) and matched with fancy-regex (libosinfo's GRegex is PCRE,
//! and a few patterns use look-ahead). A medium whose pattern does not compile is left out
//! (counted in [`OsDb::skipped`]), not the whole database.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fancy_regex::Regex;

/// Where Debian's osinfo-db package puts the database.
pub const SYSTEM_DIR: &str = "/usr/share/osinfo";

/// What an OS asks of a machine (each field from `recommended`, else `minimum`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub ram: Option<u64>,
    pub storage: Option<u64>,
    pub cpus: Option<u32>,
}

/// What an OS says of PC firmware on x86-64.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FirmwareNeed {
    /// Nothing said (BIOS, as every PC OS before UEFI).
    #[default]
    Any,
    /// Boots with UEFI too.
    UefiSupported,
    /// UEFI only: BIOS is marked unsupported (Windows 11).
    UefiRequired,
}

/// One install medium: the identifiers an ISO must carry (every pattern given must match).
#[derive(Debug)]
pub struct Media {
    pub volume_id: Option<Regex>,
    pub system_id: Option<Regex>,
    pub publisher_id: Option<Regex>,
    pub application_id: Option<Regex>,
    /// The exact size of the volume, when the entry gives it.
    pub volume_size: Option<u64>,
}

/// One operating system.
#[derive(Debug)]
pub struct Os {
    pub id: String,
    pub short_id: String,
    pub name: String,
    pub release_date: String,
    pub derives_from: Option<String>,
    pub resources: Resources,
    pub firmware: FirmwareNeed,
    pub media: Vec<Media>,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "{0}: no osinfo-db there (install Debian's osinfo-db package: sudo apt install osinfo-db)"
    )]
    Missing(PathBuf),
    #[error("{path}: {message}")]
    Bad { path: PathBuf, message: String },
}

/// The database: every OS, by id.
#[derive(Debug, Default)]
pub struct OsDb {
    pub oses: Vec<Os>,
    /// Media left out: their OS's id and why (a pattern this matcher cannot compile).
    pub skipped: Vec<String>,
    by_id: HashMap<String, usize>,
}

impl OsDb {
    /// Reads every `os/*/*.xml` under `dir`.
    pub fn load(dir: &Path) -> Result<OsDb, DbError> {
        let os_dir = dir.join("os");
        let vendors = std::fs::read_dir(&os_dir).map_err(|_| DbError::Missing(dir.into()))?;
        let mut files: Vec<PathBuf> = vendors
            .flatten()
            .filter_map(|v| std::fs::read_dir(v.path()).ok())
            .flat_map(|d| d.flatten().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "xml"))
            .collect();
        files.sort();
        let mut db = OsDb::default();
        for path in files {
            let bad = |message: String| DbError::Bad {
                path: path.clone(),
                message,
            };
            let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
            let doc = roxmltree::Document::parse(&text).map_err(|e| bad(e.to_string()))?;
            for node in doc
                .root_element()
                .children()
                .filter(|n| n.has_tag_name("os"))
            {
                let os = parse_os(node, &mut db.skipped).map_err(bad)?;
                db.by_id.insert(os.id.clone(), db.oses.len());
                db.oses.push(os);
            }
        }
        if db.oses.is_empty() {
            return Err(DbError::Missing(dir.into()));
        }
        Ok(db)
    }

    pub fn get(&self, id: &str) -> Option<&Os> {
        self.by_id.get(id).map(|&i| &self.oses[i])
    }

    /// The resources of `os`, each missing field taken from the OS it derives from (as a
    /// point release's entry leaves them to its major release's).
    pub fn resources(&self, os: &Os) -> Resources {
        let mut r = os.resources;
        let mut next = os.derives_from.as_deref();
        // Bounded: a loop in the data must not hang the dialog.
        for _ in 0..16 {
            let Some(parent) = next.and_then(|id| self.get(id)) else {
                break;
            };
            let p = parent.resources;
            r.ram = r.ram.or(p.ram);
            r.storage = r.storage.or(p.storage);
            r.cpus = r.cpus.or(p.cpus);
            next = parent.derives_from.as_deref();
        }
        r
    }

    /// What `os` says of firmware, or the release it derives from when it says nothing:
    /// osinfo-db states UEFI support once, where a line of releases got it (Ubuntu 11.10,
    /// Fedora 19), and libosinfo's complete firmware list carries it to every later one.
    pub fn firmware(&self, os: &Os) -> FirmwareNeed {
        let mut at = os;
        // Bounded: a loop in the data must not hang the dialog. Lines of releases are long
        // (Fedora 37 is 18 releases after Fedora 19, which says it).
        for _ in 0..128 {
            if at.firmware != FirmwareNeed::Any {
                return at.firmware;
            }
            match at.derives_from.as_deref().and_then(|id| self.get(id)) {
                Some(parent) => at = parent,
                None => break,
            }
        }
        FirmwareNeed::Any
    }
}

fn text<'a>(node: roxmltree::Node<'a, '_>, tag: &str) -> Option<&'a str> {
    node.children()
        .find(|c| {
            c.has_tag_name(tag)
                && c.attribute(("http://www.w3.org/XML/1998/namespace", "lang"))
                    .is_none()
        })
        .and_then(|c| c.text())
        .map(str::trim)
}

/// x86 machines run x86_64 and i686 media; "all" is every architecture.
fn for_x86(node: roxmltree::Node) -> bool {
    matches!(
        node.attribute("arch"),
        None | Some("all" | "x86_64" | "i686")
    )
}

fn parse_os(node: roxmltree::Node, skipped: &mut Vec<String>) -> Result<Os, String> {
    let id = node
        .attribute("id")
        .ok_or("an <os> without an id")?
        .to_string();
    let mut resources = Resources::default();
    // x86_64's entry before "all"'s: the more specific one wins.
    let mut sets: Vec<_> = node
        .children()
        .filter(|c| c.has_tag_name("resources") && for_x86(*c))
        .collect();
    sets.sort_by_key(|c| c.attribute("arch") != Some("x86_64"));
    for set in sets {
        for level in ["recommended", "minimum"] {
            let Some(l) = set.children().find(|c| c.has_tag_name(level)) else {
                continue;
            };
            let num = |tag| text(l, tag).and_then(|t| t.parse::<u64>().ok());
            resources.ram = resources.ram.or(num("ram"));
            resources.storage = resources.storage.or(num("storage"));
            resources.cpus = resources
                .cpus
                .or(num("n-cpus").and_then(|n| u32::try_from(n).ok()));
        }
    }
    let mut firmware = FirmwareNeed::Any;
    for f in node
        .children()
        .filter(|c| c.has_tag_name("firmware") && c.attribute("arch") == Some("x86_64"))
    {
        let supported = f.attribute("supported") != Some("false");
        match (f.attribute("type"), supported) {
            (Some("efi"), true) if firmware == FirmwareNeed::Any => {
                firmware = FirmwareNeed::UefiSupported
            }
            (Some("bios"), false) => firmware = FirmwareNeed::UefiRequired,
            _ => {}
        }
    }
    let mut media = Vec::new();
    for m in node
        .children()
        .filter(|c| c.has_tag_name("media") && for_x86(*c))
    {
        let Some(iso) = m.children().find(|c| c.has_tag_name("iso")) else {
            continue;
        };
        let pattern = |tag| -> Result<Option<Regex>, String> {
            text(iso, tag)
                .map(|p| Regex::new(p).map_err(|e| format!("{id}: {tag} {p:?}: {e}")))
                .transpose()
        };
        let medium = (|| {
            Ok::<_, String>(Media {
                volume_id: pattern("volume-id")?,
                system_id: pattern("system-id")?,
                publisher_id: pattern("publisher-id")?,
                application_id: pattern("application-id")?,
                volume_size: text(iso, "volume-size").and_then(|t| t.parse().ok()),
            })
        })();
        match medium {
            Ok(m) if m.volume_id.is_some() => media.push(m),
            Ok(_) => {}
            Err(why) => {
                tracing::debug!("osinfo-db: a medium left out: {why}");
                skipped.push(why);
            }
        }
    }
    Ok(Os {
        short_id: text(node, "short-id").unwrap_or(&id).to_string(),
        name: text(node, "name").unwrap_or(&id).to_string(),
        release_date: text(node, "release-date").unwrap_or("").to_string(),
        derives_from: node
            .children()
            .find(|c| c.has_tag_name("derives-from"))
            .and_then(|c| c.attribute("id"))
            .map(str::to_string),
        id,
        resources,
        firmware,
        media,
    })
}
