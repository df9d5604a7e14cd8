//! The local APIC, as a PC kernel finds it: xAPIC registers in the 4 KiB at 0xfee00000
//! (AMD APM vol. 2, 16.3–16.6 "Local APIC"; Intel SDM vol. 3A, 11.4–11.8).
//!
//! Each register is 32 bits at a 16-byte boundary. What the model keeps, and why:
//!
//! | offset | register | here |
//! |--------|----------|------|
//! | 0x20 | APIC ID | 0: the one CPU, the bootstrap processor (APIC_BASE says BSP) |
//! | 0x30 | version | 0x50014, as QEMU's APIC: version 0x14, six LVT entries (max index 5) |
//! | 0x80, 0xa0 | TPR, PPR | the task priority, whose bits 7:4 are CR8 (a write of either is the other's, `apply.rs`); the processor priority follows from it and the highest interrupt in service |
//! | 0xb0 | EOI | a write ends the highest-priority interrupt in service |
//! | 0xd0, 0xe0 | LDR, DFR | kept (logical destinations matter only with other CPUs) |
//! | 0xf0 | spurious-interrupt vector | bit 8 enables the APIC in software; cleared, every LVT is masked and stays so |
//! | 0x100–0x270 | ISR, TMR, IRR | 256 bits each: in service, level-triggered (none here), requested |
//! | 0x280 | ESR | errors (an illegal vector sent or received, an access to a reserved offset), each also an interrupt at the LVT error entry's vector unless it is masked; a write latches them for reading |
//! | 0x300, 0x310 | ICR | an IPI: a fixed or lowest-priority interrupt that names this CPU (shorthand "self" or "all", its own ID, the broadcast ID 0xff, or a logical destination its LDR matches) is requested in its IRR; an NMI to itself is delivered as an NMI (vector 2) once no NMI handler runs; there is no other CPU to send to |
//! | 0x320–0x370 | LVT timer, thermal, performance, LINT0, LINT1, error | kept, reserved and read-only bits as the APIC keeps them; only the timer and the error entry have a source |
//! | 0x380, 0x390, 0x3e0 | timer initial count, current count, divide configuration | the timer |
//!
//! **The timer** counts down at the APIC bus clock divided by 1–128. The bus runs at 1 GHz,
//! as in QEMU's APIC, so a kernel calibrates the same count under traplab as under QEMU
//! alone. One-shot: it fires once when the count reaches 0 and stays there; periodic: it
//! reloads. Writing the initial count (re)starts it; writing 0 stops it; changing the mode
//! or the divisor does neither: the count carries on from where it is. Its interrupt, at
//! the vector in the LVT timer entry, is *requested* (an IRR bit), delivered when its
//! priority class is above the PPR's, and then *in service* (ISR) until the kernel writes
//! EOI: a second tick while the first is requested merges into it, as on hardware.
//!
//! The hypervisor's own timer is the machine's 8254 PIT behind its real 8259A
//! (`timer.rs`); this APIC, like the guest's PIT, is a model the nested page tables route
//! to: the two never meet. (Not modeled yet: x2APIC and its MSRs, TSC-deadline mode, INIT
//! IPIs, the LINT pins. The first two are features of CPUID, which `exit/cpuid.rs` hides from
//! the guest.)

use super::pit::Countdown;
use alloc::format;
use alloc::string::String;

/// Where the xAPIC registers are (APIC_BASE's default, AMD APM vol. 2, 16.3.1).
pub const BASE: u64 = 0xfee0_0000;
pub const SIZE: u64 = 0x1000;
/// The APIC ID of the one CPU (the MADT's processor entry says the same).
pub const APIC_ID: u8 = 0;

/// Is guest-physical `gpa` one of the local APIC's registers' page?
pub fn contains(gpa: u64) -> bool {
    (BASE..BASE + SIZE).contains(&gpa)
}

/// The register offsets.
pub mod reg {
    pub const ID: u64 = 0x20;
    pub const VERSION: u64 = 0x30;
    pub const TPR: u64 = 0x80;
    pub const APR: u64 = 0x90;
    pub const PPR: u64 = 0xa0;
    pub const EOI: u64 = 0xb0;
    pub const LDR: u64 = 0xd0;
    pub const DFR: u64 = 0xe0;
    pub const SVR: u64 = 0xf0;
    pub const ISR: u64 = 0x100;
    pub const TMR: u64 = 0x180;
    pub const IRR: u64 = 0x200;
    pub const ESR: u64 = 0x280;
    pub const ICR_LOW: u64 = 0x300;
    pub const ICR_HIGH: u64 = 0x310;
    pub const LVT_TIMER: u64 = 0x320;
    pub const LVT_ERROR: u64 = 0x370;
    pub const TIMER_INITIAL: u64 = 0x380;
    pub const TIMER_CURRENT: u64 = 0x390;
    pub const TIMER_DIVIDE: u64 = 0x3e0;
}

/// QEMU's APIC: version 0x14, max LVT entry 5.
pub const VERSION: u32 = 0x0005_0014;
/// The APIC bus clock the timer counts (QEMU's: 1 ns per tick).
pub const BUS_HZ: u64 = 1_000_000_000;
/// An LVT entry's mask bit.
const MASKED: u32 = 1 << 16;
/// The SVR's APIC software enable bit.
const SOFTWARE_ENABLE: u32 = 1 << 8;
/// ESR bits (Intel SDM vol. 3A, 11.5.3 "Error Handling"; AMD APM vol. 2, 16.4.6): this
/// APIC sent an interrupt message with an illegal vector (0–15), from an ICR write ...
const SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
/// ... it received one (a self-IPI's, or a local source's) ...
const RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
/// ... or software read or wrote an offset where no register is.
const ILLEGAL_REGISTER_ADDRESS: u32 = 1 << 7;

