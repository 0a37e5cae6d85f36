//! The host end of the SPICE guest agent protocol, for the clipboard.
//!
//! A Linux guest's `spice-vdagentd` (and the Windows `vdagent` service) opens the
//! virtio-serial port `com.redhat.spice.0` and speaks this protocol over it; QEMU's
//! `qemu-vdagent` chardev is the same kind of peer. [`VdAgent`] is that peer as a pure
//! state machine: bytes from the guest in, bytes for the guest and the guest's clipboard
//! text out, so it is tested without a device or a VM.
//!
//! Wire format (little-endian): the port carries chunks, an 8-byte header (port, size)
//! then `size` bytes; the chunks of the client port concatenate into a stream of
//! messages, a 20-byte header (protocol 1, type, opaque, size) then `size` bytes. We send
//! each message in chunks of its own, at most [`CHUNK_DATA_MAX`] bytes, as the guest
//! agent's reader expects.
//!
//! Emulated: capability exchange, and the on-demand clipboard (grab, request, data,
//! release) for UTF-8 text on the CLIPBOARD selection, with the guest's line ends
//! (a guest announcing CRLF gets and gives CRLF; the host side is always LF).
//! Not emulated: the PRIMARY selection (every guest text selection would otherwise be
//! fetched), images, mouse state, monitor configuration, file transfer, grab serials
//! (not announced, so the guest sends none).

use tracing::debug;

/// Chunk header: port, size.
const CHUNK_HEADER: usize = 8;
/// Message header: protocol, type, opaque (u64), size.
const MESSAGE_HEADER: usize = 20;
/// What the chunks we send carry at most (QEMU's figure; the agent takes up to 2048).
pub const CHUNK_DATA_MAX: usize = 1024;
const PROTOCOL: u32 = 1;
/// Chunks for the SPICE client, which is what we are to the guest.
const CLIENT_PORT: u32 = 1;

/// Message types.
pub(crate) mod msg {
    pub const CLIPBOARD: u32 = 4;
    pub const ANNOUNCE_CAPABILITIES: u32 = 6;
    pub const CLIPBOARD_GRAB: u32 = 7;
    pub const CLIPBOARD_REQUEST: u32 = 8;
    pub const CLIPBOARD_RELEASE: u32 = 9;
}

/// Capability bits (first word).
pub(crate) mod cap {
    pub const CLIPBOARD_BY_DEMAND: u32 = 1 << 5;
    pub const CLIPBOARD_SELECTION: u32 = 1 << 6;
    pub const GUEST_LINEEND_CRLF: u32 = 1 << 9;
}

const UTF8_TEXT: u32 = 1;
const SELECTION_CLIPBOARD: u8 = 0;
/// More clipboard types in one grab than this is not a real agent (spice has six).
const GRAB_TYPES_MAX: usize = 16;

/// Where the parser is in the guest's byte stream.
#[derive(Default)]
struct Reader {
    chunk_header: Vec<u8>,
    /// Bytes left in the current chunk, and whether they are for us (client port).
    chunk_left: u32,
    chunk_ours: bool,
    message_header: Vec<u8>,
    body: Vec<u8>,
    /// Body bytes still to come for the current message.
    body_left: u32,
    /// The current message is too large to keep: its bytes are counted, not stored.
    skipping: bool,
}

/// The host's side of one guest agent, plus the clipboard text the host side offers
/// (which outlives guest connections).
pub struct VdAgent {
    max_text: usize,
    /// The guest has the port open.
    connected: bool,
    /// The guest agent's capabilities (first word), once it announced them.
    guest_caps: Option<u32>,
    reader: Reader,
    /// What the VNC clients last gave us.
    host_text: Option<String>,
    /// The guest grabbed the clipboard since the host last did.
    guest_owns: bool,
    /// The text the guest gave us last, so the same text coming back from a VNC client
    /// (a viewer syncs the host's clipboard on focus) does not take the clipboard away
    /// from the guest.
    guest_text: Option<String>,
}

impl VdAgent {
    /// An agent peer that keeps clipboard texts up to `max_text` bytes.
    pub fn new(max_text: usize) -> VdAgent {
        VdAgent {
            max_text,
            connected: false,
            guest_caps: None,
            reader: Reader::default(),
            host_text: None,
            guest_owns: false,
            guest_text: None,
        }
    }

