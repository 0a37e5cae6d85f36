//! `vmdesk clone` and `vmdesk rename` as a person runs them (issue 18, item 3): the copy's
//! disks hold what the source's held and stay sparse, it gets a new MAC address, and the
//! files named after a renamed VM follow it; bad input is one line and changes nothing.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{Env, text};

/// Fails with one line on stderr saying `says`; returns nothing.
fn refused(env: &Env, args: &[&str], says: &str) {
    let o = env.vmdesk(args);
    assert_ne!(o.status.code(), Some(0), "vmdesk {args:?}: {}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(says), "vmdesk {args:?}: {err}");
}

fn mac_of(env: &Env, name: &str) -> String {
    let def = std::fs::read_to_string(env.vms_dir().join(format!("{name}.toml"))).unwrap();
    def.lines()
        .find(|l| l.starts_with("mac = "))
        .unwrap_or_else(|| panic!("{def}"))
        .to_string()
}

/// Writes `data` into the image at `offset`, as a guest's write would land in a raw image.
fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(data).unwrap();
}

#[test]
fn clone_copies_the_disks_and_rename_takes_the_files_along() {
    let env = Env::new("clone");
    let images = env.images_dir();
    env.ok(&[
        "create",
        "--name",
        "src",
        "--disk",
        "size=256M,format=raw",
        "--disk",
        "size=64M",
        "--network",
        "none",
    ]);
    let raw = images.join("src.raw");
    write_at(&raw, 1 << 20, b"the guest wrote this");
    write_at(&raw, 200 << 20, &[0x5a; 8192]);

    let said = env.ok(&["clone", "src", "copy"]);
    assert!(said.contains("cloned 'src' to 'copy'"), "{said}");
    let (copy_raw, copy_qcow) = (images.join("copy.raw"), images.join("copy-1.qcow2"));
    assert_eq!(
        std::fs::read(&raw).unwrap(),
        std::fs::read(&copy_raw).unwrap()
    );
    let used = std::fs::metadata(&copy_raw).unwrap().blocks() * 512;
    assert!(
        used < 8 << 20,
        "the copy of a sparse 256 MiB image takes {used} bytes"
    );
    assert_eq!(
        std::fs::read(images.join("src-1.qcow2")).unwrap(),
        std::fs::read(&copy_qcow).unwrap()
    );
    assert_ne!(mac_of(&env, "src"), mac_of(&env, "copy"));
    let list = env.ok(&["list"]);
    assert!(list.lines().any(|l| l.starts_with("copy ")), "{list}");
    // The copy is independent: a write to it leaves the source as it was.
    write_at(&copy_raw, 1 << 20, b"the copy's own data!");
    assert_ne!(
        std::fs::read(&raw).unwrap(),
        std::fs::read(&copy_raw).unwrap()
    );

    // Bad input: one line each, nothing made.
    refused(&env, &["clone", "src", "copy"], "already exists");
    refused(&env, &["clone", "nosuch", "other"], "nosuch");
    refused(&env, &["clone", "src", "bad/name"], "bad/name");
    assert!(!images.join("other.raw").exists());
    std::fs::write(images.join("taken.raw"), b"someone's file").unwrap();
    refused(&env, &["clone", "src", "taken"], "taken.raw already exists");
    assert_eq!(
        std::fs::read(images.join("taken.raw")).unwrap(),
        b"someone's file"
    );
    assert!(!env.vms_dir().join("taken.toml").exists());

    // Rename: the definition, the images named after it and its log move.
    let run = env.run_dir();
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("copy.log"), "its log\n").unwrap();
    let said = env.ok(&["rename", "copy", "web"]);
    assert!(said.contains("renamed 'copy' to 'web'"), "{said}");
    assert!(images.join("web.raw").is_file() && images.join("web-1.qcow2").is_file());
    assert!(!copy_raw.exists() && !copy_qcow.exists());
    assert_eq!(
        std::fs::read_to_string(run.join("web.log")).unwrap(),
        "its log\n"
    );
    let def = std::fs::read_to_string(env.vms_dir().join("web.toml")).unwrap();
    assert!(def.contains("web.raw") && !def.contains("copy"), "{def}");
    assert!(!env.vms_dir().join("copy.toml").exists());
    refused(&env, &["rename", "web", "src"], "already exists");
    refused(&env, &["rename", "nosuch", "x"], "nosuch");
    assert!(images.join("web.raw").is_file());

    // While the source runs (SeaBIOS finding nothing to boot keeps it running): no copy,
    // no new name.
    if common::kvm_or_skip("clone_copies_the_disks_and_rename_takes_the_files_along") {
        common::ensure_vmm();
        env.ok(&["start", "src"]);
        refused(&env, &["clone", "src", "live"], "is running");
        refused(&env, &["rename", "src", "live"], "is running");
        env.ok(&["destroy", "src"]);
        assert!(!images.join("live.raw").exists());
    }
}

/// `qemu-img` on an image: its stdout, and it must succeed.
fn qemu_img(args: &[&str]) -> String {
    let o = std::process::Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img (qemu-utils, install-deps.sh test)");
    assert!(o.status.success(), "qemu-img {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `vmdesk clone --linked`: the clone's disk is a qcow2 overlay that QEMU's own tool reads
/// as one (backing file and format in its header, the same contents as the base, a clean
/// check), the source's raw disk became a read-only base under an overlay of its own, the
/// clone starts, and the base goes with the last VM that needs it.
#[test]
fn a_linked_clone_is_an_overlay_that_qemu_img_reads() {
    let env = Env::new("linked");
    let images = env.images_dir();
    env.ok(&[
        "create",
        "--name",
        "src",
        "--disk",
        "size=64M,format=raw",
        "--network",
        "none",
    ]);
    write_at(&images.join("src.raw"), 1 << 20, b"the guest wrote this");

    let said = env.ok(&["clone", "src", "lc", "--linked"]);
    assert!(said.contains("cloned 'src' to 'lc'"), "{said}");
    let (base, overlay) = (images.join("src.base1.raw"), images.join("lc.qcow2"));
    assert!(
        !images.join("src.raw").exists(),
        "the source's image became the base"
    );
    for top in [&overlay, &images.join("src.qcow2")] {
        let info = qemu_img(&["info", "--output=json", top.to_str().unwrap()]);
        let info: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(info["format"], "qcow2", "{info}");
        assert_eq!(info["backing-filename"], base.to_str().unwrap(), "{info}");
        assert_eq!(info["backing-filename-format"], "raw", "{info}");
        assert_eq!(info["virtual-size"], 64 << 20, "{info}");
        qemu_img(&["check", top.to_str().unwrap()]);
        qemu_img(&["compare", top.to_str().unwrap(), base.to_str().unwrap()]);
    }
    let list = env.ok(&["list"]);
    assert!(list.contains("lc"), "{list}");

    if common::kvm_or_skip("a_linked_clone_is_an_overlay_that_qemu_img_reads") {
        // The VMM opens the overlay and its read-only base (SeaBIOS then finds nothing to
        // boot, and the VM runs on).
        common::ensure_vmm();
        env.ok(&["start", "lc"]);
        env.ok(&["destroy", "lc"]);
    }

    // The source goes with its disk; the base stays for the clone, then goes with it.
    let said = env.ok(&["delete", "src", "--delete-disks"]);
    assert!(!said.contains("src.base1.raw"), "{said}");
    assert!(base.is_file());
    let said = env.ok(&["delete", "lc", "--delete-disks"]);
    assert!(said.contains("src.base1.raw"), "{said}");
    assert!(!base.exists() && !overlay.exists());
}
