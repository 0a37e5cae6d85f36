//! OS detection from an installer ISO (issue 18, item 1), as a person meets it in
//! `vmdesk create --cdrom`: ISOs made here with xorriso carry the identifiers of real
//! releases' media (their volume ID, and Windows' publisher), matched against Debian's own
//! osinfo-db package data. Also the installer CD test-assets.sh makes from Debian 12's
//! installer (which that osinfo-db, 2022-11-30, predates: unknown, said so).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Env, text};

/// An ISO with these identifiers (`-V` volume, `-publisher`) and one small file.
fn iso(dir: &Path, file: &str, volume: &str, publisher: &str) -> PathBuf {
    let content = dir.join(format!("{file}.d"));
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("README.TXT"), "vmdesk test medium\n").unwrap();
    let out = dir.join(file);
    common::run(
        Command::new("xorriso")
            .args([
                "-as",
                "mkisofs",
                "-quiet",
                "-V",
                volume,
                "-publisher",
                publisher,
            ])
            .arg("-o")
            .arg(&out)
            .arg(&content),
    );
    out
}

/// The VM's definition file, as text.
fn definition(env: &Env, name: &str) -> String {
    std::fs::read_to_string(env.vms_dir().join(format!("{name}.toml")))
        .unwrap_or_else(|e| panic!("{name}'s definition: {e}"))
}

