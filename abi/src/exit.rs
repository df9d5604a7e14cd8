//! Why the CPU left the guest: a #VMEXIT's EXITCODE, EXITINFO1 and EXITINFO2, decoded once.
//!
//! The hypervisor dispatches on [`ExitReason`] (one handler per reason, `hv/src/exit/`), and
//! the host tools name, explain and count exits with it, so an exit's name, its sentence
//! and the meaning of its EXITINFO fields are written here and nowhere else.
//!
//! Reference: AMD64 Architecture Programmer's Manual, Volume 2, appendix C "SVM Intercept
//! Exit Codes" (the codes), 15.7 "Intercept Operation" and the sections named on each variant
//! (what EXITINFO1 and EXITINFO2 hold).

use crate::svm::{IoioInfo, NpfInfo, exitcode};
use crate::x86;

/// An SVM instruction a guest ran (they are always intercepted here, AMD APM vol. 2, 15.5.1
/// and 15.9: VMRUN must be; the others would reach outside the guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvmInstruction {
    Vmrun,
    Vmload,
    Vmsave,
    Stgi,
    Clgi,
    Skinit,
    Invlpga,
}

/// A descriptor-table register an intercepted SIDT/SGDT/SLDT/STR or LIDT/LGDT/LLDT/LTR names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescriptorTable {
    Idtr,
    Gdtr,
    Ldtr,
    Tr,
}

/// Why the guest exited, with what EXITINFO1/EXITINFO2 say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// MOV from CR`number` (exit codes 0x00–0x0F).
    CrRead {
        number: u8,
    },
    /// MOV to CR`number` (0x10–0x1F). Without decode assists EXITINFO1 names no register.
    CrWrite {
        number: u8,
    },
    /// A write to CR0 that changes more than TS and MP: the selective CR0 intercept (0x65,
    /// APM vol. 2, 15.9.2).
    Cr0SelectiveWrite,
    /// MOV from DR`number` (0x20–0x2F).
    DrRead {
        number: u8,
    },
    /// MOV to DR`number` (0x30–0x3F).
    DrWrite {
        number: u8,
    },
    /// An intercepted exception (0x40 + vector, APM vol. 2, 15.12): the CPU stopped before
    /// delivering it. EXITINFO1 holds the error code it would push; for #PF, EXITINFO2 holds
    /// the faulting address (CR2 is not written).
    Exception {
        vector: u8,
        error_code: u32,
        address: u64,
    },
    /// A physical interrupt (0x60): the hypervisor's own.
    Intr,
    /// A physical NMI (0x61).
    Nmi,
    Smi,
    Init,
    /// The guest can take the virtual interrupt the hypervisor asked for (0x64, APM vol. 2,
    /// 15.21.4).
    Vintr,
    /// SIDT/SGDT/SLDT/STR (`write` = false) or LIDT/LGDT/LLDT/LTR (0x66–0x6D).
    DescriptorTable {
        table: DescriptorTable,
        write: bool,
    },
    Rdtsc,
    Rdpmc,
    Pushf,
    Popf,
    Cpuid,
    Rsm,
    /// IRET, before it executes (0x74).
    Iret,
    /// INT n, INT3 or INTO (0x75). EXITINFO1 holds the vector only with decode assists.
    SoftwareInterrupt,
    Invd,
    Pause,
    Hlt,
    Invlpg,
    /// IN, OUT, INS, OUTS (0x7B, APM vol. 2, 15.10.2): EXITINFO1 describes the access,
    /// EXITINFO2 is the RIP of the next instruction.
    Ioio {
        info: IoioInfo,
        next_rip: u64,
    },
    /// RDMSR (`write` = false) or WRMSR (0x7C, APM vol. 2, 15.11): EXITINFO1 = 0 or 1.
    Msr {
        write: bool,
    },
    TaskSwitch,
    FerrFreeze,
    /// A triple fault (0x7F).
    Shutdown,
    /// VMRUN, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, INVLPGA (0x80, 0x82–0x86, 0x7A).
    SvmInstruction(SvmInstruction),
    /// The hypercall (0x81).
    Vmmcall,
    Rdtscp,
    /// ICEBP, `int1` (0x88).
    Icebp,
    Wbinvd,
    Monitor,
    Mwait,
    MwaitConditional,
    Xsetbv,
    Rdpru,
    /// A nested page fault (0x400, APM vol. 2, 15.25.6): EXITINFO2 is the guest-physical
    /// address, EXITINFO1 a #PF-style error code and which walk failed.
    Npf {
        gpa: u64,
        info: NpfInfo,
    },
    /// VMRUN refused the guest state (-1, APM vol. 2, 15.5.1).
    Invalid,
    /// An exit code this list does not know.
    Unknown(u64),
}

