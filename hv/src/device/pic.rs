//! The PC's two 8259A programmable interrupt controllers, master (ports 0x20, 0x21) and
//! slave (0xa0, 0xa1), cascaded on the master's IRQ 2 (Intel 8259A datasheet).
//!
//! A kernel *initialises* each with four words: ICW1 on the command port (bit 4 set: "start
//! over"; bit 0: an ICW4 follows), then on the data port ICW2, the vector of its IRQ 0 (a PC
//! kernel moves the master to 0x20 and the slave to 0x28, away from the CPU's exceptions),
//! ICW3 (the cascade wiring) and ICW4 (bit 0: 8086 mode). After that, a write to the data
//! port is OCW1, the *interrupt mask* (a set bit masks its IRQ); on the command port, OCW2
//! ends an interrupt (EOI: 0x20, or 0x60 + IRQ for a specific one) and OCW3 chooses what a
//! read of the command port returns (0x0a: the request register IRR, 0x0b: the in-service
//! register ISR; 0x0c: *poll*, the next read of either of the chip's ports takes the
//! highest-priority request as the CPU's INTA would and returns its number with bit 7 set,
//! or 0 when there is none).
//!
//! Every source is an IR line, the 8259A's way: a rising edge on the line sets its bit in
//! the *interrupt request register* (IRR); the chip presents the highest priority request
//! (IRQ 0 highest) that is unmasked and above every interrupt in service (fully nested
//! mode); when the CPU takes it (INTA, [`Pic::acknowledge`]) the bit moves from IRR to the
//! *in-service register* (ISR), and it stays there, holding back its own and lower
//! priorities, until the kernel's EOI. A second edge before the CPU took the first is the
//! same request (IRR has one bit a line). The slave's requests reach the CPU through the
//! master's IRQ 2 (the cascade): the slave's INT is a request on the master's IR2, in its
//! IRR while the slave has one to present. In the INTA cycle, a request on an input the
//! master's ICW3 names as a slave's (a PC kernel writes 0x04: IR2) is the slave's to answer:
//! "the master will enable the corresponding slave to release the device routine address"
//! (8259A datasheet, cascade mode). A slave with no request of its own answers IR7, the
//! level the 8259A gives when none is there, so a request on the master's IR2 itself comes
//! at the slave's vector base + 7, not the master's + 2 (QEMU's `pic_read_irq` does the
//! same). The lines on this platform:
//!
//! - **IRQ 0, the PIT's channel 0** (`pit.rs`): each tick of the guest's timer, while it
//!   goes through the PIC ([`Pic::timer_vector`]: the master initialised, IRQ 0 unmasked),
//!   is a pulse on the line (`Devices::pit_tick`). So a timer handler's non-specific EOI
//!   ends IRQ 0, and no other IRQ comes in the middle of it. While IRQ 0 is masked (a Linux
//!   handler masks it while it runs) the next edge is latched too
//!   ([`Pic::latches_masked_irq_0`]), and presented once the kernel unmasks IRQ 0.
//! - **IRQ 4, COM1's UART** (`uart.rs`), and any ISA line a device drives
//!   (`Devices::set_line`).
//!
//! ICW4's automatic EOI is kept: INTA then ends the interrupt at once. Not modelled: a chip's
//! spurious IR7 of its own (a request gone before INTA; here a request stays until taken), a
//! slave on any input but IR2 (ICW3 bits for others are kept, the inputs act as the master's
//! own) and the slave's ID check (its ICW3), rotation (a rotating EOI ends its interrupt, the
//! priorities stay fixed), special mask mode, level triggering.

use alloc::format;
use alloc::string::String;

/// The ports.
pub const MASTER_COMMAND: u16 = 0x20;
pub const MASTER_DATA: u16 = 0x21;
pub const SLAVE_COMMAND: u16 = 0xa0;
pub const SLAVE_DATA: u16 = 0xa1;
/// The master's input the slave's INT is wired to on a PC.
const CASCADE_IRQ: u8 = 2;
/// What an 8259A answers an INTA with when no request is there: "the 8259A will issue an
/// interrupt level 7" (8259A datasheet, the interrupt sequence).
const SPURIOUS_IRQ: u8 = 7;

