//! VMMCALL (exit code 0x81): the hypercall.
//!
//! The ABI (numbers, registers, errors, the trap table and the bounce frame) is in
//! `traplab_abi::hypercall`. Arguments are untrusted: a pointer is translated through the
//! guest's page tables and must land in the guest's memory, or the guest gets EFAULT and
//! nothing else happens.
//!
//! The calls between domains, each in a file of its own in `vmmcall/`, as Xen's:
//!
//! | file                | hypercall                                  | Xen's                      |
//! |---------------------|--------------------------------------------|----------------------------|
//! | `event_channel.rs`  | `event_channel_op`: ports, send, unmask     | `do_event_channel_op`      |
//! | `grant_table.rs`    | `grant_table_op`: grant, map, unmap          | `do_grant_table_op`        |
//! | `sched_op.rs`       | `sched_op`: yield, block, poll              | `do_sched_op`              |
//! | `shared_info.rs`    | `set_shared_info`, `set_callback`           | `XENMAPSPACE_shared_info`, `set_callbacks` |
//! | `store_op.rs`       | `store_op`: read, write, wait               | xenstore, reduced          |

mod event_channel;
mod grant_table;
mod sched_op;
mod shared_info;
mod store_op;

use super::{Exit, undecodable};
use crate::decision::{Decision, Delivery, DomainEnd, Effect, Returning, Words};
use crate::domain::Guest;
use crate::domain::interrupts::{TimerTarget, Timers, VirtualTimer};
use crate::domain::page_tables::{NewTables, PIN_READS_PER_EXIT};
use crate::machine;
use crate::{decide, deliver};
use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use traplab_abi::event::{self, Action, EventType, ReturnPath, delivery_name};
use traplab_abi::hypercall::{self, IretFrame, TRAP_TABLE_MAX, TrapInfo, error};
use traplab_abi::svm::{self, Event};
use traplab_abi::x86::{self, RFlags};

pub fn handle(exit: &Exit, guest: &Guest) -> Decision {
    let Some(length) = exit.instruction_length(guest) else {
        return undecodable(exit, guest);
    };
    let next = guest.vcpu.rip_after(length);
    let number = guest.gpr(0);
    let (first, second) = (guest.gpr(7), guest.gpr(6));
    // A kernel's user programs may not reconfigure it (its trap table, its shared-info page,
    // PV mode): VMMCALL works at any CPL, so the hypervisor checks. Xen answers an HVM
    // guest's hypercall from CPL > 0 with -EPERM (`hvm_hypercall`); here user code may still
    // print, end the domain and ask for an exception TCG cannot raise, which the labs' user
    // programs do. (A PV kernel runs at CPL 3 itself: its calls are all its own.)
    if guest.vcpu.vmcb.save.cpl != 0 && !guest.pv.enabled && !FROM_USER_MODE.contains(&number) {
        let name = hypercall::name(number).unwrap_or("unknown hypercall");
        let decision = decide!(
            Action::Emulate,
            "hypercall {name} from CPL {}: only the kernel (CPL 0) may make it, as Xen refuses an HVM guest's user mode; user code may make console_write, exit and raise_event: EPERM",
            guest.vcpu.vmcb.save.cpl
        );
        return finish(decision, next, number, error::EPERM);
    }

    match number {
        hypercall::CONSOLE_WRITE => {
            let decision = decide!(
                Action::Emulate,
                "hypercall console_write({first:#x}, {second}): the hypervisor writes the guest's buffer to its console"
            );
            match console_write(guest, first, second) {
                Ok(bytes) => {
                    let written = bytes.len() as i64;
                    finish(decision.with(Effect::Console(bytes)), next, number, written)
                }
                Err(code) => finish(decision, next, number, code),
            }
        }
        hypercall::EXIT => {
            let status = first as i32;
            decide!(
                Action::Emulate,
                "hypercall exit({status}): the domain asks to end"
            )
            .describe(format!("exit({status})"))
            .ending(DomainEnd::Exited {
                status,
                reason: "exit hypercall".into(),
            })
        }
        // A bounce frame is 64-bit mode's (8-byte slots, SS and RSP always pushed), and the
        // handler runs with the interrupted CS: a 32-bit kernel would read the frame wrong
        // and run a 64-bit handler as 32-bit code. Xen gives a 32-bit PV guest another frame
        // (`compat_create_bounce_frame`); traplab's trap tables are for 64-bit kernels.
        hypercall::SET_TRAP_TABLE if first != 0 && guest.vcpu.vmcb.code_bits() != 64 => {
            let decision = decide!(
                Action::Emulate,
                "hypercall set_trap_table({first:#x}): the domain is not in 64-bit mode, and a bounce frame and its handler are 64-bit mode's: EINVAL"
            );
            finish(decision, next, number, error::EINVAL)
        }
        hypercall::SET_TRAP_TABLE => {
            let decision = decide!(
                Action::Emulate,
                "hypercall set_trap_table({first:#x}): from now on the hypervisor delivers the listed exceptions itself (bounce)"
            );
            let (table, code) = trap_table(guest, first);
            finish(decision.with(Effect::TrapTable(table)), next, number, code)
        }
        hypercall::IRET => {
            let decision = decide!(
                Action::Emulate,
                "hypercall iret: the guest's bounced handler returns; the hypervisor restores the frame at RSP"
            );
            iret(guest, decision, next)
        }
        hypercall::RAISE_EVENT => raise_event(guest, next, first, second),
        hypercall::PIN_PAGE_TABLE => pin_page_table(guest, next, first),
        hypercall::SET_TIMER => {
            let decision = match second {
                0 => decide!(
                    Action::Emulate,
                    "hypercall set_timer({first:#x}, 0): the guest stops its timer"
                ),
                _ => decide!(
                    Action::Emulate,
                    "hypercall set_timer({first:#x}, {second} µs): the hypervisor will interrupt the guest periodically"
                ),
            };
            set_timer(exit, guest, decision, next, first, second)
        }
        hypercall::SET_PV_MODE => {
            let decision = decide!(
                Action::Emulate,
                "hypercall set_pv_mode({first}): the hypervisor will emulate the privileged instructions this kernel runs at CPL 3"
            );
            match first {
                0 | 1 => {
                    // Whether the kernel takes interrupts now: its virtual flag if it is in PV
                    // mode already, else RFLAGS.IF. Entering PV mode, the virtual flag starts
                    // as that, and RFLAGS.IF is set, as a Xen PV guest always runs with it (the
                    // bounce and `iret` keep it so: `delivery.rs`); leaving it, RFLAGS.IF
                    // takes the virtual flag back.
                    let rflags = guest.vcpu.vmcb.save.rflags;
                    let interrupts = guest.interrupts_enabled();
                    let if_bit = RFlags::INTERRUPT_FLAG.bits();
                    let pv = first == 1;
                    let real = match pv || interrupts {
                        true => rflags | if_bit,
                        false => rflags & !if_bit,
                    };
                    // (Asked to leave a PV mode it is not in, nothing changes.)
                    let changes = pv || guest.pv.enabled;
                    let decision = decision
                        .with(Effect::PvMode(pv))
                        .with_all(changes.then_some(Effect::VirtualInterruptFlag(interrupts)))
                        .with_all(changes.then_some(Effect::Rflags(real)));
                    finish(decision, next, number, 0)
                }
                _ => finish(decision, next, number, error::EINVAL),
            }
        }
        hypercall::SCHED_OP => sched_op::handle(guest, next, first, second),
        hypercall::EVENT_CHANNEL_OP => event_channel::handle(guest, next, first, second),
        hypercall::GRANT_TABLE_OP => grant_table::handle(guest, next, first, second),
        hypercall::SET_SHARED_INFO => shared_info::set_shared_info(guest, next, first),
        hypercall::SET_CALLBACK => shared_info::set_callback(next, first, second),
        hypercall::STORE_OP => store_op::handle(guest, next),
        // EXERCISE hypercall.1: add `domain_id` (number 8): it returns the caller's domain
        // number (`guest.id`). Decide with Action::Emulate and a reason, like the others.
        _ => {
            let decision = decide!(
                Action::Emulate,
                "hypercall number {number} does not exist: the guest gets ENOSYS"
            );
            finish(decision, next, number, error::ENOSYS)
        }
    }
}

/// The hypercall returns: RAX = result, RIP past the VMMCALL, and the `emulate` event says
/// what it returned.
/// The hypercalls a non-PV kernel's user programs (CPL 3) may make: print, end the domain,
/// and ask for an exception (`guests/src/user.rs`; the alignment-check lab's #AC).
const FROM_USER_MODE: [u64; 3] = [
    hypercall::CONSOLE_WRITE,
    hypercall::EXIT,
    hypercall::RAISE_EVENT,
];

