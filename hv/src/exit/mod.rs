//! One #VMEXIT, one handler: the dispatch from exit code to the file that handles it.
//!
//! Every handler reads the exit from the domain's VMCB, records its decision with
//! [`decide!`](crate::decide) (emulate, reflect, bounce, forward or kill, one line of why,
//! and where in this source tree), does it, and says what happens next.
//!
//! | exit code            | handler              | what the hypervisor does                    |
//! |----------------------|----------------------|---------------------------------------------|
//! | 0x40–0x5F EXCP_*     | `exception.rs`       | reflect (IDT) or bounce (trap table): `delivery.rs`; a pinned page-table store (`ptwr.rs`) or a PV kernel's privileged instruction (`privileged.rs`) is emulated |
//! | 0x75 SWINT           | `software_interrupt.rs` | reflect INT n / INT3 / INTO as the CPU would |
//! | 0x74 IRET            | `iret.rs`            | a handler returns: note it, let it run      |
//! | 0x88 ICEBP           | `icebp.rs`           | #DB after the instruction                   |
//! | 0x72 CPUID           | `cpuid.rs`           | emulate: the CPU the guest sees             |
//! | 0x10–0x1F, 0x65 CR writes | `cr.rs`         | emulate, or #GP for an invalid value (setting `intercept-cr`) |
//! | 0x20–0x3F DR access  | `dr.rs`              | the guest's debug registers (setting `intercept-dr`) |
//! | 0x6E RDTSC, 0x87 RDTSCP | `rdtsc.rs`        | the guest's clock (setting `intercept-rdtsc`) |
//! | 0x79 INVLPG          | `invlpg.rs`          | INVLPGA in the guest's ASID (setting `intercept-invlpg`) |
//! | 0x77 PAUSE           | `pause.rs`           | note the spin (setting `intercept-pause`)  |
//! | 0x8D XSETBV          | `xsetbv.rs`          | check XCR0, then set it                     |
//! | 0x60 INTR            | `intr.rs`            | the hv's own timer: take it; is the guest's timer due? |
//! | 0x64 VINTR           | `vintr.rs`           | the guest can take its pending interrupt: inject it |
//! | 0x78 HLT             | `hlt.rs`             | wait for the guest's timer, or end the domain |
//! | 0x7B IOIO            | `ioio.rs`            | emulate the port (the console UART)         |
//! | 0x7C MSR             | `msr.rs`             | emulate known MSRs, #GP for the rest        |
//! | 0x81 VMMCALL         | `vmmcall.rs`         | the hypercall                               |
//! | 0x80, 0x82–0x86, 0x7A | `svm_instruction.rs` | #UD: a guest may not run SVM instructions  |
//! | 0x7F SHUTDOWN        | `shutdown.rs`        | kill the domain: triple fault               |
//! | 0x400 NPF            | `npf.rs`             | kill: access outside the guest's memory     |
//! | -1 INVALID           | `invalid.rs`         | VMRUN refused the state: kill (or a TCG quirk) |
//! | anything else        | `unexpected.rs`      | kill, and say which exit it was             |

mod cpuid;
mod cr;
mod dr;
mod exception;
mod hlt;
mod icebp;
mod intr;
mod invalid;
mod invlpg;
mod ioio;
mod iret;
mod msr;
mod npf;
mod pause;
mod privileged;
mod ptwr;
mod rdtsc;
mod shutdown;
mod software_interrupt;
mod svm_instruction;
mod unexpected;
mod vintr;
mod vmmcall;
mod xsetbv;

pub use dr::{load_breakpoint_address, load_dr7};

use crate::domain::Domain;
use alloc::string::String;
use traplab_abi::svm::exitcode;

/// What happens after a handler.
#[derive(Debug)]
pub enum Next {
    /// Run the guest again.
    Resume,
    /// The domain is over.
    End(DomainEnd),
}

