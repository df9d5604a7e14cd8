//! The PC's real-time clock and CMOS memory: a Motorola MC146818 at ports 0x70 (index) and
//! 0x71 (data), as every PC since the AT has it.
//!
//! A kernel writes a register's number to 0x70 (bit 7 there masks the NMI on a real PC;
//! here it is dropped, as no NMI comes from the platform, and 0x70 reads 0xff, as it is
//! write-only on a PC), then reads or writes the register at 0x71:
//!
//! | register | what                                                        |
//! |----------|-------------------------------------------------------------|
//! | 0x00, 0x02, 0x04 | seconds, minutes, hours                             |
//! | 0x06, 0x07, 0x08, 0x09 | day of the week (1 = Sunday; a counter of its own, which steps at midnight), day, month, year (00–99) |
//! | 0x32     | the century (the IBM PC's place for it, and QEMU's)          |
//! | 0x01, 0x03, 0x05 | the seconds, minutes and hours alarm, in the time registers' form; 0xC0–0xFF in one: "don't care", any value matches |
//! | 0x0a     | status A: bits 6:0, the divider (DV2–0) and rate (RS3–0), read/write, 0x26 as a BIOS leaves them (32.768 kHz, 1024 Hz); RS3–0 set the periodic interrupt's rate, DV2–0 act on nothing; bit 7, UIP, read-only, from 244 µs before each second's edge to the end of the update cycle, 1984 µs after it |
//! | 0x0b     | status B: bit 7 SET (the clock stops while the kernel writes the time, and no update, UF, alarm or UIP comes; it clears UIE), bit 6 PIE, bit 5 AIE, bit 4 UIE (the periodic, alarm and update-ended interrupts' enables), bit 2 binary (else BCD), bit 1 24-hour (else 12-hour with bit 7 for PM) |
//! | 0x0c     | status C, read-only: PF (bit 6) at each periodic tick, AF (bit 5) at the end of an update whose time matches the alarm, UF (bit 4) at the end of each update; each whether or not its enable is on; IRQF (bit 7) while one of them is on with its enable. A read returns them and clears them all |
//! | 0x0d     | status D: 0x80, "the time is valid" |
//! | 0x0e–0x7f | CMOS memory; 0x15/0x16 base memory (640 KiB), 0x17/0x18 and 0x30/0x31 memory above 1 MiB in KiB (at most 65535), 0x34/0x35 memory above 16 MiB in 64 KiB units, as a PC BIOS (and QEMU) fills them |
//!
//! The time is the host's: the hypervisor reads the real RTC once when it starts and moves
//! it on with the TSC (`Machine::wall_clock`). A guest that sets the clock moves only its own
//! (an offset). A kernel sets it as the MC146818 datasheet says, with SET in status B: the
//! clock stops, the registers keep what is written one by one (a date that does not exist
//! yet, day 31 before the month becomes March, included), and the clock starts again from
//! them when SET is cleared. A time register written without SET moves the clock at once.
//!
//! Its interrupt, IRQ 8, is IRQF: high while a flag of status C is on with its enable in
//! status B, down when the kernel reads status C, which clears the flags (MC146818
//! datasheet, register C: "any time the IRQF bit is a one, the IRQ pin is driven low", the
//! chip's pin being active low, and a PC's ISA IRQ 8 active high; "all flag bits are
//! cleared after register C is read"). An enable set while its flag is on raises it at
//! once, as the sum says. The flags come from the host's time, as the clock does, and are
//! brought up to date whenever the RTC is looked at (`catch_up`): at an access, and at a
//! tick of the RTC's timer, which the hypervisor arms for the next moment a flag with its
//! enable on will be set ([`Rtc::next_event`], `domain/interrupts.rs`): a flag whose enable
//! is off needs no timer, as nothing but a read of status C can see it. The periodic ticks
//! come at the rate RS3–0 say (datasheet, "Periodic Interrupt Rate", the 32.768 kHz time
//! base: 256 Hz and 128 Hz for 1 and 2, 32768 >> (RS − 1) Hz from 3 to 15, none for 0), in
//! phase with the seconds, as the divider chain they are taps of; the update ends 1984 µs
//! after each second's edge, and neither an update nor an alarm comes while SET stops the
//! clock (datasheet, register B: SET "inhibits any update transfer"). An update SET
//! inhibited never comes: SET cleared at a second's edge, or inside the 1984 µs that edge's
//! update cycle would have taken, gives no UF, AF or UIP for it; the clock runs on from
//! then, and the next update is the next second's. The hypervisor notices the RTC's events
//! at its own timer's ticks, at most `TIMER_MAX_HZ` (1000) a second: periodic ticks faster
//! than that merge in PF, as ticks the kernel has not read do on the chip, so a kernel that
//! counts IRQ 8s at 1024 Hz or more counts fewer. Not modelled: status A's divider.
//! Whatever DV2–0 say the clock runs on the host's time and the periodic ticks come, a divider held in reset (DV = 11x, which stops the
//! MC146818's updates and its periodic taps until it is released; QEMU's RTC stops its clock
//! there) included. Nor are the square-wave output (SQWE, bit 3 of status B, a pin no PC
//! wires to anything) and the daylight-saving bit (bit 0), kept as written.

use crate::machine::WallTime;
use alloc::format;
use alloc::string::String;

/// The index and data ports.
pub const INDEX: u16 = 0x70;
pub const DATA: u16 = 0x71;

/// Does an access of `size` bytes at `port` reach the RTC's registers: its index port (which
/// selects the register the next data access reads or writes) or its data port?
pub fn reaches_registers(port: u16, size: u8) -> bool {
    (0..u16::from(size)).any(|byte| matches!(port.wrapping_add(byte), INDEX | DATA))
}
/// Its interrupt line on a PC: ISA IRQ 8 (the ACPI tables name it), IRQ 0 of the slave
/// 8259A.
pub const IRQ: u8 = 8;

const SECONDS: u8 = 0x00;
const SECONDS_ALARM: u8 = 0x01;
const MINUTES: u8 = 0x02;
const MINUTES_ALARM: u8 = 0x03;
const HOURS: u8 = 0x04;
const HOURS_ALARM: u8 = 0x05;
const WEEKDAY: u8 = 0x06;
const DAY: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const STATUS_A: u8 = 0x0a;
const STATUS_B: u8 = 0x0b;
const STATUS_C: u8 = 0x0c;
const STATUS_D: u8 = 0x0d;
/// The century's CMOS index (the FADT's CENTURY field says where it is).
pub const CENTURY: u8 = 0x32;

/// Status A: the divider and rate a BIOS leaves (32.768 kHz, 1024 Hz), and bit 7, UIP.
const STATUS_A_RATE: u8 = 0x26;
const UPDATE_IN_PROGRESS: u8 = 1 << 7;
/// Status A's read/write bits, 6:0: DV2–0 and RS3–0 (MC146818 datasheet, Register A: every
/// bit is read/write but UIP, bit 7, which is read-only).
const STATUS_A_WRITABLE: u8 = 0x7f;
/// UIP rises this long before the update cycle, which begins at the second's edge and lasts
/// 1984 µs (MC146818 datasheet: the registers are not to be read meanwhile).
const UIP_BEFORE_NS: u32 = 244_000;
const UPDATE_CYCLE_NS: u32 = 1_984_000;
/// The time base the divider chain counts, and the periodic ticks are taps of (status A's
/// DV2–0 = 010, as a PC's BIOS sets them).
const TIME_BASE_HZ: u64 = 32_768;
const NANOS: u64 = 1_000_000_000;
/// An alarm register holding a value with its two high bits set matches any time (MC146818
/// datasheet, "Alarm": the "don't care" code, 0xC0–0xFF).
const DONT_CARE: u8 = 0xc0;