impl ExitReason {
    /// Decode a #VMEXIT from the VMCB's EXITCODE, EXITINFO1 and EXITINFO2.
    pub fn decode(code: u64, exitinfo1: u64, exitinfo2: u64) -> ExitReason {
        use ExitReason::*;
        use exitcode as c;
        match code {
            0x00..=0x0f => CrRead { number: code as u8 },
            0x10..=0x1f => CrWrite {
                number: (code - c::WRITE_CR0) as u8,
            },
            0x20..=0x2f => DrRead {
                number: (code - c::READ_DR0) as u8,
            },
            0x30..=0x3f => DrWrite {
                number: (code - c::WRITE_DR0) as u8,
            },
            0x40..=0x5f => Exception {
                vector: (code - c::EXCP_BASE) as u8,
                error_code: exitinfo1 as u32,
                address: exitinfo2,
            },
            c::INTR => Intr,
            c::NMI => Nmi,
            c::SMI => Smi,
            c::INIT => Init,
            c::VINTR => Vintr,
            c::CR0_SEL_WRITE => Cr0SelectiveWrite,
            0x66..=0x6d => {
                let index = code - 0x66;
                let table = [
                    self::DescriptorTable::Idtr,
                    self::DescriptorTable::Gdtr,
                    self::DescriptorTable::Ldtr,
                    self::DescriptorTable::Tr,
                ][(index % 4) as usize];
                ExitReason::DescriptorTable {
                    table,
                    write: index >= 4,
                }
            }
            c::RDTSC => Rdtsc,
            c::RDPMC => Rdpmc,
            c::PUSHF => Pushf,
            c::POPF => Popf,
            c::CPUID => Cpuid,
            c::RSM => Rsm,
            c::IRET => Iret,
            c::SWINT => SoftwareInterrupt,
            c::INVD => Invd,
            c::PAUSE => Pause,
            c::HLT => Hlt,
            c::INVLPG => Invlpg,
            c::INVLPGA => SvmInstruction(self::SvmInstruction::Invlpga),
            c::IOIO => Ioio {
                info: IoioInfo::decode(exitinfo1),
                next_rip: exitinfo2,
            },
            c::MSR => Msr {
                write: exitinfo1 == 1,
            },
            c::TASK_SWITCH => TaskSwitch,
            c::FERR_FREEZE => FerrFreeze,
            c::SHUTDOWN => Shutdown,
            c::VMRUN => SvmInstruction(self::SvmInstruction::Vmrun),
            c::VMMCALL => Vmmcall,
            c::VMLOAD => SvmInstruction(self::SvmInstruction::Vmload),
            c::VMSAVE => SvmInstruction(self::SvmInstruction::Vmsave),
            c::STGI => SvmInstruction(self::SvmInstruction::Stgi),
            c::CLGI => SvmInstruction(self::SvmInstruction::Clgi),
            c::SKINIT => SvmInstruction(self::SvmInstruction::Skinit),
            c::RDTSCP => Rdtscp,
            c::ICEBP => Icebp,
            c::WBINVD => Wbinvd,
            c::MONITOR => Monitor,
            c::MWAIT => Mwait,
            c::MWAIT_CONDITIONAL => MwaitConditional,
            c::XSETBV => Xsetbv,
            c::RDPRU => Rdpru,
            c::NPF => Npf {
                gpa: exitinfo2,
                info: NpfInfo::decode(exitinfo1),
            },
            c::INVALID | c::INVALID_TCG => Invalid,
            other => Unknown(other),
        }
    }