/// How a domain ended.
#[derive(Debug, Clone)]
pub enum DomainEnd {
    /// It asked to stop (exit hypercall, or HLT with nothing to wait for).
    Exited { status: i32, reason: String },
    /// The hypervisor stopped it.
    Killed { reason: String },
}

/// Handle the exit the domain's VMCB describes.
pub fn handle(domain: &mut Domain) -> Next {
    let (_, handler) = route(domain.vmcb.control.exitcode);
    handler(domain)
}

/// The file of the handler that takes exit `code` (for gdb's `monitor decision`).
pub fn handler_file(code: u64) -> &'static str {
    route(code).0
}

/// Which handler takes an exit: the table above, as code.
fn route(code: u64) -> (&'static str, fn(&mut Domain) -> Next) {
    match code {
        exitcode::EXCP_BASE..=0x5f => ("hv/src/exit/exception.rs", exception::handle),
        0x10..=0x1f | exitcode::CR0_SEL_WRITE => ("hv/src/exit/cr.rs", cr::handle),
        0x20..=0x3f => ("hv/src/exit/dr.rs", dr::handle),
        exitcode::RDTSC | exitcode::RDTSCP => ("hv/src/exit/rdtsc.rs", rdtsc::handle),
        exitcode::INVLPG => ("hv/src/exit/invlpg.rs", invlpg::handle),
        exitcode::PAUSE => ("hv/src/exit/pause.rs", pause::handle),
        exitcode::XSETBV => ("hv/src/exit/xsetbv.rs", xsetbv::handle),
        exitcode::SWINT => (
            "hv/src/exit/software_interrupt.rs",
            software_interrupt::handle,
        ),
        exitcode::INTR => ("hv/src/exit/intr.rs", intr::handle),
        exitcode::VINTR => ("hv/src/exit/vintr.rs", vintr::handle),
        exitcode::IRET => ("hv/src/exit/iret.rs", iret::handle),
        exitcode::ICEBP => ("hv/src/exit/icebp.rs", icebp::handle),
        exitcode::CPUID => ("hv/src/exit/cpuid.rs", cpuid::handle),
        exitcode::HLT => ("hv/src/exit/hlt.rs", hlt::handle),
        exitcode::IOIO => ("hv/src/exit/ioio.rs", ioio::handle),
        exitcode::MSR => ("hv/src/exit/msr.rs", msr::handle),
        exitcode::VMMCALL => ("hv/src/exit/vmmcall.rs", vmmcall::handle),
        exitcode::VMRUN
        | exitcode::VMLOAD
        | exitcode::VMSAVE
        | exitcode::STGI
        | exitcode::CLGI
        | exitcode::SKINIT
        | exitcode::INVLPGA => ("hv/src/exit/svm_instruction.rs", svm_instruction::handle),
        exitcode::SHUTDOWN => ("hv/src/exit/shutdown.rs", shutdown::handle),
        exitcode::NPF => ("hv/src/exit/npf/mod.rs", npf::handle),
        exitcode::INVALID | exitcode::INVALID_TCG => ("hv/src/exit/invalid.rs", invalid::handle),
        _ => ("hv/src/exit/unexpected.rs", unexpected::handle),
    }
}

/// The length of the instruction at RIP, for handlers that skip it. `None` when the bytes
/// at RIP do not decode (they were unreadable or are not an instruction).
fn instruction_length(domain: &Domain) -> Option<u64> {
    domain.decode().map(|instruction| instruction.len() as u64)
}

/// Kill the domain because the hypervisor cannot decode the instruction it must emulate.
fn undecodable(domain: &mut Domain) -> Next {
    crate::decide!(
        domain,
        traplab_abi::event::Action::Kill,
        "the instruction at RIP cannot be read or decoded, so it cannot be emulated"
    );
    Next::End(DomainEnd::Killed {
        reason: "undecodable instruction at the exit".into(),
    })
}
