//! The PC keyboard controller (Intel 8042 as found in every PC chipset) at ports 0x60
//! (data) and 0x64 (status / command), with a PS/2 keyboard on its first port (IRQ 1) and
//! a PS/2 mouse on its auxiliary port (IRQ 12).
//!
//! Emulated, as SeaBIOS (`ps2port.c`) and Linux (`serio/i8042.c`) drive it:
//! - the status register: output buffer full (bit 0), input buffer full (bit 1, always 0:
//!   every write is handled before the vCPU continues), system flag (bit 2), command/data
//!   of the last write (bit 3), keyboard not inhibited (bit 4, always 1), output buffer
//!   holds aux data (bit 5); timeout and parity errors never happen;
//! - the command byte (0x20 read, 0x60 write): interrupt enables, keyboard/aux clock
//!   disables, system flag and XLATE. XLATE translates every byte from the keyboard
//!   from set 2 to set 1 (answers too, so identify reads 0xAB 0x41, as on real hardware
//!   and as Linux's atkbd expects of a translating controller); bytes the controller
//!   makes itself are never translated. At power-on the command byte has both interrupts
//!   and XLATE on, which is what a BIOS leaves behind;
//! - self-test 0xAA → 0x55, interface tests 0xAB / 0xA9 → 0x00, enable/disable keyboard
//!   0xAE/0xAD and aux 0xA8/0xA7, input port 0xC0, output port read 0xD0 / write 0xD1
//!   (bit 0 low resets the machine; the A20 bit is stored, KVM keeps A20 enabled), 0xD2 /
//!   0xD3 to put a byte in the output buffer as if from the keyboard / mouse (Linux's aux
//!   loopback test and multiplexer probe use 0xD3), 0xD4 to send a byte to the mouse,
//!   and the pulse commands 0xF0–0xFF (an even one pulses the reset line low, which resets
//!   the machine; odd ones do nothing);
//! - one output buffer, filled one byte at a time from, in order: the controller's own
//!   answers, the keyboard (unless its clock is disabled), the mouse (likewise);
//! - writing a byte to the keyboard re-enables its port (clears the disable bit in the
//!   command byte), as QEMU models it: a keyboard command sent with the port disabled
//!   would otherwise never be answered.
//!
//! Interrupts: the 8042 drives IRQ 1 / IRQ 12 from "output buffer full with keyboard /
//! aux data" AND the matching enable bit in the command byte. We turn each rising edge of
//! that level into a pulse on the line: the in-kernel PIC and the IOAPIC treat ISA IRQs 1
//! and 12 as edge-triggered, SeaBIOS and Linux both read exactly one byte per interrupt,
//! and every new byte after a read is a new rising edge, so each byte gets one interrupt
//! (a test below runs a real-mode handler under KVM's PIC to check exactly that).
//! Holding the line high (as QEMU does) would need the guest's read to lower it before the
//! next edge could be seen, which is the same thing with more KVM exits. A consequence
//! of edges: an answer a guest polls for while the interrupt is enabled still leaves a
//! latched interrupt behind; SeaBIOS yields right after disabling interrupts to take such
//! stale ones, and Linux's handler ignores an interrupt that finds no data.
//!
//! On the bus: two one-byte devices at 0x60 and 0x64 sharing the controller ([`attach`]),
//! leaving 0x61 (KVM's PIT speaker port) and 0x62/0x63 to others.
//!
//! Not emulated: the controller's internal RAM (0x21–0x3F read as 0, writes ignored),
//! the password commands, the test-input port (0xE0 reads 0), and the PS/2 multiplexer
//! (the loopback answers exactly, which is how Linux tells there is none).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::bus::{Bus, BusDevice, BusError};
use crate::irq::{IrqLine, MachineRequest, MachineRequests};

use super::ps2_keyboard::{Ps2Keyboard, translate_set2_to_set1};
use super::ps2_mouse::Ps2Mouse;

pub const DATA_PORT: u64 = 0x60;
pub const STATUS_PORT: u64 = 0x64;
pub const KBD_IRQ: u32 = 1;
pub const MOUSE_IRQ: u32 = 12;

// Status register.
pub const STATUS_OBF: u8 = 0x01;
pub const STATUS_IBF: u8 = 0x02;
pub const STATUS_SYS: u8 = 0x04;
pub const STATUS_CMD: u8 = 0x08;
pub const STATUS_UNLOCKED: u8 = 0x10;
pub const STATUS_AUX_OBF: u8 = 0x20;

// Command byte.
pub const CTR_KBD_INT: u8 = 0x01;
pub const CTR_AUX_INT: u8 = 0x02;
pub const CTR_SYS: u8 = 0x04;
pub const CTR_KBD_DISABLE: u8 = 0x10;
pub const CTR_AUX_DISABLE: u8 = 0x20;
pub const CTR_XLATE: u8 = 0x40;

// Output port.
const OUT_RESET: u8 = 0x01;
const OUT_A20: u8 = 0x02;
const OUT_KBD_OBF: u8 = 0x10;
const OUT_AUX_OBF: u8 = 0x20;
/// Keyboard clock and data lines, idle high.
const OUT_ONES: u8 = 0xcc;

/// Interrupts on, translation on, both ports enabled: the state a BIOS leaves behind,
/// so that a guest booted without firmware finds what it expects.
const CTR_POWER_ON: u8 = CTR_KBD_INT | CTR_AUX_INT | CTR_XLATE;

/// Bytes of controller answers kept for a guest that never reads them.
const CONTROLLER_QUEUE: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Keyboard,
    Aux,
}

/// A controller command waiting for its data byte on port 0x60.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    CommandByte,
    OutputPort,
    KbdBuffer,
    AuxBuffer,
    AuxDevice,
    /// 0x61–0x7F: a byte for the internal RAM, dropped.
    Ram,
}

