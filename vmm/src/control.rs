//! The control socket (`--control PATH`): a Unix socket speaking JSON lines, one request
//! per line and one reply per line, shaped like QMP so it reads familiar:
//! `{"execute":"status"}` → `{"return":{"status":"running"}}`, errors as
//! `{"error":{"class":"…","desc":"…"}}`. The app and the CLI drive a VM only through this
//! socket and the VNC port.
//!
//! Connection threads parse requests and hand them to the run loop, which owns the
//! machine and answers; a client that sends garbage gets an error reply, a line longer
//! than [`MAX_LINE`] closes its connection, and neither affects the VM.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use display::keymap::{self, ChordKey};
use serde::Deserialize;
use serde_json::{Value, json};
use thiserror::Error;

/// Longest request line we read.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "execute", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Command {
    Status,
    Eject,
    ChangeMedia {
        path: PathBuf,
    },
    Powerdown,
    Quit,
    Reset,
    Pause,
    Resume,
    Screendump {
        path: PathBuf,
    },
    /// Each vCPU's registers and run state, taken while they are briefly held still.
    QueryVcpus,
    SendKey(SendKeys),
}

/// `send-key`'s default time a chord is held down, as QMP's `send-key`.
pub const DEFAULT_HOLD_TIME_MS: u64 = 100;
/// The longest `hold-time` taken.
pub const MAX_HOLD_TIME_MS: u64 = 10_000;

/// `{"execute":"send-key","keys":["ctrl-alt-Delete","Return"],"hold-time":100}`: each
/// element of `keys` is one chord of X keysym names joined by '-' (see
/// [`display::keymap::parse_chord`]), pressed in order, held for `hold-time` ms (optional,
/// [`DEFAULT_HOLD_TIME_MS`]), released in reverse; the next chord follows as long after.
/// Checked whole when the request is read: one unknown key and nothing is sent.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SendKeyArgs")]
pub struct SendKeys {
    pub chords: Vec<Vec<ChordKey>>,
    pub hold: Duration,
}

/// `send-key`'s arguments as they come on the wire.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct SendKeyArgs {
    keys: Vec<String>,
    hold_time: Option<u64>,
}

impl TryFrom<SendKeyArgs> for SendKeys {
    type Error = String;

    fn try_from(a: SendKeyArgs) -> Result<SendKeys, String> {
        let hold = a.hold_time.unwrap_or(DEFAULT_HOLD_TIME_MS);
        if hold > MAX_HOLD_TIME_MS {
            return Err(format!(
                "hold-time {hold} ms: at most {MAX_HOLD_TIME_MS} ms"
            ));
        }
        let chords = keymap::parse_chords(&a.keys).map_err(|e| e.to_string())?;
        Ok(SendKeys {
            chords,
            hold: Duration::from_millis(hold),
        })
    }
}

/// One request waiting for the run loop's answer.
pub struct Request {
    pub command: Command,
    reply: Sender<Value>,
    written: Receiver<()>,
}

impl Request {
    pub fn answer(&self, value: Value) {
        let _ = self.reply.send(value);
    }

    /// Answers and waits (briefly) until the reply is on the socket: for requests after
    /// which the process ends (`quit`).
    pub fn answer_and_wait(&self, value: Value) {
        self.answer(value);
        let _ = self.written.recv_timeout(Duration::from_secs(1));
    }
}

pub fn ok(value: Value) -> Value {
    json!({ "return": value })
}

pub fn error(class: &str, desc: impl std::fmt::Display) -> Value {
    json!({ "error": { "class": class, "desc": desc.to_string() } })
}