/// One 8259A.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chip {
    /// The vector of its IRQ 0 (ICW2, bits 7:3), once initialised.
    pub vector_base: Option<u8>,
    /// OCW1: a set bit masks its IRQ.
    pub mask: u8,
    /// ISR: the interrupts taken and not yet ended by an EOI.
    pub in_service: u8,
    /// IRR: the interrupts requested and not yet taken.
    pub requests: u8,
    /// The IR lines' levels: a request is an edge, low to high.
    lines: u8,
    /// Which initialisation word comes next on the data port (2, 3 or 4), or 0: none.
    expecting: u8,
    /// ICW1 said an ICW4 follows.
    needs_icw4: bool,
    /// ICW1 said the chip is alone (SNGL): no ICW3 follows.
    single: bool,
    /// ICW3, the cascade wiring: on a master a set bit for each input with a slave on it (a
    /// PC's: 0x04, IR2); on a slave its ID, the master's input it is on (2). 0 until written.
    icw3: u8,
    /// OCW3: a read of the command port returns ISR (else IRR).
    read_in_service: bool,
    /// OCW3's poll command: the next read of either port of the chip is the poll word.
    poll: bool,
    /// ICW4's automatic EOI (bit 1): the CPU's INTA ends the interrupt at once, nothing
    /// stays in service and the kernel sends no EOI (Linux's and Xen's `init_8259A(1)`, when
    /// they try the timer through the PIC as a virtual wire).
    auto_eoi: bool,
}

impl Default for Chip {
    /// As after power-on: not initialised, every IRQ masked (what a BIOS leaves is its own
    /// business; a kernel initialises both chips before it unmasks anything).
    fn default() -> Chip {
        Chip {
            vector_base: None,
            mask: 0xff,
            in_service: 0,
            requests: 0,
            lines: 0,
            expecting: 0,
            needs_icw4: false,
            single: false,
            icw3: 0,
            read_in_service: false,
            poll: false,
            auto_eoi: false,
        }
    }
}

impl Chip {
    /// A write of the command port; `first_irq`: the number of this chip's IR0 (0 for the
    /// master, 8 for the slave), to name an IRQ as the kernel numbers them.
    fn write_command(&mut self, value: u8, first_irq: u8) -> String {
        if value & 0x10 != 0 {
            // ICW1: start the initialisation over (the mask is cleared and the edge-sense
            // circuit reset, 8259A datasheet; IRR and ISR cleared, as QEMU's
            // `pic_init_reset` does).
            *self = Chip {
                needs_icw4: value & 1 != 0,
                single: value & 2 != 0,
                expecting: 2,
                mask: 0,
                ..Chip::default()
            };
            return "ICW1: initialisation starts".into();
        }
        if value & 0x08 != 0 {
            // OCW3: bits 1:0 = 0b10 read IRR, 0b11 read ISR; bit 2, poll (for the next read
            // only, whatever bits 1:0 say).
            match value & 3 {
                2 => self.read_in_service = false,
                3 => self.read_in_service = true,
                _ => {}
            }
            if value & 0b100 != 0 {
                self.poll = true;
                return "OCW3: poll: the next read takes the highest-priority request".into();
            }
            return "OCW3: which register a read returns".into();
        }
        // OCW2: bits 7:5 are R (rotate), SL (specific: the IRQ in bits 2:0) and EOI. With
        // EOI set it ends an interrupt whatever R says: 001 non-specific EOI, 011 specific,
        // 101 and 111 the same with a rotation of priorities after it, which this model
        // does not make (priorities stay fixed, IRQ 0 highest).
        let (specific, what) = match value >> 5 {
            0b001 => (false, "OCW2: end of interrupt"),
            0b101 => (
                false,
                "OCW2: end of interrupt, then a rotation of priorities (not modelled)",
            ),
            0b011 => (true, "OCW2: specific end of interrupt"),
            0b111 => (
                true,
                "OCW2: specific end of interrupt, then a rotation of priorities (not modelled)",
            ),
            _ => return "OCW2: a priority command (not modelled)".into(),
        };
        // A specific EOI names its IRQ; the other ends the highest-priority IRQ in service
        // (the lowest number).
        let ended = match specific {
            true => 1 << (value & 7),
            false => self.in_service & self.in_service.wrapping_neg(),
        };
        let was_in_service = self.in_service & ended != 0;
        self.in_service &= !ended;
        match was_in_service {
            true => format!(
                "{what}: IRQ {} is no longer in service",
                first_irq + ended.trailing_zeros() as u8
            ),
            false => format!("{what}: no such IRQ was in service"),
        }
    }