fn finish(mut decision: Decision, next: u64, number: u64, result: i64) -> Decision {
    let call = event::Argument::Text(Cow::Borrowed(
        hypercall::name(number).unwrap_or("unknown hypercall"),
    ));
    let result_words = event::Argument::Signed(result);
    let error_name = error::name(result).map(|name| event::Argument::Text(Cow::Borrowed(name)));
    // What the handler said before (rare, and then formatted: a template has no templates in it).
    let what = match (decision.what.take(), error_name) {
        (None, None) => Words::template("{} returned {}", [call, result_words]),
        (None, Some(name)) => Words::template("{} returned {} ({})", [call, result_words, name]),
        (Some(before), None) => Words::template(
            "{}; {} returned {}",
            [event::Argument::Text(before.render()), call, result_words],
        ),
        (Some(before), Some(name)) => Words::template(
            "{}; {} returned {} ({})",
            [
                event::Argument::Text(before.render()),
                call,
                result_words,
                name,
            ],
        ),
    };
    decision
        .with(Effect::Gpr(0, result as u64))
        .with(Effect::Rip(next))
        .describe(what)
}

/// A hypercall's argument structure of `N` bytes, read from guest-virtual `address`, laid
/// out as in its ABI (little-endian, `#[repr(C)]`).
struct Argument<const N: usize> {
    address: u64,
    bytes: [u8; N],
}

impl<const N: usize> Argument<N> {
    /// Read it as the guest's CPU could (`Domain::cpu_read`); `EFAULT` when it could not.
    fn read(guest: &Guest, address: u64) -> Result<Argument<N>, i64> {
        let mut bytes = [0u8; N];
        guest
            .cpu_read(address, &mut bytes)
            .map_err(|_| error::EFAULT)?;
        Ok(Argument { address, bytes })
    }

    /// Read one the call writes results back into: the guest's CPU must be able to write it
    /// too. A read-only page (a pinned page table among them) is `EFAULT` before anything
    /// changes, where Xen's `copy_to_guest` would fault after the call's work.
    fn read_for_output(guest: &Guest, address: u64) -> Result<Argument<N>, i64> {
        guest
            .cpu_pieces(address, N, true)
            .map_err(|_| error::EFAULT)?;
        Argument::read(guest, address)
    }

    fn field<const W: usize>(&self, offset: usize) -> [u8; W] {
        let mut field = [0u8; W];
        field.copy_from_slice(&self.bytes[offset..offset + W]);
        field
    }

    fn u16(&self, offset: usize) -> u16 {
        u16::from_le_bytes(self.field(offset))
    }

    fn u32(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.field(offset))
    }

    fn u64(&self, offset: usize) -> u64 {
        u64::from_le_bytes(self.field(offset))
    }

    /// The guest-virtual address of the field at `offset`.
    fn address(&self, offset: usize) -> u64 {
        self.address.wrapping_add(offset as u64)
    }

    /// The effect that writes an output field back (it was read, so it is the guest's).
    fn write(&self, offset: usize, bytes: &[u8]) -> Effect {
        Effect::GuestWrite {
            address: self.address(offset),
            bytes: bytes.to_vec(),
        }
    }
}

/// The bytes of `console_write(buffer, length)`.
fn console_write(guest: &Guest, buffer: u64, length: u64) -> Result<Vec<u8>, i64> {
    if length > hypercall::CONSOLE_WRITE_MAX {
        return Err(error::EINVAL);
    }
    let mut bytes = vec![0u8; length as usize];
    guest
        .cpu_read(buffer, &mut bytes)
        .map_err(|_| error::EFAULT)?;
    Ok(bytes)
}

/// Check the vector and the period, then arm (or stop) the timer: the hypervisor's own
/// timer must run for it to notice the deadlines (`domain/interrupts.rs`).
fn set_timer(
    exit: &Exit,
    guest: &Guest,
    decision: Decision,
    next: u64,
    vector: u64,
    period_us: u64,
) -> Decision {
    // Vectors 0–31 are the CPU's exceptions: an interrupt there would look like a fault.
    let Ok(vector @ 32..=255) = u8::try_from(vector) else {
        return finish(decision, next, hypercall::SET_TIMER, error::EINVAL);
    };
    if period_us == 0 {
        return finish(
            decision.with(Effect::Timers(Timers {
                set_timer: None,
                ..guest.vcpu.interrupts.timers
            })),
            next,
            hypercall::SET_TIMER,
            0,
        );
    }
    if !(hypercall::TIMER_PERIOD_MIN_US..=hypercall::TIMER_PERIOD_MAX_US).contains(&period_us) {
        return finish(decision, next, hypercall::SET_TIMER, error::EINVAL);
    }
    let period_tsc = ((guest.machine.tsc_hz() as u128 * period_us as u128) / 1_000_000) as u64;
    let timer = VirtualTimer {
        vector,
        period_tsc,
        due_tsc: exit.tsc + period_tsc,
        target: TimerTarget::Pending,
    };
    // The hypervisor looks at the guest's timer at its own timer's ticks: as often as the
    // guest's fires (up to TIMER_MAX_HZ), or its ticks would merge.
    let guest_hz = 1_000_000u64.div_ceil(period_us) as u32;
    let hz = guest
        .machine
        .timer_hz()
        .max(guest_hz.min(machine::TIMER_MAX_HZ));
    let decision = decision
        .with(Effect::Timers(Timers {
            set_timer: Some(timer),
            ..guest.vcpu.interrupts.timers
        }))
        .with(Effect::QuickenHostTimer(guest_hz))
        .describe(format!(
            "timer armed: interrupt {vector:#x} every {period_us} µs, noticed at the hypervisor's {hz} Hz ticks"
        ));
    finish(decision, next, hypercall::SET_TIMER, 0)
}

/// The trap table after `set_trap_table(list)`, and the call's result, as Xen's
/// `do_set_trap_table`: each entry of the list (16 bytes, up to one whose handler is 0) sets
/// its vector's handler, the other vectors' stay; a list pointer of 0 clears the table, and
/// every exception is reflected again. An entry that cannot be read is EFAULT, one whose
/// handler is not a canonical address EINVAL (a bounce there would fault on its first
/// instruction fetch), and so is a list longer than TRAP_TABLE_MAX: the entries before it
/// are set all the same, as Xen's loop has stored them by then.
fn trap_table(guest: &Guest, list: u64) -> (Vec<TrapInfo>, i64) {
    if list == 0 {
        return (Vec::new(), 0);
    }
    let mut table = guest.pv.trap_table.clone();
    for index in 0..=TRAP_TABLE_MAX {
        let mut bytes = [0u8; 16];
        let address = list.wrapping_add(16 * index as u64);
        if guest.cpu_read(address, &mut bytes).is_err() {
            return (table, error::EFAULT);
        }
        let entry = TrapInfo::from_bytes(bytes);
        if entry.handler == 0 {
            return (table, 0);
        }
        if index == TRAP_TABLE_MAX || !x86::canonical(entry.handler) {
            return (table, error::EINVAL);
        }
        table.retain(|old| old.vector != entry.vector);
        table.push(entry);
    }
    (table, error::EINVAL)
}

