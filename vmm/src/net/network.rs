//! A VM's network for the VMM's whole life: its backend (a passt process or a TAP device),
//! the thread that reads the backend's frames for the guest, and the card that gets them.
//! The machine is rebuilt at every guest reset, and with it the virtio-net device; the
//! network stays (passt keeps its forwards bound, the TAP device stays open), and each new
//! card is attached with [`Network::attach`].
//!
//! Flow control towards the guest: a frame the card cannot take (its receive ring is full)
//! is held by the reader thread, which stops reading the backend until the card says it
//! has room (the `rx_space` eventfd): the backend's socket or queue fills and the host's
//! TCP slows down, instead of frames being dropped here.
//!
//! When the backend ends (passt exits or is killed, the TAP device is deleted), the card's
//! link goes down, the log says why, and the VM keeps running.

use std::io;
use std::os::fd::AsFd;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use serde_json::{Value, json};
use thiserror::Error;

use super::passt::{self, Passt, PasstError, PasstReceiver, PasstSender};
use super::tap::{Tap, TapError};
use super::{Forward, FrameReceiver, FrameSource, MacAddr, NetBackend, NetMode};
use crate::pause::DeviceGate;

#[derive(Debug, Error)]
pub enum NetworkError {
    #[error(transparent)]
    Passt(#[from] PasstError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error(
        "--forward needs the user-mode network (--net user): a {0} network has no NAT to forward through"
    )]
    ForwardWithoutNat(NetMode),
    #[error("--forward {0} is given twice (the same protocol, address and host port)")]
    DuplicateForward(Forward),
    #[error("cannot set up the network: {0}")]
    Io(#[from] io::Error),
}

type Slot = Arc<Mutex<Option<Arc<Mutex<dyn FrameReceiver>>>>>;
/// The gate of the machine the card belongs to (see [`crate::pause`]).
type GateSlot = Arc<Mutex<Arc<DeviceGate>>>;

/// Where each new card's guest frames go.
enum Sender {
    Passt(std::os::unix::net::UnixStream),
    Tap(Tap),
    /// passt would not start on a host without a network (no routable interface): the card
    /// is there with its cable unplugged, and what the guest sends goes nowhere.
    Unplugged(String),
}

/// What passt (Debian 12's) says when the host has no route anywhere.
const OFFLINE: &str = "routable interface";

struct Nowhere;

