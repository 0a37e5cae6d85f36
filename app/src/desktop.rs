//! `vmdesk install-desktop`: the launcher entry and icon, installed for the user as the
//! freedesktop specifications place them (`$XDG_DATA_HOME/applications/vmdesk.desktop`,
//! `$XDG_DATA_HOME/icons/hicolor/scalable/apps/vmdesk.svg`), so vmdesk shows in the desktop's
//! application menu. The files are resources/desktop's, with `Exec` and `TryExec` pointing
//! at this very binary (a build tree's vmdesk is not on PATH).

use std::path::{Path, PathBuf};

/// The entry as it is in the source tree (`Exec=vmdesk`; desktop-file-validate checks it).
pub const ENTRY: &str = include_str!("../../resources/desktop/vmdesk.desktop");
/// The icon: scalable, so one file serves every size.
pub const ICON: &str = include_str!("../../resources/desktop/vmdesk.svg");

/// Where the two files went.
#[derive(Debug)]
pub struct Installed {
    pub entry: PathBuf,
    pub icon: PathBuf,
}

/// The user's data folder: `$XDG_DATA_HOME`, else `~/.local/share`.
pub fn data_home() -> Option<PathBuf> {
    std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
}

/// Writes the entry (running `exe`) and the icon under `data_home`, replacing earlier ones.
pub fn install(data_home: &Path, exe: &Path) -> std::io::Result<Installed> {
    let apps = data_home.join("applications");
    let icons = data_home.join("icons/hicolor/scalable/apps");
    std::fs::create_dir_all(&apps)?;
    std::fs::create_dir_all(&icons)?;
    let entry = apps.join("vmdesk.desktop");
    let icon = icons.join("vmdesk.svg");
    write_atomically(&entry, &entry_for(exe))?;
    write_atomically(&icon, ICON)?;
    Ok(Installed { entry, icon })
}

/// [`ENTRY`] with `Exec` and `TryExec` naming `exe`.
pub fn entry_for(exe: &Path) -> String {
    let exe = exe.to_string_lossy();
    ENTRY
        .lines()
        .map(|line| match line.split_once('=') {
            Some(("Exec", _)) => format!("Exec={}", exec_quote(&exe)),
            // TryExec is a plain path, not a command line: no quoting, only escapes.
            Some(("TryExec", _)) => format!("TryExec={}", escape_value(&exe)),
            _ => line.to_string(),
        })
        .map(|line| line + "\n")
        .collect()
}

/// A program path as the Desktop Entry specification's Exec key takes one argument:
/// quoted when it has a reserved character, with `"`, `` ` ``, `$` and `\` escaped inside
/// the quotes, and then the value's own escaping of backslashes.
fn exec_quote(arg: &str) -> String {
    const RESERVED: &[char] = &[
        ' ', '\t', '\n', '"', '\'', '\\', '>', '<', '~', '|', '&', ';', '$', '*', '?', '#', '(',
        ')', '`',
    ];
    let arg = arg.replace('%', "%%");
    if !arg.contains(RESERVED) {
        return arg;
    }
    let mut quoted = String::from("\"");
    for c in arg.chars() {
        if matches!(c, '"' | '`' | '$' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    escape_value(&quoted)
}

/// A string value's escapes (`\\`, and the control characters a line cannot hold).
fn escape_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\t', "\\t")
        .replace('\r', "\\r")
}

/// Writes `text` to `path` through a temporary file beside it and a rename, so a launcher
/// reading the folder never sees half an entry.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_names_the_binary_quoted_as_the_spec_says() {
        let e = entry_for(Path::new("/opt/vmdesk/bin/vmdesk"));
        assert!(e.contains("\nExec=/opt/vmdesk/bin/vmdesk\n"), "{e}");
        assert!(e.contains("\nTryExec=/opt/vmdesk/bin/vmdesk\n"), "{e}");
        assert!(e.contains("\nIcon=vmdesk\n"), "{e}");
        let e = entry_for(Path::new("/home/a b/100%/vm$desk"));
        // Quoted for the space, `$` escaped inside the quotes (then the backslash doubled
        // by the string escaping), `%` doubled.
        assert!(
            e.contains("\nExec=\"/home/a b/100%%/vm\\\\$desk\"\n"),
            "{e}"
        );
    }

    #[test]
    fn install_writes_entry_and_icon_and_replaces_them() {
        let root = std::env::temp_dir().join(format!("vmdesk-desktop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let first = install(&root, Path::new("/a/vmdesk")).unwrap();
        let again = install(&root, Path::new("/b/vmdesk")).unwrap();
        assert_eq!(first.entry, root.join("applications/vmdesk.desktop"));
        assert_eq!(
            again.icon,
            root.join("icons/hicolor/scalable/apps/vmdesk.svg")
        );
        let entry = std::fs::read_to_string(&again.entry).unwrap();
        assert!(entry.contains("Exec=/b/vmdesk\n"), "{entry}");
        assert_eq!(std::fs::read_to_string(&again.icon).unwrap(), ICON);
        let names: Vec<_> = std::fs::read_dir(root.join("applications"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["vmdesk.desktop"], "no temporary file left");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