    fn write_data(&mut self, value: u8) -> String {
        match self.expecting {
            2 => {
                self.vector_base = Some(value & 0xf8);
                self.expecting = match (self.single, self.needs_icw4) {
                    (false, _) => 3,
                    (true, true) => 4,
                    (true, false) => 0,
                };
                format!("ICW2: the vector of IRQ 0 is {:#x}", value & 0xf8)
            }
            3 => {
                self.icw3 = value;
                self.expecting = if self.needs_icw4 { 4 } else { 0 };
                "ICW3: the cascade".into()
            }
            4 => {
                self.expecting = 0;
                self.auto_eoi = value & 2 != 0;
                match self.auto_eoi {
                    true => "ICW4: the mode, with automatic EOI (INTA ends each interrupt)".into(),
                    false => "ICW4: the mode".into(),
                }
            }
            _ => {
                self.mask = value;
                "OCW1: the interrupt mask".into()
            }
        }
    }

    /// A read of the command port: ISR, or IRR; `cascade` is the slave's INT on this chip's
    /// IR2 (the master's), a request there like any other input's.
    fn read_command(&self, cascade: bool) -> u8 {
        if self.read_in_service {
            self.in_service
        } else {
            self.requests | cascade_bit(cascade)
        }
    }

    /// IR line `irq` goes to `level`: a rising edge requests the interrupt (edge-triggered
    /// mode, ICW1 bit 3 clear). A falling edge leaves the request, as QEMU's 8259 does.
    fn set_line(&mut self, irq: u8, level: bool) {
        let bit = 1 << irq;
        if level && self.lines & bit == 0 {
            self.requests |= bit;
        }
        if level {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
    }

    /// The IRQ this chip presents now: the highest priority (lowest number) one requested
    /// and unmasked, if it is above every interrupt in service (fully nested mode);
    /// `cascade` is the slave's output on this chip's IRQ 2.
    fn presented(&self, cascade: bool) -> Option<u8> {
        if self.vector_base.is_none() || self.expecting != 0 {
            return None;
        }
        let open = (self.requests | cascade_bit(cascade)) & !self.mask;
        if open == 0 {
            return None;
        }
        let irq = open.trailing_zeros() as u8;
        let in_service = self.in_service.trailing_zeros() as u8; // 8: none
        (irq < in_service).then_some(irq)
    }

    /// The CPU (INTA) or a poll takes `irq`: from requested to in service (with automatic
    /// EOI, ended at once).
    fn take(&mut self, irq: u8) {
        self.requests &= !(1 << irq);
        if !self.auto_eoi {
            self.in_service |= 1 << irq;
        }
    }

    /// Is a slave on input `irq`, to answer the INTA of its request (a master in cascade
    /// mode whose ICW3 has the input's bit)?
    fn has_slave_on(&self, irq: u8) -> bool {
        !self.single && self.icw3 & (1 << irq) != 0
    }

    fn vector(&self, irq: u8) -> Option<u8> {
        let base = self.vector_base.filter(|_| self.expecting == 0)?;
        (self.mask & (1 << irq) == 0).then_some(base + irq)
    }
}

/// The master's IRR bit the slave's INT sets: IR2, where a PC wires it.
fn cascade_bit(cascade: bool) -> u8 {
    u8::from(cascade) << CASCADE_IRQ
}

/// Which chip answers the INTA of the interrupt the pair presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// An IRQ of the master's own: the master gives its vector.
    Master(u8),
    /// A request on the master's cascade input: the slave gives the vector of its IRQ, or
    /// with none (`None`) of its spurious IR7.
    Slave(Option<u8>),
}

/// The pair.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pic {
    pub master: Chip,
    pub slave: Chip,
}