/// Status B bits.
const SET: u8 = 1 << 7;
/// The periodic and alarm interrupts' enables.
const PERIODIC_INTERRUPT_ENABLE: u8 = 1 << 6;
const ALARM_INTERRUPT_ENABLE: u8 = 1 << 5;
/// The update-ended interrupt's enable, which SET clears (MC146818 datasheet, register B:
/// "UIE is cleared to 0 when SET is written to 1").
const UPDATE_INTERRUPT_ENABLE: u8 = 1 << 4;
const BINARY: u8 = 1 << 2;
const HOURS_24: u8 = 1 << 1;

/// Status C bits. Each flag sits at the bit of its enable in status B (PF and PIE bit 6, AF
/// and AIE bit 5, UF and UIE bit 4), so IRQF is "a flag and its enable" (MC146818 datasheet,
/// register C: IRQF = PF·PIE + AF·AIE + UF·UIE).
const INTERRUPT_REQUEST: u8 = 1 << 7;
const PERIODIC_FLAG: u8 = 1 << 6;
const ALARM_FLAG: u8 = 1 << 5;
const UPDATE_FLAG: u8 = 1 << 4;
const FLAGS: u8 = PERIODIC_FLAG | ALARM_FLAG | UPDATE_FLAG;

/// The host's time of day in nanoseconds since 1970, how the RTC's events are placed.
pub fn nanos_of(time: WallTime) -> u64 {
    time.seconds
        .saturating_mul(NANOS)
        .saturating_add(time.nanos.into())
}

/// A moment of the TSC and of the host's time together, and the TSC's rate: how the time of
/// one of the RTC's events becomes a deadline the hypervisor's timers count in (the host's
/// time of day is itself carried by the TSC, `Machine::wall_clock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timebase {
    pub tsc: u64,
    pub nanos: u64,
    pub tsc_hz: u64,
}

impl Timebase {
    /// The TSC at the host's time `nanos` (rounded up: not before it).
    fn tsc_at(&self, nanos: u64) -> u64 {
        let ahead = nanos.saturating_sub(self.nanos) as u128 * self.tsc_hz as u128;
        let ticks = ahead.div_ceil(NANOS as u128).min(u64::MAX as u128) as u64;
        self.tsc.saturating_add(ticks)
    }

    /// The host's time at TSC `tsc` (not before this timebase's moment).
    fn nanos_at(&self, tsc: u64) -> u64 {
        let ahead = tsc.saturating_sub(self.tsc) as u128 * NANOS as u128;
        let nanos = ahead / self.tsc_hz.max(1) as u128;
        self.nanos
            .saturating_add(nanos.min(u64::MAX as u128) as u64)
    }
}

/// The periodic interrupt's period in cycles of the 32.768 kHz time base, for status A's
/// RS3–0 (MC146818 datasheet, "Periodic Interrupt Rate and Square-Wave Output Frequency"):
/// none for 0; 1 and 2 the rates of 8 and 9 (3.90625 ms, 7.8125 ms: 256 and 128 Hz); 3–15
/// halve the rate at each step, 32768 >> (RS − 1) Hz (122.070 µs, 8192 Hz, to 500 ms, 2 Hz).
pub fn periodic_cycles(status_a: u8) -> Option<u64> {
    match status_a & 0x0f {
        0 => None,
        rate @ (1 | 2) => Some(1 << (rate + 6)),
        rate => Some(1 << (rate - 1)),
    }
}

/// The RTC and its 128 bytes of CMOS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtc {
    index: u8,
    /// Status A's divider and rate bits (6:0), as last written.
    status_a: u8,
    status_b: u8,
    /// Seconds the guest has moved its clock from the host's.
    offset: i64,
    /// Days the day of the week is ahead of the one its date falls on (0–6). The MC146818's
    /// day-of-week register is a counter of its own, which the kernel sets and which steps
    /// at midnight with the date; nothing ties it to the date (datasheet, "Time, Calendar
    /// and Alarm Locations"). QEMU's RTC recomputes it from the date at each update.
    weekday_ahead: u8,
    /// While status B's SET is on: the time registers, stopped, as the kernel writes them.
    stopped: Option<Time>,
    /// The second (since 1970, the host's) whose edge last came while SET was on, as of the
    /// moment SET was last cleared: that update, and every one before it, SET inhibited
    /// (MC146818 datasheet, register B: SET "inhibits any update transfer"). Updates, and
    /// their UF, alarm check and UIP, count from the one after it (`last_update`).
    inhibited: u64,
    /// Status C's PF, AF and UF as the events since the kernel last read it set them.
    flags: u8,
    /// The host's time (ns since 1970) up to which the flags are brought (`catch_up`);
    /// `None` before the first access.
    seen: Option<u64>,
    /// The TSC and the host's time at the last access (`Devices`), to place its next event
    /// on the TSC ([`Rtc::deadline`]).
    timebase: Option<Timebase>,
    /// The rest of the 128 bytes, the alarm registers (0x01, 0x03, 0x05) among them.
    memory: [u8; 128],
}

impl Default for Rtc {
    fn default() -> Rtc {
        Rtc::new(0)
    }
}

impl Rtc {
    /// The RTC of a PC with `ram` bytes of RAM: its CMOS says how much, as a BIOS fills it.
    pub fn new(ram: u64) -> Rtc {
        let mut memory = [0u8; 128];
        let mut put16 = |at: usize, value: u64| {
            let value = value.min(0xffff) as u16;
            memory[at] = value as u8;
            memory[at + 1] = (value >> 8) as u8;
        };
        put16(0x15, 640);
        let above_1_mib = ram.saturating_sub(1 << 20) / 1024;
        put16(0x17, above_1_mib);
        put16(0x30, above_1_mib);
        put16(0x34, ram.saturating_sub(16 << 20) / (64 * 1024));
        Rtc {
            index: 0,
            status_a: STATUS_A_RATE,
            status_b: HOURS_24,
            offset: 0,
            weekday_ahead: 0,
            stopped: None,
            inhibited: 0,
            flags: 0,
            seen: None,
            timebase: None,
            memory,
        }
    }

    /// The TSC and the host's time of this moment, and the TSC's rate (`Devices` passes
    /// them at each access): where [`Rtc::deadline`] places the next event.
    pub fn set_timebase(&mut self, timebase: Timebase) {
        self.timebase = Some(timebase);
    }

    /// Status C as a read would return it (without clearing it): the flags, and IRQF when
    /// one of them has its enable on.
    pub fn status_c(&self) -> u8 {
        match self.flags & self.status_b & FLAGS {
            0 => self.flags,
            _ => self.flags | INTERRUPT_REQUEST,
        }
    }

    /// The level of IRQ 8: IRQF.
    pub fn interrupt_line(&self) -> bool {
        self.status_c() & INTERRUPT_REQUEST != 0
    }

