//! gdb's single step over SYSCALL and SYSRET, the two instructions that pass RFLAGS through
//! R11: a pure part of the stub (`mod.rs`: `arm_step`, `disarm_step`), tested on the host.
//!
//! A step is RFLAGS.TF for one VMRUN, and the TF is the debugger's, never the guest's
//! (`mod.rs`). In long mode SYSCALL saves RFLAGS in R11, then clears the RFLAGS bits SFMASK
//! names; SYSRET loads RFLAGS from R11 (AMD APM vol. 2, 6.1.1 "SYSCALL and SYSRET"; vol. 3,
//! SYSCALL, SYSRET). Whether a step of either traps depends on the RFLAGS it leaves (QEMU's
//! TCG checks TF after them, in the new RFLAGS). So, with gdb's TF only in RFLAGS:
//!
//! - SYSCALL, under an SFMASK that clears TF (every 64-bit kernel's), does not trap: the step
//!   runs on into the kernel; and R11 keeps gdb's TF, which SYSRET later loads in the
//!   guest's user code, where it traps — a #DB nobody in the guest asked for;
//! - SYSRET loads R11 without gdb's TF: the step runs on in the user code.
//!
//! For that one VMRUN the step lends its TF to where the instruction takes RFLAGS from:
//! SYSCALL finds SFMASK without TF, SYSRET finds R11 with it. Both then trap right after
//! the instruction, on the first instruction of the kernel's entry (LSTAR; CSTAR from
//! compatibility mode, APM vol. 2, 6.1.1) or of the user code (RCX); and at the exit everything is given back as the guest would have it without
//! gdb: SFMASK's and R11's TF as they were, RFLAGS.TF as the instruction left the guest's
//! own ([`Lent::give_back`]).

use crate::delivery::DR6_SINGLE_STEP;

/// The bit of RFLAGS (and of SFMASK and R11, which hold RFLAGS images).
const TF: u64 = 1 << 8;

/// What the exit that ended a lent step shows of the instruction ([`completed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepExit {
    /// The exit is an intercepted #DB.
    pub debug_exception: bool,
    /// DR6 before the VMRUN, and at the exit.
    pub dr6_before: u64,
    pub dr6: u64,
    /// RIP is not where the step started.
    pub rip_moved: bool,
}

/// Did the stepped SYSCALL or SYSRET complete? A #DB whose DR6.BS this VMRUN set is the
/// single-step trap, which comes only after the instruction completed (APM vol. 2, 13.1.1.3
/// "Debug-Status Register", BS; 13.1.4.1 "Single Step"). RIP alone could not tell when the
/// entry point is the SYSCALL's own address (LSTAR or CSTAR pointing at it). A BS the guest
/// left in DR6 proves nothing (DR6 is sticky): then RIP decides — a fault (#UD, #GP) or an
/// interrupt came before the instruction, and left RIP on it.
pub fn completed(exit: StepExit) -> bool {
    let single_step_trapped = exit.debug_exception
        && exit.dr6 & DR6_SINGLE_STEP != 0
        && exit.dr6_before & DR6_SINGLE_STEP == 0;
    single_step_trapped || exit.rip_moved
}

/// SYSCALL or SYSRET, executed in long mode (only there do they use R11 and SFMASK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemCall {
    Syscall,
    Sysret,
}

/// The registers a step's TF goes through: RFLAGS, R11 and the SFMASK MSR (the VMCB's state
/// save area holds it, APM vol. 2, appendix B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagRegisters {
    pub rflags: u64,
    pub r11: u64,
    pub sfmask: u64,
}

/// A step armed over SYSCALL or SYSRET: what it changed, to give back at the exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lent {
    instruction: SystemCall,
    /// The guest's own RFLAGS.TF before the instruction.
    guest_tf: bool,
    /// SYSCALL: the guest's SFMASK cleared TF; SYSRET: the guest's R11 had TF.
    tf_was_there: bool,
}

