//! A PS/2 mouse on the i8042's auxiliary port, with the IntelliMouse (wheel, id 3) and
//! IntelliMouse Explorer (wheel + buttons 4/5, id 4) extensions that Linux's psmouse
//! probes for.
//!
//! Emulated: reset (0xFF → ACK 0xAA 0x00), defaults (0xF6), data reporting on/off
//! (0xF4/0xF5), sample rate (0xF3 + argument; the 200,100,80 and 200,200,80 sequences
//! switch the id to 3 and then 4), resolution (0xE8 + argument), scaling 1:1/2:1
//! (0xE6/0xE7, applied to stream packets), status request (0xE9), get id (0xF2),
//! stream/remote mode (0xEA/0xF0), read data (0xEB), wrap mode (0xEE/0xEC), resend
//! (0xFE, repeats the last packet or byte). Unknown commands get 0xFE.
//!
//! Movement is accumulated and sent as packets while there is room in the 16-byte
//! output, each packet carrying at most ±255 per axis (the 9-bit range of the format),
//! so a large movement becomes several packets rather than being lost. Only when the
//! guest falls so far behind that the backlog exceeds [`MAX_BACKLOG`] is movement dropped,
//! and then the next packet carries the axis' overflow bit, as a real mouse does when its
//! counter overflows. The sample rate and resolution are stored and reported but do not
//! pace or scale the host's input.

use super::ps2_keyboard::{Ps2Queue, QUEUE_BYTES};

/// Button bits of [`Ps2Mouse::mouse_event`], in PS/2 packet order.
pub const BUTTON_LEFT: u8 = 0x01;
pub const BUTTON_RIGHT: u8 = 0x02;
pub const BUTTON_MIDDLE: u8 = 0x04;
/// Buttons 4 and 5 (side / extra); only reported once the guest switched to id 4.
pub const BUTTON_SIDE: u8 = 0x08;
pub const BUTTON_EXTRA: u8 = 0x10;

/// Movement the mouse keeps for a guest that reads too slowly, per axis.
pub const MAX_BACKLOG: i32 = 4096;

const ACK: u8 = 0xfa;
const RESEND: u8 = 0xfe;
const BAT_OK: u8 = 0xaa;

const DEFAULT_RATE: u8 = 100;
const DEFAULT_RESOLUTION: u8 = 2;

pub struct Ps2Mouse {
    queue: Ps2Queue,
    pending: Option<u8>,
    reporting: bool,
    remote: bool,
    wrap: bool,
    scaling_2to1: bool,
    rate: u8,
    resolution: u8,
    id: u8,
    /// The last three sample rates set, oldest first (the "knock" sequences).
    rates: [u8; 3],
    /// Movement not yet sent, in PS/2 sense (x right, y up), and wheel (positive down).
    dx: i32,
    dy: i32,
    dz: i32,
    overflow_x: bool,
    overflow_y: bool,
    buttons: u8,
    sent_buttons: u8,
    /// What 0xFE repeats.
    last_output: Vec<u8>,
}

impl Default for Ps2Mouse {
    fn default() -> Self {
        Self::new()
    }
}

impl Ps2Mouse {
    pub fn new() -> Self {
        Ps2Mouse {
            queue: Ps2Queue::default(),
            pending: None,
            reporting: false,
            remote: false,
            wrap: false,
            scaling_2to1: false,
            rate: DEFAULT_RATE,
            resolution: DEFAULT_RESOLUTION,
            id: 0,
            rates: [0; 3],
            dx: 0,
            dy: 0,
            dz: 0,
            overflow_x: false,
            overflow_y: false,
            buttons: 0,
            sent_buttons: 0,
            last_output: Vec::new(),
        }
    }

    /// Power-on state (the machine was reset).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// 0 (plain PS/2), 3 (IntelliMouse) or 4 (IntelliMouse Explorer).
    pub fn id(&self) -> u8 {
        self.id
    }

    /// Whether stream packets are being sent (0xF4 / 0xF5).
    pub fn reporting(&self) -> bool {
        self.reporting
    }

    pub fn sample_rate(&self) -> u8 {
        self.rate
    }

    pub fn resolution(&self) -> u8 {
        self.resolution
    }

