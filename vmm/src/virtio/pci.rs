//! The modern virtio-pci transport (virtio 1.0, 4.1) for any [`VirtioDevice`].
//!
//! The function has vendor 1af4, device 0x1040 + the virtio type, revision 1 and subsystem
//! 1af4:1100 as QEMU's modern devices do, so Linux's virtio_pci_modern and SeaBIOS's
//! virtio drivers bind to it. One 32-bit memory BAR (BAR 0, 16 KiB) holds four regions,
//! each named by a vendor capability in configuration space:
//!
//! | BAR offset | capability          | contents                                     |
//! |-----------:|---------------------|----------------------------------------------|
//! | 0x0000     | COMMON_CFG (type 1) | features, status, queue registers             |
//! | 0x1000     | ISR_CFG (type 3)    | ISR status, read to clear (lowers INTx)      |
//! | 0x2000     | DEVICE_CFG (type 4) | the device's own configuration               |
//! | 0x3000     | NOTIFY_CFG (type 2) | queue `n` is notified by a write at `4 * n`  |
//! | 0x4000     | MSI-X (id 0x11)     | the MSI-X table, one vector per queue + 1    |
//! | 0x5000     | MSI-X (id 0x11)     | the MSI-X pending-bit array                  |
//!
//! and a PCI_CFG capability (type 5) gives the same registers through configuration
//! space, as the spec requires (SeaBIOS uses it for BARs above 4 GiB).
//!
//! A 32-bit BAR rather than QEMU's 64-bit one: SeaBIOS then always reaches it directly
//! (it switches to the slower configuration-space window for a BAR above 4 GiB), and 32 KiB
//! per device fits the 32-bit hole comfortably. QEMU puts the MSI-X table in a BAR of its
//! own; one BAR is simpler here and drivers find the table through the capability either
//! way.
//!
//! Interrupts: INTx (the pin is INTA#, the line the machine passes, normally from
//! `PcChipset::intx_line`), level-triggered, lowered when the driver reads the ISR; and,
//! when the machine can deliver messages ([`FastPaths::msi`]), an MSI-X capability with
//! a vector for each queue and one for configuration changes, which Linux enables and
//! SeaBIOS does not (see [`super::Interrupt`]). The PCI command register's INTx-disable bit
//! is not honoured.
//!
//! Notifications arrive as MMIO writes on the bus and are handed to the device on the
//! writing vCPU's thread, unless the machine offers doorbells ([`FastPaths::doorbells`]):
//! then each queue's notify slot is an eventfd served by the device's own thread
//! ([`super::notify`]), following the BAR wherever it is programmed.
//!
//! Feature negotiation: the device offers its own features plus VIRTIO_F_VERSION_1,
//! INDIRECT_DESC and EVENT_IDX. FEATURES_OK stays clear when the driver accepted features
//! not offered or left out VERSION_1 (so a legacy-only driver is refused, as the spec
//! requires). DRIVER_OK without FEATURES_OK, or with a queue whose rings lie outside guest
//! memory, sets DEVICE_NEEDS_RESET instead of starting the device. Writing 0 to the
//! status resets the device and its queues.

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};

use super::notify::QueueDoorbells;
use super::{
    Activation, Interrupt, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC, VirtioDevice, status,
};
use crate::bus::{BusDevice, SharedDevice};
use crate::doorbell::Doorbells;
use crate::irq::IrqLine;
use crate::memory::GuestMem;
use crate::pause::DeviceGate;
use crate::pci::config::PciConfig;
use crate::pci::msix::{MsiSink, Msix};
use crate::pci::regs::{self, STATUS, SUBSYSTEM_ID_QEMU, SUBSYSTEM_VENDOR_QEMU};
use crate::pci::{BarKind, PciFunction, PciRegion, PciSpace};

pub const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
/// Modern device ids are 0x1040 + the virtio device type.
pub const VIRTIO_PCI_DEVICE_BASE: u16 = 0x1040;
pub const VIRTIO_PCI_REVISION: u8 = 1;

pub const BAR_INDEX: usize = 0;
pub const BAR_SIZE: u64 = 0x8000;
pub const COMMON_OFFSET: u64 = 0x0000;
pub const ISR_OFFSET: u64 = 0x1000;
pub const DEVICE_OFFSET: u64 = 0x2000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
pub const MSIX_PBA_OFFSET: u64 = 0x5000;
pub const REGION_LEN: u64 = 0x1000;
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;

/// Where in the BAR the driver writes to notify `queue`.
pub const fn notify_offset(queue: u16) -> u64 {
    NOTIFY_OFFSET + queue as u64 * NOTIFY_OFF_MULTIPLIER as u64
}

/// virtio_pci_cap cfg_type values (virtio 1.0, 4.1.4).
pub const CAP_COMMON_CFG: u8 = 1;
pub const CAP_NOTIFY_CFG: u8 = 2;
pub const CAP_ISR_CFG: u8 = 3;
pub const CAP_DEVICE_CFG: u8 = 4;
pub const CAP_PCI_CFG: u8 = 5;
const PCI_CAP_ID_VNDR: u8 = 0x09;
const STATUS_CAP_LIST: u16 = 0x10;

/// Where the capabilities sit in configuration space.
pub const CAP_COMMON: u16 = 0x40;
pub const CAP_ISR: u16 = 0x50;
pub const CAP_DEVICE: u16 = 0x60;
pub const CAP_NOTIFY: u16 = 0x70;
pub const CAP_PCI: u16 = 0x84;
const CAP_PCI_LEN: u16 = 20;
pub const CAP_MSIX: u16 = CAP_PCI + CAP_PCI_LEN;
/// Offsets inside virtio_pci_cap.
const CAP_BAR: u16 = 4;
const CAP_OFFSET: u16 = 8;
const CAP_LENGTH: u16 = 12;
const PCI_CFG_DATA: u16 = 16;

/// Common configuration registers (struct virtio_pci_common_cfg).
pub mod common {
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    pub const DEVICE_FEATURE: u64 = 0x04;
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    pub const DRIVER_FEATURE: u64 = 0x0c;
    pub const MSIX_CONFIG: u64 = 0x10;
    pub const NUM_QUEUES: u64 = 0x12;
    pub const DEVICE_STATUS: u64 = 0x14;
    pub const CONFIG_GENERATION: u64 = 0x15;
    pub const QUEUE_SELECT: u64 = 0x16;
    pub const QUEUE_SIZE: u64 = 0x18;
    pub const QUEUE_MSIX_VECTOR: u64 = 0x1a;
    pub const QUEUE_ENABLE: u64 = 0x1c;
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
    pub const QUEUE_DESC: u64 = 0x20;
    pub const QUEUE_DRIVER: u64 = 0x28;
    pub const QUEUE_DEVICE: u64 = 0x30;
    pub const LEN: u64 = 0x38;
}

/// What the machine offers beyond trapped MMIO and the INTx line. Without either, the
/// transport works as plain PCI (the device-level tests run so).
#[derive(Clone, Default)]
pub struct FastPaths {
    /// Message delivery: with it, functions offer MSI-X.
    pub msi: Option<Arc<dyn MsiSink>>,
    /// Queue notifications as eventfds served by a thread per device.
    pub doorbells: Option<Arc<dyn Doorbells>>,
    /// What those threads pass while the VM runs (not while it is paused).
    pub gate: Arc<DeviceGate>,
}

/// Puts `device` on bus 0 in `slot` (function 0), wired to INTA# of that slot, and
/// returns the function (its [`VirtioPci::bar`] is where notifications land).
pub fn attach(
    chipset: &crate::pci::PcChipset,
    slot: u8,
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: &GuestMem,
    fast: &FastPaths,
) -> Arc<Mutex<VirtioPci>> {
    let mut function = VirtioPci::new(
        device,
        mem.clone(),
        chipset.intx_line(slot, 1),
        fast.msi.clone(),
    );
    if let Some(doorbells) = &fast.doorbells {
        function.add_doorbells(
            doorbells.clone(),
            fast.gate.clone(),
            &format!("virtio-{slot:02x}.0"),
        );
    }
    let f = Arc::new(Mutex::new(function));
    chipset.add(crate::pci::devfn(slot, 0), f.clone());
    f
}

