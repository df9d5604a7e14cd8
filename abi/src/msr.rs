//! Model-specific registers: their numbers and architectural names (AMD APM vol. 2,
//! appendix A "MSR Cross-Reference").
//!
//! The names are here once, for the hypervisor's trace and the host's explanations. Which
//! of them the CPU a guest sees actually *has* is the hypervisor's business
//! (`hv/src/exit/msr.rs`).

pub const TSC: u32 = 0x10;
pub const APIC_BASE: u32 = 0x1b;
/// Intel's TSC_ADJUST (CPUID 7:EBX\[1\]).
pub const TSC_ADJUST: u32 = 0x3b;
/// SPEC_CTRL (IBRS, STIBP, SSBD; CPUID 7:EDX\[26\] or 8000_0008:EBX\[14\]).
pub const SPEC_CTRL: u32 = 0x48;
/// PRED_CMD (IBPB; CPUID 7:EDX\[26\] or 8000_0008:EBX\[12\]): write-only.
pub const PRED_CMD: u32 = 0x49;
pub const MTRRCAP: u32 = 0xfe;
pub const SYSENTER_CS: u32 = 0x174;
pub const SYSENTER_ESP: u32 = 0x175;
pub const SYSENTER_EIP: u32 = 0x176;
pub const MCG_CAP: u32 = 0x179;
pub const MCG_STATUS: u32 = 0x17a;
/// Intel's IA32_MISC_ENABLE: AMD CPUs have none.
pub const MISC_ENABLE: u32 = 0x1a0;
pub const DEBUGCTL: u32 = 0x1d9;
/// The variable-range MTRRs: PhysBase *n* at `0x200 + 2n`, PhysMask *n* after it.
pub const MTRR_PHYS_BASE_0: u32 = 0x200;
pub const MTRR_PHYS_MASK_7: u32 = 0x20f;
/// The fixed-range MTRRs (AMD APM vol. 2, 7.7.2): 64K at 0, 16K at 0x80000 and 0xa0000,
/// 4K from 0xc0000 to 0xf8000.
pub const MTRR_FIX_64K_00000: u32 = 0x250;
pub const MTRR_FIX_16K_80000: u32 = 0x258;
pub const MTRR_FIX_16K_A0000: u32 = 0x259;
pub const MTRR_FIX_4K_C0000: u32 = 0x268;
pub const MTRR_FIX_4K_F8000: u32 = 0x26f;
pub const MTRR_DEF_TYPE: u32 = 0x2ff;
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
/// The four legacy performance counters of every AMD64 CPU (AMD APM vol. 2, 13.2):
/// PerfEvtSel0–3 at 0xc001_0000–3, PerfCtr0–3 at 0xc001_0004–7.
pub const PERF_EVT_SEL_0: u32 = 0xc001_0000;
pub const PERF_CTR_3: u32 = 0xc001_0007;
/// SYSCFG, the system configuration register (AMD BKDG for family 0Fh, MSRC001_0010):
/// how a real core's MTRRs see DRAM, TOP_MEM2, SMM. Xen's `init_amd` reads it unguarded.
pub const SYSCFG: u32 = 0xc001_0010;
/// HWCR, the hardware configuration register every AMD CPU since family 0Fh has (AMD
/// BKDG for family 0Fh, MSRC001_0015): Xen and Linux read it on any AMD CPU.
pub const HWCR: u32 = 0xc001_0015;
/// The interrupt pending message register of a family 0Fh AMD CPU (BKDG, MSRC001_0055;
/// Linux's `MSR_K8_INT_PENDING_MSG`): Linux reads it without a guard on a K8 whose C1E it
/// must check (family 0Fh, model 0x40 and up: `qemu64` is model 0x6b).
pub const INT_PENDING_MSG: u32 = 0xc001_0055;
/// SVM's VM_CR (bit 4 SVMDIS: firmware forbids SVM; APM vol. 2, 15.30.1).
pub const VM_CR: u32 = 0xc001_0114;
/// SVM's VM_HSAVE_PA: where VMRUN saves host state (APM vol. 2, 15.30.4).
pub const VM_HSAVE_PA: u32 = 0xc001_0117;

const VARIABLE_MTRR_NAMES: [(&str, &str); 8] = [
    ("MTRRphysBase0", "MTRRphysMask0"),
    ("MTRRphysBase1", "MTRRphysMask1"),
    ("MTRRphysBase2", "MTRRphysMask2"),
    ("MTRRphysBase3", "MTRRphysMask3"),
    ("MTRRphysBase4", "MTRRphysMask4"),
    ("MTRRphysBase5", "MTRRphysMask5"),
    ("MTRRphysBase6", "MTRRphysMask6"),
    ("MTRRphysBase7", "MTRRphysMask7"),
];

const FIXED_4K_MTRR_NAMES: [&str; 8] = [
    "MTRRfix4K_C0000",
    "MTRRfix4K_C8000",
    "MTRRfix4K_D0000",
    "MTRRfix4K_D8000",
    "MTRRfix4K_E0000",
    "MTRRfix4K_E8000",
    "MTRRfix4K_F0000",
    "MTRRfix4K_F8000",
];

/// The architectural name of an MSR, or `None` for one this list does not know.
pub fn name(msr: u32) -> Option<&'static str> {
    Some(match msr {
        TSC => "TSC",
        APIC_BASE => "APIC_BASE",
        TSC_ADJUST => "TSC_ADJUST",
        SPEC_CTRL => "SPEC_CTRL",
        PRED_CMD => "PRED_CMD",
        MTRRCAP => "MTRRCAP",
        SYSENTER_CS => "SYSENTER_CS",
        SYSENTER_ESP => "SYSENTER_ESP",
        SYSENTER_EIP => "SYSENTER_EIP",
        MCG_CAP => "MCG_CAP",
        MCG_STATUS => "MCG_STATUS",
        MISC_ENABLE => "MISC_ENABLE",
        DEBUGCTL => "DEBUGCTL",
        0x200..=0x20f if msr.is_multiple_of(2) => VARIABLE_MTRR_NAMES[(msr - 0x200) as usize / 2].0,
        0x200..=0x20f => VARIABLE_MTRR_NAMES[(msr - 0x200) as usize / 2].1,
        MTRR_FIX_64K_00000 => "MTRRfix64K_00000",
        MTRR_FIX_16K_80000 => "MTRRfix16K_80000",
        MTRR_FIX_16K_A0000 => "MTRRfix16K_A0000",
        0x268..=0x26f => FIXED_4K_MTRR_NAMES[(msr - 0x268) as usize],
        MTRR_DEF_TYPE => "MTRRdefType",
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
        0xc001_0000..=0xc001_0003 => ["PerfEvtSel0", "PerfEvtSel1", "PerfEvtSel2", "PerfEvtSel3"]
            [(msr - PERF_EVT_SEL_0) as usize],
        0xc001_0004..=0xc001_0007 => {
            ["PerfCtr0", "PerfCtr1", "PerfCtr2", "PerfCtr3"][(msr - PERF_EVT_SEL_0 - 4) as usize]
        }
        SYSCFG => "SYSCFG",
        HWCR => "HWCR",
        INT_PENDING_MSG => "INT_PENDING_MSG",
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
        assert_eq!(super::name(0x202), Some("MTRRphysBase1"));
        assert_eq!(super::name(0x203), Some("MTRRphysMask1"));
        assert_eq!(super::name(0x26f), Some("MTRRfix4K_F8000"));
        assert_eq!(super::name(0xc001_0005), Some("PerfCtr1"));
    }
}