/// Where the error's entry is among the LVT entries.
const LVT_ERROR_INDEX: usize = 5;

/// The LVT entries, in register order from 0x320: timer, thermal, performance, LINT0,
/// LINT1, error.
const LVT_NAMES: [&str; 6] = [
    "LVT timer",
    "LVT thermal",
    "LVT performance counter",
    "LVT LINT0",
    "LVT LINT1",
    "LVT error",
];

/// The timer's mode, LVT timer bit 17. (Bit 18 would choose TSC-deadline mode, which this
/// CPU does not offer: CPUID 1:ECX\[24\] is clear, so the bit is reserved.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerMode {
    OneShot,
    Periodic,
}

/// The bits of each LVT entry a write sets (Intel SDM vol. 3A, figure 11-8; AMD APM vol. 2,
/// 16.4): the vector, the delivery mode where there is one (thermal, performance, LINT0,
/// LINT1), a pin's polarity and trigger mode (LINT0, LINT1), the mask, the timer's mode.
/// Delivery status (bit 12) and remote IRR (bit 14) are the APIC's own; the other bits are
/// reserved and read 0.
const LVT_WRITABLE: [u32; 6] = [0x3_00ff, 0x1_07ff, 0x1_07ff, 0x1_a7ff, 0x1_a7ff, 0x1_00ff];
/// The ICR's writable bits: vector, delivery mode, destination mode, level, trigger mode
/// and shorthand in the low half (not the delivery status, bit 12), the destination in
/// the high half's bits 31:24.
const ICR_LOW_WRITABLE: u32 = 0x000c_cfff;
const ICR_HIGH_WRITABLE: u32 = 0xff00_0000;
/// The SVR's bits: the spurious vector, software enable, focus processor checking. (Bit 12,
/// EOI-broadcast suppression, exists only when the version register's bit 24 says so; it
/// does not here.)
const SVR_WRITABLE: u32 = 0x3ff;

/// 256 bits, one per vector: ISR, TMR, IRR.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VectorSet([u32; 8]);

impl VectorSet {
    pub fn contains(&self, vector: u8) -> bool {
        self.0[vector as usize / 32] & (1 << (vector % 32)) != 0
    }
    fn insert(&mut self, vector: u8) {
        self.0[vector as usize / 32] |= 1 << (vector % 32);
    }
    fn remove(&mut self, vector: u8) {
        self.0[vector as usize / 32] &= !(1 << (vector % 32));
    }
    /// The highest vector in the set.
    pub fn highest(&self) -> Option<u8> {
        (0..8).rev().find_map(|word| {
            let bits = self.0[word];
            (bits != 0).then(|| (word * 32 + 31 - bits.leading_zeros() as usize) as u8)
        })
    }
    /// Register `index` (0–7) of the eight that show it.
    fn word(&self, index: usize) -> u32 {
        self.0[index]
    }
}

/// One CPU's local APIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalApic {
    pub tpr: u8,
    ldr: u32,
    dfr: u32,
    pub svr: u32,
    pub in_service: VectorSet,
    trigger_mode: VectorSet,
    pub requested: VectorSet,
    /// Errors since the last ESR write, and what that write latched for reading.
    errors: u32,
    esr: u32,
    icr: u64,
    /// An NMI IPI to itself waits to be delivered (`apply::before_resume`).
    pub nmi_requested: bool,
    /// The six LVT entries, from the timer's at 0x320 to the error's at 0x370.
    pub lvt: [u32; 6],
    pub initial_count: u32,
    divide: u32,
    /// Where the count was at a moment, in TSC ticks: the initial count when it was written,
    /// or the count when the mode or the divisor changed while it ran. It counts on from
    /// there.
    origin_tsc: u64,
    origin_count: u32,
    /// A one-shot count reached 0 and then the mode or the divisor changed: the count stays
    /// at 0, and nothing fires, until the initial count is written again.
    stopped: bool,
}

impl Default for LocalApic {
    /// As after reset (Intel SDM vol. 3A, 11.4.7.1): every LVT masked, DFR all ones, the
    /// SVR 0xff (software disabled).
    fn default() -> LocalApic {
        LocalApic {
            tpr: 0,
            ldr: 0,
            dfr: 0xffff_ffff,
            svr: 0xff,
            in_service: VectorSet::default(),
            trigger_mode: VectorSet::default(),
            requested: VectorSet::default(),
            errors: 0,
            esr: 0,
            icr: 0,
            nmi_requested: false,
            lvt: [MASKED; 6],
            initial_count: 0,
            divide: 0,
            origin_tsc: 0,
            origin_count: 0,
            stopped: false,
        }
    }
}

impl LocalApic {
    pub fn software_enabled(&self) -> bool {
        self.svr & SOFTWARE_ENABLE != 0
    }

    /// The processor priority: the TPR, or the class of the highest interrupt in service
    /// if that is higher (Intel SDM vol. 3A, 11.8.3.1).
    pub fn ppr(&self) -> u8 {
        let in_service = self.in_service.highest().unwrap_or(0);
        if self.tpr >> 4 >= in_service >> 4 {
            self.tpr
        } else {
            in_service & 0xf0
        }
    }

