//! AMD SVM encodings that the trace carries: exit codes, the EXITINFO fields of the exits
//! traplab handles, and the EVENTINJ / EXITINTINFO event format. What an exit *means*
//! (its reason, name and sentence) is [`crate::exit::ExitReason`].
//!
//! Reference: AMD64 Architecture Programmer's Manual, Volume 2 (System Programming),
//! chapter 15 "Secure Virtual Machine" and appendix C "SVM Intercept Exit Codes".

/// The EXITCODE values (APM vol. 2, appendix C, table C-1).
pub mod exitcode {
    pub const READ_CR0: u64 = 0x00;
    pub const WRITE_CR0: u64 = 0x10;
    pub const READ_DR0: u64 = 0x20;
    pub const WRITE_DR0: u64 = 0x30;
    /// `EXCP_BASE + vector`: an intercepted exception (vectors 0–31).
    pub const EXCP_BASE: u64 = 0x40;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const SMI: u64 = 0x62;
    pub const INIT: u64 = 0x63;
    pub const VINTR: u64 = 0x64;
    pub const CR0_SEL_WRITE: u64 = 0x65;
    pub const RDTSC: u64 = 0x6e;
    pub const RDPMC: u64 = 0x6f;
    pub const PUSHF: u64 = 0x70;
    pub const POPF: u64 = 0x71;
    pub const CPUID: u64 = 0x72;
    pub const RSM: u64 = 0x73;
    pub const IRET: u64 = 0x74;
    pub const SWINT: u64 = 0x75;
    pub const INVD: u64 = 0x76;
    pub const PAUSE: u64 = 0x77;
    pub const HLT: u64 = 0x78;
    pub const INVLPG: u64 = 0x79;
    pub const INVLPGA: u64 = 0x7a;
    pub const IOIO: u64 = 0x7b;
    pub const MSR: u64 = 0x7c;
    pub const TASK_SWITCH: u64 = 0x7d;
    pub const FERR_FREEZE: u64 = 0x7e;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const VMSAVE: u64 = 0x83;
    pub const STGI: u64 = 0x84;
    pub const CLGI: u64 = 0x85;
    pub const SKINIT: u64 = 0x86;
    pub const RDTSCP: u64 = 0x87;
    pub const ICEBP: u64 = 0x88;
    pub const WBINVD: u64 = 0x89;
    pub const MONITOR: u64 = 0x8a;
    pub const MWAIT: u64 = 0x8b;
    pub const MWAIT_CONDITIONAL: u64 = 0x8c;
    pub const XSETBV: u64 = 0x8d;
    pub const RDPRU: u64 = 0x8e;
    pub const NPF: u64 = 0x400;
    /// VMRUN found illegal guest state in the VMCB (APM vol. 2, 15.5.1).
    pub const INVALID: u64 = u64::MAX;
    /// What QEMU's TCG writes instead of [`INVALID`]: -1 as 32 bits.
    pub const INVALID_TCG: u64 = 0xffff_ffff;
}

/// EXITINFO1 of an IOIO intercept (APM vol. 2, 15.10.2, figure 15-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoioInfo {
    pub port: u16,
    /// `true` for IN, `false` for OUT.
    pub input: bool,
    /// INS/OUTS.
    pub string: bool,
    /// REP prefix.
    pub rep: bool,
    /// Operand size in bytes: 1, 2 or 4.
    pub size: u8,
    /// Address size in bits of a string instruction: 16, 32 or 64 (64 when none of the bits
    /// is set, as QEMU 7.2's TCG sets none: the hypervisor decodes the instruction instead).
    pub address_bits: u8,
    /// Effective segment of a string instruction (0 = ES … 5 = GS).
    pub segment: u8,
}

impl IoioInfo {
    pub fn decode(exitinfo1: u64) -> Self {
        let size = if exitinfo1 & (1 << 4) != 0 {
            1
        } else if exitinfo1 & (1 << 5) != 0 {
            2
        } else {
            4
        };
        let address_bits = if exitinfo1 & (1 << 7) != 0 {
            16
        } else if exitinfo1 & (1 << 8) != 0 {
            32
        } else {
            64
        };
        IoioInfo {
            port: (exitinfo1 >> 16) as u16,
            input: exitinfo1 & 1 != 0,
            string: exitinfo1 & (1 << 2) != 0,
            rep: exitinfo1 & (1 << 3) != 0,
            size,
            address_bits,
            segment: ((exitinfo1 >> 10) & 7) as u8,
        }
    }
}

/// EXITINFO1 of a nested page fault (APM vol. 2, 15.25.6): a #PF-style error code plus
/// two bits that say which walk failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NpfInfo {
    pub present: bool,
    pub write: bool,
    pub user: bool,
    pub reserved_bit: bool,
    pub fetch: bool,
    /// The fault happened on the final guest-physical address of the access.
    pub final_translation: bool,
    /// The fault happened while the CPU walked the *guest's* page tables.
    pub guest_page_walk: bool,
}