/// Parses one request line; the error is the reply to send.
pub fn parse(line: &str) -> Result<Command, Value> {
    let v: Value = serde_json::from_str(line)
        .map_err(|e| error("GenericError", format!("invalid JSON: {e}")))?;
    let name = v.get("execute").and_then(Value::as_str).map(str::to_string);
    match (serde_json::from_value::<Command>(v), name) {
        (Ok(c), _) => Ok(c),
        (Err(_), None) => Err(error("GenericError", "a request needs \"execute\"")),
        (Err(e), Some(name)) => {
            const KNOWN: &[&str] = &[
                "status",
                "eject",
                "change-media",
                "powerdown",
                "quit",
                "reset",
                "pause",
                "resume",
                "screendump",
                "send-key",
            ];
            if KNOWN.contains(&name.as_str()) {
                Err(error("GenericError", format!("{name}: {e}")))
            } else {
                Err(error(
                    "CommandNotFound",
                    format!("unknown command '{name}'"),
                ))
            }
        }
    }
}

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("control socket {0} is in use by another running VM")]
    InUse(PathBuf),
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why [`bind_unix`] could not bind.
#[derive(Debug)]
pub enum BindError {
    /// A live process listens there.
    InUse,
    Io(std::io::Error),
}

/// Binds a Unix socket at `path`, taking the place of one a VMM that died left behind
/// (nothing answers on it); one that answers belongs to a running VM and is left alone.
pub fn bind_unix(path: &Path) -> Result<UnixListener, BindError> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse);
        }
        std::fs::remove_file(path).map_err(BindError::Io)?;
    }
    UnixListener::bind(path).map_err(BindError::Io)
}

/// The listening socket; removes its file when dropped.
pub struct ControlServer {
    path: PathBuf,
    closing: Arc<AtomicBool>,
}

