//! The console's connection thread: runs vnc-rs against the VM's VNC port, applies the
//! server's rectangles to the shared framebuffer, keeps an update request outstanding,
//! forwards the window's input, and reconnects (or asks for a password) when a connection
//! ends.

use super::*;

/// The connection thread's state.
pub(super) struct Worker {
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) target: Target,
    pub(super) password_file: Option<PathBuf>,
    pub(super) ctx: egui::Context,
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
        self.ctx.request_repaint();
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
        let (stream, inj) = InjectStream::new(tcp);
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
        let end = self.serve(&vnc, &inj, cmds).await;
        let _ = vnc.close().await;
        end
    }

    /// The connected loop: frames in, input out, typing paced.
    async fn serve(
        &self,
        vnc: &vnc::VncClient,
        inj: &Injector,
        cmds: &mut UnboundedReceiver<Cmd>,
    ) -> End {
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
                c = cmds.recv() => {
                    let sent = match c {
                        None | Some(Cmd::Close) => return End::Closed,
                        Some(Cmd::Key { keysym, down, code }) => inj.key(keysym, down, code),
                        Some(Cmd::Pointer(x, y, b)) => inj.pointer(x, y, b),
                        Some(Cmd::CutText(t)) => inj.cut_text(&t),
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
            vnc::VncEvent::Text(t) => {
                sh.server_cut = Some(t);
                false
            }
            vnc::VncEvent::Error(e) => return Err(e.to_string()),
            _ => false,
        };
        drop(sh);
        self.ctx.request_repaint();
        Ok(frame)
    }
}
