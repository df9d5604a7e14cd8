//! The devices the hypervisor emulates for a guest, and the bus that routes an access to
//! one: a port (`IN`/`OUT`, exit IOIO) or a guest-physical address the nested page tables
//! leave unmapped (MMIO, exit NPF).
//!
//! | where                      | device                          | file            |
//! |----------------------------|---------------------------------|-----------------|
//! | ports 0x3f8–0x3ff (COM1)   | the console: a 16550 UART       | `uart.rs`       |
//! | MMIO 0xFEB0_0000, 4 KiB    | the lab's device                | `lab_device.rs` |
//! | MMIO 0xFEC0_0000, 4 KiB    | the IO-APIC: 24 pins, the PIT on pin 2 | `ioapic.rs` |
//! | MMIO 0xFEE0_0000, 4 KiB    | the local APIC (xAPIC registers), its timer | `lapic.rs` |
//! | ports 0x1f0–0x1f7, 0x3f6   | the disk controller, when the lab has a disk: the real one, never emulated; its owner reaches it without an exit, everyone else as an empty port | `ata.rs` |
//! | ports 0xcf8–0xcff          | PCI configuration space, with the host bridge at 00:00.0 | `pci.rs` |
//! | ports 0x510, 0x511         | QEMU's fw_cfg, read-only, without DMA: what QEMU says of a 1-CPU machine with the domain's RAM | `fw_cfg.rs` |
//! | ports 0x20, 0x21, 0xa0, 0xa1 | the 8259A interrupt controllers, master and slave | `pic.rs` |
//! | ports 0x40–0x43, 0x61      | the 8254 PIT: channel 0 is the guest's timer (IRQ 0), channel 2 and its gate | `pit.rs` |
//! | ports 0x70, 0x71           | the real-time clock and CMOS memory (MC146818), the host's time; its periodic, alarm and update-ended interrupts on IRQ 8 | `rtc.rs` |
//! | ports 0x600–0x605, 0x608–0x60b | the ACPI power-management registers (PM1 status, enable, control; the PM timer), where QEMU's PIIX4 has them and the FADT says | `acpi_pm.rs` |
//! | port 0xf4                  | QEMU's isa-debug-exit: a write ends the domain with that status | `debug_exit.rs` |
//! | ports 0xe0–0xeb, 0x2000–0x2017; MMIO 0xFF00_0000, 64 KiB | QEMU's pc-testdev (kvm-unit-tests), only with the setting `pc-testdev`: a data register, "flush page", one interrupt line per IO-APIC pin, a memory window | `pc_testdev.rs` |
//! | any other port             | nothing: reads all ones, writes vanish, as on an empty ISA bus | |
//! | any other address above the domain's RAM | nothing: the same, "no device at …" in the trace (a CPU's access to a hole of a PC's memory map) | |
//!
//! Each access is done when a decision is applied (`apply.rs`): the device answers, and
//! says in words what it did for the trace.
//!
//! The PC's old ISA devices — the PICs, the PIT and port B, the RTC, the UART — have byte-wide
//! registers. A 16- or 32-bit IN or OUT that reaches them is split by the bus into byte
//! cycles at port, port + 1, …, the access's bytes in order, low first, each going to
//! whatever answers at its port (QEMU: those devices' `MemoryRegionOps` say
//! `impl.max_access_size = 1`, so its memory core splits the access the same way). The
//! other ports take the access whole, at their own widths: the ATA data port's 16 bits,
//! PCI configuration's 32, the PM timer's 32, fw_cfg's 16-bit selector, pc-testdev's and
//! isa-debug-exit's registers (each file says).

pub mod acpi_pm;
pub mod ata;
pub mod debug_exit;
pub mod fw_cfg;
pub mod ioapic;
pub mod lab_device;
pub mod lapic;
pub mod pc_testdev;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod rtc;
pub mod uart;

use crate::machine::Machine;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use lab_device::LabDevice;
use traplab_abi::boot::CONSOLE_PORT;
use traplab_abi::x86::operand_mask;
use uart::Uart;

