//! The guest's clipboard, shared with the VNC clients through the guest agent.
//!
//! Each machine has a virtio-serial port named [`AGENT_PORT_NAME`] (what QEMU's
//! `qemu-vdagent` chardev is plugged into, and what `spice-vdagentd` looks for); its
//! host end is a [`VdAgent`]. [`GuestClipboard`] outlives the machines a guest reset
//! rebuilds: it keeps the agent (so text a VNC client gave before the guest agent started
//! is offered when it does) and knows where the guest's text goes (the VNC server).
//!
//! Locking: the device calls the port with its own lock held, and the port takes the
//! agent's; text from a VNC client takes the agent's lock, lets it go, then takes the
//! device's. The guest's text goes to the clients with only the device's lock held, and
//! the VNC server never calls back into the VMM with its locks held.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::vdagent::VdAgent;
use crate::virtio::serial::{PortBackend, VirtioSerial};

/// The port name the SPICE guest agent opens (`/dev/virtio-ports/com.redhat.spice.0`).
pub const AGENT_PORT_NAME: &str = "com.redhat.spice.0";
/// The agent port's id on the machine's virtio-serial device.
pub const AGENT_PORT: u32 = 1;
/// Clipboard text kept, either way: the VNC server's cut-text limit.
pub const MAX_TEXT: usize = 1 << 20;

type Clients = Box<dyn Fn(&str) + Send + Sync>;

/// The clipboard between the guest agent and the VNC clients.
pub struct GuestClipboard {
    agent: Mutex<VdAgent>,
    /// The running machine's virtio-serial device.
    device: Mutex<Option<Arc<Mutex<VirtioSerial>>>>,
    clients: Mutex<Option<Clients>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl GuestClipboard {
    pub fn new() -> Arc<GuestClipboard> {
        Arc::new(GuestClipboard {
            agent: Mutex::new(VdAgent::new(MAX_TEXT)),
            device: Mutex::new(None),
            clients: Mutex::new(None),
        })
    }

    /// Where the guest's clipboard text goes (the VNC server's clients).
    pub fn set_clients(&self, clients: impl Fn(&str) + Send + Sync + 'static) {
        *lock(&self.clients) = Some(Box::new(clients));
    }

    /// The port backend for a new machine's agent port.
    pub fn port(self: &Arc<Self>) -> Box<dyn PortBackend> {
        Box::new(AgentPort(self.clone()))
    }

    /// The running machine's device, or `None` when it stops (its guest agent is gone).
    pub fn attach(&self, device: Option<Arc<Mutex<VirtioSerial>>>) {
        if device.is_none() {
            lock(&self.agent).guest_open(false, &mut Vec::new());
        }
        *lock(&self.device) = device;
    }

    /// A VNC client's clipboard changed to `text`.
    pub fn from_client(&self, text: String) {
        let mut to_guest = Vec::new();
        let sharing = {
            let mut agent = lock(&self.agent);
            agent.host_clipboard(text, &mut to_guest);
            agent.sharing()
        };
        if !sharing {
            tracing::debug!("clipboard: no guest agent; the client's text waits for one");
        }
        if to_guest.is_empty() {
            return;
        }
        if let Some(dev) = lock(&self.device).as_ref()
            && let Err(e) = lock(dev).send(AGENT_PORT, &to_guest)
        {
            tracing::debug!("clipboard: not sent to the guest agent: {e}");
        }
    }
}

/// The host end of the agent port.
struct AgentPort(Arc<GuestClipboard>);

impl PortBackend for AgentPort {
    fn guest_open(&mut self, open: bool, to_guest: &mut Vec<u8>) {
        lock(&self.0.agent).guest_open(open, to_guest);
    }