    /// Whether the guest agent is connected and shares its clipboard.
    pub fn sharing(&self) -> bool {
        self.connected && self.caps() & cap::CLIPBOARD_BY_DEMAND != 0
    }

    fn caps(&self) -> u32 {
        self.guest_caps.unwrap_or(0)
    }

    /// The guest opened (or closed) the agent port. On open we announce our
    /// capabilities and ask for the agent's, as QEMU does.
    pub fn guest_open(&mut self, open: bool, to_guest: &mut Vec<u8>) {
        if open == self.connected {
            return;
        }
        self.connected = open;
        self.guest_caps = None;
        self.reader = Reader::default();
        self.guest_owns = false;
        if open {
            debug!("vdagent: guest agent connected");
            send_caps(true, to_guest);
        } else {
            debug!("vdagent: guest agent gone");
        }
    }

    /// Bytes the guest wrote to the port. Returns the guest's clipboard text when a
    /// message in `data` completed it.
    pub fn guest_wrote(&mut self, mut data: &[u8], to_guest: &mut Vec<u8>) -> Option<String> {
        let mut text = None;
        while !data.is_empty() {
            let r = &mut self.reader;
            if r.chunk_left == 0 {
                let take = (CHUNK_HEADER - r.chunk_header.len()).min(data.len());
                r.chunk_header.extend_from_slice(&data[..take]);
                data = &data[take..];
                if r.chunk_header.len() == CHUNK_HEADER {
                    let port = le32(&r.chunk_header, 0);
                    r.chunk_left = le32(&r.chunk_header, 4);
                    r.chunk_ours = port == CLIENT_PORT;
                    r.chunk_header.clear();
                }
                continue;
            }
            let take = (r.chunk_left as usize).min(data.len());
            let (part, rest) = data.split_at(take);
            data = rest;
            r.chunk_left -= take as u32;
            if r.chunk_ours {
                self.message_bytes(part, to_guest, &mut text);
            }
        }
        text
    }

    /// Message-stream bytes of the client port.
    fn message_bytes(
        &mut self,
        mut data: &[u8],
        to_guest: &mut Vec<u8>,
        text: &mut Option<String>,
    ) {
        while !data.is_empty() {
            let r = &mut self.reader;
            if r.message_header.len() < MESSAGE_HEADER {
                let take = (MESSAGE_HEADER - r.message_header.len()).min(data.len());
                r.message_header.extend_from_slice(&data[..take]);
                data = &data[take..];
                if r.message_header.len() == MESSAGE_HEADER {
                    r.body_left = le32(&r.message_header, 16);
                    // A clipboard message may carry max_text bytes plus its own words.
                    r.skipping = r.body_left as usize > self.max_text + 16;
                    if r.skipping {
                        debug!("vdagent: skipping a {}-byte message", r.body_left);
                    }
                }
            } else {
                let take = (r.body_left as usize).min(data.len());
                if !r.skipping {
                    r.body.extend_from_slice(&data[..take]);
                }
                data = &data[take..];
                r.body_left -= take as u32;
            }
            let r = &mut self.reader;
            if r.message_header.len() == MESSAGE_HEADER && r.body_left == 0 {
                let header = std::mem::take(&mut r.message_header);
                let body = std::mem::take(&mut r.body);
                let skipped = std::mem::replace(&mut r.skipping, false);
                if !skipped && let Some(t) = self.message(&header, &body, to_guest) {
                    *text = Some(t);
                }
            }
        }
    }

    fn message(&mut self, header: &[u8], body: &[u8], to_guest: &mut Vec<u8>) -> Option<String> {
        let (protocol, kind) = (le32(header, 0), le32(header, 4));
        if protocol != PROTOCOL {
            debug!("vdagent: message of protocol {protocol} ignored");
            return None;
        }
        match kind {
            msg::ANNOUNCE_CAPABILITIES => {
                self.capabilities(body, to_guest);
                None
            }
            msg::CLIPBOARD_GRAB
            | msg::CLIPBOARD_REQUEST
            | msg::CLIPBOARD
            | msg::CLIPBOARD_RELEASE
                if self.sharing() =>
            {
                self.clipboard(kind, body, to_guest)
            }
            other => {
                debug!("vdagent: message type {other} ignored");
                None
            }
        }
    }

