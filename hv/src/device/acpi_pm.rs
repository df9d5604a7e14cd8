//! The ACPI power-management registers, at the ports QEMU's PIIX4 puts them (0x600–0x60b),
//! which the FADT gives a kernel (`image/acpi.rs`): the fixed hardware an ACPI OS drives
//! without any AML (ACPI 6.4, chapter 4 "ACPI Hardware Specification").
//!
//! | port  | register | width | here |
//! |-------|----------|-------|------|
//! | 0x600 | PM1 status (PM1a_EVT_BLK) | 16 | TMR_STS: the timer's bit 23 toggled; write 1 to clear (4.8.4.1.1). No other event has a source |
//! | 0x602 | PM1 enable | 16 | kept (4.8.4.1.2), but the SCI is not modelled: with TMR_EN set, TMR_STS should raise it (TMR_EN: "an SCI event is generated anytime the TMR_STS bit is set"; 4.8.2.1) and here does not; the other enables' events have no source |
//! | 0x604 | PM1 control (PM1a_CNT_BLK) | 16 | SCI_EN reads 1 always; BM_RLD and SLP_TYP kept; SLP_EN with the DSDT's S5 type powers the machine off (the domain ends), any other sleep request is ignored, and the trace says so (4.8.4.2.1) |
//! | 0x608 | PM timer (PM_TMR_BLK) | 32 | 24 bits counting at 3.579545 MHz since the machine started, read-only (4.8.2.1; the register: "Power Management Timer (PM_TMR)") |
//!
//! **Why SCI_EN is always 1.** An ACPI PC boots in legacy mode, its power events going to
//! firmware through SMIs; the OS writes ACPI_ENABLE to SMI_CMD and waits for the firmware to
//! set SCI_EN. This platform has no SMM and no firmware: the FADT says SMI_CMD = 0, which
//! tells the OS that the machine is in ACPI mode already (ACPI 6.4, 5.2.9, SMI_CMD). An OS
//! may still check by reading SCI_EN, so it reads 1 from the start, and a write cannot
//! clear it.
//!
//! **Soft off, and no other sleep state.** SLP_EN asks for the sleep state whose SLP_TYP the
//! OS took from the DSDT's `\_Sx` objects (ACPI 6.4, 7.4.2 "\_Sx (System States)";
//! 16.1.4 "G2/S5"). traplab's DSDT defines one, `\_S5` with SLP_TYP [`SOFT_OFF_TYPE`] (0, the
//! value QEMU's PIIX4 and its DSDT use): that write switches the machine off, and here the
//! machine is the domain, which ends with status 0 (`exit/ioio.rs`), as `poweroff` ends a
//! Linux kernel on a PC. A request for any other type names a state the DSDT does not
//! define: the type is kept (it reads back), the domain runs on, and the trace says it was
//! ignored.
//!
//! The timer is not ticked: like the PIT (`pit.rs`), a read computes it from the TSC
//! (`Machine::now`, `Machine::tsc_hz`), counting from the machine's start ("the starting
//! value of the timer is undefined", the spec says: only its rate matters). Any width
//! reaches the registers: an access takes the bytes of each register it covers, and a byte
//! no register holds (0x606, 0x607, past 0x60b) reads all ones like an empty port.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The ports, as the FADT gives them: PM1a_EVT_BLK (status, then enable), PM1a_CNT_BLK and
/// PM_TMR_BLK, with their lengths in bytes (PM1_EVT_LEN, PM1_CNT_LEN, PM_TMR_LEN).
pub const PM1_EVENT_BLOCK: u16 = 0x600;
pub const PM1_EVENT_LENGTH: u8 = 4;
pub const PM1_STATUS: u16 = PM1_EVENT_BLOCK;
/// "PM1_EVT_LEN / 2" bytes after the status register (ACPI 6.4, 4.8.4.1.2).
pub const PM1_ENABLE: u16 = PM1_EVENT_BLOCK + PM1_EVENT_LENGTH as u16 / 2;
pub const PM1_CONTROL: u16 = 0x604;
pub const PM1_CONTROL_LENGTH: u8 = 2;
pub const PM_TIMER: u16 = 0x608;
pub const PM_TIMER_LENGTH: u8 = 4;
/// The first port after each block.
const PM1_CONTROL_END: u16 = PM1_CONTROL + PM1_CONTROL_LENGTH as u16;
const PM_TIMER_END: u16 = PM_TIMER + PM_TIMER_LENGTH as u16;