    /// Bring the flags up to the host's time `now`: every periodic tick, update end and
    /// alarm since the last look sets its flag (at most once: a flag is a bit, and ticks
    /// the kernel has not read merge in it). Time does not run back: a `now` before the last
    /// look changes nothing.
    pub fn catch_up(&mut self, now: u64) {
        let Some(from) = self.seen.filter(|&seen| seen < now) else {
            self.seen = Some(self.seen.map_or(now, |seen| seen.max(now)));
            return;
        };
        if let Some(period) = periodic_cycles(self.status_a)
            && periodic_index(now, period) > periodic_index(from, period)
        {
            self.flags |= PERIODIC_FLAG;
        }
        // The update cycle, and the alarm's check with it, while the clock runs.
        let last = self.last_update(from);
        if self.stopped.is_none() && update_index(now) > last {
            self.flags |= UPDATE_FLAG;
            let after = self.guest_seconds(last);
            let alarm = self.next_alarm(after);
            if alarm.is_some_and(|alarm| alarm <= self.guest_seconds(update_index(now))) {
                self.flags |= ALARM_FLAG;
            }
        }
        self.seen = Some(now);
    }

    /// The host's time (ns since 1970) of the next event after the last look whose flag has
    /// its enable on, and so raises IRQ 8: the next periodic tick (PIE), the next update's
    /// end (UIE), the end of the next update whose time matches the alarm (AIE). `None`
    /// while none is enabled, or before the first access.
    pub fn next_event(&self) -> Option<u64> {
        let seen = self.seen?;
        let periodic = periodic_cycles(self.status_a)
            .filter(|_| self.status_b & PERIODIC_INTERRUPT_ENABLE != 0)
            .map(|period| {
                let cycle = (periodic_index(seen, period) + 1) * period;
                (cycle as u128 * NANOS as u128).div_ceil(TIME_BASE_HZ as u128) as u64
            });
        let running = self.stopped.is_none();
        let last = self.last_update(seen);
        let update_end = |second: u64| second * NANOS + UPDATE_CYCLE_NS as u64;
        let update =
            (running && self.status_b & UPDATE_INTERRUPT_ENABLE != 0).then(|| update_end(last + 1));
        let alarm = (running && self.status_b & ALARM_INTERRUPT_ENABLE != 0)
            .then(|| self.next_alarm(self.guest_seconds(last)))
            .flatten()
            .map(|guest| update_end(guest.saturating_add_signed(-self.offset)));
        [periodic, update, alarm].into_iter().flatten().min()
    }

    /// The second whose update came last by the host's time `nanos` (ns since 1970): the
    /// last one to end, or the last one SET inhibited if that is later. The next update is
    /// the one after it. (SET cleared 1 ms after a second's edge: that edge's update never
    /// ran, and its cycle's end, 0.984 ms later, brings nothing.)
    fn last_update(&self, nanos: u64) -> u64 {
        update_index(nanos).max(self.inhibited)
    }

    /// How often the events with their enable on come at the most, in ns: the periodic
    /// rate, else once a second (updates, alarms); `None` while none is enabled.
    pub fn shortest_interval_nanos(&self) -> Option<u64> {
        let periodic = periodic_cycles(self.status_a)
            .filter(|_| self.status_b & PERIODIC_INTERRUPT_ENABLE != 0)
            .map(|period| period * NANOS / TIME_BASE_HZ);
        let each_second = self.status_b & (ALARM_INTERRUPT_ENABLE | UPDATE_INTERRUPT_ENABLE) != 0;
        periodic.or(each_second.then_some(NANOS))
    }

    /// The events whose enable is on, in words, for the trace.
    pub fn enabled_events(&self) -> String {
        let mut events = alloc::vec::Vec::new();
        if let Some(period) = periodic_cycles(self.status_a)
            .filter(|_| self.status_b & PERIODIC_INTERRUPT_ENABLE != 0)
        {
            // (Every period is a power of two cycles, 4 to 16384: the rate is whole.)
            events.push(format!("periodic at {} Hz", TIME_BASE_HZ / period));
        }
        if self.status_b & ALARM_INTERRUPT_ENABLE != 0 {
            events.push("alarm".into());
        }
        if self.status_b & UPDATE_INTERRUPT_ENABLE != 0 {
            events.push("update-ended".into());
        }
        events.join(", ")
    }

    /// The TSC at [`Rtc::next_event`], as the last access's timebase places it.
    pub fn deadline(&self) -> Option<u64> {
        Some(self.timebase?.tsc_at(self.next_event()?))
    }

    /// The RTC's timer is due at TSC `now`: its flags are brought up to the event it was
    /// armed for, or to `now` if that is later (events missed since merge into this one).
    /// An access between the hypervisor's look and this tick may have passed that event
    /// already (and set its flag): the next event is then ahead of `now`, and the flags are
    /// brought up to `now` only, never to a moment still to come. (The deadline's TSC was
    /// rounded up from the event's time: a microsecond of slack covers it.)
    pub fn tick(&mut self, now: u64) {
        const ROUNDING_NS: u64 = 1_000;
        let (Some(event), Some(timebase)) = (self.next_event(), self.timebase) else {
            return;
        };
        let now = timebase.nanos_at(now);
        let upto = match event <= now.saturating_add(ROUNDING_NS) {
            true => event.max(now),
            false => now,
        };
        self.catch_up(upto);
    }

    /// The first second after `after` (of the guest's clock, seconds since 1970) whose time
    /// matches the alarm registers, within the next two days; `None` when none does (an
    /// alarm value no time register ever holds, such as hour 0x25). Matching as the
    /// MC146818 does, register against register in their form (BCD or binary, 12 or 24
    /// hours), 0xC0–0xFF matching anything.
    fn next_alarm(&self, after: u64) -> Option<u64> {
        let alarm = |register: u8, value: u8| {
            let set = self.memory[register as usize];
            set & DONT_CARE == DONT_CARE || set == value
        };
        // An alarm register that no time ever matches (seconds 0x60, hour 0x25): no alarm,
        // found at once rather than by trying every second of two days, at every write the
        // hypervisor watches the timers for.
        let can_match = (0..60).any(|second| alarm(SECONDS_ALARM, self.encode(second)))
            && (0..60).any(|minute| alarm(MINUTES_ALARM, self.encode(minute)))
            && (0..24).any(|hour| alarm(HOURS_ALARM, self.encode_hour(hour)));
        if !can_match {
            return None;
        }
        let first_day = after / 86_400;
        for day in first_day..first_day + 2 {
            // Hours, minutes, seconds in order; whatever ends before `after` is passed over.
            for hour in (0..24).filter(|&hour| alarm(HOURS_ALARM, self.encode_hour(hour))) {
                let hour_start = day * 86_400 + hour as u64 * 3600;
                if hour_start + 3599 <= after {
                    continue;
                }
                for minute in (0..60).filter(|&minute| alarm(MINUTES_ALARM, self.encode(minute))) {
                    let minute_start = hour_start + minute as u64 * 60;
                    if minute_start + 59 <= after {
                        continue;
                    }
                    let second = (0..60)
                        .filter(|&second| alarm(SECONDS_ALARM, self.encode(second)))
                        .map(|second| minute_start + second as u64)
                        .find(|&moment| moment > after);
                    if second.is_some() {
                        return second;
                    }
                }
            }
        }
        None
    }

