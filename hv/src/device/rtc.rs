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
//! | 0x0a     | status A: bits 6:0, the divider (DV2–0) and rate (RS3–0), read/write, 0x26 as a BIOS leaves them (32.768 kHz, 1024 Hz), kept and acting on nothing; bit 7, UIP, read-only, from 244 µs before each second's edge to the end of the update cycle, 1984 µs after it |
//! | 0x0b     | status B: bit 7 SET (the clock stops while the kernel writes the time), bit 2 binary (else BCD), bit 1 24-hour (else 12-hour with bit 7 for PM) |
//! | 0x0c, 0x0d | status C: no interrupt flags; status D: 0x80, "the time is valid" |
//! | 0x0e–0x7f | CMOS memory; 0x15/0x16 base memory (640 KiB), 0x17/0x18 and 0x30/0x31 memory above 1 MiB in KiB (at most 65535), 0x34/0x35 memory above 16 MiB in 64 KiB units, as a PC BIOS (and QEMU) fills them |
//!
//! The time is the host's: the hypervisor reads the real RTC once when it starts and moves
//! it on with the TSC (`Machine::wall_clock`). A guest that sets the clock moves only its own
//! (an offset). A kernel sets it as the MC146818 datasheet says, with SET in status B: the
//! clock stops, the registers keep what is written one by one (a date that does not exist
//! yet, day 31 before the month becomes March, included), and the clock starts again from
//! them when SET is cleared. A time register written without SET moves the clock at once.
//! No interrupts (IRQ 8): the periodic, alarm and update interrupts are not modelled. Nor is
//! status A's divider: whatever DV2–0 say the clock runs on the host's time, a divider held
//! in reset (DV = 11x, which stops the MC146818's updates until it is released; QEMU's RTC
//! stops its clock there) included, and RS3–0 have no periodic interrupt to set the rate of.

use crate::machine::WallTime;
use alloc::format;
use alloc::string::String;

/// The index and data ports.
pub const INDEX: u16 = 0x70;
pub const DATA: u16 = 0x71;
/// Its interrupt line on a PC: ISA IRQ 8 (the ACPI tables name it; nothing raises it here).
pub const IRQ: u8 = 8;

const SECONDS: u8 = 0x00;
const MINUTES: u8 = 0x02;
const HOURS: u8 = 0x04;
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

/// Status B bits.
const SET: u8 = 1 << 7;
/// The update-ended interrupt's enable, which SET clears (MC146818 datasheet, register B:
/// "UIE is cleared to 0 when SET is written to 1").
const UPDATE_INTERRUPT_ENABLE: u8 = 1 << 4;
const BINARY: u8 = 1 << 2;
const HOURS_24: u8 = 1 << 1;

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
            memory,
        }
    }

    /// An OUT of `value` to 0x70: select a register (bit 7, the NMI mask, aside).
    pub fn select(&mut self, value: u8) {
        self.index = value & 0x7f;
    }

    /// An IN from 0x71: the selected register, at `now` (the host's time of day).
    pub fn read(&self, now: WallTime) -> u8 {
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
            STATUS_C => 0,
            STATUS_D => 0x80,
            index => self.memory[index as usize],
        }
    }

    /// An OUT of `value` to 0x71: set the selected register. A time register moves the
    /// guest's clock so that the field reads `value`; status B changes how values read.
    pub fn write(&mut self, value: u8, now: WallTime) {
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
                        self.run_from(stopped, now);
                        self.stopped = None;
                    }
                    _ => {}
                }
                self.status_b = match value & SET {
                    0 => value,
                    _ => value & !UPDATE_INTERRUPT_ENABLE,
                };
                return;
            }
            // Kept and read back; UIP is the clock's to say.
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
    /// update cycle after it; never while SET stops the clock. (Kernels wait for its fall to
    /// read the time just after an update, Xen to find a second's edge.)
    fn update_in_progress(&self, now: WallTime) -> u8 {
        let updating = now.nanos >= 1_000_000_000 - UIP_BEFORE_NS || now.nanos < UPDATE_CYCLE_NS;
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
            // The alarm registers, kept as written (no alarm interrupt is raised).
            0x01 => "seconds alarm",
            MINUTES => "minutes",
            0x03 => "minutes alarm",
            HOURS => "hours",
            0x05 => "hours alarm",
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
}