/// The interrupt the SCI is wired to: ISA IRQ 9, level-triggered, active high, as on the
/// PIIX4 (and QEMU). The FADT's SCI_INT and the MADT's override say so. The SCI is not
/// modelled: this model never drives the line, though TMR_STS with TMR_EN set should (ACPI
/// 6.4, 4.8.2.1 and PM1 enable's TMR_EN; QEMU's `acpi_update_sci` holds the line while a
/// status bit and its enable are both set, and arms a timer for the PM timer's next toggle
/// while TMR_EN is). Doing it would take a line held high while the two are set, and a
/// deadline for the toggle of bit 23: a fourth timer beside the domain's three
/// (`domain/interrupts.rs`, `Timers`).
pub const SCI_IRQ: u8 = 9;

/// The PM timer's clock (ACPI 6.4, 4.8.2.1 "Power Management Timer"), and its width: 24
/// bits, as the FADT's TMR_VAL_EXT flag (clear) says.
pub const TIMER_HZ: u64 = 3_579_545;
pub const TIMER_BITS: u32 = 24;
const TIMER_MASK: u64 = (1 << TIMER_BITS) - 1;

/// PM1 status and enable bits (ACPI 6.4, tables 4.11 and 4.12): an event's status bit and
/// its enable bit are the same bit.
pub mod event {
    pub const TIMER: u16 = 1 << 0;
    pub const BUS_MASTER: u16 = 1 << 4;
    pub const GLOBAL: u16 = 1 << 5;
    pub const POWER_BUTTON: u16 = 1 << 8;
    pub const SLEEP_BUTTON: u16 = 1 << 9;
    pub const RTC: u16 = 1 << 10;
    pub const WAKE: u16 = 1 << 15;
    /// The enable register's bits (BM_STS and WAK_STS have no enable).
    pub const ENABLES: u16 = TIMER | GLOBAL | POWER_BUTTON | SLEEP_BUTTON | RTC;
}

/// PM1 control bits (ACPI 6.4, table 4.13).
pub mod control {
    pub const SCI_EN: u16 = 1 << 0;
    pub const BM_RLD: u16 = 1 << 1;
    /// Write-only: raises the firmware's global lock event (there is no firmware).
    pub const GBL_RLS: u16 = 1 << 2;
    pub const SLP_TYP_SHIFT: u16 = 10;
    pub const SLP_TYP: u16 = 7 << SLP_TYP_SHIFT;
    /// Write-only: enter the sleep state SLP_TYP; reads 0.
    pub const SLP_EN: u16 = 1 << 13;
}

/// The SLP_TYP of S5, soft off, as the DSDT's `\_S5` gives it (`image/acpi.rs`): 0, as on
/// QEMU's PIIX4.
pub const SOFT_OFF_TYPE: u16 = 0;

/// The sleep type an OUT of `size` bytes of `value` at `port` asks for: `Some(SLP_TYP)` when
/// it sets SLP_EN in PM1 control, `None` for any other write.
pub fn sleep_request(port: u16, size: u8, value: u32) -> Option<u16> {
    let (bits, mask) = bytes_on(port, size, value, PM1_CONTROL, PM1_CONTROL_LENGTH as u16)?;
    let bits = (bits & mask) as u16;
    (bits & control::SLP_EN != 0).then_some((bits & control::SLP_TYP) >> control::SLP_TYP_SHIFT)
}

/// TMR_STS is set each time the timer's most significant bit (bit 23) toggles: every 2^23
/// counts, about 2.3 s (ACPI 6.4, 4.8.2.1).
const TIMER_STATUS_PERIOD_BITS: u32 = TIMER_BITS - 1;

/// Does `port` hold one of the registers?
pub fn claims(port: u16) -> bool {
    matches!(port, PM1_EVENT_BLOCK..PM1_CONTROL_END | PM_TIMER..PM_TIMER_END)
}