    /// Is this APIC a destination of an interrupt message (Intel SDM vol. 3A, 11.6.2)? In
    /// physical mode, `destination` is its APIC ID, or 0xff for all; in logical mode it is a
    /// set of logical IDs: in the flat model (DFR bits 31:28 = 1111) a bit mask matched
    /// against LDR bits 31:24, in the cluster model a cluster (bits 7:4) and a mask (3:0).
    pub fn addressed(&self, logical: bool, destination: u8) -> bool {
        if !logical {
            return destination == APIC_ID || destination == 0xff;
        }
        let logical_id = (self.ldr >> 24) as u8;
        if self.dfr >> 28 == 0xf {
            destination & logical_id != 0
        } else {
            (destination >> 4 == logical_id >> 4 || destination >> 4 == 0xf)
                && destination & logical_id & 0xf != 0
        }
    }

    /// Request interrupt `vector` (its IRR bit). Vectors 0–15 are illegal: an error, which
    /// the APIC reports through its LVT error entry (Intel SDM vol. 3A, 11.5.3: it sets
    /// the ESR bit and raises the error interrupt unless that entry is masked). An error
    /// entry whose own vector is illegal only adds to the errors: no interrupt comes.
    pub fn request(&mut self, vector: u8) {
        if vector < 16 {
            return self.error(RECEIVE_ILLEGAL_VECTOR);
        }
        self.requested.insert(vector);
    }

    /// An error: its ESR bit, and the error interrupt at the LVT error entry's vector unless
    /// that entry is masked (SDM 11.5.3).
    fn error(&mut self, bit: u32) {
        self.errors |= bit;
        let error = self.lvt[LVT_ERROR_INDEX];
        if error & MASKED == 0 && error as u8 >= 16 {
            self.requested.insert(error as u8);
        }
    }

    /// The interrupt the APIC presents to the CPU now, if any: the highest requested
    /// vector whose priority class is above the PPR's (SDM 11.8.3). None while the APIC
    /// is disabled in software.
    pub fn next_to_deliver(&self) -> Option<u8> {
        if !self.software_enabled() {
            return None;
        }
        let vector = self.requested.highest()?;
        (vector >> 4 > self.ppr() >> 4).then_some(vector)
    }

    /// The CPU took `vector`: from requested to in service.
    pub fn delivered(&mut self, vector: u8) {
        self.requested.remove(vector);
        self.in_service.insert(vector);
    }

    /// EOI: the highest-priority interrupt in service is over. Which one.
    pub fn end_of_interrupt(&mut self) -> Option<u8> {
        let vector = self.in_service.highest()?;
        self.in_service.remove(vector);
        Some(vector)
    }

    pub fn timer_mode(&self) -> TimerMode {
        match self.lvt[0] & (1 << 17) {
            0 => TimerMode::OneShot,
            _ => TimerMode::Periodic,
        }
    }

    /// The divide configuration: bits 0, 1 and 3 give 2, 4, …, 128, and 0b111 gives 1.
    pub fn divisor(&self) -> u64 {
        let code = (self.divide & 3) | ((self.divide >> 1) & 4);
        match code {
            7 => 1,
            code => 2 << code,
        }
    }

    /// TSC ticks per count.
    fn tsc_per_count(&self, tsc_hz: u64) -> u128 {
        self.divisor() as u128 * tsc_hz as u128
    }

    /// TSC ticks for `counts` counts of the timer.
    fn counts_to_tsc(&self, counts: u64, tsc_hz: u64) -> u64 {
        (counts as u128 * self.tsc_per_count(tsc_hz) / BUS_HZ as u128).min(u64::MAX as u128) as u64
    }

    /// The current count at TSC `now`: counting down from where it was at its origin; 0
    /// once a one-shot has fired; a periodic timer starts over from the initial count.
    pub fn current_count(&self, now: u64, tsc_hz: u64) -> u32 {
        if self.initial_count == 0 || tsc_hz == 0 || self.stopped {
            return 0;
        }
        let elapsed = now.saturating_sub(self.origin_tsc) as u128 * BUS_HZ as u128
            / self.tsc_per_count(tsc_hz);
        let (origin, initial) = (self.origin_count as u128, self.initial_count as u128);
        match self.timer_mode() {
            TimerMode::OneShot => origin.saturating_sub(elapsed) as u32,
            TimerMode::Periodic if elapsed < origin => (origin - elapsed) as u32,
            TimerMode::Periodic => (initial - (elapsed - origin) % initial) as u32,
        }
    }

    /// `change` is a write of the LVT timer entry or the divide configuration: a change of
    /// the mode or the divisor while the timer runs does not start it over, its count
    /// carries on from where it is (Intel SDM vol. 3A, 11.5.4), from a new origin; a
    /// one-shot count that reached 0 stays there. A write that changes neither leaves the
    /// count alone.
    fn keep_counting(&mut self, now: u64, tsc_hz: u64, change: impl FnOnce(&mut LocalApic)) {
        let before = (self.timer_mode(), self.divisor());
        let count = self.current_count(now, tsc_hz);
        let running = self.initial_count != 0 && !self.stopped;
        change(self);
        if !running || (self.timer_mode(), self.divisor()) == before {
            return;
        }
        match count {
            0 => self.stopped = true,
            count => (self.origin_tsc, self.origin_count) = (now, count),
        }
    }