/// One domain's devices.
#[derive(Default)]
pub struct Devices {
    /// The console UART (COM1).
    pub console: Uart,
    pub lab_device: LabDevice,
    /// PCI configuration mechanism #1 (ports 0xcf8–0xcff).
    pub pci: pci::Pci,
    /// QEMU's fw_cfg as the guest sees it (ports 0x510, 0x511).
    pub fw_cfg: fw_cfg::FwCfg,
    /// The real-time clock and CMOS memory (ports 0x70, 0x71).
    pub rtc: rtc::Rtc,
    /// The ACPI power-management registers (ports 0x600–0x60b).
    pub acpi_pm: acpi_pm::AcpiPm,
    /// The interrupt controllers and the interval timer.
    pub pic: pic::Pic,
    pub pit: pit::Pit,
    /// The CPU's local APIC, and the IO-APIC that routes the platform's interrupts to it.
    pub lapic: lapic::LocalApic,
    pub ioapic: ioapic::IoApic,
    /// Who owns the machine's disk controller (the same in every domain): it is not
    /// emulated, and reaches this bus only as a refused access (`ata.rs`).
    pub disk: ata::Assignment,
    /// QEMU's pc-testdev, when the setting `pc-testdev` asks for it (the loader).
    pub testdev: Option<pc_testdev::PcTestdev>,
    /// The level of each interrupt line (bit n: ISA IRQ n, or IO-APIC pin n from 16 on) as
    /// its source last drove it, to tell its edges (`set_line`).
    pub lines: u32,
}

/// COM1's interrupt is ISA IRQ 4.
pub const SERIAL_IRQ: u8 = 4;

/// Is `port` a register of a byte-wide ISA device: the PICs, the PIT and port B, the RTC,
/// COM1 (8259A, 82C54, MC146818 and PC16550D datasheets: an 8-bit data bus each)?
fn byte_wide(port: u16) -> bool {
    pic::Pic::claims(port)
        || pit::Pit::claims(port)
        || matches!(port, rtc::INDEX | rtc::DATA | 0x3f8..=0x3ff)
}

/// Is an IN or OUT of `size` bytes at `port` split into byte accesses: wider than a byte,
/// with a byte on a byte-wide device's port? On a PC the bus gives those devices byte cycles,
/// one a port (QEMU: `impl.max_access_size = 1`, and its memory core splits the access). The
/// other bytes of the access go to what is at their ports, as they would there: an empty
/// port's read all ones, a disk controller's too (`ata.rs`: never a device here).
fn splits(port: u16, size: u8) -> bool {
    size > 1 && (0..u16::from(size)).any(|index| byte_wide(port.wrapping_add(index)))
}

/// Which device makes one of the guest's timers, and the way its ticks go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerSource {
    /// The local APIC's timer: its interrupt is requested in the APIC (`lapic.rs`).
    LocalApic,
    /// PIT channel 0 through IRQ 0 of the master PIC.
    Pit,
    /// PIT channel 0 while IRQ 0 is masked at the PIC and nothing else takes it: its next
    /// edge is latched in the PIC's IRR, and presented when the kernel unmasks IRQ 0.
    PitMasked,
    /// PIT channel 0 through pin 2 of the IO-APIC, to the local APIC.
    PitThroughIoApic,
    /// The RTC's next periodic tick, update end or alarm with its enable on: its flag set,
    /// IRQ 8 following IRQF (`rtc.rs`).
    Rtc,
}

/// One of the guest's timers, as its device makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformTimer {
    pub vector: u8,
    pub countdown: pit::Countdown,
    pub source: TimerSource,
}

/// What the guest's device timers depend on (see [`Devices::timer_state`]): PIT channel 0's
/// part, the local APIC timer's (its LVT entry, count, divider, start, enable, stopped), and
/// the RTC's (the host's time of its next event with its enable on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerState {
    pub pit: PitTimerState,
    pub local_apic: (u32, u32, u32, (u64, u32), bool, bool),
    pub rtc: Option<u64>,
}

/// What PIT channel 0's timer depends on: how it counts, and where its ticks go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PitTimerState {
    mode: u8,
    reload: Option<u32>,
    loaded_at: Option<u64>,
    /// IRQ 0's vector at the PIC, presented or latched behind its mask.
    irq_0: Option<u8>,
    irq_0_masked: Option<u8>,
    /// Pin 2's vector at the IO-APIC, and whether the local APIC it goes to is enabled.
    pin_2: Option<u8>,
    local_apic_enabled: bool,
}

/// What a write did: its description (empty: nothing more to say than the access), and a
/// console line it completed.
pub struct Written {
    pub what: String,
    pub console: Option<String>,
}