/// The register at `port`, in words.
pub fn name(port: u16) -> &'static str {
    match port {
        PM1_STATUS..PM1_ENABLE => "ACPI PM1 status",
        PM1_ENABLE..PM1_CONTROL => "ACPI PM1 enable",
        PM1_CONTROL..PM1_CONTROL_END => "ACPI PM1 control",
        PM_TIMER..PM_TIMER_END => "ACPI PM timer",
        _ => "no device",
    }
}

/// The PM timer's count since the machine started (not cut to 24 bits), at TSC `now` with
/// `tsc_hz` ticks per second.
fn counts(now: u64, tsc_hz: u64) -> u64 {
    (now as u128 * TIMER_HZ as u128 / tsc_hz.max(1) as u128) as u64
}

/// The PM timer register at TSC `now`: 24 bits, wrapping.
pub fn timer(now: u64, tsc_hz: u64) -> u32 {
    (counts(now, tsc_hz) & TIMER_MASK) as u32
}

/// The registers the OS writes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AcpiPm {
    /// How many times bit 23 of the timer had toggled when the OS last cleared TMR_STS:
    /// the status is set while it has toggled more often since.
    timer_status_cleared: u64,
    enable: u16,
    /// BM_RLD and SLP_TYP, as last written.
    control: u16,
}

impl AcpiPm {
    /// PM1 status at TSC `now`.
    pub fn status(&self, now: u64, tsc_hz: u64) -> u16 {
        let toggles = counts(now, tsc_hz) >> TIMER_STATUS_PERIOD_BITS;
        if toggles != self.timer_status_cleared {
            event::TIMER
        } else {
            0
        }
    }

    /// PM1 control as it reads: SCI_EN always set, the write-only bits clear.
    pub fn control(&self) -> u16 {
        self.control | control::SCI_EN
    }

    /// PM1 enable.
    pub fn enable(&self) -> u16 {
        self.enable
    }

    /// The byte at `port`, all ones where no register is.
    fn byte(&self, port: u16, now: u64, tsc_hz: u64) -> u8 {
        let (register, first) = match port {
            PM1_STATUS..PM1_ENABLE => (self.status(now, tsc_hz) as u32, PM1_STATUS),
            PM1_ENABLE..PM1_CONTROL => (self.enable as u32, PM1_ENABLE),
            PM1_CONTROL..PM1_CONTROL_END => (self.control() as u32, PM1_CONTROL),
            PM_TIMER..PM_TIMER_END => (timer(now, tsc_hz), PM_TIMER),
            _ => return 0xff,
        };
        (register >> (8 * (port - first))) as u8
    }

    /// IN of `size` bytes at `port`, at TSC `now`: the register's bytes from that port on.
    pub fn read(&self, port: u16, size: u8, now: u64, tsc_hz: u64) -> u32 {
        (0..size as u16).rev().fold(0, |value, index| {
            (value << 8) | self.byte(port.wrapping_add(index), now, tsc_hz) as u32
        })
    }

    /// OUT of `size` bytes of `value` at `port`, at TSC `now`: what it did, in words.
    pub fn write(&mut self, port: u16, size: u8, value: u32, now: u64, tsc_hz: u64) -> String {
        let mut done = Vec::new();
        // Each register takes the bytes of the access that fall on it.
        for (first, length) in [
            (PM1_STATUS, PM1_ENABLE - PM1_STATUS),
            (PM1_ENABLE, PM1_CONTROL - PM1_ENABLE),
            (PM1_CONTROL, PM1_CONTROL_LENGTH as u16),
            (PM_TIMER, PM_TIMER_LENGTH as u16),
        ] {
            let Some((bits, mask)) = bytes_on(port, size, value, first, length) else {
                continue;
            };
            done.push(match first {
                PM1_STATUS => self.write_status(bits as u16, now, tsc_hz),
                PM1_ENABLE => {
                    let bits = bits as u16 & event::ENABLES;
                    self.enable = (self.enable & !mask as u16) | bits;
                    format!("PM1 enable = {:#06x}{}", self.enable, enables(self.enable))
                }
                PM1_CONTROL => self.write_control(bits as u16, mask as u16),
                _ => "the PM timer is read-only: the write is dropped".into(),
            });
        }
        if done.is_empty() {
            return format!("no ACPI register at port {port:#x}: the write is dropped");
        }
        done.join("; ")
    }

