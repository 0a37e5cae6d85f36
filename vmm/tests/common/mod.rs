//! Shared by the end-to-end tests: KVM availability with a loud skip line and a tally
//! the test command sums up, temp dirs, and running `vmdesk-vmm` until its firmware log
//! shows a line.
#![allow(dead_code)]

pub mod guests;
pub mod installer;
mod media;
pub mod net;
mod refusal;
mod screen;
mod skip;
pub mod x11;

pub use media::*;
// Not every test looks at the screen or makes the VMM refuse its options.
#[allow(unused_imports)]
pub use refusal::*;
#[allow(unused_imports)]
pub use screen::*;
pub use skip::*;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vmdesk-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn vmm_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vmdesk-vmm")
}

/// A VNC display number N (port 5900 + N) on 127.0.0.1 that nothing listens on, for a VMM
/// that is given its display rather than picking one itself (QEMU's `-vnc`).
pub fn free_vnc_display() -> u16 {
    (40..99)
        .find(|n| std::net::TcpListener::bind(("127.0.0.1", 5900 + n)).is_ok())
        .expect("a free VNC display")
}

/// Waits until `log` contains `needle` or the child exits or `timeout` passes; returns
/// the log text.
pub fn wait_for_log(child: &mut Child, log: &Path, needle: &str, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) || start.elapsed() > timeout {
            return text;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return std::fs::read_to_string(log).unwrap_or_default();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGTERM and waits for the exit status.
pub fn stop(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: plain kill(2) on a pid we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            return child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `vmdesk-vmm` with `args`, SeaBIOS's log going to `dir/name.log`.
pub fn spawn_vmm(dir: &Path, name: &str, args: &[&str]) -> (Child, PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(vmm_bin())
        .args(args)
        .arg("--debugcon")
        .arg(format!("file:{}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vmdesk-vmm");
    (child, log)
}

/// The 8x16 font the VGA BIOS carries (found by its 'A'), for reading text off a screen.
pub fn vga_font() -> Vec<u8> {
    const GLYPH_A: [u8; 16] = [
        0x00, 0x00, 0x10, 0x38, 0x6c, 0xc6, 0xc6, 0xfe, 0xc6, 0xc6, 0xc6, 0xc6, 0x00, 0x00, 0x00,
        0x00,
    ];
    let rom = vmm::devices::vga::load_vgabios(None).expect("the seabios package's VGA BIOS");
    let at = rom
        .windows(16)
        .position(|w| w == GLYPH_A)
        .expect("an 8x16 font in the VGA BIOS");
    rom[at - 0x41 * 16..at - 0x41 * 16 + 256 * 16].to_vec()
}

/// A boot sector that prints `msg` to port 0x402 and halts (22 bytes of code, then the
/// message at 0x7c16), padded to `len` bytes, with the 0x55AA signature.
pub fn boot_sector(msg: &str, len: usize) -> Vec<u8> {
    #[rustfmt::skip]
    let code: [u8; 22] = [
        0xfa, 0x31, 0xc0, 0x8e, 0xd8,   // cli; xor ax,ax; mov ds,ax
        0xbe, 0x16, 0x7c,               // mov si, 0x7c16
        0xba, 0x02, 0x04,               // mov dx, 0x402
        0xac, 0x84, 0xc0, 0x74, 0x03,   // lodsb; test al,al; jz +3
        0xee, 0xeb, 0xf8,               // out dx,al; jmp lodsb
        0xf4, 0xeb, 0xfd,               // hlt; jmp hlt
    ];
    let mut img = vec![0u8; len];
    img[..22].copy_from_slice(&code);
    let msg = format!("{msg}\n\0");
    img[22..22 + msg.len()].copy_from_slice(msg.as_bytes());
    img[510] = 0x55;
    img[511] = 0xaa;
    img
}

/// QEMU 7.2's `pc` with the devices every vmdesk-vmm machine has (std VGA, the virtio
/// tablet on slot 4, no NIC, COM1 to nowhere) and SeaBIOS's log in `log`: the reference
/// the parity tests and benchmarks hold us against.
pub fn qemu_reference(memory_mib: u64, cpus: u32, log: &Path) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-M",
        "pc",
        "-enable-kvm",
        "-cpu",
        "host,-arch-capabilities",
        "-nodefaults",
    ])
    .args(["-m", &memory_mib.to_string(), "-smp", &cpus.to_string()])
    .args([
        "-display", "none", "-vga", "std", "-net", "none", "-serial", "null",
    ])
    .args(["-device", "virtio-tablet-pci,addr=04.0"])
    // The guest agent's port, as vmdesk-vmm has it after the tablet (modern only, as ours).
    .args(["-device", "virtio-serial-pci,addr=05.0,disable-legacy=on"])
    .arg("-debugcon")
    .arg(format!("file:{}", log.display()))
    .args(["-global", "isa-debugcon.iobase=0x402"]);
    c
}

