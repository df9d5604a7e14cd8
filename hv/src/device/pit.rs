//! The PC's 8254 programmable interval timer: channel 0 (its output is IRQ 0), channel 2
//! (gated and read through port 0x61, the way kernels calibrate the TSC), and the control
//! port 0x43 (Intel 82C54 datasheet).
//!
//! Each channel counts down from a reload value at 1.193182 MHz. A kernel writes a control
//! word to 0x43 — bits 7:6 the channel, 5:4 how the count is written (1 low byte, 2 high
//! byte, 3 low then high; 0 latches the count for reading), 3:1 the mode — then the count to
//! the channel's port (0x40, 0x42). Mode 2 (rate generator) and 3 (square wave) reload and
//! repeat: channel 0 in one of them interrupts every `count / 1193182` seconds. Mode 0
//! (interrupt on terminal count) counts once, its output rising at terminal count; mode 4
//! (software-triggered strobe, Linux's one-shot clock event: control word 0x38) counts once
//! too, its output low for one clock at terminal count, so it rises one clock later.
//!
//! A count written is loaded "on the next CLK pulse", in every mode, and "this CLK pulse does
//! not decrement the count, so for an initial count of N, OUT does not go high until N + 1
//! CLK pulses after the initial count is written" (82C54 datasheet, mode 0; mode 4 says the
//! same of its strobe). So a channel counts from the clock after the write: one clock after
//! writing N it reads N; mode 0's output rises N + 1 clocks after the write, mode 4's strobe
//! is at N + 1 and its output rises at N + 2; in modes 2 and 3 the output's first rise (the
//! IRQ 0 edge) is N + 1 clocks after the write, then one every N: the load clock moves the
//! first tick's phase, never the period. (Mode 2's OUT "goes low N CLK pulses after the
//! initial count is written", at count 1, and rises a clock later as the count reloads.) The
//! model's clock edges are counted from the write, so the load is a whole clock after it.
//!
//! A new count in modes 2 and 3 while the channel counts is loaded at the end of the cycle it
//! counts (in mode 3 the 82C54 loads it at the end of the current *half*-cycle; here at the
//! cycle's end, where IRQ 0 rises, the model's cycles all starting with the high half); in mode 0 the first byte of a two-byte count stops the count (the output stays
//! low) until the second byte loads it; control word bit 0 makes the count four BCD digits
//! (0x1000 is a thousand clocks), read back in BCD (82C54 datasheet).
//!
//! The counts are not ticked one by one: a channel remembers when it was loaded (in TSC
//! ticks), and a read computes where it is now. Channel 0 becomes one of the guest's timers
//! ([`Pit::countdown`], beside the local APIC's): when it is due the hypervisor pulses IRQ 0, which the PIC latches in
//! its IRR (`pic.rs`), or requests the IO-APIC's pin 2 vector in the local APIC, whichever
//! route the kernel opened (`domain/interrupts.rs`, `TimerTarget`). Not modelled: modes
//! 1 and 5 (on a PC they wait for a rising gate, which channel 0's, tied high, never has;
//! here they count from the write, and interrupt nothing), the read-back command, a gate
//! closing (a channel once started counts on). This is the guest's PIT only: the real one
//! belongs to the hypervisor, which does not share it (every port is intercepted), so the
//! two never meet.

/// The ports.
pub const CHANNEL_0: u16 = 0x40;
pub const CHANNEL_2: u16 = 0x42;
pub const CONTROL: u16 = 0x43;
/// Channel 0's output is ISA IRQ 0 (the IO-APIC's pin 2: `ioapic::PIT_PIN`).
pub const IRQ: u8 = 0;
/// Port B of the PC's keyboard controller, a chipset's NMI status and control register
/// (PIIX4 datasheet, NMISC, port 0x61): bits 3:0 are read/write — 0 gates channel 2, 1 the
/// speaker, 2 and 3 the PCI SERR# and IOCHK# NMI enables (a set bit disables), kept and
/// acting on nothing here (no such NMI is raised); bits 7:4 are status, read-only — 5 reads channel 2's output, 4
/// toggles with the memory refresh, 7:6 (SERR#, IOCHK# seen) read 0.
pub const PORT_B: u16 = 0x61;
/// Port B's read/write bits (PIIX4, NMISC bits 3:0); the others are status.
const PORT_B_WRITABLE: u8 = 0x0f;
/// How often a PC requests a DRAM refresh (PIT channel 1's count of 18): port B's bit 4
/// toggles each time.
const REFRESH_PERIOD_NS: u128 = 15_085;

/// When channel 0's output next rises, and how often: the PIT's side of the guest's
/// timer (the PIC's side is the vector; `apply.rs` makes the two a timer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Countdown {
    /// Every period (modes 2 and 3), or `None`: once (modes 0 and 4).
    pub period_tsc: Option<u64>,
    pub due_tsc: u64,
}

/// The PIT's input clock.
pub const HZ: u64 = 1_193_182;