    /// The timer as one of the guest's timers (`domain/interrupts.rs`, `Timers`): its vector,
    /// when it next fires and how often.
    /// `None`: it does not fire (masked, disabled in software, stopped, a one-shot that has
    /// fired, a mode not offered).
    pub fn timer(&self, now: u64, tsc_hz: u64) -> Option<(u8, Countdown)> {
        let entry = self.lvt[0];
        if !self.software_enabled()
            || entry & MASKED != 0
            || self.initial_count == 0
            || self.stopped
        {
            return None;
        }
        let period = self.counts_to_tsc(self.initial_count as u64, tsc_hz).max(1);
        // When the count from its origin reaches 0.
        let first = self
            .origin_tsc
            .saturating_add(self.counts_to_tsc(self.origin_count as u64, tsc_hz).max(1));
        let countdown = match self.timer_mode() {
            TimerMode::OneShot if first > now => Countdown {
                period_tsc: None,
                due_tsc: first,
            },
            TimerMode::OneShot => return None,
            TimerMode::Periodic if first > now => Countdown {
                period_tsc: Some(period),
                due_tsc: first,
            },
            TimerMode::Periodic => {
                // The next whole period after `now`.
                let periods = (now - first) / period + 1;
                Countdown {
                    period_tsc: Some(period),
                    due_tsc: first.saturating_add(periods * period),
                }
            }
        };
        Some((entry as u8, countdown))
    }

    /// What the timer's state is, for noticing a change that re-arms the guest's timer.
    pub fn timer_state(&self) -> (u32, u32, u32, (u64, u32), bool, bool) {
        (
            self.lvt[0],
            self.initial_count,
            self.divide,
            (self.origin_tsc, self.origin_count),
            self.software_enabled(),
            self.stopped,
        )
    }

    /// A 32-bit read of the register at `offset`: its value and the register's name.
    pub fn read(&mut self, offset: u64, now: u64, tsc_hz: u64) -> (u32, &'static str) {
        let index = ((offset >> 4) & 7) as usize;
        match offset & !0xf {
            // The ID is in bits 31:24 (Intel SDM vol. 3A, 11.4.6).
            reg::ID => ((APIC_ID as u32) << 24, "APIC ID"),
            reg::VERSION => (VERSION, "version"),
            reg::TPR => (self.tpr as u32, "TPR"),
            reg::APR => (0, "arbitration priority"),
            reg::PPR => (self.ppr() as u32, "PPR"),
            reg::LDR => (self.ldr, "logical destination"),
            reg::DFR => (self.dfr, "destination format"),
            reg::SVR => (self.svr, "spurious-interrupt vector"),
            0x100..=0x170 => (self.in_service.word(index), "ISR"),
            0x180..=0x1f0 => (self.trigger_mode.word(index), "TMR"),
            0x200..=0x270 => (self.requested.word(index), "IRR"),
            reg::ESR => (self.esr, "error status"),
            reg::ICR_LOW => (self.icr as u32, "interrupt command (low)"),
            reg::ICR_HIGH => ((self.icr >> 32) as u32, "interrupt command (high)"),
            0x320..=0x370 => (
                self.lvt[((offset - reg::LVT_TIMER) >> 4) as usize],
                lvt_name(offset),
            ),
            reg::TIMER_INITIAL => (self.initial_count, "timer initial count"),
            reg::TIMER_CURRENT => (self.current_count(now, tsc_hz), "timer current count"),
            reg::TIMER_DIVIDE => (self.divide, "timer divide configuration"),
            // EOI and the reserved offsets read 0.
            reg::EOI => (0, "EOI (write-only)"),
            _ => {
                self.error(ILLEGAL_REGISTER_ADDRESS);
                (
                    0,
                    "a reserved offset (an error: ESR's illegal register address)",
                )
            }
        }
    }