pub struct I8042 {
    keyboard: Ps2Keyboard,
    mouse: Ps2Mouse,
    command_byte: u8,
    /// Status bit 2; also bit 2 of the command byte.
    sys: bool,
    /// Whether the last write went to port 0x64.
    last_was_command: bool,
    output_port: u8,
    output: Option<(u8, Source)>,
    /// The last byte read from port 0x60 (what an empty buffer reads as).
    last_read: u8,
    controller_out: VecDeque<(u8, Source)>,
    pending: Option<Pending>,
    /// Translation saw 0xF0; the next keyboard byte is a break code.
    xlate_break: bool,
    kbd_irq: Arc<dyn IrqLine>,
    mouse_irq: Arc<dyn IrqLine>,
    kbd_irq_level: bool,
    aux_irq_level: bool,
    requests: MachineRequests,
}

impl I8042 {
    pub fn new(
        kbd_irq: Arc<dyn IrqLine>,
        mouse_irq: Arc<dyn IrqLine>,
        requests: MachineRequests,
    ) -> Self {
        I8042 {
            keyboard: Ps2Keyboard::new(),
            mouse: Ps2Mouse::new(),
            command_byte: CTR_POWER_ON,
            sys: false,
            last_was_command: false,
            output_port: OUT_RESET | OUT_A20 | OUT_ONES,
            output: None,
            last_read: 0,
            controller_out: VecDeque::new(),
            pending: None,
            xlate_break: false,
            kbd_irq,
            mouse_irq,
            kbd_irq_level: false,
            aux_irq_level: false,
            requests,
        }
    }

    /// Back to power-on state, keyboard and mouse included (for a machine reset).
    pub fn reset(&mut self) {
        self.keyboard.reset();
        self.mouse.reset();
        self.command_byte = CTR_POWER_ON;
        self.sys = false;
        self.last_was_command = false;
        self.output_port = OUT_RESET | OUT_A20 | OUT_ONES;
        self.output = None;
        self.controller_out.clear();
        self.pending = None;
        self.xlate_break = false;
        self.sync_irqs();
    }

    pub fn keyboard(&self) -> &Ps2Keyboard {
        &self.keyboard
    }

    pub fn mouse(&self) -> &Ps2Mouse {
        &self.mouse
    }

    /// Keyboard LEDs as the guest last set them (see `ps2_keyboard::LED_*`).
    pub fn leds(&self) -> u8 {
        self.keyboard.leds()
    }

    pub fn command_byte(&self) -> u8 {
        self.command_byte_value()
    }

    /// The A20 bit of the output port (informational: KVM never masks A20).
    pub fn a20(&self) -> bool {
        self.output_port & OUT_A20 != 0
    }

    /// A key went down or up: see [`Ps2Keyboard::key_event`] for `code`.
    pub fn key_event(&mut self, code: u16, down: bool) {
        self.keyboard.key_event(code, down);
        self.fill_output();
    }

    /// Pointer movement and buttons: see [`Ps2Mouse::mouse_event`].
    pub fn mouse_event(&mut self, dx: i32, dy: i32, dz: i32, buttons: u8) {
        self.mouse.mouse_event(dx, dy, dz, buttons);
        self.fill_output();
    }

    fn command_byte_value(&self) -> u8 {
        (self.command_byte & !CTR_SYS) | if self.sys { CTR_SYS } else { 0 }
    }

    pub fn read_status(&self) -> u8 {
        let mut s = STATUS_UNLOCKED;
        if let Some((_, src)) = self.output {
            s |= STATUS_OBF;
            if src == Source::Aux {
                s |= STATUS_AUX_OBF;
            }
        }
        if self.sys {
            s |= STATUS_SYS;
        }
        if self.last_was_command {
            s |= STATUS_CMD;
        }
        s
    }

    pub fn read_data(&mut self) -> u8 {
        if let Some((b, _)) = self.output.take() {
            self.last_read = b;
            // The line falls with the buffer; the next byte is a new edge.
            self.sync_irqs();
            self.fill_output();
        }
        self.last_read
    }

    fn answer(&mut self, byte: u8, src: Source) {
        if self.controller_out.len() >= CONTROLLER_QUEUE {
            tracing::debug!("i8042: output full, dropping controller answer {byte:#04x}");
            return;
        }
        self.controller_out.push_back((byte, src));
    }

    pub fn write_command(&mut self, cmd: u8) {
        self.last_was_command = true;
        // A new command abandons one still waiting for its data byte.
        self.pending = None;
        match cmd {
            0x20 => {
                let v = self.command_byte_value();
                self.answer(v, Source::Keyboard);
            }
            0x21..=0x3f => self.answer(0, Source::Keyboard),
            0x60 => self.pending = Some(Pending::CommandByte),
            0x61..=0x7f => self.pending = Some(Pending::Ram),
            0xa7 => self.command_byte |= CTR_AUX_DISABLE,
            0xa8 => self.command_byte &= !CTR_AUX_DISABLE,
            0xa9 | 0xab => self.answer(0x00, Source::Keyboard),
            0xaa => {
                self.sys = true;
                self.answer(0x55, Source::Keyboard);
            }
            0xad => self.command_byte |= CTR_KBD_DISABLE,
            0xae => self.command_byte &= !CTR_KBD_DISABLE,
            // Input port: bit 7 keyboard not inhibited, bit 5 no manufacturing jumper.
            0xc0 => self.answer(0xa0, Source::Keyboard),
            0xd0 => {
                let mut v = self.output_port & !(OUT_KBD_OBF | OUT_AUX_OBF);
                match self.output {
                    Some((_, Source::Keyboard)) => v |= OUT_KBD_OBF,
                    Some((_, Source::Aux)) => v |= OUT_AUX_OBF,
                    None => {}
                }
                self.answer(v, Source::Keyboard);
            }
            0xd1 => self.pending = Some(Pending::OutputPort),
            0xd2 => self.pending = Some(Pending::KbdBuffer),
            0xd3 => self.pending = Some(Pending::AuxBuffer),
            0xd4 => self.pending = Some(Pending::AuxDevice),
            0xe0 => self.answer(0, Source::Keyboard),
            0xf0..=0xff => {
                // Bits 0-3 low pulse output port lines 0-3; line 0 is the CPU reset.
                if cmd & 1 == 0 {
                    tracing::info!("i8042: reset pulse ({cmd:#04x})");
                    self.request_reset();
                }
            }
            _ => tracing::debug!("i8042: ignoring command {cmd:#04x}"),
        }
        self.fill_output();
    }