/// One channel.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    /// The mode (0–5) of the last control word.
    pub mode: u8,
    /// How the count is written and read: 1 low, 2 high, 3 low then high.
    access: u8,
    /// The low byte of a count written half (access 3).
    low_byte: Option<u8>,
    /// The reload value once written (`None`: no count yet); 0 counts as 65536.
    pub reload: Option<u32>,
    /// The TSC when the count was loaded — a clock after it was written (`load_time`), or
    /// when the gate opened — `None`: not counting. In modes 2 and 3 a count written while
    /// the channel counts is loaded at the end of the current cycle: then this is that
    /// moment, still ahead, and `previous` says how the channel counts until it.
    pub loaded_at: Option<u64>,
    /// The count being replaced and when it was loaded, while a new one waits for the end
    /// of the current cycle (82C54 datasheet, modes 2 and 3: "writing a new count while
    /// counting does not affect the current counting sequence").
    previous: Option<(u32, u64)>,
    /// Control word bit 0: the count is four BCD digits (0–9999), not 16 binary bits.
    bcd: bool,
    /// A latched count, and whether its high byte is the next to read.
    latched: Option<(u16, bool)>,
    /// The next byte of an unlatched read of access 3 is the high one.
    read_high: bool,
}

impl Channel {
    /// How the channel counts at TSC `now`: since when, and from what count (in clocks),
    /// or `None` when it does not count. Before a count that waits for the end of the
    /// current cycle is loaded, the one it replaces.
    fn phase(&self, now: u64) -> Option<(u64, u64)> {
        // (`now` may be a little before a count written just now is loaded: its load clock
        // is still ahead, or the caller read the clock before the write did. That is the new
        // count's start, not a waiting one's: until the load, it reads as the count written.)
        let start = self.loaded_at?;
        match self.previous {
            Some((reload, since)) if now < start => Some((since, self.clocks(reload))),
            _ => Some((start, self.reload_value())),
        }
    }

    /// The count now, at TSC `now` with `tsc_hz` ticks per second.
    pub fn count(&self, now: u64, tsc_hz: u64) -> u16 {
        let Some((start, reload)) = self.phase(now) else {
            return self.reload.unwrap_or(0) as u16;
        };
        let elapsed =
            (now.saturating_sub(start) as u128 * HZ as u128 / tsc_hz.max(1) as u128) as u64;
        // The counter's range: 65536 binary counts, or 10000 in BCD.
        let modulus = if self.bcd { 10_000 } else { 0x1_0000 };
        let count = match self.mode {
            // Once: down to 0, then (as the counter wraps on) from its top.
            0 | 1 | 4 | 5 => (reload as i64 - elapsed as i64).rem_euclid(modulus) as u64,
            3 => square_wave_count(reload, elapsed % reload),
            _ => reload - elapsed % reload,
        } % modulus as u64;
        if self.bcd {
            to_bcd(count)
        } else {
            count as u16
        }
    }

    /// Is the output high? Mode 0 raises it at terminal count; mode 4 drops it for the one
    /// clock of terminal count; mode 2 drops it for one clock each period, mode 3 for the
    /// second half of each. Before its count starts, a channel's output is what the control
    /// word set: low in mode 0, high in the others (82C54 datasheet).
    pub fn output(&self, now: u64, tsc_hz: u64) -> bool {
        let Some((start, reload)) = self.phase(now) else {
            return self.mode != 0;
        };
        let elapsed =
            (now.saturating_sub(start) as u128 * HZ as u128 / tsc_hz.max(1) as u128) as u64;
        match self.mode {
            0 => elapsed >= reload,
            4 => elapsed != reload,
            // "When the initial count has decremented to 1, OUT goes low for one CLK pulse.
            // OUT then goes high again, the Counter reloads the initial count and the process
            // is repeated" (82C54 datasheet, mode 2): low on the clock the count reads 1, the
            // last of each period; it rises with the reload, the edge IRQ 0 sees
            // (`Pit::countdown`). QEMU's `pit_get_out` has it the other way round: high only
            // on the clock of each reload, low the rest of the period.
            2 => elapsed % reload != reload - 1,
            // High for the first (N + 1) / 2 clocks, low for the other (N - 1) / 2: for an
            // odd N the high half is the longer (82C54 datasheet, mode 3).
            3 => elapsed % reload < reload.div_ceil(2),
            // Modes 1 and 5 wait for a gate trigger, which is not modelled: high, as before
            // one (82C54 datasheet).
            _ => true,
        }
    }

    /// The count loaded, in clocks: 0 counts as the counter's whole range.
    fn reload_value(&self) -> u64 {
        self.clocks(self.reload.unwrap_or(0))
    }

    /// The clocks a count written as `value` stands for: binary, or four BCD digits; 0 is
    /// 65536 (binary) or 10000 (BCD).
    fn clocks(&self, value: u32) -> u64 {
        match (self.bcd, value) {
            (false, 0) => 0x1_0000,
            (false, value) => value as u64,
            (true, value) => match from_bcd(value as u16) {
                0 => 10_000,
                clocks => clocks,
            },
        }
    }
}

/// The 8254 and port B.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pit {
    pub channels: [Channel; 3],
    /// Port B bits 3:0: channel 2's gate, the speaker, the SERR# and IOCHK# NMI enables.
    pub port_b: u8,
}

impl Pit {
    /// Does `port` belong to the PIT (or its gate)?
    pub fn claims(port: u16) -> bool {
        matches!(port, 0x40..=0x43 | PORT_B)
    }