    /// A 32-bit write of `value` to the register at `offset`, at TSC `now` (`tsc_hz` ticks
    /// a second): what it did.
    pub fn write(&mut self, offset: u64, value: u32, now: u64, tsc_hz: u64) -> String {
        match offset & !0xf {
            reg::TPR => {
                self.tpr = value as u8;
                format!(
                    "TPR = {:#x}: interrupts of class {} and below wait",
                    self.tpr,
                    self.tpr >> 4
                )
            }
            reg::EOI => match self.end_of_interrupt() {
                Some(vector) => format!("EOI: interrupt {vector:#x} is no longer in service"),
                None => "EOI with nothing in service: ignored".into(),
            },
            reg::LDR => {
                self.ldr = value & 0xff00_0000;
                format!("logical destination = {:#x}", self.ldr)
            }
            reg::DFR => {
                self.dfr = value | 0x0fff_ffff;
                format!("destination format = {:#x}", self.dfr)
            }
            reg::SVR => {
                self.svr = value & SVR_WRITABLE;
                if !self.software_enabled() {
                    // Disabled in software: every LVT entry masked (SDM 11.4.7.2).
                    for entry in &mut self.lvt {
                        *entry |= MASKED;
                    }
                    return format!(
                        "spurious-interrupt vector = {:#x}: the APIC is disabled in software, every LVT entry masked",
                        self.svr
                    );
                }
                format!(
                    "spurious-interrupt vector {:#x}, the APIC enabled in software",
                    self.svr as u8
                )
            }
            reg::ESR => {
                // A write latches the errors since the last one for reading, and clears them.
                self.esr = core::mem::take(&mut self.errors);
                format!("error status latched: {:#x}", self.esr)
            }
            reg::ICR_HIGH => {
                self.icr = (self.icr & 0xffff_ffff) | ((value & ICR_HIGH_WRITABLE) as u64) << 32;
                format!(
                    "interrupt command (high) = {value:#x}: destination {}",
                    value >> 24
                )
            }
            reg::ICR_LOW => {
                // Delivery status (bit 12) is never busy: the IPI is sent at once.
                self.icr = (self.icr & !0xffff_ffff) | (value & ICR_LOW_WRITABLE) as u64;
                self.interprocessor_interrupt()
            }
            0x320..=0x370 => {
                let index = ((offset - reg::LVT_TIMER) >> 4) as usize;
                // While the APIC is disabled in software the mask cannot be cleared.
                let forced = if self.software_enabled() { 0 } else { MASKED };
                let entry = value & LVT_WRITABLE[index] | forced;
                match index {
                    0 => self.keep_counting(now, tsc_hz, |apic| apic.lvt[0] = entry),
                    _ => self.lvt[index] = entry,
                }
                let entry = self.lvt[index];
                format!(
                    "{} = {entry:#x}: vector {:#x}, {}{}",
                    lvt_name(offset),
                    entry as u8,
                    if entry & MASKED != 0 {
                        "masked"
                    } else {
                        "unmasked"
                    },
                    if index == 0 {
                        self.describe_timer_mode()
                    } else {
                        ""
                    }
                )
            }
            reg::TIMER_INITIAL => {
                self.initial_count = value;
                (self.origin_tsc, self.origin_count) = (now, value);
                self.stopped = false;
                match value {
                    0 => "timer initial count 0: the timer stops".into(),
                    count => format!(
                        "timer initial count {count}: counting down from now, one count every {} bus clocks",
                        self.divisor()
                    ),
                }
            }
            reg::TIMER_DIVIDE => {
                self.keep_counting(now, tsc_hz, |apic| apic.divide = value & 0xb);
                format!("timer divide configuration: divide by {}", self.divisor())
            }
            reg::ID | reg::VERSION | reg::APR | reg::PPR | reg::TIMER_CURRENT => {
                format!(
                    "a write to a read-only register ({:#x}): ignored",
                    offset & !0xf
                )
            }
            0x100..=0x270 => "a write to ISR, TMR or IRR, which are read-only: ignored".into(),
            _ => {
                self.error(ILLEGAL_REGISTER_ADDRESS);
                format!(
                    "a write to a reserved offset {offset:#x}: ignored, an error (ESR's illegal register address)"
                )
            }
        }
    }

    fn describe_timer_mode(&self) -> &'static str {
        match self.timer_mode() {
            TimerMode::OneShot => ", one-shot",
            TimerMode::Periodic => ", periodic",
        }
    }

    /// The ICR was written: send the IPI it describes. Only this CPU exists.
    fn interprocessor_interrupt(&mut self) -> String {
        let low = self.icr as u32;
        let vector = low as u8;
        let delivery_mode = (low >> 8) & 7;
        let shorthand = (low >> 18) & 3;
        let destination = (self.icr >> 56) as u8;
        // 01: self; 10: all including self; 11: all but self; 00: the destination field, a
        // physical APIC ID (ours, or 0xff: all) or a set of logical ones (SDM 11.6.2).
        let to_self = match shorthand {
            1 | 2 => true,
            3 => false,
            _ => self.addressed(low & (1 << 11) != 0, destination),
        };
        // A fixed or lowest-priority message with a vector below 16 is an error of the
        // sender's, wherever it goes (and of the receiver's too, when that is this APIC).
        if matches!(delivery_mode, 0 | 1) && vector < 16 {
            self.error(SEND_ILLEGAL_VECTOR);
        }
        match (delivery_mode, to_self) {
            // Fixed, or lowest priority: with one CPU, the lowest-priority one is this one.
            // (The SDM calls lowest priority with shorthand "self" or "all" invalid; QEMU's
            // APIC delivers it, and so does this one.)
            (0 | 1, true) => {
                self.request(vector);
                format!("IPI: fixed interrupt {vector:#x} to itself, requested in its IRR")
            }
            // Delivery mode 100b: NMI, the vector field ignored (SDM vol. 3A, 11.6.1).
            (4, true) => {
                self.nmi_requested = true;
                "IPI: NMI to itself: the hypervisor delivers it (vector 2) as soon as no NMI handler is running".into()
            }
            (_, false) => "IPI to other CPUs: there are none, nothing is sent".into(),
            (mode, true) => format!(
                "IPI to itself with delivery mode {mode} (not fixed): not modeled, nothing is sent"
            ),
        }
    }
}

