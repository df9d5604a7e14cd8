//! The hypervisor's own clock: PIT channel 0 through the legacy PIC, as interrupt vector
//! 0x20 of the *hypervisor* (never of a guest).
//!
//! Why a hypervisor needs one: a guest that spins without a single exit would otherwise
//! keep the CPU for ever. With the timer on and "physical interrupts" intercepted
//! (`intercepts.rs`: INTR), each tick forces a #VMEXIT (exit code 0x60) and the hypervisor
//! gets control back: to answer the host's pause (`control.rs`), to schedule.
//!
//! How an interrupt reaches us (AMD APM vol. 2, 15.17 and 15.21.1): the world switch runs
//! the guest with our RFLAGS.IF set and V_INTR_MASKING on, so a physical interrupt exits the
//! guest. After #VMEXIT the global interrupt flag is clear and we clear IF before setting
//! it again: the interrupt stays pending in the PIC until the INTR handler opens a one-
//! instruction window (`take_pending`), the CPU delivers it through our IDT, and
//! [`tick`] acknowledges it (EOI).
//!
//! On by fw_cfg `opt/traplab/timer-hz` (0 or absent: off, and no INTR exit ever happens),
//! and at [`DEFAULT_HZ`] as soon as a guest asks for a virtual timer (`set_timer`): the
//! hypervisor can only notice that a guest's timer is due when it has control.

use core::sync::atomic::{AtomicU64, Ordering};
use traplab_hv::machine::TIMER_MAX_HZ;
use x86_64::instructions::port::Port;

/// Where we put the PIC's interrupts: vectors 0x20–0x2F, above the exceptions.
pub const PIC_VECTOR_BASE: u8 = 0x20;
const PIT_HZ: u32 = 1_193_182;

/// How fast the timer runs when a guest's virtual timer needs it and nobody chose a rate.
pub const DEFAULT_HZ: u32 = 100;

static TICKS: AtomicU64 = AtomicU64::new(0);
/// The rate the PIT runs at, 0 while it is off.
static RUNNING_HZ: AtomicU64 = AtomicU64::new(0);

/// Remap the PICs to vectors 0x20–0x2F and mask every IRQ. Always done at boot: the
/// firmware leaves the master PIC on vectors 0x08–0x0F, where a timer interrupt would look
/// like a #DF to our IDT.
pub fn init_pic() {
    // SAFETY: ports 0x20/0x21/0xa0/0xa1 are the two 8259 PICs; the hypervisor is their only
    // driver. The sequence is the 8259A's initialisation, ICW1 to ICW4.
    unsafe {
        let (mut master_command, mut master_data) = (Port::<u8>::new(0x20), Port::<u8>::new(0x21));
        let (mut slave_command, mut slave_data) = (Port::<u8>::new(0xa0), Port::<u8>::new(0xa1));
        master_command.write(0x11); // ICW1: edge triggered, cascade, ICW4 follows
        slave_command.write(0x11);
        master_data.write(PIC_VECTOR_BASE); // ICW2: vector base
        slave_data.write(PIC_VECTOR_BASE + 8);
        master_data.write(0x04); // ICW3: slave on IRQ 2
        slave_data.write(0x02);
        master_data.write(0x01); // ICW4: 8086 mode
        slave_data.write(0x01);
        master_data.write(0xff); // every IRQ masked
        slave_data.write(0xff);
    }
}

/// Start the PIT at `hz` and unmask IRQ 0.
pub fn start(hz: u32) {
    let hz = hz.clamp(19, 10_000);
    RUNNING_HZ.store(hz as u64, Ordering::Relaxed);
    let divisor = (PIT_HZ / hz) as u16;
    // SAFETY: 0x40/0x43 are the PIT, 0x21 the master PIC's mask; ours alone. Mode 2 is the
    // 8254's rate generator.
    unsafe {
        Port::<u8>::new(0x43).write(0x34); // channel 0, low then high byte, mode 2
        Port::<u8>::new(0x40).write(divisor as u8);
        Port::<u8>::new(0x40).write((divisor >> 8) as u8);
        Port::<u8>::new(0x21).write(0xfe); // unmask IRQ 0 only
    }
}

/// Start the PIT at [`DEFAULT_HZ`] unless it already runs. Returns the rate it runs at.
pub fn ensure_running() -> u32 {
    match RUNNING_HZ.load(Ordering::Relaxed) {
        0 => {
            start(DEFAULT_HZ);
            DEFAULT_HZ
        }
        hz => hz as u32,
    }
}

/// Run the PIT at `hz` (at most [`TIMER_MAX_HZ`]) unless it already runs that fast: a
/// guest's timer that ticks more often than ours would have its ticks merged (Linux's 250
/// Hz). It never slows down again.
pub fn ensure_at_least(hz: u32) {
    let hz = hz.min(TIMER_MAX_HZ);
    if (RUNNING_HZ.load(Ordering::Relaxed) as u32) < hz {
        start(hz);
    }
}

/// The rate the timer runs at, or the one [`ensure_running`] would start it at.
pub fn rate_when_running() -> u32 {
    match RUNNING_HZ.load(Ordering::Relaxed) {
        0 => DEFAULT_HZ,
        hz => hz as u32,
    }
}

/// Ticks so far.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// A PIC interrupt arrived through our IDT (vector 0x20 + irq): count a tick, acknowledge.
pub fn tick(vector: u8) {
    let irq = vector.wrapping_sub(PIC_VECTOR_BASE);
    if irq == 0 {
        TICKS.fetch_add(1, Ordering::Relaxed);
    }
    // SAFETY: end-of-interrupt to the PIC(s) that raised it.
    unsafe {
        if irq >= 8 {
            Port::<u8>::new(0xa0).write(0x20);
        }
        Port::<u8>::new(0x20).write(0x20);
    }
}

/// Let a pending physical interrupt in: one instruction with interrupts on, then off again.
/// The CPU delivers it through our IDT to [`tick`].
pub fn take_pending() {
    // SAFETY: STI; NOP; CLI opens a window of exactly the NOP (STI's shadow covers the next
    // instruction), long enough for a pending interrupt and short enough that no other
    // hypervisor code runs with interrupts on.
    unsafe { core::arch::asm!("sti", "nop", "cli", options(nomem, nostack)) };
}