    fn capabilities(&mut self, body: &[u8], to_guest: &mut Vec<u8>) {
        if body.len() < 8 {
            return;
        }
        let (request, caps) = (le32(body, 0), le32(body, 4));
        debug!("vdagent: guest capabilities {caps:#x}");
        self.guest_caps = Some(caps);
        if request != 0 {
            send_caps(false, to_guest);
        }
        // The guest gets what the VNC side had before it connected.
        if self.sharing() && self.host_text.is_some() {
            self.send_grab(to_guest);
        }
    }

    fn clipboard(&mut self, kind: u32, mut body: &[u8], to_guest: &mut Vec<u8>) -> Option<String> {
        if self.caps() & cap::CLIPBOARD_SELECTION != 0 {
            let selection = *body.first()?;
            body = body.get(4..)?;
            if selection != SELECTION_CLIPBOARD {
                return None;
            }
        }
        match kind {
            msg::CLIPBOARD_GRAB => {
                let types = body.chunks_exact(4).take(GRAB_TYPES_MAX);
                self.guest_owns = true;
                if types.map(|t| le32(t, 0)).any(|t| t == UTF8_TEXT) {
                    self.send_clipboard_message(
                        msg::CLIPBOARD_REQUEST,
                        &UTF8_TEXT.to_le_bytes(),
                        to_guest,
                    );
                }
                None
            }
            msg::CLIPBOARD_REQUEST => {
                if body.len() < 4 || le32(body, 0) != UTF8_TEXT {
                    return None;
                }
                // An empty answer when we hold nothing: the guest application is waiting.
                let text = match (&self.host_text, self.guest_owns) {
                    (Some(t), false) => self.to_guest_line_ends(t),
                    _ => String::new(),
                };
                let mut data = UTF8_TEXT.to_le_bytes().to_vec();
                data.extend_from_slice(text.as_bytes());
                self.send_clipboard_message(msg::CLIPBOARD, &data, to_guest);
                None
            }
            msg::CLIPBOARD => {
                if body.len() < 4 || le32(body, 0) != UTF8_TEXT || !self.guest_owns {
                    return None;
                }
                let bytes = &body[4..];
                let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                let text = String::from_utf8_lossy(&bytes[..end]).replace("\r\n", "\n");
                if text.len() > self.max_text {
                    debug!("vdagent: guest clipboard of {} bytes dropped", text.len());
                    return None;
                }
                self.guest_text = Some(text.clone());
                Some(text)
            }
            _ => {
                // Release: the guest's clipboard is gone; VNC has no such message, so the
                // clients keep the last text.
                self.guest_owns = false;
                None
            }
        }
    }

    /// A VNC client's clipboard changed to `text`: offer it to the guest.
    pub fn host_clipboard(&mut self, text: String, to_guest: &mut Vec<u8>) {
        if self.guest_owns && self.guest_text.as_deref() == Some(text.as_str()) {
            return;
        }
        self.host_text = Some(text);
        self.guest_owns = false;
        if self.sharing() {
            self.send_grab(to_guest);
        }
    }

    fn send_grab(&self, to_guest: &mut Vec<u8>) {
        self.send_clipboard_message(msg::CLIPBOARD_GRAB, &UTF8_TEXT.to_le_bytes(), to_guest);
    }

    /// A clipboard message, with the selection word when the guest uses selections.
    fn send_clipboard_message(&self, kind: u32, data: &[u8], to_guest: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(data.len() + 4);
        if self.caps() & cap::CLIPBOARD_SELECTION != 0 {
            body.extend_from_slice(&[SELECTION_CLIPBOARD, 0, 0, 0]);
        }
        body.extend_from_slice(data);
        send_message(kind, &body, to_guest);
    }

    fn to_guest_line_ends(&self, text: &str) -> String {
        if self.caps() & cap::GUEST_LINEEND_CRLF != 0 {
            text.replace('\n', "\r\n")
        } else {
            text.to_owned()
        }
    }
}

