//! Network options that cannot work get one line on stderr naming the problem and how to
//! fix it, and exit code 2, before any guest runs: a mode or MAC that does not parse,
//! forwards without user-mode networking, a TAP device that does not exist or is held by
//! another process, passt not installed, a forward whose host port is taken. No guest
//! kernel is needed: the firmware alone would run if the VMM went on, so every one runs on
//! this host's KVM (kvm_pvm too), each bounded in time (a VMM that does not stop is a
//! failure, not a hang). The guest-side network tests are vmm/tests/net_linux.rs.

mod common;

use std::net::TcpListener;

/// `args` after options that keep a VMM that went on small and headless.
fn assert_refused(args: &[&str], env: &[(&str, &str)], words: &[&str]) {
    let args: Vec<&str> = ["--vnc", "none", "--memory", "64M"]
        .iter()
        .chain(args)
        .copied()
        .collect();
    common::assert_usage_error(&args, env, words);
}

#[test]
fn network_options_that_do_not_parse() {
    assert_refused(
        &["--net", "bogus"],
        &[],
        &["'bogus'", "user", "tap:NAME", "none"],
    );
    assert_refused(&["--net", "tap:"], &[], &["interface name"]);
    assert_refused(
        &["--net", "user", "--mac", "52:54:00:12:34"],
        &[],
        &["52:54:00:12:34", "MAC"],
    );
    assert_refused(
        &["--net", "user", "--mac", "01:00:5e:00:00:01"],
        &[],
        &["01:00:5e:00:00:01", "multicast"],
    );
    assert_refused(
        &["--net", "user", "--forward", "tcp:127.0.0.1:2222"],
        &[],
        &["tcp:127.0.0.1:2222", "tcp:127.0.0.1:2222-:22"],
    );
}

#[test]
fn forwards_need_user_mode_networking() {
    // vmdesk-vmm's default is no network card at all.
    assert_refused(
        &["--forward", "tcp:127.0.0.1:2222-:22"],
        &[],
        &["--forward", "--net user"],
    );
    assert_refused(
        &[
            "--net",
            "tap:vmdesk-none0",
            "--forward",
            "tcp:127.0.0.1:2222-:22",
        ],
        &[],
        &["--forward", "--net user"],
    );
}

#[test]
fn a_tap_device_that_does_not_exist_says_how_to_make_one() {
    let test = "a_tap_device_that_does_not_exist_says_how_to_make_one";
    if !common::kvm_or_skip(test) {
        return;
    }
    assert_refused(
        &["--net", "tap:nonexistent0"],
        &[],
        &["nonexistent0", "ip tuntap add"],
    );
}

/// Holds a TAP device open (TUNSETIFF on /dev/net/tun), as a running VM would.
struct HeldTap {
    _fd: std::fs::File,
}

fn hold_tap(name: &str) -> std::io::Result<HeldTap> {
    use std::os::fd::AsRawFd;
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const IFF_TAP: libc::c_short = 0x0002;
    const IFF_NO_PI: libc::c_short = 0x1000;
    let fd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // struct ifreq: the name (IFNAMSIZ = 16 bytes) then the flags, padded to 40 bytes.
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    ifr[16..18].copy_from_slice(&(IFF_TAP | IFF_NO_PI).to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `ifr` is large enough for;
    // the fd is ours and open.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, ifr.as_mut_ptr()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(HeldTap { _fd: fd })
}

#[test]
fn a_tap_device_held_by_another_process_names_it() {
    let test = "a_tap_device_held_by_another_process_names_it";
    if !common::kvm_or_skip(test) || common::tool_or_skip(test, "ip").is_none() {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let why = "making a TAP device needs root (CAP_NET_ADMIN)";
        eprintln!("SKIP {test}: {why}");
        common::tally(&format!("skipped {test}: {why}"));
        return;
    }
    let name = format!("vmbusy{}", std::process::id() % 100_000);
    let _tap = common::net::TapDevice::make(&name, None);
    let _held = hold_tap(&name).expect("hold the TAP device");
    assert_refused(&["--net", &format!("tap:{name}")], &[], &[&name]);
}

#[test]
fn passt_not_installed_names_the_package() {
    let test = "passt_not_installed_names_the_package";
    if !common::kvm_or_skip(test) {
        return;
    }
    // A PATH with nothing on it.
    let empty = common::temp_dir("net-errors-empty-path");
    assert_refused(
        &["--net", "user"],
        &[("PATH", empty.to_str().unwrap())],
        &["passt", "install"],
    );
    let _ = std::fs::remove_dir_all(empty);
}

#[test]
fn a_forward_whose_host_port_is_taken_names_the_port() {
    let test = "a_forward_whose_host_port_is_taken_names_the_port";
    if !common::kvm_or_skip(test) || common::tool_or_skip(test, "passt").is_none() {
        return;
    }
    if common::net::host_network_or_skip(test).is_none() {
        return;
    }
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    assert_refused(
        &[
            "--net",
            "user",
            "--forward",
            &format!("tcp:127.0.0.1:{port}-:22"),
        ],
        &[],
        &[&port],
    );
}