impl Pic {
    /// Does `port` belong to the pair?
    pub fn claims(port: u16) -> bool {
        matches!(
            port,
            MASTER_COMMAND | MASTER_DATA | SLAVE_COMMAND | SLAVE_DATA
        )
    }

    /// An OUT of a byte: what it was, in the 8259A's words.
    pub fn write(&mut self, port: u16, value: u8) -> String {
        match port {
            MASTER_COMMAND => self.master.write_command(value, 0),
            MASTER_DATA => self.master.write_data(value),
            SLAVE_COMMAND => self.slave.write_command(value, 8),
            _ => self.slave.write_data(value),
        }
    }

    /// An IN of a byte: the mask from a data port, IRR or ISR from a command port, or
    /// after OCW3's poll command the poll word.
    ///
    /// The poll is the next read of the chip whichever port it reads: "the next RD pulse
    /// to the 8259A is treated as an interrupt acknowledge" (8259A datasheet, Poll
    /// Command), and the RD pulse does not look at A0 (QEMU's `pic_ioport_read` too checks
    /// the poll before the address). A data-port read must take it, or the poll would stay
    /// armed and a later IRR or ISR read would acknowledge an interrupt no one asked for.
    pub fn read(&mut self, port: u16) -> u8 {
        match port {
            MASTER_COMMAND | MASTER_DATA if self.master.poll => self.poll(true),
            SLAVE_COMMAND | SLAVE_DATA if self.slave.poll => self.poll(false),
            MASTER_COMMAND => self.master.read_command(self.cascade()),
            MASTER_DATA => self.master.mask,
            SLAVE_COMMAND => self.slave.read_command(false),
            _ => self.slave.mask,
        }
    }

    /// The poll word of the master or the slave: its highest-priority request, taken into
    /// service as an INTA takes it, as bit 7 and the IRQ's number (8259A datasheet, OCW3).
    /// A poll is one chip's: the master answers IRQ 2 for a slave's request, and the kernel
    /// polls the slave next for which one (no cascade cycle, as QEMU's 8259 too).
    fn poll(&mut self, master: bool) -> u8 {
        let cascade = master && self.cascade();
        let chip = match master {
            true => &mut self.master,
            false => &mut self.slave,
        };
        chip.poll = false;
        let Some(irq) = chip.presented(cascade) else {
            return 0;
        };
        chip.take(irq);
        0x80 | irq
    }

    /// The slave's INT, which drives the master's IR2: high while the slave has a request
    /// to present (unmasked, above everything in its service). The master sees it as a
    /// request on IR2 everywhere it looks at its requests — its priority logic, a poll, a
    /// read of its IRR — so that what the kernel reads in IRR is what the master resolves.
    ///
    /// It follows the slave's output, where QEMU latches its rising edge in the master's IRR
    /// (`pic_update_irq` of the slave calls `pic_set_irq(master, 2, ...)`) and keeps it
    /// until the master's INTA even if the slave's request is masked meanwhile (that INTA
    /// then gets the slave's IR7). The 8259A wants an IR input held high until the INTA
    /// ("if the IR input goes low before this time a DEFAULT IR7 will occur", 8259A
    /// datasheet, edge and level triggered modes); that spurious case is not modelled.
    fn cascade(&self) -> bool {
        self.slave.presented(false).is_some()
    }