    pub fn write_data(&mut self, byte: u8) {
        self.last_was_command = false;
        match self.pending.take() {
            None => {
                self.command_byte &= !CTR_KBD_DISABLE;
                self.keyboard.write(byte);
            }
            Some(Pending::CommandByte) => {
                self.sys = byte & CTR_SYS != 0;
                self.command_byte = byte;
            }
            Some(Pending::OutputPort) => {
                self.output_port = byte;
                if byte & OUT_RESET == 0 {
                    tracing::info!("i8042: reset through the output port");
                    self.request_reset();
                }
            }
            Some(Pending::KbdBuffer) => self.answer(byte, Source::Keyboard),
            Some(Pending::AuxBuffer) => self.answer(byte, Source::Aux),
            Some(Pending::AuxDevice) => self.mouse.write(byte),
            Some(Pending::Ram) => {}
        }
        // Enable bits may have changed with a byte already waiting.
        self.sync_irqs();
        self.fill_output();
    }

    fn request_reset(&self) {
        if self.requests.send(MachineRequest::Reset).is_err() {
            tracing::debug!("i8042: nobody listens for reset requests");
        }
    }

    /// The next keyboard byte as the host sees it, through translation when XLATE is on.
    fn next_keyboard_byte(&mut self) -> Option<u8> {
        loop {
            let b = self.keyboard.pop()?;
            if self.command_byte & CTR_XLATE == 0 {
                return Some(b);
            }
            if b == 0xf0 {
                self.xlate_break = true;
                continue;
            }
            let mut t = translate_set2_to_set1(b);
            if std::mem::take(&mut self.xlate_break) {
                t |= 0x80;
            }
            return Some(t);
        }
    }

    /// Moves the next byte into an empty output buffer.
    fn fill_output(&mut self) {
        if self.output.is_none() {
            self.output = if let Some(a) = self.controller_out.pop_front() {
                Some(a)
            } else if self.command_byte & CTR_KBD_DISABLE == 0
                && let Some(b) = self.next_keyboard_byte()
            {
                Some((b, Source::Keyboard))
            } else if self.command_byte & CTR_AUX_DISABLE == 0
                && let Some(b) = self.mouse.pop()
            {
                Some((b, Source::Aux))
            } else {
                None
            };
        }
        self.sync_irqs();
    }

    /// Pulses IRQ 1 / 12 on each rising edge of the 8042's interrupt outputs.
    fn sync_irqs(&mut self) {
        let kbd = matches!(self.output, Some((_, Source::Keyboard)))
            && self.command_byte & CTR_KBD_INT != 0;
        let aux =
            matches!(self.output, Some((_, Source::Aux))) && self.command_byte & CTR_AUX_INT != 0;
        if kbd && !self.kbd_irq_level {
            self.kbd_irq.pulse();
        }
        if aux && !self.aux_irq_level {
            self.mouse_irq.pulse();
        }
        self.kbd_irq_level = kbd;
        self.aux_irq_level = aux;
    }
}

/// One of the controller's two ports on the bus (0x61–0x63 between them belong to others).
struct Port {
    dev: Arc<Mutex<I8042>>,
    status: bool,
}

impl Port {
    fn lock(&self) -> MutexGuard<'_, I8042> {
        // A panic elsewhere must not take the keyboard down with it.
        self.dev.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl BusDevice for Port {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        let v = if self.status {
            self.lock().read_status()
        } else {
            self.lock().read_data()
        };
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let Some(&b) = data.first() else { return };
        if self.status {
            self.lock().write_command(b);
        } else {
            self.lock().write_data(b);
        }
    }
}