    /// An OUT of a byte at TSC `now` (`tsc_hz` ticks per second): what it did.
    pub fn write(&mut self, port: u16, value: u8, now: u64, tsc_hz: u64) -> &'static str {
        match port {
            CONTROL => self.control(value, now, tsc_hz),
            PORT_B => {
                let was_open = self.port_b & 1 != 0;
                self.port_b = value & PORT_B_WRITABLE;
                let channel = &mut self.channels[2];
                // A rising gate starts channel 2 counting from its count. In modes 1, 2, 3
                // and 5 it is a trigger: "A trigger reloads the Counter with the initial
                // count on the next CLK pulse" (82C54 datasheet, mode 2). In modes 0 and 4
                // the gate only enables counting, and a count written while it was low is
                // loaded already: "When GATE goes high, OUT will go high N CLK pulses later;
                // no CLK pulse is needed to load the Counter as this has already been done"
                // (mode 0). (A low gate there only pauses, which this model does not, so
                // the count starts over from its reload.)
                if !was_open && value & 1 != 0 && channel.reload.is_some() {
                    let loaded_at = match channel.mode {
                        0 | 4 => now,
                        _ => load_time(now, tsc_hz),
                    };
                    channel.loaded_at = Some(loaded_at);
                    channel.previous = None;
                }
                "port B: channel 2's gate, the speaker and the NMI enables"
            }
            _ => {
                let index = (port - CHANNEL_0) as usize;
                let gated = index != 2 || self.port_b & 1 != 0;
                let channel = &mut self.channels[index];
                let complete = match channel.access {
                    1 => Some(value as u32),
                    2 => Some((value as u32) << 8),
                    _ => match channel.low_byte.take() {
                        None => {
                            channel.low_byte = Some(value);
                            None
                        }
                        Some(low) => Some(low as u32 | (value as u32) << 8),
                    },
                };
                match complete {
                    // Modes 2 and 3 counting: the current cycle runs out first.
                    Some(reload)
                        if gated && matches!(channel.mode, 2 | 3) && channel.reload.is_some() =>
                    {
                        let Some((since, clocks)) = channel.phase(now) else {
                            channel.reload = Some(reload);
                            channel.loaded_at = Some(load_time(now, tsc_hz));
                            return "the count: the channel starts";
                        };
                        let period = (clocks as u128 * tsc_hz as u128 / HZ as u128).max(1) as u64;
                        let cycle_end = since + (now.saturating_sub(since) / period + 1) * period;
                        // The count that counts now: the one a count still waiting replaces
                        // (a second write in the same cycle replaces only the waiting one).
                        let waiting = channel.previous.is_some()
                            && channel.loaded_at.is_some_and(|start| now < start);
                        if !waiting {
                            channel.previous = channel.reload.map(|old| (old, since));
                        }
                        channel.reload = Some(reload);
                        channel.loaded_at = Some(cycle_end);
                        "the count: loaded at the end of the current cycle (modes 2 and 3 finish the cycle they count)"
                    }
                    Some(reload) => {
                        channel.reload = Some(reload);
                        channel.previous = None;
                        channel.loaded_at = gated.then(|| load_time(now, tsc_hz));
                        "the count: the channel (re)starts on the next clock"
                    }
                    // Mode 0: the first byte of a two-byte count stops the count, and the
                    // output stays low until the second byte loads the new count (82C54
                    // datasheet, mode 0). (The count read meanwhile is the old reload, not
                    // where it stopped.)
                    None if channel.mode == 0 => {
                        channel.loaded_at = None;
                        channel.previous = None;
                        "the count's low byte: mode 0 stops counting until the high byte"
                    }
                    None => "the count's low byte",
                }
            }
        }
    }

    fn control(&mut self, value: u8, now: u64, tsc_hz: u64) -> &'static str {
        let index = (value >> 6) as usize;
        if index == 3 {
            return "read-back (not modelled)";
        }
        let access = (value >> 4) & 3;
        let channel = &mut self.channels[index];
        if access == 0 {
            // Counter latch: the count now, kept for the next read(s) however long they take.
            // A second latch before those reads is ignored (82C54 datasheet).
            if channel.latched.is_none() {
                channel.latched = Some((channel.count(now, tsc_hz), false));
            }
            return "latch the count";
        }
        *channel = Channel {
            mode: match (value >> 1) & 7 {
                6 => 2,
                7 => 3,
                mode => mode,
            },
            access,
            bcd: value & 1 != 0,
            ..Channel::default()
        };
        "a control word: the channel's mode and how its count is written"
    }

    /// An IN of a byte at TSC `now`, with `tsc_hz` TSC ticks per second.
    pub fn read(&mut self, port: u16, now: u64, tsc_hz: u64) -> u8 {
        match port {
            CONTROL => 0xff,
            PORT_B => {
                let output = self.channels[2].output(now, tsc_hz);
                // Bit 4 toggles at every DRAM refresh request, each 15.085 µs on a PC: old
                // delay loops count its toggles, and spin forever if it stands still.
                let refreshes =
                    now as u128 * 1_000_000_000 / tsc_hz.max(1) as u128 / REFRESH_PERIOD_NS;
                let refresh = refreshes % 2 == 1;
                self.port_b | if refresh { 0x10 } else { 0 } | if output { 0x20 } else { 0 }
            }
            _ => {
                let channel = &mut self.channels[(port - CHANNEL_0) as usize];
                if let Some((count, high)) = channel.latched {
                    return match (channel.access, high) {
                        (3, false) => {
                            channel.latched = Some((count, true));
                            count as u8
                        }
                        (3, true) => {
                            channel.latched = None;
                            (count >> 8) as u8
                        }
                        (2, _) => {
                            channel.latched = None;
                            (count >> 8) as u8
                        }
                        _ => {
                            channel.latched = None;
                            count as u8
                        }
                    };
                }
                let count = channel.count(now, tsc_hz);
                match channel.access {
                    2 => (count >> 8) as u8,
                    3 => {
                        channel.read_high = !channel.read_high;
                        if channel.read_high {
                            count as u8
                        } else {
                            (count >> 8) as u8
                        }
                    }
                    _ => count as u8,
                }
            }
        }
    }

    /// Channel 0 at TSC `now`: when its output next rises — every period in modes 2 and 3,
    /// once in modes 0 and 4 — or `None` when it is not counting (or counts in a mode
    /// without one).
    pub fn countdown(&self, now: u64, tsc_hz: u64) -> Option<Countdown> {
        let channel = &self.channels[0];
        let start = channel.loaded_at?;
        let period_tsc =
            (channel.reload_value() as u128 * tsc_hz as u128 / HZ as u128).max(1) as u64;
        let periods_done = now.saturating_sub(start) / period_tsc;
        match channel.mode {
            // A new count waits for the current cycle's end: that is the next edge, and the
            // new period follows.
            2 | 3 if channel.previous.is_some() && now < start => Some(Countdown {
                period_tsc: Some(period_tsc),
                due_tsc: start,
            }),
            2 | 3 => Some(Countdown {
                period_tsc: Some(period_tsc),
                due_tsc: start + (periods_done + 1) * period_tsc,
            }),
            // Once: mode 0's output rises at terminal count, N clocks after the load (N + 1
            // after the write); mode 4's drops for the clock of terminal count and rises a
            // clock later. The first TSC tick at which `output` says high (rounded up: a TSC
            // rate is no whole multiple of the PIT's).
            0 | 4 => {
                let clocks = channel.reload_value() + u64::from(channel.mode == 4);
                let due_tsc = start + (clocks as u128 * tsc_hz as u128).div_ceil(HZ as u128) as u64;
                (now < due_tsc).then_some(Countdown {
                    period_tsc: None,
                    due_tsc,
                })
            }
            _ => None,
        }
    }
}