fn lvt_name(offset: u64) -> &'static str {
    LVT_NAMES[(((offset & !0xf) - reg::LVT_TIMER) >> 4).min(5) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TSC of 2 GHz: two TSC ticks per bus clock.
    const TSC_HZ: u64 = 2_000_000_000;

    fn enabled() -> LocalApic {
        let mut apic = LocalApic::default();
        apic.write(reg::SVR, 0x1ff, 0, TSC_HZ);
        apic
    }

    #[test]
    fn after_reset_the_apic_is_disabled_and_every_lvt_masked() {
        let mut apic = LocalApic::default();
        assert_eq!(apic.read(reg::VERSION, 0, TSC_HZ), (0x50014, "version"));
        assert_eq!(apic.read(reg::SVR, 0, TSC_HZ).0, 0xff);
        assert_eq!(apic.read(reg::DFR, 0, TSC_HZ).0, 0xffff_ffff);
        for offset in (0x320..=0x370).step_by(16) {
            assert_eq!(apic.read(offset, 0, TSC_HZ).0, 0x10000, "{offset:#x}");
        }
    }

    #[test]
    fn while_disabled_in_software_an_lvt_cannot_be_unmasked() {
        let mut apic = LocalApic::default();
        apic.write(reg::LVT_TIMER, 0x30, 0, TSC_HZ);
        assert_eq!(apic.lvt[0], 0x10030);
        let mut apic = enabled();
        apic.write(reg::LVT_TIMER, 0x30, 0, TSC_HZ);
        assert_eq!(apic.lvt[0], 0x30);
        // Disabling masks them all again.
        apic.write(reg::SVR, 0xff, 0, TSC_HZ);
        assert_eq!(apic.lvt[0], 0x10030);
    }

    #[test]
    fn the_divide_configuration_maps_bits_0_1_and_3_to_1_through_128() {
        let mut apic = LocalApic::default();
        for (code, divisor) in [
            (0x0, 2),
            (0x1, 4),
            (0x2, 8),
            (0x3, 16),
            (0x8, 32),
            (0x9, 64),
            (0xa, 128),
            (0xb, 1),
        ] {
            apic.write(reg::TIMER_DIVIDE, code, 0, TSC_HZ);
            assert_eq!(apic.divisor(), divisor, "{code:#x}");
        }
    }

    #[test]
    fn a_one_shot_timer_counts_down_fires_once_and_stays_at_0() {
        let mut apic = enabled();
        apic.write(reg::TIMER_DIVIDE, 0xb, 0, TSC_HZ); // divide by 1: a count per ns
        apic.write(reg::LVT_TIMER, 0x30, 0, TSC_HZ);
        apic.write(reg::TIMER_INITIAL, 1000, 10_000, TSC_HZ);
        // 1000 counts of 1 ns at 2 TSC ticks per ns: due 2000 ticks after the start.
        let (vector, countdown) = apic.timer(10_000, TSC_HZ).expect("armed");
        assert_eq!(vector, 0x30);
        assert_eq!(
            countdown,
            Countdown {
                period_tsc: None,
                due_tsc: 12_000
            }
        );
        assert_eq!(apic.current_count(11_000, TSC_HZ), 500);
        assert_eq!(apic.current_count(12_500, TSC_HZ), 0);
        assert_eq!(apic.timer(12_500, TSC_HZ), None, "fired: nothing more");
    }

    #[test]
    fn read_only_and_reserved_bits_read_as_the_apic_keeps_them() {
        // Delivery status and remote IRR are the APIC's; reserved bits read 0 (SDM 3A,
        // figure 11-8); the SVR has no bit 12 with version 0x50014; the ICR's delivery
        // status is never set and its high half holds only the destination.
        let mut apic = enabled();
        for (offset, readable) in [
            (reg::LVT_TIMER, 0x3_00ff),
            (0x330, 0x1_07ff),
            (0x340, 0x1_07ff),
            (0x350, 0x1_a7ff),
            (0x360, 0x1_a7ff),
            (reg::LVT_ERROR, 0x1_00ff),
        ] {
            apic.write(offset, u32::MAX, 0, TSC_HZ);
            assert_eq!(apic.read(offset, 0, TSC_HZ).0, readable, "{offset:#x}");
        }
        apic.write(reg::SVR, 0x11ff, 0, TSC_HZ);
        assert_eq!(apic.read(reg::SVR, 0, TSC_HZ).0, 0x1ff);
        apic.write(reg::ICR_HIGH, u32::MAX, 0, TSC_HZ);
        assert_eq!(apic.read(reg::ICR_HIGH, 0, TSC_HZ).0, 0xff00_0000);
        apic.write(reg::ICR_LOW, 0xffff_f0ff, 0, TSC_HZ); // to all but self: nothing sent
        assert_eq!(apic.read(reg::ICR_LOW, 0, TSC_HZ).0, 0x000c_c0ff);
    }

    #[test]
    fn changing_the_mode_or_the_divisor_does_not_restart_the_count() {
        // Periodic, 1000 counts of 1 ns (2 TSC ticks each), started at T, 400 counted:
        // switching to one-shot keeps 600 and fires once, 1200 ticks later (SDM 3A,
        // 11.5.4).
        const T: u64 = 1_000_000;
        let mut apic = enabled();
        apic.write(reg::TIMER_DIVIDE, 0xb, 0, TSC_HZ);
        apic.write(reg::LVT_TIMER, 0x20030, 0, TSC_HZ);
        apic.write(reg::TIMER_INITIAL, 1000, T, TSC_HZ);
        apic.write(reg::LVT_TIMER, 0x30, T + 800, TSC_HZ);
        assert_eq!(apic.current_count(T + 800, TSC_HZ), 600);
        let (_, countdown) = apic.timer(T + 800, TSC_HZ).expect("still counting");
        assert_eq!(
            countdown,
            Countdown {
                period_tsc: None,
                due_tsc: T + 2000
            }
        );
        // Divide by 2 at count 500: the 500 left take twice as long.
        apic.write(reg::TIMER_DIVIDE, 0x0, T + 1000, TSC_HZ);
        assert_eq!(apic.current_count(T + 1000, TSC_HZ), 500);
        assert_eq!(apic.current_count(T + 2000, TSC_HZ), 250);
        // Fired (count 0), then periodic: it stays at 0 and does not fire...
        apic.write(reg::LVT_TIMER, 0x20030, T + 5000, TSC_HZ);
        assert_eq!(apic.current_count(T + 6000, TSC_HZ), 0);
        assert_eq!(apic.timer(T + 6000, TSC_HZ), None);
        // ...until the initial count is written again.
        apic.write(reg::TIMER_INITIAL, 1000, T + 7000, TSC_HZ);
        assert_eq!(apic.current_count(T + 7000, TSC_HZ), 1000);
        assert!(apic.timer(T + 7000, TSC_HZ).is_some());
        // Rewriting the same mode and divisor (Linux's __setup_APIC_LVTT does) moves
        // nothing: the guest's timer is not re-armed.
        let state = apic.timer_state();
        apic.write(reg::TIMER_DIVIDE, 0x0, T + 7100, TSC_HZ);
        apic.write(reg::LVT_TIMER, 0x20030, T + 7100, TSC_HZ);
        assert_eq!(apic.timer_state(), state);
    }

    #[test]
    fn a_bigger_divisor_right_after_the_start_keeps_the_count_exact() {
        // 500 of 1000 counted 1000 TSC ticks after a start at 0, then divide by 128: still
        // 500 (the count's origin moves, no start time is made up before 0), and the 500
        // left take 128 times as long.
        let mut apic = enabled();
        apic.write(reg::TIMER_DIVIDE, 0xb, 0, TSC_HZ);
        apic.write(reg::LVT_TIMER, 0x30, 0, TSC_HZ);
        apic.write(reg::TIMER_INITIAL, 1000, 0, TSC_HZ);
        apic.write(reg::TIMER_DIVIDE, 0xa, 1000, TSC_HZ);
        assert_eq!(apic.current_count(1000, TSC_HZ), 500);
        let (_, countdown) = apic.timer(1000, TSC_HZ).expect("counting");
        assert_eq!(countdown.due_tsc, 1000 + 500 * 128 * 2);
    }

    #[test]
    fn a_fixed_ipi_reaches_this_cpu_by_broadcast_logical_id_or_lowest_priority() {
        for (icr_high, icr_low, logical_id) in [
            (0xff00_0000, 0x0_0040, 0),           // physical broadcast, fixed
            (0x0100_0000, 0x0_0840, 0x0100_0000), // logical, flat: ID 1 matches bit 0
            (0x0000_0000, 0x0_0140, 0),           // physical ID 0, lowest priority
        ] {
            let mut apic = enabled();
            apic.write(reg::LDR, logical_id, 0, TSC_HZ);
            apic.write(reg::ICR_HIGH, icr_high, 0, TSC_HZ);
            let what = apic.write(reg::ICR_LOW, icr_low, 0, TSC_HZ);
            assert!(
                apic.requested.contains(0x40),
                "{icr_high:#x} {icr_low:#x}: {what}"
            );
        }
        // Logical destination 2 does not name logical ID 1: nothing for this CPU.
        let mut apic = enabled();
        apic.write(reg::LDR, 0x0100_0000, 0, TSC_HZ);
        apic.write(reg::ICR_HIGH, 0x0200_0000, 0, TSC_HZ);
        apic.write(reg::ICR_LOW, 0x0_0840, 0, TSC_HZ);
        assert!(!apic.requested.contains(0x40));
    }

    #[test]
    fn a_periodic_timer_reloads() {
        let mut apic = enabled();
        apic.write(reg::TIMER_DIVIDE, 0x0, 0, TSC_HZ); // divide by 2
        apic.write(reg::LVT_TIMER, 0x20030, 0, TSC_HZ);
        apic.write(reg::TIMER_INITIAL, 500, 0, TSC_HZ);
        // 500 counts of 2 ns = 1 µs = 2000 TSC ticks.
        let (_, countdown) = apic.timer(0, TSC_HZ).expect("armed");
        assert_eq!(
            countdown,
            Countdown {
                period_tsc: Some(2000),
                due_tsc: 2000
            }
        );
        let (_, later) = apic.timer(5000, TSC_HZ).expect("still armed");
        assert_eq!(later.due_tsc, 6000);
        assert_eq!(apic.current_count(2500, TSC_HZ), 375);
    }

    #[test]
    fn a_masked_or_stopped_timer_does_not_fire() {
        let mut apic = enabled();
        apic.write(reg::LVT_TIMER, 0x10030, 0, TSC_HZ);
        apic.write(reg::TIMER_INITIAL, 1000, 0, TSC_HZ);
        assert_eq!(apic.timer(0, TSC_HZ), None);
        apic.write(reg::LVT_TIMER, 0x30, 0, TSC_HZ);
        assert!(apic.timer(0, TSC_HZ).is_some());
        apic.write(reg::TIMER_INITIAL, 0, 0, TSC_HZ);
        assert_eq!(apic.timer(0, TSC_HZ), None);
    }

    #[test]
    fn an_interrupt_is_requested_delivered_in_service_and_ended_by_eoi() {
        let mut apic = enabled();
        apic.request(0x30);
        assert_eq!(
            apic.read(reg::IRR + 0x10, 0, TSC_HZ).0,
            1 << 16,
            "IRR bit 0x30"
        );
        assert_eq!(apic.next_to_deliver(), Some(0x30));
        apic.delivered(0x30);
        assert_eq!(
            apic.read(reg::ISR + 0x10, 0, TSC_HZ).0,
            1 << 16,
            "ISR bit 0x30"
        );
        assert_eq!(apic.ppr(), 0x30);
        // A second one of the same class waits for the EOI.
        apic.request(0x31);
        assert_eq!(apic.next_to_deliver(), None);
        assert_eq!(
            apic.write(reg::EOI, 0, 0, TSC_HZ),
            "EOI: interrupt 0x30 is no longer in service"
        );
        assert_eq!(apic.next_to_deliver(), Some(0x31));
    }

    #[test]
    fn a_higher_class_preempts_one_in_service_and_the_tpr_holds_lower_ones_back() {
        let mut apic = enabled();
        apic.request(0x30);
        apic.delivered(0x30);
        apic.request(0x41);
        assert_eq!(apic.next_to_deliver(), Some(0x41), "class 4 above class 3");
        let mut apic = enabled();
        apic.write(reg::TPR, 0x50, 0, TSC_HZ);
        apic.request(0x41);
        assert_eq!(
            apic.next_to_deliver(),
            None,
            "TPR class 5 holds class 4 back"
        );
        apic.write(reg::TPR, 0, 0, TSC_HZ);
        assert_eq!(apic.next_to_deliver(), Some(0x41));
    }

    #[test]
    fn a_disabled_apic_delivers_nothing() {
        let mut apic = LocalApic::default();
        apic.request(0x30);
        assert_eq!(apic.next_to_deliver(), None);
    }

    #[test]
    fn a_self_ipi_is_requested_and_an_illegal_vector_is_an_error() {
        let mut apic = enabled();
        let what = apic.write(reg::ICR_LOW, 0x4_0040, 0, TSC_HZ); // shorthand self, fixed, 0x40
        assert_eq!(
            what,
            "IPI: fixed interrupt 0x40 to itself, requested in its IRR"
        );
        assert_eq!(apic.next_to_deliver(), Some(0x40));
        assert_eq!(
            apic.read(reg::ICR_LOW, 0, TSC_HZ).0 & (1 << 12),
            0,
            "never busy"
        );
        apic.write(reg::ICR_LOW, 0x4_0005, 0, TSC_HZ);
        apic.write(reg::ESR, 0, 0, TSC_HZ);
        assert_eq!(
            apic.read(reg::ESR, 0, TSC_HZ).0,
            SEND_ILLEGAL_VECTOR | RECEIVE_ILLEGAL_VECTOR,
            "sent and received"
        );
        assert!(
            !apic.requested.contains(0xfe),
            "the LVT error entry is masked: no error interrupt"
        );
        // Unmasked at vector 0xfe, the next illegal vector raises the error interrupt.
        apic.write(reg::LVT_ERROR, 0xfe, 0, TSC_HZ);
        apic.write(reg::ICR_LOW, 0x4_0005, 0, TSC_HZ);
        assert!(apic.requested.contains(0xfe), "the error interrupt");
        assert!(!apic.requested.contains(0x05));
        // To all but itself: nobody.
        assert!(
            apic.write(reg::ICR_LOW, 0xc_0050, 0, TSC_HZ)
                .contains("there are none")
        );
        assert!(!apic.requested.contains(0x50));
        // An illegal vector sent to the others only: the sender's error alone.
        apic.write(reg::ESR, 0, 0, TSC_HZ);
        apic.write(reg::ICR_LOW, 0xc_0005, 0, TSC_HZ);
        apic.write(reg::ESR, 0, 0, TSC_HZ);
        assert_eq!(apic.read(reg::ESR, 0, TSC_HZ).0, SEND_ILLEGAL_VECTOR);
    }

    #[test]
    fn a_reserved_offset_reads_0_and_is_an_illegal_register_address() {
        let mut apic = enabled();
        assert_eq!(apic.read(0x040, 0, TSC_HZ).0, 0);
        apic.write(reg::ESR, 0, 0, TSC_HZ);
        assert_eq!(apic.read(reg::ESR, 0, TSC_HZ).0, ILLEGAL_REGISTER_ADDRESS);
        apic.write(0x3f0, 1, 0, TSC_HZ);
        apic.write(reg::ESR, 0, 0, TSC_HZ);
        assert_eq!(apic.read(reg::ESR, 0, TSC_HZ).0, ILLEGAL_REGISTER_ADDRESS);
    }

    #[test]
    fn an_interrupt_message_addresses_this_apic_by_id_or_by_logical_id() {
        let mut apic = enabled();
        assert!(apic.addressed(false, 0) && apic.addressed(false, 0xff));
        assert!(!apic.addressed(false, 1), "APIC ID 1 is another CPU");
        assert!(!apic.addressed(true, 1), "no logical ID yet (LDR 0)");
        apic.write(reg::LDR, 0x0100_0000, 0, TSC_HZ); // logical ID 1, flat model
        assert!(apic.addressed(true, 1) && apic.addressed(true, 0xff));
        assert!(!apic.addressed(true, 2));
        apic.write(reg::DFR, 0x0fff_ffff, 0, TSC_HZ); // cluster model: cluster 0, member 1
        assert!(apic.addressed(true, 0x01) && !apic.addressed(true, 0x11));
    }

    #[test]
    fn read_only_registers_ignore_writes() {
        let mut apic = enabled();
        apic.write(reg::VERSION, 0, 0, TSC_HZ);
        apic.write(reg::ID, 7 << 24, 0, TSC_HZ);
        assert_eq!(apic.read(reg::VERSION, 0, TSC_HZ).0, VERSION);
        assert_eq!(apic.read(reg::ID, 0, TSC_HZ).0, 0);
    }
}