    pub fn has_output(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The next byte for the controller, if any; makes room for more packets.
    pub fn pop(&mut self) -> Option<u8> {
        let b = self.queue.pop();
        self.flush_movement();
        b
    }

    fn respond(&mut self, bytes: &[u8]) {
        self.queue.push_response(bytes, "ps2 mouse");
        self.last_output = bytes.to_vec();
    }

    fn set_defaults(&mut self) {
        self.rate = DEFAULT_RATE;
        self.resolution = DEFAULT_RESOLUTION;
        self.scaling_2to1 = false;
        self.reporting = false;
        self.remote = false;
        self.forget_movement();
    }

    fn forget_movement(&mut self) {
        self.dx = 0;
        self.dy = 0;
        self.dz = 0;
        self.overflow_x = false;
        self.overflow_y = false;
        self.sent_buttons = self.buttons;
        self.queue.clear_events();
    }

    /// A byte from the host (controller command 0xD4 followed by the byte).
    pub fn write(&mut self, byte: u8) {
        if self.wrap && byte != 0xec && byte != 0xff {
            self.respond(&[byte]);
            return;
        }
        // Arguments of 0xF3 and 0xE8 are below 0xF0 unless the host lost track; a real
        // mouse then takes the byte as a new command.
        if let Some(cmd) = self.pending.take()
            && byte < 0xe6
        {
            self.argument(cmd, byte);
            return;
        }
        match byte {
            0xff => {
                *self = Self::new();
                self.respond(&[ACK, BAT_OK, 0x00]);
            }
            0xfe => {
                let again = self.last_output.clone();
                self.queue.push_response(&again, "ps2 mouse");
            }
            0xf6 => {
                self.set_defaults();
                self.respond(&[ACK]);
            }
            0xf5 => {
                self.reporting = false;
                self.forget_movement();
                self.respond(&[ACK]);
            }
            0xf4 => {
                self.reporting = true;
                self.forget_movement();
                self.respond(&[ACK]);
            }
            0xf3 | 0xe8 => {
                self.pending = Some(byte);
                self.respond(&[ACK]);
            }
            0xf2 => {
                let id = self.id;
                self.respond(&[ACK, id]);
            }
            0xf0 => {
                self.remote = true;
                self.forget_movement();
                self.respond(&[ACK]);
            }
            0xea => {
                self.remote = false;
                self.forget_movement();
                self.respond(&[ACK]);
            }
            0xeb => {
                let packet = self.take_packet(false);
                let mut out = vec![ACK];
                out.extend_from_slice(&packet);
                self.respond(&out);
            }
            0xe9 => {
                // Status byte: remote mode, reporting, 2:1 scaling, then left, middle,
                // right (not the packet's order).
                let b = self.buttons;
                let status = (self.remote as u8) << 6
                    | (self.reporting as u8) << 5
                    | (self.scaling_2to1 as u8) << 4
                    | (b & BUTTON_LEFT) << 2
                    | (b & BUTTON_MIDDLE) >> 1
                    | (b & BUTTON_RIGHT) >> 1;
                let (res, rate) = (self.resolution, self.rate);
                self.respond(&[ACK, status, res, rate]);
            }
            0xe6 | 0xe7 => {
                self.scaling_2to1 = byte == 0xe7;
                self.respond(&[ACK]);
            }
            0xee => {
                self.wrap = true;
                self.forget_movement();
                self.respond(&[ACK]);
            }
            0xec => {
                self.wrap = false;
                self.respond(&[ACK]);
            }
            _ => {
                tracing::debug!("ps2 mouse: unknown command {byte:#04x}");
                self.queue.push_response(&[RESEND], "ps2 mouse");
            }
        }
    }

    fn argument(&mut self, cmd: u8, arg: u8) {
        match cmd {
            0xf3 => {
                if arg == 0 {
                    self.respond(&[RESEND]);
                    return;
                }
                self.rate = arg;
                self.rates = [self.rates[1], self.rates[2], arg];
                match (self.rates, self.id) {
                    ([200, 100, 80], 0) => self.id = 3,
                    ([200, 200, 80], 3) => self.id = 4,
                    _ => {}
                }
            }
            0xe8 => self.resolution = arg & 0x03,
            _ => unreachable!("only 0xF3 and 0xE8 take arguments"),
        }
        self.respond(&[ACK]);
    }

    fn packet_len(&self) -> usize {
        if self.id == 0 { 3 } else { 4 }
    }

    /// Builds the next packet from the accumulated movement and takes it out.
    fn take_packet(&mut self, scale: bool) -> Vec<u8> {
        let dx = self.dx.clamp(-255, 255);
        let dy = self.dy.clamp(-255, 255);
        self.dx -= dx;
        self.dy -= dy;
        let (zmin, zmax) = if self.id == 4 { (-8, 7) } else { (-127, 127) };
        let dz = self.dz.clamp(zmin, zmax);
        self.dz -= dz;
        let (px, py) = if scale && self.scaling_2to1 {
            (scale_2to1(dx), scale_2to1(dy))
        } else {
            (dx, dy)
        };
        let b = self.buttons;
        let mut first = 0x08 | (b & 0x07);
        first |= ((px < 0) as u8) << 4 | ((py < 0) as u8) << 5;
        first |= (self.overflow_x as u8) << 6 | (self.overflow_y as u8) << 7;
        self.overflow_x = false;
        self.overflow_y = false;
        let mut packet = vec![first, px as u8, py as u8];
        match self.id {
            3 => packet.push(dz as i8 as u8),
            4 => packet.push((dz as u8 & 0x0f) | (b & (BUTTON_SIDE | BUTTON_EXTRA)) << 1),
            _ => {}
        }
        self.sent_buttons = b;
        packet
    }

    /// Queues stream packets while there is something to say and room to say it.
    fn flush_movement(&mut self) {
        if !self.reporting || self.remote || self.wrap {
            return;
        }
        // Only what the current protocol can carry counts as a change.
        let mask = if self.id == 4 { 0x1f } else { 0x07 };
        while (self.dx != 0
            || self.dy != 0
            || (self.id != 0 && self.dz != 0)
            || (self.buttons ^ self.sent_buttons) & mask != 0)
            && self.queue.free() >= self.packet_len()
        {
            let packet = self.take_packet(true);
            self.queue.push_event(&packet);
            self.last_output = packet;
        }
        if self.id == 0 {
            self.dz = 0;
        }
    }

    /// The host moved the pointer by (`dx`, `dy`) (right and down positive, as on the
    /// screen), turned the wheel by `dz` clicks (positive toward the user, i.e. scrolling
    /// down) and now holds `buttons` ([`BUTTON_LEFT`] ...).
    pub fn mouse_event(&mut self, dx: i32, dy: i32, dz: i32, buttons: u8) {
        self.buttons = buttons & 0x1f;
        if !self.reporting && !self.remote {
            return;
        }
        // PS/2's y axis points up.
        let (x, ovx) = add_clamped(self.dx, dx);
        let (y, ovy) = add_clamped(self.dy, dy.saturating_neg());
        let (z, _) = add_clamped(self.dz, dz);
        self.dx = x;
        self.dy = y;
        self.dz = z;
        self.overflow_x |= ovx;
        self.overflow_y |= ovy;
        self.flush_movement();
    }
}

/// Adds movement to a backlog, keeping it within [`MAX_BACKLOG`]; says whether some was
/// lost.
fn add_clamped(acc: i32, delta: i32) -> (i32, bool) {
    let sum = acc.saturating_add(delta);
    let kept = sum.clamp(-MAX_BACKLOG, MAX_BACKLOG);
    (kept, kept != sum)
}

/// The PS/2 2:1 scaling curve, applied per packet (which is what the hardware does).
fn scale_2to1(v: i32) -> i32 {
    let m = match v.abs() {
        0 => 0,
        1 | 2 => 1,
        3 => 3,
        4 => 6,
        5 => 9,
        n => 2 * n,
    };
    (m * v.signum()).clamp(-255, 255)
}

const _: () = assert!(QUEUE_BYTES >= 4, "a packet must fit in the queue");

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(m: &mut Ps2Mouse) -> Vec<u8> {
        std::iter::from_fn(|| m.pop()).collect()
    }