fn send_caps(request: bool, to_guest: &mut Vec<u8>) {
    let caps = cap::CLIPBOARD_BY_DEMAND | cap::CLIPBOARD_SELECTION;
    let mut body = (request as u32).to_le_bytes().to_vec();
    body.extend_from_slice(&caps.to_le_bytes());
    send_message(msg::ANNOUNCE_CAPABILITIES, &body, to_guest);
}

/// One message, in chunks of its own.
fn send_message(kind: u32, body: &[u8], to_guest: &mut Vec<u8>) {
    let mut message = Vec::with_capacity(MESSAGE_HEADER + body.len());
    message.extend_from_slice(&PROTOCOL.to_le_bytes());
    message.extend_from_slice(&kind.to_le_bytes());
    message.extend_from_slice(&0u64.to_le_bytes());
    message.extend_from_slice(&(body.len() as u32).to_le_bytes());
    message.extend_from_slice(body);
    for chunk in message.chunks(CHUNK_DATA_MAX) {
        to_guest.extend_from_slice(&CLIENT_PORT.to_le_bytes());
        to_guest.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        to_guest.extend_from_slice(chunk);
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const LF_GUEST: u32 = cap::CLIPBOARD_BY_DEMAND | cap::CLIPBOARD_SELECTION | 1 << 8;

    /// Plays the guest's spice-vdagentd: builds what it writes, reads what it gets.
    struct Guest {
        agent: VdAgent,
        /// What the host sent, not read yet.
        inbox: Vec<u8>,
        selection: bool,
    }

    /// A message the guest got: type and body (selection word removed).
    pub(crate) type Got = (u32, Vec<u8>);

    impl Guest {
        /// Connected, capabilities exchanged as spice-vdagentd does on start.
        fn new(caps: u32) -> Guest {
            let mut g = Guest {
                agent: VdAgent::new(1 << 20),
                inbox: Vec::new(),
                selection: caps & cap::CLIPBOARD_SELECTION != 0,
            };
            g.agent.guest_open(true, &mut g.inbox);
            let got = g.read();
            assert_eq!(got, vec![(msg::ANNOUNCE_CAPABILITIES, caps_body(1))]);
            g.write(msg::ANNOUNCE_CAPABILITIES, &[1, caps]);
            assert_eq!(g.read(), vec![(msg::ANNOUNCE_CAPABILITIES, caps_body(0))]);
            g
        }

        fn write_bytes(&mut self, bytes: &[u8]) -> Option<String> {
            self.agent.guest_wrote(bytes, &mut self.inbox)
        }

        fn write(&mut self, kind: u32, words: &[u32]) -> Option<String> {
            let body: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            self.write_bytes(&chunk(CLIENT_PORT, &message(kind, &body)))
        }

        /// A clipboard message on `selection` (the word is only there when in use).
        fn clip(&mut self, kind: u32, selection: u8, data: &[u8]) -> Option<String> {
            let body = self.clip_body(selection, data);
            self.write_bytes(&chunk(CLIENT_PORT, &message(kind, &body)))
        }

        fn clip_body(&self, selection: u8, data: &[u8]) -> Vec<u8> {
            let mut body = Vec::new();
            if self.selection {
                body.extend_from_slice(&[selection, 0, 0, 0]);
            }
            body.extend_from_slice(data);
            body
        }

        /// Reassembles the host's chunks the way the agent's reader does: every message
        /// starts a chunk, no chunk is over 2048 bytes, all on the client port.
        fn read(&mut self) -> Vec<Got> {
            let mut out = unframe(&std::mem::take(&mut self.inbox));
            for (kind, body) in &mut out {
                let kind = *kind;
                if self.selection
                    && (msg::CLIPBOARD..=msg::CLIPBOARD_RELEASE).contains(&kind)
                    && kind != msg::ANNOUNCE_CAPABILITIES
                {
                    assert_eq!(body[..4], [SELECTION_CLIPBOARD, 0, 0, 0]);
                    body.drain(..4);
                }
            }
            out
        }
    }

    /// One agent message as the guest writes it (header with an opaque the host ignores).
    pub(crate) fn message(kind: u32, body: &[u8]) -> Vec<u8> {
        let mut m = PROTOCOL.to_le_bytes().to_vec();
        m.extend_from_slice(&kind.to_le_bytes());
        m.extend_from_slice(&7u64.to_le_bytes());
        m.extend_from_slice(&(body.len() as u32).to_le_bytes());
        m.extend_from_slice(body);
        m
    }

    pub(crate) fn chunk(port: u32, data: &[u8]) -> Vec<u8> {
        let mut c = port.to_le_bytes().to_vec();
        c.extend_from_slice(&(data.len() as u32).to_le_bytes());
        c.extend_from_slice(data);
        c
    }

    /// The host's bytes as the agent's reader takes them apart: every message starts a
    /// chunk, no chunk is over 2048 bytes, all on the client port. Bodies are whole
    /// (a clipboard message's selection word included).
    pub(crate) fn unframe(bytes: &[u8]) -> Vec<Got> {
        let mut stream = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            assert_eq!(le32(bytes, at), CLIENT_PORT);
            let n = le32(bytes, at + 4) as usize;
            assert!(n <= 2048, "a chunk of {n} bytes");
            stream.extend_from_slice(&bytes[at + 8..at + 8 + n]);
            at += 8 + n;
        }
        let mut out = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            assert_eq!(le32(&stream, at), PROTOCOL);
            let kind = le32(&stream, at + 4);
            let n = le32(&stream, at + 16) as usize;
            out.push((kind, stream[at + 20..at + 20 + n].to_vec()));
            at += 20 + n;
        }
        out
    }

    fn caps_body(request: u32) -> Vec<u8> {
        [request, cap::CLIPBOARD_BY_DEMAND | cap::CLIPBOARD_SELECTION]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect()
    }

    fn text_data(text: &str) -> Vec<u8> {
        let mut d = UTF8_TEXT.to_le_bytes().to_vec();
        d.extend_from_slice(text.as_bytes());
        d
    }

    fn utf8() -> Vec<u8> {
        UTF8_TEXT.to_le_bytes().to_vec()
    }

    #[test]
    fn a_guest_copy_is_fetched_and_handed_to_the_host() {
        let mut g = Guest::new(LF_GUEST);
        assert!(g.agent.sharing());
        // Copy in the guest: the agent grabs with the types it has (text and an image).
        assert_eq!(
            g.clip(msg::CLIPBOARD_GRAB, 0, &[1, 0, 0, 0, 2, 0, 0, 0]),
            None
        );
        assert_eq!(g.read(), vec![(msg::CLIPBOARD_REQUEST, utf8())]);
        let mut data = text_data("héllo € ünïcode\nline two");
        data.push(0);
        let got = g.clip(msg::CLIPBOARD, 0, &data);
        assert_eq!(got.as_deref(), Some("héllo € ünïcode\nline two"));
        assert!(g.read().is_empty());
    }

    #[test]
    fn host_text_is_grabbed_for_the_guest_and_given_on_request() {
        let mut g = Guest::new(LF_GUEST);
        g.agent
            .host_clipboard("from the host\n€".into(), &mut g.inbox);
        assert_eq!(g.read(), vec![(msg::CLIPBOARD_GRAB, utf8())]);
        // A guest application pastes.
        assert_eq!(g.clip(msg::CLIPBOARD_REQUEST, 0, &utf8()), None);
        assert_eq!(
            g.read(),
            vec![(msg::CLIPBOARD, text_data("from the host\n€"))]
        );
        // Only text is offered: a request for an image gets nothing.
        g.clip(msg::CLIPBOARD_REQUEST, 0, &2u32.to_le_bytes());
        assert!(g.read().is_empty());
    }

    #[test]
    fn text_from_before_the_agent_started_is_offered_when_it_connects() {
        let mut agent = VdAgent::new(1 << 20);
        let mut out = Vec::new();
        agent.host_clipboard("early".into(), &mut out);
        assert!(out.is_empty(), "nothing is sent to a closed port");
        let mut g = Guest {
            agent,
            inbox: out,
            selection: true,
        };
        g.agent.guest_open(true, &mut g.inbox);
        assert_eq!(g.read(), vec![(msg::ANNOUNCE_CAPABILITIES, caps_body(1))]);
        g.write(msg::ANNOUNCE_CAPABILITIES, &[0, LF_GUEST]);
        assert_eq!(g.read(), vec![(msg::CLIPBOARD_GRAB, utf8())]);
        g.clip(msg::CLIPBOARD_REQUEST, 0, &utf8());
        assert_eq!(g.read(), vec![(msg::CLIPBOARD, text_data("early"))]);
    }

    #[test]
    fn an_agent_without_selections_gets_no_selection_word() {
        let mut g = Guest::new(cap::CLIPBOARD_BY_DEMAND);
        g.agent.host_clipboard("plain".into(), &mut g.inbox);
        assert_eq!(g.read(), vec![(msg::CLIPBOARD_GRAB, utf8())]);
        g.clip(msg::CLIPBOARD_GRAB, 0, &utf8());
        assert_eq!(g.read(), vec![(msg::CLIPBOARD_REQUEST, utf8())]);
        assert_eq!(
            g.clip(msg::CLIPBOARD, 0, &text_data("x")).as_deref(),
            Some("x")
        );
    }

    #[test]
    fn a_crlf_guest_gets_and_gives_crlf() {
        let mut g = Guest::new(
            cap::CLIPBOARD_BY_DEMAND | cap::CLIPBOARD_SELECTION | cap::GUEST_LINEEND_CRLF,
        );
        g.agent.host_clipboard("a\nb".into(), &mut g.inbox);
        g.read();
        g.clip(msg::CLIPBOARD_REQUEST, 0, &utf8());
        assert_eq!(g.read(), vec![(msg::CLIPBOARD, text_data("a\r\nb"))]);
        g.clip(msg::CLIPBOARD_GRAB, 0, &utf8());
        g.read();
        let got = g.clip(msg::CLIPBOARD, 0, &text_data("c\r\nd\0"));
        assert_eq!(got.as_deref(), Some("c\nd"));
    }

    #[test]
    fn the_primary_selection_is_left_alone() {
        let mut g = Guest::new(LF_GUEST);
        g.clip(msg::CLIPBOARD_GRAB, 1, &utf8());
        assert!(
            g.read().is_empty(),
            "a text selection in the guest is not fetched"
        );
        assert_eq!(g.clip(msg::CLIPBOARD, 1, &text_data("selected")), None);
    }

    #[test]
    fn a_guest_request_while_it_owns_the_clipboard_gets_an_empty_answer() {
        let mut g = Guest::new(LF_GUEST);
        g.agent.host_clipboard("old host text".into(), &mut g.inbox);
        g.clip(msg::CLIPBOARD_GRAB, 0, &utf8());
        g.read();
        g.clip(msg::CLIPBOARD_REQUEST, 0, &utf8());
        assert_eq!(g.read(), vec![(msg::CLIPBOARD, utf8())]);
        // Data the host never asked for (no grab since a release) is dropped.
        g.clip(msg::CLIPBOARD_RELEASE, 0, &[]);
        assert_eq!(g.clip(msg::CLIPBOARD, 0, &text_data("unasked")), None);
    }

    #[test]
    fn the_guest_text_coming_back_from_a_viewer_does_not_take_the_clipboard() {
        let mut g = Guest::new(LF_GUEST);
        g.clip(msg::CLIPBOARD_GRAB, 0, &utf8());
        g.read();
        assert_eq!(
            g.clip(msg::CLIPBOARD, 0, &text_data("copied")).as_deref(),
            Some("copied")
        );
        g.agent.host_clipboard("copied".into(), &mut g.inbox);
        assert!(g.read().is_empty());
        g.agent
            .host_clipboard("new on the host".into(), &mut g.inbox);
        assert_eq!(g.read(), vec![(msg::CLIPBOARD_GRAB, utf8())]);
    }

    #[test]
    fn messages_split_anyhow_are_reassembled_and_other_ports_skipped() {
        let mut g = Guest::new(LF_GUEST);
        let grab = message(msg::CLIPBOARD_GRAB, &g.clip_body(0, &utf8()));
        let data = message(msg::CLIPBOARD, &g.clip_body(0, &text_data("split up")));
        // A chunk for the server port, then the grab over two chunks, the data in one.
        let mut bytes = chunk(2, &message(msg::CLIPBOARD_RELEASE, &[0; 4]));
        bytes.extend(chunk(CLIENT_PORT, &grab[..5]));
        bytes.extend(chunk(CLIENT_PORT, &grab[5..]));
        bytes.extend(chunk(CLIENT_PORT, &data));
        // And every byte in a write of its own.
        let mut text = None;
        for b in &bytes {
            if let Some(t) = g.write_bytes(std::slice::from_ref(b)) {
                text = Some(t);
            }
        }
        assert_eq!(text.as_deref(), Some("split up"));
        assert_eq!(g.read(), vec![(msg::CLIPBOARD_REQUEST, utf8())]);
    }

    #[test]
    fn long_messages_go_out_in_chunks_and_oversized_ones_come_in_skipped() {
        let mut g = Guest::new(LF_GUEST);
        let long = "x".repeat(5000);
        g.agent.host_clipboard(long.clone(), &mut g.inbox);
        g.read();
        g.clip(msg::CLIPBOARD_REQUEST, 0, &utf8());
        let raw = g.inbox.clone();
        assert_eq!(g.read(), vec![(msg::CLIPBOARD, text_data(&long))]);
        assert!(
            raw.len() > 5000 + 5 * CHUNK_HEADER,
            "sent in several chunks"
        );

        let mut small = Guest {
            agent: VdAgent::new(100),
            inbox: Vec::new(),
            selection: true,
        };
        small.agent.guest_open(true, &mut small.inbox);
        small.write(msg::ANNOUNCE_CAPABILITIES, &[0, LF_GUEST]);
        small.read();
        small.clip(msg::CLIPBOARD_GRAB, 0, &utf8());
        small.read();
        assert_eq!(
            small.clip(msg::CLIPBOARD, 0, &text_data(&"y".repeat(1000))),
            None
        );
        // The stream is still in step after the skipped message.
        small.clip(msg::CLIPBOARD_GRAB, 0, &utf8());
        assert_eq!(small.read(), vec![(msg::CLIPBOARD_REQUEST, utf8())]);
        assert_eq!(
            small.clip(msg::CLIPBOARD, 0, &text_data("fits")).as_deref(),
            Some("fits")
        );
    }

    #[test]
    fn nothing_is_shared_before_capabilities_and_a_reconnect_starts_over() {
        let mut agent = VdAgent::new(1 << 20);
        let mut out = Vec::new();
        agent.guest_open(true, &mut out);
        let mut g = Guest {
            agent,
            inbox: Vec::new(),
            selection: true,
        };
        // Clipboard traffic before the agent announced itself is not understood.
        assert_eq!(g.clip(msg::CLIPBOARD_GRAB, 0, &utf8()), None);
        assert!(g.read().is_empty());
        // Garbage: a wrong protocol number and truncated bodies.
        let mut bad = message(msg::CLIPBOARD_GRAB, &[]);
        bad[0] = 9;
        g.write_bytes(&chunk(CLIENT_PORT, &bad));
        g.write(msg::ANNOUNCE_CAPABILITIES, &[1]);
        assert!(g.read().is_empty());
        g.write(msg::ANNOUNCE_CAPABILITIES, &[0, LF_GUEST]);
        assert!(g.agent.sharing());
        g.clip(msg::CLIPBOARD_REQUEST, 0, &[1, 0]);
        g.clip(msg::CLIPBOARD_GRAB, 0, &[]);
        assert!(g.read().is_empty());
        // The guest closes the port (its agent restarts): it must announce itself again.
        g.agent.guest_open(false, &mut g.inbox);
        assert!(!g.agent.sharing());
        g.agent.host_clipboard("kept".into(), &mut g.inbox);
        assert!(g.read().is_empty());
        g.agent.guest_open(true, &mut g.inbox);
        g.read();
        g.write(msg::ANNOUNCE_CAPABILITIES, &[1, LF_GUEST]);
        assert_eq!(
            g.read(),
            vec![
                (msg::ANNOUNCE_CAPABILITIES, caps_body(0)),
                (msg::CLIPBOARD_GRAB, utf8())
            ]
        );
    }
}