/// The PCI class QEMU gives each device type.
fn class_for(device_type: u16) -> u32 {
    match device_type {
        1 => 0x02_00_00,  // network controller
        2 => 0x01_00_00,  // mass storage (QEMU: SCSI)
        3 => 0x07_80_00,  // communication controller, other (QEMU's virtio-serial)
        18 => 0x09_80_00, // input, other
        _ => 0xff_00_00,  // unassigned
    }
}

/// The registers behind the BAR. A separate bus device so the PCI root can map it while
/// the function itself stays in the root's table.
pub struct VirtioPciBar {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMem,
    interrupt: Arc<Interrupt>,
    offered: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    queue_select: u16,
    queues: Vec<Queue>,
    active: bool,
}

impl VirtioPciBar {
    fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: GuestMem,
        irq: Arc<dyn IrqLine>,
        msi: Option<Arc<dyn MsiSink>>,
    ) -> Self {
        let (offered, queues) = {
            let d = device.lock().unwrap_or_else(|e| e.into_inner());
            let offered = d.features()
                | 1 << VIRTIO_F_VERSION_1
                | 1 << VIRTIO_RING_F_INDIRECT_DESC
                | 1 << VIRTIO_RING_F_EVENT_IDX;
            let queues: Vec<Queue> = d
                .queue_max_sizes()
                .iter()
                .map(|&max| Queue::new(max).unwrap_or_else(|_| Queue::new(256).unwrap_or_default()))
                .collect();
            (offered, queues)
        };
        let queue_count: usize = queues.len();
        let interrupt = match msi {
            // A vector per queue and one for configuration changes, as Linux asks first.
            Some(sink) => {
                Interrupt::with_msix(irq, Msix::new(queue_count as u16 + 1, sink), queue_count)
            }
            None => Interrupt::new(irq),
        };
        VirtioPciBar {
            device,
            mem,
            interrupt,
            offered,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            queue_select: 0,
            queues,
            active: false,
        }
    }

    fn device(&self) -> std::sync::MutexGuard<'_, dyn VirtioDevice + 'static> {
        self.device.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The device status as the driver reads it.
    pub fn status(&self) -> u8 {
        self.status
            | if self.interrupt.needs_reset() {
                status::DEVICE_NEEDS_RESET
            } else {
                0
            }
    }

    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    /// Back to the state after power-on (the driver wrote 0, or the machine reset).
    pub fn reset(&mut self) {
        if self.active || self.status != 0 {
            self.device().reset();
        }
        for q in &mut self.queues {
            q.reset();
        }
        self.status = 0;
        self.active = false;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.queue_select = 0;
        self.interrupt.reset();
    }

    /// A driver notification for queue `index` (an MMIO write to its notify slot, or its
    /// doorbell).
    pub fn notify(&mut self, index: u16) {
        if !self.active || usize::from(index) >= self.queues.len() {
            tracing::debug!("virtio: notify of queue {index} ignored (inactive or no such queue)");
            return;
        }
        self.device().queue_notify(index);
    }

    fn selected(&self) -> Option<&Queue> {
        self.queues.get(usize::from(self.queue_select))
    }

    fn common_image(&self) -> [u8; common::LEN as usize] {
        use common::*;
        let mut b = [0u8; LEN as usize];
        let mut put =
            |off: u64, v: &[u8]| b[off as usize..off as usize + v.len()].copy_from_slice(v);
        put(
            DEVICE_FEATURE_SELECT,
            &self.device_feature_select.to_le_bytes(),
        );
        let feat = match self.device_feature_select {
            0 => self.offered as u32,
            1 => (self.offered >> 32) as u32,
            _ => 0,
        };
        put(DEVICE_FEATURE, &feat.to_le_bytes());
        put(
            DRIVER_FEATURE_SELECT,
            &self.driver_feature_select.to_le_bytes(),
        );
        let drv = match self.driver_feature_select {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        };
        put(DRIVER_FEATURE, &drv.to_le_bytes());
        put(MSIX_CONFIG, &self.interrupt.vector(None).to_le_bytes());
        put(NUM_QUEUES, &(self.queues.len() as u16).to_le_bytes());
        put(DEVICE_STATUS, &[self.status()]);
        put(CONFIG_GENERATION, &[0]);
        put(QUEUE_SELECT, &self.queue_select.to_le_bytes());
        if let Some(q) = self.selected() {
            put(QUEUE_SIZE, &q.size().to_le_bytes());
            put(
                QUEUE_MSIX_VECTOR,
                &self.interrupt.vector(Some(self.queue_select)).to_le_bytes(),
            );
            put(QUEUE_ENABLE, &u16::from(q.ready()).to_le_bytes());
            put(QUEUE_NOTIFY_OFF, &self.queue_select.to_le_bytes());
            put(QUEUE_DESC, &q.desc_table().to_le_bytes());
            put(QUEUE_DRIVER, &q.avail_ring().to_le_bytes());
            put(QUEUE_DEVICE, &q.used_ring().to_le_bytes());
        }
        b
    }

    fn common_read(&self, offset: u64, data: &mut [u8]) {
        let img = self.common_image();
        for (i, b) in data.iter_mut().enumerate() {
            *b = img.get(offset as usize + i).copied().unwrap_or(0);
        }
    }

    /// Writes go through a byte image of the registers so any access width works (Linux
    /// writes the 64-bit queue addresses as two 32-bit halves, SeaBIOS likewise); then every
    /// register the write touched takes its new value.
    fn common_write(&mut self, offset: u64, data: &[u8]) {
        use common::*;
        let mut img = self.common_image();
        let start = offset as usize;
        if start >= img.len() {
            return;
        }
        let end = (start + data.len()).min(img.len());
        img[start..end].copy_from_slice(&data[..end - start]);
        let touched = |off: u64, len: u64| (off as usize) < end && start < (off + len) as usize;
        let u16_at = |off: u64| u16::from_le_bytes([img[off as usize], img[off as usize + 1]]);
        let u32_at = |off: u64| {
            u32::from_le_bytes(
                img[off as usize..off as usize + 4]
                    .try_into()
                    .unwrap_or([0; 4]),
            )
        };

        if touched(DEVICE_FEATURE_SELECT, 4) {
            self.device_feature_select = u32_at(DEVICE_FEATURE_SELECT);
        }
        if touched(DRIVER_FEATURE_SELECT, 4) {
            self.driver_feature_select = u32_at(DRIVER_FEATURE_SELECT);
        }
        if touched(DRIVER_FEATURE, 4) {
            // Features are fixed once FEATURES_OK is set (virtio 1.0, 3.1.1).
            if self.status & status::FEATURES_OK == 0 {
                let v = u64::from(u32_at(DRIVER_FEATURE));
                match self.driver_feature_select {
                    0 => self.driver_features = (self.driver_features & !0xffff_ffff) | v,
                    1 => self.driver_features = (self.driver_features & 0xffff_ffff) | v << 32,
                    _ => {}
                }
            }
        }
        if touched(QUEUE_SELECT, 2) {
            self.queue_select = u16_at(QUEUE_SELECT);
        }
        // Vectors may change at any time (drivers set them to none while tearing down).
        if touched(MSIX_CONFIG, 2) {
            self.interrupt.set_vector(None, u16_at(MSIX_CONFIG));
        }
        if touched(QUEUE_MSIX_VECTOR, 2) && usize::from(self.queue_select) < self.queues.len() {
            self.interrupt
                .set_vector(Some(self.queue_select), u16_at(QUEUE_MSIX_VECTOR));
        }
        // Queue registers may change only while the queue is off and the device not live.
        let idx = usize::from(self.queue_select);
        let live = self.status & status::DRIVER_OK != 0;
        if let Some(q) = self.queues.get_mut(idx)
            && !q.ready()
            && !live
        {
            if touched(QUEUE_SIZE, 2) {
                let size = u16_at(QUEUE_SIZE);
                // virtio-queue refuses sizes that are not powers of two or exceed the max.
                q.set_size(size);
            }
            if touched(QUEUE_DESC, 8) {
                let v = u64::from_le_bytes(
                    img[QUEUE_DESC as usize..][..8].try_into().unwrap_or([0; 8]),
                );
                q.set_desc_table_address(Some(v as u32), Some((v >> 32) as u32));
            }
            if touched(QUEUE_DRIVER, 8) {
                let v = u64::from_le_bytes(
                    img[QUEUE_DRIVER as usize..][..8]
                        .try_into()
                        .unwrap_or([0; 8]),
                );
                q.set_avail_ring_address(Some(v as u32), Some((v >> 32) as u32));
            }
            if touched(QUEUE_DEVICE, 8) {
                let v = u64::from_le_bytes(
                    img[QUEUE_DEVICE as usize..][..8]
                        .try_into()
                        .unwrap_or([0; 8]),
                );
                q.set_used_ring_address(Some(v as u32), Some((v >> 32) as u32));
            }
            if touched(QUEUE_ENABLE, 2) && u16_at(QUEUE_ENABLE) == 1 {
                q.set_ready(true);
            }
        }
        if touched(DEVICE_STATUS, 1) {
            self.write_status(img[DEVICE_STATUS as usize]);
        }
    }

    fn write_status(&mut self, v: u8) {
        if v == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        let mut new = old | v;
        if v & !old & status::FEATURES_OK != 0 {
            let unknown = self.driver_features & !self.offered;
            if unknown != 0 || self.driver_features & (1 << VIRTIO_F_VERSION_1) == 0 {
                tracing::warn!(
                    "virtio: refusing features {:#x} (offered {:#x})",
                    self.driver_features,
                    self.offered
                );
                new &= !status::FEATURES_OK;
            } else {
                let event_idx = self.driver_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
                for q in &mut self.queues {
                    q.set_event_idx(event_idx);
                }
                self.device().ack_features(self.driver_features);
            }
        }
        self.status = new;
        if new & !old & status::DRIVER_OK != 0 {
            self.activate();
        }
    }

    fn activate(&mut self) {
        if self.status & status::FEATURES_OK == 0 {
            tracing::warn!("virtio: DRIVER_OK without FEATURES_OK");
            self.interrupt.set_needs_reset();
            return;
        }
        if let Some(i) = self
            .queues
            .iter()
            .position(|q| q.ready() && !q.is_valid(&self.mem))
        {
            tracing::warn!("virtio: queue {i} rings are outside guest memory");
            self.interrupt.set_needs_reset();
            return;
        }
        let queues = self
            .queues
            .iter()
            .map(|q| Queue::try_from(q.state()).unwrap_or_default())
            .collect();
        let n = self.queues.len();
        {
            let mut d = self.device();
            d.activate(Activation {
                mem: self.mem.clone(),
                queues,
                features: self.driver_features,
                interrupt: self.interrupt.clone(),
            });
            // Buffers the driver made available before DRIVER_OK (some drivers fill their
            // receive queues first) are picked up now.
            for i in 0..n {
                if self.queues[i].ready() {
                    d.queue_notify(i as u16);
                }
            }
        }
        self.active = true;
    }
}