    fn guest_wrote(&mut self, data: &[u8], to_guest: &mut Vec<u8>) {
        let text = lock(&self.0.agent).guest_wrote(data, to_guest);
        if let Some(text) = text
            && let Some(clients) = lock(&self.0.clients).as_ref()
        {
            tracing::debug!("clipboard: {} bytes from the guest", text.len());
            clients(&text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vdagent::cap::{CLIPBOARD_BY_DEMAND, CLIPBOARD_SELECTION};
    use crate::vdagent::msg;
    use crate::vdagent::tests::{Got, chunk, message, unframe};
    use crate::virtio::serial::event;
    use crate::virtio::serial::tests::{Driver, PAGE};

    /// A guest message on the agent port, with the CLIPBOARD selection word where the
    /// message has one.
    fn write(d: &mut Driver, kind: u32, words: &[u32]) {
        let mut body: Vec<u8> = Vec::new();
        if kind != msg::ANNOUNCE_CAPABILITIES {
            body.extend_from_slice(&[0; 4]);
        }
        body.extend(words.iter().flat_map(|w| w.to_le_bytes()));
        d.write(AGENT_PORT, &[&chunk(1, &message(kind, &body))]);
    }

    /// What the guest read from the port; each buffer used is posted again, as Linux does.
    fn read(d: &mut Driver) -> Vec<Got> {
        let (lens, bytes) = d.received(AGENT_PORT);
        for _ in &lens {
            d.post(Driver::rx(AGENT_PORT), PAGE);
        }
        d.kick(Driver::rx(AGENT_PORT));
        unframe(&bytes)
    }

    fn clipboard_data(text: &str) -> Vec<u8> {
        let mut b = vec![0, 0, 0, 0, 1, 0, 0, 0];
        b.extend_from_slice(text.as_bytes());
        b
    }

    #[test]
    fn text_crosses_between_the_clients_and_the_agent_port() {
        let clipboard = GuestClipboard::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        clipboard.set_clients(move |t| s.lock().unwrap().push(t.to_owned()));
        // A client's text before any machine runs waits for the guest agent.
        clipboard.from_client("early".into());

        let ports = vec![(AGENT_PORT_NAME.to_owned(), clipboard.port())];
        let mut d = Driver::with_ports(ports, Vec::new());
        clipboard.attach(Some(d.dev.clone()));
        d.bring_up();
        // spice-vdagentd opens the port and announces itself.
        d.control(AGENT_PORT, event::PORT_OPEN, 1);
        assert_eq!(
            read(&mut d).first().map(|m| m.0),
            Some(msg::ANNOUNCE_CAPABILITIES)
        );
        write(
            &mut d,
            msg::ANNOUNCE_CAPABILITIES,
            &[0, CLIPBOARD_BY_DEMAND | CLIPBOARD_SELECTION],
        );
        assert_eq!(
            read(&mut d),
            vec![(msg::CLIPBOARD_GRAB, vec![0, 0, 0, 0, 1, 0, 0, 0])]
        );
        write(&mut d, msg::CLIPBOARD_REQUEST, &[1]);
        assert_eq!(
            read(&mut d),
            vec![(msg::CLIPBOARD, clipboard_data("early"))]
        );

        // The guest copies: its text reaches the clients.
        write(&mut d, msg::CLIPBOARD_GRAB, &[1]);
        assert_eq!(
            read(&mut d),
            vec![(msg::CLIPBOARD_REQUEST, vec![0, 0, 0, 0, 1, 0, 0, 0])]
        );
        d.write(
            AGENT_PORT,
            &[&chunk(
                1,
                &message(msg::CLIPBOARD, &clipboard_data("from the guest ✓")),
            )],
        );
        assert_eq!(*seen.lock().unwrap(), vec!["from the guest ✓".to_owned()]);

        // A client's new text is sent from the client's thread through the device.
        clipboard.from_client("from a client".into());
        assert_eq!(
            read(&mut d),
            vec![(msg::CLIPBOARD_GRAB, vec![0, 0, 0, 0, 1, 0, 0, 0])]
        );

        // The machine stops: the agent is gone until the next one's opens the port.
        clipboard.attach(None);
        assert!(!lock(&clipboard.agent).sharing());
        clipboard.from_client("after".into());
    }
}
