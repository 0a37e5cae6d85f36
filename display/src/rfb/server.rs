//! The VNC listener: accepts clients on ADDR:5900+N and runs one session (two threads)
//! per client. Threads rather than an event loop: a VM has a handful of viewers at most,
//! and blocking code keeps each session's flow readable.
//!
//! Safety rails: the default address is loopback; a non-loopback address without a
//! password is refused unless `allow_insecure` is set. A client asking for exclusive
//! access (shared flag 0) disconnects the others, as RFC 6143 suggests.
//!
//! The same port speaks RFB over WebSocket to browsers (noVNC): a client whose first bytes
//! arrive within [`DEFAULT_WEBSOCKET_WAIT`] of connecting and begin "GET " is upgraded
//! (`websocket.rs`); every other client gets plain RFB as before, after that wait.

use std::io::{self, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use thiserror::Error;
use tracing::{debug, info, warn};

use super::auth::Password;
use super::input::InputSink;
use super::protocol::Limits;
use super::session::{self, SessionEnv, SessionHandle, Transport};
use super::websocket::{self, FrameReader, FrameWriter};
use crate::surface::Surface;

/// Port of display 0.
pub const BASE_PORT: u16 = 5900;
/// Displays tried by [`first_free_display`].
pub const MAX_AUTO_DISPLAY: u16 = 99;
/// How long a new connection is watched for a WebSocket client's HTTP request before it is
/// taken for a plain RFB client, which waits for the server to speak first: what every
/// plain client's connect costs (about 50 ms more, `examples/vnc_connect_time.rs`). A
/// browser writes its request as soon as its TCP connect completes, so the request follows
/// the handshake's last packet at once; the margin is for a browser process that is slow to
/// be scheduled. Measured with noVNC 1.7 in headless Chromium 156 at nice 19 on the 2-core
/// dev machine at a load average of 2 to 3: the request was there 4 µs to 6.9 ms after the
/// accept (24 connects, median 44 µs), so 50 ms leaves a margin of seven over the worst
/// seen. libvncserver waits 100 ms; half that halves the cost to plain clients. A request
/// that comes later meets our RFB greeting, fails, and the log line says why
/// (`SessionError::LateHttp`).
pub const DEFAULT_WEBSOCKET_WAIT: Duration = Duration::from_millis(50);

#[derive(Debug, Error)]
pub enum VncError {
    #[error("port {port} in use ({addr}); choose another display")]
    PortInUse { addr: SocketAddr, port: u16 },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error(
        "refusing to listen on non-loopback address {0} without a password \
         (set a password file, or allow_insecure)"
    )]
    InsecureListen(SocketAddr),
    #[error("bad VNC listen address {0:?}: expected HOST:DISPLAY, e.g. 127.0.0.1:1")]
    BadListen(String),
    #[error("no free VNC display between :0 and :{MAX_AUTO_DISPLAY} on {0}")]
    NoFreeDisplay(IpAddr),
    #[error("cannot read password file {path}: {source}")]
    PasswordFile { path: String, source: io::Error },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The TCP port of display `n` (5900 + n), if it fits.
pub fn display_port(n: u16) -> Option<u16> {
    BASE_PORT.checked_add(n)
}

/// Parses `HOST:DISPLAY` (as `-vnc` does: `127.0.0.1:1` is port 5901; `:1` means
/// loopback; `[::1]:2` works for IPv6).
pub fn parse_listen(s: &str) -> Result<SocketAddr, VncError> {
    let bad = || VncError::BadListen(s.to_owned());
    let (host, disp) = s.rsplit_once(':').ok_or_else(bad)?;
    let n: u16 = disp.parse().map_err(|_| bad())?;
    let port = display_port(n).ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = if host.is_empty() || host == "localhost" {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse().map_err(|_| bad())?
    };
    Ok(SocketAddr::new(ip, port))
}

/// The first display N (from 0) whose port is free on `ip`, for "auto".
pub fn first_free_display(ip: IpAddr) -> Result<u16, VncError> {
    for n in 0..=MAX_AUTO_DISPLAY {
        let Some(port) = display_port(n) else { break };
        if TcpListener::bind(SocketAddr::new(ip, port)).is_ok() {
            return Ok(n);
        }
    }
    Err(VncError::NoFreeDisplay(ip))
}

/// How the server listens and treats clients.
#[derive(Clone, Debug)]
pub struct VncConfig {
    /// Where to listen (port 0 picks a free port; tests use that).
    pub listen: SocketAddr,
    /// VNC Authentication password; `None` means security type None.
    pub password: Option<Password>,
    /// Allow a non-loopback listen address without a password.
    pub allow_insecure: bool,
    /// Desktop name sent in ServerInit.
    pub name: String,
    /// Most framebuffer updates per second per client.
    pub max_fps: u32,
    /// Most connections at once (each costs two threads and a shadow frame); more are
    /// closed at once.
    pub max_clients: usize,
    pub limits: Limits,
    /// For the handshake and for the body of a message once it has begun.
    pub read_timeout: Duration,
    /// A client that does not take our bytes for this long is dropped.
    pub write_timeout: Duration,
    /// How long to wait for a WebSocket client's request on a new connection
    /// ([`DEFAULT_WEBSOCKET_WAIT`]); `None` serves plain RFB only, with no wait.
    pub websocket_wait: Option<Duration>,
}

impl VncConfig {
    pub fn new(listen: SocketAddr) -> Self {
        VncConfig {
            listen,
            password: None,
            allow_insecure: false,
            name: "vmdesk".into(),
            max_fps: 60,
            max_clients: 16,
            limits: Limits::default(),
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(20),
            websocket_wait: Some(DEFAULT_WEBSOCKET_WAIT),
        }
    }

    /// Sets the password from the first line of `path`.
    pub fn with_password_file(mut self, path: &Path) -> Result<Self, VncError> {
        self.password =
            Some(
                Password::from_file(path).map_err(|source| VncError::PasswordFile {
                    path: path.display().to_string(),
                    source,
                })?,
            );
        Ok(self)
    }
}

struct Client {
    id: u64,
    handle: SessionHandle,
}

struct Shared {
    env: Arc<SessionEnv>,
    websocket_wait: Option<Duration>,
    max_clients: usize,
    clients: Mutex<Vec<Client>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stop: AtomicBool,
    next_id: AtomicU64,
    /// The text last offered with [`VncServer::set_clipboard`], for clients that come later.
    clipboard: Mutex<Option<String>>,
}

impl Shared {
    fn clients(&self) -> MutexGuard<'_, Vec<Client>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running VNC server. Dropping it shuts it down.
pub struct VncServer {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for VncServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VncServer")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl VncServer {
    /// Binds and starts accepting clients.
    pub fn start(
        config: VncConfig,
        surface: Arc<Surface>,
        input: Arc<dyn InputSink>,
    ) -> Result<VncServer, VncError> {
        if !config.listen.ip().is_loopback() && config.password.is_none() && !config.allow_insecure
        {
            return Err(VncError::InsecureListen(config.listen));
        }
        let listener = TcpListener::bind(config.listen).map_err(|source| {
            if source.kind() == io::ErrorKind::AddrInUse {
                VncError::PortInUse {
                    addr: config.listen,
                    port: config.listen.port(),
                }
            } else {
                VncError::Bind {
                    addr: config.listen,
                    source,
                }
            }
        })?;
        let local_addr = listener.local_addr()?;
        let env = Arc::new(SessionEnv {
            surface,
            input,
            password: config.password.clone(),
            name: config.name.clone(),
            limits: config.limits,
            min_interval: Duration::from_secs(1) / config.max_fps.max(1),
            handshake_timeout: config.read_timeout,
            write_timeout: config.write_timeout,
        });
        let shared = Arc::new(Shared {
            env,
            websocket_wait: config.websocket_wait,
            max_clients: config.max_clients.max(1),
            clients: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            clipboard: Mutex::new(None),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("vnc-accept".into())
                .spawn(move || accept_loop(listener, shared))?
        };
        info!(
            "vnc: listening on {local_addr}{}",
            if config.password.is_some() {
                " (VNC authentication)"
            } else {
                ""
            }
        );
        Ok(VncServer {
            shared,
            local_addr,
            acceptor: Some(acceptor),
        })
    }

    /// Starts on the first free display from :0 on `config.listen`'s address (its port is
    /// ignored), binding directly so no other process can take the port in between.
    /// Returns the server and its display number.
    pub fn start_auto(
        mut config: VncConfig,
        surface: Arc<Surface>,
        input: Arc<dyn InputSink>,
    ) -> Result<(VncServer, u16), VncError> {
        for n in 0..=MAX_AUTO_DISPLAY {
            let Some(port) = display_port(n) else { break };
            config.listen.set_port(port);
            match VncServer::start(config.clone(), Arc::clone(&surface), Arc::clone(&input)) {
                Ok(s) => return Ok((s, n)),
                Err(VncError::PortInUse { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(VncError::NoFreeDisplay(config.listen.ip()))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Clients past the handshake.
    pub fn client_count(&self) -> usize {
        self.shared.clients().len()
    }

    /// Offers `text` to every client's clipboard, and to Extended Clipboard clients that
    /// connect later (a plain client only hears of changes).
    pub fn set_clipboard(&self, text: &str) {
        let max = self.shared.env.limits.max_cut_text;
        let clients = self.shared.clients();
        *self
            .shared
            .clipboard
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(text.to_owned());
        for c in clients.iter() {
            c.handle.set_clipboard(text, max);
        }
    }

    /// Rings every client's bell.
    pub fn bell(&self) {
        for c in self.shared.clients().iter() {
            c.handle.bell();
        }
    }

    /// Stops accepting, disconnects every client and waits for their threads.
    pub fn shutdown(&mut self) {
        if self.shared.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the blocking accept() with a connection of our own.
        let mut wake = self.local_addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        for c in self.shared.clients().iter() {
            c.handle.close();
        }
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for t in threads {
            let _ = t.join();
        }
        info!("vnc: server on {} stopped", self.local_addr);
    }
}

impl Drop for VncServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                warn!("vnc: accept failed: {e}");
                // E.g. out of file descriptors: don't spin.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let _ = stream.set_nodelay(true);
        let mut threads = shared.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads.retain(|t| !t.is_finished());
        if threads.len() >= shared.max_clients {
            warn!(%peer, "vnc: refusing client: {} connections already", threads.len());
            continue;
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let sh = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name(format!("vnc-{peer}"))
            .spawn(move || client_thread(stream, sh, id, peer));
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => warn!(%peer, "vnc: cannot start a thread for client: {e}"),
        }
    }
}

fn client_thread(stream: TcpStream, shared: Arc<Shared>, id: u64, peer: SocketAddr) {
    let mut transport = match transport(stream, &shared, peer) {
        Ok(t) => t,
        Err(e) => {
            warn!(%peer, "vnc: {e}");
            return;
        }
    };
    let hs = match session::handshake(&mut transport, &shared.env, peer) {
        Ok(h) => h,
        Err(e) => {
            warn!(%peer, "vnc: handshake failed: {e}");
            return;
        }
    };
    let handle = match session::new_handle(&transport.socket, &hs.consumer) {
        Ok(h) => h,
        Err(e) => {
            warn!(%peer, "vnc: {e}");
            return;
        }
    };
    {
        let mut clients = shared.clients();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if !hs.shared {
            for c in clients.iter() {
                info!(%peer, "vnc: exclusive client: disconnecting client {}", c.id);
                c.handle.close();
            }
        }
        if let Some(text) = shared
            .clipboard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            handle.preset_clipboard(text);
        }
        clients.push(Client {
            id,
            handle: handle.clone(),
        });
    }
    session::run(
        transport,
        Arc::clone(&shared.env),
        handle,
        hs.consumer,
        peer,
    );
    shared.clients().retain(|c| c.id != id);
}

/// Tells a WebSocket client from a plain one and sets up its transport; an error is one
/// log line's worth of why the client is turned away.
fn transport(stream: TcpStream, shared: &Shared, peer: SocketAddr) -> Result<Transport, String> {
    let started = std::time::Instant::now();
    let is_get = match shared.websocket_wait {
        Some(wait) => websocket::client_began_get(&stream, wait)
            .map_err(|e| format!("connection failed before the handshake: {e}"))?,
        None => false,
    };
    debug!(
        %peer,
        "vnc: {} after {:?} of the WebSocket wait",
        if is_get { "an HTTP request" } else { "no request" },
        started.elapsed()
    );
    if !is_get {
        info!(%peer, "vnc: client connected");
        return Transport::plain(stream).map_err(|e| format!("cannot clone client socket: {e}"));
    }
    upgrade(stream, shared, peer).map_err(|e| format!("WebSocket upgrade failed: {e}"))
}

/// Answers a WebSocket client's upgrade request and puts the frame adapters on its socket.
fn upgrade(
    stream: TcpStream,
    shared: &Shared,
    peer: SocketAddr,
) -> Result<Transport, websocket::UpgradeError> {
    stream.set_read_timeout(Some(shared.env.handshake_timeout))?;
    stream.set_write_timeout(Some(shared.env.write_timeout))?;
    // The request is read through the buffer the frames are read through later, so
    // nothing the client sent after it is lost.
    let mut incoming = BufReader::new(stream.try_clone()?);
    let mut outgoing = stream.try_clone()?;
    let protocol = websocket::accept(&mut incoming, &mut outgoing, shared.env.password.is_some())?;
    info!(
        %peer,
        "vnc: client connected over WebSocket{}",
        protocol.map(|p| format!(" (subprotocol {p})")).unwrap_or_default()
    );
    let writer = FrameWriter::new(outgoing);
    Ok(Transport {
        reader: Box::new(FrameReader::new(incoming, writer.clone())),
        writer: Box::new(writer),
        socket: stream,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen("127.0.0.1:1").unwrap(),
            "127.0.0.1:5901".parse().unwrap()
        );
        assert_eq!(
            parse_listen(":3").unwrap(),
            "127.0.0.1:5903".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[::1]:2").unwrap(),
            "[::1]:5902".parse().unwrap()
        );
        assert!(parse_listen("127.0.0.1").is_err());
        assert!(parse_listen("127.0.0.1:65535").is_err());
        assert!(parse_listen("nonsense:x").is_err());
    }

    #[test]
    fn insecure_listen_is_refused() {
        let s = Surface::new(8, 8);
        let cfg = VncConfig::new("0.0.0.0:0".parse().unwrap());
        let e = VncServer::start(cfg, s, Arc::new(super::super::NullInput)).unwrap_err();
        assert!(matches!(e, VncError::InsecureListen(_)), "{e}");
    }

    #[test]
    fn auto_skips_displays_in_use() {
        let s = Surface::new(8, 8);
        let cfg = VncConfig::new("127.0.0.1:0".parse().unwrap());
        let (a, na) = VncServer::start_auto(
            cfg.clone(),
            Arc::clone(&s),
            Arc::new(super::super::NullInput),
        )
        .unwrap();
        assert_eq!(a.local_addr().port(), 5900 + na);
        assert_ne!(first_free_display(a.local_addr().ip()).unwrap(), na);
        let (b, nb) = VncServer::start_auto(cfg, s, Arc::new(super::super::NullInput)).unwrap();
        assert!(nb > na);
        assert_eq!(b.local_addr().port(), 5900 + nb);
    }

    #[test]
    fn port_in_use_is_clear() {
        let s = Surface::new(8, 8);
        let a = VncServer::start(
            VncConfig::new("127.0.0.1:0".parse().unwrap()),
            Arc::clone(&s),
            Arc::new(super::super::NullInput),
        )
        .unwrap();
        let e = VncServer::start(
            VncConfig::new(a.local_addr()),
            s,
            Arc::new(super::super::NullInput),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("port {} in use", a.local_addr().port())),
            "{e}"
        );
    }
}