impl BusDevice for VirtioPciBar {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match offset {
            o if o < COMMON_OFFSET + REGION_LEN => self.common_read(o - COMMON_OFFSET, data),
            ISR_OFFSET => {
                if let Some(b) = data.first_mut() {
                    *b = self.interrupt.read_and_clear();
                }
            }
            o if o < ISR_OFFSET + REGION_LEN => {}
            o if o < DEVICE_OFFSET + REGION_LEN => {
                self.device().read_config(o - DEVICE_OFFSET, data);
            }
            o if (MSIX_TABLE_OFFSET..MSIX_TABLE_OFFSET + REGION_LEN).contains(&o) => {
                if let Some(t) = self.interrupt.msix() {
                    t.table_read(o - MSIX_TABLE_OFFSET, data);
                }
            }
            o if (MSIX_PBA_OFFSET..MSIX_PBA_OFFSET + REGION_LEN).contains(&o) => {
                if let Some(t) = self.interrupt.msix() {
                    t.pba_read(o - MSIX_PBA_OFFSET, data);
                }
            }
            _ => {}
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            o if o < COMMON_OFFSET + REGION_LEN => self.common_write(o - COMMON_OFFSET, data),
            o if o < ISR_OFFSET + REGION_LEN => {}
            o if o < DEVICE_OFFSET + REGION_LEN => {
                self.device().write_config(o - DEVICE_OFFSET, data);
            }
            o if o < NOTIFY_OFFSET + REGION_LEN => {
                let rel = o - NOTIFY_OFFSET;
                if rel.is_multiple_of(u64::from(NOTIFY_OFF_MULTIPLIER)) {
                    self.notify((rel / u64::from(NOTIFY_OFF_MULTIPLIER)) as u16);
                }
            }
            o if (MSIX_TABLE_OFFSET..MSIX_TABLE_OFFSET + REGION_LEN).contains(&o) => {
                if let Some(mut t) = self.interrupt.msix() {
                    t.table_write(o - MSIX_TABLE_OFFSET, data);
                }
            }
            _ => {}
        }
    }
}

/// A virtio device on the PCI bus.
pub struct VirtioPci {
    config: PciConfig,
    bar: Arc<Mutex<VirtioPciBar>>,
    /// Dropped with the function: its thread stops and its registrations go.
    doorbells: Option<QueueDoorbells>,
}