    /// IRQ `irq` (0–15)'s line goes to `level`: a rising edge requests it.
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        match irq {
            0..=7 => self.master.set_line(irq, level),
            _ => self.slave.set_line(irq & 7, level),
        }
    }

    /// Which chip answers the INTA of the master's presented IRQ: the slave when ICW3 puts
    /// it on that input (the cascade), else the master.
    fn answer(&self) -> Option<Answer> {
        let slave = self.slave.presented(false);
        let irq = self.master.presented(self.cascade())?;
        match irq == CASCADE_IRQ && self.master.has_slave_on(CASCADE_IRQ) {
            true => Some(Answer::Slave(slave)),
            false => Some(Answer::Master(irq)),
        }
    }

    /// The vector the pair presents to the CPU now (its INTR line), if any.
    pub fn presented(&self) -> Option<u8> {
        match self.answer()? {
            Answer::Master(irq) => Some(self.master.vector_base? + irq),
            Answer::Slave(irq) => Some(self.slave.vector_base? + irq.unwrap_or(SPURIOUS_IRQ)),
        }
    }

    /// The CPU takes the presented interrupt (INTA): its request becomes in service, on the
    /// slave and on the master's IRQ 2 for a slave's (a spurious IR7 puts nothing in the
    /// slave's service). Its vector.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let vector = self.presented()?;
        match self.answer()? {
            Answer::Master(irq) => self.master.take(irq),
            Answer::Slave(irq) => {
                self.master.take(CASCADE_IRQ);
                if let Some(slave_irq) = irq {
                    self.slave.take(slave_irq);
                }
            }
        }
        Some(vector)
    }

    /// The vector IRQ `irq` (0–15) is delivered at, or `None` while its chip is not
    /// initialised or the IRQ is masked there (a slave's IRQ also behind the master's IRQ 2).
    pub fn irq_vector(&self, irq: u8) -> Option<u8> {
        match irq {
            0..=7 => self.master.vector(irq),
            _ => {
                self.master.vector(CASCADE_IRQ)?;
                self.slave.vector(irq & 7)
            }
        }
    }

    /// The vector the timer's interrupt (IRQ 0 of the master) is delivered at, or `None`
    /// while the master is not initialised or IRQ 0 is masked.
    pub fn timer_vector(&self) -> Option<u8> {
        self.master.vector(0)
    }

    /// While IRQ 0 is masked on an initialised master with no request of its own in IRR:
    /// the vector a rising edge would be latched for (the 8259A latches requests whatever
    /// the mask, and presents them once unmasked). `None` otherwise: a second edge would
    /// change nothing.
    pub fn latches_masked_irq_0(&self) -> Option<u8> {
        let master = &self.master;
        let base = master.vector_base.filter(|_| master.expecting == 0)?;
        (master.mask & 1 != 0 && master.requests & 1 == 0).then_some(base)
    }

    /// Is the master half-way through its initialisation (ICW1 written, ICW2–ICW4 to come)?
    /// ICW1 cleared its IRR, so an edge from before it is gone. (The 8259A datasheet says
    /// ICW1 resets the edge-sense circuit, so that a request needs a new low-to-high
    /// transition; QEMU's `pic_init_reset` clears the edge-triggered requests in IRR.)
    pub fn initialising(&self) -> bool {
        self.master.expecting != 0
    }

    /// PIT channel 0's output pulses: IRQ 0's rising edge, latched in the master's IRR.
    pub fn raise_irq_0(&mut self) {
        self.set_irq(0, true);
        self.set_irq(0, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a PC kernel does first: remap the master to 0x20, the slave to 0x28.
    fn initialised() -> Pic {
        let mut pic = Pic::default();
        for (port, value) in [
            (MASTER_COMMAND, 0x11),
            (SLAVE_COMMAND, 0x11),
            (MASTER_DATA, 0x20),
            (SLAVE_DATA, 0x28),
            (MASTER_DATA, 0x04),
            (SLAVE_DATA, 0x02),
            (MASTER_DATA, 0x01),
            (SLAVE_DATA, 0x01),
        ] {
            pic.write(port, value);
        }
        pic
    }

    #[test]
    fn irq_0_is_delivered_at_the_vector_icw2_gave_it_once_unmasked() {
        assert_eq!(Pic::default().timer_vector(), None, "not initialised");
        let mut pic = initialised();
        // ICW1 cleared the mask: IRQ 0 is open.
        assert_eq!(pic.timer_vector(), Some(0x20));
        assert_eq!(pic.write(MASTER_DATA, 0xff), "OCW1: the interrupt mask");
        assert_eq!(pic.timer_vector(), None);
        assert_eq!(pic.read(MASTER_DATA), 0xff);
        pic.write(MASTER_DATA, 0xfe);
        assert_eq!(pic.timer_vector(), Some(0x20));
        assert_eq!(pic.slave.vector_base, Some(0x28));
    }

    #[test]
    fn an_eoi_and_a_register_read_are_understood() {
        let mut pic = initialised();
        pic.master.in_service = 0b101;
        pic.write(MASTER_COMMAND, 0x0b); // OCW3: read ISR
        assert_eq!(pic.read(MASTER_COMMAND), 0b101);
        // A non-specific EOI ends the highest-priority one, IRQ 0.
        assert_eq!(
            pic.write(MASTER_COMMAND, 0x20),
            "OCW2: end of interrupt: IRQ 0 is no longer in service"
        );
        assert_eq!(pic.read(MASTER_COMMAND), 0b100);
        assert_eq!(
            pic.write(MASTER_COMMAND, 0x62),
            "OCW2: specific end of interrupt: IRQ 2 is no longer in service"
        );
        assert_eq!(
            pic.write(MASTER_COMMAND, 0x20),
            "OCW2: end of interrupt: no such IRQ was in service"
        );
        assert_eq!(pic.read(MASTER_COMMAND), 0);
        pic.write(MASTER_COMMAND, 0x0a); // OCW3: read IRR
        assert_eq!(pic.read(MASTER_COMMAND), 0);
    }

    #[test]
    fn a_poll_takes_the_highest_request_and_names_it() {
        // OCW3 0x0c, then a read: bit 7 and IRQ 4, now in service; the next poll finds
        // nothing (4 holds back 4 and below), and a plain read is IRR again.
        let mut pic = initialised();
        pic.write(MASTER_DATA, 0xe7);
        pic.set_irq(4, true);
        assert!(pic.write(MASTER_COMMAND, 0x0c).starts_with("OCW3: poll"));
        assert_eq!(pic.read(MASTER_COMMAND), 0x84);
        assert_eq!(pic.master.in_service, 0x10);
        pic.write(MASTER_COMMAND, 0x0c);
        assert_eq!(pic.read(MASTER_COMMAND), 0);
        assert_eq!(pic.read(MASTER_COMMAND), 0, "IRR: nothing requested");
        // A slave's IRQ 12: the master's poll says 2, the slave's says 4.
        let mut pic = initialised();
        pic.write(MASTER_DATA, 0xfb);
        pic.write(SLAVE_DATA, 0xef);
        pic.set_irq(12, true);
        pic.write(MASTER_COMMAND, 0x0c);
        assert_eq!(pic.read(MASTER_COMMAND), 0x82);
        pic.write(SLAVE_COMMAND, 0x0c);
        assert_eq!(pic.read(SLAVE_COMMAND), 0x84);
        assert_eq!((pic.master.in_service, pic.slave.in_service), (0x04, 0x10));
    }

    #[test]
    fn a_poll_is_the_next_read_of_either_port_the_data_port_included() {
        // "The next RD pulse to the 8259A is treated as an interrupt acknowledge" (8259A
        // datasheet, Poll Command): a read of the data port after OCW3 0x0c is the poll
        // word, not the mask, and takes IRQ 4 into service.
        let mut pic = initialised();
        pic.write(MASTER_DATA, 0xef); // IRQ 4 open
        pic.set_irq(4, true);
        pic.write(MASTER_COMMAND, 0x0c);
        assert_eq!(pic.read(MASTER_DATA), 0x84, "the poll word, not the mask");
        assert_eq!(pic.master.in_service, 0x10, "IRQ 4 in service");
        assert_eq!(pic.master.requests, 0);
        // The poll is spent: the data port reads the mask again, and a read of IRR
        // acknowledges nothing.
        assert_eq!(pic.read(MASTER_DATA), 0xef);
        pic.set_irq(4, false);
        pic.set_irq(4, true);
        pic.write(MASTER_COMMAND, 0x0a);
        assert_eq!(pic.read(MASTER_COMMAND), 0x10, "IRR: requested again");
        assert_eq!(pic.master.requests, 0x10, "and not taken by the read");
        // The slave's data port is its poll too.
        let mut pic = initialised();
        pic.write(SLAVE_DATA, 0xef);
        pic.set_irq(12, true);
        pic.write(SLAVE_COMMAND, 0x0c);
        assert_eq!(pic.read(SLAVE_DATA), 0x84);
        assert_eq!(pic.slave.in_service, 0x10);
    }

    #[test]
    fn a_rotating_eoi_still_ends_the_interrupt() {
        // OCW2 0xa0 (rotate on non-specific EOI) and 0xe0 + IRQ (rotate on specific EOI)
        // are EOIs too (8259A datasheet, OCW2): IRQ 4 must not stay in service and hold
        // back itself and everything below it.
        let mut pic = initialised();
        pic.master.in_service = 0b1_0000;
        assert!(
            pic.write(MASTER_COMMAND, 0xa0)
                .starts_with("OCW2: end of interrupt")
        );
        assert_eq!(pic.master.in_service, 0);
        pic.master.in_service = 0b1_0001;
        assert!(
            pic.write(MASTER_COMMAND, 0xe4)
                .starts_with("OCW2: specific end of interrupt")
        );
        assert_eq!(pic.master.in_service, 0b1, "only IRQ 4 ended");
        // R and SL without EOI (0xc0: set priority) end nothing.
        pic.write(MASTER_COMMAND, 0xc0);
        assert_eq!(pic.master.in_service, 0b1);
    }

    #[test]
    fn a_request_is_an_edge_in_service_until_eoi_and_holds_back_lower_priorities() {
        let mut pic = initialised();
        pic.write(MASTER_DATA, 0xe7); // IRQ 3 and 4 open
        pic.set_irq(4, true);
        assert_eq!(pic.presented(), Some(0x24));
        pic.write(MASTER_COMMAND, 0x0a);
        assert_eq!(pic.read(MASTER_COMMAND), 0x10, "IRR");
        assert_eq!(pic.acknowledge(), Some(0x24));
        assert_eq!(pic.presented(), None, "in service: not presented again");
        pic.set_irq(4, true);
        assert_eq!(pic.presented(), None, "the line stayed high: no new edge");
        pic.set_irq(4, false);
        pic.set_irq(4, true);
        assert_eq!(
            pic.presented(),
            None,
            "requested again, but IRQ 4 is in service"
        );
        pic.set_irq(3, true);
        assert_eq!(
            pic.presented(),
            Some(0x23),
            "a higher priority gets through"
        );
        pic.write(MASTER_COMMAND, 0x20); // EOI: ends IRQ 4
        assert_eq!(pic.master.in_service, 0);
        assert_eq!(pic.acknowledge(), Some(0x23));
        pic.write(MASTER_COMMAND, 0x20);
        assert_eq!(pic.acknowledge(), Some(0x24), "the second request waited");
        pic.write(MASTER_DATA, 0xff);
        pic.set_irq(4, false);
        pic.set_irq(4, true);
        assert_eq!(pic.presented(), None, "masked");
    }

    #[test]
    fn the_slave_s_request_comes_through_the_master_s_irq_2() {
        let mut pic = initialised();
        pic.write(MASTER_DATA, 0xfb); // IRQ 2 open
        pic.write(SLAVE_DATA, 0xef); // IRQ 12 open
        pic.set_irq(12, true);
        assert_eq!(pic.acknowledge(), Some(0x2c));
        assert_eq!((pic.master.in_service, pic.slave.in_service), (0x04, 0x10));
    }

    #[test]
    fn the_master_s_irr_shows_ir2_while_the_slave_requests() {
        // The slave's INT drives the master's IR2 (cascade mode), and IR2's request is in
        // the master's IRR like any other input's: the kernel reading IRR sees bit 2, and
        // the slave's own IRR has its IRQ 12 (bit 4).
        let mut pic = initialised();
        pic.write(MASTER_DATA, 0xfb); // IRQ 2 open
        pic.write(SLAVE_DATA, 0xef); // IRQ 12 open
        pic.set_irq(12, true);
        pic.write(MASTER_COMMAND, 0x0a); // OCW3: read IRR
        pic.write(SLAVE_COMMAND, 0x0a);
        assert_ne!(pic.read(MASTER_COMMAND) & 4, 0, "IR2 requested");
        assert_eq!(pic.read(SLAVE_COMMAND), 0x10);
        // Taken: the master's IR2 and the slave's IRQ 12 in service, nothing requested.
        assert_eq!(pic.acknowledge(), Some(0x2c));
        assert_eq!(pic.read(MASTER_COMMAND), 0, "the request went into service");
        pic.write(MASTER_COMMAND, 0x0b); // OCW3: read ISR
        assert_eq!(pic.read(MASTER_COMMAND), 0x04);
        // A slave's request it does not present (masked there) is no request on IR2.
        let mut pic = initialised();
        pic.write(MASTER_DATA, 0xfb);
        pic.write(SLAVE_DATA, 0xff);
        pic.set_irq(12, true);
        pic.write(MASTER_COMMAND, 0x0a);
        assert_eq!(pic.read(MASTER_COMMAND), 0);
        assert_eq!(pic.presented(), None);
    }

    #[test]
    fn a_request_on_the_cascade_input_itself_is_the_slave_s_spurious_irq_7() {
        // ICW3 = 0x04: the slave is on IR2. A request on IR2 with none at the slave: in the
        // INTA cycle the master lets the slave answer (8259A datasheet, cascade mode), and
        // the slave, with no request, answers IR7: vector 0x28 + 7, as QEMU's pic_read_irq
        // gives it, not the master's 0x20 + 2.
        let mut pic = initialised();
        pic.write(MASTER_DATA, 0xfb); // IRQ 2 open
        pic.set_irq(2, true);
        assert_eq!(pic.presented(), Some(0x2f));
        assert_eq!(pic.acknowledge(), Some(0x2f));
        assert_eq!(
            (pic.master.in_service, pic.slave.in_service),
            (0x04, 0),
            "IR2 in service on the master; a spurious IR7 is in no one's service"
        );
        // ICW3 = 0 in cascade mode: no slave on IR2, which is an input of the master's own.
        let mut pic = Pic::default();
        pic.write(MASTER_COMMAND, 0x11);
        for value in [0x20, 0x00, 0x01, 0xfb] {
            pic.write(MASTER_DATA, value);
        }
        pic.set_irq(2, true);
        assert_eq!(pic.acknowledge(), Some(0x22));
    }

    #[test]
    fn the_slave_s_eoi_names_the_irq_as_the_kernel_numbers_it() {
        let mut pic = initialised();
        pic.slave.in_service = 0x10;
        assert_eq!(
            pic.write(SLAVE_COMMAND, 0x20),
            "OCW2: end of interrupt: IRQ 12 is no longer in service"
        );
    }

    #[test]
    fn irq_0_s_request_is_polled_and_icw1_discards_one_latched() {
        let mut pic = initialised();
        pic.raise_irq_0();
        pic.write(MASTER_COMMAND, 0x0c);
        assert_eq!(pic.read(MASTER_COMMAND), 0x80, "bit 7 and IRQ 0");
        assert_eq!(pic.master.in_service, 0b1);
        // Masked, a tick is latched; ICW1 starts over with IRR, ISR and the mask cleared.
        pic.write(MASTER_COMMAND, 0x20);
        pic.write(MASTER_DATA, 0xff);
        assert_eq!(pic.latches_masked_irq_0(), Some(0x20));
        pic.raise_irq_0();
        assert_eq!(pic.latches_masked_irq_0(), None, "IRR holds one");
        pic.write(MASTER_COMMAND, 0x11);
        assert_eq!((pic.master.requests, pic.master.in_service), (0, 0));
    }

    #[test]
    fn a_single_chip_takes_no_icw3() {
        let mut pic = Pic::default();
        pic.write(MASTER_COMMAND, 0x13); // ICW1: single, ICW4 follows
        pic.write(MASTER_DATA, 0x40);
        assert_eq!(pic.write(MASTER_DATA, 0x01), "ICW4: the mode");
        assert_eq!(pic.write(MASTER_DATA, 0xfe), "OCW1: the interrupt mask");
        assert_eq!(pic.timer_vector(), Some(0x40));
    }

    #[test]
    fn half_way_through_its_initialisation_a_chip_delivers_nothing() {
        let mut pic = Pic::default();
        pic.write(MASTER_COMMAND, 0x11);
        pic.write(MASTER_DATA, 0x20);
        assert_eq!(pic.timer_vector(), None, "ICW3 and ICW4 still to come");
    }
}
