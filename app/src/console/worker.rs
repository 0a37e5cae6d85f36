//! The console's connection thread: runs vnc-rs against the VM's VNC port, applies the
//! server's rectangles to the shared framebuffer, keeps an update request outstanding,
//! forwards the window's input, speaks the Extended Clipboard when the server offers it,
//! and reconnects (or asks for a password) when a connection ends.

use super::*;

use display::rfb::clipboard::{self, ExtClipboard};
use server_stream::{MAX_CUT, ServerCut};

/// One connection's clipboard state.
#[derive(Default)]
struct Clip {
    /// The server's Extended Clipboard capabilities, once it announced them: its flags
    /// (formats and actions) and the largest text it takes.
    server: Option<(u32, Option<u32>)>,
    /// The host text last offered to the guest.
    ours: Option<String>,
}

/// The connection thread's state.
pub(super) struct Worker {
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) target: Target,
    pub(super) password_file: Option<PathBuf>,
    pub(super) repaint: super::Repaint,
}

/// How one connection ended.
enum End {
    /// The window closed the console.
    Closed,
    /// The connection failed or dropped: try again.
    Dropped(String),
    /// The server wants a password: ask (with this reason).
    NeedPassword(String),
}

impl Worker {
    fn set(&self, f: impl FnOnce(&mut Shared)) {
        f(&mut lock(&self.shared));
        self.repaint.request();
    }

    pub(super) async fn run(self, mut cmds: UnboundedReceiver<Cmd>) {
        let mut password = match &self.password_file {
            Some(p) => match std::fs::read_to_string(p) {
                Ok(s) => Some(s.lines().next().unwrap_or_default().to_string()),
                Err(e) => {
                    tracing::warn!("console: cannot read {}: {e}", p.display());
                    None
                }
            },
            None => None,
        };
        let mut was_connected = false;
        loop {
            if lock(&self.shared).closed {
                return;
            }
            let Some(addr) = (self.target)() else {
                self.set(|s| {
                    s.connected = false;
                    s.status = "the VM is not running".into();
                });
                if self.wait(&mut cmds, &mut password, false).await {
                    return;
                }
                continue;
            };
            match self.session(addr, &mut password, &mut cmds).await {
                End::Closed => return,
                End::NeedPassword(why) => {
                    self.set(|s| {
                        s.connected = false;
                        s.need_password = Some(why);
                        s.status = "waiting for the password".into();
                    });
                    if self.wait(&mut cmds, &mut password, true).await {
                        return;
                    }
                }
                End::Dropped(why) => {
                    was_connected |= lock(&self.shared).rects > 0;
                    tracing::debug!("console {addr}: {why}");
                    self.set(|s| {
                        s.connected = false;
                        s.status = if was_connected {
                            "Disconnected — reconnecting…".into()
                        } else {
                            format!("VNC {addr}: {why} — retrying")
                        };
                    });
                    if self.wait(&mut cmds, &mut password, false).await {
                        return;
                    }
                }
            }
        }
    }

    /// Waits a retry interval (or, with `for_password`, until a password comes); input
    /// meanwhile is dropped. True when the console closed.
    async fn wait(
        &self,
        cmds: &mut UnboundedReceiver<Cmd>,
        password: &mut Option<String>,
        for_password: bool,
    ) -> bool {
        let until = tokio::time::Instant::now() + RECONNECT_EVERY;
        loop {
            tokio::select! {
                c = cmds.recv() => match c {
                    None | Some(Cmd::Close) => return true,
                    Some(Cmd::Password(p)) => {
                        *password = Some(p);
                        if for_password {
                            return false;
                        }
                    }
                    Some(_) => {}
                },
                _ = tokio::time::sleep_until(until), if !for_password => return false,
            }
        }
    }

