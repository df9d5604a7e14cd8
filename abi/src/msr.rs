//! Model-specific registers: their numbers and architectural names (AMD APM vol. 2,
//! appendix A "MSR Cross-Reference").
//!
//! The names are here once, for the hypervisor's trace and the host's explanations. Which
//! of them the CPU a guest sees actually *has* is the hypervisor's business
//! (`hv/src/exit/msr.rs`).

pub const TSC: u32 = 0x10;
pub const APIC_BASE: u32 = 0x1b;
pub const MTRRCAP: u32 = 0xfe;
pub const SYSENTER_CS: u32 = 0x174;
pub const SYSENTER_ESP: u32 = 0x175;
pub const SYSENTER_EIP: u32 = 0x176;
pub const MCG_CAP: u32 = 0x179;
pub const MCG_STATUS: u32 = 0x17a;
pub const DEBUGCTL: u32 = 0x1d9;
pub const PAT: u32 = 0x277;
pub const EFER: u32 = 0xc000_0080;
pub const STAR: u32 = 0xc000_0081;
pub const LSTAR: u32 = 0xc000_0082;
pub const CSTAR: u32 = 0xc000_0083;
pub const SFMASK: u32 = 0xc000_0084;
pub const FS_BASE: u32 = 0xc000_0100;
pub const GS_BASE: u32 = 0xc000_0101;
pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
pub const TSC_AUX: u32 = 0xc000_0103;
/// SVM's VM_CR (bit 4 SVMDIS: firmware forbids SVM; APM vol. 2, 15.30.1).
pub const VM_CR: u32 = 0xc001_0114;
/// SVM's VM_HSAVE_PA: where VMRUN saves host state (APM vol. 2, 15.30.4).
pub const VM_HSAVE_PA: u32 = 0xc001_0117;

/// The architectural name of an MSR, or `None` for one this list does not know.
pub fn name(msr: u32) -> Option<&'static str> {
    Some(match msr {
        TSC => "TSC",
        APIC_BASE => "APIC_BASE",
        MTRRCAP => "MTRRCAP",
        SYSENTER_CS => "SYSENTER_CS",
        SYSENTER_ESP => "SYSENTER_ESP",
        SYSENTER_EIP => "SYSENTER_EIP",
        MCG_CAP => "MCG_CAP",
        MCG_STATUS => "MCG_STATUS",
        DEBUGCTL => "DEBUGCTL",
        PAT => "PAT",
        EFER => "EFER",
        STAR => "STAR",
        LSTAR => "LSTAR",
        CSTAR => "CSTAR",
        SFMASK => "SFMASK",
        FS_BASE => "FS_BASE",
        GS_BASE => "GS_BASE",
        KERNEL_GS_BASE => "KERNEL_GS_BASE",
        TSC_AUX => "TSC_AUX",
        VM_CR => "VM_CR",
        VM_HSAVE_PA => "VM_HSAVE_PA",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::name(super::EFER), Some("EFER"));
        assert_eq!(super::name(0xc001_1234), None);
    }
}