    /// The reason of an exit code alone, for naming and counting (EXITINFO left at 0).
    pub fn from_code(code: u64) -> ExitReason {
        ExitReason::decode(code, 0, 0)
    }

    /// The exit code (APM vol. 2, appendix C). [`ExitReason::Invalid`] is -1.
    pub fn code(&self) -> u64 {
        use ExitReason::*;
        use exitcode as c;
        match *self {
            CrRead { number } => c::READ_CR0 + number as u64,
            CrWrite { number } => c::WRITE_CR0 + number as u64,
            Cr0SelectiveWrite => c::CR0_SEL_WRITE,
            DrRead { number } => c::READ_DR0 + number as u64,
            DrWrite { number } => c::WRITE_DR0 + number as u64,
            Exception { vector, .. } => c::EXCP_BASE + vector as u64,
            Intr => c::INTR,
            Nmi => c::NMI,
            Smi => c::SMI,
            Init => c::INIT,
            Vintr => c::VINTR,
            ExitReason::DescriptorTable { table, write } => {
                0x66 + table as u64 + if write { 4 } else { 0 }
            }
            Rdtsc => c::RDTSC,
            Rdpmc => c::RDPMC,
            Pushf => c::PUSHF,
            Popf => c::POPF,
            Cpuid => c::CPUID,
            Rsm => c::RSM,
            Iret => c::IRET,
            SoftwareInterrupt => c::SWINT,
            Invd => c::INVD,
            Pause => c::PAUSE,
            Hlt => c::HLT,
            Invlpg => c::INVLPG,
            Ioio { .. } => c::IOIO,
            Msr { .. } => c::MSR,
            TaskSwitch => c::TASK_SWITCH,
            FerrFreeze => c::FERR_FREEZE,
            Shutdown => c::SHUTDOWN,
            SvmInstruction(instruction) => match instruction {
                self::SvmInstruction::Vmrun => c::VMRUN,
                self::SvmInstruction::Vmload => c::VMLOAD,
                self::SvmInstruction::Vmsave => c::VMSAVE,
                self::SvmInstruction::Stgi => c::STGI,
                self::SvmInstruction::Clgi => c::CLGI,
                self::SvmInstruction::Skinit => c::SKINIT,
                self::SvmInstruction::Invlpga => c::INVLPGA,
            },
            Vmmcall => c::VMMCALL,
            Rdtscp => c::RDTSCP,
            Icebp => c::ICEBP,
            Wbinvd => c::WBINVD,
            Monitor => c::MONITOR,
            Mwait => c::MWAIT,
            MwaitConditional => c::MWAIT_CONDITIONAL,
            Xsetbv => c::XSETBV,
            Rdpru => c::RDPRU,
            Npf { .. } => c::NPF,
            Invalid => c::INVALID,
            Unknown(code) => code,
        }
    }