impl NetBackend for Nowhere {
    fn send(&mut self, _frame: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

pub struct Network {
    mode: NetMode,
    mac: MacAddr,
    forwards: Vec<Forward>,
    sender: Sender,
    child: Arc<Mutex<Option<Child>>>,
    card: Slot,
    gate: GateSlot,
    link_up: Arc<AtomicBool>,
    rx_space: Arc<EventFd>,
    stop: Arc<EventFd>,
    reader: Option<JoinHandle<()>>,
}

impl Network {
    /// Starts the backend `mode` asks for; `None` for no network.
    pub fn start(
        mode: &NetMode,
        mac: MacAddr,
        forwards: &[Forward],
    ) -> Result<Option<Network>, NetworkError> {
        Network::start_with(mode, mac, forwards, passt::find)
    }

    /// [`Network::start`] with `find_passt` to say which passt to run.
    fn start_with(
        mode: &NetMode,
        mac: MacAddr,
        forwards: &[Forward],
        find_passt: impl FnOnce() -> Result<std::path::PathBuf, PasstError>,
    ) -> Result<Option<Network>, NetworkError> {
        if !forwards.is_empty() && *mode != NetMode::User {
            return Err(NetworkError::ForwardWithoutNat(mode.clone()));
        }
        for (i, f) in forwards.iter().enumerate() {
            let clash = |g: &Forward| {
                (g.protocol, g.host_addr, g.host_port) == (f.protocol, f.host_addr, f.host_port)
            };
            if forwards[..i].iter().any(clash) {
                return Err(NetworkError::DuplicateForward(*f));
            }
        }
        let (sender, source, child): (Sender, Box<dyn FrameSource>, Option<Child>) = match mode {
            NetMode::None => return Ok(None),
            NetMode::User => {
                let program = find_passt()?;
                match Passt::start(&program, forwards) {
                    Ok(Passt { child, stream }) => {
                        let reader = PasstReceiver::new(stream.try_clone()?);
                        tracing::info!("network: passt (pid {}) for user-mode NAT", child.id());
                        (Sender::Passt(stream), Box::new(reader), Some(child))
                    }
                    Err(PasstError::Refused(why)) if why.contains(OFFLINE) => {
                        return Ok(Some(Network::unplugged(mode, mac, forwards, why)?));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            NetMode::Tap(name) => {
                let tap = Tap::open(name)?;
                let reader = tap.try_clone()?;
                (Sender::Tap(tap), Box::new(reader), None)
            }
        };
        let mut net = Network {
            mode: mode.clone(),
            mac,
            forwards: forwards.to_vec(),
            sender,
            child: Arc::new(Mutex::new(child)),
            card: Arc::default(),
            gate: Arc::default(),
            link_up: Arc::new(AtomicBool::new(true)),
            rx_space: Arc::new(nonblocking_eventfd()?),
            stop: Arc::new(nonblocking_eventfd()?),
            reader: None,
        };
        let reader = Reader {
            source,
            card: net.card.clone(),
            gate: net.gate.clone(),
            link_up: net.link_up.clone(),
            child: net.child.clone(),
            rx_space: net.rx_space.clone(),
            stop: net.stop.clone(),
            what: net.backend_name(),
        };
        net.reader = Some(
            std::thread::Builder::new()
                .name("net-rx".into())
                .spawn(move || reader.run())?,
        );
        Ok(Some(net))
    }

    /// A card with its cable unplugged: this host has no network for passt to use.
    fn unplugged(
        mode: &NetMode,
        mac: MacAddr,
        forwards: &[Forward],
        why: String,
    ) -> io::Result<Network> {
        tracing::warn!(
            "network: passt cannot start ({why}): this machine has no network; the VM runs with its network cable unplugged (restart it once the machine is online)"
        );
        Ok(Network {
            mode: mode.clone(),
            mac,
            forwards: forwards.to_vec(),
            sender: Sender::Unplugged(why),
            child: Arc::default(),
            card: Arc::default(),
            gate: Arc::default(),
            link_up: Arc::new(AtomicBool::new(false)),
            rx_space: Arc::new(nonblocking_eventfd()?),
            stop: Arc::new(nonblocking_eventfd()?),
            reader: None,
        })
    }

    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// A sender of the guest's frames for a new card.
    pub fn backend(&self) -> io::Result<Box<dyn NetBackend>> {
        Ok(match &self.sender {
            Sender::Passt(s) => Box::new(PasstSender(s.try_clone()?)),
            Sender::Tap(t) => Box::new(t.try_clone()?),
            Sender::Unplugged(_) => Box::new(Nowhere),
        })
    }

    /// The eventfd a new card writes when it has room for frames again.
    pub fn rx_space(&self) -> Arc<EventFd> {
        self.rx_space.clone()
    }

    /// From now on the backend's frames go to `card` (the machine's new network card),
    /// only while `gate` lets them (not while the VM is paused); it gets the link as it is.
    pub fn attach(&self, card: Arc<Mutex<dyn FrameReceiver>>, gate: Arc<DeviceGate>) {
        *self.gate.lock().unwrap_or_else(|e| e.into_inner()) = gate;
        let mut slot = self.card.lock().unwrap_or_else(|e| e.into_inner());
        card.lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_link(self.link_up.load(Ordering::SeqCst));
        *slot = Some(card);
        drop(slot);
        // A frame held for the old card may go to the new one.
        let _ = self.rx_space.write(1);
    }

    pub fn link_up(&self) -> bool {
        self.link_up.load(Ordering::SeqCst)
    }

    fn backend_name(&self) -> String {
        match (
            &self.sender,
            self.child
                .lock()
                .ok()
                .and_then(|c| c.as_ref().map(Child::id)),
        ) {
            (Sender::Passt(_), Some(pid)) => format!("passt (pid {pid})"),
            (Sender::Passt(_), None) => "passt".into(),
            (Sender::Tap(t), _) => format!("TAP device {}", t.name()),
            (Sender::Unplugged(_), _) => "nothing (unplugged)".into(),
        }
    }

    /// What the control socket's status says about the network.
    pub fn status(&self) -> Value {
        let pid = self
            .child
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(Child::id));
        json!({
            "mode": self.mode.to_string(),
            "mac": self.mac.to_string(),
            "link": if self.link_up() { "up" } else { "down" },
            "forwards": self.forwards.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "passt_pid": pid,
            "unplugged": match &self.sender {
                Sender::Unplugged(why) => Some(why.as_str()),
                _ => None,
            },
        })
    }
}

fn nonblocking_eventfd() -> io::Result<EventFd> {
    EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).map_err(io::Error::from)
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(mut child) = self.child.lock().ok().and_then(|mut c| c.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The reader thread's state.
struct Reader {
    source: Box<dyn FrameSource>,
    card: Slot,
    gate: GateSlot,
    link_up: Arc<AtomicBool>,
    child: Arc<Mutex<Option<Child>>>,
    rx_space: Arc<EventFd>,
    stop: Arc<EventFd>,
    what: String,
}

/// What a wait ended with.
#[derive(PartialEq, Eq)]
enum Woken {
    Ready,
    Stop,
}

impl Reader {
    fn run(mut self) {
        let mut frame = Vec::new();
        loop {
            if !self.source.buffered() && self.wait_source() == Woken::Stop {
                return;
            }
            match self.source.recv(&mut frame) {
                Ok(true) => {
                    if !self.deliver(&frame) {
                        return;
                    }
                }
                Ok(false) => return self.ended(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return self.ended(Some(e)),
            }
        }
    }

    /// Until the backend has something, or the network is dropped.
    fn wait_source(&self) -> Woken {
        let mut fds = [
            PollFd::new(self.source.fd(), PollFlags::POLLIN),
            PollFd::new(self.stop.as_fd(), PollFlags::POLLIN),
        ];
        loop {
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                // Polling two fds we own cannot fail otherwise; reading will tell.
                Err(_) => return Woken::Ready,
            }
            if fds[1].any().unwrap_or(false) {
                return Woken::Stop;
            }
            return Woken::Ready;
        }
    }

    /// Hands `frame` to the card, waiting while it has no room; `false` when the network
    /// is being dropped.
    fn deliver(&self, frame: &[u8]) -> bool {
        loop {
            let gate = self.gate.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let Some(_pass) = gate.enter_within(Duration::from_millis(100)) else {
                // Paused: the frame waits, unless the network is being dropped.
                if self.stop.read().is_ok() {
                    return false;
                }
                continue;
            };
            let taken = {
                let card = self.card.lock().unwrap_or_else(|e| e.into_inner()).clone();
                match card {
                    Some(card) => card
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .receive(frame),
                    // No machine yet: nobody to take it.
                    None => true,
                }
            };
            if taken {
                return true;
            }
            let mut fds = [
                PollFd::new(self.rx_space.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.stop.as_fd(), PollFlags::POLLIN),
            ];
            // The timeout covers a card that was replaced without saying so.
            let _ = poll(&mut fds, PollTimeout::from(100u16));
            if fds[1].any().unwrap_or(false) {
                return false;
            }
            let _ = self.rx_space.read();
        }
    }

    /// The backend is gone: the link goes down and the log says why.
    fn ended(&self, error: Option<io::Error>) {
        if self.stop.read().is_ok() {
            // The network is being dropped: nothing went wrong.
            return;
        }
        self.link_up.store(false, Ordering::SeqCst);
        if let Some(card) = self.card.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            card.lock()
                .unwrap_or_else(|e| e.into_inner())
                .set_link(false);
        }
        let status = self.child.lock().ok().and_then(|mut c| {
            let child = c.as_mut()?;
            (0..50).find_map(|_| match child.try_wait() {
                Ok(Some(s)) => Some(s.to_string()),
                _ => {
                    std::thread::sleep(Duration::from_millis(20));
                    None
                }
            })
        });
        let why = match (error, status) {
            (Some(e), _) => format!("reading from it failed: {e}"),
            (None, Some(s)) => format!("it exited ({s})"),
            (None, None) => "it closed its end".into(),
        };
        tracing::warn!(
            "network: {} stopped ({why}); the VM keeps running with its network link down",
            self.what
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A card that takes `room` frames, then refuses until given more.
    struct Card {
        got: Vec<Vec<u8>>,
        room: usize,
        link: Vec<bool>,
    }

    impl FrameReceiver for Card {
        fn receive(&mut self, frame: &[u8]) -> bool {
            if self.room == 0 {
                return false;
            }
            self.room -= 1;
            self.got.push(frame.to_vec());
            true
        }
        fn set_link(&mut self, up: bool) {
            self.link.push(up);
        }
    }

    fn fake_passt() -> std::path::PathBuf {
        // A "passt" that echoes every frame back: the shell's cat on its --fd.
        let dir = std::env::temp_dir().join(format!("vmdesk-fake-passt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("passt");
        std::fs::write(
            &p,
            "#!/bin/bash\nwhile [ \"$1\" != --fd ]; do shift; done\nexec cat <&$2 >&$2\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn wait_for(mut what: impl FnMut() -> bool) {
        for _ in 0..200 {
            if what() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("timed out");
    }

    #[test]
    fn frames_come_back_and_wait_for_room_and_the_link_drops_when_the_backend_dies() {
        let net = Network::start_with(&NetMode::User, MacAddr::DEFAULT, &[], || Ok(fake_passt()))
            .unwrap()
            .unwrap();
        let card = Arc::new(Mutex::new(Card {
            got: Vec::new(),
            room: 1,
            link: Vec::new(),
        }));
        net.attach(card.clone(), Arc::default());
        assert_eq!(card.lock().unwrap().link, [true]);
        let mut tx = net.backend().unwrap();
        tx.send(b"first").unwrap();
        tx.send(b"second").unwrap();
        wait_for(|| card.lock().unwrap().got.len() == 1);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            card.lock().unwrap().got.len(),
            1,
            "the second waits for room"
        );
        card.lock().unwrap().room = 5;
        net.rx_space.write(1).unwrap();
        wait_for(|| card.lock().unwrap().got.len() == 2);
        assert_eq!(card.lock().unwrap().got[1], b"second");

        let pid = net.child.lock().unwrap().as_ref().unwrap().id();
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        wait_for(|| !net.link_up());
        assert_eq!(card.lock().unwrap().link, [true, false]);
        assert_eq!(net.status()["link"], "down");
    }

    /// While the VM is paused no frame reaches the card (guest memory holds still); they
    /// come after resume, and a network dropped while paused still ends.
    #[test]
    fn no_frame_reaches_the_card_while_the_vm_is_paused() {
        let net = Network::start_with(&NetMode::User, MacAddr::DEFAULT, &[], || Ok(fake_passt()))
            .unwrap()
            .unwrap();
        let card = Arc::new(Mutex::new(Card {
            got: Vec::new(),
            room: 5,
            link: Vec::new(),
        }));
        let gate = Arc::new(DeviceGate::default());
        net.attach(card.clone(), gate.clone());
        gate.pause();
        let mut tx = net.backend().unwrap();
        tx.send(b"while paused").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(card.lock().unwrap().got.is_empty(), "a frame while paused");
        gate.resume();
        wait_for(|| card.lock().unwrap().got.len() == 1);
        gate.pause();
        tx.send(b"held").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        drop(net);
    }

    #[test]
    fn forwards_need_nat_and_may_not_repeat() {
        let f: Forward = "tcp::2222-:22".parse().unwrap();
        let e = Network::start(&NetMode::None, MacAddr::DEFAULT, &[f])
            .err()
            .unwrap();
        assert!(matches!(e, NetworkError::ForwardWithoutNat(_)), "{e}");
        let e = Network::start_with(&NetMode::User, MacAddr::DEFAULT, &[f, f], || {
            Ok(fake_passt())
        })
        .err()
        .unwrap();
        assert!(matches!(e, NetworkError::DuplicateForward(_)), "{e}");
        assert!(
            Network::start(&NetMode::None, MacAddr::DEFAULT, &[])
                .unwrap()
                .is_none()
        );
    }

    /// passt itself, as installed (resources/scripts/install-deps.sh installs it).
    #[test]
    fn a_real_passt_binds_the_forwards_and_goes_with_the_network() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let f: Forward = format!("tcp::{port}-:22").parse().unwrap();
        let net = Network::start(&NetMode::User, MacAddr::DEFAULT, &[f])
            .expect("passt starts (install it: resources/scripts/install-deps.sh test)")
            .unwrap();
        let pid = net.status()["passt_pid"].as_u64().expect("a passt runs");
        let e = passt::check_forwards(&[f]).unwrap_err().to_string();
        assert!(e.contains("already in use"), "passt holds the forward: {e}");
        drop(net);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "passt is gone with the network"
        );
        passt::check_forwards(&[f]).unwrap();
    }
}