    async fn session(
        &self,
        addr: SocketAddr,
        password: &mut Option<String>,
        cmds: &mut UnboundedReceiver<Cmd>,
    ) -> End {
        let tcp = match tokio::net::TcpStream::connect(addr).await {
            Ok(t) => t,
            Err(e) => return End::Dropped(e.to_string()),
        };
        // Key presses are a few bytes each: send them at once.
        let _ = tcp.set_nodelay(true);
        let (stream, inj, mut cuts) = InjectStream::new(tcp);
        let asked = Arc::new(AtomicBool::new(false));
        let auth = {
            let asked = asked.clone();
            let pw = password.clone();
            async move {
                asked.store(true, Ordering::SeqCst);
                pw.ok_or(vnc::VncError::NoPassword)
            }
        };
        let started = async {
            vnc::VncConnector::new(stream)
                .set_auth_method(auth)
                .add_encoding(vnc::VncEncoding::CopyRect)
                .add_encoding(vnc::VncEncoding::Raw)
                .add_encoding(vnc::VncEncoding::DesktopSizePseudo)
                .allow_shared(true)
                .set_pixel_format(wire_format())
                .build()?
                .try_start()
                .await?
                .finish()
        }
        .await;
        let vnc = match started {
            Ok(v) => v,
            Err(vnc::VncError::NoPassword) => return End::NeedPassword(String::new()),
            Err(e) if asked.load(Ordering::SeqCst) => {
                // The server checked the password we gave and said no.
                *password = None;
                return End::NeedPassword(format!("Wrong password ({e}); try again"));
            }
            Err(e) => return End::Dropped(e.to_string()),
        };
        self.set(|s| {
            s.connected = true;
            s.status = "connected".into();
        });
        let end = self.serve(&vnc, &inj, &mut cuts, cmds).await;
        let _ = vnc.close().await;
        lock(&self.shared).ext_clipboard = false;
        end
    }