/// Arm a step over `instruction`: RFLAGS.TF, and TF lent to SFMASK (SYSCALL: the mask no
/// longer clears it) or to R11 (SYSRET: it loads it).
pub fn arm(instruction: SystemCall, registers: &mut FlagRegisters) -> Lent {
    let guest_tf = registers.rflags & TF != 0;
    registers.rflags |= TF;
    let tf_was_there = match instruction {
        SystemCall::Syscall => registers.sfmask & TF != 0,
        SystemCall::Sysret => registers.r11 & TF != 0,
    };
    match instruction {
        SystemCall::Syscall => registers.sfmask &= !TF,
        SystemCall::Sysret => registers.r11 |= TF,
    }
    Lent {
        instruction,
        guest_tf,
        tf_was_there,
    }
}

impl Lent {
    /// The guest's own TF traps after this instruction too, as it would without gdb: then
    /// the #DB is the guest's as well. SYSCALL: the guest had TF and its SFMASK kept it;
    /// SYSRET: the guest's R11 had TF.
    pub fn guest_traps(&self) -> bool {
        match self.instruction {
            SystemCall::Syscall => self.guest_tf && !self.tf_was_there,
            SystemCall::Sysret => self.tf_was_there,
        }
    }

    /// At the exit: give back what [`arm`] lent. `ran`: the instruction completed
    /// ([`completed`]); otherwise a fault came first (SYSCALL without EFER.SCE, SYSRET at CPL 3:
    /// #UD, #GP) and left RFLAGS and R11 as they were. Only the TF bits are touched.
    pub fn give_back(&self, ran: bool, registers: &mut FlagRegisters) {
        let set_tf = |value: &mut u64, on: bool| {
            if on {
                *value |= TF;
            } else {
                *value &= !TF;
            }
        };
        match self.instruction {
            SystemCall::Syscall => {
                set_tf(&mut registers.sfmask, self.tf_was_there);
                if ran {
                    // R11 is the guest's RFLAGS before SYSCALL; RFLAGS is that under the
                    // guest's SFMASK (the other bits were masked as the guest set it).
                    set_tf(&mut registers.r11, self.guest_tf);
                }
            }
            // SYSRET never writes R11, ran or not.
            SystemCall::Sysret => set_tf(&mut registers.r11, self.tf_was_there),
        }
        let guest_tf_after = if ran {
            self.guest_traps()
        } else {
            self.guest_tf
        };
        set_tf(&mut registers.rflags, guest_tf_after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux's SFMASK: TF, IF, DF, IOPL, NT, AC.
    const LINUX_SFMASK: u64 = 0x4_7700;
    /// User RFLAGS: IF and ZF, bit 1 (always set).
    const USER_FLAGS: u64 = 0x246;

    /// What SYSCALL does to RFLAGS and R11 (APM vol. 3, SYSCALL, long mode).
    fn syscall(registers: &mut FlagRegisters) {
        registers.r11 = registers.rflags;
        registers.rflags &= !registers.sfmask;
    }

    /// What SYSRET does to RFLAGS (APM vol. 3, SYSRET, long mode; RF is cleared).
    fn sysret(registers: &mut FlagRegisters) {
        registers.rflags = registers.r11 & 0x3c_7fd7 | 2;
    }

    #[test]
    fn a_syscall_to_its_own_address_completed_when_its_single_step_trapped() {
        // LSTAR is the SYSCALL's own address: RIP is where it was, yet it ran.
        let trapped = StepExit {
            debug_exception: true,
            dr6_before: 0xffff_0ff0,
            dr6: 0xffff_0ff0 | DR6_SINGLE_STEP,
            rip_moved: false,
        };
        assert!(completed(trapped));
        // The same BS, left in DR6 by the guest: a #DB of its own breakpoint on the SYSCALL
        // (a fault, before it ran) does not make it run.
        assert!(!completed(StepExit {
            dr6_before: trapped.dr6,
            dr6: trapped.dr6 | 1,
            ..trapped
        }));
        // A #GP or an interrupt first: RIP on the SYSCALL, no step trap.
        assert!(!completed(StepExit {
            debug_exception: false,
            dr6: trapped.dr6_before,
            ..trapped
        }));
        // Any exit after RIP moved (an NPF on the entry's first fetch): it ran.
        assert!(completed(StepExit {
            debug_exception: false,
            dr6: trapped.dr6_before,
            rip_moved: true,
            ..trapped
        }));
    }

    #[test]
    fn a_step_over_syscall_traps_in_the_kernel_and_leaves_no_tf_in_r11_or_rflags() {
        let mut registers = FlagRegisters {
            rflags: USER_FLAGS,
            r11: 0x1234,
            sfmask: LINUX_SFMASK,
        };
        let lent = arm(SystemCall::Syscall, &mut registers);
        syscall(&mut registers);
        assert_ne!(
            registers.rflags & TF,
            0,
            "TF survives SYSCALL: the step traps"
        );
        assert!(!lent.guest_traps(), "the #DB is gdb's alone");
        lent.give_back(true, &mut registers);
        assert_eq!(
            registers,
            FlagRegisters {
                rflags: USER_FLAGS & !LINUX_SFMASK,
                r11: USER_FLAGS,
                sfmask: LINUX_SFMASK,
            },
            "as SYSCALL leaves them without a debugger"
        );
    }

    #[test]
    fn a_step_over_syscall_keeps_the_guest_s_own_tf_where_syscall_puts_it() {
        // The guest single-steps itself: R11 keeps its TF; its SFMASK clears it in RFLAGS,
        // and its own step does not trap after SYSCALL.
        let mut registers = FlagRegisters {
            rflags: USER_FLAGS | TF,
            r11: 0,
            sfmask: LINUX_SFMASK,
        };
        let lent = arm(SystemCall::Syscall, &mut registers);
        syscall(&mut registers);
        assert!(!lent.guest_traps());
        lent.give_back(true, &mut registers);
        assert_eq!(registers.r11, USER_FLAGS | TF);
        assert_eq!(registers.rflags & TF, 0);
        // An SFMASK that keeps TF: the guest's step traps in the kernel, as gdb's does.
        let mut registers = FlagRegisters {
            rflags: USER_FLAGS | TF,
            r11: 0,
            sfmask: 0x200,
        };
        let lent = arm(SystemCall::Syscall, &mut registers);
        syscall(&mut registers);
        assert!(lent.guest_traps());
        lent.give_back(true, &mut registers);
        assert_eq!(registers.rflags & TF, TF);
        assert_eq!(registers.sfmask, 0x200);
    }

    #[test]
    fn a_syscall_that_faults_gives_everything_back_unchanged() {
        let before = FlagRegisters {
            rflags: USER_FLAGS,
            r11: 0x77,
            sfmask: LINUX_SFMASK,
        };
        let mut registers = before;
        let lent = arm(SystemCall::Syscall, &mut registers);
        lent.give_back(false, &mut registers);
        assert_eq!(registers, before);
    }

    #[test]
    fn a_step_over_sysret_traps_in_user_code_with_the_flags_r11_held() {
        let kernel_flags = 0x2;
        let mut registers = FlagRegisters {
            rflags: kernel_flags,
            r11: USER_FLAGS,
            sfmask: LINUX_SFMASK,
        };
        let lent = arm(SystemCall::Sysret, &mut registers);
        sysret(&mut registers);
        assert_ne!(registers.rflags & TF, 0, "TF came with R11: the step traps");
        assert!(!lent.guest_traps());
        lent.give_back(true, &mut registers);
        assert_eq!(
            registers,
            FlagRegisters {
                rflags: USER_FLAGS,
                r11: USER_FLAGS,
                sfmask: LINUX_SFMASK,
            },
            "RFLAGS exactly as R11 held them, R11 unchanged"
        );
    }

    #[test]
    fn a_sysret_to_a_guest_s_own_tf_is_the_guest_s_trap_too() {
        let mut registers = FlagRegisters {
            rflags: 0x2,
            r11: USER_FLAGS | TF,
            sfmask: LINUX_SFMASK,
        };
        let lent = arm(SystemCall::Sysret, &mut registers);
        sysret(&mut registers);
        assert!(lent.guest_traps());
        lent.give_back(true, &mut registers);
        assert_eq!(registers.rflags, USER_FLAGS | TF);
        assert_eq!(registers.r11, USER_FLAGS | TF);
    }

    #[test]
    fn a_sysret_that_faults_gives_r11_and_rflags_back() {
        // SYSRET at CPL 3 is #GP: nothing ran.
        let before = FlagRegisters {
            rflags: USER_FLAGS,
            r11: 0x202,
            sfmask: LINUX_SFMASK,
        };
        let mut registers = before;
        let lent = arm(SystemCall::Sysret, &mut registers);
        lent.give_back(false, &mut registers);
        assert_eq!(registers, before);
    }
}