/// The iret hypercall: restore RAX, RIP, RFLAGS and RSP from the frame at RSP.
fn iret(guest: &Guest, decision: Decision, next: u64) -> Decision {
    let save = &guest.vcpu.vmcb.save;
    let mut bytes = [0u8; 48];
    if guest.cpu_read(save.rsp, &mut bytes).is_err() {
        return finish(decision, next, hypercall::IRET, error::EFAULT);
    }
    let word = |index: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[index * 8..index * 8 + 8]);
        u64::from_le_bytes(word)
    };
    let frame = IretFrame {
        rax: word(0),
        rip: word(1),
        cs: word(2),
        rflags: word(3),
        rsp: word(4),
        ss: word(5),
    };
    // No privilege change through iret: CS and SS must be what they are now.
    if frame.cs != save.cs.selector as u64 || frame.ss != save.ss.selector as u64 {
        return finish(decision, next, hypercall::IRET, error::EINVAL);
    }
    // A RIP the CPU's own IRET refuses with #GP(0) (AMD APM vol. 3, IRET: a non-canonical
    // RIP in 64-bit mode, one beyond 4 GiB outside it) is refused here too, like Xen's
    // hypercalls refuse a bad argument: EINVAL, and nothing changes (the guest sees the
    // error after the VMMCALL, in the handler that made the call).
    let rip_ok = match guest.vcpu.vmcb.code_bits() {
        64 => x86::canonical(frame.rip),
        _ => frame.rip <= u32::MAX as u64,
    };
    if !rip_ok {
        let decision = decision.describe(format!(
            "the frame's RIP {:#x} is one a CPU's IRET refuses with #GP(0)",
            frame.rip
        ));
        return finish(decision, next, hypercall::IRET, error::EINVAL);
    }
    // The guest may restore the status flags, TF, IF, DF, NT, RF, AC and ID, as a CPU's
    // IRET restores them at any CPL (AMD APM vol. 3, IRET) and Xen's `do_iret` keeps all but
    // IOPL and VM. RF is how a #DB handler steps past an instruction breakpoint: set in the
    // frame, the instruction it returns to runs once without its breakpoint (Intel SDM vol.
    // 3B, 17.3.1.1). IOPL, VM and the virtual-interrupt flags stay as the hypervisor has
    // them.
    let guest_flags = RFlags::CARRY_FLAG
        | RFlags::PARITY_FLAG
        | RFlags::AUXILIARY_CARRY_FLAG
        | RFlags::ZERO_FLAG
        | RFlags::SIGN_FLAG
        | RFlags::TRAP_FLAG
        | RFlags::INTERRUPT_FLAG
        | RFlags::DIRECTION_FLAG
        | RFlags::OVERFLOW_FLAG
        | RFlags::NESTED_TASK
        | RFlags::RESUME_FLAG
        | RFlags::ALIGNMENT_CHECK
        | RFlags::ID;
    // (A PV kernel's IF is its virtual one, below: RFLAGS.IF is set, as Xen's do_iret sets
    // it, `| X86_EFLAGS_IF`: a PV guest always runs with it.)
    let (guest_flags, always) = match guest.pv.enabled {
        true => (
            guest_flags - RFlags::INTERRUPT_FLAG,
            RFlags::INTERRUPT_FLAG.bits(),
        ),
        false => (guest_flags, 0),
    };
    let rflags =
        (save.rflags & !guest_flags.bits()) | (frame.rflags & guest_flags.bits()) | 0x2 | always;
    let returning = guest.vcpu.in_flight.last().copied();
    // A PV kernel's interrupt flag is its virtual one: the frame's IF restores it (Xen's
    // do_iret sets evtchn_upcall_mask from it).
    let virtual_interrupts = guest.pv.enabled.then_some(Effect::VirtualInterruptFlag(
        frame.rflags & RFlags::INTERRUPT_FLAG.bits() != 0,
    ));
    decision
        .with(Effect::Gpr(0, frame.rax))
        .with(Effect::Gpr(4, frame.rsp))
        .with(Effect::Rflags(rflags))
        .with_all(virtual_interrupts)
        .with(Effect::Rip(frame.rip))
        .with(Effect::PopInFlight)
        .describe("iret: the bounced handler's frame restored")
        .returning(Returning {
            via: ReturnPath::Hypercall,
            event: returning.map(|event| (event.vector, event.kind)),
            rip: frame.rip,
            cs: frame.cs as u16,
            rflags,
            rsp: frame.rsp,
        })
}

/// pin_page_table(root): walk the tables under `root` a piece per exit
/// (`domain/page_tables.rs`); pin them all once the walk is over, or none if one is refused.
/// Until then RIP stays at the VMMCALL, which runs again: a hypercall continuation, as
/// Xen's, so that the hypervisor regains control between the pieces (its timer, the host's
/// pause, gdb, the scheduler) however many tables the guest made.
///
/// A pin needs CR0.WP set, long mode, and the tables the domain runs on pinned already, or
/// being pinned (`Domain::pin_walk` asks at every piece), and from the first piece of the
/// walk on the CR3 writes exit too (CR0's that change more than TS and MP, and CR4's, exit in
/// every domain): `cr.rs` refuses a CR0 write that clears WP or PG, as Xen keeps a PV guest's
/// CR0 its own, and a root that is not pinned (`Domain::may_run_on`). (A CR4 write that
/// clears PAE gets the CPU's #GP.) The CR3 intercept stays on if the walk is refused later:
/// `cr.rs` then emulates those writes as the CPU does, since nothing is pinned.
fn pin_page_table(guest: &Guest, next: u64, root: u64) -> Decision {
    let number = hypercall::PIN_PAGE_TABLE;
    let rip = guest.vcpu.vmcb.save.rip;
    let pending = guest.pv.pinning.is_some();
    let step = match guest.pin_walk(root, rip, PIN_READS_PER_EXIT) {
        Ok(step) => step,
        Err(why) => {
            let decision = decide!(
                Action::Emulate,
                "hypercall pin_page_table({root:#x}): {why}, so nothing is pinned: EINVAL"
            )
            .with_all(pending.then_some(Effect::PinContinuation(None)));
            return finish(decision, next, number, error::EINVAL);
        }
    };
    let earlier = match (&guest.pv.pinning, step.fresh) {
        (Some(pinning), false) => pinning.found.len(),
        _ => 0,
    };
    let tables = earlier + step.found.len();
    if !step.done {
        let reads = step.reads;
        return decide!(
            Action::Emulate,
            "hypercall pin_page_table({root:#x}): {tables} new tables found so far, and the walk is not over: RIP stays at the VMMCALL, which runs again for the next piece (a hypercall continuation), so that no exit holds the CPU for long"
        )
        .with(Effect::PinContinuation(Some(Box::new(step))))
        .with(Effect::InterceptCr3Writes)
        .describe(format!(
            "pin_page_table: {reads} words read, {tables} new tables so far; continues"
        ));
    }
    // The walk is over: every table it found is pinned, at once, with its writable leaves.
    let mut all = match (&guest.pv.pinning, step.fresh) {
        (Some(pinning), false) => NewTables {
            tables: pinning.found.clone(),
            leaves: pinning.leaves.clone(),
        },
        _ => NewTables::default(),
    };
    all.tables.extend(step.found);
    all.leaves.extend(step.leaves);
    let decision = decide!(
        Action::Emulate,
        "hypercall pin_page_table({root:#x}): from now on the hypervisor checks every write to these page tables, and a MOV to CR3 exits, so that the domain runs on pinned tables only (its CR0 writes that change more than TS and MP exit in every domain: WP and PG stay set)"
    )
    .with(Effect::PinPageTables(Box::new(all)))
    .with(Effect::InterceptCr3Writes)
    .with_all(pending.then_some(Effect::PinContinuation(None)))
    // The TLB may still hold a writable translation of a table made read-only before the
    // pin: flushed, as Xen flushes on a page's type change (`_get_page_type`).
    .with(Effect::FlushTlb);
    finish(decision, next, number, tables as i64)
}