/// Assembles the 16-bit program `source` with GNU as and links it as a flat binary that
/// runs at `org` (0x7c00 for a boot sector); returns its bytes, or `None` (after one SKIP
/// line) when binutils is missing.
pub fn assemble(test: &str, source: &Path, org: u32, work: &Path) -> Option<Vec<u8>> {
    let as_ = tool_or_skip(test, "as")?;
    let ld = tool_or_skip(test, "ld")?;
    let stem = source.file_stem().unwrap().to_string_lossy().into_owned();
    let obj = work.join(format!("{stem}.o"));
    let bin = work.join(format!("{stem}.bin"));
    run(Command::new(as_)
        .arg("--32")
        .arg("-o")
        .arg(&obj)
        .arg(source));
    run(Command::new(ld)
        .args(["-m", "elf_i386", "--oformat", "binary", "-e", "_start"])
        .arg(format!("-Ttext={org:#x}"))
        .arg("-o")
        .arg(&bin)
        .arg(&obj));
    Some(std::fs::read(&bin).unwrap())
}

/// A client of the control socket (JSON lines), connecting as soon as the VMM made it.
pub struct ControlClient {
    out: UnixStream,
    input: BufReader<UnixStream>,
}

impl ControlClient {
    pub fn connect(path: &Path) -> ControlClient {
        let start = Instant::now();
        loop {
            match UnixStream::connect(path) {
                Ok(s) => {
                    return ControlClient {
                        input: BufReader::new(s.try_clone().unwrap()),
                        out: s,
                    };
                }
                Err(e) if start.elapsed() > Duration::from_secs(10) => {
                    panic!("connect {path:?}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Sends one request line and returns the reply.
    pub fn call(&mut self, request: &str) -> serde_json::Value {
        writeln!(self.out, "{request}").unwrap();
        let mut line = String::new();
        self.input.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?}: {e}"))
    }
}

/// Each vCPU's registers and run state from a VMM's control socket (`query-vcpus`), one
/// line a vCPU, for the report of a guest that hung; never fails, says what it could not do.
pub fn vcpu_states(socket: &Path) -> String {
    let Ok(stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return format!("(no control socket at {})", socket.display());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut out = &stream;
    let _ = writeln!(out, r#"{{"execute":"query-vcpus"}}"#);
    let mut reply = String::new();
    let _ = BufReader::new(&stream).read_line(&mut reply);
    match serde_json::from_str::<serde_json::Value>(&reply) {
        Ok(v) => match v["return"].as_array() {
            Some(cpus) => cpus.iter().map(|c| format!("\n    {c}")).collect(),
            None => format!("{v}"),
        },
        Err(_) => format!("(no answer: {reply:?})"),
    }
}

/// The VNC port from the "vnc: listening on 127.0.0.1:59NN" line a vmdesk-vmm started by
/// [`spawn_vmm`] with `--vnc 127.0.0.1:auto` prints on stderr; the rest of its stderr is
/// drained on a thread so the VMM never blocks on it.
pub fn vnc_port(child: &mut Child) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the vnc line on stderr");
        if let Some(addr) = line.strip_prefix("vnc: listening on ") {
            return addr.rsplit_once(':').unwrap().1.parse().unwrap();
        }
    }
}

/// Unpacks the gzip'd cpio `initrd` into `dir`, as the kernel does (needs `cpio`).
pub fn unpack_initrd(initrd: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let script = format!(
        "gzip -dc '{}' | cpio -id --quiet --no-absolute-filenames",
        initrd.display()
    );
    run(Command::new("sh").arg("-c").arg(script).current_dir(dir));
}

/// The /init of an initrd unpacked in `dir`, after checking that its busybox parses it
/// (an /init that fails to parse panics the guest's kernel).
pub fn checked_init(dir: &Path) -> String {
    run(Command::new(dir.join("bin/busybox"))
        .args(["sh", "-n"])
        .arg(dir.join("init")));
    std::fs::read_to_string(dir.join("init")).unwrap()
}

/// Checks a module initrd unpacked in `dir` (test-assets.sh's layout: lib/modules/order,
/// lib/modules/kernel-release, one .ko each): every `(first, then)` pair loads in that order,
/// and the modules are built for the kernel in `kernel` (its release string is in the
/// image's header, and every module's vermagic starts with it: insmod refuses anything
/// else). Returns the load order, module names without ".ko".
pub fn checked_module_order(
    kernel: &Path,
    dir: &Path,
    load_before: &[(&str, &str)],
) -> Vec<String> {
    let modules = dir.join("lib/modules");
    let order = std::fs::read_to_string(modules.join("order")).unwrap();
    let order: Vec<String> = order
        .lines()
        .map(|l| l.trim_end_matches(".ko").to_string())
        .collect();
    let at = |m: &str| {
        order
            .iter()
            .position(|x| x == m)
            .unwrap_or_else(|| panic!("{m} is not in the load order {order:?}"))
    };
    for (first, then) in load_before {
        assert!(at(first) < at(then), "{first} must load before {then}");
    }
    let release = std::fs::read_to_string(modules.join("kernel-release")).unwrap();
    let release = release.trim();
    let image = std::fs::read(kernel).unwrap();
    assert!(
        image
            .windows(release.len())
            .any(|w| w == release.as_bytes()),
        "vmlinuz is not {release}"
    );
    for m in &order {
        let bytes = std::fs::read(modules.join(format!("{m}.ko"))).unwrap();
        let magic = format!("vermagic={release} ");
        assert!(
            bytes.windows(magic.len()).any(|w| w == magic.as_bytes()),
            "{m}.ko is not built for {release}"
        );
    }
    order
}

/// Opens SeaBIOS's boot menu over VNC: a client connects now (before the prompt), waits
/// for "Press ESC for boot menu" in the firmware log `log`, then presses Esc every 100 ms
/// until the log shows "Select boot device" (30 s at most). Returns the log by then.
/// The client is connected first so Esc goes out the moment the prompt shows: SeaBIOS
/// waits 2.5 s for it, less than starting a vncdo takes in the nested test host.
pub fn open_boot_menu(child: &mut Child, log: &Path, port: u16, timeout: Duration) -> String {
    use display::client::{Client, ClientOptions};
    use display::rfb::protocol::ClientMessage;
    const XK_ESCAPE: u32 = 0xff1b;
    let mut client = Client::connect(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        &ClientOptions::default(),
    )
    .expect("connect to the VMM's VNC server");
    let text = wait_for_log(child, log, "Press ESC for boot menu", timeout);
    assert!(text.contains("Press ESC for boot menu"), "{text}");
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("Select boot device") {
            // The menu's lines follow at once; give them a moment to reach the log.
            std::thread::sleep(Duration::from_millis(500));
            return std::fs::read_to_string(log).unwrap_or(text);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "Esc never reached SeaBIOS; its log:\n{text}"
        );
        for down in [true, false] {
            client
                .send(&ClientMessage::KeyEvent {
                    down,
                    keysym: XK_ESCAPE,
                })
                .expect("send Esc");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
