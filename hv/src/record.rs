//! What the trace records of an exit and of a resume, read straight from the vCPU.
//!
//! An exit's record is its numbers (exit code, EXITINFOs, RIP, CS, CPL, RFLAGS, the control
//! registers, EFER), every general register and the instruction's bytes; a resume's is where
//! the guest goes on, its RFLAGS, its registers and the trap's cycles. The encoder
//! (`traplab_abi::wire`) compares each with what the reader has and writes what changed. It
//! reads them through [`ExitSource`] and [`ResumeSource`]: from [`VcpuExit`] and
//! [`VcpuResume`], which read the VMCB and the saved registers where they are, value by
//! value as the encoder compares them, or from the events, [`exit_event`] and
//! [`resume_event`], built when someone else looks at them too (gdb, which takes its `int3`s
//! out of the instruction bytes; the host's controller, which stops at events it looks
//! at). The same record either way (tested below): building the event first was a copy of
//! every value at every traced trap.

use crate::domain::Domain;
use crate::domain::vcpu::Vcpu;
use crate::exit::Exit;
use alloc::borrow::Cow;
use traplab_abi::event::{self, InstructionBytes, Resume};
use traplab_abi::wire::{ExitSource, ResumeSource};

/// An exit's record, read from the vCPU that exited.
pub struct VcpuExit<'a> {
    vcpu: &'a Vcpu,
    insn: &'a InstructionBytes,
}

impl<'a> VcpuExit<'a> {
    pub fn new(domain: &'a Domain, exit: &'a Exit) -> VcpuExit<'a> {
        VcpuExit {
            vcpu: &domain.vcpu,
            insn: &exit.instruction,
        }
    }
}

impl ExitSource for VcpuExit<'_> {
    /// The VMCB's field, by [`ExitSource::field`]'s index: a constant once inlined, and this
    /// one load.
    #[inline(always)]
    fn field(&self, index: usize) -> u64 {
        let (control, save) = (&self.vcpu.vmcb.control, &self.vcpu.vmcb.save);
        match index {
            0 => control.exitcode,
            1 => control.exitinfo1,
            2 => control.exitinfo2,
            3 => control.exitintinfo,
            4 => save.rip,
            5 => save.cs.selector.into(),
            6 => save.cpl.into(),
            7 => save.rflags,
            8 => save.cr0,
            9 => save.cr2,
            10 => save.cr3,
            11 => save.cr4,
            _ => save.efer,
        }
    }

    #[inline(always)]
    fn reg(&self, number: usize) -> u64 {
        self.vcpu.gpr_64(number as u8)
    }

    #[inline(always)]
    fn insn(&self) -> &InstructionBytes {
        self.insn
    }
}

/// A resume's record, read from the vCPU about to go on.
pub struct VcpuResume<'a> {
    vcpu: &'a Vcpu,
    /// Where guest code continues: the handler of an injected event, the target of an IRET,
    /// or RIP.
    rip: u64,
    /// From the exit to now, on the trace's clock.
    cycles: u64,
}

impl<'a> VcpuResume<'a> {
    /// The resume of `domain`'s vCPU at `rip` (`None`: its RIP), `cycles` after its exit.
    pub fn new(domain: &'a Domain, rip: Option<u64>, cycles: u64) -> VcpuResume<'a> {
        VcpuResume {
            vcpu: &domain.vcpu,
            rip: rip.unwrap_or(domain.vcpu.vmcb.save.rip),
            cycles,
        }
    }
}

impl ResumeSource for VcpuResume<'_> {
    #[inline(always)]
    fn rip(&self) -> u64 {
        self.rip
    }

    #[inline(always)]
    fn rflags(&self) -> u64 {
        self.vcpu.vmcb.save.rflags
    }

    #[inline(always)]
    fn reg(&self, number: usize) -> u64 {
        self.vcpu.gpr_64(number as u8)
    }

    #[inline(always)]
    fn cycles(&self) -> u64 {
        self.cycles
    }
}