impl NpfInfo {
    pub fn decode(exitinfo1: u64) -> Self {
        NpfInfo {
            present: exitinfo1 & 1 != 0,
            write: exitinfo1 & 2 != 0,
            user: exitinfo1 & 4 != 0,
            reserved_bit: exitinfo1 & 8 != 0,
            fetch: exitinfo1 & 16 != 0,
            final_translation: exitinfo1 & (1 << 32) != 0,
            guest_page_walk: exitinfo1 & (1 << 33) != 0,
        }
    }
}

/// The kind of event in EVENTINJ / EXITINTINFO, bits 10:8 (APM vol. 2, 15.20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// External or virtual interrupt (INTR).
    Interrupt,
    Nmi,
    /// Exception (fault or trap).
    Exception,
    /// Software interrupt (INTn). The CPU pushes the *next* RIP for it.
    Software,
}

impl EventType {
    pub const fn bits(self) -> u64 {
        match self {
            EventType::Interrupt => 0,
            EventType::Nmi => 2,
            EventType::Exception => 3,
            EventType::Software => 4,
        }
    }
    pub const fn from_bits(bits: u64) -> Option<Self> {
        match bits {
            0 => Some(EventType::Interrupt),
            2 => Some(EventType::Nmi),
            3 => Some(EventType::Exception),
            4 => Some(EventType::Software),
            _ => None,
        }
    }
}

/// Can EVENTINJ inject `vector` as an exception (type 3)? Only a vector the AMD64
/// architecture defines as an exception: VMRUN fails with VMEXIT_INVALID for type 3 with any
/// other (APM vol. 2, 15.20), NMI's vector 2 and the reserved ones among them (the table,
/// `traplab_abi::x86::EXCEPTIONS`).
pub fn is_exception_vector(vector: u8) -> bool {
    use crate::x86::ExceptionType::{Interrupt, Reserved};
    vector < 32 && !matches!(crate::x86::exception(vector).kind, Interrupt | Reserved)
}

/// An event as EVENTINJ takes it and EXITINTINFO reports it (APM vol. 2, 15.20, figure 15-5):
/// bits 7:0 vector, 10:8 type, 11 error code valid, 31 valid, 63:32 error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub vector: u8,
    pub kind: EventType,
    pub error_code: Option<u32>,
}

impl Event {
    const VALID: u64 = 1 << 31;
    const ERROR_CODE_VALID: u64 = 1 << 11;

    /// The exception `vector`, with its error code where the vector defines one.
    pub fn exception(vector: u8, error_code: u32) -> Self {
        Event {
            vector,
            kind: EventType::Exception,
            error_code: crate::x86::exception(vector)
                .has_error_code
                .then_some(error_code),
        }
    }

    pub fn encode(&self) -> u64 {
        let mut bits = self.vector as u64 | (self.kind.bits() << 8) | Self::VALID;
        if let Some(code) = self.error_code {
            bits |= Self::ERROR_CODE_VALID | ((code as u64) << 32);
        }
        bits
    }

    /// `None` when the valid bit is clear (no event was being delivered).
    pub fn decode(bits: u64) -> Option<Self> {
        if bits & Self::VALID == 0 {
            return None;
        }
        Some(Event {
            vector: bits as u8,
            kind: EventType::from_bits((bits >> 8) & 7)?,
            error_code: (bits & Self::ERROR_CODE_VALID != 0).then_some((bits >> 32) as u32),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioio_out_byte_to_com1() {
        // `out dx, al` with dx = 0x3f8: port in bits 31:16, SZ8, A64 (bits 9 set).
        let info = IoioInfo::decode(0x03f8_0210);
        assert_eq!(
            info,
            IoioInfo {
                port: 0x3f8,
                input: false,
                string: false,
                rep: false,
                size: 1,
                address_bits: 64,
                segment: 0
            }
        );
        let rep_insw = IoioInfo::decode((0x60 << 16) | 0b10_0010_1101);
        assert!(rep_insw.input && rep_insw.string && rep_insw.rep);
        assert_eq!(rep_insw.size, 2);
    }

    #[test]
    fn npf_bits() {
        let info = NpfInfo::decode((1 << 32) | 0b00110);
        assert!(info.write && info.user && info.final_translation);
        assert!(!info.present && !info.guest_page_walk && !info.fetch);
    }

    #[test]
    fn event_injection_round_trips() {
        let pf = Event::exception(14, 0b10);
        assert_eq!(pf.encode(), 0x0000_0002_8000_0b0e);
        assert_eq!(Event::decode(pf.encode()), Some(pf));
        let ud = Event::exception(6, 0xdead);
        assert_eq!(ud.error_code, None, "#UD has no error code");
        assert_eq!(ud.encode(), 0x8000_0306);
        assert_eq!(Event::decode(0x306), None, "valid bit clear");
        let int3 = Event {
            vector: 3,
            kind: EventType::Software,
            error_code: None,
        };
        assert_eq!(Event::decode(int3.encode()), Some(int3));
    }
}