    /// An OUT of `value` to 0x70: select a register (bit 7, the NMI mask, aside).
    pub fn select(&mut self, value: u8) {
        self.index = value & 0x7f;
    }

    /// An IN from 0x71: the selected register, at `now` (the host's time of day). Status C
    /// is cleared by the read (its flags, and with them IRQ 8).
    pub fn read(&mut self, now: WallTime) -> u8 {
        self.catch_up(nanos_of(now));
        let time = self.time(now.seconds);
        let field = |value: u8| self.encode(value);
        match self.index {
            SECONDS => field(time.second),
            MINUTES => field(time.minute),
            HOURS => self.encode_hour(time.hour),
            WEEKDAY => field(time.weekday),
            DAY => field(time.day),
            MONTH => field(time.month),
            YEAR => field((time.year % 100) as u8),
            CENTURY => field((time.year / 100) as u8),
            STATUS_A => self.status_a | self.update_in_progress(now),
            STATUS_B => self.status_b,
            STATUS_C => {
                let status = self.status_c();
                self.flags = 0;
                status
            }
            STATUS_D => 0x80,
            index => self.memory[index as usize],
        }
    }

    /// An OUT of `value` to 0x71: set the selected register. A time register moves the
    /// guest's clock so that the field reads `value`; status B changes how values read.
    pub fn write(&mut self, value: u8, now: WallTime) {
        // What happened before the write happened under the registers as they were.
        self.catch_up(nanos_of(now));
        let now = now.seconds;
        let mut time = self.time(now);
        let decoded = self.decode(value);
        match self.index {
            SECONDS => time.second = decoded.min(59),
            MINUTES => time.minute = decoded.min(59),
            HOURS => time.hour = self.decode_hour(value),
            WEEKDAY => time.weekday = decoded.clamp(1, 7),
            DAY => time.day = decoded.clamp(1, 31),
            MONTH => time.month = decoded.clamp(1, 12),
            YEAR => time.year = time.year / 100 * 100 + decoded.min(99) as u32,
            CENTURY => time.year = decoded as u32 * 100 + time.year % 100,
            STATUS_B => {
                match (self.stopped, value & SET != 0) {
                    (None, true) => self.stopped = Some(time),
                    (Some(stopped), false) => {
                        // The clock runs from now: the update of the edge SET was on at
                        // (this second's: `now` is at or after it) never runs, even if its
                        // cycle would not be over yet; the next update is the next second's.
                        self.run_from(stopped, now);
                        self.stopped = None;
                        self.inhibited = now;
                    }
                    _ => {}
                }
                self.status_b = match value & SET {
                    0 => value,
                    _ => value & !UPDATE_INTERRUPT_ENABLE,
                };
                return;
            }
            // Kept and read back (RS3–0 set the periodic rate); UIP is the clock's to say.
            STATUS_A => {
                self.status_a = value & STATUS_A_WRITABLE;
                return;
            }
            // C and D are read-only.
            STATUS_C | STATUS_D => return,
            index => {
                self.memory[index as usize] = value;
                return;
            }
        }
        match self.stopped {
            Some(_) => self.stopped = Some(time),
            None => self.run_from(time, now),
        }
    }

    /// The clock runs on from `time` at the host's `now`: its date and time, and its day of
    /// the week, whatever day the date falls on.
    fn run_from(&mut self, time: Time, now: u64) {
        self.offset = time.seconds() as i64 - now as i64;
        let falls_on = Time::at(time.seconds()).weekday;
        self.weekday_ahead = (time.weekday + 7 - falls_on) % 7;
    }

    /// Status A's UIP at `now`: set from 244 µs before a second's edge to the end of the
    /// update cycle after it; never while SET stops the clock, nor in the rest of a cycle
    /// whose update SET inhibited (SET cleared in it: no update runs there). (Kernels wait
    /// for its fall to read the time just after an update, Xen to find a second's edge.)
    fn update_in_progress(&self, now: WallTime) -> u8 {
        let updating = now.nanos >= 1_000_000_000 - UIP_BEFORE_NS
            || (now.nanos < UPDATE_CYCLE_NS && now.seconds > self.inhibited);
        match self.stopped {
            None if updating => UPDATE_IN_PROGRESS,
            _ => 0,
        }
    }

    /// What the time registers hold at `now`: the guest's clock, or what was written while
    /// it is stopped.
    fn time(&self, now: u64) -> Time {
        self.stopped.unwrap_or_else(|| {
            let time = Time::at(self.guest_seconds(now));
            Time {
                weekday: (time.weekday - 1 + self.weekday_ahead) % 7 + 1,
                ..time
            }
        })
    }

    /// The register the next access reaches, in words.
    pub fn describe(&self) -> String {
        let name = match self.index {
            SECONDS => "seconds",
            SECONDS_ALARM => "seconds alarm",
            MINUTES => "minutes",
            MINUTES_ALARM => "minutes alarm",
            HOURS => "hours",
            HOURS_ALARM => "hours alarm",
            WEEKDAY => "day of the week",
            DAY => "day of the month",
            MONTH => "month",
            YEAR => "year",
            CENTURY => "century",
            STATUS_A => "status A",
            STATUS_B => "status B",
            STATUS_C => "status C",
            STATUS_D => "status D",
            _ => "CMOS memory",
        };
        format!("RTC register {:#04x}, {name}", self.index)
    }

    fn guest_seconds(&self, now: u64) -> u64 {
        now.saturating_add_signed(self.offset)
    }

    /// A value as status B says registers hold it: binary, or BCD (0x59 for 59).
    fn encode(&self, value: u8) -> u8 {
        match self.status_b & BINARY {
            0 => ((value / 10) << 4) | (value % 10),
            _ => value,
        }
    }

    fn decode(&self, value: u8) -> u8 {
        decode(self.status_b, value)
    }

    /// Hours in 24-hour form, or 1–12 with bit 7 for PM.
    fn encode_hour(&self, hour: u8) -> u8 {
        if self.status_b & HOURS_24 != 0 {
            return self.encode(hour);
        }
        let pm = if hour >= 12 { 0x80 } else { 0 };
        let twelve = match hour % 12 {
            0 => 12,
            other => other,
        };
        self.encode(twelve) | pm
    }

    fn decode_hour(&self, value: u8) -> u8 {
        decode_hour(self.status_b, value)
    }
}

/// How many periodic ticks of `period` time-base cycles have come by the host's time `nanos`
/// (they are in phase with the seconds: a tick at each multiple of the period).
fn periodic_index(nanos: u64, period: u64) -> u64 {
    let cycles = nanos as u128 * TIME_BASE_HZ as u128 / NANOS as u128;
    (cycles / period.max(1) as u128) as u64
}

/// The second whose update cycle ended last by the host's time `nanos` (the cycle ends
/// 1984 µs after the second's edge).
fn update_index(nanos: u64) -> u64 {
    nanos.saturating_sub(UPDATE_CYCLE_NS.into()) / NANOS
}

/// A date or time register's `value` as a number, as status B says it is held: binary, or
/// BCD (0x59 for 59). Also how the hypervisor reads the real RTC (`hv/src/time.rs`).
pub fn decode(status_b: u8, value: u8) -> u8 {
    match status_b & BINARY {
        0 => (value >> 4) * 10 + (value & 0xf),
        _ => value,
    }
}