/// raise_event(vector, error_code): the hypercall completes (RAX = 0, RIP past it), then the
/// event arrives, as if raised right after the VMMCALL.
fn raise_event(guest: &Guest, next: u64, vector: u64, error_code: u64) -> Decision {
    let Ok(vector) = u8::try_from(vector) else {
        let decision = decide!(
            Action::Emulate,
            "hypercall raise_event({vector}): not a vector, EINVAL"
        );
        return finish(decision, next, hypercall::RAISE_EVENT, error::EINVAL);
    };
    // An NMI handler runs: a CPU holds a second NMI back until that handler's IRET has run
    // (AMD APM vol. 2, 8.2.2). The NMI line stays raised, and the NMI comes then
    // (`apply::before_resume`), as one the local APIC was asked for.
    if vector == 2 && guest.vcpu.nmi_blocked {
        let decision = decide!(
            Action::Emulate,
            "hypercall raise_event(NMI): an NMI handler is running, and a CPU holds a second NMI back until its IRET has run: the NMI waits, and comes then"
        )
        .with(Effect::RequestNmi);
        return finish(decision, next, hypercall::RAISE_EVENT, 0);
    }
    if vector >= 32 {
        let decision = decide!(
            Action::Emulate,
            "hypercall raise_event({vector}): only exceptions and NMI can be raised, EINVAL"
        );
        return finish(decision, next, hypercall::RAISE_EVENT, error::EINVAL);
    }
    // A CPU that raises #PF writes the faulting address in CR2, and one that raises #DB its
    // cause in DR6 (AMD APM vol. 2, 8.2.15 and 8.2.2): raise_event has no argument for
    // either, so it could only deliver them with a stale register. QEMU's TCG raises both
    // itself: a guest that wants one faults, or single-steps, for real.
    if matches!(vector, 1 | 14) {
        let name = delivery_name(vector, EventType::Exception);
        let register = if vector == 14 { "CR2" } else { "DR6" };
        let decision = decide!(
            Action::Emulate,
            "hypercall raise_event({name}): a CPU raising {name} also writes {register}, which raise_event cannot say; QEMU's TCG raises {name} natively, EINVAL"
        );
        return finish(decision, next, hypercall::RAISE_EVENT, error::EINVAL);
    }
    // EXERCISE alignment-check.1: a CPU raises #AC only at CPL 3, with CR0.AM and RFLAGS.AC
    // set: refuse raise_event(#AC) otherwise, with EINVAL (and a decision that says why).
    // EXERCISE simd-exception.1: with CR4.OSXMMEXCPT clear, a CPU raises #UD instead of #XM
    // for an unmasked SIMD error: deliver that for raise_event(#XM).
    // EXERCISE machine-check.1: with CR4.MCE clear, a CPU does not deliver #MC: it shuts
    // down. Kill the domain for raise_event(#MC) then, as `exception.rs` does for a triple fault.
    let returned = [Effect::Gpr(0, 0), Effect::Rip(next)];
    if vector == 2 {
        return decide!(
            Action::Emulate,
            "hypercall raise_event(NMI): the hypervisor sends the guest a non-maskable interrupt (EVENTINJ type NMI)"
        )
        .with_all(returned)
        .deliver(Delivery::Inject {
            event: Event {
                vector: 2,
                kind: EventType::Nmi,
                error_code: None,
            },
            handler: guest.idt_handler(2),
            synthetic: true,
        });
    }
    if !svm::is_exception_vector(vector) {
        let decision = decide!(
            Action::Emulate,
            "hypercall raise_event({vector}): vector {vector} is reserved, no exception (a CPU's VMRUN refuses to inject it, VMEXIT_INVALID), EINVAL"
        );
        return finish(decision, next, hypercall::RAISE_EVENT, error::EINVAL);
    }
    // An error code is 32 bits (EVENTINJ's ERRORCODE): a larger one is no error code.
    let Ok(error_code) = u32::try_from(error_code) else {
        let decision = decide!(
            Action::Emulate,
            "hypercall raise_event({vector}, {error_code:#x}): an error code has 32 bits, EINVAL"
        );
        return finish(decision, next, hypercall::RAISE_EVENT, error::EINVAL);
    };
    let name = delivery_name(vector, EventType::Exception);
    // #CP, #VC and #SX: TCG drops their error code (`quirks.rs`).
    crate::quirks::injected_error_code(deliver!(
        guest,
        after returned,
        vector,
        // #DF's error code is always 0 (AMD APM vol. 2, 8.2.9), whatever was asked for.
        if vector == 8 { 0 } else { error_code },
        true,
        "hypercall raise_event({name}): the guest asks for an exception QEMU's TCG cannot raise natively, and gets it as hardware would deliver it"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::vcpu::InFlight;
    use crate::testing::assert_returned;
    use crate::testing::{self, DATA, ENTRY, Run, Test, UNMAPPED, trap};
    use crate::vmcb::cr_write;
    use traplab_abi::exit::ExitReason;
    use traplab_abi::x86::Cr0Flags;
    use traplab_abi::x86::pte;

    const STACK: u64 = 0x7_ff00;

    /// Run the VMMCALL at RIP.
    fn call(test: &mut Test) -> Run {
        test.run(test.exit(ExitReason::Vmmcall))
    }

    #[test]
    fn console_write_writes_the_guest_s_buffer_and_returns_its_length() {
        let mut test = Test::hypercall(hypercall::CONSOLE_WRITE, DATA, 6);
        test.write(DATA, b"hello\n");
        let run = call(&mut test);
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(run.kinds(), ["decide", "console", "emulate"]);
        assert_eq!(run.console(), ["hello"]);
        assert_eq!(run.emulate().what, "console_write returned 6");
        assert_returned(&test, 6);
    }

    #[test]
    fn console_write_of_an_unmapped_buffer_returns_efault_and_writes_nothing() {
        // A pointer is untrusted: translated through the guest's page tables, it must land
        // in the guest's memory.
        let mut test = Test::hypercall(hypercall::CONSOLE_WRITE, UNMAPPED, 6);
        let run = call(&mut test);
        assert_returned(&test, error::EFAULT);
        assert!(run.console().is_empty());
        assert_eq!(
            test.domain.devices.console.flush(),
            None,
            "not even half a line"
        );
        assert_eq!(run.emulate().what, "console_write returned -14 (EFAULT)");
    }

    #[test]
    fn console_write_of_a_non_canonical_buffer_returns_efault() {
        // Bits 63:47 not all equal: no page table can map it (AMD APM vol. 2, 5.3.1).
        let mut test = Test::hypercall(hypercall::CONSOLE_WRITE, 0x8000_0000_0000_0000, 1);
        let run = call(&mut test);
        assert_returned(&test, error::EFAULT);
        assert!(run.console().is_empty());
    }

    #[test]
    fn console_write_at_cpl_3_of_a_supervisor_page_returns_efault() {
        // The hypervisor reads for the guest as its CPU would: user code cannot have its
        // kernel's pages printed (Xen's copy_from_guest checks the same).
        use crate::testing::PD;
        use traplab_abi::x86::pte;
        let mut test = Test::hypercall(hypercall::CONSOLE_WRITE, DATA, 6);
        test.write(DATA, b"secret");
        test.write_u64(PD, pte::PRESENT | pte::WRITABLE | pte::HUGE); // no USER
        test.domain.vcpu.vmcb.save.cpl = 3;
        let run = call(&mut test);
        assert_returned(&test, error::EFAULT);
        assert!(run.console().is_empty());
    }

    #[test]
    fn console_write_longer_than_4096_bytes_returns_einval() {
        let mut test = Test::hypercall(hypercall::CONSOLE_WRITE, DATA, 4097);
        let run = call(&mut test);
        assert_returned(&test, error::EINVAL);
        assert!(run.console().is_empty());
    }

    #[test]
    fn exit_ends_the_domain_with_the_guest_s_status_and_does_not_return() {
        let mut test = Test::hypercall(hypercall::EXIT, 3, 0);
        let run = call(&mut test);
        assert_eq!(testing::exited(&run.decision), (3, "exit hypercall"));
        assert_eq!(run.applied.end.as_ref(), run.decision.end.as_deref());
        assert_eq!(test.rip(), ENTRY, "exit does not return");
    }

    #[test]
    fn set_trap_table_installs_the_entries_up_to_the_one_with_handler_0() {
        let entries = [trap(14, 0x21_0000), trap(13, 0x21_1000)];
        let mut test = Test::hypercall(hypercall::SET_TRAP_TABLE, DATA, 0);
        test.write_trap_table(DATA, &entries);
        call(&mut test);
        assert_returned(&test, 0);
        assert_eq!(test.domain.pv.trap_table, entries);
    }

    #[test]
    fn set_trap_table_sets_each_listed_vector_and_keeps_the_others_the_last_entry_winning() {
        // Xen's do_set_trap_table copies each entry to its vector's slot: a second call
        // adds to the first, and of two entries for one vector the later stays.
        let mut test = Test::hypercall(hypercall::SET_TRAP_TABLE, DATA, 0);
        test.trap_table(&[trap(3, 0x21_0000), trap(14, 0x21_1000)]);
        test.write_trap_table(DATA, &[trap(14, 0x21_2000), trap(14, 0x21_3000)]);
        call(&mut test);
        assert_returned(&test, 0);
        assert_eq!(
            test.domain.pv.trap_table,
            [trap(3, 0x21_0000), trap(14, 0x21_3000)]
        );
    }

    #[test]
    fn set_trap_table_with_more_entries_than_vectors_returns_einval_after_setting_them() {
        // 257 entries repeat a vector: traplab's bound (Xen's loop goes on in pieces). As in
        // Xen, the entries read before the refusal are set.
        let many: Vec<TrapInfo> = (0..=256)
            .map(|index| trap(index as u8, 0x21_0000))
            .collect();
        let mut test = Test::hypercall(hypercall::SET_TRAP_TABLE, DATA, 0);
        test.write_trap_table(DATA, &many);
        call(&mut test);
        assert_returned(&test, error::EINVAL);
        assert_eq!(test.domain.pv.trap_table.len(), 256);
    }

    #[test]
    fn set_trap_table_with_a_non_canonical_handler_returns_einval_after_the_entries_before() {
        // Xen's do_set_trap_table refuses it (a bounce there would fault at once), having
        // set the entries before it.
        let mut test = Test::hypercall(hypercall::SET_TRAP_TABLE, DATA, 0);
        test.trap_table(&[trap(3, 0x21_0000)]);
        test.write_trap_table(
            DATA,
            &[
                trap(13, 0x21_1000),
                trap(6, 0x8000_0000_0000_0000),
                trap(14, 0x21_2000),
            ],
        );
        call(&mut test);
        assert_returned(&test, error::EINVAL);
        assert_eq!(
            test.domain.pv.trap_table,
            [trap(3, 0x21_0000), trap(13, 0x21_1000)]
        );
    }

    #[test]
    fn set_trap_table_of_0_clears_it_and_exceptions_are_reflected_again() {
        let mut test = Test::hypercall(hypercall::SET_TRAP_TABLE, 0, 0);
        test.trap_table(&[trap(3, 0x21_0000)]);
        call(&mut test);
        assert_returned(&test, 0);
        assert!(test.domain.pv.trap_table.is_empty());
    }

    #[test]
    fn set_trap_table_with_a_bad_pointer_returns_efault() {
        let mut test = Test::hypercall(hypercall::SET_TRAP_TABLE, UNMAPPED, 0);
        call(&mut test);
        assert_returned(&test, error::EFAULT);
        assert!(test.domain.pv.trap_table.is_empty());
    }

    /// A bounced #PF handler at the `iret` hypercall, its frame (RAX, RIP, CS, RFLAGS,
    /// RSP, SS) at RSP.
    fn bounced_handler_returning(rflags: u64, cs: u64) -> Test {
        let mut test = Test::hypercall(hypercall::IRET, 0, 0);
        for (index, word) in [0x77, 0x20_0040, cs, rflags, 0x7_ff80, 0x10]
            .into_iter()
            .enumerate()
        {
            test.write_u64(STACK + 8 * index as u64, word);
        }
        test.domain.vcpu.vmcb.save.rsp = STACK;
        test.domain.vcpu.in_flight.push(InFlight {
            vector: 14,
            kind: EventType::Exception,
        });
        test
    }

    #[test]
    fn iret_restores_rax_rip_rflags_and_rsp_from_the_frame() {
        let mut test = bounced_handler_returning(0x246, 0x08);
        let run = call(&mut test);
        assert_eq!(run.kinds(), ["decide", "emulate", "return"]);
        assert_eq!(test.gpr(0), 0x77, "RAX: the handler saved it in the frame");
        assert_eq!(
            test.rip(),
            0x20_0040,
            "not past the VMMCALL: the frame's RIP"
        );
        assert_eq!(test.gpr(4), 0x7_ff80);
        assert_eq!(test.domain.vcpu.vmcb.save.rflags, 0x246);
        let returned = run.returned();
        assert_eq!(returned.via, ReturnPath::Hypercall);
        assert_eq!(returned.name.as_deref(), Some("#PF"));
        assert!(test.domain.vcpu.in_flight.is_empty());
    }

    #[test]
    fn a_pv_kernel_s_iret_restores_its_virtual_interrupt_flag_and_sets_rflags_if() {
        // Xen's do_iret: evtchn_upcall_mask from the frame's IF, and RFLAGS.IF set whatever
        // the frame says (`| X86_EFLAGS_IF`).
        for frame_flags in [0x246, 0x046] {
            let mut test = bounced_handler_returning(frame_flags, 0x08);
            test.domain.pv.enabled = true;
            test.domain.vcpu.vmcb.save.rflags = 0x2;
            call(&mut test);
            assert_eq!(
                test.domain.pv.virtual_interrupt_flag,
                frame_flags & 0x200 != 0
            );
            assert_eq!(test.domain.vcpu.vmcb.save.rflags, 0x246, "RFLAGS.IF set");
        }
    }

    #[test]
    fn iret_does_not_let_the_guest_raise_its_iopl() {
        // As IRET at CPL > 0: IOPL stays as it was (AMD APM vol. 3, IRET).
        let mut test = bounced_handler_returning(0x3246, 0x08);
        call(&mut test);
        assert_eq!(test.domain.vcpu.vmcb.save.rflags, 0x246, "IOPL 3 dropped");
    }

    #[test]
    fn iret_restores_rf_and_nt_as_a_cpu_s_iret_does() {
        // A #DB handler returning to an instruction breakpoint sets RF in its frame: the
        // instruction then runs once without the breakpoint. Dropped, the breakpoint fired
        // again at once, for ever. (Xen's do_iret keeps all but IOPL and VM.)
        let resume_and_nested = RFlags::RESUME_FLAG | RFlags::NESTED_TASK;
        let mut test = bounced_handler_returning(0x246 | resume_and_nested.bits(), 0x08);
        call(&mut test);
        assert_eq!(
            test.domain.vcpu.vmcb.save.rflags,
            0x246 | resume_and_nested.bits()
        );
    }

    #[test]
    fn iret_to_another_code_segment_returns_einval() {
        // No privilege change through iret.
        let mut test = bounced_handler_returning(0x246, 0x1b);
        let run = call(&mut test);
        assert_returned(&test, error::EINVAL);
        assert_eq!(run.decision.returning, None);
    }

    #[test]
    fn iret_to_a_non_canonical_rip_returns_einval_and_changes_nothing() {
        // A CPU's IRETQ to a non-canonical RIP raises #GP(0) (AMD APM vol. 3, IRET): the
        // hypercall refuses that frame, as it refuses another CS.
        let mut test = bounced_handler_returning(0x246, 0x08);
        test.write_u64(STACK + 8, 0x8000_0000_0000_0000);
        let run = call(&mut test);
        assert_returned(&test, error::EINVAL);
        assert_eq!(test.gpr(4), STACK, "RSP not restored");
        assert_eq!(run.decision.returning, None);
        assert_eq!(
            test.domain.vcpu.in_flight.len(),
            1,
            "the handler is still running"
        );
        assert!(
            run.emulate().what.starts_with(
                "the frame's RIP 0x8000000000000000 is one a CPU's IRET refuses with #GP(0); iret returned -22 (EINVAL)"
            ),
            "{}",
            run.emulate().what
        );
    }

    #[test]
    fn iret_with_an_unreadable_stack_returns_efault_after_the_vmmcall() {
        let mut test = bounced_handler_returning(0x246, 0x08);
        test.domain.vcpu.vmcb.save.rsp = UNMAPPED;
        let run = call(&mut test);
        assert_returned(&test, error::EFAULT);
        assert!(!run.kinds().contains(&"return"));
        assert_eq!(
            test.domain.vcpu.in_flight.len(),
            1,
            "the handler did not return"
        );
    }

    #[test]
    fn raise_event_nmi_injects_an_nmi_after_the_hypercall_returns() {
        // EVENTINJ type 2 (NMI); an exception of vector 2 would be illegal (AMD APM vol. 2,
        // 15.20).
        let mut test = Test::hypercall(hypercall::RAISE_EVENT, 2, 0);
        test.gate(2, 0x21_2000);
        let run = call(&mut test);
        let (event, handler, synthetic) = testing::injected(&run.decision);
        assert_eq!(
            event,
            Event {
                vector: 2,
                kind: EventType::Nmi,
                error_code: None
            }
        );
        assert_eq!(handler, Some(0x21_2000));
        assert!(synthetic);
        assert_eq!(run.injected().name, "NMI");
        assert_returned(&test, 0);
    }

    #[test]
    fn raise_event_nmi_inside_an_nmi_handler_waits_for_its_iret() {
        // A CPU holds a second NMI back until the running handler's IRET (APM vol. 2,
        // 8.2.2): the call returns 0, nothing is injected, the NMI line stays raised.
        let mut test = Test::hypercall(hypercall::RAISE_EVENT, 2, 0);
        test.gate(2, 0x21_2000);
        test.domain.vcpu.nmi_blocked = true;
        let run = call(&mut test);
        assert!(run.decision.delivery.is_none(), "{}", run.decision.why);
        assert!(test.domain.devices.lapic.nmi_requested);
        assert_returned(&test, 0);
    }

    #[test]
    fn raise_event_double_fault_pushes_error_code_0_whatever_was_asked() {
        // #DF's error code is always 0 (APM vol. 2, 8.2.9).
        let mut test = Test::hypercall(hypercall::RAISE_EVENT, 8, 0x1234);
        test.gate(8, 0x21_2000);
        let run = call(&mut test);
        let (event, ..) = testing::injected(&run.decision);
        assert_eq!(event, Event::exception(8, 0));
        assert_eq!(event.error_code, Some(0));
    }

    #[test]
    fn raise_event_alignment_check_is_delivered_as_a_synthetic_exception() {
        // The state in which a CPU can raise #AC: CPL 3, CR0.AM and RFLAGS.AC (AMD APM
        // vol. 2, 8.2.17). #AC pushes an error code (0).
        let mut test = Test::hypercall(hypercall::RAISE_EVENT, 17, 0);
        test.check_alignment();
        let run = call(&mut test);
        assert_eq!(run.decision.action, Action::Reflect);
        let (event, _, synthetic) = testing::injected(&run.decision);
        assert_eq!(event, Event::exception(17, 0));
        assert_eq!(event.error_code, Some(0));
        assert!(synthetic);
        assert_returned(&test, 0);
    }

    #[test]
    fn raise_event_of_something_that_is_no_exception_returns_einval() {
        for vector in [300, 40] {
            let mut test = Test::hypercall(hypercall::RAISE_EVENT, vector, 0);
            let run = call(&mut test);
            assert_returned(&test, error::EINVAL);
            assert_eq!(run.decision.delivery, None, "vector {vector}");
        }
    }

    #[test]
    fn raise_event_of_a_page_fault_or_a_debug_exception_returns_einval() {
        // A CPU writes CR2 (#PF) or DR6 (#DB) as it raises them; the call cannot say what.
        for (vector, register) in [(14, "CR2"), (1, "DR6")] {
            let mut test = Test::hypercall(hypercall::RAISE_EVENT, vector, 2);
            let run = call(&mut test);
            assert_returned(&test, error::EINVAL);
            assert_eq!(run.decision.delivery, None, "vector {vector}");
            assert!(run.decision.why.contains(register), "{}", run.decision.why);
        }
    }

    #[test]
    fn raise_event_of_a_reserved_vector_returns_einval() {
        // A CPU's VMRUN would refuse to inject it as an exception (APM vol. 2, 15.20): the
        // domain would die of VMEXIT_INVALID for a bad argument.
        for vector in [9, 15, 20, 22, 27, 31] {
            let mut test = Test::hypercall(hypercall::RAISE_EVENT, vector, 0);
            let run = call(&mut test);
            assert_returned(&test, error::EINVAL);
            assert_eq!(run.decision.delivery, None, "vector {vector}");
            assert!(
                run.decision.why.contains("is reserved"),
                "{}",
                run.decision.why
            );
        }
        // Its neighbours are exceptions.
        for vector in [8, 10, 14, 16, 19, 21, 28, 30] {
            assert!(svm::is_exception_vector(vector), "vector {vector}");
        }
    }

    #[test]
    fn pin_page_table_refuses_a_root_with_bits_outside_its_address() {
        for root in [
            testing::PML4 | 0x8,
            testing::PML4 | 1 << 63,
            testing::PML4 | 0xff0,
        ] {
            let mut test = Test::hypercall(hypercall::PIN_PAGE_TABLE, root, 0);
            test.read_only_page_tables();
            call(&mut test);
            assert_returned(&test, error::EINVAL);
            assert!(test.domain.pv.pinned_tables.is_empty(), "{root:#x}");
        }
    }

    #[test]
    fn user_mode_may_not_reconfigure_its_kernel_but_may_print_and_exit() {
        // set_pv_mode(1) from CPL 3 of a CPL-0 kernel: refused, PV mode stays off.
        let mut test = Test::hypercall(hypercall::SET_PV_MODE, 1, 0);
        test.domain.vcpu.vmcb.save.cpl = 3;
        let run = call(&mut test);
        assert_returned(&test, error::EPERM);
        assert!(!test.domain.pv.enabled, "{}", run.decision.why);
        for number in [
            hypercall::SET_TRAP_TABLE,
            hypercall::SET_SHARED_INFO,
            hypercall::SET_CALLBACK,
        ] {
            let mut test = Test::hypercall(number, testing::PML4, 0);
            test.domain.vcpu.vmcb.save.cpl = 3;
            call(&mut test);
            assert_returned(&test, error::EPERM);
        }
        // exit from CPL 3 ends the domain, as the labs' user programs do.
        let mut test = Test::hypercall(hypercall::EXIT, 7, 0);
        test.domain.vcpu.vmcb.save.cpl = 3;
        let run = call(&mut test);
        assert!(run.applied.end.is_some(), "{}", run.decision.why);
    }

    #[test]
    fn raise_event_refuses_an_error_code_wider_than_32_bits() {
        let mut test = Test::hypercall(hypercall::RAISE_EVENT, 13, 0x1_0000_0008);
        let run = call(&mut test);
        assert_returned(&test, error::EINVAL);
        assert!(run.decision.delivery.is_none(), "{}", run.decision.why);
    }

    #[test]
    fn pin_page_table_refuses_tables_the_guest_still_maps_writable() {
        let mut test = Test::hypercall(hypercall::PIN_PAGE_TABLE, testing::PML4, 0);
        call(&mut test);
        assert_returned(&test, error::EINVAL);
        assert!(test.domain.pv.pinned_tables.is_empty());
    }

    #[test]
    fn pin_page_table_refuses_while_cr0_wp_is_clear() {
        // At CPL 0 read-only pages hold only with CR0.WP set: the kernel could write its
        // pinned tables unchecked.
        let mut test = Test::hypercall(hypercall::PIN_PAGE_TABLE, testing::PML4, 0);
        test.read_only_page_tables();
        test.domain.vcpu.vmcb.save.cr0 &= !Cr0Flags::WRITE_PROTECT.bits();
        let run = call(&mut test);
        assert_returned(&test, error::EINVAL);
        assert!(
            run.decision.why.contains("CR0.WP is clear"),
            "{}",
            run.decision.why
        );
        assert!(test.domain.pv.pinned_tables.is_empty());
        let control = &test.domain.vcpu.vmcb.control;
        assert_eq!(control.intercept_cr & cr_write(3), 0);
        // WP found clear in the middle of a walk (gdb cleared it: the guest cannot, its CR0
        // writes exit and `cr.rs` keeps WP set from the first piece on): the walk is dropped,
        // nothing pinned.
        let mut test = large_hierarchy(40);
        test.call();
        assert!(test.domain.pv.pinning.is_some(), "a walk under way");
        test.domain.vcpu.vmcb.save.cr0 &= !Cr0Flags::WRITE_PROTECT.bits();
        test.call();
        assert_returned(&test, error::EINVAL);
        assert!(test.domain.pv.pinning.is_none(), "the walk is dropped");
        assert_eq!(hierarchy_pinned(&test), 0);
    }

    #[test]
    fn set_trap_table_refuses_outside_64_bit_mode() {
        // A bounce frame is long mode's; clearing the table (0) is always allowed.
        let mut test = Test::protected_mode();
        test.code(&[0x0f, 0x01, 0xd9]); // vmmcall
        test.set_gpr(0, hypercall::SET_TRAP_TABLE);
        test.set_gpr(7, testing::DATA);
        let run = call(&mut test);
        assert_returned(&test, error::EINVAL);
        assert!(
            run.decision.why.contains("not in 64-bit mode"),
            "{}",
            run.decision.why
        );
        assert!(test.domain.pv.trap_table.is_empty());
    }

    #[test]
    fn pin_page_table_refuses_outside_long_mode() {
        // The walk reads long mode's four-level tables: a 32-bit kernel's are others.
        let mut test = Test::protected_mode();
        test.code(&[0x0f, 0x01, 0xd9]); // vmmcall
        test.set_gpr(0, hypercall::PIN_PAGE_TABLE);
        test.set_gpr(7, testing::PML4);
        test.domain.vcpu.vmcb.save.cr0 |= Cr0Flags::WRITE_PROTECT.bits();
        let run = call(&mut test);
        assert_returned(&test, error::EINVAL);
        assert!(
            run.decision.why.contains("not in long mode"),
            "{}",
            run.decision.why
        );
        assert!(test.domain.pv.pinned_tables.is_empty());
    }

    #[test]
    fn pin_page_table_pins_every_table_under_the_root_and_counts_the_new_ones() {
        let mut test = Test::hypercall(hypercall::PIN_PAGE_TABLE, testing::PML4, 0);
        test.read_only_page_tables();
        call(&mut test);
        assert_returned(&test, 4);
        assert_eq!(test.domain.pinned_level(testing::PML4), Some(4));
        assert_eq!(test.domain.pinned_level(testing::PT), Some(1));
        // From now on a CR3 write exits (`cr.rs` loads only a pinned root; a CR0 write that
        // could clear WP exits in every domain, and `cr.rs` keeps WP set).
        let control = &test.domain.vcpu.vmcb.control;
        assert_ne!(control.intercept_cr & cr_write(3), 0);
        // The TLB is flushed: a writable translation of a table, cached before the guest
        // made it read-only, would let a store through unchecked.
        assert_ne!(test.domain.vcpu.vmcb.control.tlb_control, 0);
        // Pinned already: refused, as Xen's MMUEXT_PIN_L4_TABLE ("already pinned").
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.set_gpr(0, hypercall::PIN_PAGE_TABLE);
        call(&mut test);
        assert_returned(&test, error::EINVAL);
        assert_eq!(
            test.domain.pinned_level(testing::PML4),
            Some(4),
            "still pinned"
        );
    }

    /// Where [`large_hierarchy`] puts its tables: 8–12 MiB, mapped read-only.
    const ROOT: u64 = 0x80_0000;
    /// The one level-1 table every PD entry points to.
    const LEAF_TABLE: u64 = 0x9f_f000;

    /// A hierarchy of `pds` level-2 tables under a root (level 4) and a PDPT after it,
    /// every entry of every PD pointing to one PT: 2 + `pds` + 1 tables, all mapped
    /// read-only (8–12 MiB become read-only 2 MiB pages), the guest at a `pin_page_table`
    /// of the root, the tables it runs on pinned already (as they must be). Every table's 512
    /// entries must be read, the PT's too (its leaves may map a table writable): the walk is
    /// 512 × (3 + `pds`) words.
    fn large_hierarchy(pds: u64) -> Test {
        let mut test = unpinned_hierarchy(pds);
        test.pin_page_tables();
        test
    }

    /// [`large_hierarchy`] while the tables the guest runs on are not pinned yet.
    fn unpinned_hierarchy(pds: u64) -> Test {
        let mut test = Test::hypercall(hypercall::PIN_PAGE_TABLE, ROOT, 0);
        for large in 4..6u64 {
            test.write_u64(
                testing::PD + 8 * large,
                (large << 21) | pte::PRESENT | pte::USER | pte::HUGE,
            );
        }
        test.read_only_page_tables();
        let table = pte::PRESENT | pte::WRITABLE | pte::USER;
        test.write_u64(ROOT, (ROOT + 0x1000) | table);
        for pd in 0..pds {
            let address = ROOT + 0x2000 + 0x1000 * pd;
            test.write_u64(ROOT + 0x1000 + 8 * pd, address | table);
            for entry in 0..512 {
                test.write_u64(address + 8 * entry, LEAF_TABLE | table);
            }
        }
        test
    }

    /// How many of [`large_hierarchy`]'s tables are pinned (those it runs on are, from the
    /// start).
    fn hierarchy_pinned(test: &Test) -> usize {
        let hierarchy = ROOT..ROOT + 0x40_0000;
        let pinned = test.domain.pv.pinned_tables.keys();
        pinned.filter(|table| hierarchy.contains(table)).count()
    }

    /// This exit's piece of the walk, when the decision continues it.
    fn piece(run: &Run) -> Option<&crate::domain::page_tables::PinStep> {
        run.decision.effects.iter().find_map(|effect| match effect {
            Effect::PinContinuation(Some(step)) => Some(&**step),
            _ => None,
        })
    }

    #[test]
    fn pin_page_table_pins_other_tables_only_once_those_the_domain_runs_on_are_pinned() {
        // Unpinned, the tables under CR3 could map the new ones writable anywhere but at
        // their 1:1 address (all the walk asks of them): refused before any walk.
        let mut test = unpinned_hierarchy(1);
        let before = test.memory_reads();
        let run = call(&mut test);
        assert_returned(&test, error::EINVAL);
        assert!(
            run.decision
                .why
                .contains("runs on page tables that are not pinned (CR3's root)"),
            "{}",
            run.decision.why
        );
        assert!(test.memory_reads() - before < 64, "no walk");
        assert!(test.domain.pv.pinned_tables.is_empty());
        assert_eq!(test.domain.vcpu.vmcb.control.intercept_cr & cr_write(3), 0);
        // A root that is no table's address is refused for that, first.
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.set_gpr(0, hypercall::PIN_PAGE_TABLE);
        test.set_gpr(7, ROOT + 8);
        let run = call(&mut test);
        assert_returned(&test, error::EINVAL);
        assert!(
            run.decision.why.contains("no page table's address"),
            "{}",
            run.decision.why
        );
        test.set_gpr(7, ROOT);
        // Once they are pinned, the others may be: 4 tables (root, PDPT, PD, PT).
        test.pin_page_tables();
        test.domain.vcpu.vmcb.save.rip = ENTRY;
        test.set_gpr(0, hypercall::PIN_PAGE_TABLE);
        call(&mut test);
        assert_returned(&test, 4);
        assert_eq!(hierarchy_pinned(&test), 4);
    }

    #[test]
    fn pin_page_table_of_a_large_hierarchy_is_done_in_pieces_and_the_vmmcall_runs_again() {
        // 40 PDs: 43 tables of 512 entries to read (the PT's too), about 22,200 words. One exit reads at
        // most PIN_READS_PER_EXIT of them; until the walk is over RIP stays at the VMMCALL
        // (Xen's hypercall continuation), RAX keeps the hypercall's number, nothing is
        // pinned yet; the last piece pins all 43 tables at once.
        // An NMI asked for meanwhile waits too, as an interrupt does: the walk is one
        // instruction, and no handler may change the tables halfway through it.
        let mut test = large_hierarchy(40);
        test.gate(2, 0x21_2000);
        test.domain.devices.lapic.nmi_requested = true;
        let mut exits = 0;
        let mut total_reads = 0;
        let mut nmi_waited = false;
        loop {
            exits += 1;
            assert!(exits < 100, "the walk ends");
            let before = test.memory_reads();
            let run = test.call();
            total_reads += test.memory_reads() - before;
            if let Some(step) = piece(&run) {
                assert!(!run.kinds().contains(&"inject"), "no NMI in the walk");
                nmi_waited = test.domain.devices.lapic.nmi_requested;
                assert!(step.reads <= PIN_READS_PER_EXIT + 4, "{}", step.reads);
                assert_eq!(test.rip(), ENTRY, "RIP stays at the VMMCALL");
                assert_eq!(test.gpr(0), hypercall::PIN_PAGE_TABLE, "RAX untouched");
                assert_eq!(hierarchy_pinned(&test), 0, "nothing pinned yet");
                let control = &test.domain.vcpu.vmcb.control;
                assert_ne!(
                    control.intercept_cr & cr_write(3),
                    0,
                    "from the first piece on, a CR3 write exits"
                );
                assert!(
                    run.decision.why.contains("a hypercall continuation"),
                    "{}",
                    run.decision.why
                );
                continue;
            }
            assert_returned(&test, 43);
            break;
        }
        assert_eq!(exits, 6, "22,188 words, 4,096 an exit");
        assert!(
            nmi_waited,
            "an NMI asked for during the walk waited for its end"
        );
        // Linear in the work: each entry read once, plus each table's own mapping (4
        // words) and the exits' own reads (the instruction, the page walk to it).
        let words = 512 * 43 + 4 * 43;
        assert!(
            total_reads <= words + 64 * exits,
            "{total_reads} reads for {words}"
        );
        assert_eq!(hierarchy_pinned(&test), 43);
        assert_eq!(test.domain.pinned_level(ROOT), Some(4));
        assert_eq!(test.domain.pinned_level(LEAF_TABLE), Some(1));
        assert_eq!(test.domain.pv.pinning, None, "the walk is over");

        // Again: the root is pinned already, refused as Xen refuses it ("already pinned",
        // EINVAL), at no cost and with nothing changed.
        test.set_gpr(0, hypercall::PIN_PAGE_TABLE);
        let before = test.memory_reads();
        let run = test.call();
        assert!(piece(&run).is_none());
        assert_returned(&test, error::EINVAL);
        assert!(
            run.decision.why.contains("the root is pinned already"),
            "{}",
            run.decision.why
        );
        assert!(test.memory_reads() - before < 64, "no walk");
        assert_eq!(hierarchy_pinned(&test), 43);
    }

    #[test]
    fn a_table_refused_halfway_through_the_walk_pins_nothing() {
        // The 30th PD is mapped writable: the walk finds it in its third piece, and
        // refuses the whole call; what the first pieces found is dropped.
        let mut test = large_hierarchy(40);
        let pd = ROOT + 0x2000 + 0x1000 * 29;
        // 8–10 MiB mapped with 4 KiB pages, all read-only but that PD's.
        let table = 0x60_0000;
        for page in 0..512u64 {
            let address = ROOT + (page << 12);
            let writable = if address == pd { pte::WRITABLE } else { 0 };
            test.write_u64(
                table + 8 * page,
                address | pte::PRESENT | pte::USER | writable,
            );
        }
        test.write_u64(
            testing::PD + 8 * 4,
            table | pte::PRESENT | pte::WRITABLE | pte::USER,
        );
        let mut exits = 0;
        while piece(&test.call()).is_some() {
            exits += 1;
            assert!(exits < 100);
            assert!(test.domain.pv.pinning.is_some());
        }
        assert!(exits >= 2, "refused in a later piece, not the first");
        assert_returned(&test, error::EINVAL);
        assert_eq!(hierarchy_pinned(&test), 0);
        assert_eq!(test.domain.pv.pinning, None);
    }

    #[test]
    fn a_table_another_domain_maps_writable_between_the_pieces_is_not_pinned() {
        // After the first piece, another domain gets a writable mapping of a table the
        // walk found then (its `map_grant_ref` refuses that now; here the grant is marked
        // mapped as its apply would): the last piece looks again, and nothing is pinned.
        let mut test = large_hierarchy(40);
        assert!(piece(&test.call()).is_some());
        let pinning = test.domain.pv.pinning.as_ref().expect("a walk under way");
        let (table, _) = pinning.found[2];
        let grants = &mut test.domain.grants;
        grants.table[0].frame = (table >> 12) as u32;
        (grants.mapped[0], grants.mapped_writable[0]) = (1, 1);
        let mut exits = 0;
        while piece(&test.call()).is_some() {
            exits += 1;
            assert!(exits < 100);
        }
        assert_returned(&test, error::EINVAL);
        assert_eq!(hierarchy_pinned(&test), 0);
        assert_eq!(test.domain.pinned_level(table), None);
    }

    #[test]
    fn pin_page_table_refuses_a_table_a_level_1_entry_maps_writable() {
        // Every 1:1 mapping of the tables is read-only, but the PT's entry 5 maps the PML4
        // writable at 0x5000: the walk reads the PT's leaves too (Xen: get_page_from_l1e
        // of every entry of a new level-1 table), and nothing is pinned.
        let mut test = Test::hypercall(hypercall::PIN_PAGE_TABLE, testing::PML4, 0);
        test.read_only_page_tables();
        test.write_u64(
            testing::PT + 8 * 5,
            testing::PML4 | pte::PRESENT | pte::WRITABLE,
        );
        let run = call(&mut test);
        assert_returned(&test, error::EINVAL);
        assert!(
            run.decision.why.contains("mapped writable by an entry"),
            "{}",
            run.decision.why
        );
        assert!(test.domain.pv.pinned_tables.is_empty());
    }

    #[test]
    fn pin_page_table_refuses_a_table_linked_at_two_levels() {
        // A recursive PML4 (entry 1 → itself) makes the PML4 a PDPT too, and through it
        // the PDPT a PD, the PD a PT: its 2 MiB pages would be read as 4 KiB ones, and
        // entry 0 of the PDPT, read as a PT's, would map the PD writable. Xen allows such
        // a linear table read-only only (get_linear_pagetable); traplab not at all.
        let mut test = Test::hypercall(hypercall::PIN_PAGE_TABLE, testing::PML4, 0);
        test.read_only_page_tables();
        test.write_u64(
            testing::PML4 + 8,
            testing::PML4 | pte::PRESENT | pte::WRITABLE,
        );
        let run = call(&mut test);
        assert_returned(&test, error::EINVAL);
        assert!(
            run.decision.why.contains("linked at two levels"),
            "{}",
            run.decision.why
        );
        assert!(test.domain.pv.pinned_tables.is_empty());
    }

    #[test]
    fn an_interrupt_waits_while_a_pin_page_table_goes_on() {
        // The VMMCALL is one instruction: a CPU takes an interrupt before or after it.
        let mut test = large_hierarchy(20);
        test.gate(0x20, 0x21_0000);
        test.interrupts_on();
        let run = test.call();
        assert!(piece(&run).is_some());
        test.domain.vcpu.interrupts.pending = Some(0x20);
        loop {
            let run = test.call();
            test.vmrun();
            if piece(&run).is_none() {
                assert_eq!(run.injected().vector, 0x20, "after the call");
                assert_eq!(run.applied.resume_at, Some(0x21_0000));
                break;
            }
            assert!(!run.kinds().contains(&"inject"), "{:?}", run.kinds());
            assert_eq!(test.domain.vcpu.interrupts.pending, Some(0x20));
        }
    }

    #[test]
    fn set_timer_arms_a_periodic_timer_and_starts_the_hypervisor_s() {
        let mut test = Test::hypercall(hypercall::SET_TIMER, 0x20, 1_000);
        let now = test.machine.now.get();
        let run = call(&mut test);
        assert_returned(&test, 0);
        // 1,000 µs at the fake machine's 1 GHz TSC.
        let timer = VirtualTimer {
            vector: 0x20,
            period_tsc: 1_000_000,
            due_tsc: now + 1_000_000,
            target: TimerTarget::Pending,
        };
        assert_eq!(test.domain.vcpu.interrupts.timers.set_timer, Some(timer));
        // 1000 Hz: the hypervisor's timer (100 Hz at first) looks that often, or the guest's
        // ticks would come ten at once.
        assert_eq!(test.machine.calls, ["start_timer", "quicken_timer 1000"]);
        assert_eq!(
            run.emulate().what,
            "timer armed: interrupt 0x20 every 1000 µs, noticed at the hypervisor's 1000 Hz ticks; set_timer returned 0"
        );
        // A slower timer than the hypervisor's own leaves it as it is.
        let mut test = Test::hypercall(hypercall::SET_TIMER, 0x20, 30_000);
        let run = call(&mut test);
        assert_eq!(test.machine.calls, ["start_timer", "quicken_timer 34"]);
        assert!(
            run.emulate()
                .what
                .contains("every 30000 µs, noticed at the hypervisor's 100 Hz ticks"),
            "{}",
            run.emulate().what
        );
    }

    #[test]
    fn set_timer_refuses_an_exception_vector_and_a_vector_that_does_not_exist() {
        for vector in [31, 256] {
            let mut test = Test::hypercall(hypercall::SET_TIMER, vector, 1_000);
            call(&mut test);
            assert_returned(&test, error::EINVAL);
            assert_eq!(test.domain.vcpu.interrupts.timers.set_timer, None);
        }
    }

    #[test]
    fn set_timer_refuses_a_period_out_of_range() {
        for period in [999, 10_000_001] {
            let mut test = Test::hypercall(hypercall::SET_TIMER, 0x20, period);
            call(&mut test);
            assert_returned(&test, error::EINVAL);
            assert!(test.machine.calls.is_empty());
        }
    }

    #[test]
    fn set_timer_with_period_0_stops_the_timer() {
        let mut test = Test::hypercall(hypercall::SET_TIMER, 0x20, 0);
        test.domain.vcpu.interrupts.timers.set_timer = Some(VirtualTimer {
            vector: 0x20,
            period_tsc: 1_000_000,
            due_tsc: 0,
            target: TimerTarget::Pending,
        });
        let run = call(&mut test);
        assert_returned(&test, 0);
        assert_eq!(test.domain.vcpu.interrupts.timers.set_timer, None);
        assert!(run.decision.why.contains("stops its timer"));
    }

    #[test]
    fn set_pv_mode_1_turns_pv_mode_on_with_the_virtual_flag_as_rflags_if_is() {
        let mut test = Test::hypercall(hypercall::SET_PV_MODE, 1, 0);
        test.interrupts_on();
        call(&mut test);
        assert_returned(&test, 0);
        assert!(test.domain.pv.enabled);
        assert!(test.domain.pv.virtual_interrupt_flag);
        // With interrupts off, the virtual flag starts clear, and RFLAGS.IF is set all the
        // same: a PV kernel's real IF is always on (Xen's).
        let mut test = Test::hypercall(hypercall::SET_PV_MODE, 1, 0);
        call(&mut test);
        assert!(!test.domain.pv.virtual_interrupt_flag);
        assert_ne!(
            test.domain.vcpu.vmcb.save.rflags & RFlags::INTERRUPT_FLAG.bits(),
            0
        );
        // Asked again, in PV mode with the virtual flag clear (a virtual CLI): it stays
        // clear, whatever RFLAGS.IF says.
        test.set_gpr(0, hypercall::SET_PV_MODE);
        test.call();
        assert_returned(&test, 0);
        assert!(test.domain.pv.enabled);
        assert!(!test.domain.pv.virtual_interrupt_flag);
        // Leaving PV mode, RFLAGS.IF takes the virtual flag back.
        test.set_gpr(0, hypercall::SET_PV_MODE);
        test.set_gpr(7, 0);
        test.call();
        assert_returned(&test, 0);
        assert!(!test.domain.pv.enabled);
        assert_eq!(
            test.domain.vcpu.vmcb.save.rflags & RFlags::INTERRUPT_FLAG.bits(),
            0
        );
    }

    #[test]
    fn set_pv_mode_0_turns_it_off_and_2_is_einval() {
        let mut test = Test::hypercall(hypercall::SET_PV_MODE, 0, 0);
        test.domain.pv.enabled = true;
        call(&mut test);
        assert_returned(&test, 0);
        assert!(!test.domain.pv.enabled);

        let mut test = Test::hypercall(hypercall::SET_PV_MODE, 2, 0);
        let run = call(&mut test);
        assert_returned(&test, error::EINVAL);
        assert!(!run.decision.effects.contains(&Effect::PvMode(true)));
    }

    #[test]
    fn a_hypercall_number_that_does_not_exist_returns_enosys() {
        let mut test = Test::hypercall(99, 0, 0);
        let run = call(&mut test);
        assert_returned(&test, error::ENOSYS);
        assert_eq!(
            run.emulate().what,
            "unknown hypercall returned -38 (ENOSYS)"
        );
    }

    #[test]
    fn a_vmmcall_at_an_unmapped_rip_kills_the_domain() {
        let mut test = Test::hypercall(hypercall::CONSOLE_WRITE, DATA, 1);
        test.domain.vcpu.vmcb.save.rip = UNMAPPED;
        let decision = test.decide(test.exit(ExitReason::Vmmcall));
        assert_eq!(
            testing::killed(&decision),
            "undecodable instruction at the exit"
        );
    }
}