/// Mode 3's count `clock` clocks into a period of `reload` clocks (82C54 datasheet, mode 3):
/// "Even counts: ... The initial count is loaded on one CLK pulse and then is decremented by
/// two on succeeding CLK pulses. When the count expires OUT changes value and the Counter is
/// reloaded with the initial count." "Odd counts: ... The initial count minus one (an even
/// number) is loaded on one CLK pulse and then is decremented by two on succeeding CLK
/// pulses. One CLK pulse after the count expires, OUT goes low and the Counter is reloaded
/// with the initial count minus one." So the count is always even: N - 1 down by two in each
/// half, the high half of an odd N one clock longer, that clock reading 0 (5: 4, 2, 0 high,
/// then 4, 2 low). QEMU's `pit_get_count` subtracts `2 * d % count` from the whole count
/// instead, which for an odd N reads the odd values the 82C54 never holds (5, 3, 1, 4, 2).
fn square_wave_count(reload: u64, clock: u64) -> u64 {
    let high_half = reload.div_ceil(2);
    let into_half = if clock < high_half {
        clock
    } else {
        clock - high_half
    };
    (reload & !1) - 2 * into_half
}

/// When a count written at TSC `now` is loaded: "the Counter will be loaded on the next CLK
/// pulse" (82C54 datasheet, every mode), a pulse that does not count. The model's clock edges
/// are counted from the write, so that pulse is one whole clock later (in TSC ticks, rounded
/// up).
fn load_time(now: u64, tsc_hz: u64) -> u64 {
    now + tsc_hz.div_ceil(HZ)
}

/// `value` (0–9999) as four BCD digits.
fn to_bcd(value: u64) -> u16 {
    (0..4).rev().fold(0, |bcd, digit| {
        (bcd << 4) | ((value / 10u64.pow(digit)) % 10) as u16
    })
}