    fn cmd(m: &mut Ps2Mouse, bytes: &[u8]) -> Vec<u8> {
        for &b in bytes {
            m.write(b);
        }
        drain(m)
    }

    #[test]
    fn reset_status_and_settings() {
        let mut m = Ps2Mouse::new();
        assert_eq!(cmd(&mut m, &[0xff]), [ACK, BAT_OK, 0x00]);
        assert_eq!(cmd(&mut m, &[0xe9]), [ACK, 0x00, 2, 100]);
        assert_eq!(cmd(&mut m, &[0xe8, 0x03, 0xf3, 40, 0xe7]), [ACK; 5]);
        m.mouse_event(0, 0, 0, BUTTON_LEFT | BUTTON_RIGHT);
        assert_eq!(cmd(&mut m, &[0xe9]), [ACK, 0x15, 3, 40]);
        assert_eq!(cmd(&mut m, &[0xf6, 0xe9]), [ACK, ACK, 0x05, 2, 100]);
        assert_eq!(cmd(&mut m, &[0x42]), [RESEND]);
        assert_eq!(
            cmd(&mut m, &[0xee, 0x42, 0xec]),
            [ACK, 0x42, ACK],
            "wrap mode echoes"
        );
    }

    #[test]
    fn intellimouse_knocks() {
        let mut m = Ps2Mouse::new();
        assert_eq!(cmd(&mut m, &[0xf2]), [ACK, 0]);
        // The Explorer knock means nothing to a plain mouse.
        cmd(&mut m, &[0xf3, 200, 0xf3, 200, 0xf3, 80]);
        assert_eq!(cmd(&mut m, &[0xf2]), [ACK, 0]);
        cmd(&mut m, &[0xf3, 200, 0xf3, 100, 0xf3, 80]);
        assert_eq!(cmd(&mut m, &[0xf2]), [ACK, 3]);
        cmd(&mut m, &[0xf3, 200, 0xf3, 200, 0xf3, 80]);
        assert_eq!(cmd(&mut m, &[0xf2]), [ACK, 4]);
        assert_eq!(cmd(&mut m, &[0xff, 0xf2]), [ACK, BAT_OK, 0, ACK, 0]);
    }

