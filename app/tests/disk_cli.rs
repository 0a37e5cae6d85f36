//! `vmdesk disk create` as a user runs it: exit codes, one-line errors, and images that
//! qemu-img accepts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vmdesk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmdesk"))
        .args(args)
        .output()
        .unwrap()
}

fn tmpdir(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("vmdesk-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn have_qemu_img() -> bool {
    let ok = Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert_ne!(
            std::env::var("VMDESK_REQUIRE_TOOLS").as_deref(),
            Ok("1"),
            "qemu-img is required"
        );
        eprintln!("SKIP: qemu-img is not installed");
    }
    ok
}

fn qemu_img(args: &[&str], p: &Path) -> String {
    let o = Command::new("qemu-img").args(args).arg(p).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

#[test]
fn create_qcow2_and_raw() {
    let dir = tmpdir("create");
    let q = dir.join("a.qcow2");
    let qs = q.to_str().unwrap();
    let o = vmdesk(&["disk", "create", qs, "10G"]);
    assert!(o.status.success(), "{o:?}");
    let o = vmdesk(&["disk", "create", qs, "1G"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("already exists"), "{err}");
    if have_qemu_img() {
        let info = qemu_img(&["info", "--output=json"], &q);
        assert!(info.contains("\"virtual-size\": 10737418240"), "{info}");
        assert!(info.contains("\"format\": \"qcow2\""), "{info}");
        qemu_img(&["check"], &q);
    }
    let o = vmdesk(&["disk", "create", qs, "2G", "--force"]);
    assert!(o.status.success(), "{o:?}");
    if have_qemu_img() {
        let info = qemu_img(&["info", "--output=json"], &q);
        assert!(info.contains("\"virtual-size\": 2147483648"), "{info}");
    }

    // The name says the format: .raw and .img make raw images, .qcow2 qcow2, and the
    // answer says which (qemu-img agrees).
    for (file, format) in [("b.img", "raw"), ("t1.raw", "raw"), ("c.qcow2", "qcow2")] {
        let r = dir.join(file);
        let o = vmdesk(&["disk", "create", r.to_str().unwrap(), "512M"]);
        assert!(o.status.success(), "{o:?}");
        let said = String::from_utf8_lossy(&o.stdout);
        assert!(said.contains(&format!("({format}, ")), "{file}: {said}");
        if format == "raw" {
            assert_eq!(std::fs::metadata(&r).unwrap().len(), 512 << 20);
        }
        if have_qemu_img() {
            let info = qemu_img(&["info", "--output=json"], &r);
            assert!(
                info.contains(&format!("\"format\": \"{format}\"")),
                "{file}: {info}"
            );
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_usage_exits_2() {
    let dir = tmpdir("usage");
    let p = dir.join("x.qcow2");
    let ps = p.to_str().unwrap();
    for args in [
        vec!["disk", "create", ps, "10Q"],
        vec!["disk", "create", ps, "10G", "--format", "vmdk"],
        vec!["disk", "create", ps],
        vec!["disk", "frobnicate"],
    ] {
        let o = vmdesk(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
    }
    assert!(!p.exists());
    // A format the name contradicts: refused with one line, nothing made.
    let r = dir.join("t1.raw");
    let o = vmdesk(&[
        "disk",
        "create",
        r.to_str().unwrap(),
        "1G",
        "--format",
        "qcow2",
    ]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("its name says raw"), "{err}");
    assert!(!r.exists());
    // A directory that does not exist: a failure (1), one line.
    let o = vmdesk(&["disk", "create", "/nonexistent/dir/x.qcow2", "1G"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn preallocated_raw_has_every_block_and_qcow2_is_refused() {
    use std::os::unix::fs::MetadataExt;
    let dir = tmpdir("prealloc");
    let r = dir.join("full.raw");
    let rs = r.to_str().unwrap();
    let o = vmdesk(&[
        "disk",
        "create",
        rs,
        "96M",
        "--format",
        "raw",
        "--preallocation",
        "full",
    ]);
    assert!(o.status.success(), "{o:?}");
    let m = std::fs::metadata(&r).unwrap();
    assert_eq!(m.len(), 96 << 20);
    assert!(
        m.blocks() * 512 >= 96 << 20,
        "{} bytes allocated",
        m.blocks() * 512
    );
    // Not a terminal: no progress line in the output.
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The default stays sparse.
    let s = dir.join("sparse.raw");
    let o = vmdesk(&[
        "disk",
        "create",
        s.to_str().unwrap(),
        "96M",
        "--format",
        "raw",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert!(std::fs::metadata(&s).unwrap().blocks() * 512 < 1 << 20);
    // qcow2: refused with the reason, nothing left behind.
    let q = dir.join("a.qcow2");
    let o = vmdesk(&[
        "disk",
        "create",
        q.to_str().unwrap(),
        "1G",
        "--preallocation",
        "full",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("for raw images"), "{err}");
    assert!(!q.exists());
    let _ = std::fs::remove_dir_all(dir);
}
