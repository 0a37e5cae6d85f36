//! The network card with Linux guests: the Debian cloud kernel boots `net-initrd.img`
//! (resources/scripts/test-assets.sh: busybox, virtio_pci and virtio_net in load order, a
//! udhcpc script, and an /init that reports eth0 and does the test the kernel command line's
//! `vmdesk.test=` names), on vmdesk-vmm with `--net user` (user-mode NAT through a passt
//! process of the VM's own) or `--net tap:NAME`. The guest reports on COM1.
//!
//! - **DHCP**: the card is virtio_net's at 00:03.0 with the MAC given by `--mac`, offers
//!   virtio 1.0, MAC, STATUS and mergeable receive buffers and no offload (passt's stream has
//!   no vnet header to carry one), has carrier; the guest's DHCP lease is what passt hands
//!   out (the host's own address and its default gateway); the control socket's status
//!   says `net` user, that MAC, link up, no forwards, and the pid of the VMM's one passt
//!   child.
//! - **Fetch**: the guest fetches a 64 MiB file of random bytes over HTTP from a server on
//!   the host's loopback, through the router's address (passt maps it to the host's
//!   loopback); size and sha256 must match.
//! - **Upload**: the host sends 64 MiB through `--forward tcp:127.0.0.1:PORT-:5555` to a
//!   listener in the guest; size and sha256 of what the guest got must match, and the
//!   status lists the forward.
//! - **No network**: without `--net` (vmdesk-vmm's default) and with `--net none` the
//!   guest finds no card, no passt runs, and the status has no `net`.
//! - **Two VMs**: two at once, each with its own passt (two distinct passt children), both
//!   get their leases and their own MACs.
//! - **Nothing left**: after the guest powers off, and separately after SIGKILL of the VMM,
//!   its passt has ended within 5 s, and no socket file is left in /tmp.
//! - **TAP**: the test makes a TAP device with 10.9.0.1/24 on the host side; the guest,
//!   10.9.0.2/24 by hand, fetches the 64 MiB file from a server bound to 10.9.0.1.
//!
//! Guest kernels need hardware-backed KVM: on a kvm_pvm host each guest test runs in the
//! nested test host (`common::hardware_kvm_or_nested`), which has no network: the tests
//! make it a veth pair with a default route there for passt (`common::net`). The initrds'
//! contents, and the guest's own tools (busybox wget and nc) against the tests' servers,
//! are checked here on any host. Bad input that needs no guest is vmm/tests/net_errors.rs.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::net::{self, BlobServer, LOOPBACK, NET_SAY};

const INITRD: &str = "net-initrd.img";
const BENCH_INITRD: &str = "net-bench-initrd.img";
/// What the guest fetches and the host uploads.
const PAYLOAD_BYTES: usize = 64 << 20;
/// From the VMM's start to the guest's lease (about 10 s in the nested host, where TCG
/// under it sets the pace): generous, as a slow run is no failure here.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// One 64 MiB transfer. QEMU's virtio-net and the same passt moved 16 MiB in 7.7 s in the
/// nested host.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// From `poweroff -f` to the VMM's exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a passt may outlive its VMM.
const PASST_GONE: Duration = Duration::from_secs(5);
/// The port the guest listens on for the upload.
const GUEST_PORT: u16 = 5555;
/// The TAP test's addresses (test-assets.sh's /init gives the guest 10.9.0.2/24).
const TAP_HOST: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const MODULES_BEFORE: &[(&str, &str)] = &[
    ("virtio_ring", "virtio_pci"),
    ("virtio", "virtio_pci"),
    ("virtio", "virtio_net"),
    ("failover", "net_failover"),
    ("net_failover", "virtio_net"),
];
/// Virtio feature bits, as the guest's sysfs `features` string lists them (bit N is the
/// Nth character).
const F_MAC: usize = 5;
const F_MRG_RXBUF: usize = 15;
const F_STATUS: usize = 16;
const F_VERSION_1: usize = 32;
/// CSUM, GUEST_CSUM, GUEST_TSO4, GUEST_TSO6, GUEST_ECN, GUEST_UFO, HOST_TSO4, HOST_TSO6,
/// HOST_ECN, HOST_UFO: each needs a vnet header, which passt's stream does not have.
const OFFLOADS: [usize; 10] = [0, 1, 7, 8, 9, 10, 11, 12, 13, 14];