    #[test]
    fn stream_packets_split_large_moves_and_carry_signs() {
        let mut m = Ps2Mouse::new();
        m.mouse_event(10, 10, 0, 0);
        assert!(!m.has_output(), "no packets before 0xF4");
        cmd(&mut m, &[0xf4]);
        m.mouse_event(5, 3, 0, BUTTON_LEFT);
        // x right 5, y down 3 → PS/2 y = -3 with the y sign bit.
        assert_eq!(drain(&mut m), [0x08 | 0x01 | 0x20, 5, (-3i8) as u8]);
        m.mouse_event(-300, 0, 0, 0);
        assert_eq!(drain(&mut m), [0x18, 1, 0, 0x18, (-45i32) as u8, 0]);
        assert_eq!(cmd(&mut m, &[0xfe]), [0x18, (-45i32) as u8, 0]);
    }

    #[test]
    fn backlog_waits_for_room_then_overflows() {
        let mut m = Ps2Mouse::new();
        cmd(&mut m, &[0xf4]);
        m.mouse_event(255 * 10, 0, 0, 0);
        // 16 bytes hold five 3-byte packets; the rest waits for the guest.
        assert_eq!(m.queue.len(), 15);
        let out = drain(&mut m);
        assert_eq!(out.len(), 30);
        assert!(out.chunks(3).all(|p| p == [0x08, 255, 0]));
        m.mouse_event(MAX_BACKLOG + 1000, 0, 0, 0);
        let out = drain(&mut m);
        assert_eq!(out[0], 0x48, "the first packet reports the lost movement");
        let total: i32 = out.chunks(3).map(|p| p[1] as i32).sum();
        assert_eq!(total, MAX_BACKLOG);
    }

    #[test]
    fn wheel_and_extra_buttons() {
        let mut m = Ps2Mouse::new();
        cmd(&mut m, &[0xf3, 200, 0xf3, 100, 0xf3, 80, 0xf4]);
        m.mouse_event(0, 0, -1, 0);
        assert_eq!(drain(&mut m), [0x08, 0, 0, 0xff]);
        cmd(&mut m, &[0xf3, 200, 0xf3, 200, 0xf3, 80]);
        m.mouse_event(0, 0, 10, BUTTON_SIDE);
        assert_eq!(drain(&mut m), [0x08, 0, 0, 0x17, 0x08, 0, 0, 0x13]);
        m.mouse_event(0, 0, 0, 0);
        assert_eq!(drain(&mut m), [0x08, 0, 0, 0x00]);
    }

    #[test]
    fn remote_mode_reads_on_request() {
        let mut m = Ps2Mouse::new();
        cmd(&mut m, &[0xf0]);
        m.mouse_event(7, -2, 0, BUTTON_MIDDLE);
        assert!(!m.has_output());
        assert_eq!(cmd(&mut m, &[0xeb]), [ACK, 0x0c, 7, 2]);
        assert_eq!(cmd(&mut m, &[0xeb]), [ACK, 0x0c, 0, 0]);
    }

    #[test]
    fn scaling_2to1_follows_the_curve() {
        assert_eq!(
            [0, 1, 2, 3, 4, 5, 6, -4, 200].map(scale_2to1),
            [0, 1, 1, 3, 6, 9, 12, -6, 255]
        );
    }
}