    /// Write-1-to-clear: a set bit clears that status, a clear bit leaves it.
    fn write_status(&mut self, bits: u16, now: u64, tsc_hz: u64) -> String {
        let was = self.status(now, tsc_hz);
        if bits & event::TIMER != 0 {
            self.timer_status_cleared = counts(now, tsc_hz) >> TIMER_STATUS_PERIOD_BITS;
        }
        let cleared = was & bits;
        if cleared == 0 {
            format!("PM1 status: write 1 to clear; {bits:#06x} clears nothing that was set")
        } else {
            format!("PM1 status: write 1 to clear; cleared{}", events(cleared))
        }
    }

    fn write_control(&mut self, bits: u16, mask: u16) -> String {
        let kept = control::BM_RLD | control::SLP_TYP;
        self.control = (self.control & !(mask & kept)) | (bits & mask & kept);
        let sleep_type = (bits & control::SLP_TYP) >> control::SLP_TYP_SHIFT;
        let mut what = format!(
            "PM1 control = {:#06x}: SCI_EN stays 1 (no SMI_CMD: always in ACPI mode)",
            self.control()
        );
        if bits & mask & control::GBL_RLS != 0 {
            what += "; GBL_RLS: no firmware shares the global lock, nothing to tell";
        }
        // SOFT_OFF_TYPE ends the domain before the write is applied (`exit/ioio.rs`).
        if bits & mask & control::SLP_EN != 0 {
            what += &format!(
                "; SLP_EN with SLP_TYP {sleep_type}: a sleep request, ignored (the DSDT defines only \\_S5, SLP_TYP {SOFT_OFF_TYPE}): the domain runs on"
            );
        }
        what
    }
}

/// What an access to `port` reaches, in words, for the trace (the value and what a write
/// did are said next to it).
pub fn describe(port: u16) -> String {
    let what = match port {
        PM1_STATUS..PM1_ENABLE => "a bit is an event that happened; write 1 to clear it",
        PM1_ENABLE..PM1_CONTROL => {
            "a bit lets its event raise the SCI (IRQ 9), which is not modelled here"
        }
        PM1_CONTROL..PM1_CONTROL_END => {
            "SCI_EN always 1: no SMI_CMD, the machine is always in ACPI mode"
        }
        PM_TIMER..PM_TIMER_END => "24 bits counting at 3.579545 MHz",
        _ => return name(port).into(),
    };
    format!("{}: {what}", name(port))
}

/// The bits of an OUT of `size` bytes of `value` at `port` that fall on the register of
/// `length` bytes at `first`, moved to its bit positions, and which of its bits they are;
/// `None`: the access misses it.
fn bytes_on(port: u16, size: u8, value: u32, first: u16, length: u16) -> Option<(u32, u32)> {
    let (mut bits, mut mask) = (0u32, 0u32);
    for index in 0..size as u16 {
        let at = port.wrapping_add(index);
        if (first..first + length).contains(&at) {
            let shift = 8 * (at - first) as u32;
            bits |= ((value >> (8 * index)) & 0xff) << shift;
            mask |= 0xff << shift;
        }
    }
    (mask != 0).then_some((bits, mask))
}

/// PM1 event bits by name, for the trace: " TMR_STS PWRBTN_STS".
fn events(bits: u16) -> String {
    [
        (event::TIMER, "TMR"),
        (event::BUS_MASTER, "BM"),
        (event::GLOBAL, "GBL"),
        (event::POWER_BUTTON, "PWRBTN"),
        (event::SLEEP_BUTTON, "SLPBTN"),
        (event::RTC, "RTC"),
        (event::WAKE, "WAK"),
    ]
    .iter()
    .filter(|(bit, _)| bits & bit != 0)
    .map(|(_, name)| format!(" {name}_STS"))
    .collect()
}