/// A vmdesk-vmm running the network guest; killed when dropped.
struct Vm {
    child: Child,
    serial: PathBuf,
    log: PathBuf,
    control: PathBuf,
}

impl Vm {
    /// Boots the cloud kernel and `initrd` with `vmdesk.test=TEST` and the network options
    /// `net`: 512 MiB (the guest keeps the 64 MiB payload in RAM), one vCPU, no VNC.
    fn start(
        dir: &Path,
        name: &str,
        (kernel, initrd): (&Path, &Path),
        test: &str,
        net: &[&str],
    ) -> Vm {
        let serial = dir.join(format!("{name}.com1"));
        let log = dir.join(format!("{name}.log"));
        let control = dir.join(format!("{name}.sock"));
        let child = Command::new(common::vmm_bin())
            .args(["--memory", "512M", "--cpus", "1", "--vnc", "none"])
            .arg("--serial")
            .arg(format!("file:{}", serial.display()))
            .arg("--control")
            .arg(&control)
            .arg("--kernel")
            .arg(kernel)
            .arg("--initrd")
            .arg(initrd)
            .args([
                "--cmdline",
                &format!("{} vmdesk.test={test}", common::LINUX_CMDLINE),
            ])
            .args(net)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start vmdesk-vmm");
        Vm {
            child,
            serial,
            log,
            control,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn said(&self) -> Vec<String> {
        common::guest_said(&self.serial, NET_SAY)
    }

    /// COM1, the VMM's own messages and its status (the card's counters among them), for
    /// a failure's report.
    fn context(&self) -> String {
        format!(
            "\n--- COM1 ---\n{}\n--- vmdesk-vmm ---\n{}\n--- status ---\n{}",
            std::fs::read_to_string(&self.serial).unwrap_or_default(),
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            status_text(&self.control)
        )
    }

    /// Waits until the guest said a line starting with `prefix` and returns it; fails the
    /// test when the guest says it failed, the VM ends first or `timeout` passes.
    fn wait_said(&mut self, prefix: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            let said = self.said();
            if let Some(l) = said.iter().find(|l| l.starts_with(prefix)) {
                return l.clone();
            }
            if let Some(l) = said.iter().find(|l| l.starts_with("failed: ")) {
                panic!("the guest {l} (waiting for {prefix:?}){}", self.context());
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the VM ended ({status}) before the guest said {prefix:?}{}",
                    self.context()
                );
            }
            assert!(
                Instant::now() < end,
                "the guest never said {prefix:?}{}",
                self.context()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the VM to end by itself (the guest powers off): its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        let status = common::wait_exit(&mut self.child, EXIT_TIMEOUT);
        assert!(status.is_some(), "the VM did not end{}", self.context());
        status.unwrap().code()
    }

    /// Stops the VMM as `vmdesk stop` does (SIGTERM): it must exit cleanly and, when it
    /// had one, its `passt` must end with it.
    fn stop(&mut self, passt: Option<net::Proc>) {
        let code = common::stop(&mut self.child).code();
        assert_eq!(code, Some(0), "{}", self.context());
        if let Some(passt) = passt {
            assert!(
                net::wait_gone(passt, PASST_GONE),
                "passt {passt:?} outlived its VMM"
            );
        }
    }

    /// The control socket's `net` object of `status`.
    fn net_status(&self) -> serde_json::Value {
        let mut c = common::ControlClient::connect(&self.control);
        let reply = c.call(r#"{"execute":"status"}"#);
        let net = reply["return"]["net"].clone();
        assert!(
            net.is_object(),
            "status has no net object: {reply}{}",
            self.context()
        );
        net
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The control socket's answer to `status`, or why there is none; never blocks for long
/// (for failure reports, when the VMM may be stuck or gone).
fn status_text(socket: &Path) -> String {
    let Ok(stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return format!("(no control socket at {})", socket.display());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = (&stream).write_all(b"{\"execute\":\"status\"}\n");
    let mut reply = String::new();
    match BufReader::new(&stream).read_line(&mut reply) {
        Ok(_) => reply,
        Err(e) => format!("(no answer: {e})"),
    }
}

/// The lease the guest said: "dhcp address A/N router R dns D... mtu M".
#[derive(Debug)]
struct Lease {
    address: String,
    router: String,
    mtu: String,
}

fn lease(line: &str) -> Lease {
    let w: Vec<&str> = line.split_whitespace().collect();
    let after = |key: &str| {
        w.iter()
            .position(|x| *x == key)
            .and_then(|i| w.get(i + 1))
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
            .to_string()
    };
    Lease {
        address: after("address"),
        router: after("router"),
        mtu: after("mtu"),
    }
}

/// "fetched N bytes in T ms sha256 HEX" or "received N bytes sha256 HEX": (N, HEX, T).
fn transfer(line: &str) -> (usize, String, Option<u64>) {
    let w: Vec<&str> = line.split_whitespace().collect();
    let bytes = w.get(1).and_then(|n| n.parse().ok());
    let sha = w
        .iter()
        .position(|x| *x == "sha256")
        .and_then(|i| w.get(i + 1));
    let ms = w
        .iter()
        .position(|x| *x == "in")
        .and_then(|i| w.get(i + 1)?.parse().ok());
    match (bytes, sha) {
        (Some(b), Some(s)) => (b, s.to_string(), ms),
        _ => panic!("not a transfer line: {line:?}"),
    }
}

/// Checks the card the guest found: virtio_net at 00:03.0 with `mac`, carrier, and the
/// features a stream backend allows (`offloads`: whether offload bits may be on).
fn check_card(vm: &mut Vm, mac: &str, offloads: bool) {
    let card = vm.wait_said("eth0 mac ", BOOT_TIMEOUT);
    assert_eq!(
        card,
        format!("eth0 mac {mac} driver virtio_net pci 0000:00:03.0"),
        "{}",
        vm.context()
    );
    let features = vm.wait_said("eth0 virtio features ", BOOT_TIMEOUT);
    let bits = features
        .trim_start_matches("eth0 virtio features ")
        .as_bytes();
    let on = |bit: usize| bits.get(bit) == Some(&b'1');
    for (bit, name) in [
        (F_VERSION_1, "VERSION_1"),
        (F_MAC, "MAC"),
        (F_STATUS, "STATUS"),
        (F_MRG_RXBUF, "MRG_RXBUF"),
    ] {
        assert!(on(bit), "the driver did not take {name}: {features}");
    }
    if !offloads {
        let taken: Vec<usize> = OFFLOADS.into_iter().filter(|b| on(*b)).collect();
        assert!(
            taken.is_empty(),
            "offload feature bits {taken:?} with a backend that has no vnet header: {features}"
        );
    }
    let carrier = vm.wait_said("eth0 carrier ", BOOT_TIMEOUT);
    assert_eq!(carrier, "eth0 carrier 1", "{}", vm.context());
}

/// The kernel, `initrd` and passt, or `None` after one SKIP line.
/// What a guest on `--net user` needs: hardware-backed KVM (here, or the test reruns in
/// the nested host and this returns `None`), the kernel and net initrd, passt, and a host
/// network passt can use. `None` after one SKIP line when something is missing.
fn guest_online(test: &str) -> Option<((PathBuf, PathBuf), net::HostRoute)> {
    if !common::hardware_kvm_or_nested(test, "a guest kernel cannot run") {
        return None;
    }
    let assets = assets(test, INITRD)?;
    Some((assets, net::host_network_or_skip(test)?))
}

fn assets(test: &str, initrd: &str) -> Option<(PathBuf, PathBuf)> {
    let assets = common::linux_assets(test, initrd)?;
    common::tool_or_skip(test, "passt")?;
    Some(assets)
}

/// Sends `payload` to `addr` within `timeout`, closes the sending half and reads until the
/// other end closes. The receiver must not close its own sending half first: passt
/// (Debian's 2023-03 build) stalls the host's data to a guest that did, and busybox nc
/// does when its input ends (the guest's /init keeps nc's input open for that).
fn upload(addr: SocketAddr, payload: &[u8], timeout: Duration) -> std::io::Result<()> {
    let end = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(30))?;
    s.set_read_timeout(Some(Duration::from_millis(300)))?;
    match s.read(&mut [0u8; 1]) {
        Ok(0) => {
            return Err(std::io::Error::other(
                "the receiver closed its sending half before any data came",
            ));
        }
        Ok(_) => return Err(std::io::Error::other("the receiver sent something")),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Err(e) => return Err(e),
    }
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut sent = 0;
    for chunk in payload.chunks(1 << 20) {
        if Instant::now() > end {
            return Err(std::io::Error::other(format!(
                "only {sent} of {} bytes went in {timeout:?}",
                payload.len()
            )));
        }
        s.write_all(chunk).map_err(|e| {
            std::io::Error::other(format!("after {sent} of {} bytes: {e}", payload.len()))
        })?;
        sent += chunk.len();
    }
    s.shutdown(std::net::Shutdown::Write)?;
    s.set_read_timeout(Some(
        end.saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1)),
    ))?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)?;
    Ok(())
}

fn kernel_and(initrd: &(PathBuf, PathBuf)) -> (&Path, &Path) {
    (initrd.0.as_path(), initrd.1.as_path())
}

#[test]
fn net_initrds_hold_virtio_net_an_init_for_each_test_and_a_working_iperf3() {
    let test = "net_initrds_hold_virtio_net_an_init_for_each_test_and_a_working_iperf3";
    let Some((kernel, initrd)) = common::linux_assets(test, INITRD) else {
        return;
    };
    let Some(bench) = common::asset_or_skip(test, BENCH_INITRD) else {
        return;
    };
    if common::tool_or_skip(test, "cpio").is_none() {
        return;
    }
    let dir = common::temp_dir("net-initrd");
    let (plain, with_iperf) = (dir.join("net"), dir.join("bench"));
    common::unpack_initrd(&initrd, &plain);
    common::unpack_initrd(&bench, &with_iperf);
    for d in [&plain, &with_iperf] {
        common::checked_module_order(&kernel, d, MODULES_BEFORE);
    }
    let init = common::checked_init(&plain);
    assert_eq!(
        init,
        common::checked_init(&with_iperf),
        "both initrds run one /init"
    );
    for want in [
        "dhcp)",
        "idle)",
        "fetch)",
        "serve)",
        "tap)",
        "bench)",
        "udhcpc -i eth0",
        "no card; idle",
        "exec 3<> /tmp/hold",
        "10.9.0.2/24",
        "/sys/class/net/eth0/carrier",
        "poweroff -f",
    ] {
        assert!(init.contains(want), "init lacks {want}");
    }
    // udhcpc's script: parsed by the guest's busybox, executable.
    let script = plain.join("etc/udhcpc.script");
    common::run(
        Command::new(plain.join("bin/busybox"))
            .args(["sh", "-n"])
            .arg(&script),
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&script).unwrap().permissions().mode();
    assert_ne!(mode & 0o111, 0, "udhcpc.script is not executable");
    // The bench initrd's iperf3 runs with the initrd's own loader and libraries alone.
    let version = common::version_with_initrd_libraries(&with_iperf, "usr/bin/iperf3");
    assert!(version.starts_with("iperf 3."), "{version}");
    assert!(
        !plain.join("usr/bin/iperf3").exists(),
        "iperf3 in net-initrd"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The guest's own tools, busybox wget and nc, run here against the tests' HTTP server and
/// uploader: what the guest tests rely on, without a guest.
#[test]
fn the_guests_wget_and_nc_work_with_the_tests_server_and_uploader() {
    let test = "the_guests_wget_and_nc_work_with_the_tests_server_and_uploader";
    let Some(initrd) = common::asset_or_skip(test, INITRD) else {
        return;
    };
    if common::tool_or_skip(test, "cpio").is_none() {
        return;
    }
    let dir = common::temp_dir("net-tools");
    common::unpack_initrd(&initrd, &dir);
    let busybox = dir.join("bin/busybox");
    let blob = Arc::new(net::random_bytes(4 << 20));
    let want = net::sha256_hex(&blob);

    let server = BlobServer::start(LOOPBACK, blob.clone());
    let got = dir.join("got");
    common::run(
        Command::new(&busybox)
            .args(["wget", "-q", "-O"])
            .arg(&got)
            .arg(format!("http://{}/blob", server.addr)),
    );
    assert_eq!(net::sha256_hex(&std::fs::read(&got).unwrap()), want);
    assert_eq!(server.served.load(Ordering::SeqCst), 1);
    let missing = Command::new(&busybox)
        .args(["wget", "-q", "-O", "/dev/null"])
        .arg(format!("http://{}/other", server.addr))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!missing.success(), "wget of a missing path succeeded");
    drop(server);

    // As the guest's serve test: nc -l keeps what comes until the sender closes, as long
    // as its input stays open; with its input at an end it half-closes at once, which
    // upload() refuses (passt stalls on it).
    let listen = |input: Stdio, kept: &Path| {
        let port = net::free_port(LOOPBACK);
        let nc = Command::new(&busybox)
            .args(["nc", "-l", "-p", &port.to_string()])
            .stdin(input)
            .stdout(std::fs::File::create(kept).unwrap())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !net::listening(port) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nc never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        (nc, SocketAddr::from((LOOPBACK, port)))
    };
    let kept = dir.join("kept");
    let (mut nc, addr) = listen(Stdio::null(), &kept);
    let refused = upload(addr, &blob, Duration::from_secs(30)).unwrap_err();
    assert!(
        refused.to_string().contains("closed its sending half"),
        "{refused}"
    );
    let _ = nc.kill();
    let _ = nc.wait();
    // Its input a pipe nobody writes to, as the guest's FIFO.
    let (mut nc, addr) = listen(Stdio::piped(), &kept);
    upload(addr, &blob, Duration::from_secs(30)).expect("upload to nc");
    let status = common::wait_exit(&mut nc, Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "nc: {status:?}");
    assert_eq!(net::sha256_hex(&std::fs::read(&kept).unwrap()), want);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn guest_gets_its_lease_from_passt_and_the_card_is_virtio_net_at_00_03_0() {
    let test = "guest_gets_its_lease_from_passt_and_the_card_is_virtio_net_at_00_03_0";
    let Some((assets, route)) = guest_online(test) else {
        return;
    };
    let dir = common::temp_dir("net-dhcp");
    let mac = "52:54:00:ab:cd:01";
    let start = Instant::now();
    let mut vm = Vm::start(
        &dir,
        "dhcp",
        kernel_and(&assets),
        "idle",
        &["--net", "user", "--mac", mac],
    );
    check_card(&mut vm, mac, false);
    let line = vm.wait_said("dhcp ", BOOT_TIMEOUT);
    eprintln!(
        "{test}: {line} ({:.1} s after the start)",
        start.elapsed().as_secs_f64()
    );
    let lease = lease(&line);
    // passt hands the guest the host's own address and default gateway.
    assert_eq!(lease.address, route.address, "{line}{}", vm.context());
    assert_eq!(lease.router, route.gateway, "{line}{}", vm.context());
    assert_ne!(lease.mtu, "none", "{line}");
    vm.wait_said("idle", BOOT_TIMEOUT);

    let status = vm.net_status();
    assert_eq!(status["mode"], "user", "{status}");
    assert_eq!(
        status["mac"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some(mac),
        "{status}"
    );
    assert!(
        status["link"] == true || status["link"] == "up",
        "link not up: {status}"
    );
    assert!(
        status["forwards"].as_array().is_some_and(|f| f.is_empty()),
        "{status}"
    );
    let passt = net::wait_one_child(vm.pid(), "passt", Duration::from_secs(5))
        .unwrap_or_else(|kids| panic!("passt children of the VMM: {kids:?}{}", vm.context()));
    assert_eq!(status["passt_pid"], passt.pid, "{status}");
    vm.stop(Some(passt));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn without_a_network_option_or_with_none_the_guest_has_no_card_and_no_passt_runs() {
    let test = "without_a_network_option_or_with_none_the_guest_has_no_card_and_no_passt_runs";
    if !common::hardware_kvm_or_nested(test, "a guest kernel cannot run") {
        return;
    }
    let Some(assets) = common::linux_assets(test, INITRD) else {
        return;
    };
    let dir = common::temp_dir("net-none");
    for (name, net) in [("default", &[][..]), ("none", &["--net", "none"][..])] {
        let mut vm = Vm::start(&dir, name, kernel_and(&assets), "idle", net);
        vm.wait_said("no card; idle", BOOT_TIMEOUT);
        assert!(
            net::children_named(vm.pid(), "passt").is_empty(),
            "{name}: a passt runs{}",
            vm.context()
        );
        // No card, no network object.
        let reply = common::ControlClient::connect(&vm.control).call(r#"{"execute":"status"}"#);
        assert!(reply["return"]["net"].is_null(), "{name}: {reply}");
        vm.stop(None);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn guest_fetches_64_mib_from_a_server_on_the_hosts_loopback() {
    let test = "guest_fetches_64_mib_from_a_server_on_the_hosts_loopback";
    let Some((assets, _route)) = guest_online(test) else {
        return;
    };
    let dir = common::temp_dir("net-fetch");
    let blob = Arc::new(net::random_bytes(PAYLOAD_BYTES));
    let want = net::sha256_hex(&blob);
    let server = BlobServer::start(LOOPBACK, blob.clone());
    let mut vm = Vm::start(
        &dir,
        "fetch",
        kernel_and(&assets),
        &format!("fetch:{}", server.addr.port()),
        &["--net", "user"],
    );
    let line = vm.wait_said("fetched ", BOOT_TIMEOUT + TRANSFER_TIMEOUT);
    let (bytes, sha, ms) = transfer(&line);
    assert_eq!(bytes, PAYLOAD_BYTES, "{line}{}", vm.context());
    assert_eq!(sha, want, "{line}");
    assert_eq!(server.served.load(Ordering::SeqCst), 1);
    if let Some(ms) = ms {
        eprintln!(
            "{test}: 64 MiB in {ms} ms ({:.1} MiB/s)",
            64_000.0 / ms.max(1) as f64
        );
    }
    assert_eq!(vm.wait_exit(), Some(0), "{}", vm.context());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn host_uploads_64_mib_to_the_guest_through_a_port_forward() {
    let test = "host_uploads_64_mib_to_the_guest_through_a_port_forward";
    let Some((assets, _route)) = guest_online(test) else {
        return;
    };
    let dir = common::temp_dir("net-upload");
    let host_port = net::free_port(LOOPBACK);
    let forward = format!("tcp:127.0.0.1:{host_port}-:{GUEST_PORT}");
    let mut vm = Vm::start(
        &dir,
        "upload",
        kernel_and(&assets),
        &format!("serve:{GUEST_PORT}"),
        &["--net", "user", "--forward", &forward],
    );
    // Only once the guest listens: passt takes the host's connection at once and drops it
    // when the guest refuses.
    vm.wait_said(&format!("listening on {GUEST_PORT}"), BOOT_TIMEOUT);
    let status = vm.net_status();
    assert!(
        status["forwards"]
            .to_string()
            .contains(&host_port.to_string()),
        "the forward is not in the status: {status}"
    );
    let payload = net::random_bytes(PAYLOAD_BYTES);
    let want = net::sha256_hex(&payload);
    let start = Instant::now();
    upload(
        SocketAddr::from((LOOPBACK, host_port)),
        &payload,
        TRANSFER_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("upload through {forward}: {e}{}", vm.context()));
    let line = vm.wait_said("received ", TRANSFER_TIMEOUT);
    eprintln!(
        "{test}: 64 MiB sent and closed in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let (bytes, sha, _) = transfer(&line);
    assert_eq!(bytes, PAYLOAD_BYTES, "{line}{}", vm.context());
    assert_eq!(sha, want, "{line}");
    assert_eq!(vm.wait_exit(), Some(0), "{}", vm.context());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn two_vms_at_once_each_with_its_own_passt() {
    let test = "two_vms_at_once_each_with_its_own_passt";
    let Some((assets, route)) = guest_online(test) else {
        return;
    };
    let dir = common::temp_dir("net-two");
    let macs = ["52:54:00:ab:cd:0a", "52:54:00:ab:cd:0b"];
    let mut vms: Vec<Vm> = macs
        .iter()
        .enumerate()
        .map(|(i, mac)| {
            Vm::start(
                &dir,
                &format!("vm{i}"),
                kernel_and(&assets),
                "idle",
                &["--net", "user", "--mac", mac],
            )
        })
        .collect();
    let mut passts = Vec::new();
    for (vm, mac) in vms.iter_mut().zip(macs) {
        check_card(vm, mac, false);
        let line = vm.wait_said("dhcp ", BOOT_TIMEOUT);
        assert_eq!(lease(&line).address, route.address, "{line}");
        vm.wait_said("idle", BOOT_TIMEOUT);
        passts.push(
            net::wait_one_child(vm.pid(), "passt", Duration::from_secs(5)).unwrap_or_else(|kids| {
                panic!("passt children of the VMM: {kids:?}{}", vm.context())
            }),
        );
    }
    assert_ne!(passts[0].pid, passts[1].pid);
    // Both still run, each with its own.
    for (vm, passt) in vms.iter_mut().zip(&passts) {
        assert!(vm.child.try_wait().unwrap().is_none(), "{}", vm.context());
        assert!(!net::gone(*passt), "{passt:?} ended{}", vm.context());
    }
    for (vm, passt) in vms.iter_mut().zip(passts) {
        vm.stop(Some(passt));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn no_passt_and_no_socket_file_outlive_a_poweroff_or_a_sigkill() {
    let test = "no_passt_and_no_socket_file_outlive_a_poweroff_or_a_sigkill";
    let Some((assets, _route)) = guest_online(test) else {
        return;
    };
    let dir = common::temp_dir("net-leftovers");
    let tmp = Path::new("/tmp");
    let before = net::sockets_in(tmp);

    // The guest takes its lease and powers off.
    let mut vm = Vm::start(
        &dir,
        "poweroff",
        kernel_and(&assets),
        "dhcp",
        &["--net", "user"],
    );
    let passt = net::wait_one_child(vm.pid(), "passt", BOOT_TIMEOUT)
        .unwrap_or_else(|kids| panic!("passt children of the VMM: {kids:?}{}", vm.context()));
    vm.wait_said("dhcp ", BOOT_TIMEOUT);
    assert_eq!(vm.wait_exit(), Some(0), "{}", vm.context());
    assert!(
        net::wait_gone(passt, PASST_GONE),
        "passt {passt:?} outlived its VMM's power-off{}",
        vm.context()
    );

    // The VMM is killed while the guest idles.
    let mut vm = Vm::start(
        &dir,
        "killed",
        kernel_and(&assets),
        "idle",
        &["--net", "user"],
    );
    let passt = net::wait_one_child(vm.pid(), "passt", BOOT_TIMEOUT)
        .unwrap_or_else(|kids| panic!("passt children of the VMM: {kids:?}{}", vm.context()));
    vm.wait_said("idle", BOOT_TIMEOUT);
    vm.child.kill().unwrap();
    vm.child.wait().unwrap();
    assert!(
        net::wait_gone(passt, PASST_GONE),
        "passt {passt:?} outlived its VMM's SIGKILL{}",
        vm.context()
    );

    let after = net::sockets_in(tmp);
    let left: Vec<_> = after.difference(&before).collect();
    assert!(left.is_empty(), "left in /tmp: {left:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn guest_on_a_tap_device_fetches_64_mib_from_its_host_side() {
    let test = "guest_on_a_tap_device_fetches_64_mib_from_its_host_side";
    if !common::hardware_kvm_or_nested(test, "a guest kernel cannot run") {
        return;
    }
    let Some(assets) = common::linux_assets(test, INITRD) else {
        return;
    };
    if common::tool_or_skip(test, "ip").is_none() {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let why = "making a TAP device needs root (CAP_NET_ADMIN); the nested test host runs tests as root";
        eprintln!("SKIP {test}: {why}");
        common::tally(&format!("skipped {test}: {why}"));
        return;
    }
    let dir = common::temp_dir("net-tap");
    let name = format!("vmtap{}", std::process::id() % 100_000);
    let _tap = net::TapDevice::make(&name, Some(TAP_HOST));
    let blob = Arc::new(net::random_bytes(PAYLOAD_BYTES));
    let want = net::sha256_hex(&blob);
    let server = BlobServer::start(IpAddr::V4(TAP_HOST), blob.clone());
    let mut vm = Vm::start(
        &dir,
        "tap",
        kernel_and(&assets),
        &format!("tap:{}", server.addr.port()),
        &["--net", &format!("tap:{name}")],
    );
    check_card(&mut vm, "52:54:00:12:34:56", true);
    vm.wait_said("static address 10.9.0.2/24", BOOT_TIMEOUT);
    let line = vm.wait_said("fetched ", TRANSFER_TIMEOUT);
    let (bytes, sha, ms) = transfer(&line);
    assert_eq!(bytes, PAYLOAD_BYTES, "{line}{}", vm.context());
    assert_eq!(sha, want, "{line}");
    if let Some(ms) = ms {
        eprintln!(
            "{test}: 64 MiB over {name} in {ms} ms ({:.1} MiB/s)",
            64_000.0 / ms.max(1) as f64
        );
    }
    assert_eq!(vm.wait_exit(), Some(0), "{}", vm.context());
    let _ = std::fs::remove_dir_all(dir);
}