impl VirtioPci {
    /// Wraps `device`; `irq` is the line INTA# of its slot drives; with `msi`, the
    /// function offers MSI-X too.
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: GuestMem,
        irq: Arc<dyn IrqLine>,
        msi: Option<Arc<dyn MsiSink>>,
    ) -> Self {
        let device_type = device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .device_type();
        let mut config = PciConfig::new(
            VIRTIO_PCI_VENDOR,
            VIRTIO_PCI_DEVICE_BASE + device_type,
            class_for(device_type),
            VIRTIO_PCI_REVISION,
        );
        config.set_subsystem(SUBSYSTEM_VENDOR_QEMU, SUBSYSTEM_ID_QEMU);
        config.set_interrupt_pin(1);
        // A 16 KiB power-of-two BAR always fits the memory kind's limits.
        if let Err(e) = config.add_bar(
            BAR_INDEX,
            BarKind::Mem32 {
                prefetchable: false,
            },
            BAR_SIZE,
        ) {
            tracing::error!("virtio: BAR setup: {e}");
        }
        config.set_u16(STATUS, STATUS_CAP_LIST);
        config.set_u8(regs::CAPABILITIES, CAP_COMMON as u8);
        let caps = [
            (
                CAP_COMMON,
                CAP_ISR,
                CAP_COMMON_CFG,
                COMMON_OFFSET,
                REGION_LEN,
                16,
            ),
            (CAP_ISR, CAP_DEVICE, CAP_ISR_CFG, ISR_OFFSET, REGION_LEN, 16),
            (
                CAP_DEVICE,
                CAP_NOTIFY,
                CAP_DEVICE_CFG,
                DEVICE_OFFSET,
                REGION_LEN,
                16,
            ),
            (
                CAP_NOTIFY,
                CAP_PCI,
                CAP_NOTIFY_CFG,
                NOTIFY_OFFSET,
                REGION_LEN,
                20,
            ),
            (CAP_PCI, 0, CAP_PCI_CFG, 0, 0, CAP_PCI_LEN as u8),
        ];
        for (at, next, kind, offset, length, len) in caps {
            config.set_u8(at, PCI_CAP_ID_VNDR);
            config.set_u8(at + 1, next as u8);
            config.set_u8(at + 2, len);
            config.set_u8(at + 3, kind);
            config.set_u8(
                at + CAP_BAR,
                if kind == CAP_PCI_CFG {
                    0
                } else {
                    BAR_INDEX as u8
                },
            );
            config.set_u32(at + CAP_OFFSET, offset as u32);
            config.set_u32(at + CAP_LENGTH, length as u32);
        }
        config.set_u32(CAP_NOTIFY + 16, NOTIFY_OFF_MULTIPLIER);
        // The configuration-access window: bar, offset, length and data are the driver's.
        config.set_wmask_u8(CAP_PCI + CAP_BAR, 0xff);
        config.set_wmask_u32(CAP_PCI + CAP_OFFSET, 0xffff_ffff);
        config.set_wmask_u32(CAP_PCI + CAP_LENGTH, 0xffff_ffff);
        config.set_wmask_u32(CAP_PCI + PCI_CFG_DATA, 0xffff_ffff);
        let bar = VirtioPciBar::new(device, mem, irq, msi);
        if let Some(table) = bar.interrupt.msix() {
            config.set_u8(CAP_PCI + 1, CAP_MSIX as u8);
            table.write_capability(
                &mut config,
                CAP_MSIX,
                0,
                BAR_INDEX as u8,
                MSIX_TABLE_OFFSET as u32,
                MSIX_PBA_OFFSET as u32,
            );
        }
        VirtioPci {
            config,
            bar: Arc::new(Mutex::new(bar)),
            doorbells: None,
        }
    }

    /// Queue notifications through `doorbells` from now on, served by a thread named
    /// `name` that passes `gate` for each. Without it (or when it cannot start) they stay
    /// MMIO writes.
    pub fn add_doorbells(
        &mut self,
        doorbells: Arc<dyn Doorbells>,
        gate: Arc<DeviceGate>,
        name: &str,
    ) {
        let queues = self.bar_lock().queues.len() as u16;
        match QueueDoorbells::start(doorbells, self.bar.clone(), gate, queues, name) {
            Ok(d) => self.doorbells = Some(d),
            Err(e) => tracing::warn!(
                "virtio: no doorbell thread for {name} ({e}); its notifications are handled on the vCPU thread"
            ),
        }
        self.place_doorbells();
    }

    /// Where the doorbells are registered now (none, or the BAR's base).
    pub fn doorbells_at(&self) -> Option<u64> {
        self.doorbells.as_ref().and_then(QueueDoorbells::placed_at)
    }

    fn place_doorbells(&mut self) {
        let base = self.bar_base();
        if let Some(d) = &mut self.doorbells {
            d.place(base);
        }
    }

    /// Where the BAR decodes now, if it does.
    pub fn bar_base(&self) -> Option<u64> {
        self.regions().first().map(|r| r.base)
    }

    /// The register block (for an ioeventfd path, and tests).
    pub fn bar(&self) -> Arc<Mutex<VirtioPciBar>> {
        self.bar.clone()
    }

    fn bar_lock(&self) -> std::sync::MutexGuard<'_, VirtioPciBar> {
        self.bar.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The BAR access the PCI_CFG window describes now, if it is a valid one.
    fn window(&self) -> Option<(u64, usize)> {
        let bar = self.config.u8(CAP_PCI + CAP_BAR);
        let offset = u64::from(self.config.u32(CAP_PCI + CAP_OFFSET));
        let len = self.config.u32(CAP_PCI + CAP_LENGTH) as usize;
        (usize::from(bar) == BAR_INDEX
            && matches!(len, 1 | 2 | 4)
            && offset + len as u64 <= BAR_SIZE)
            .then_some((offset, len))
    }
}

fn overlaps_data(offset: u16, len: usize) -> bool {
    let d = CAP_PCI + PCI_CFG_DATA;
    offset < d + 4 && d < offset + len as u16
}

impl PciFunction for VirtioPci {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        if overlaps_data(offset, data.len())
            && let Some((off, len)) = self.window()
        {
            let mut v = [0u8; 4];
            self.bar_lock().read(off, &mut v[..len]);
            self.config
                .set_u32(CAP_PCI + PCI_CFG_DATA, u32::from_le_bytes(v));
        }
        self.config.read(offset, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.config.write(offset, data);
        let control = CAP_MSIX + 2;
        if offset < control + 2 && control < offset + data.len() as u16 {
            let v = self.config.u16(control);
            self.bar_lock().interrupt.write_msix_control(v);
        }
        // The BAR or the memory decode may have changed.
        self.place_doorbells();
        if overlaps_data(offset, data.len())
            && let Some((off, len)) = self.window()
        {
            let v = self.config.u32(CAP_PCI + PCI_CFG_DATA).to_le_bytes();
            self.bar_lock().write(off, &v[..len]);
        }
    }

    fn regions(&self) -> Vec<PciRegion> {
        self.config
            .decoded_bars()
            .into_iter()
            .filter(|b| b.index == BAR_INDEX && b.space == PciSpace::Mmio)
            .map(|b| PciRegion {
                space: b.space,
                base: b.base,
                len: b.len,
                dev: self.bar.clone() as SharedDevice,
            })
            .collect()
    }