/// The events a PM1 enable value enables, for the trace.
fn enables(bits: u16) -> String {
    if bits == 0 {
        return ": every event disabled".into();
    }
    let why = match bits & event::TIMER {
        0 => "none of these events has a source here",
        _ => "the SCI is not modelled, so TMR_STS with TMR_EN set raises none, where it should",
    };
    format!(
        ":{} enabled (no SCI comes: {why})",
        events(bits).replace("_STS", "_EN")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TSC of 1 GHz.
    const TSC_HZ: u64 = 1_000_000_000;

    fn tsc_at(counts: u64) -> u64 {
        // The first TSC at which the timer has reached `counts`.
        (counts as u128 * TSC_HZ as u128).div_ceil(TIMER_HZ as u128) as u64
    }

    #[test]
    fn the_timer_counts_at_3_579545_mhz_of_the_tsc() {
        let pm = AcpiPm::default();
        assert_eq!(pm.read(PM_TIMER, 4, 0, TSC_HZ), 0);
        // One second of TSC is 3,579,545 counts, at any TSC rate.
        assert_eq!(pm.read(PM_TIMER, 4, TSC_HZ, TSC_HZ), 3_579_545);
        assert_eq!(
            pm.read(PM_TIMER, 4, 2_400_000_000, 2_400_000_000),
            3_579_545
        );
        // A millisecond: 3,579.545 counts.
        assert_eq!(pm.read(PM_TIMER, 4, TSC_HZ / 1000, TSC_HZ), 3_579);
        assert_eq!(timer(tsc_at(1234) - 1, TSC_HZ), 1233);
        assert_eq!(timer(tsc_at(1234), TSC_HZ), 1234);
    }

    #[test]
    fn the_timer_wraps_at_24_bits() {
        let pm = AcpiPm::default();
        assert_eq!(pm.read(PM_TIMER, 4, tsc_at(0xff_ffff), TSC_HZ), 0xff_ffff);
        assert_eq!(pm.read(PM_TIMER, 4, tsc_at(0x100_0000), TSC_HZ), 0);
        assert_eq!(pm.read(PM_TIMER, 4, tsc_at(0x100_0005), TSC_HZ), 5);
        // The upper byte of the 32-bit register is always 0 (TMR_VAL_EXT clear).
        assert_eq!(pm.read(PM_TIMER + 3, 1, tsc_at(0x12_3456), TSC_HZ), 0);
        assert_eq!(pm.read(PM_TIMER + 2, 1, tsc_at(0x12_3456), TSC_HZ), 0x12);
    }

    #[test]
    fn sci_en_reads_1_always_and_slp_en_is_ignored_but_for_soft_off() {
        let mut pm = AcpiPm::default();
        assert_eq!(pm.read(PM1_CONTROL, 2, 0, TSC_HZ), control::SCI_EN as u32);
        let what = pm.write(PM1_CONTROL, 2, 0, 0, TSC_HZ);
        assert!(what.contains("SCI_EN stays 1"), "{what}");
        assert_eq!(pm.read(PM1_CONTROL, 2, 0, TSC_HZ), 1);
        // SLP_TYP 5 with SLP_EN: the type is kept, SLP_EN reads 0, and the trace says why.
        let request = (5 << control::SLP_TYP_SHIFT) | control::SLP_EN;
        let what = pm.write(PM1_CONTROL, 2, request as u32, 0, TSC_HZ);
        assert!(
            what.contains("SLP_EN with SLP_TYP 5: a sleep request, ignored (the DSDT defines only \\_S5, SLP_TYP 0)"),
            "{what}"
        );
        assert_eq!(
            pm.read(PM1_CONTROL, 2, 0, TSC_HZ),
            (5 << control::SLP_TYP_SHIFT) as u32 | 1
        );
        assert_eq!(sleep_request(PM1_CONTROL, 2, request as u32), Some(5));
        // The soft-off request, whichever width carries SLP_EN (bit 13: bit 5 of 0x605).
        let off = (SOFT_OFF_TYPE << control::SLP_TYP_SHIFT) | control::SLP_EN;
        assert_eq!(
            sleep_request(PM1_CONTROL, 2, off as u32),
            Some(SOFT_OFF_TYPE)
        );
        assert_eq!(
            sleep_request(PM1_CONTROL + 1, 1, (off >> 8) as u32),
            Some(SOFT_OFF_TYPE)
        );
        assert_eq!(
            sleep_request(PM1_ENABLE, 4, (off as u32) << 16),
            Some(SOFT_OFF_TYPE)
        );
        // SLP_TYP without SLP_EN (an OS writes the type first), or another register: none.
        assert_eq!(
            sleep_request(PM1_CONTROL, 2, 5 << control::SLP_TYP_SHIFT),
            None
        );
        assert_eq!(sleep_request(PM1_CONTROL, 1, off as u32), None);
        assert_eq!(sleep_request(PM1_ENABLE, 2, off as u32), None);
    }

    #[test]
    fn timer_status_is_set_when_bit_23_toggles_and_cleared_by_writing_1() {
        let mut pm = AcpiPm::default();
        let before = tsc_at(1 << 23) - 1;
        assert_eq!(pm.status(before, TSC_HZ), 0);
        let toggled = tsc_at(1 << 23);
        assert_eq!(pm.read(PM1_STATUS, 2, toggled, TSC_HZ), event::TIMER as u32);
        // Writing 0 clears nothing.
        let what = pm.write(PM1_STATUS, 2, 0, toggled, TSC_HZ);
        assert!(what.contains("clears nothing"), "{what}");
        assert_eq!(pm.status(toggled, TSC_HZ), event::TIMER);
        // Writing 1 clears it, until bit 23 toggles again.
        let what = pm.write(PM1_STATUS, 2, event::TIMER as u32, toggled, TSC_HZ);
        assert_eq!(what, "PM1 status: write 1 to clear; cleared TMR_STS");
        assert_eq!(pm.status(toggled, TSC_HZ), 0);
        assert_eq!(pm.status(tsc_at(2 << 23) - 1, TSC_HZ), 0);
        assert_eq!(pm.status(tsc_at(2 << 23), TSC_HZ), event::TIMER);
    }

    #[test]
    fn a_dword_write_at_the_event_block_reaches_status_and_enable() {
        let mut pm = AcpiPm::default();
        let now = tsc_at(1 << 23);
        let value = ((event::POWER_BUTTON as u32 | 0x8000) << 16) | event::TIMER as u32;
        let what = pm.write(PM1_EVENT_BLOCK, 4, value, now, TSC_HZ);
        assert!(what.contains("cleared TMR_STS"), "{what}");
        assert!(what.contains("PWRBTN_EN enabled"), "{what}");
        // Bit 15 has no enable: it is not kept.
        assert_eq!(
            pm.read(PM1_ENABLE, 2, now, TSC_HZ),
            event::POWER_BUTTON as u32
        );
        assert_eq!(
            pm.read(PM1_EVENT_BLOCK, 4, now, TSC_HZ),
            (event::POWER_BUTTON as u32) << 16
        );
    }

    #[test]
    fn tmr_en_is_kept_and_the_trace_says_the_sci_it_should_raise_is_not_modelled() {
        // ACPI 6.4, PM1 enable, TMR_EN: "an SCI event is generated anytime the TMR_STS bit
        // is set". The SCI is not modelled: the enable reads back, the status stays set, and
        // the trace says that no SCI comes because the model lacks it, not because nothing
        // would raise one.
        let mut pm = AcpiPm::default();
        let toggled = tsc_at(1 << 23);
        let what = pm.write(PM1_ENABLE, 2, event::TIMER as u32, toggled, TSC_HZ);
        assert_eq!(
            what,
            "PM1 enable = 0x0001: TMR_EN enabled (no SCI comes: the SCI is not modelled, so TMR_STS with TMR_EN set raises none, where it should)"
        );
        assert_eq!(pm.enable(), event::TIMER);
        assert_eq!(pm.status(toggled, TSC_HZ), event::TIMER);
        assert_eq!(
            describe(PM1_ENABLE),
            "ACPI PM1 enable: a bit lets its event raise the SCI (IRQ 9), which is not modelled here"
        );
    }

    #[test]
    fn bytes_no_register_holds_read_all_ones() {
        let pm = AcpiPm::default();
        assert!(!claims(0x606) && !claims(0x607) && !claims(0x60c) && !claims(0x5ff));
        assert_eq!(pm.read(0x606, 2, 0, TSC_HZ), 0xffff);
        // A dword at PM1 control: the register, then two empty bytes.
        assert_eq!(pm.read(PM1_CONTROL, 4, 0, TSC_HZ), 0xffff_0001);
        let mut pm = pm;
        assert_eq!(
            pm.write(PM_TIMER, 4, 7, 0, TSC_HZ),
            "the PM timer is read-only: the write is dropped"
        );
    }
}