/// Puts the controller on the port bus at 0x60 and 0x64.
pub fn attach(pio: &Bus, dev: Arc<Mutex<I8042>>) -> Result<(), BusError> {
    let data = Port {
        dev: dev.clone(),
        status: false,
    };
    let status = Port { dev, status: true };
    pio.insert(DATA_PORT, 1, Arc::new(Mutex::new(data)))?;
    if let Err(e) = pio.insert(STATUS_PORT, 1, Arc::new(Mutex::new(status))) {
        pio.remove(DATA_PORT);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::ps2_keyboard::{LED_CAPS_LOCK, LED_NUM_LOCK, LED_SCROLL_LOCK};
    use crate::devices::ps2_mouse::BUTTON_LEFT;
    use crate::irq::RecordingIrq;

    const ACK: u8 = 0xfa;

    /// The controller on a port bus, as a guest sees it, with recording IRQ lines.
    struct Pc {
        bus: Bus,
        dev: Arc<Mutex<I8042>>,
        irq1: Arc<RecordingIrq>,
        irq12: Arc<RecordingIrq>,
        requests: crossbeam_channel::Receiver<MachineRequest>,
    }

    impl Pc {
        fn new() -> Self {
            let (tx, rx) = crossbeam_channel::unbounded();
            let irq1 = RecordingIrq::new();
            let irq12 = RecordingIrq::new();
            let dev = Arc::new(Mutex::new(I8042::new(irq1.clone(), irq12.clone(), tx)));
            let bus = Bus::new();
            attach(&bus, dev.clone()).unwrap();
            Pc {
                bus,
                dev,
                irq1,
                irq12,
                requests: rx,
            }
        }

        fn inb(&self, port: u64) -> u8 {
            let mut b = [0];
            assert!(self.bus.read(port, &mut b));
            b[0]
        }

        fn outb(&self, port: u64, v: u8) {
            assert!(self.bus.write(port, &[v]));
        }

        fn status(&self) -> u8 {
            self.inb(STATUS_PORT)
        }

        /// i8042_wait_write: the input buffer must be empty before each write.
        fn wait_write(&self) {
            assert_eq!(self.status() & STATUS_IBF, 0, "input buffer stays busy");
        }

        /// i8042_wait_read / ps2_recvbyte: poll the status register, then read.
        fn recv(&self) -> Option<(u8, bool)> {
            let s = self.status();
            (s & STATUS_OBF != 0).then(|| (self.inb(DATA_PORT), s & STATUS_AUX_OBF != 0))
        }

        fn recv_all(&self) -> Vec<u8> {
            std::iter::from_fn(|| self.recv().map(|(b, _)| b)).collect()
        }

        /// i8042_command: the command, its parameters on 0x60, `receive` answers.
        fn ctl(&self, cmd: u8, params: &[u8], receive: usize) -> Vec<u8> {
            self.wait_write();
            self.outb(STATUS_PORT, cmd);
            for &p in params {
                self.wait_write();
                self.outb(DATA_PORT, p);
            }
            (0..receive)
                .map(|_| self.recv().expect("controller answers").0)
                .collect()
        }

        /// A byte to the keyboard, as i8042_kbd_write does it.
        fn kbd_write(&self, b: u8) {
            self.wait_write();
            self.outb(DATA_PORT, b);
        }

        /// A byte to the mouse through 0xD4.
        fn aux_write(&self, b: u8) {
            self.ctl(0xd4, &[b], 0);
        }

        /// The interrupt handler's read: status (which port?) then data.
        fn isr_read(&self) -> (u8, bool) {
            let s = self.status();
            assert_ne!(s & STATUS_OBF, 0, "interrupt without data");
            (self.inb(DATA_PORT), s & STATUS_AUX_OBF != 0)
        }

        fn key(&self, code: u16, down: bool) {
            self.dev.lock().unwrap().key_event(code, down);
        }

        /// SeaBIOS's ps2_recvbyte: bytes from the other port are discarded.
        fn seabios_recv(&self, aux: bool) -> Option<u8> {
            loop {
                let (b, from_aux) = self.recv()?;
                if from_aux == aux {
                    return Some(b);
                }
            }
        }

        /// SeaBIOS's __ps2_command: interrupts and both ports off, then the target port
        /// on, the command and its ACK (and parameters), answers, then the old command
        /// byte back.
        fn seabios_command(
            &self,
            aux: bool,
            ctr: u8,
            cmd: u8,
            params: &[u8],
            receive: usize,
        ) -> Vec<u8> {
            let off = (ctr | CTR_AUX_DISABLE | CTR_KBD_DISABLE) & !(CTR_KBD_INT | CTR_AUX_INT);
            self.ctl(0x60, &[off], 0);
            let port = if aux {
                CTR_AUX_DISABLE
            } else {
                CTR_KBD_DISABLE
            };
            self.ctl(0x60, &[off & !port], 0);
            let send = |b: u8| {
                if aux {
                    self.aux_write(b);
                } else {
                    self.kbd_write(b);
                }
                assert_eq!(self.seabios_recv(aux), Some(ACK), "byte {b:#x}");
            };
            send(cmd);
            params.iter().for_each(|&p| send(p));
            // The second byte of a reset may never come; SeaBIOS then uses 0.
            let got = (0..receive)
                .map(|_| self.seabios_recv(aux).unwrap_or(0))
                .collect();
            self.ctl(0x60, &[ctr], 0);
            got
        }

        fn seabios_kbd_command(&self, ctr: u8, cmd: u8, params: &[u8], receive: usize) -> Vec<u8> {
            self.seabios_command(false, ctr, cmd, params, receive)
        }
    }

    #[test]
    fn seabios_mouse_commands() {
        // What int 15h AX=C2xx does through ps2_mouse_command.
        let pc = Pc::new();
        let ctr = CTR_AUX_DISABLE | CTR_XLATE | CTR_KBD_INT;
        pc.ctl(0x60, &[ctr], 0);
        // A key typed meanwhile is skipped by ps2_recvbyte, not taken for an answer.
        pc.key(0x1e, true);
        assert_eq!(pc.seabios_command(true, ctr, 0xff, &[], 2), [0xaa, 0x00]);
        assert_eq!(pc.seabios_command(true, ctr, 0xf2, &[], 1), [0x00]);
        pc.seabios_command(true, ctr, 0xf3, &[100], 0);
        pc.seabios_command(true, ctr, 0xe8, &[2], 0);
        assert_eq!(pc.seabios_command(true, ctr, 0xe9, &[], 3), [0x00, 2, 100]);
        // PSMOUSE_CMD_ENABLE: SeaBIOS turns the aux port and its interrupt on.
        let ctr = (ctr | CTR_AUX_INT) & !CTR_AUX_DISABLE;
        pc.seabios_command(true, ctr, 0xf4, &[], 0);
        assert!(pc.dev.lock().unwrap().mouse().reporting());
        assert_eq!(pc.irq12.edges(), 0, "answers were polled");
        pc.dev.lock().unwrap().mouse_event(3, 0, 0, BUTTON_LEFT);
        let mut packet = Vec::new();
        while pc.status() & STATUS_OBF != 0 {
            packet.push(pc.isr_read());
        }
        assert_eq!(packet, [(0x09, true), (3, true), (0, true)]);
        assert_eq!(pc.irq12.edges(), 3);
    }

    #[test]
    fn seabios_ps2port_setup_then_typing() {
        let pc = Pc::new();
        // i8042_flush: nothing pending after power-on.
        assert_eq!(pc.status() & STATUS_OBF, 0);
        assert_eq!(pc.ctl(0xaa, &[], 1), [0x55]);
        assert_ne!(
            pc.status() & STATUS_SYS,
            0,
            "self-test sets the system flag"
        );
        assert_eq!(pc.ctl(0xab, &[], 1), [0x00]);
        // The power-on command byte has the keyboard interrupt on, so those two answers
        // each raised IRQ 1 while SeaBIOS polled; its yield() after the first command
        // byte write is there to flush such stale interrupts.
        assert_eq!(pc.irq1.edges(), 2);
        let mut ctr = CTR_KBD_DISABLE | CTR_AUX_DISABLE;
        // ATKBD_CMD_RESET_BAT: ACK, then 0xAA and (maybe) a second byte.
        assert_eq!(pc.seabios_kbd_command(ctr, 0xff, &[], 2), [0xaa, 0x00]);
        pc.seabios_kbd_command(ctr, 0xf5, &[], 0);
        pc.seabios_kbd_command(ctr, 0xf0, &[0x02], 0);
        ctr = CTR_AUX_DISABLE | CTR_XLATE | CTR_KBD_INT;
        pc.seabios_kbd_command(ctr, 0xf4, &[], 0);
        assert_eq!(
            pc.irq1.edges(),
            2,
            "the commands were polled with interrupts off"
        );
        // The command byte owns the system flag; SeaBIOS writes it clear.
        assert_eq!(pc.ctl(0x20, &[], 1), [ctr]);
        assert_eq!(pc.status() & STATUS_SYS, 0);

        // handle_09: one interrupt per byte, set-1 bytes out of a set-2 keyboard.
        let edges = pc.irq1.edges();
        let mut got = Vec::new();
        for (code, down) in [(0x1e, true), (0x1e, false), (0xe048, true), (0xe048, false)] {
            pc.key(code, down);
            while pc.status() & STATUS_OBF != 0 {
                let (b, aux) = pc.isr_read();
                assert!(!aux);
                got.push(b);
                // The ISR's "turn the keyboard back on" must be harmless.
                pc.ctl(0xae, &[], 0);
            }
        }
        assert_eq!(got, [0x1e, 0x9e, 0xe0, 0x48, 0xe0, 0xc8]);
        assert_eq!(pc.irq1.edges(), edges + got.len());
        assert_eq!(pc.irq12.edges(), 0);
    }

    #[test]
    fn untranslated_set_2_bytes() {
        let pc = Pc::new();
        pc.ctl(0x60, &[CTR_KBD_INT], 0);
        pc.key(0x1c, true);
        pc.key(0x1c, false);
        pc.key(0xe01c, true);
        pc.key(0xe01c, false);
        pc.key(0x3b, true); // F1
        assert_eq!(
            pc.recv_all(),
            [0x5a, 0xf0, 0x5a, 0xe0, 0x5a, 0xe0, 0xf0, 0x5a, 0x05]
        );
        // Translation applies to the keyboard's answers too, as on real hardware.
        pc.kbd_write(0xf2);
        assert_eq!(pc.recv_all(), [ACK, 0xab, 0x83]);
        pc.ctl(0x60, &[CTR_KBD_INT | CTR_XLATE], 0);
        pc.kbd_write(0xf2);
        assert_eq!(pc.recv_all(), [ACK, 0xab, 0x41]);
        pc.key(0x41, true); // F7, whose set-2 code is 0x83
        pc.key(0x41, false);
        assert_eq!(pc.recv_all(), [0x41, 0xc1]);
    }

    #[test]
    fn translated_specials_come_out_as_set_1() {
        let pc = Pc::new();
        pc.key(0xe037, true);
        pc.key(0xe037, false);
        assert_eq!(
            pc.recv_all(),
            [0xe0, 0x2a, 0xe0, 0x37, 0xe0, 0xb7, 0xe0, 0xaa]
        );
        pc.key(0xe11d, true);
        assert_eq!(pc.recv_all(), [0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5]);
        // Every set-1 make and break code survives set 2 and translation.
        for code in 1u16..0x80 {
            if code == 0x37 || code == 0x46 {
                continue; // E0 37 and E0 46 are PrintScreen and Pause, above
            }
            pc.key(code, true);
            pc.key(code, false);
            pc.key(0xe000 | code, true);
            assert_eq!(
                pc.recv_all(),
                [code as u8, code as u8 | 0x80, 0xe0, code as u8],
                "{code:#x}"
            );
            pc.key(0xe000 | code, false);
            pc.recv_all();
        }
    }

    #[test]
    fn led_command() {
        let pc = Pc::new();
        pc.kbd_write(0xed);
        assert_eq!(pc.recv(), Some((ACK, false)));
        pc.kbd_write(LED_CAPS_LOCK | LED_SCROLL_LOCK);
        assert_eq!(pc.recv(), Some((ACK, false)));
        assert_eq!(
            pc.dev.lock().unwrap().leds(),
            LED_CAPS_LOCK | LED_SCROLL_LOCK
        );
        pc.kbd_write(0xed);
        pc.kbd_write(LED_NUM_LOCK);
        assert_eq!(pc.recv_all(), [ACK, ACK]);
        assert_eq!(pc.dev.lock().unwrap().leds(), LED_NUM_LOCK);
    }

    #[test]
    fn linux_atkbd_probe_interrupt_driven() {
        let pc = Pc::new();
        // i8042_controller_init: read the command byte (twice), disable the keyboard
        // port and its interrupt, keep XLATE as the BIOS left it.
        let ctr = pc.ctl(0x20, &[], 1)[0];
        assert_eq!(pc.ctl(0x20, &[], 1)[0], ctr);
        assert_ne!(ctr & CTR_XLATE, 0);
        let mut ctr = (ctr | CTR_KBD_DISABLE) & !CTR_KBD_INT;
        pc.ctl(0x60, &[ctr], 0);
        // i8042_enable_kbd_port when serio opens.
        ctr = (ctr & !CTR_KBD_DISABLE) | CTR_KBD_INT;
        pc.ctl(0x60, &[ctr], 0);
        // atkbd: deactivate, identify, LEDs off, scan set 2, typematic, enable. Each
        // answer byte arrives through IRQ 1.
        let mut answers = Vec::new();
        let edges = pc.irq1.edges();
        for b in [0xf5, 0xf2, 0xed, 0x00, 0xf0, 0x02, 0xf3, 0x00, 0xf4] {
            pc.kbd_write(b);
            while pc.status() & STATUS_OBF != 0 {
                answers.push(pc.isr_read());
            }
        }
        let bytes: Vec<u8> = answers.iter().map(|&(b, _)| b).collect();
        assert_eq!(
            bytes,
            [ACK, ACK, 0xab, 0x41, ACK, ACK, ACK, ACK, ACK, ACK, ACK]
        );
        assert!(answers.iter().all(|&(_, aux)| !aux));
        assert_eq!(pc.irq1.edges(), edges + bytes.len());
        let kbd = pc.dev.lock().unwrap();
        assert!(kbd.keyboard().scanning());
        assert_eq!(kbd.keyboard().scancode_set(), 2);
        assert_eq!(kbd.keyboard().typematic(), 0);
    }

    #[test]
    fn linux_aux_checks_and_psmouse_probe() {
        let pc = Pc::new();
        let mut ctr = CTR_KBD_INT | CTR_XLATE | CTR_SYS | CTR_AUX_DISABLE;
        pc.ctl(0x60, &[ctr], 0);
        // i8042_check_aux: loopback must come back as aux data.
        pc.ctl(0xd3, &[0x5a], 0);
        assert_eq!(pc.recv(), Some((0x5a, true)));
        pc.ctl(0xa7, &[], 0);
        assert_ne!(pc.ctl(0x20, &[], 1)[0] & CTR_AUX_DISABLE, 0);
        pc.ctl(0xa8, &[], 0);
        assert_eq!(pc.ctl(0x20, &[], 1)[0] & CTR_AUX_DISABLE, 0);
        assert_eq!(pc.irq12.edges(), 0);
        // The IRQ test: loopback with the aux interrupt on raises IRQ 12.
        ctr = (ctr & !CTR_AUX_DISABLE) | CTR_AUX_INT;
        pc.ctl(0x60, &[ctr], 0);
        pc.ctl(0xd3, &[0xa5], 0);
        assert_eq!(pc.irq12.edges(), 1);
        assert_eq!(pc.isr_read(), (0xa5, true));
        // i8042_set_mux_mode: a plain controller echoes the third byte unchanged.
        for b in [0xf0, 0x56, 0xa4] {
            pc.ctl(0xd3, &[b], 0);
            assert_eq!(pc.isr_read(), (b, true));
        }
        assert_eq!(pc.ctl(0xa9, &[], 1), [0x00]);

        let mouse_cmd = |bytes: &[u8]| -> Vec<u8> {
            let mut out = Vec::new();
            for &b in bytes {
                pc.aux_write(b);
                while pc.status() & STATUS_OBF != 0 {
                    let (b, aux) = pc.isr_read();
                    assert!(aux, "mouse bytes are aux data");
                    out.push(b);
                }
            }
            out
        };
        assert_eq!(mouse_cmd(&[0xff]), [ACK, 0xaa, 0x00]);
        assert_eq!(mouse_cmd(&[0xf2]), [ACK, 0x00]);
        assert_eq!(mouse_cmd(&[0xf3, 200, 0xf3, 100, 0xf3, 80]), [ACK; 6]);
        assert_eq!(mouse_cmd(&[0xf2]), [ACK, 0x03]);
        assert_eq!(mouse_cmd(&[0xe8, 0x03, 0xe6, 0xf3, 100]), [ACK; 5]);
        let edges = pc.irq12.edges();
        assert_eq!(mouse_cmd(&[0xf4]), [ACK]);
        assert_eq!(pc.irq12.edges(), edges + 1);

        // Movement: right 10, up 20, left button; then left 5, down 7.
        let mut packets = Vec::new();
        let edges = pc.irq12.edges();
        let kbd_edges = pc.irq1.edges();
        for (dx, dy, buttons) in [(10, -20, BUTTON_LEFT), (-5, 7, 0)] {
            pc.dev.lock().unwrap().mouse_event(dx, dy, 0, buttons);
            while pc.status() & STATUS_OBF != 0 {
                let (b, aux) = pc.isr_read();
                assert!(aux);
                packets.push(b);
            }
        }
        assert_eq!(packets, [0x09, 10, 20, 0x00, 0x38, 0xfb, 0xf9, 0x00]);
        assert_eq!(pc.irq12.edges(), edges + 8);
        assert_eq!(pc.irq1.edges(), kbd_edges);
    }

    #[test]
    fn reset_lines() {
        let pc = Pc::new();
        pc.ctl(0xfe, &[], 0);
        assert_eq!(pc.requests.try_recv(), Ok(MachineRequest::Reset));
        pc.ctl(0xff, &[], 0);
        assert!(pc.requests.try_recv().is_err(), "0xFF pulses nothing");
        // Gate A20 the classic way: no reset.
        pc.ctl(0xd1, &[0xdf], 0);
        assert!(pc.requests.try_recv().is_err());
        assert!(pc.dev.lock().unwrap().a20());
        let out = pc.ctl(0xd0, &[], 1)[0];
        assert_eq!(out & (OUT_RESET | OUT_A20), OUT_RESET | OUT_A20);
        pc.ctl(0xd1, &[0xdd], 0);
        assert!(!pc.dev.lock().unwrap().a20());
        assert!(pc.requests.try_recv().is_err());
        pc.ctl(0xd1, &[0xde], 0);
        assert_eq!(pc.requests.try_recv(), Ok(MachineRequest::Reset));
        // A command in place of 0xD1's data byte is a command, not an output port write.
        pc.ctl(0xd1, &[], 0);
        pc.ctl(0xf0 | 0x0e, &[], 0);
        assert_eq!(pc.requests.try_recv(), Ok(MachineRequest::Reset));
        assert!(pc.requests.try_recv().is_err());
    }

    #[test]
    fn irq_edges_follow_the_enable_bits() {
        let pc = Pc::new();
        pc.ctl(0x60, &[CTR_XLATE], 0);
        pc.key(0x1e, true);
        assert_eq!(pc.irq1.edges(), 0, "keyboard interrupt disabled");
        assert_ne!(pc.status() & STATUS_OBF, 0);
        // Enabling the interrupt with a byte waiting raises it then.
        pc.ctl(0x60, &[CTR_XLATE | CTR_KBD_INT], 0);
        assert_eq!(pc.irq1.edges(), 1);
        assert_eq!(pc.isr_read(), (0x1e, false));
        // Mouse data with only the keyboard interrupt on: no IRQ 12, and never IRQ 1.
        pc.aux_write(0xf4);
        assert_eq!(pc.recv(), Some((ACK, true)));
        pc.dev.lock().unwrap().mouse_event(1, 0, 0, 0);
        assert_eq!(pc.recv_all(), [0x08, 1, 0]);
        assert_eq!(pc.irq12.edges(), 0);
        assert_eq!(pc.irq1.edges(), 1);
        // D2 is keyboard data (IRQ 1), D3 aux data (IRQ 12 once enabled).
        pc.ctl(0xd2, &[0x99], 0);
        assert_eq!(pc.irq1.edges(), 2);
        assert_eq!(pc.isr_read(), (0x99, false));
        pc.ctl(0x60, &[CTR_XLATE | CTR_AUX_INT], 0);
        pc.ctl(0xd3, &[0x77], 0);
        assert_eq!(pc.irq12.edges(), 1);
        assert_eq!(pc.isr_read(), (0x77, true));
        pc.key(0x1e, false);
        assert_eq!(pc.recv_all(), [0x9e]);
        assert_eq!(pc.irq1.edges(), 2);
    }

    #[test]
    fn disabled_ports_hold_their_data() {
        let pc = Pc::new();
        pc.ctl(0xad, &[], 0);
        pc.key(0x1e, true);
        assert_eq!(pc.status() & STATUS_OBF, 0);
        pc.ctl(0xae, &[], 0);
        assert_eq!(pc.recv_all(), [0x1e]);
        pc.ctl(0xa7, &[], 0);
        pc.aux_write(0xf4);
        assert_eq!(
            pc.recv_all(),
            Vec::<u8>::new(),
            "the ACK waits behind the disabled port"
        );
        pc.ctl(0xa8, &[], 0);
        assert_eq!(pc.recv(), Some((ACK, true)));
        // Writing to the keyboard re-enables its port.
        pc.ctl(0xad, &[], 0);
        pc.kbd_write(0xee);
        assert_eq!(pc.recv_all(), [0xee]);
        assert_eq!(pc.ctl(0x20, &[], 1)[0] & CTR_KBD_DISABLE, 0);
    }

    #[test]
    fn key_flood_is_bounded() {
        let pc = Pc::new();
        for _ in 0..200 {
            pc.key(0x1e, true);
            pc.key(0x1e, false);
        }
        let got = pc.recv_all();
        // The output buffer plus the keyboard's 16 bytes, ending in the overrun marker
        // (set 2's 0x00, translated to set 1's 0xFF).
        assert!(got.len() <= 17, "{} bytes", got.len());
        assert_eq!(got.last(), Some(&0xff));
        assert_eq!(&got[..3], [0x1e, 0x9e, 0x1e]);
        // Answers to a guest that never reads are bounded too.
        for _ in 0..100 {
            pc.outb(STATUS_PORT, 0x20);
        }
        assert!(pc.recv_all().len() <= CONTROLLER_QUEUE + 1);
    }

    #[test]
    fn empty_buffer_rereads_last_byte_and_wide_accesses_are_harmless() {
        let pc = Pc::new();
        assert_eq!(pc.ctl(0xaa, &[], 1), [0x55]);
        assert_eq!(pc.inb(DATA_PORT), 0x55);
        pc.bus.write(STATUS_PORT, &[]);
        assert_eq!(pc.inb(DATA_PORT), 0x55);
        // 0x61 stays free for the PIT speaker port.
        let bus = &pc.bus;
        assert!(!bus.read(0x61, &mut [0]));
    }

    #[test]
    fn random_guest_and_host_input_never_panics_or_grows() {
        let pc = Pc::new();
        let mut noise = crate::noise::Noise::new(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200_000 {
            let r = noise.next();
            let b = (r >> 8) as u8;
            match r % 8 {
                0 | 1 => pc.outb(DATA_PORT, b),
                // Reset pulses would only fill the request channel; skip the even
                // 0xFx ones half the time to keep commands flowing.
                2 => pc.outb(STATUS_PORT, if b >= 0xf0 { b | 1 } else { b }),
                3 | 4 => {
                    pc.inb(DATA_PORT);
                }
                5 => {
                    pc.inb(STATUS_PORT);
                }
                6 => pc.key((r >> 16) as u16, r & (1 << 40) != 0),
                _ => pc.dev.lock().unwrap().mouse_event(
                    (r >> 16) as i32,
                    ((r >> 24) as i32).wrapping_mul(1000),
                    (r >> 32) as i8 as i32,
                    b,
                ),
            }
            let dev = pc.dev.lock().unwrap();
            assert!(dev.controller_out.len() <= CONTROLLER_QUEUE);
        }
        // Whatever state that left, a reset and SeaBIOS's init still work.
        pc.dev.lock().unwrap().reset();
        pc.ctl(0x60, &[CTR_KBD_DISABLE | CTR_AUX_DISABLE], 0);
        pc.recv_all();
        assert_eq!(pc.ctl(0xaa, &[], 1), [0x55]);
        let ctr = CTR_KBD_DISABLE | CTR_AUX_DISABLE;
        assert_eq!(pc.seabios_kbd_command(ctr, 0xff, &[], 2), [0xaa, 0x00]);
    }

    /// Records what the guest writes to its ports (the KVM test's "serial").
    struct Recorder(Arc<Mutex<Vec<(u64, u8)>>>);

    impl BusDevice for Recorder {
        fn read(&mut self, _offset: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.lock().unwrap().push((offset, data[0]));
        }
    }

    /// A real-mode program, assembled from this source with GNU as (`.code16`, linked at
    /// 0x7C00): it sets up the PIC (IRQ 1 on vector 9, all else masked), writes the
    /// command byte 0x61 (keyboard interrupt, XLATE, aux off), says "ready" on port 0x81
    /// and halts; its IRQ 1 handler reads 0x64 then 0x60, writes the byte to port 0x80,
    /// sends EOI and returns.
    ///
    /// ```text
    /// cli; xor ax,ax; mov ds,ax; mov ss,ax; mov sp,0x7000
    /// mov word [0x24],isr; mov word [0x26],0
    /// out 0x20,0x11; out 0x21,0x08; out 0x21,0x04; out 0x21,0x01; out 0x21,0xfd
    /// out 0x64,0x60; out 0x60,0x61; out 0x81,al
    /// idle: sti; hlt; jmp idle
    /// isr: push ax; in al,0x64; in al,0x60; out 0x80,al; out 0x20,0x20; pop ax; iret
    /// ```
    const IRQ1_PROGRAM: [u8; 69] = [
        0xfa, 0x31, 0xc0, 0x8e, 0xd8, 0x8e, 0xd0, 0xbc, 0x00, 0x70, 0xc7, 0x06, 0x24, 0x00, 0x38,
        0x7c, 0xc7, 0x06, 0x26, 0x00, 0x00, 0x00, 0xb0, 0x11, 0xe6, 0x20, 0xb0, 0x08, 0xe6, 0x21,
        0xb0, 0x04, 0xe6, 0x21, 0xb0, 0x01, 0xe6, 0x21, 0xb0, 0xfd, 0xe6, 0x21, 0xb0, 0x60, 0xe6,
        0x64, 0xb0, 0x61, 0xe6, 0x60, 0xe6, 0x81, 0xfb, 0xf4, 0xeb, 0xfc, 0x50, 0xe4, 0x64, 0xe4,
        0x60, 0xe6, 0x80, 0xb0, 0x20, 0xe6, 0x20, 0x58, 0xcf,
    ];

    /// The edge-per-byte choice against KVM's real in-kernel PIC: a burst of bytes, each
    /// loaded while the previous interrupt is still in service, must each reach the
    /// handler. Skipped where /dev/kvm cannot be opened.
    #[test]
    fn kvm_pic_takes_one_interrupt_per_byte() {
        use crate::kvm::{KvmVm, vcpu};
        use std::time::{Duration, Instant};
        use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

        let Ok(kvm) = crate::kvm::open() else {
            eprintln!("no usable /dev/kvm: skipping");
            return;
        };
        let vm = KvmVm::new(&kvm).expect("VM");
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        mem.write_slice(&IRQ1_PROGRAM, GuestAddress(0x7c00))
            .unwrap();
        vm.map_memory(&mem, |_| false).expect("map memory");

        let (tx, _rx) = crossbeam_channel::unbounded();
        let dev = Arc::new(Mutex::new(I8042::new(
            vm.irq_line(KBD_IRQ),
            vm.irq_line(MOUSE_IRQ),
            tx,
        )));
        let pio = Arc::new(Bus::new());
        attach(&pio, dev.clone()).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        pio.insert(0x80, 2, Arc::new(Mutex::new(Recorder(log.clone()))))
            .unwrap();

        let fd = vcpu::create(&kvm, &vm, 0, 1).expect("vCPU");
        let mut sregs = fd.get_sregs().unwrap();
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        fd.set_sregs(&sregs).unwrap();
        let mut regs = fd.get_regs().unwrap();
        regs.rip = 0x7c00;
        regs.rflags = 2;
        fd.set_regs(&regs).unwrap();

        let control = vcpu::RunControl::new();
        let (events_tx, events) = crossbeam_channel::unbounded();
        let thread = vcpu::spawn(
            0,
            fd,
            pio.clone(),
            Arc::new(Bus::new()),
            control.clone(),
            events_tx,
        )
        .unwrap();

        let wait_for = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while log.lock().unwrap().len() < n && Instant::now() < deadline {
                if let Ok(e) = events.try_recv() {
                    panic!("vCPU stopped: {e:?}");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            log.lock().unwrap().clone()
        };
        assert_eq!(wait_for(1), [(1, 0x61)], "the program got going");
        // Give the guest time to reach hlt, then a burst: ten bytes queued at once.
        std::thread::sleep(Duration::from_millis(50));
        {
            let mut d = dev.lock().unwrap();
            d.key_event(0x1e, true);
            d.key_event(0x1e, false);
            d.key_event(0xe048, true);
            d.key_event(0xe048, false);
            d.key_event(0xe037, true);
        }
        let got = wait_for(11);
        control.stop();
        thread.join();
        let bytes: Vec<u8> = got[1..].iter().map(|&(_, b)| b).collect();
        assert_eq!(
            bytes,
            [0x1e, 0x9e, 0xe0, 0x48, 0xe0, 0xc8, 0xe0, 0x2a, 0xe0, 0x37],
            "{got:x?}"
        );
        assert!(got[1..].iter().all(|&(port, _)| port == 0));
    }
}