impl ControlServer {
    /// Binds `path` and serves it on background threads, sending requests to `requests`.
    pub fn start(path: &Path, requests: Sender<Request>) -> Result<ControlServer, ControlError> {
        let io = |source| ControlError::Io {
            path: path.to_path_buf(),
            source,
        };
        let listener = bind_unix(path).map_err(|e| match e {
            BindError::InUse => ControlError::InUse(path.to_path_buf()),
            BindError::Io(e) => io(e),
        })?;
        let closing = Arc::new(AtomicBool::new(false));
        let stop = closing.clone();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    match conn {
                        Ok(stream) => {
                            let requests = requests.clone();
                            let _ = std::thread::Builder::new()
                                .name("control-client".into())
                                .spawn(move || serve(stream, requests));
                        }
                        Err(e) => tracing::warn!("control socket accept: {e}"),
                    }
                }
            })
            .map_err(io)?;
        Ok(ControlServer {
            path: path.to_path_buf(),
            closing,
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::Release);
        // Wake the accept loop so it sees `closing`, then take the file away.
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(stream: UnixStream, requests: Sender<Request>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream.take(u64::MAX));
    let mut line = String::new();
    loop {
        line.clear();
        // Bounded read: a client cannot make us buffer more than MAX_LINE.
        let n = match reader
            .by_ref()
            .take(MAX_LINE as u64 + 1)
            .read_line(&mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if n > MAX_LINE && !line.ends_with('\n') {
            let _ = writeln!(out, "{}", error("GenericError", "request line too long"));
            tracing::warn!("control client sent a line over {MAX_LINE} bytes: closing it");
            return;
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let (reply, written) = match parse(text) {
            Ok(command) => ask(&requests, command),
            Err(e) => (e, None),
        };
        let ok = writeln!(out, "{reply}").is_ok();
        if let Some(w) = written {
            let _ = w.send(());
        }
        if !ok {
            return;
        }
    }
}

fn ask(requests: &Sender<Request>, command: Command) -> (Value, Option<Sender<()>>) {
    let gone = || error("GenericError", "the VM is shutting down");
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (written_tx, written) = crossbeam_channel::bounded(1);
    if requests
        .send(Request {
            command,
            reply: tx,
            written,
        })
        .is_err()
    {
        return (gone(), None);
    }
    (rx.recv().unwrap_or_else(|_| gone()), Some(written_tx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        assert_eq!(parse(r#"{"execute":"status"}"#), Ok(Command::Status));
        assert_eq!(
            parse(r#"{"execute":"change-media","path":"x.iso"}"#),
            Ok(Command::ChangeMedia {
                path: "x.iso".into()
            })
        );
        assert_eq!(
            parse(r#"{"execute":"screendump","path":"o.png"}"#),
            Ok(Command::Screendump {
                path: "o.png".into()
            })
        );
        for c in [
            "eject",
            "powerdown",
            "quit",
            "reset",
            "pause",
            "resume",
            "query-vcpus",
        ] {
            assert!(parse(&format!(r#"{{"execute":"{c}"}}"#)).is_ok(), "{c}");
        }
    }

    #[test]
    fn send_key_takes_chords_of_key_names() {
        let c = parse(r#"{"execute":"send-key","keys":["ctrl-alt-Delete","Return","A"]}"#);
        let codes = |c: &Command| match c {
            Command::SendKey(k) => k
                .chords
                .iter()
                .map(|ch| ch.iter().map(|k| k.code).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
            _ => panic!("{c:?}"),
        };
        let c = c.unwrap();
        assert_eq!(
            codes(&c),
            [vec![0x1d, 0x38, 0xe053], vec![0x1c], vec![0x2a, 0x1e]]
        );
        assert!(matches!(&c, Command::SendKey(k) if k.hold == Duration::from_millis(100)));
        let c = parse(r#"{"execute":"send-key","keys":["a"],"hold-time":0}"#).unwrap();
        assert!(matches!(&c, Command::SendKey(k) if k.hold.is_zero()));

        let desc = |line: &str| {
            let e = parse(line).unwrap_err();
            assert_eq!(e["error"]["class"], "GenericError", "{e}");
            e["error"]["desc"].as_str().unwrap().to_string()
        };
        let d = desc(r#"{"execute":"send-key","keys":["Return","ctrl-Retrun"]}"#);
        assert!(
            d.starts_with(
                "send-key: unknown key 'Retrun' in 'ctrl-Retrun': key names are X keysyms"
            ),
            "{d}"
        );
        assert!(desc(r#"{"execute":"send-key","keys":[]}"#).contains("no keys"));
        assert!(desc(r#"{"execute":"send-key"}"#).contains("keys"));
        assert!(desc(r#"{"execute":"send-key","keys":"a"}"#).contains("sequence"));
        assert!(
            desc(r#"{"execute":"send-key","keys":["a"],"hold-time":10001}"#).contains("at most")
        );
        assert!(desc(r#"{"execute":"send-key","keys":["a"],"hold":1}"#).contains("hold"));
    }

    #[test]
    fn errors_are_json_with_a_class() {
        let e = parse("{not json").unwrap_err();
        assert_eq!(e["error"]["class"], "GenericError");
        let e = parse(r#"{"execute":"fly"}"#).unwrap_err();
        assert_eq!(e["error"]["class"], "CommandNotFound");
        let e = parse(r#"{"execute":"change-media"}"#).unwrap_err();
        assert!(e["error"]["desc"].as_str().unwrap().contains("path"), "{e}");
        let e = parse(r#"{"x":1}"#).unwrap_err();
        assert!(e["error"]["desc"].as_str().unwrap().contains("execute"));
    }

    #[test]
    fn socket_round_trip_and_stale_socket() {
        let dir = std::env::temp_dir().join(format!("vmdesk-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vm.sock");
        // A stale file from a dead VMM is replaced.
        drop(UnixListener::bind(&path).unwrap());
        let (tx, rx) = crossbeam_channel::unbounded::<Request>();
        let server = ControlServer::start(&path, tx.clone()).unwrap();
        assert!(matches!(
            ControlServer::start(&path, tx),
            Err(ControlError::InUse(_))
        ));
        std::thread::spawn(move || {
            for r in rx {
                r.answer(ok(json!({ "status": "running" })));
            }
        });
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(b"{\"execute\":\"status\"}\n{bad\n").unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&l).unwrap()["return"]["status"],
            "running"
        );
        l.clear();
        r.read_line(&mut l).unwrap();
        assert!(l.contains("GenericError"), "{l}");
        // An endless line is cut off without the server buffering it all.
        let big = vec![b'x'; MAX_LINE + 10];
        s.write_all(&big).unwrap();
        l.clear();
        r.read_line(&mut l).unwrap();
        assert!(l.contains("too long"), "{l}");
        drop(server);
        assert!(!path.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