/// Four BCD digits as a number (a digit above 9 counts as its value, as a counter that was
/// written one would count it down).
fn from_bcd(bcd: u16) -> u64 {
    (0..4).rev().fold(0, |value, digit| {
        value * 10 + ((bcd >> (4 * digit)) & 0xf) as u64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TSC of 1.193182 GHz: 1000 TSC ticks per PIT tick.
    const TSC_HZ: u64 = HZ * 1000;
    /// A count written at TSC 0 is loaded a PIT clock later, on "the next CLK pulse", and
    /// counts from there (82C54 datasheet, every mode).
    const LOADED: u64 = 1000;

    #[test]
    fn mode_3_counts_down_by_two_through_each_half_of_the_period() {
        // The square wave: 4096 loaded, 1024 clocks after the load the count is 2048 (not
        // 3072), and the output is high for the first half of the period.
        let mut pit = Pit::default();
        pit.write(CONTROL, 0x36, 0, TSC_HZ); // channel 0, low then high, mode 3
        pit.write(CHANNEL_0, 0x00, 0, TSC_HZ);
        pit.write(CHANNEL_0, 0x10, 0, TSC_HZ); // 4096
        let channel = pit.channels[0];
        assert_eq!(channel.count(LOADED + 1024 * 1000, TSC_HZ), 2048);
        assert_eq!(
            channel.count(LOADED + 2048 * 1000 + 1000, TSC_HZ),
            4094,
            "the second half"
        );
        assert!(channel.output(LOADED + 1024 * 1000, TSC_HZ));
        assert!(!channel.output(LOADED + 3072 * 1000, TSC_HZ));
    }

    #[test]
    fn mode_3_with_an_odd_count_loads_one_less_and_reads_only_even_counts() {
        // 82C54 datasheet, mode 3, odd counts: N - 1 is loaded and goes down by two; OUT is
        // high for (N + 1) / 2 clocks and low for (N - 1) / 2. For 5: 4, 2, 0 high, then 4,
        // 2 low (QEMU's count would read 5, 3, 1, 4, 2).
        let mut pit = Pit::default();
        pit.write(CONTROL, 0x16, 0, TSC_HZ); // channel 0, low byte only, mode 3
        pit.write(CHANNEL_0, 5, 0, TSC_HZ);
        let read = |pit: &mut Pit, clock: u64| pit.read(CHANNEL_0, LOADED + clock * 1000, TSC_HZ);
        assert_eq!(read(&mut pit, 0), 4, "early in the period: N - 1");
        let counts: Vec<u8> = (0..10).map(|clock| read(&mut pit, clock)).collect();
        assert_eq!(counts, [4, 2, 0, 4, 2, 4, 2, 0, 4, 2]);
        let channel = pit.channels[0];
        let outputs: Vec<bool> = (0..10)
            .map(|clock| channel.output(LOADED + clock * 1000, TSC_HZ))
            .collect();
        let (high, low) = (true, false);
        assert_eq!(
            outputs,
            [high, high, high, low, low, high, high, high, low, low]
        );
        // An even count is unchanged: the whole count, down by two, each half N / 2 clocks.
        pit.write(CONTROL, 0x16, 0, TSC_HZ);
        pit.write(CHANNEL_0, 6, 0, TSC_HZ);
        let counts: Vec<u8> = (0..6).map(|clock| read(&mut pit, clock)).collect();
        assert_eq!(counts, [6, 4, 2, 6, 4, 2]);
    }

    #[test]
    fn in_mode_2_out_goes_low_for_the_one_clock_the_count_reads_1() {
        // "When the initial count has decremented to 1, OUT goes low for one CLK pulse. OUT
        // then goes high again, the Counter reloads the initial count" (82C54 datasheet,
        // mode 2). Channel 2, seen through port B's bit 5.
        let mut pit = Pit::default();
        pit.write(PORT_B, 0x01, 0, TSC_HZ); // channel 2's gate open
        pit.write(CONTROL, 0xb4, 0, TSC_HZ); // channel 2, low then high, mode 2
        pit.write(CHANNEL_2, 100, 0, TSC_HZ);
        pit.write(CHANNEL_2, 0, 0, TSC_HZ); // 100, loaded a clock later
        let out = |pit: &mut Pit, now: u64| pit.read(PORT_B, now, TSC_HZ) & 0x20;
        assert_eq!(pit.channels[2].count(LOADED + 99_000, TSC_HZ), 1);
        assert_eq!(out(&mut pit, LOADED + 98_999), 0x20, "count 2: high");
        assert_eq!(out(&mut pit, LOADED + 99_000), 0, "count 1: low");
        assert_eq!(out(&mut pit, LOADED + 99_999), 0, "for the whole clock");
        assert_eq!(out(&mut pit, LOADED + 100_000), 0x20, "reloaded: high");
        assert_eq!(out(&mut pit, LOADED + 199_500), 0, "once every period");
        // The rise is the edge channel 0 would interrupt at: a period after the load.
        pit.write(CONTROL, 0x34, 0, TSC_HZ);
        pit.write(CHANNEL_0, 100, 0, TSC_HZ);
        pit.write(CHANNEL_0, 0, 0, TSC_HZ);
        let due = pit.countdown(0, TSC_HZ).map(|next| next.due_tsc);
        assert_eq!(due, Some(LOADED + 100_000));
        let channel = pit.channels[0];
        assert!(!channel.output(LOADED + 100_000 - 1, TSC_HZ));
        assert!(channel.output(LOADED + 100_000, TSC_HZ));
    }

    #[test]
    fn before_its_count_a_channel_s_output_is_high_except_in_mode_0() {
        let mut pit = Pit::default();
        pit.write(CONTROL, 0xb6, 0, TSC_HZ); // channel 2, mode 3
        assert_eq!(pit.read(PORT_B, 0, TSC_HZ) & 0x20, 0x20);
        pit.write(CONTROL, 0xb0, 0, TSC_HZ); // channel 2, mode 0
        assert_eq!(pit.read(PORT_B, 0, TSC_HZ) & 0x20, 0);
    }

    #[test]
    fn port_b_s_refresh_bit_toggles_every_15_microseconds() {
        // 1000 TSC ticks a PIT tick: 1.193182 GHz, so 15.085 µs is about 18,000 ticks.
        let mut pit = Pit::default();
        let bit = |pit: &mut Pit, now: u64| pit.read(PORT_B, now, TSC_HZ) & 0x10;
        assert_eq!(bit(&mut pit, 0), 0);
        assert_eq!(bit(&mut pit, 20_000), 0x10);
        assert_eq!(bit(&mut pit, 40_000), 0);
    }

    #[test]
    fn channel_0_in_mode_2_counts_down_every_period() {
        let mut pit = Pit::default();
        pit.write(CONTROL, 0x34, 0, TSC_HZ); // channel 0, low then high, mode 2
        pit.write(CHANNEL_0, 0x9c, 0, TSC_HZ); // 11932 = 0x2e9c: 100 Hz
        assert_eq!(pit.countdown(0, TSC_HZ), None, "half a count: not yet");
        pit.write(CHANNEL_0, 0x2e, 5_000, TSC_HZ);
        let countdown = pit.countdown(5_000, TSC_HZ).expect("counting");
        assert_eq!(countdown.period_tsc, Some(11_932_000));
        // Loaded a clock after the write, the first edge a period after the load: the load
        // clock moves the first tick, the period stays 11932 clocks.
        assert_eq!(countdown.due_tsc, 5_000 + LOADED + 11_932_000);
        // Asked later, the next deadline is the next period's.
        let later = pit.countdown(5_000 + 30_000_000, TSC_HZ).expect("counting");
        assert_eq!(later.due_tsc, 5_000 + LOADED + 3 * 11_932_000);
    }

    #[test]
    fn in_mode_2_a_new_count_waits_for_the_end_of_the_current_cycle() {
        // 11932 clocks written at 0, loaded a clock later; 5000 clocks in, 4096 is written:
        // the cycle runs out 11932 clocks after the load, then the channel counts 4096 a
        // period, from the reload (no load clock of its own: 82C54 datasheet, mode 2).
        let mut pit = Pit::default();
        pit.write(CONTROL, 0x34, 0, TSC_HZ);
        pit.write(CHANNEL_0, 0x9c, 0, TSC_HZ);
        pit.write(CHANNEL_0, 0x2e, 0, TSC_HZ); // 11932
        pit.write(CHANNEL_0, 0x00, 5_000_000, TSC_HZ);
        let what = pit.write(CHANNEL_0, 0x10, 5_000_000, TSC_HZ); // 4096
        assert!(what.contains("end of the current cycle"), "{what}");
        assert_eq!(
            pit.countdown(5_000_000, TSC_HZ),
            Some(Countdown {
                period_tsc: Some(4_096_000),
                due_tsc: LOADED + 11_932_000
            })
        );
        let channel = pit.channels[0];
        assert_eq!(
            channel.count(LOADED + 6_000_000, TSC_HZ),
            11_932 - 6_000,
            "the old cycle"
        );
        assert_eq!(
            channel.count(LOADED + 11_932_000 + 96_000, TSC_HZ),
            4_000,
            "the new one"
        );
        assert_eq!(
            pit.countdown(12_000_000, TSC_HZ).map(|next| next.due_tsc),
            Some(LOADED + 11_932_000 + 4_096_000)
        );
    }

    #[test]
    fn a_first_count_in_mode_2_ticks_a_period_after_it_is_loaded_even_asked_a_moment_before() {
        // The hypervisor reads the clock just before the write, the PIT at the write: the
        // first edge is a whole period after the load (a clock after the write), not at it.
        let mut pit = Pit::default();
        pit.write(CONTROL, 0x34, 0, TSC_HZ);
        pit.write(CHANNEL_0, 0x9c, 1_000, TSC_HZ);
        pit.write(CHANNEL_0, 0x2e, 1_000, TSC_HZ); // 11932, written at 1000, loaded at 2000
        assert_eq!(
            pit.countdown(500, TSC_HZ),
            Some(Countdown {
                period_tsc: Some(11_932_000),
                due_tsc: 1_000 + LOADED + 11_932_000
            })
        );
    }

    #[test]
    fn a_second_count_in_the_same_cycle_replaces_only_the_waiting_one() {
        let mut pit = Pit::default();
        pit.write(CONTROL, 0x34, 0, TSC_HZ);
        pit.write(CHANNEL_0, 0x9c, 0, TSC_HZ);
        pit.write(CHANNEL_0, 0x2e, 0, TSC_HZ); // 11932 written at 0, loaded at LOADED
        pit.write(CHANNEL_0, 0x00, 5_000_000, TSC_HZ);
        pit.write(CHANNEL_0, 0x10, 5_000_000, TSC_HZ); // 4096 waits
        pit.write(CHANNEL_0, 0x00, 5_500_000, TSC_HZ);
        pit.write(CHANNEL_0, 0x20, 5_500_000, TSC_HZ); // 8192 waits instead
        let channel = pit.channels[0];
        assert_eq!(
            channel.count(LOADED + 6_000_000, TSC_HZ),
            11_932 - 6_000,
            "the first still counts"
        );
        assert_eq!(
            channel.count(LOADED + 11_932_000 + 92_000, TSC_HZ),
            8_100,
            "then 8192"
        );
    }

    #[test]
    fn in_mode_0_the_first_byte_stops_the_count_and_bcd_counts_in_decimal() {
        let mut pit = Pit::default();
        pit.write(CONTROL, 0x30, 0, TSC_HZ); // mode 0, binary
        pit.write(CHANNEL_0, 0xe8, 0, TSC_HZ);
        pit.write(CHANNEL_0, 0x03, 0, TSC_HZ); // 1000
        pit.write(CHANNEL_0, 0x00, 500_000, TSC_HZ); // the low byte of the next count
        assert_eq!(pit.countdown(500_000, TSC_HZ), None, "stopped");
        assert!(!pit.channels[0].output(2_000_000, TSC_HZ), "OUT stays low");
        pit.write(CHANNEL_0, 0x01, 600_000, TSC_HZ); // 256, loaded on the next clock
        assert_eq!(
            pit.countdown(600_000, TSC_HZ).map(|next| next.due_tsc),
            Some(600_000 + LOADED + 256_000)
        );
        // Control word bit 0: BCD. 0x1000 is a thousand clocks, and the count reads in BCD.
        pit.write(CONTROL, 0x31, 0, TSC_HZ);
        pit.write(CHANNEL_0, 0x00, 0, TSC_HZ);
        pit.write(CHANNEL_0, 0x10, 0, TSC_HZ);
        assert_eq!(
            pit.countdown(0, TSC_HZ).map(|next| next.due_tsc),
            Some(LOADED + 1_000_000)
        );
        assert_eq!(pit.channels[0].count(LOADED, TSC_HZ), 0x1000, "loaded");
        assert_eq!(pit.channels[0].count(LOADED + 1_000, TSC_HZ), 0x0999);
        assert_eq!((to_bcd(9999), from_bcd(0x9999)), (0x9999, 9999));
    }

    #[test]
    fn mode_4_strobes_once_a_clock_after_terminal_count() {
        // Linux's one-shot PIT clock event: control word 0x38, then each next event's count.
        // "For an initial count of N, OUT does not strobe low until N + 1 CLK pulses after
        // the initial count is written" (82C54 datasheet, mode 4): 16 written at 0 strobes
        // at 17 clocks, and OUT rises, the edge IRQ 0 sees, at 18.
        let mut pit = Pit::default();
        pit.write(CONTROL, 0x38, 0, TSC_HZ); // channel 0, low then high, mode 4
        pit.write(CHANNEL_0, 0x10, 0, TSC_HZ);
        pit.write(CHANNEL_0, 0x00, 0, TSC_HZ); // 16
        assert_eq!(
            pit.countdown(0, TSC_HZ),
            Some(Countdown {
                period_tsc: None,
                due_tsc: 18_000
            })
        );
        assert_eq!(pit.countdown(18_000, TSC_HZ), None, "strobed: done");
        let channel = pit.channels[0];
        assert!(channel.output(16_000, TSC_HZ));
        assert!(
            !channel.output(17_000, TSC_HZ),
            "low for the clock of terminal count, N + 1 clocks after the write"
        );
        assert!(channel.output(18_000, TSC_HZ));
        // The next event's count re-arms it, loaded on the next clock too.
        pit.write(CHANNEL_0, 0x20, 30_000, TSC_HZ);
        pit.write(CHANNEL_0, 0x00, 30_000, TSC_HZ); // 32
        assert_eq!(
            pit.countdown(30_000, TSC_HZ)
                .map(|countdown| countdown.due_tsc),
            Some(30_000 + 34_000)
        );
    }

    #[test]
    fn a_one_shot_is_due_at_the_first_tsc_tick_its_output_is_high() {
        // A TSC of 2.4 GHz: 2011.4 TSC ticks a PIT clock, no whole number.
        let tsc_hz = 2_400_000_000;
        for (control, count) in [(0x30, 1u8), (0x38, 1), (0x30, 7), (0x38, 200)] {
            let mut pit = Pit::default();
            pit.write(CONTROL, control, 0, tsc_hz);
            pit.write(CHANNEL_0, count, 0, tsc_hz);
            pit.write(CHANNEL_0, 0, 0, tsc_hz);
            let due = pit.countdown(0, tsc_hz).expect("counting").due_tsc;
            let channel = pit.channels[0];
            assert!(
                channel.output(due, tsc_hz),
                "{control:#x} {count}: high at {due}"
            );
            assert!(
                !channel.output(due - 1, tsc_hz),
                "{control:#x} {count}: low just before"
            );
        }
    }

    #[test]
    fn mode_0_counts_once_and_a_second_latch_is_ignored() {
        let mut pit = Pit::default();
        pit.write(CONTROL, 0x30, 0, TSC_HZ); // channel 0, low then high, mode 0
        pit.write(CHANNEL_0, 0x10, 0, TSC_HZ);
        pit.write(CHANNEL_0, 0x00, 0, TSC_HZ); // 16
        let once = pit.countdown(0, TSC_HZ).expect("counting");
        assert_eq!(
            once,
            Countdown {
                period_tsc: None,
                due_tsc: LOADED + 16_000
            }
        );
        assert_eq!(
            pit.countdown(20_000, TSC_HZ),
            None,
            "past terminal count: done"
        );
        // A count of 0 is 65536.
        pit.write(CHANNEL_0, 0x00, 0, TSC_HZ);
        pit.write(CHANNEL_0, 0x00, 0, TSC_HZ);
        assert_eq!(
            pit.countdown(0, TSC_HZ).map(|c| c.due_tsc),
            Some(LOADED + 65_536_000)
        );
        pit.write(CONTROL, 0x00, LOADED + 1_000, TSC_HZ); // latch: 65535, a clock in
        pit.write(CONTROL, 0x00, 9_000, TSC_HZ); // ignored
        assert_eq!(pit.read(CHANNEL_0, 9_000, TSC_HZ), 0xff);
        assert_eq!(pit.read(CHANNEL_0, 9_000, TSC_HZ), 0xff);
    }

    #[test]
    fn a_read_gives_the_count_now_and_a_latch_freezes_it() {
        let mut pit = Pit::default();
        pit.write(CONTROL, 0x34, 0, TSC_HZ);
        pit.write(CHANNEL_0, 0x00, 0, TSC_HZ);
        pit.write(CHANNEL_0, 0x10, 0, TSC_HZ); // 4096
        // 100 PIT ticks after the load the count is 3996 (0x0f9c), low byte first.
        pit.write(CONTROL, 0x00, LOADED + 100_000, TSC_HZ); // latch channel 0
        assert_eq!(pit.read(CHANNEL_0, 100_000, TSC_HZ), 0x9c);
        assert_eq!(
            pit.read(CHANNEL_0, 900_000, TSC_HZ),
            0x0f,
            "the latched high byte"
        );
        // Past a period it starts over: 4096 + 100 ticks later, 3996 again.
        pit.write(CONTROL, 0x00, LOADED + 4_196_000, TSC_HZ);
        assert_eq!(pit.read(CHANNEL_0, 4_196_000, TSC_HZ), 0x9c);
    }

    #[test]
    fn port_b_keeps_its_nmi_enables_and_its_status_bits_are_read_only() {
        // PIIX4, NMISC (port 0x61): bits 3:2, the IOCHK# and PCI SERR# NMI enables, are
        // read/write as bits 1:0 are; a kernel that sets them to mask those NMIs reads them
        // back. Bits 7:4 are status: a write does not set them.
        let mut pit = Pit::default();
        pit.write(PORT_B, 0x0c, 0, TSC_HZ);
        assert_eq!(pit.read(PORT_B, 0, TSC_HZ) & 0x0c, 0x0c);
        pit.write(PORT_B, 0xc0, 0, TSC_HZ);
        assert_eq!(
            pit.read(PORT_B, 0, TSC_HZ),
            0,
            "nothing written sticks in 7:4"
        );
    }

    #[test]
    fn channel_2_counts_once_its_gate_opens_and_port_b_shows_its_output() {
        let mut pit = Pit::default();
        pit.write(CONTROL, 0xb0, 0, TSC_HZ); // channel 2, low then high, mode 0
        pit.write(CHANNEL_2, 0xe8, 0, TSC_HZ);
        pit.write(CHANNEL_2, 0x03, 0, TSC_HZ); // 1000
        assert_eq!(
            pit.read(PORT_B, 0, TSC_HZ) & 0x20,
            0,
            "gate closed: not counting"
        );
        // Mode 0: the count was loaded while the gate was low, so OUT rises N clocks after
        // the gate opens, not N + 1 (82C54 datasheet, mode 0: "no CLK pulse is needed to
        // load the Counter as this has already been done").
        pit.write(PORT_B, 0x01, 10_000, TSC_HZ);
        assert_eq!(
            pit.read(PORT_B, 500_000, TSC_HZ) & 0x20,
            0,
            "500 of 1000 ticks"
        );
        assert_eq!(
            pit.read(PORT_B, 1_010_000, TSC_HZ) & 0x20,
            0x20,
            "terminal count"
        );
    }

    #[test]
    fn in_mode_2_a_rising_gate_loads_the_count_on_the_next_clock() {
        // In modes 1, 2, 3 and 5 the gate's rising edge is a trigger: "A trigger reloads the
        // Counter with the initial count on the next CLK pulse" (82C54 datasheet, mode 2).
        let mut pit = Pit::default();
        pit.write(CONTROL, 0xb4, 0, TSC_HZ); // channel 2, low then high, mode 2
        pit.write(CHANNEL_2, 100, 0, TSC_HZ);
        pit.write(CHANNEL_2, 0, 0, TSC_HZ); // 100, the gate still low
        pit.write(PORT_B, 0x01, 10_000, TSC_HZ);
        let channel = pit.channels[2];
        assert_eq!(channel.count(10_000 + 1_000, TSC_HZ), 100, "loaded");
        assert_eq!(channel.count(10_000 + 2_000, TSC_HZ), 99, "a clock later");
    }

    #[test]
    fn mode_0_s_output_rises_n_plus_1_clocks_after_the_write() {
        // "After the Control Word and initial count are written to a Counter, the initial
        // count will be loaded on the next CLK pulse. This CLK pulse does not decrement the
        // count, so for an initial count of N, OUT does not go high until N + 1 CLK pulses
        // after the initial count is written" (82C54 datasheet, mode 0).
        let mut pit = Pit::default();
        pit.write(CONTROL, 0x30, 0, TSC_HZ); // channel 0, low then high, mode 0
        pit.write(CHANNEL_0, 16, 0, TSC_HZ);
        pit.write(CHANNEL_0, 0, 0, TSC_HZ); // 16
        let channel = pit.channels[0];
        assert_eq!(channel.count(1_000, TSC_HZ), 16, "the load clock: still N");
        assert_eq!(channel.count(2_000, TSC_HZ), 15);
        assert!(!channel.output(16_000, TSC_HZ), "N clocks: not yet");
        assert!(
            channel.output(17_000, TSC_HZ),
            "N + 1 clocks: terminal count"
        );
        assert_eq!(
            pit.countdown(0, TSC_HZ).map(|next| next.due_tsc),
            Some(17_000)
        );
    }
}