impl Devices {
    /// The device at `port`, in words.
    pub fn port_name(&self, port: u16) -> &'static str {
        match port {
            0x3f8..=0x3ff => "console UART",
            debug_exit::PORT => "isa-debug-exit",
            0xcf8..=0xcff => "PCI configuration",
            fw_cfg::SELECTOR | fw_cfg::DATA => "fw_cfg",
            rtc::INDEX | rtc::DATA => "RTC and CMOS",
            port if acpi_pm::claims(port) => acpi_pm::name(port),
            port if pic::Pic::claims(port) => "8259A interrupt controller",
            pit::PORT_B => "port B: PIT channel 2's gate",
            port if pit::Pit::claims(port) => "8254 interval timer",
            port if self.disk.claims(port) => "ATA disk controller",
            port if self.testdev.is_some() && pc_testdev::claims(port) => pc_testdev::name(port),
            _ => "no device",
        }
    }

    /// Is there a device at guest-physical `gpa`?
    pub fn claims(&self, gpa: u64) -> bool {
        lab_device::contains(gpa)
            || lapic::contains(gpa)
            || ioapic::contains(gpa)
            || self.testdev_memory(gpa)
    }

    /// Is `gpa` in pc-testdev's memory window, and the device there?
    fn testdev_memory(&self, gpa: u64) -> bool {
        self.testdev.is_some() && pc_testdev::contains(gpa)
    }

    /// What answers at guest-physical `gpa` (not RAM), in words.
    pub fn mmio_name(&self, gpa: u64) -> &'static str {
        if self.testdev_memory(gpa) {
            "pc-testdev's memory window"
        } else if lab_device::contains(gpa) {
            "the lab device's MMIO window"
        } else if lapic::contains(gpa) {
            "the local APIC"
        } else if ioapic::contains(gpa) {
            "the IO-APIC"
        } else {
            "no device"
        }
    }

    /// IN of `size` bytes: the value. Nothing answers at the disk controller's ports
    /// either: an access that exits there is refused (`ata.rs`).
    /// The machine tells a device what only it knows: the time of day.
    ///
    /// A wider read that touches a byte-wide device is byte reads, port first, their bytes
    /// put together low first (`splits`).
    pub fn port_read(&mut self, port: u16, size: u8, machine: &dyn Machine) -> u32 {
        if splits(port, size) {
            let mut value = 0;
            for index in 0..size.min(4) {
                let byte = self.port_read(port.wrapping_add(index.into()), 1, machine);
                value |= (byte & 0xff) << (8 * index);
            }
            return value;
        }
        if let Some(testdev) = self.testdev.as_ref().filter(|_| pc_testdev::claims(port)) {
            return testdev.read(port, size);
        }
        // (A byte-wide device's port comes here with a byte only: `splits`.)
        match port {
            rtc::DATA => {
                self.rtc_timebase(machine);
                self.rtc.read(machine.wall_clock()) as u32
            }
            port if acpi_pm::claims(port) => {
                self.acpi_pm
                    .read(port, size, machine.now(), machine.tsc_hz())
            }
            port if pic::Pic::claims(port) => self.pic.read(port) as u32,
            port if pit::Pit::claims(port) => {
                self.pit.read(port, machine.now(), machine.tsc_hz()) as u32
            }
            0x3f8..=0x3ff => self.console.read(port - CONSOLE_PORT) as u32,
            0xcf8..=0xcff => self.pci.read(port, size),
            fw_cfg::DATA if size == 1 => self.fw_cfg.read_byte() as u32,
            _ => operand_mask(size) as u32,
        }
    }

    /// OUT of `size` bytes: a console line it completed, if any, and what the device did
    /// where the value decides it and the trace should say so (an ACPI register, the
    /// pc-testdev; empty elsewhere). Dropped anywhere but at the console, the PCI
    /// configuration address, the fw_cfg selector, the RTC, the PIC, the PIT, the ACPI
    /// registers and the pc-testdev, the disk controller's ports included.
    ///
    /// A wider write that touches a byte-wide device is byte writes, port first, the
    /// value's low byte first (`splits`).
    pub fn port_write(
        &mut self,
        port: u16,
        size: u8,
        value: u32,
        machine: &dyn Machine,
    ) -> Written {
        if splits(port, size) {
            let mut done = Written {
                what: String::new(),
                console: None,
            };
            for index in 0..size.min(4) {
                let at = port.wrapping_add(index.into());
                let byte = (value >> (8 * index)) & 0xff;
                let written = self.port_write(at, 1, byte, machine);
                if !written.what.is_empty() {
                    let separator = if done.what.is_empty() { "" } else { "; " };
                    done.what += &format!(
                        "{separator}byte {byte:#x} at port {at:#x}: {}",
                        written.what
                    );
                }
                // One access covers a port once, so only its byte at 0x3f8 (THR) can
                // complete a console line.
                done.console = done.console.or(written.console);
            }
            return done;
        }
        if let Some(testdev) = self.testdev.as_mut().filter(|_| pc_testdev::claims(port)) {
            let what = match testdev.write(port, size, value) {
                pc_testdev::Write::Done(what) => format!("pc-testdev: {what}"),
                pc_testdev::Write::Line { line, level } => {
                    self.set_line("pc-testdev", line, level).unwrap_or_else(|| {
                        let level = if level { "high" } else { "low" };
                        format!("pc-testdev: interrupt line {line} stays {level}: no edge, nothing requested")
                    })
                }
            };
            return Written {
                what,
                console: None,
            };
        }
        if acpi_pm::claims(port) {
            let what = self
                .acpi_pm
                .write(port, size, value, machine.now(), machine.tsc_hz());
            return Written {
                what,
                console: None,
            };
        }
        // (A byte-wide device's port comes here with a byte only: `splits`.)
        let console = match (port, size) {
            (rtc::INDEX, _) => {
                self.rtc.select(value as u8);
                None
            }
            (rtc::DATA, _) => {
                self.rtc_timebase(machine);
                self.rtc.write(value as u8, machine.wall_clock());
                None
            }
            (port, _) if pic::Pic::claims(port) => {
                return Written {
                    what: self.pic.write(port, value as u8),
                    console: None,
                };
            }
            (port, _) if pit::Pit::claims(port) => {
                self.pit
                    .write(port, value as u8, machine.now(), machine.tsc_hz());
                None
            }
            (0x3f8..=0x3ff, _) => self.console.write(port - CONSOLE_PORT, value as u8),
            (0xcf8..=0xcff, _) => {
                self.pci.write(port, size, value);
                None
            }
            (fw_cfg::SELECTOR, 2) => {
                self.fw_cfg.select(value as u16);
                None
            }
            _ => None,
        };
        Written {
            what: String::new(),
            console,
        }
    }

    /// How the trace says an IN went.
    pub fn describe_in(&self, port: u16, value: u32) -> String {
        format!(
            "IN {value:#x} from port {port:#x} ({})",
            self.describe_port(port, true)
        )
    }

    /// The RTC learns where the TSC and the host's time are now (`rtc::Timebase`).
    fn rtc_timebase(&mut self, machine: &dyn Machine) {
        self.rtc.set_timebase(rtc::Timebase {
            tsc: machine.now(),
            nanos: rtc::nanos_of(machine.wall_clock()),
            tsc_hz: machine.tsc_hz(),
        });
    }

    /// The RTC's timer: once, at its next event with its enable on (`rtc.rs`,
    /// [`rtc::Rtc::next_event`]); its tick sets the flag and IRQ 8 follows IRQF
    /// ([`Devices::rtc_tick`]), and the next event arms it again. Its vector, for the trace,
    /// is IRQ 8's at the slave 8259A, or else at the IO-APIC's pin 8 (0: neither); where the
    /// edge goes, `set_line` says. `None`: no event with its enable on.
    pub fn rtc_timer(&self) -> Option<PlatformTimer> {
        let due_tsc = self.rtc.deadline()?;
        let vector = self.pic.irq_vector(rtc::IRQ);
        let vector = vector.or_else(|| self.ioapic_vector(ioapic::isa_pin(rtc::IRQ)));
        Some(PlatformTimer {
            vector: vector.unwrap_or(0),
            countdown: pit::Countdown {
                period_tsc: None,
                due_tsc,
            },
            source: TimerSource::Rtc,
        })
    }

    /// The RTC's timer is due at TSC `now`: its flags come up to date (`Rtc::tick`), and
    /// IRQ 8 follows IRQF. What happened, in words.
    pub fn rtc_tick(&mut self, now: u64) -> String {
        let before = self.rtc.status_c();
        self.rtc.tick(now);
        let after = self.rtc.status_c();
        let names = [(0x40, "PF"), (0x20, "AF"), (0x10, "UF")];
        let set: Vec<&str> = names
            .iter()
            .filter(|(bit, _)| after & !before & bit != 0)
            .map(|(_, name)| *name)
            .collect();
        let flags = match set.is_empty() {
            true => "no new flag (each was set already)".into(),
            false => format!("status C's {} set", set.join(", ")),
        };
        match self.follow_rtc_interrupt() {
            Some(line) => format!("RTC: {flags}; {line}"),
            None if after & 0x80 != 0 => {
                format!("RTC: {flags}; IRQ 8 stays high (status C not read since it rose)")
            }
            None => format!("RTC: {flags}"),
        }
    }

    /// After the RTC changed (an access, a tick of its timer): follow its interrupt line,
    /// IRQ 8, which is IRQF (`set_line`).
    pub fn follow_rtc_interrupt(&mut self) -> Option<String> {
        let level = self.rtc.interrupt_line();
        self.set_line("the RTC", rtc::IRQ, level)
    }

    /// The local APIC's timer as it counts now, at its LVT entry's vector; `None` while it
    /// is masked, stopped or has fired its one shot.
    pub fn local_apic_timer(&self, now: u64, tsc_hz: u64) -> Option<PlatformTimer> {
        let (vector, countdown) = self.lapic.timer(now, tsc_hz)?;
        Some(PlatformTimer {
            vector,
            countdown,
            source: TimerSource::LocalApic,
        })
    }

    /// PIT channel 0's timer: its countdown, at the vector the master PIC gives IRQ 0 while
    /// IRQ 0 is unmasked there, or else at the vector of the IO-APIC's pin 2 while that is
    /// unmasked and the local APIC it goes to is enabled, or else its next edge only, latched
    /// behind IRQ 0's mask. `None`: no interrupt comes of it. It counts whatever the local
    /// APIC's timer does (`domain/interrupts.rs`, `Timers`).
    pub fn pit_timer(&self, now: u64, tsc_hz: u64) -> Option<PlatformTimer> {
        let countdown = self.pit.countdown(now, tsc_hz)?;
        let pic = self.pic.timer_vector();
        let (vector, source) = match (pic, self.ioapic_vector(ioapic::PIT_PIN)) {
            (Some(vector), _) => (vector, TimerSource::Pit),
            (None, Some(vector)) if self.lapic.software_enabled() => {
                (vector, TimerSource::PitThroughIoApic)
            }
            _ => (self.pic.latches_masked_irq_0()?, TimerSource::PitMasked),
        };
        Some(PlatformTimer {
            vector,
            countdown: match source {
                // The next edge only: after it, IRR holds a request and more change nothing
                // until the kernel unmasks IRQ 0 (a Linux handler masks it while it runs).
                TimerSource::PitMasked => pit::Countdown {
                    period_tsc: None,
                    ..countdown
                },
                _ => countdown,
            },
            source,
        })
    }

    /// What the device timers depend on. PIT channel 0's: its mode, count and start, the
    /// vector of IRQ 0 (presented, or latched behind its mask), the IO-APIC's pin 2, and
    /// whether the local APIC that pin goes to is enabled. The APIC timer's: its LVT entry,
    /// count, divider, start, enable and whether it stopped at 0. A write that changes a part
    /// (re)programs that timer (`apply.rs`); one that only latches or reads a count does not.
    pub fn timer_state(&self) -> TimerState {
        let channel = &self.pit.channels[0];
        TimerState {
            pit: PitTimerState {
                mode: channel.mode,
                reload: channel.reload,
                loaded_at: channel.loaded_at,
                irq_0: self.pic.timer_vector(),
                irq_0_masked: self.pic.latches_masked_irq_0(),
                pin_2: self.ioapic_vector(ioapic::PIT_PIN),
                local_apic_enabled: self.lapic.software_enabled(),
            },
            local_apic: self.lapic.timer_state(),
            rtc: self.rtc.next_event(),
        }
    }

    /// After COM1 changed (a port access, input from the host): follow its interrupt
    /// line, IRQ 4 (`set_line`).
    pub fn follow_serial_interrupt(&mut self) -> Option<String> {
        let level = self.console.interrupt_line();
        self.set_line("COM1", SERIAL_IRQ, level)
    }

    /// A tick of the guest's timer through the local APIC (its own timer, or the PIT's
    /// through the IO-APIC): `vector` requested in its IRR. What it did, in words.
    pub fn local_apic_tick(&mut self, vector: u8) -> String {
        self.lapic.request(vector);
        format!("local APIC: interrupt {vector:#x} requested (IRR)")
    }

    /// PIT channel 0's output pulses once, a tick of the guest's timer while it goes through
    /// the 8259A ([`TimerSource::Pit`], [`TimerSource::PitMasked`]): IRQ 0 rises and falls,
    /// and the edge is latched in the master's IRR. (Only there: the route the hypervisor
    /// chose for the timer. On a PC the edge reaches IO-APIC pin 2 too, but the PIC's output
    /// reaches the CPU only through the local APIC's LINT0, which this model does not
    /// have; with both open, a guest would get every tick twice.) What came of it, in words.
    pub fn pit_tick(&mut self) -> String {
        let before = self.pic.master;
        self.pic.raise_irq_0();
        let bit = 1 << pit::IRQ;
        let what = match self.pic.timer_vector() {
            _ if before.requests & bit != 0 => {
                "it was requested already and not yet taken: the two ticks are one (IRR holds one request an IRQ)"
            }
            _ if before.in_service & bit != 0 => {
                "IRQ 0 is still in service (no EOI since the last tick): the request waits in IRR"
            }
            // IRQ 0 is the highest priority: requested, unmasked and not in service, it is
            // the one the master presents.
            Some(_) => "the PIC presents it to the CPU",
            None => "IRQ 0 is masked: the request waits in IRR until the kernel unmasks it",
        };
        format!("PIT channel 0 raises IRQ 0, latched in the PIC's IRR: {what}")
    }

    /// `source` (a device, named for the trace) drives interrupt line `line` to `level`.
    /// Lines 0–15 are the ISA IRQs, wired as a PC wires them: IRQ n to the 8259A pair's
    /// IRQ n and to the IO-APIC's pin n (IRQ 0 to pin 2: `ioapic::isa_pin`); lines 16–23
    /// reach only the IO-APIC, at the pins of those numbers (the PICs have 16 inputs). A
    /// rising edge requests the interrupt at each: in the PIC's IRR; at an unmasked
    /// IO-APIC pin, as a message to the local APIC's IRR (at a pin programmed active low,
    /// the falling edge does).
    ///
    /// An edge open at both the PIC and the IO-APIC is requested at both, and the guest gets
    /// it twice: the PIC's output reaches a PC's CPU only through the local APIC's LINT0,
    /// which a kernel in IO-APIC mode masks, and this model has no LINT0 (the PIT's tick
    /// takes one route only: [`Devices::pit_tick`]).
    ///
    /// Every line is taken as edges. The IO-APIC's level-triggered entries (trigger mode
    /// 1, whose remote IRR holds the pin until the local APIC's EOI and requests again if
    /// the line is still high) are not modeled (`ioapic.rs`): a line held high requests
    /// once. What happened, in words, when the line changed; `None` when it did not.
    pub fn set_line(&mut self, source: &str, line: u8, level: bool) -> Option<String> {
        let bit = 1u32.checked_shl(line.into()).unwrap_or(0);
        if bit == 0 || (self.lines & bit != 0) == level {
            return None;
        }
        self.lines ^= bit;
        let isa = line < 16;
        if isa {
            self.pic.set_irq(line, level);
        }
        let name = if isa {
            format!("IRQ {line}")
        } else {
            format!("IO-APIC pin {line}")
        };
        // The IO-APIC's edge: the rising one, or the falling one on a pin programmed active
        // low (the PICs' ISA inputs are active high).
        let pin = ioapic::isa_pin(line);
        let active_low = self.ioapic.active_low(pin);
        let asserted = level != active_low;
        let vector = self.ioapic_vector(pin).filter(|_| asserted);
        if let Some(vector) = vector {
            self.lapic.request(vector);
        }
        let low = if active_low {
            " (active low there)"
        } else {
            ""
        };
        let verb = if level { "raises" } else { "lowers" };
        Some(match (level, isa, vector) {
            (true, true, Some(vector)) => format!(
                "{source} raises {name}: requested at the PIC, and through IO-APIC pin {pin} at the local APIC (vector {vector:#x})"
            ),
            (true, true, None) if !active_low => {
                format!("{source} raises {name}: requested at the PIC")
            }
            (true, true, None) => format!(
                "{source} raises {name}: requested at the PIC; IO-APIC pin {pin} is active low, so this is its release"
            ),
            (false, true, Some(vector)) => format!(
                "{source} lowers {name}: through IO-APIC pin {pin}, active low, requested at the local APIC (vector {vector:#x})"
            ),
            (_, false, Some(vector)) => format!(
                "{source} {verb} {name}{low}: requested at the local APIC (vector {vector:#x})"
            ),
            (_, false, None) if asserted => format!(
                "{source} {verb} {name}{low}: masked there (or not a fixed interrupt), nothing requested"
            ),
            (true, false, None) => {
                format!("{source} raises {name}{low}: its release, nothing requested")
            }
            (false, _, None) => format!("{source}'s interrupt line ({name}) drops{low}"),
        })
    }

    /// The vector an edge on IO-APIC `pin` requests in the local APIC: the pin's message,
    /// if it addresses this CPU's APIC.
    pub fn ioapic_vector(&self, pin: usize) -> Option<u8> {
        let message = self.ioapic.message(pin)?;
        self.lapic
            .addressed(message.logical, message.destination)
            .then_some(message.vector)
    }

    /// Bytes from the host's keyboard for COM1; what its interrupt line did.
    pub fn serial_input(&mut self, bytes: &[u8]) -> Option<String> {
        self.console.receive(bytes);
        self.follow_serial_interrupt()
    }

    /// The device at `port` for an IN (`input`) or an OUT, in words: its name, and for the
    /// PCI configuration ports which function and register the access reaches.
    pub fn describe_port(&self, port: u16, input: bool) -> String {
        match port {
            0xcf8..=0xcff => self.pci.describe(port, input),
            fw_cfg::DATA => format!("fw_cfg data: item {}", self.fw_cfg.item()),
            rtc::DATA => self.rtc.describe(),
            // A read is explained here; what a write did, the write says (`port_write`).
            port if input && acpi_pm::claims(port) => acpi_pm::describe(port),
            port if self.testdev.is_some() && pc_testdev::claims(port) => {
                pc_testdev::describe(port)
            }
            _ => self.port_name(port).into(),
        }
    }

    /// A read of `width` bytes at guest-physical `gpa`: the value, and what happened. Where
    /// no device is, nothing drives the bus: all ones, as a PC reads an unused address.
    pub fn mmio_read(&mut self, gpa: u64, width: u8, machine: &dyn Machine) -> (u64, String) {
        if let Some(testdev) = self.testdev.as_ref().filter(|_| pc_testdev::contains(gpa)) {
            let (value, what) = testdev.iomem_read(gpa - pc_testdev::IOMEM_BASE, width);
            return (value, format!("pc-testdev: {what}"));
        }
        if lapic::contains(gpa) {
            let offset = gpa - lapic::BASE;
            let (register, name) = self
                .lapic
                .read(offset & !3, machine.now(), machine.tsc_hz());
            // A narrower read takes its bytes of the 32-bit register.
            let value = (register as u64 >> (8 * (offset & 3))) & operand_mask(width);
            return (value, format!("local APIC: read {name} = {value:#x}"));
        }
        if ioapic::contains(gpa) {
            let offset = gpa - ioapic::BASE;
            let (register, what) = self.ioapic.read(offset & !3);
            let value = (register as u64 >> (8 * (offset & 3))) & operand_mask(width);
            return (value, format!("IO-APIC: {what}"));
        }
        if !lab_device::contains(gpa) {
            let value = operand_mask(width);
            return (
                value,
                format!("no device at {gpa:#x}: the read returns all ones ({value:#x})"),
            );
        }
        let (value, what) = self.lab_device.read(gpa - lab_device::BASE, width);
        (value, format!("lab device: {what}"))
    }

    /// A write of `width` bytes at guest-physical `gpa`; where no device is, it is lost.
    pub fn mmio_write(
        &mut self,
        gpa: u64,
        width: u8,
        value: u64,
        machine: &dyn Machine,
    ) -> Written {
        // Only `width` bytes travel on the bus.
        let value = value & operand_mask(width);
        if let Some(testdev) = self.testdev.as_mut().filter(|_| pc_testdev::contains(gpa)) {
            let what = testdev.iomem_write(gpa - pc_testdev::IOMEM_BASE, width, value);
            return Written {
                what: format!("pc-testdev: {what}"),
                console: None,
            };
        }
        if lapic::contains(gpa) {
            let offset = gpa - lapic::BASE;
            let what = match (width, offset & 0xf) {
                (4, 0) => self
                    .lapic
                    .write(offset, value as u32, machine.now(), machine.tsc_hz()),
                // The APIC's registers take aligned 32-bit writes (Intel SDM vol. 3A,
                // 11.4.1: each sits in the low 4 bytes of a 16-byte slot, the other 12 are
                // reserved), so anything else is dropped. QEMU's `apic_mem_write` drops
                // only the writes narrower than 4 bytes and finds the register by
                // `addr >> 4`: there a 4-byte write at 0x84 reaches the TPR at 0x80.
                _ => format!(
                    "a {width}-byte write at offset {offset:#x}: the APIC takes only aligned 32-bit writes, so it is dropped"
                ),
            };
            return Written {
                what: format!("local APIC: {what}"),
                console: None,
            };
        }
        if ioapic::contains(gpa) {
            let offset = gpa - ioapic::BASE;
            let what = match (width, offset & 3) {
                (4, 0) => self.ioapic.write(offset, value as u32),
                // Its windows take 32-bit accesses (82093AA datasheet, 3.0).
                _ => format!(
                    "a {width}-byte write at offset {offset:#x}: the IO-APIC takes only aligned 32-bit writes, so it is dropped"
                ),
            };
            return Written {
                what: format!("IO-APIC: {what}"),
                console: None,
            };
        }
        if !lab_device::contains(gpa) {
            return Written {
                what: format!("no device at {gpa:#x}: the write of {value:#x} goes nowhere"),
                console: None,
            };
        }
        let (what, console) = self.lab_device.write(gpa - lab_device::BASE, width, value);
        Written {
            what: format!("lab device: {what}"),
            console,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeMachine;

    /// Both PICs initialised as a PC kernel does, a byte at a time: vectors 0x20 and 0x28,
    /// the slave on IR2, 8086 mode.
    fn initialised(devices: &mut Devices, machine: &FakeMachine) {
        for (port, value) in crate::testing::PICS_INITIALISED {
            devices.port_write(port, 1, value.into(), machine);
        }
    }

    #[test]
    fn a_word_out_to_a_byte_wide_device_is_two_byte_writes_low_byte_first() {
        // 0xfb0b at 0x20: 0x0b to the command port (OCW3: read ISR), 0xfb to the data port
        // (OCW1: the mask), as the bus splits it.
        let machine = FakeMachine::default();
        let mut devices = Devices::default();
        initialised(&mut devices, &machine);
        let written = devices.port_write(0x20, 2, 0xfb0b, &machine);
        assert_eq!(devices.pic.master.mask, 0xfb);
        assert_eq!(
            written.what,
            "byte 0xb at port 0x20: OCW3: which register a read returns; byte 0xfb at port 0x21: OCW1: the interrupt mask"
        );
        // A word IN: ISR (nothing in service) from 0x20, the mask from 0x21.
        assert_eq!(devices.port_read(0x20, 2, &machine), 0xfb00);
    }

    #[test]
    fn the_local_apic_drops_a_write_that_is_not_an_aligned_dword() {
        // Intel SDM vol. 3A, 11.4.1: bytes 4–15 of a register's slot are reserved. A 4-byte
        // write at 0x84 does not reach the TPR at 0x80 (in QEMU it would), nor does a
        // narrower one at 0x80; an aligned dword does.
        let machine = FakeMachine::default();
        let mut devices = Devices::default();
        let tpr = lapic::BASE + 0x80;
        let tpr_now = |devices: &mut Devices| devices.mmio_read(tpr, 4, &machine).0;
        let written = devices.mmio_write(tpr + 4, 4, 0x20, &machine);
        assert!(
            written.what.contains("so it is dropped"),
            "{}",
            written.what
        );
        assert_eq!(tpr_now(&mut devices), 0);
        devices.mmio_write(tpr, 2, 0x20, &machine);
        assert_eq!(tpr_now(&mut devices), 0);
        devices.mmio_write(tpr, 4, 0x20, &machine);
        assert_eq!(tpr_now(&mut devices), 0x20);
    }

    #[test]
    fn wide_accesses_reach_each_byte_s_port_and_other_devices_keep_their_widths() {
        let machine = FakeMachine::default();
        let mut devices = Devices::default();
        // The RTC: a word at 0x70 selects CMOS byte 0x40 and writes 0xab there; 0x70 itself
        // reads all ones.
        devices.port_write(rtc::INDEX, 2, 0xab40, &machine);
        assert_eq!(devices.port_read(rtc::DATA, 1, &machine), 0xab);
        assert_eq!(devices.port_read(rtc::INDEX, 2, &machine), 0xabff);
        // COM1: a word at 0x3f8 is a byte to THR and one to IER; a dword at 0x3fe reads MSR,
        // the scratch register, and two empty ports past the UART.
        let written = devices.port_write(0x3f8, 2, 0x0241, &machine);
        assert_eq!(written.console, None);
        assert_eq!(devices.port_read(0x3f9, 1, &machine), 0x02, "IER");
        assert_eq!(devices.console.flush().as_deref(), Some("A"));
        devices.port_write(0x3ff, 1, 0x5a, &machine);
        assert_eq!(devices.port_read(0x3fe, 4, &machine), 0xffff_5ab0);
        let written = devices.port_write(0x3f8, 2, 0x000a, &machine);
        assert_eq!(written.console.as_deref(), Some(""), "the newline's line");
        // The PIT: a word at 0x42 is channel 2's count, then the control port's byte.
        devices.port_write(pit::CONTROL, 1, 0xb0, &machine); // channel 2, mode 0
        devices.port_write(pit::CHANNEL_2, 1, 0x34, &machine);
        assert_eq!(devices.pit.channels[2].reload, None, "half the count");
        devices.port_write(pit::CHANNEL_2, 2, 0xff12, &machine);
        assert_eq!(devices.pit.channels[2].reload, Some(0x1234));
        // Not split: PCI configuration's 32-bit address, the PM timer, fw_cfg's selector.
        devices.port_write(0xcf8, 4, 0x8000_0000, &machine);
        assert_eq!(devices.port_read(0xcf8, 4, &machine), 0x8000_0000);
        let timer = acpi_pm::timer(machine.now(), machine.tsc_hz());
        assert_eq!(devices.port_read(acpi_pm::PM_TIMER, 4, &machine), timer);
        devices.port_write(fw_cfg::SELECTOR, 2, 0x0001, &machine);
        assert_eq!(devices.fw_cfg.item(), "ID");
    }
}