    /// The connected loop: frames in, input out, typing paced.
    async fn serve(
        &self,
        vnc: &vnc::VncClient,
        inj: &Injector,
        cuts: &mut UnboundedReceiver<ServerCut>,
        cmds: &mut UnboundedReceiver<Cmd>,
    ) -> End {
        let mut clip = Clip::default();
        let mut typing: VecDeque<Stroke> = VecDeque::new();
        let mut next_stroke = tokio::time::Instant::now();
        let mut last_request = Instant::now();
        let mut last_frame: Option<Instant> = None;
        // A safety net: one request a second in case one went missing.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut pump = tokio::time::interval(PUMP_EVERY);
        pump.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let active = last_frame.is_some_and(|t| t.elapsed() < ACTIVE_FOR);
            tokio::select! {
                ev = vnc.recv_event() => {
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(e) => return End::Dropped(e.to_string()),
                    };
                    let frame = match self.apply(ev) {
                        Ok(frame) => frame,
                        Err(e) => return End::Dropped(e),
                    };
                    if frame {
                        last_frame = Some(Instant::now());
                    }
                    if frame && last_request.elapsed() >= REQUEST_SPACING {
                        last_request = Instant::now();
                        if let Err(e) = vnc.input(vnc::X11Event::Refresh).await {
                            return End::Dropped(e.to_string());
                        }
                    }
                }
                Some(cut) = cuts.recv() => {
                    if let Err(e) = self.server_cut(inj, &mut clip, cut) {
                        return End::Dropped(e.to_string());
                    }
                }
                c = cmds.recv() => {
                    let sent = match c {
                        None | Some(Cmd::Close) => return End::Closed,
                        Some(Cmd::Key { keysym, down, code }) => inj.key(keysym, down, code),
                        Some(Cmd::Pointer(x, y, b)) => inj.pointer(x, y, b),
                        Some(Cmd::CutText(t)) => self.send_cut(inj, &mut clip, t),
                        Some(Cmd::Type(s)) => {
                            typing.extend(s);
                            Ok(())
                        }
                        Some(Cmd::Password(_)) => Ok(()),
                    };
                    if let Err(e) = sent {
                        return End::Dropped(e.to_string());
                    }
                }
                _ = tokio::time::sleep_until(next_stroke), if !typing.is_empty() => {
                    if let Some(s) = typing.pop_front()
                        && let Err(e) = inj.key(s.keysym, s.down, Some(s.code))
                    {
                        return End::Dropped(e.to_string());
                    }
                    next_stroke = tokio::time::Instant::now() + TYPE_INTERVAL;
                }
                _ = pump.tick(), if active => {
                    if last_request.elapsed() >= REQUEST_SPACING {
                        last_request = Instant::now();
                        if let Err(e) = vnc.input(vnc::X11Event::Refresh).await {
                            return End::Dropped(e.to_string());
                        }
                    }
                }
                _ = tick.tick() => {
                    if lock(&self.shared).closed {
                        return End::Closed;
                    }
                    last_request = Instant::now();
                    if let Err(e) = vnc.input(vnc::X11Event::Refresh).await {
                        return End::Dropped(e.to_string());
                    }
                }
            }
        }
    }

    /// The host's clipboard for the guest: through the Extended Clipboard when the server
    /// has it (the text itself when it fits the server's cap, else a notification that it
    /// asks for), else as Latin-1 cut text.
    fn send_cut(&self, inj: &Injector, clip: &mut Clip, text: String) -> std::io::Result<()> {
        let sent = match clip.server {
            Some((flags, Some(max))) if flags & clipboard::TEXT != 0 => {
                if flags & clipboard::PROVIDE != 0 && text.len() < max as usize {
                    inj.ext_clipboard(clipboard::provide(&text, max as usize))
                } else {
                    inj.ext_clipboard(clipboard::notify())
                }
            }
            _ => inj.cut_text(&text),
        };
        clip.ours = Some(text);
        sent
    }

    /// A cut text the framer took out of the server's stream.
    fn server_cut(&self, inj: &Injector, clip: &mut Clip, cut: ServerCut) -> std::io::Result<()> {
        let (flags, payload) = match cut {
            ServerCut::Text(t) => {
                self.set(|s| s.server_cut = Some(t));
                return Ok(());
            }
            ServerCut::Extended { flags, payload } => (flags, payload),
        };
        let m = clipboard::parse(flags, &payload, MAX_CUT);
        if clip.server.is_none() && !matches!(m, ExtClipboard::Caps { .. }) {
            // rfbproto: Caps come first; anything before them is not for us.
            tracing::debug!("console: extended clipboard message before caps: {m:?}");
            return Ok(());
        }
        match m {
            ExtClipboard::Caps { text_max, .. } => {
                clip.server = Some((flags, text_max));
                self.set(|s| s.ext_clipboard = true);
                inj.ext_clipboard(clipboard::caps(MAX_CUT as u32))?;
                // Text offered before the caps came went as Latin-1: offer it whole now.
                if clip
                    .ours
                    .as_deref()
                    .is_some_and(|t| t.chars().any(|c| u32::from(c) > 0xff))
                {
                    inj.ext_clipboard(clipboard::notify())?;
                }
            }
            ExtClipboard::Notify { formats } if formats & clipboard::TEXT != 0 => {
                inj.ext_clipboard(clipboard::request())?;
            }
            ExtClipboard::Provide { text: Some(t) } => self.set(|s| s.server_cut = Some(t)),
            ExtClipboard::Request { formats } if formats & clipboard::TEXT != 0 => {
                let max = clip
                    .server
                    .and_then(|(_, m)| m)
                    .map_or(MAX_CUT, |m| (m as usize).min(MAX_CUT));
                match &clip.ours {
                    Some(t) => inj.ext_clipboard(clipboard::provide(t, max))?,
                    // Nothing to give: an empty notify says so.
                    None => inj.ext_clipboard((clipboard::NOTIFY, Vec::new()))?,
                }
            }
            ExtClipboard::Peek => match &clip.ours {
                Some(_) => inj.ext_clipboard(clipboard::notify())?,
                None => inj.ext_clipboard((clipboard::NOTIFY, Vec::new()))?,
            },
            other => tracing::debug!("console: extended clipboard message ignored: {other:?}"),
        }
        Ok(())
    }

    /// Applies one vnc-rs event; true if it changed the framebuffer.
    fn apply(&self, ev: vnc::VncEvent) -> Result<bool, String> {
        let mut sh = lock(&self.shared);
        let frame = match ev {
            vnc::VncEvent::SetResolution(s) => {
                sh.resize(usize::from(s.width), usize::from(s.height));
                true
            }
            vnc::VncEvent::RawImage(r, data) => {
                sh.rects += 1;
                sh.put(
                    (
                        usize::from(r.x),
                        usize::from(r.y),
                        usize::from(r.width),
                        usize::from(r.height),
                    ),
                    &data,
                );
                true
            }
            vnc::VncEvent::Copy(dst, src) => {
                sh.rects += 1;
                sh.copy(
                    (usize::from(dst.x), usize::from(dst.y)),
                    (
                        usize::from(src.x),
                        usize::from(src.y),
                        usize::from(dst.width),
                        usize::from(dst.height),
                    ),
                );
                true
            }
            // Only when the framer gave up on the stream (it takes cut text out otherwise).
            vnc::VncEvent::Text(t) => {
                sh.server_cut = Some(t);
                false
            }
            vnc::VncEvent::Error(e) => return Err(e.to_string()),
            _ => false,
        };
        drop(sh);
        self.repaint.request();
        Ok(frame)
    }
}