/// The hours register's `value` as 0–23: 24-hour form, or 1–12 with bit 7 for PM.
pub fn decode_hour(status_b: u8, value: u8) -> u8 {
    if status_b & HOURS_24 != 0 {
        return decode(status_b, value).min(23);
    }
    let hour = decode(status_b, value & 0x7f) % 12;
    if value & 0x80 != 0 { hour + 12 } else { hour }
}

/// A moment as the RTC's registers hold it (UTC, the proleptic Gregorian calendar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    pub year: u32,
    pub month: u8,
    pub day: u8,
    /// 1 = Sunday … 7 = Saturday, as the RTC counts.
    pub weekday: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl Time {
    /// The moment `seconds` after 1970-01-01 00:00:00 UTC. (Days to a civil date: the
    /// algorithm of Howard Hinnant's "chrono-compatible low-level date algorithms", which
    /// counts in 400-year eras of 146097 days starting on March 1.)
    pub fn at(seconds: u64) -> Time {
        let days = (seconds / 86_400) as i64;
        let of_day = seconds % 86_400;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z - era * 146_097;
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_index = (5 * day_of_year + 2) / 153;
        let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u8;
        let month = if month_index < 10 {
            month_index + 3
        } else {
            month_index - 9
        } as u8;
        let year = (year_of_era + era * 400 + i64::from(month <= 2)) as u32;
        Time {
            year,
            month,
            day,
            // 1970-01-01 was a Thursday (5 in the RTC's count).
            weekday: ((days + 4) % 7 + 1) as u8,
            hour: (of_day / 3600) as u8,
            minute: (of_day / 60 % 60) as u8,
            second: (of_day % 60) as u8,
        }
    }

    /// Seconds since 1970-01-01 00:00:00 UTC (the inverse of [`Time::at`]).
    pub fn seconds(&self) -> u64 {
        let year = self.year as i64 - i64::from(self.month <= 2);
        let era = year.div_euclid(400);
        let year_of_era = year - era * 400;
        let month = self.month as i64;
        let day_of_year =
            (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + self.day as i64 - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        let days = era * 146_097 + day_of_era - 719_468;
        (days.max(0) as u64) * 86_400
            + self.hour as u64 * 3600
            + self.minute as u64 * 60
            + self.second as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-02 07:23:45 UTC, a Wednesday: the fake machine's time of day, in mid-second.
    const SINCE_1970: u64 = crate::testing::WALL_CLOCK;
    const NOW: WallTime = at(SINCE_1970);

    /// `seconds` since 1970, half a second past the edge (no update in progress).
    const fn at(seconds: u64) -> WallTime {
        WallTime {
            seconds,
            nanos: 500_000_000,
        }
    }

    fn read(rtc: &mut Rtc, register: u8) -> u8 {
        rtc.select(register);
        rtc.read(NOW)
    }

    #[test]
    fn days_since_1970_become_a_date_and_back() {
        let time = Time::at(SINCE_1970);
        assert_eq!(
            time,
            Time {
                year: 2026,
                month: 12,
                day: 2,
                weekday: 4,
                hour: 7,
                minute: 23,
                second: 45
            }
        );
        assert_eq!(time.seconds(), SINCE_1970);
        assert_eq!(Time::at(0).weekday, 5, "1970-01-01 was a Thursday");
        // 2000 was a leap year (divisible by 400): February 29 exists.
        let leap = Time::at(951_782_400);
        assert_eq!((leap.year, leap.month, leap.day), (2000, 2, 29));
        assert_eq!(leap.seconds(), 951_782_400);
    }

    #[test]
    fn the_registers_read_the_time_in_bcd_and_24_hours_as_a_pc_boots() {
        let mut rtc = Rtc::new(32 << 20);
        assert_eq!(read(&mut rtc, SECONDS), 0x45);
        assert_eq!(read(&mut rtc, MINUTES), 0x23);
        assert_eq!(read(&mut rtc, HOURS), 0x07);
        assert_eq!(read(&mut rtc, DAY), 0x02);
        assert_eq!(read(&mut rtc, MONTH), 0x12);
        assert_eq!(read(&mut rtc, YEAR), 0x26);
        assert_eq!(read(&mut rtc, CENTURY), 0x20);
        assert_eq!(read(&mut rtc, WEEKDAY), 4);
        assert_eq!(read(&mut rtc, STATUS_D), 0x80, "the time is valid");
        assert_eq!(read(&mut rtc, STATUS_A) & 0x80, 0, "mid-second: no update");
        // The NMI mask bit of the index is not part of the register number.
        rtc.select(0x80 | SECONDS);
        assert_eq!(rtc.read(NOW), 0x45);
        assert_eq!(rtc.describe(), "RTC register 0x00, seconds");
        // CMOS memory: 640 KiB of base memory, 31 MiB above 1 MiB, 16 MiB above 16 MiB.
        assert_eq!((read(&mut rtc, 0x15), read(&mut rtc, 0x16)), (0x80, 0x02));
        assert_eq!((read(&mut rtc, 0x17), read(&mut rtc, 0x18)), (0x00, 0x7c));
        assert_eq!((read(&mut rtc, 0x34), read(&mut rtc, 0x35)), (0x00, 0x01));
    }

    #[test]
    fn status_b_switches_to_binary_and_12_hours() {
        let mut rtc = Rtc::new(16 << 20);
        rtc.select(STATUS_B);
        rtc.write(BINARY, NOW);
        assert_eq!(read(&mut rtc, SECONDS), 45);
        assert_eq!(read(&mut rtc, HOURS), 7, "7 AM: no PM bit");
        rtc.select(HOURS);
        rtc.write(0x80 | 1, NOW); // 1 PM
        assert_eq!(read(&mut rtc, HOURS), 0x81);
    }

    #[test]
    fn the_guest_sets_its_own_clock_only() {
        let mut rtc = Rtc::new(16 << 20);
        rtc.select(YEAR);
        rtc.write(0x99, NOW); // BCD 99
        assert_eq!(read(&mut rtc, YEAR), 0x99);
        assert_eq!(read(&mut rtc, CENTURY), 0x20);
        assert_eq!(read(&mut rtc, MONTH), 0x12, "the other fields stay");
        // Another domain's RTC (a fresh one) still reads the host's year.
        assert_eq!(read(&mut Rtc::new(16 << 20), YEAR), 0x26);
        rtc.select(0x40);
        rtc.write(0xab, NOW);
        assert_eq!(rtc.read(NOW), 0xab, "CMOS memory keeps what is written");
        // The alarm registers are kept too, and named in the trace.
        rtc.select(0x03);
        rtc.write(0x30, NOW);
        assert_eq!(rtc.read(NOW), 0x30);
        assert_eq!(rtc.describe(), "RTC register 0x03, minutes alarm");
    }

    #[test]
    fn the_day_of_the_week_is_a_counter_of_its_own_that_steps_at_midnight() {
        // MC146818 datasheet: the day-of-week register is set by the program, 1–7, and
        // steps at midnight; nothing ties it to the date. 2026-12-02 is a Wednesday (4):
        // written as Friday (6), it reads 6, a date written after it leaves it, and it is
        // Saturday (7) once midnight has passed, then Sunday (1).
        let mut rtc = Rtc::new(16 << 20);
        rtc.select(WEEKDAY);
        rtc.write(6, NOW);
        assert_eq!(read(&mut rtc, WEEKDAY), 6);
        rtc.select(DAY);
        rtc.write(0x05, NOW);
        assert_eq!(read(&mut rtc, WEEKDAY), 6, "a date write leaves it");
        let next_midnight = SINCE_1970 - SINCE_1970 % 86_400 + 86_400;
        rtc.select(WEEKDAY);
        assert_eq!(rtc.read(at(next_midnight - 1)), 6);
        assert_eq!(rtc.read(at(next_midnight)), 7);
        assert_eq!(rtc.read(at(next_midnight + 86_400)), 1, "7 wraps to 1");
        // Written while SET stops the clock, it runs on from there.
        rtc.select(STATUS_B);
        rtc.write(SET | HOURS_24, NOW);
        rtc.select(WEEKDAY);
        rtc.write(2, NOW);
        rtc.select(STATUS_B);
        rtc.write(HOURS_24, NOW);
        assert_eq!(read(&mut rtc, WEEKDAY), 2);
    }

    #[test]
    fn with_set_the_clock_stops_and_starts_again_from_what_was_written() {
        // Linux's mc146818_set_time: SET, the fields one by one (day before month), SET off.
        // Setting 2027-03-31 on 2026-12-02 passes through December 31 and March 31: no day
        // is rounded into the next month on the way (MC146818 datasheet, status B).
        let mut rtc = Rtc::new(16 << 20);
        let write = |rtc: &mut Rtc, register: u8, value: u8, now: WallTime| {
            rtc.select(register);
            rtc.write(value, now);
        };
        write(&mut rtc, STATUS_B, SET | HOURS_24, NOW);
        for (register, value) in [(SECONDS, 0x00), (MINUTES, 0x30), (HOURS, 0x12)] {
            write(&mut rtc, register, value, NOW);
        }
        write(&mut rtc, DAY, 0x31, NOW);
        write(&mut rtc, MONTH, 0x02, NOW); // February 31, for now
        write(&mut rtc, MONTH, 0x03, NOW);
        write(&mut rtc, YEAR, 0x27, NOW);
        // SET clears UIE, whatever the same write asks for.
        write(
            &mut rtc,
            STATUS_B,
            SET | UPDATE_INTERRUPT_ENABLE | HOURS_24,
            NOW,
        );
        rtc.select(STATUS_B);
        assert_eq!(rtc.read(NOW), SET | HOURS_24);
        // Stopped: ten seconds later it still reads what was written.
        rtc.select(SECONDS);
        assert_eq!(rtc.read(at(SINCE_1970 + 10)), 0x00);
        write(&mut rtc, STATUS_B, HOURS_24, at(SINCE_1970 + 10));
        let date = |rtc: &mut Rtc, now: WallTime| {
            [YEAR, MONTH, DAY, HOURS, MINUTES, SECONDS].map(|register| {
                rtc.select(register);
                rtc.read(now)
            })
        };
        assert_eq!(
            date(&mut rtc, at(SINCE_1970 + 10)),
            [0x27, 0x03, 0x31, 0x12, 0x30, 0x00]
        );
        assert_eq!(
            date(&mut rtc, at(SINCE_1970 + 15)),
            [0x27, 0x03, 0x31, 0x12, 0x30, 0x05],
            "running"
        );
    }

    #[test]
    fn status_a_keeps_its_divider_and_rate_bits_and_uip_stays_read_only() {
        // MC146818 datasheet, Register A: DV2–0 and RS3–0 (bits 6:0) are read/write, UIP
        // (bit 7) is read-only.
        let mut rtc = Rtc::new(16 << 20);
        assert_eq!(read(&mut rtc, STATUS_A), 0x26, "as a BIOS leaves it");
        rtc.select(STATUS_A);
        rtc.write(0x2a, NOW); // 32.768 kHz, 64 Hz
        assert_eq!(read(&mut rtc, STATUS_A), 0x2a, "mid-second: no UIP");
        rtc.select(STATUS_A);
        rtc.write(0xa6, NOW);
        assert_eq!(
            read(&mut rtc, STATUS_A),
            0x26,
            "a written UIP does not stick"
        );
        // UIP still comes with the update cycle, beside what was written.
        rtc.select(STATUS_A);
        rtc.write(0x2a, NOW);
        let updating = WallTime {
            seconds: SINCE_1970,
            nanos: 1_000_000,
        };
        assert_eq!(rtc.read(updating), 0x2a | 0x80);
    }

    #[test]
    fn uip_is_set_around_each_second_s_edge_and_not_while_set_stops_the_clock() {
        // From 244 µs before the edge to the end of the 1984 µs update cycle after it.
        let mut rtc = Rtc::new(16 << 20);
        let uip = |rtc: &mut Rtc, nanos: u32| {
            rtc.select(STATUS_A);
            rtc.read(WallTime {
                seconds: SINCE_1970,
                nanos,
            })
        };
        assert_eq!(uip(&mut rtc, 500_000_000), 0x26);
        assert_eq!(uip(&mut rtc, 999_755_999), 0x26, "just before");
        assert_eq!(uip(&mut rtc, 999_756_000), 0x26 | 0x80, "244 µs before");
        assert_eq!(uip(&mut rtc, 1_000_000), 0x26 | 0x80, "in the update cycle");
        assert_eq!(uip(&mut rtc, 1_984_000), 0x26, "the cycle is over");
        rtc.select(STATUS_B);
        rtc.write(SET | HOURS_24, NOW);
        assert_eq!(uip(&mut rtc, 1_000_000), 0x26, "no update while SET");
    }

    /// `seconds` since 1970 and `nanos` into the second.
    const fn moment(seconds: u64, nanos: u32) -> WallTime {
        WallTime { seconds, nanos }
    }

    fn write(rtc: &mut Rtc, register: u8, value: u8, now: WallTime) {
        rtc.select(register);
        rtc.write(value, now);
    }

    fn status_c(rtc: &mut Rtc, now: WallTime) -> u8 {
        rtc.select(STATUS_C);
        rtc.read(now)
    }

    #[test]
    fn the_periodic_rate_follows_the_datasheet_s_table() {
        // MC146818 datasheet, "Periodic Interrupt Rate" for a 32.768 kHz time base: none,
        // 3.90625 ms, 7.8125 ms, 122.070 µs, 244.141 µs, … 976.562 µs (6), … 500 ms (15).
        let hz = |rs: u8| periodic_cycles(rs).map(|cycles| TIME_BASE_HZ / cycles);
        assert_eq!(hz(0), None);
        assert_eq!((hz(1), hz(2)), (Some(256), Some(128)));
        assert_eq!((hz(1), hz(2)), (hz(8), hz(9)), "1 and 2 repeat 8 and 9");
        assert_eq!((hz(3), hz(4), hz(6)), (Some(8192), Some(4096), Some(1024)));
        assert_eq!((hz(13), hz(15)), (Some(8), Some(2)));
        // The divider bits beside the rate do not change it.
        assert_eq!(periodic_cycles(0x26), periodic_cycles(0x06));
    }

    #[test]
    fn a_flag_is_set_with_or_without_its_enable_and_a_read_of_c_clears_it() {
        // 2 Hz (RS = 15): ticks at each second's edge and half-way through it.
        let mut rtc = Rtc::new(16 << 20);
        write(&mut rtc, STATUS_A, 0x2f, NOW);
        assert_eq!(status_c(&mut rtc, NOW), 0, "nothing yet");
        // PIE off: PF is set all the same, for a kernel that polls it, and IRQ 8 stays low.
        rtc.select(SECONDS);
        rtc.read(moment(SINCE_1970, 999_000_000));
        assert!(!rtc.interrupt_line());
        assert_eq!(rtc.status_c(), 0, "no tick between x.5 and x.999");
        rtc.read(moment(SINCE_1970 + 1, 100));
        assert_eq!(rtc.status_c(), PERIODIC_FLAG);
        assert!(!rtc.interrupt_line(), "PF without PIE: no IRQF");
        // PIE on while PF is on: IRQF, and the line, at once.
        write(
            &mut rtc,
            STATUS_B,
            PERIODIC_INTERRUPT_ENABLE | HOURS_24,
            moment(SINCE_1970 + 1, 200),
        );
        assert!(rtc.interrupt_line());
        let now = moment(SINCE_1970 + 1, 300);
        assert_eq!(status_c(&mut rtc, now), INTERRUPT_REQUEST | PERIODIC_FLAG);
        assert!(!rtc.interrupt_line(), "the read releases IRQ 8");
        assert_eq!(status_c(&mut rtc, now), 0, "and clears the flags");
        // Ticks missed between two reads are one flag.
        assert_eq!(
            status_c(&mut rtc, moment(SINCE_1970 + 4, 0)),
            INTERRUPT_REQUEST | PERIODIC_FLAG | UPDATE_FLAG,
            "three seconds of ticks and updates, merged (UF without UIE: no IRQF of its own)"
        );
        // Status C is read-only.
        write(&mut rtc, STATUS_C, 0xff, moment(SINCE_1970 + 4, 0));
        assert_eq!(rtc.status_c(), 0);
    }

    #[test]
    fn the_update_ended_flag_comes_at_the_end_of_each_second_s_update_cycle() {
        // (RS = 0: no periodic flag among the others.)
        let mut rtc = Rtc::new(16 << 20);
        write(&mut rtc, STATUS_A, 0x20, NOW);
        write(&mut rtc, STATUS_B, UPDATE_INTERRUPT_ENABLE | HOURS_24, NOW);
        let end = (SINCE_1970 + 1) * NANOS + UPDATE_CYCLE_NS as u64;
        assert_eq!(rtc.next_event(), Some(end), "1984 µs after the next edge");
        // In the update cycle: not yet.
        assert_eq!(status_c(&mut rtc, moment(SINCE_1970 + 1, 1_983_999)), 0);
        assert_eq!(
            status_c(&mut rtc, moment(SINCE_1970 + 1, 1_984_000)),
            INTERRUPT_REQUEST | UPDATE_FLAG
        );
        assert_eq!(rtc.next_event(), Some(end + NANOS), "and the next second's");
        for second in 2..5 {
            assert_eq!(
                status_c(&mut rtc, moment(SINCE_1970 + second, 500_000_000)),
                INTERRUPT_REQUEST | UPDATE_FLAG,
                "once each second"
            );
        }
        // SET stops the updates (and clears UIE): no flag, no event.
        write(
            &mut rtc,
            STATUS_B,
            SET | HOURS_24,
            moment(SINCE_1970 + 5, 500_000_000),
        );
        assert_eq!(rtc.next_event(), None);
        assert_eq!(
            status_c(&mut rtc, moment(SINCE_1970 + 9, 0)),
            UPDATE_FLAG,
            "the one before SET"
        );
        assert_eq!(status_c(&mut rtc, moment(SINCE_1970 + 12, 0)), 0);
    }

    #[test]
    fn the_alarm_matches_the_time_registers_with_don_t_cares() {
        // 07:23:45.5. Seconds 50, any minute (0xC0), any hour (0xFF): 07:23:50, then
        // 07:24:50.
        // (RS = 0: no periodic flag among the others.)
        let mut rtc = Rtc::new(16 << 20);
        write(&mut rtc, STATUS_A, 0x20, NOW);
        write(&mut rtc, SECONDS_ALARM, 0x50, NOW);
        write(&mut rtc, MINUTES_ALARM, 0xc0, NOW);
        write(&mut rtc, HOURS_ALARM, 0xff, NOW);
        write(&mut rtc, STATUS_B, ALARM_INTERRUPT_ENABLE | HOURS_24, NOW);
        let update_end = |second: u64| second * NANOS + UPDATE_CYCLE_NS as u64;
        assert_eq!(rtc.next_event(), Some(update_end(SINCE_1970 + 5)));
        assert_eq!(
            status_c(&mut rtc, moment(SINCE_1970 + 4, 500_000_000)),
            UPDATE_FLAG,
            "07:23:49: the updates only"
        );
        assert_eq!(
            status_c(&mut rtc, moment(SINCE_1970 + 5, 500_000_000)),
            INTERRUPT_REQUEST | ALARM_FLAG | UPDATE_FLAG
        );
        assert_eq!(rtc.next_event(), Some(update_end(SINCE_1970 + 65)));
        // Exactly 08:00:00, in BCD: 2175 seconds on; in binary, the same.
        for (binary, [hour, minute, second]) in [(0, [0x08, 0x00, 0x00]), (BINARY, [8, 0, 0])] {
            write(
                &mut rtc,
                STATUS_B,
                ALARM_INTERRUPT_ENABLE | HOURS_24 | binary,
                NOW,
            );
            write(&mut rtc, HOURS_ALARM, hour, NOW);
            write(&mut rtc, MINUTES_ALARM, minute, NOW);
            write(&mut rtc, SECONDS_ALARM, second, NOW);
            assert_eq!(rtc.next_event(), Some(update_end(SINCE_1970 + 2175)));
        }
        // 12-hour form: 8 PM is 0x88, 12 hours on from 8 AM.
        write(&mut rtc, STATUS_B, ALARM_INTERRUPT_ENABLE, NOW);
        write(&mut rtc, HOURS_ALARM, 0x88, NOW);
        assert_eq!(
            rtc.next_event(),
            Some(update_end(SINCE_1970 + 2175 + 12 * 3600))
        );
        // Hour 0x25 is no time the registers ever hold: no alarm, no timer.
        write(&mut rtc, STATUS_B, ALARM_INTERRUPT_ENABLE | HOURS_24, NOW);
        write(&mut rtc, HOURS_ALARM, 0x25, NOW);
        assert_eq!(rtc.next_event(), None);
        // The alarm follows the guest's clock: set to 07:59:58, it is two seconds off.
        let mut rtc = Rtc::new(16 << 20);
        write(&mut rtc, STATUS_B, ALARM_INTERRUPT_ENABLE | HOURS_24, NOW);
        for register in [HOURS_ALARM, MINUTES_ALARM, SECONDS_ALARM] {
            write(&mut rtc, register, 0, NOW);
        }
        write(&mut rtc, HOURS_ALARM, 0x08, NOW);
        write(&mut rtc, HOURS, 0x07, NOW);
        write(&mut rtc, MINUTES, 0x59, NOW);
        write(&mut rtc, SECONDS, 0x58, NOW);
        assert_eq!(rtc.next_event(), Some(update_end(SINCE_1970 + 2)));
    }

    #[test]
    fn a_tick_whose_event_an_access_has_passed_sets_no_flag_ahead_of_time() {
        // The timer was armed for the update's end at x+1.001984 s; a read of status A at
        // x+1.5 s (before the hypervisor's tick) caught the flags up, UF set and then read
        // away with C. The stale tick at x+1.6 s must not catch up to the *next* update's
        // end, still 0.4 s ahead: no UF before the seconds change.
        let mut rtc = Rtc::new(16 << 20);
        let timebase = Timebase {
            tsc: 1_000,
            nanos: nanos_of(NOW),
            tsc_hz: 1_000_000_000,
        };
        rtc.set_timebase(timebase);
        write(&mut rtc, STATUS_A, 0x20, NOW); // no periodic rate
        write(&mut rtc, STATUS_B, UPDATE_INTERRUPT_ENABLE | HOURS_24, NOW);
        let later = at(SINCE_1970 + 1);
        assert_eq!(read(&mut rtc, STATUS_C) & UPDATE_FLAG, 0);
        rtc.select(STATUS_C);
        assert_ne!(rtc.read(later) & UPDATE_FLAG, 0, "the access found UF");
        rtc.tick(1_000 + 1_100_000_000);
        assert_eq!(rtc.status_c(), 0, "nothing set ahead of time");
    }

    #[test]
    fn an_alarm_no_time_ever_matches_is_no_event_and_is_found_without_a_search() {
        // Seconds alarm 0x60 (no BCD second reads that), minutes and hours "don't care": no
        // alarm ever. It is told from the registers alone; searching every second of two
        // days for it took 172,800 compares at every write the hypervisor watches.
        let mut rtc = Rtc::new(16 << 20);
        rtc.set_timebase(Timebase {
            tsc: 1_000,
            nanos: nanos_of(NOW),
            tsc_hz: 2_000_000_000,
        });
        for (register, value) in [
            (SECONDS_ALARM, 0x60),
            (MINUTES_ALARM, 0xff),
            (HOURS_ALARM, 0xff),
        ] {
            write(&mut rtc, register, value, NOW);
        }
        write(&mut rtc, STATUS_B, ALARM_INTERRUPT_ENABLE | HOURS_24, NOW);
        assert_eq!(rtc.next_alarm(SINCE_1970), None);
        assert_eq!(rtc.next_event(), None);
        // 0x59 matches once a minute.
        write(&mut rtc, SECONDS_ALARM, 0x59, NOW);
        assert_eq!(rtc.next_alarm(SINCE_1970), Some(SINCE_1970 - 45 + 59));
    }

    #[test]
    fn the_next_event_is_the_earliest_enabled_one_and_the_tick_sets_its_flag() {
        // 1024 Hz (0x26, as a BIOS leaves it), at x.5 s: the next tick is 32 cycles on,
        // 976562.5 ns, placed at the next whole ns.
        let mut rtc = Rtc::new(16 << 20);
        rtc.set_timebase(Timebase {
            tsc: 1_000,
            nanos: nanos_of(NOW),
            tsc_hz: 2_000_000_000,
        });
        write(
            &mut rtc,
            STATUS_B,
            UPDATE_INTERRUPT_ENABLE | PERIODIC_INTERRUPT_ENABLE | HOURS_24,
            NOW,
        );
        let first = nanos_of(NOW) + 976_563;
        assert_eq!(rtc.next_event(), Some(first));
        assert_eq!(rtc.deadline(), Some(1_000 + 2 * 976_563), "at 2 GHz");
        assert_eq!(
            rtc.shortest_interval_nanos(),
            Some(976_562),
            "the periodic rate"
        );
        assert_eq!(rtc.enabled_events(), "periodic at 1024 Hz, update-ended");
        // Its timer is due at the deadline: the tick sets PF.
        rtc.tick(1_000 + 2 * 976_563);
        assert_eq!(rtc.status_c(), INTERRUPT_REQUEST | PERIODIC_FLAG);
        assert_eq!(rtc.next_event(), Some(nanos_of(NOW) + 1_953_125));
        // Without PIE, the update's end is next; without UIE either, nothing.
        write(&mut rtc, STATUS_B, UPDATE_INTERRUPT_ENABLE | HOURS_24, NOW);
        assert_eq!(
            rtc.next_event(),
            Some((SINCE_1970 + 1) * NANOS + UPDATE_CYCLE_NS as u64)
        );
        write(&mut rtc, STATUS_B, HOURS_24, NOW);
        assert_eq!((rtc.next_event(), rtc.deadline()), (None, None));
    }

    #[test]
    fn clearing_set_in_an_update_cycle_sets_no_flag_for_the_update_set_inhibited() {
        // MC146818 datasheet, register B: while SET is 1 the update cycle is inhibited, so
        // the second's edge SET was on at brings no update, no UF, no alarm check. Cleared
        // 1 ms after that edge (inside what would have been its 1984 µs update cycle), or
        // just at an edge, the clock runs on from then: the next update is the next second's.
        // Alarm "don't care" everywhere: every update matches it. (RS = 0: no periodic flag.)
        let mut rtc = Rtc::new(16 << 20);
        write(&mut rtc, STATUS_A, 0x20, NOW);
        for register in [SECONDS_ALARM, MINUTES_ALARM, HOURS_ALARM] {
            write(&mut rtc, register, 0xff, NOW);
        }
        let enables = ALARM_INTERRUPT_ENABLE | UPDATE_INTERRUPT_ENABLE | HOURS_24;
        write(&mut rtc, STATUS_B, SET | enables, NOW);
        write(
            &mut rtc,
            STATUS_B,
            enables,
            moment(SINCE_1970 + 1, 1_000_000),
        );
        let update_end = |second: u64| second * NANOS + UPDATE_CYCLE_NS as u64;
        assert_eq!(
            rtc.next_event(),
            Some(update_end(SINCE_1970 + 2)),
            "the next second's update, not the one SET inhibited"
        );
        rtc.select(STATUS_A);
        assert_eq!(
            rtc.read(moment(SINCE_1970 + 1, 1_500_000)),
            0x20,
            "no update in progress: it was inhibited"
        );
        assert_eq!(
            status_c(&mut rtc, moment(SINCE_1970 + 1, 500_000_000)),
            0,
            "no UF, no AF for the inhibited update"
        );
        assert_eq!(
            status_c(&mut rtc, moment(SINCE_1970 + 2, 500_000_000)),
            INTERRUPT_REQUEST | ALARM_FLAG | UPDATE_FLAG,
            "the next one's"
        );
        // Cleared at the very edge: SET was on at it, so its update is inhibited too.
        write(
            &mut rtc,
            STATUS_B,
            SET | enables,
            moment(SINCE_1970 + 2, 700_000_000),
        );
        write(&mut rtc, STATUS_B, enables, moment(SINCE_1970 + 3, 0));
        assert_eq!(rtc.next_event(), Some(update_end(SINCE_1970 + 4)));
        assert_eq!(status_c(&mut rtc, moment(SINCE_1970 + 3, 500_000_000)), 0);
        assert_eq!(
            status_c(&mut rtc, moment(SINCE_1970 + 4, 500_000_000)),
            INTERRUPT_REQUEST | ALARM_FLAG | UPDATE_FLAG
        );
    }
}