#[test]
fn create_from_an_iso_takes_the_name_and_figures_of_its_os() {
    let test = "create_from_an_iso_takes_the_name_and_figures_of_its_os";
    if common::tool_or_skip(test, "xorriso").is_none() {
        return;
    }
    if !Path::new("/usr/share/osinfo/os").is_dir() {
        assert_ne!(
            std::env::var("VMDESK_REQUIRE_TOOLS").as_deref(),
            Ok("1"),
            "osinfo-db is not installed (resources/scripts/install-deps.sh run installs it)"
        );
        eprintln!("SKIP {test}: osinfo-db is not installed");
        return;
    }
    let env = Env::new("osd");
    let ovmf = vmm::firmware::uefi::available();
    let dir = env.root.join("isos");
    // (ISO identifiers) -> (what is said, the VM's name, memory MiB, vCPUs, disk bytes),
    // the figures osinfo-db 2022-11-30 recommends for each OS (or its minimum where it
    // recommends nothing).
    let cases = [
        (
            "debian-11.5.0-amd64-netinst.iso",
            "Debian 11.5.0 amd64 n",
            "",
            "Debian 11",
            "debian11",
            1024,
            1,
            20u64 << 30,
        ),
        (
            "ubuntu-22.04.1-desktop-amd64.iso",
            "Ubuntu 22.04.1 LTS amd64",
            "",
            "Ubuntu 22.04 LTS",
            "ubuntu22.04",
            4096,
            1,
            25 << 30,
        ),
        (
            "Fedora-Workstation-Live-x86_64-37-1.7.iso",
            "Fedora-WS-Live-37-1-7",
            "",
            "Fedora Linux 37",
            "fedora37",
            2048,
            1,
            20 << 30,
        ),
        (
            "Win11_22H2_English_x64.iso",
            "CCCOMA_X64FRE_EN-US_DV9",
            "MICROSOFT CORPORATION",
            "Microsoft Windows 11",
            "win11",
            4096,
            2,
            64 << 30,
        ),
    ];
    for (file, volume, publisher, os, name, memory, cpus, disk) in cases {
        let path = iso(&dir, file, volume, publisher);
        let said = env.ok(&["create", "--cdrom", path.to_str().unwrap()]);
        assert!(said.contains(&format!("{os}: ")), "{file}: {said}");
        assert!(
            said.contains(&format!("created '{name}'")),
            "{file}: {said}"
        );
        let def = definition(&env, name);
        assert!(
            def.contains(&format!("memory_mib = {memory}\n")),
            "{file}: {def}"
        );
        assert!(def.contains(&format!("cpus = {cpus}\n")), "{file}: {def}");
        assert!(def.contains(&format!("size = {disk}\n")), "{file}: {def}");
        if name == "win11" {
            assert!(said.contains("needs UEFI"), "{said}");
        }
        // The firmware: UEFI where osinfo-db says the OS supports it (said once for Debian
        // 7, Ubuntu 11.10 and Fedora 19, and so for every release after them; Windows 11
        // needs it) and the ovmf package is there, else BIOS; said on the detection line,
        // and the store made.
        let uefi = ovmf;
        let want = if uefi { "uefi" } else { "bios" };
        assert!(
            def.contains(&format!("firmware = \"{want}\"\n")),
            "{file}: {def}"
        );
        let store = env.root.join(format!("data/vmdesk/nvram/{name}_VARS.fd"));
        assert_eq!(store.is_file(), uefi, "{file}: {}", store.display());
        let said_firmware = match (uefi, name) {
            (true, _) => "; UEFI firmware",
            (false, "win11") => "; it needs UEFI firmware, but the VM gets BIOS",
            (false, _) => "; BIOS firmware (it supports UEFI too)",
        };
        assert!(said.contains(said_firmware), "{file}: {said}");
    }
    // Asked for BIOS, an OS that needs UEFI gets it, with a warning.
    let win = dir.join("Win11_22H2_English_x64.iso");
    let o = env.vmdesk(&[
        "create",
        "--cdrom",
        win.to_str().unwrap(),
        "--firmware",
        "bios",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("it needs UEFI firmware, but the VM gets BIOS"),
        "{out}"
    );
    assert!(out.contains("created 'win11-2'"), "{out}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("warning: 'win11-2': Microsoft Windows 11 needs UEFI firmware"),
        "{err}"
    );
    assert!(definition(&env, "win11-2").contains("firmware = \"bios\"\n"));
    // The name is taken now: the next VM from the same ISO gets another.
    let deb = dir.join("debian-11.5.0-amd64-netinst.iso");
    let said = env.ok(&["create", "--cdrom", deb.to_str().unwrap()]);
    assert!(said.contains("created 'debian11-2'"), "{said}");
    // Figures given: they are what counts, and nothing is added to them.
    env.ok(&[
        "create",
        "--cdrom",
        deb.to_str().unwrap(),
        "--name",
        "mine",
        "--memory",
        "768M",
    ]);
    let def = definition(&env, "mine");
    assert!(
        def.contains("memory_mib = 768\n") && !def.contains("size ="),
        "{def}"
    );

    // An ISO no entry knows: the defaults, said so; without --name, one line, exit 2.
    let odd = iso(&dir, "odd.iso", "MY_OWN_DISC", "");
    let said = env.ok(&["create", "--cdrom", odd.to_str().unwrap(), "--name", "odd"]);
    assert!(said.contains("osinfo-db does not know this ISO"), "{said}");
    assert!(definition(&env, "odd").contains("memory_mib = 512\n"));
    assert!(definition(&env, "odd").contains("firmware = \"bios\"\n"));
    let o = env.vmdesk(&["create", "--cdrom", odd.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--name") && err.contains("MY_OWN_DISC"),
        "{err}"
    );
    // A file that is no ISO: said in one line, the VM made with the defaults.
    let junk = dir.join("junk.iso");
    std::fs::write(&junk, b"not an ISO").unwrap();
    let said = env.ok(&[
        "create",
        "--cdrom",
        junk.to_str().unwrap(),
        "--name",
        "junk",
    ]);
    assert!(said.contains("not an ISO 9660 image"), "{said}");

    // The installer CD of the graphical install tests (Debian 12's installer): this
    // osinfo-db does not know Debian 12 yet.
    if let Some(di) = common::asset_or_skip(test, common::installer::ISO) {
        let said = env.ok(&["create", "--cdrom", di.to_str().unwrap(), "--name", "di"]);
        assert!(said.contains("osinfo-db does not know"), "{said}");
    }
}