/// The `exit` event of `domain`'s `exit`: what [`VcpuExit`] reads, as an event.
pub fn exit_event(domain: &Domain, exit: &Exit) -> event::Exit {
    let (control, save) = (&domain.vcpu.vmcb.control, &domain.vcpu.vmcb.save);
    event::Exit {
        exitcode: control.exitcode,
        // The reader names it from the exit code and EXITINFOs (`event::Exit::reason`).
        reason: Cow::Borrowed(""),
        exitinfo1: control.exitinfo1,
        exitinfo2: control.exitinfo2,
        exitintinfo: control.exitintinfo,
        rip: save.rip,
        cs: save.cs.selector,
        cpl: save.cpl,
        rflags: save.rflags,
        cr0: save.cr0,
        cr2: save.cr2,
        cr3: save.cr3,
        cr4: save.cr4,
        efer: save.efer,
        regs: domain.vcpu.registers(),
        insn: exit.instruction,
    }
}

/// The `resume` event: what [`VcpuResume`] reads, as an event.
pub fn resume_event(resume: &VcpuResume) -> Resume {
    Resume {
        rip: resume.rip,
        rflags: resume.rflags(),
        regs: resume.vcpu.registers(),
        cycles: resume.cycles,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Test;
    use traplab_abi::event::{Body, Event};
    use traplab_abi::exit::ExitReason;
    use traplab_abi::wire::{Decoder, Encoder};

    /// An encoder's records of a CPUID exit and its resume, written from the vCPU or from
    /// the events, with `from_vcpu` choosing for each record.
    fn records(test: &Test, exit: &Exit, from_vcpu: bool) -> Vec<Vec<u8>> {
        let domain = &test.domain;
        let mut encoder = Encoder::new();
        let mut buffer = vec![0u8; 4096];
        let mut records = Vec::new();
        for seq in 0..2u64 {
            let tsc = 1000 * (seq + 1);
            let resume = VcpuResume::new(domain, Some(0x1234), 777);
            let record = match (seq, from_vcpu) {
                (0, true) => {
                    encoder.encode_exit(seq, tsc, 1, &VcpuExit::new(domain, exit), &mut buffer)
                }
                (0, false) => {
                    let body = Body::Exit(exit_event(domain, exit));
                    encoder.encode(seq, tsc, Some(1), &body, &mut buffer)
                }
                (_, true) => encoder.encode_resume(seq, tsc, 1, &resume, &mut buffer),
                (_, false) => {
                    let body = Body::Resume(resume_event(&resume));
                    encoder.encode(seq, tsc, Some(1), &body, &mut buffer)
                }
            };
            records.push(record.expect("fits").to_vec());
            encoder.commit();
        }
        records
    }

    #[test]
    fn a_record_read_from_the_vcpu_is_the_record_of_its_event() {
        let mut test = Test::long_mode();
        test.code(&[0x0f, 0xa2]);
        for (number, value) in (0..16).zip(0x1111_0000_0000u64..) {
            test.set_gpr(number, value * 3);
        }
        test.domain.vcpu.vmcb.save.rflags = 0x247;
        let exit = test.exit(ExitReason::Cpuid);
        let from_vcpu = records(&test, &exit, true);
        assert_eq!(from_vcpu, records(&test, &exit, false));
        // And it reads back as the events, every value in its place.
        let mut decoder = Decoder::new();
        let mut events: Vec<Event> = Vec::new();
        for record in &from_vcpu {
            decoder.decode(record, &mut events).expect("decodes");
        }
        let Body::Exit(read) = &events[0].body else {
            panic!("{:?}", events[0])
        };
        let expected = exit_event(&test.domain, &exit);
        assert_eq!(read.regs, expected.regs);
        assert_eq!(read.regs.rbx, test.domain.vcpu.gpr_64(3));
        assert_eq!(
            (read.rip, read.rflags, read.cr3),
            (expected.rip, 0x247, expected.cr3)
        );
        assert_eq!(read.insn, exit.instruction);
        assert!(read.insn.as_slice().starts_with(&[0x0f, 0xa2]));
        let Body::Resume(resume) = &events[1].body else {
            panic!("{:?}", events[1])
        };
        assert_eq!(
            (resume.rip, resume.rflags, resume.cycles),
            (0x1234, 0x247, 777)
        );
        assert_eq!(resume.regs, test.domain.vcpu.registers());
    }
}
