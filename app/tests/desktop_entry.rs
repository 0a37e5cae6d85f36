//! The launcher entry (issue 18, item 5): resources/desktop's entry is valid by
//! `desktop-file-validate` (desktop-file-utils), and `vmdesk install-desktop` puts a valid
//! entry that runs this vmdesk, and the icon it names, where the freedesktop specifications
//! say a launcher looks for them.

mod common;

use std::path::Path;
use std::process::Command;

/// `desktop-file-validate` on `entry`: it prints nothing and exits 0 for a valid file.
fn assert_valid(validate: &Path, entry: &Path) {
    let o = Command::new(validate).arg(entry).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success() && said.trim().is_empty(),
        "desktop-file-validate {}: {said}",
        entry.display()
    );
}

#[test]
fn the_launcher_entry_is_valid_and_installs_for_the_user() {
    let test = "the_launcher_entry_is_valid_and_installs_for_the_user";
    let Some(validate) = common::tool_or_skip(test, "desktop-file-validate") else {
        return;
    };
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/desktop");
    assert_valid(&validate, &source.join("vmdesk.desktop"));

    let home = std::env::temp_dir().join(format!("vmdesk-xdg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let o = Command::new(env!("CARGO_BIN_EXE_vmdesk"))
        .arg("install-desktop")
        .env("XDG_DATA_HOME", &home)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let entry = home.join("applications/vmdesk.desktop");
    let icon = home.join("icons/hicolor/scalable/apps/vmdesk.svg");
    let out = String::from_utf8_lossy(&o.stdout);
    for p in [&entry, &icon] {
        assert!(out.contains(&p.display().to_string()), "{out}");
    }
    assert_valid(&validate, &entry);
    let text = std::fs::read_to_string(&entry).unwrap();
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("Exec="))
        .expect("an Exec line");
    assert!(
        Path::new(exec).is_file() && exec.ends_with("/vmdesk"),
        "Exec={exec} runs no vmdesk"
    );
    // The icon the entry names: an SVG picture, square.
    assert!(text.contains("\nIcon=vmdesk\n"), "{text}");
    let svg = std::fs::read_to_string(&icon).unwrap();
    assert!(
        svg.contains("<svg") && svg.contains("viewBox=\"0 0 128 128\""),
        "{svg}"
    );

    // A home that cannot hold it: one line, exit 1.
    let o = Command::new(env!("CARGO_BIN_EXE_vmdesk"))
        .arg("install-desktop")
        .env("XDG_DATA_HOME", "/proc/vmdesk-nowhere")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot install the launcher entry"), "{err}");
    std::fs::remove_dir_all(&home).unwrap();
}
