//! The machine under the hypervisor: what a decision may ask about it, and what applying
//! one may ask it to do.
//!
//! Handlers read facts (the real CPU's CPUID answer, the TSC rate); `apply.rs` asks for the
//! few things only the physical CPU can do for a guest (INVLPGA, XSETBV, the debug
//! registers VMRUN does not switch, halting until the guest's timer is due). The bare-metal
//! program implements it on the real hardware (`main.rs`, `Hardware`); the host tests with
//! a recording fake (`testing.rs`).

/// A moment of the time of day: seconds since 1970-01-01 00:00:00 UTC, and nanoseconds into
/// the second (an RTC's update cycle comes at the second's edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallTime {
    pub seconds: u64,
    pub nanos: u32,
}

/// The fastest the hypervisor's own timer goes for a guest (`Machine::quicken_timer`): each
/// tick is an INTR exit. A guest timer faster than this has its ticks merged.
pub const TIMER_MAX_HZ: u32 = 1000;

pub trait Machine {
    /// The physical CPU's CPUID answer: EAX, EBX, ECX, EDX.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];

    /// TSC ticks per second.
    fn tsc_hz(&self) -> u64;

    /// The rate of the hypervisor's own timer: what it runs at, or what it will start at
    /// once a guest's timer needs it ([`Machine::start_timer`]).
    fn timer_hz(&self) -> u32;

    /// The TSC now.
    fn now(&self) -> u64;

    /// The time of day now, which the emulated RTC shows (`device/rtc.rs`).
    fn wall_clock(&self) -> WallTime;

    /// Let the hypervisor's pending timer interrupt in and acknowledge it; the tick's number.
    fn acknowledge_timer(&mut self) -> u64;

    /// Start the hypervisor's timer if it is off: it is how the hypervisor notices that a
    /// guest's timer is due.
    fn start_timer(&mut self);

    /// Run the hypervisor's timer at `hz` or faster (up to [`TIMER_MAX_HZ`]): a guest timer
    /// that fires more often than the hypervisor looks would have its ticks merged.
    fn quicken_timer(&mut self, hz: u32);

    /// Halt the physical CPU until the TSC reaches `tsc` (the hypervisor's timer wakes it),
    /// or until the host has typed keys ([`Machine::keys_typed`]); how many of its ticks
    /// that took.
    fn halt_until(&mut self, tsc: u64) -> u64;

    /// Does a terminal on the host forward keys to the domains' COM1 (`traplab run`)? Then
    /// a guest waiting for its serial port's interrupt waits for a key.
    fn keyboard(&self) -> bool;

    /// Does gdb debug a domain (fw_cfg `opt/traplab/gdb`)? Then the hypervisor must answer
    /// its line while a guest waits, rather than halt for the guest's timer.
    fn debugger_attached(&self) -> bool;

    /// Have keys come from the host that no domain has taken yet?
    fn keys_typed(&mut self) -> bool;

    /// The keys the host typed for domain `domain`'s COM1 since the last call.
    fn take_keys(&mut self, domain: u16) -> alloc::vec::Vec<u8>;

    /// Drop the keys no domain has taken (typed for one that has ended or is not there):
    /// how many bytes.
    fn discard_keys(&mut self) -> usize;

    /// INVLPGA: drop the TLB entry of `address` in address space `asid` (APM vol. 2,
    /// 15.16.3).
    fn invalidate_page(&mut self, address: u64, asid: u32);

    /// XSETBV with XCR0 = `value` (the guest's XCR0 stays loaded: the hypervisor does not
    /// use XSAVE).
    fn set_xcr0(&mut self, value: u64);

    /// Load DR0–DR3 slot `slot` with `address`: VMRUN does not switch them, so the guest's
    /// stay in the CPU (`exit/dr.rs`).
    fn load_breakpoint_address(&mut self, slot: u8, address: u64);

    /// DR0–DR3 slot `slot` as the CPU holds it now: the running guest's. (Unless every DR
    /// access exits, `Vcpu::debug_register_intercepts`, a guest's MOV to DRn reaches the CPU
    /// and not the hypervisor's copy, `Vcpu::debug_registers`, which is brought up to date
    /// from here when the vCPU leaves the CPU, and when every access begins to exit (gdb takes
    /// a slot, the guest sets DR7.GD): `Vcpu::keep_breakpoint_addresses`.)
    fn breakpoint_address(&self, slot: u8) -> u64;

    /// Execute a MOV to DR7 with `value`: under QEMU's TCG a breakpoint is armed only once
    /// the CPU has run one (the guest's DR7 itself is in the VMCB).
    fn load_dr7(&mut self, value: u64);
}