    fn reset(&mut self) {
        self.config.reset();
        {
            let mut bar = self.bar_lock();
            bar.reset();
            bar.interrupt.reset_function();
        }
        self.place_doorbells();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bus::Bus;
    use crate::irq::RecordingIrq;
    use crate::pci::PciRoot;
    use crate::virtio::testing::{DriverRing, mem};
    use std::os::fd::AsRawFd;
    use virtio_queue::QueueOwnedT;
    use vmm_sys_util::eventfd::EventFd;

    pub const BAR_BASE: u64 = 0xfebf_0000;
    pub const DEVFN: u8 = 4 << 3;

    /// A device with one queue that completes every chain with length 0 and counts kicks.
    #[derive(Default)]
    struct Echo {
        active: Option<Activation>,
        kicks: usize,
        resets: usize,
        acked: u64,
    }

    impl VirtioDevice for Echo {
        fn device_type(&self) -> u16 {
            0x1f
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 8]
        }
        fn features(&self) -> u64 {
            1 << 5
        }
        fn ack_features(&mut self, f: u64) {
            self.acked = f;
        }
        fn read_config(&mut self, offset: u64, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = 0xa0u8.wrapping_add(offset as u8 + i as u8);
            }
        }
        fn activate(&mut self, a: Activation) {
            self.active = Some(a);
        }
        fn queue_notify(&mut self, index: u16) {
            self.kicks += 1;
            let Some(a) = &mut self.active else { return };
            let q = &mut a.queues[usize::from(index)];
            let heads: Vec<u16> = q.iter(&a.mem).unwrap().map(|c| c.head_index()).collect();
            for h in heads {
                q.add_used(&a.mem, h, 0).unwrap();
            }
            a.interrupt.signal_used_queue(index);
        }
        fn reset(&mut self) {
            self.active = None;
            self.resets += 1;
        }
    }

    /// The guest side: configuration cycles through the root, MMIO through the bus.
    pub struct Guest {
        pub root: PciRoot,
        pub mmio: Arc<Bus>,
        pub mem: GuestMem,
        pub irq: Arc<RecordingIrq>,
    }

    impl Guest {
        pub fn new(device: Arc<Mutex<dyn VirtioDevice>>) -> Guest {
            Self::build(device, None)
        }

        /// With MSI-X, messages going to `sink`.
        pub fn with_msix(device: Arc<Mutex<dyn VirtioDevice>>, sink: Arc<dyn MsiSink>) -> Guest {
            Self::build(device, Some(sink))
        }

        fn build(device: Arc<Mutex<dyn VirtioDevice>>, msi: Option<Arc<dyn MsiSink>>) -> Guest {
            let mem = mem(16 << 20);
            let pio = Arc::new(Bus::new());
            let mmio = Arc::new(Bus::new());
            let irq = RecordingIrq::new();
            let mut root = PciRoot::new(pio, mmio.clone());
            let f = VirtioPci::new(device, mem.clone(), irq.clone(), msi);
            root.add(DEVFN, Arc::new(Mutex::new(f)));
            Guest {
                root,
                mmio,
                mem,
                irq,
            }
        }
        pub fn cfg_read(&self, off: u16, len: usize) -> u32 {
            let mut b = [0u8; 4];
            self.root.config_read(0, DEVFN, off, &mut b[..len]);
            u32::from_le_bytes(b)
        }
        pub fn cfg_write(&mut self, off: u16, len: usize, v: u32) {
            self.root
                .config_write(0, DEVFN, off, &v.to_le_bytes()[..len]);
        }
        pub fn read(&self, addr: u64, len: usize) -> u64 {
            let mut b = [0u8; 8];
            assert!(self.mmio.read(addr, &mut b[..len]), "nothing at {addr:#x}");
            u64::from_le_bytes(b)
        }
        pub fn write(&self, addr: u64, len: usize, v: u64) {
            assert!(
                self.mmio.write(addr, &v.to_le_bytes()[..len]),
                "nothing at {addr:#x}"
            );
        }

        /// Linux's virtio_pci_modern_probe + virtio_dev_probe up to FEATURES_OK; returns
        /// the capability map `(common, isr, device, notify, multiplier)` as addresses.
        pub fn probe(&mut self, want_features: u64) -> (u64, u64, u64, u64, u32, u64) {
            assert_eq!(self.cfg_read(0, 2), u32::from(VIRTIO_PCI_VENDOR));
            assert!(self.cfg_read(2, 2) >= 0x1040);
            assert_eq!(self.cfg_read(8, 1), 1);
            assert_eq!(self.cfg_read(0x2c, 4), 0x1100_1af4);
            assert_eq!(self.cfg_read(0x3d, 1), 1);
            // pci_assign_resource / SeaBIOS: size the BAR, place it, enable decode.
            self.cfg_write(0x10, 4, 0xffff_ffff);
            let mask = self.cfg_read(0x10, 4);
            assert_eq!(mask & 0xf, 0, "32-bit non-prefetchable memory BAR");
            assert_eq!((!(mask & !0xf)).wrapping_add(1) as u64, BAR_SIZE);
            self.cfg_write(0x10, 4, BAR_BASE as u32);
            self.cfg_write(4, 2, 0x6);
            // virtio_pci_find_capability for each type.
            assert_ne!(self.cfg_read(6, 2) & 0x10, 0, "capability list");
            let mut caps = std::collections::HashMap::new();
            let mut pos = self.cfg_read(0x34, 1) as u16;
            let mut seen = 0;
            while pos != 0 {
                seen += 1;
                assert!(seen < 48, "capability loop");
                if self.cfg_read(pos, 1) == u32::from(crate::pci::msix::PCI_CAP_ID_MSIX) {
                    pos = self.cfg_read(pos + 1, 1) as u16;
                    continue;
                }
                assert_eq!(self.cfg_read(pos, 1), 9);
                let ty = self.cfg_read(pos + 3, 1) as u8;
                let bar = self.cfg_read(pos + 4, 1);
                let off = self.cfg_read(pos + 8, 4);
                let len = self.cfg_read(pos + 12, 4);
                caps.entry(ty).or_insert((pos, bar, off, len));
                pos = self.cfg_read(pos + 1, 1) as u16;
            }
            for t in [
                CAP_COMMON_CFG,
                CAP_NOTIFY_CFG,
                CAP_ISR_CFG,
                CAP_DEVICE_CFG,
                CAP_PCI_CFG,
            ] {
                assert!(caps.contains_key(&t), "capability type {t}");
            }
            let at = |t: u8| {
                let (_, bar, off, len) = caps[&t];
                assert_eq!(bar, 0);
                assert!(u64::from(off) + u64::from(len) <= BAR_SIZE);
                BAR_BASE + u64::from(off)
            };
            assert!(caps[&CAP_COMMON_CFG].3 as u64 >= common::LEN);
            let (common, isr, dev, notify) = (
                at(CAP_COMMON_CFG),
                at(CAP_ISR_CFG),
                at(CAP_DEVICE_CFG),
                at(CAP_NOTIFY_CFG),
            );
            let mult = self.cfg_read(caps[&CAP_NOTIFY_CFG].0 + 16, 4);

            // virtio_dev_probe: reset (and wait for it), ACKNOWLEDGE, DRIVER.
            self.write(common + common::DEVICE_STATUS, 1, 0);
            assert_eq!(self.read(common + common::DEVICE_STATUS, 1), 0);
            self.write(common + common::DEVICE_STATUS, 1, 1);
            self.write(common + common::DEVICE_STATUS, 1, 3);
            self.write(common + common::DEVICE_FEATURE_SELECT, 4, 0);
            let lo = self.read(common + common::DEVICE_FEATURE, 4);
            self.write(common + common::DEVICE_FEATURE_SELECT, 4, 1);
            let hi = self.read(common + common::DEVICE_FEATURE, 4);
            let offered = hi << 32 | lo;
            assert_ne!(offered & 1 << VIRTIO_F_VERSION_1, 0);
            let features = offered & want_features;
            self.write(common + common::DRIVER_FEATURE_SELECT, 4, 0);
            self.write(common + common::DRIVER_FEATURE, 4, features & 0xffff_ffff);
            self.write(common + common::DRIVER_FEATURE_SELECT, 4, 1);
            self.write(common + common::DRIVER_FEATURE, 4, features >> 32);
            self.write(common + common::DEVICE_STATUS, 1, 0xb);
            (common, isr, dev, notify, mult, features)
        }

        /// vp_modern_setup_vq / vp_active_vq: returns the notify address.
        pub fn setup_queue(
            &self,
            common: u64,
            notify: u64,
            mult: u32,
            index: u16,
            ring: &DriverRing,
        ) -> u64 {
            self.write(common + common::QUEUE_SELECT, 2, u64::from(index));
            let max = self.read(common + common::QUEUE_SIZE, 2) as u16;
            assert!(max >= ring.size);
            assert_eq!(self.read(common + common::QUEUE_ENABLE, 2), 0);
            self.write(common + common::QUEUE_SIZE, 2, u64::from(ring.size));
            for (reg, v) in [
                (common::QUEUE_DESC, ring.desc),
                (common::QUEUE_DRIVER, ring.avail),
                (common::QUEUE_DEVICE, ring.used),
            ] {
                self.write(common + reg, 4, v & 0xffff_ffff);
                self.write(common + reg + 4, 4, v >> 32);
            }
            let off = self.read(common + common::QUEUE_NOTIFY_OFF, 2);
            self.write(common + common::QUEUE_ENABLE, 2, 1);
            notify + off * u64::from(mult)
        }
    }

    #[test]
    fn linux_modern_probe_queue_and_interrupt() {
        let dev = Arc::new(Mutex::new(Echo::default()));
        let mut g = Guest::new(dev.clone());
        assert_eq!(g.cfg_read(2, 2), 0x1040 + 0x1f);
        let (common, isr, devcfg, notify, mult, features) = g.probe(!0);
        assert_eq!(mult, NOTIFY_OFF_MULTIPLIER);
        assert_eq!(
            g.read(common + common::DEVICE_STATUS, 1),
            0xb,
            "FEATURES_OK kept"
        );
        assert_eq!(dev.lock().unwrap().acked, features);
        assert_ne!(features & 1 << 5, 0);
        assert_eq!(g.read(common + common::NUM_QUEUES, 2), 2);
        assert_eq!(g.read(common + common::MSIX_CONFIG, 2), 0xffff);
        // Device config reaches the device.
        assert_eq!(g.read(devcfg + 2, 2), 0xa3a2);

        let mut ring = DriverRing::new(&g.mem, 0x10000, 16);
        let kick = g.setup_queue(common, notify, mult, 0, &ring);
        assert_eq!(kick, BAR_BASE + notify_offset(0));
        assert_eq!(g.read(common + common::QUEUE_DESC, 8), 0x10000);
        // A size that is not a power of two is refused; the queue keeps its size.
        g.write(common + common::QUEUE_SELECT, 2, 1);
        g.write(common + common::QUEUE_SIZE, 2, 5);
        assert_eq!(g.read(common + common::QUEUE_SIZE, 2), 8);
        // A queue that does not exist reads as size 0.
        g.write(common + common::QUEUE_SELECT, 2, 7);
        assert_eq!(g.read(common + common::QUEUE_SIZE, 2), 0);

        // Buffers made available before DRIVER_OK are picked up at DRIVER_OK.
        ring.add_chain(&g.mem, &[(0x20000, 64, true)]);
        g.write(common + common::DEVICE_STATUS, 1, 0xf);
        assert_eq!(ring.take_used(&g.mem), vec![(0, 0)]);
        assert!(g.irq.level());
        assert_eq!(g.read(isr, 1), 1);
        assert!(!g.irq.level(), "reading the ISR lowers INTx");
        assert_eq!(g.read(isr, 1), 0);

        ring.add_chain(&g.mem, &[(0x20000, 64, true)]);
        g.write(kick, 2, 0);
        assert_eq!(ring.take_used(&g.mem), vec![(1, 0)]);
        assert!(g.irq.level());
        // Queue registers are frozen while live.
        g.write(common + common::QUEUE_SELECT, 2, 0);
        g.write(common + common::QUEUE_SIZE, 2, 4);
        assert_eq!(g.read(common + common::QUEUE_SIZE, 2), 16);

        // Reset: status 0, queues off, the line low, the device told.
        g.write(common + common::DEVICE_STATUS, 1, 0);
        assert_eq!(g.read(common + common::DEVICE_STATUS, 1), 0);
        assert_eq!(g.read(common + common::QUEUE_ENABLE, 2), 0);
        assert_eq!(g.read(common + common::QUEUE_SIZE, 2), 16);
        assert!(!g.irq.level());
        assert_eq!(dev.lock().unwrap().resets, 1);
        let kicks = dev.lock().unwrap().kicks;
        g.write(kick, 2, 0);
        assert_eq!(
            dev.lock().unwrap().kicks,
            kicks,
            "no notifications after reset"
        );
    }

    #[test]
    fn features_ok_is_refused_without_version_1_or_with_unknown_bits() {
        let mut g = Guest::new(Arc::new(Mutex::new(Echo::default())));
        let (common, ..) = g.probe(!(1 << VIRTIO_F_VERSION_1));
        assert_eq!(g.read(common + common::DEVICE_STATUS, 1), 0x3);
        // Start over with a bit the device never offered.
        g.write(common + common::DEVICE_STATUS, 1, 0);
        g.write(common + common::DEVICE_STATUS, 1, 3);
        g.write(common + common::DRIVER_FEATURE_SELECT, 4, 1);
        g.write(common + common::DRIVER_FEATURE, 4, 1 | 1 << 20);
        g.write(common + common::DEVICE_STATUS, 1, 0xb);
        assert_eq!(g.read(common + common::DEVICE_STATUS, 1), 0x3);
        // DRIVER_OK without FEATURES_OK: the device asks for a reset and does not start.
        g.write(common + common::DEVICE_STATUS, 1, 0x7);
        assert_ne!(
            g.read(common + common::DEVICE_STATUS, 1) as u8 & status::DEVICE_NEEDS_RESET,
            0
        );
        assert!(g.irq.level(), "configuration interrupt");
        g.write(common + common::DEVICE_STATUS, 1, 0);
        assert_eq!(g.read(common + common::DEVICE_STATUS, 1), 0);
    }

    use crate::pci::msix::RecordingMsi as Sent;

    /// The MSI-X capability's offset, found as pci_find_capability does.
    fn find_msix(g: &Guest) -> u16 {
        let mut pos = g.cfg_read(0x34, 1) as u16;
        while pos != 0 {
            if g.cfg_read(pos, 1) == u32::from(crate::pci::msix::PCI_CAP_ID_MSIX) {
                return pos;
            }
            pos = g.cfg_read(pos + 1, 1) as u16;
        }
        panic!("no MSI-X capability");
    }

    /// Linux's vp_find_vqs_msix: one vector for configuration changes and one per queue,
    /// each written and read back; then every interrupt is a message and INTx stays low.
    #[test]
    fn linux_enables_msix_and_each_queue_signals_its_own_vector() {
        let dev = Arc::new(Mutex::new(Echo::default()));
        let sent = Arc::new(Sent::default());
        let mut g = Guest::with_msix(dev.clone(), sent.clone());
        let (common, isr, _, notify, mult, _) = g.probe(!0);
        let cap = find_msix(&g);
        let control = g.cfg_read(cap + 2, 2);
        assert_eq!(
            (control & 0x7ff) + 1,
            3,
            "a vector per queue and the config"
        );
        let table = g.cfg_read(cap + 4, 4);
        let pba = g.cfg_read(cap + 8, 4);
        assert_eq!((table & 7, pba & 7), (0, 0), "both in BAR 0");
        let (table, pba) = (
            BAR_BASE + u64::from(table & !7),
            BAR_BASE + u64::from(pba & !7),
        );
        assert!(pba + 8 <= BAR_BASE + BAR_SIZE);
        // pci_msix_enable: enable with the function masked, program, unmask.
        g.cfg_write(cap + 2, 2, 0xc000);
        for v in 0..3u64 {
            g.write(table + v * 16, 4, 0xfee0_0000);
            g.write(table + v * 16 + 4, 4, 0);
            g.write(table + v * 16 + 8, 4, 0x40 + v);
            g.write(table + v * 16 + 12, 4, 0);
        }
        g.cfg_write(cap + 2, 2, 0x8000);

        g.write(common + common::MSIX_CONFIG, 2, 0);
        assert_eq!(g.read(common + common::MSIX_CONFIG, 2), 0);
        let mut rings = Vec::new();
        for q in 0..2u16 {
            let ring = DriverRing::new(&g.mem, 0x10000 + u64::from(q) * 0x4000, 8);
            g.setup_queue(common, notify, mult, q, &ring);
            g.write(common + common::QUEUE_MSIX_VECTOR, 2, u64::from(q) + 1);
            assert_eq!(
                g.read(common + common::QUEUE_MSIX_VECTOR, 2),
                u64::from(q) + 1
            );
            rings.push(ring);
        }
        // A vector the table lacks reads back as none (how Linux learns to fall back).
        g.write(common + common::QUEUE_SELECT, 2, 1);
        g.write(common + common::QUEUE_MSIX_VECTOR, 2, 3);
        assert_eq!(g.read(common + common::QUEUE_MSIX_VECTOR, 2), 0xffff);
        g.write(common + common::QUEUE_MSIX_VECTOR, 2, 2);
        g.write(common + common::DEVICE_STATUS, 1, 0xf);
        // DRIVER_OK runs each queue once (Echo signals even when it found nothing).
        assert_eq!(sent.take_data(), [0x41, 0x42]);

        for (q, ring) in rings.iter_mut().enumerate() {
            ring.add_chain(&g.mem, &[(0x20000, 64, true)]);
            g.write(BAR_BASE + notify_offset(q as u16), 2, q as u64);
            assert_eq!(ring.take_used(&g.mem).len(), 1);
        }
        assert_eq!(sent.take_data(), [0x41, 0x42]);
        assert!(!g.irq.level(), "no INTx under MSI-X");
        assert_eq!(g.read(isr, 1), 0, "no queue bit in the ISR under MSI-X");

        // A masked vector pends and is sent when unmasked.
        g.write(table + 2 * 16 + 12, 4, 1);
        rings[1].add_chain(&g.mem, &[(0x20000, 64, true)]);
        g.write(BAR_BASE + notify_offset(1), 2, 1);
        assert!(sent.take_data().is_empty());
        assert_eq!(g.read(pba, 8), 1 << 2);
        g.write(table + 2 * 16 + 12, 4, 0);
        assert_eq!(sent.take_data(), [0x42]);
        assert_eq!(g.read(pba, 8), 0);

        // A device reset forgets the vectors, not the table.
        g.write(common + common::DEVICE_STATUS, 1, 0);
        assert_eq!(g.read(common + common::MSIX_CONFIG, 2), 0xffff);
        assert_eq!(g.read(table + 8, 4), 0x40);
        assert_eq!(g.cfg_read(cap + 2, 2) & 0x8000, 0x8000);
    }

    /// SeaBIOS never enables MSI-X: a function that offers it still interrupts on INTx.
    #[test]
    fn without_msix_enabled_the_line_still_works() {
        let dev = Arc::new(Mutex::new(Echo::default()));
        let sent = Arc::new(Sent::default());
        let mut g = Guest::with_msix(dev, sent.clone());
        let (common, isr, _, notify, mult, _) = g.probe(!0);
        let mut ring = DriverRing::new(&g.mem, 0x10000, 8);
        let kick = g.setup_queue(common, notify, mult, 0, &ring);
        g.write(common + common::DEVICE_STATUS, 1, 0xf);
        ring.add_chain(&g.mem, &[(0x20000, 64, true)]);
        g.write(kick, 2, 0);
        assert!(g.irq.level());
        assert_eq!(g.read(isr, 1), 1);
        assert!(sent.take_data().is_empty());
    }

    #[derive(Default)]
    /// Doorbells that record where they are and let the test ring them as KVM would.
    /// Each registration as (the raw fd, a duplicate of it to ring, the address).
    struct FakeDoorbells(Mutex<Vec<(i32, EventFd, u64)>>);
    impl Doorbells for FakeDoorbells {
        fn register(&self, fd: &EventFd, addr: u64) -> std::io::Result<()> {
            self.0
                .lock()
                .unwrap()
                .push((fd.as_raw_fd(), fd.try_clone()?, addr));
            Ok(())
        }
        fn unregister(&self, fd: &EventFd, addr: u64) -> std::io::Result<()> {
            let mut v = self.0.lock().unwrap();
            let before = v.len();
            v.retain(|e| (e.0, e.2) != (fd.as_raw_fd(), addr));
            assert_eq!(v.len() + 1, before, "unregistered what was not registered");
            Ok(())
        }
    }
    impl FakeDoorbells {
        fn addrs(&self) -> Vec<u64> {
            let mut v: Vec<u64> = self.0.lock().unwrap().iter().map(|e| e.2).collect();
            v.sort();
            v
        }
        /// The guest writes the doorbell at `addr`: KVM bumps its eventfd.
        fn ring(&self, addr: u64) {
            let v = self.0.lock().unwrap();
            let e = v.iter().find(|e| e.2 == addr).expect("a doorbell there");
            e.1.write(1).unwrap();
        }
    }

    /// The doorbells follow the BAR (placed, moved, decode off) and a ring reaches the
    /// device on the doorbell thread; dropping the function stops the thread and
    /// unregisters everything.
    #[test]
    fn doorbells_follow_the_bar_and_reach_the_device_off_the_vcpu_thread() {
        let dev = Arc::new(Mutex::new(Echo::default()));
        let bells = Arc::new(FakeDoorbells::default());
        let mem = mem(16 << 20);
        let mut root = PciRoot::new(Arc::new(Bus::new()), Arc::new(Bus::new()));
        let mut f = VirtioPci::new(dev.clone(), mem.clone(), RecordingIrq::new(), None);
        f.add_doorbells(bells.clone(), Arc::default(), "virtio-test");
        assert!(bells.addrs().is_empty(), "no BAR yet");
        let f = Arc::new(Mutex::new(f));
        root.add(DEVFN, f.clone());
        let cfg = |root: &mut PciRoot, off: u16, len: usize, v: u32| {
            root.config_write(0, DEVFN, off, &v.to_le_bytes()[..len]);
        };
        cfg(&mut root, 0x10, 4, BAR_BASE as u32);
        assert!(bells.addrs().is_empty(), "decode is off");
        cfg(&mut root, 4, 2, 0x6);
        let at = |base: u64| vec![base + notify_offset(0), base + notify_offset(1)];
        assert_eq!(bells.addrs(), at(BAR_BASE));
        cfg(&mut root, 0x10, 4, 0xfeb0_0000);
        assert_eq!(bells.addrs(), at(0xfeb0_0000));
        cfg(&mut root, 4, 2, 0x0);
        assert!(bells.addrs().is_empty(), "decode off again");
        cfg(&mut root, 4, 2, 0x6);

        // A driver brings the device up through the (now trapped-free) BAR.
        let bar = f.lock().unwrap().bar();
        let w =
            |off: u64, len: usize, v: u64| bar.lock().unwrap().write(off, &v.to_le_bytes()[..len]);
        w(common::DEVICE_STATUS, 1, 1);
        w(common::DEVICE_STATUS, 1, 3);
        w(common::DRIVER_FEATURE_SELECT, 4, 1);
        w(common::DRIVER_FEATURE, 4, 1);
        w(common::DEVICE_STATUS, 1, 0xb);
        let ring = DriverRing::new(&mem, 0x10000, 8);
        w(common::QUEUE_SELECT, 2, 0);
        w(common::QUEUE_SIZE, 2, 8);
        w(common::QUEUE_DESC, 8, ring.desc);
        w(common::QUEUE_DRIVER, 8, ring.avail);
        w(common::QUEUE_DEVICE, 8, ring.used);
        w(common::QUEUE_ENABLE, 2, 1);
        w(common::DEVICE_STATUS, 1, 0xf);
        let kicks = dev.lock().unwrap().kicks;
        bells.ring(0xfeb0_0000 + notify_offset(0));
        let start = std::time::Instant::now();
        while dev.lock().unwrap().kicks == kicks {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "the doorbell never reached the device"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }

        drop(root);
        drop(f);
        assert!(
            bells.addrs().is_empty(),
            "dropping the function unregisters"
        );
    }

    #[test]
    fn rings_outside_memory_need_reset() {
        let dev = Arc::new(Mutex::new(Echo::default()));
        let mut g = Guest::new(dev.clone());
        let (common, _, _, notify, mult, _) = g.probe(!0);
        let mut ring = DriverRing::new(&g.mem, 0x10000, 16);
        ring.used = 1 << 40;
        let kick = g.setup_queue(common, notify, mult, 0, &ring);
        g.write(common + common::DEVICE_STATUS, 1, 0xf);
        assert_ne!(
            g.read(common + common::DEVICE_STATUS, 1) as u8 & status::DEVICE_NEEDS_RESET,
            0
        );
        assert!(dev.lock().unwrap().active.is_none());
        g.write(kick, 2, 0);
        assert_eq!(dev.lock().unwrap().kicks, 0);
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let mut g = Guest::new(Arc::new(Mutex::new(Echo::default())));
        let (common, isr, _, notify, ..) = g.probe(!0);
        // Byte-wide reads of a 32-bit register, writes past the end, junk in the notify area.
        g.write(common + common::DEVICE_FEATURE_SELECT, 4, 1);
        assert_eq!(g.read(common + common::DEVICE_FEATURE, 1), 1);
        g.write(common + 0x36, 4, u64::MAX);
        g.write(common + 0x800, 8, u64::MAX);
        g.write(isr, 1, 0xff);
        assert_eq!(g.read(isr + 4, 4), 0);
        g.write(notify + 0x3ff * 4, 2, 0xffff);
        g.write(notify + 1, 1, 0xff);
        g.write(common + common::QUEUE_SELECT, 2, 0xffff);
        g.write(common + common::QUEUE_ENABLE, 2, 1);
        g.write(common + common::QUEUE_DESC, 8, u64::MAX);
        assert_eq!(g.read(common + common::QUEUE_DESC, 8), 0);
        assert_eq!(g.read(BAR_BASE + BAR_SIZE - 8, 8), 0);
    }

    #[test]
    fn pci_cfg_window_reaches_the_registers() {
        // SeaBIOS's VP_ACCESS_PCICFG path (virtio-pci.c, _vp_read/_vp_write).
        let mut g = Guest::new(Arc::new(Mutex::new(Echo::default())));
        let _ = g.probe(!0);
        let cap = CAP_PCI;
        g.cfg_write(cap + 4, 1, 0);
        g.cfg_write(
            cap + 8,
            4,
            (COMMON_OFFSET + common::DEVICE_FEATURE_SELECT) as u32,
        );
        g.cfg_write(cap + 12, 4, 4);
        g.cfg_write(cap + 16, 4, 1);
        g.cfg_write(cap + 8, 4, (COMMON_OFFSET + common::DEVICE_FEATURE) as u32);
        assert_eq!(g.cfg_read(cap + 16, 4), 1, "VERSION_1 is bit 32");
        g.cfg_write(cap + 8, 4, (COMMON_OFFSET + common::DEVICE_STATUS) as u32);
        g.cfg_write(cap + 12, 4, 1);
        assert_eq!(g.cfg_read(cap + 16, 1), 0xb);
        // A window past the BAR or of a bad length does nothing.
        g.cfg_write(cap + 8, 4, 0xffff_fff0);
        g.cfg_write(cap + 16, 4, 0);
        g.cfg_write(cap + 12, 4, 3);
        g.cfg_read(cap + 16, 4);
        g.cfg_write(cap + 8, 4, (COMMON_OFFSET + common::DEVICE_STATUS) as u32);
        g.cfg_write(cap + 12, 4, 1);
        assert_eq!(g.cfg_read(cap + 16, 1), 0xb);
    }

    /// xorshift64*: deterministic noise without a dependency.
    use crate::noise::Noise;

    /// A guest that scribbles over its rings and the registers at random never panics
    /// the devices or the transport.
    #[test]
    fn random_guest_writes_never_panic() {
        use crate::virtio::block::VirtioBlock;
        use crate::virtio::input::VirtioTablet;
        use vm_memory::Bytes;
        let path = std::env::temp_dir().join(format!("vmdesk-vfuzz-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; 64 << 10]).unwrap();
        let blk = Arc::new(Mutex::new(VirtioBlock::new(
            Box::new(crate::disk::raw::RawImage::open(&path, false).unwrap()),
            "fuzz",
        )));
        let tablet = Arc::new(Mutex::new(VirtioTablet::new()));
        let devices: [Arc<Mutex<dyn VirtioDevice>>; 2] = [blk.clone(), tablet.clone()];
        for (k, dev) in devices.into_iter().enumerate() {
            let mut n = Noise::new(0x9e37_79b9_7f4a_7c15 + k as u64);
            let mut g = Guest::new(dev);
            let mut completions = 0;
            for round in 0..200 {
                let (common, isr, devcfg, notify, mult, _) = g.probe(!0);
                let mut ring = DriverRing::new(&g.mem, 0x10000, 16);
                for q in 0..g.read(common + common::NUM_QUEUES, 2) as u16 {
                    g.setup_queue(common, notify, mult, q, &ring);
                }
                g.write(common + common::DEVICE_STATUS, 1, 0xf);
                for _ in 0..50 {
                    // Mostly plausible chains (any lengths, directions, request types), now
                    // and then garbage descriptors, heads or available indexes.
                    let ty = [0u32, 1, 4, 8, 11, 13, 99][(n.next() % 7) as usize];
                    g.mem
                        .write_obj(ty, vm_memory::GuestAddress(0x40000))
                        .unwrap();
                    let at = 0x40008 + n.next() % 0x1000;
                    g.mem
                        .write_obj(n.next() % 0x100, vm_memory::GuestAddress(at))
                        .unwrap();
                    let count = 1 + n.next() % 4;
                    let bufs: Vec<(u64, u32, bool)> = (0..count)
                        .map(|i| {
                            if i == 0 {
                                let len = if n.next().is_multiple_of(20) { 8 } else { 16 };
                                return (0x40000, len, false);
                            }
                            let addr = 0x40000 + (1 + n.next() % 3) * 0x400;
                            let len = [1, 16, 8, 512, 1024, 0x3000, 0][(n.next() % 7) as usize];
                            let last = i + 1 == count;
                            let w = if last {
                                !n.next().is_multiple_of(20)
                            } else {
                                n.next().is_multiple_of(2)
                            };
                            (addr, if last && w { len.max(1) } else { len }, w)
                        })
                        .collect();
                    ring.add_chain(&g.mem, &bufs);
                    match n.next() % 40 {
                        0 => {
                            let at = ring.desc + n.next() % (16 * 16 - 8);
                            g.mem
                                .write_obj(n.next(), vm_memory::GuestAddress(at))
                                .unwrap();
                        }
                        1 => ring.publish(&g.mem, (n.next() % 18) as u16),
                        2 => {
                            let idx = n.next() as u16;
                            ring.set_avail_idx(&g.mem, idx);
                        }
                        _ => {}
                    }
                    match n.next() % 6 {
                        0 => g.write(notify + (n.next() % 2) * u64::from(mult), 2, 0),
                        1 => {
                            let off = n.next() % common::LEN;
                            let len = [1, 2, 4, 8][(n.next() % 4) as usize];
                            // Keep the device alive most of the time: no status writes.
                            if off > common::DEVICE_STATUS
                                || off + len as u64 <= common::DEVICE_STATUS
                            {
                                g.write(common + off, len.min(8), n.next());
                            }
                        }
                        2 => {
                            g.read(isr, 1);
                        }
                        3 => {
                            g.write(devcfg + n.next() % 64, 1, n.next());
                            g.read(devcfg + n.next() % 200, 4);
                        }
                        4 => tablet.lock().unwrap().pointer(
                            (n.next() % 5000) as u32,
                            (n.next() % 5000) as u32,
                            n.next() as u8,
                            (n.next() % 3000) as u32,
                            (n.next() % 3000) as u32,
                        ),
                        _ => g.write(notify, 2, 1),
                    }
                    // The disk completes on its I/O threads: let them finish before the
                    // next scribble, so each run of the noise is the same.
                    blk.lock().unwrap().wait_idle();
                }
                completions += u64::from(ring.used_idx(&g.mem));
                if round % 2 == 0 {
                    g.write(common + common::DEVICE_STATUS, 1, n.next() & 0xff);
                }
            }
            // The noise must reach the request code, not only the ring checks.
            eprintln!("device {k}: {completions} completions");
            assert!(
                completions > 50,
                "device {k}: only {completions} completions"
            );
        }
        let _ = std::fs::remove_file(path);
    }
}