    /// The name the trace's `"reason"` field spells: `EXCP_` and the mnemonic for an
    /// exception (`EXCP_PF`), `READ_CR3`/`WRITE_DR7` for register accesses, otherwise the
    /// APM's name without `VMEXIT_` (`CPUID`, `IOIO`, `NPF`).
    pub fn name(&self) -> &'static str {
        use ExitReason::*;
        const CR: [[&str; 16]; 2] = [
            [
                "READ_CR0",
                "READ_CR1",
                "READ_CR2",
                "READ_CR3",
                "READ_CR4",
                "READ_CR5",
                "READ_CR6",
                "READ_CR7",
                "READ_CR8",
                "READ_CR9",
                "READ_CR10",
                "READ_CR11",
                "READ_CR12",
                "READ_CR13",
                "READ_CR14",
                "READ_CR15",
            ],
            [
                "WRITE_CR0",
                "WRITE_CR1",
                "WRITE_CR2",
                "WRITE_CR3",
                "WRITE_CR4",
                "WRITE_CR5",
                "WRITE_CR6",
                "WRITE_CR7",
                "WRITE_CR8",
                "WRITE_CR9",
                "WRITE_CR10",
                "WRITE_CR11",
                "WRITE_CR12",
                "WRITE_CR13",
                "WRITE_CR14",
                "WRITE_CR15",
            ],
        ];
        const DR: [[&str; 16]; 2] = [
            [
                "READ_DR0",
                "READ_DR1",
                "READ_DR2",
                "READ_DR3",
                "READ_DR4",
                "READ_DR5",
                "READ_DR6",
                "READ_DR7",
                "READ_DR8",
                "READ_DR9",
                "READ_DR10",
                "READ_DR11",
                "READ_DR12",
                "READ_DR13",
                "READ_DR14",
                "READ_DR15",
            ],
            [
                "WRITE_DR0",
                "WRITE_DR1",
                "WRITE_DR2",
                "WRITE_DR3",
                "WRITE_DR4",
                "WRITE_DR5",
                "WRITE_DR6",
                "WRITE_DR7",
                "WRITE_DR8",
                "WRITE_DR9",
                "WRITE_DR10",
                "WRITE_DR11",
                "WRITE_DR12",
                "WRITE_DR13",
                "WRITE_DR14",
                "WRITE_DR15",
            ],
        ];
        match *self {
            CrRead { number } => CR[0][number as usize & 15],
            CrWrite { number } => CR[1][number as usize & 15],
            Cr0SelectiveWrite => "CR0_SEL_WRITE",
            DrRead { number } => DR[0][number as usize & 15],
            DrWrite { number } => DR[1][number as usize & 15],
            Exception { vector, .. } => x86::exception(vector).exit_name,
            Intr => "INTR",
            Nmi => "NMI",
            Smi => "SMI",
            Init => "INIT",
            Vintr => "VINTR",
            ExitReason::DescriptorTable { table, write } => match (table, write) {
                (self::DescriptorTable::Idtr, false) => "IDTR_READ",
                (self::DescriptorTable::Gdtr, false) => "GDTR_READ",
                (self::DescriptorTable::Ldtr, false) => "LDTR_READ",
                (self::DescriptorTable::Tr, false) => "TR_READ",
                (self::DescriptorTable::Idtr, true) => "IDTR_WRITE",
                (self::DescriptorTable::Gdtr, true) => "GDTR_WRITE",
                (self::DescriptorTable::Ldtr, true) => "LDTR_WRITE",
                (self::DescriptorTable::Tr, true) => "TR_WRITE",
            },
            Rdtsc => "RDTSC",
            Rdpmc => "RDPMC",
            Pushf => "PUSHF",
            Popf => "POPF",
            Cpuid => "CPUID",
            Rsm => "RSM",
            Iret => "IRET",
            SoftwareInterrupt => "SWINT",
            Invd => "INVD",
            Pause => "PAUSE",
            Hlt => "HLT",
            Invlpg => "INVLPG",
            Ioio { .. } => "IOIO",
            Msr { .. } => "MSR",
            TaskSwitch => "TASK_SWITCH",
            FerrFreeze => "FERR_FREEZE",
            Shutdown => "SHUTDOWN",
            SvmInstruction(instruction) => match instruction {
                self::SvmInstruction::Vmrun => "VMRUN",
                self::SvmInstruction::Vmload => "VMLOAD",
                self::SvmInstruction::Vmsave => "VMSAVE",
                self::SvmInstruction::Stgi => "STGI",
                self::SvmInstruction::Clgi => "CLGI",
                self::SvmInstruction::Skinit => "SKINIT",
                self::SvmInstruction::Invlpga => "INVLPGA",
            },
            Vmmcall => "VMMCALL",
            Rdtscp => "RDTSCP",
            Icebp => "ICEBP",
            Wbinvd => "WBINVD",
            Monitor => "MONITOR",
            Mwait => "MWAIT",
            MwaitConditional => "MWAIT_CONDITIONAL",
            Xsetbv => "XSETBV",
            Rdpru => "RDPRU",
            Npf { .. } => "NPF",
            Invalid => "INVALID",
            Unknown(_) => "UNKNOWN",
        }
    }

    /// The trap class a student groups exits by: the mnemonic for an exception (`#PF`),
    /// otherwise the exit's [`name`](ExitReason::name).
    pub fn class(&self) -> &'static str {
        match *self {
            ExitReason::Exception { vector, .. } => x86::exception(vector).mnemonic,
            _ => self.name(),
        }
    }

    /// One sentence, in a student's words, of why the CPU left the guest.
    pub fn sentence(&self) -> &'static str {
        use ExitReason::*;
        match self {
            CrRead { .. } => "the guest read a control register that the hypervisor intercepts",
            CrWrite { .. } | Cr0SelectiveWrite => {
                "the guest wrote a control register that the hypervisor intercepts"
            }
            DrRead { .. } | DrWrite { .. } => {
                "the guest accessed a debug register that the hypervisor intercepts"
            }
            Exception { .. } => {
                "the guest raised an exception, and the hypervisor intercepts that vector"
            }
            Intr => "a physical interrupt arrived while the guest ran",
            Nmi => "a physical NMI arrived while the guest ran",
            Vintr => "the guest became ready to take a virtual interrupt",
            Cpuid => "the guest executed CPUID, which the hypervisor intercepts",
            Iret => "the guest executed IRET, which the hypervisor intercepts",
            SoftwareInterrupt => "the guest executed a software interrupt (INT n / INT3 / INTO)",
            Hlt => "the guest executed HLT",
            Ioio { .. } => "the guest accessed an I/O port marked in the I/O permission map",
            Msr { .. } => "the guest accessed an MSR marked in the MSR permission map",
            Shutdown => "the guest hit a triple fault: the CPU would shut down",
            SvmInstruction(_) => "the guest executed an SVM instruction, which a guest may not run",
            Vmmcall => "the guest made a hypercall (VMMCALL)",
            Npf { .. } => "a guest-physical access found no permission in the nested page tables",
            Invalid => "VMRUN refused the guest state in the VMCB",
            _ => "the guest executed an instruction that the hypervisor intercepts",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_decodes_to_a_reason_that_encodes_it_again() {
        for code in (0..0x90u64).chain([exitcode::NPF, exitcode::INVALID]) {
            let reason = ExitReason::from_code(code);
            assert_eq!(reason.code(), code, "{code:#x} is {reason:?}");
        }
        assert_eq!(
            ExitReason::from_code(exitcode::INVALID_TCG),
            ExitReason::Invalid
        );
    }

    #[test]
    fn names_follow_the_apm() {
        let name = |code| ExitReason::from_code(code).name();
        assert_eq!(name(0x4e), "EXCP_PF");
        assert_eq!(name(0x46), "EXCP_UD");
        assert_eq!(name(0x72), "CPUID");
        assert_eq!(name(0x7b), "IOIO");
        assert_eq!(name(0x13), "WRITE_CR3");
        assert_eq!(name(0x27), "READ_DR7");
        assert_eq!(name(0x6a), "IDTR_WRITE");
        assert_eq!(name(0x400), "NPF");
        assert_eq!(name(u64::MAX), "INVALID");
        assert_eq!(name(0xffff_ffff), "INVALID", "as QEMU's TCG writes it");
        assert_eq!(name(0x1234), "UNKNOWN");
    }

    #[test]
    fn exitinfo_is_decoded_with_the_reason() {
        assert_eq!(
            ExitReason::decode(0x4e, 0x2, 0x4000_0000),
            ExitReason::Exception {
                vector: 14,
                error_code: 2,
                address: 0x4000_0000
            }
        );
        assert_eq!(ExitReason::decode(0x4e, 2, 0).class(), "#PF");
        let ExitReason::Ioio { info, next_rip } = ExitReason::decode(0x7b, 0x03f8_0210, 0x1001)
        else {
            panic!("IOIO")
        };
        assert_eq!(
            (info.port, info.size, info.input, next_rip),
            (0x3f8, 1, false, 0x1001)
        );
        assert_eq!(
            ExitReason::decode(0x7c, 1, 0),
            ExitReason::Msr { write: true }
        );
        let ExitReason::Npf { gpa, info } =
            ExitReason::decode(0x400, (1 << 32) | 0b110, 0xfeb0_0000)
        else {
            panic!("NPF")
        };
        assert!(gpa == 0xfeb0_0000 && info.write && info.final_translation);
        assert_eq!(ExitReason::from_code(0x7a).class(), "INVLPGA");
    }
}
