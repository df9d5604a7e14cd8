//! What the host tests of the hypervisor stand on: a guest's memory in a vector, a machine
//! that records what it is asked, and a domain booted as the loader boots a 64-bit guest —
//! so that a handler can be fed a synthetic exit and its decision checked, and a decision
//! applied and its events checked, without QEMU (firecracker's `handle_kvm_exit` tests do
//! the same for a VMM).

use crate::apply::{self, Applied};
use crate::decision::Decision;
use crate::domain::memory::{GuestMemory, MemoryError, PAGE_SIZE};
use crate::domain::{Domain, Guest};
use crate::exit::{self, Exit};
use crate::machine::Machine;
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use traplab_abi::boot;
use traplab_abi::event::{Body, InstructionBytes};
use traplab_abi::exit::ExitReason;
use traplab_abi::x86::pte;

/// Guest RAM as a plain vector. With `lazy`, pages start unmapped (for the NPF tests).
pub struct VecMemory {
    ram: RefCell<Vec<u8>>,
    lazy: bool,
    mapped: RefCell<BTreeSet<u64>>,
    /// No frame left: `populate` fails.
    pub exhausted: bool,
    pub fetches_forbidden: bool,
}

impl VecMemory {
    pub fn new(size: u64, lazy: bool) -> VecMemory {
        VecMemory {
            ram: RefCell::new(vec![0; size as usize]),
            lazy,
            mapped: RefCell::new(BTreeSet::new()),
            exhausted: false,
            fetches_forbidden: false,
        }
    }

    fn check(&self, gpa: u64, length: usize) -> Result<(), MemoryError> {
        let size = self.ram.borrow().len() as u64;
        match gpa.checked_add(length as u64) {
            Some(end) if end <= size => Ok(()),
            _ => Err(MemoryError::NotGuestMemory { gpa: gpa.max(size) }),
        }
    }

    /// The hypervisor's own accesses map lazy pages silently, as the real one does.
    fn touch(&self, gpa: u64, length: usize) {
        if self.lazy {
            let mut mapped = self.mapped.borrow_mut();
            for page in (gpa & !(PAGE_SIZE - 1)..gpa + length as u64).step_by(PAGE_SIZE as usize) {
                mapped.insert(page);
            }
        }
    }
}

impl GuestMemory for VecMemory {
    fn size(&self) -> u64 {
        self.ram.borrow().len() as u64
    }

    fn read_physical(&self, gpa: u64, buffer: &mut [u8]) -> Result<(), MemoryError> {
        self.check(gpa, buffer.len())?;
        self.touch(gpa, buffer.len());
        let start = gpa as usize;
        buffer.copy_from_slice(&self.ram.borrow()[start..start + buffer.len()]);
        Ok(())
    }

    fn write_physical(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        self.check(gpa, bytes.len())?;
        self.touch(gpa, bytes.len());
        let start = gpa as usize;
        self.ram.borrow_mut()[start..start + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    fn is_mapped(&self, gpa: u64) -> bool {
        !self.lazy || self.mapped.borrow().contains(&(gpa & !(PAGE_SIZE - 1)))
    }

    fn lazy(&self) -> bool {
        self.lazy
    }

    fn populate(&mut self, gpa: u64) -> Option<u64> {
        if self.exhausted || gpa >= self.size() {
            return None;
        }
        let page = gpa & !(PAGE_SIZE - 1);
        self.mapped.borrow_mut().insert(page);
        Some(0x4000_0000 + page)
    }

    fn populated_pages(&self) -> u64 {
        self.mapped.borrow().len() as u64
    }

    fn forbid_fetches(&mut self, forbid: bool) {
        self.fetches_forbidden = forbid;
    }
}

/// A machine that answers fixed facts and writes down what it is asked to do.
pub struct FakeMachine {
    pub now: Cell<u64>,
    pub ticks: u64,
    pub calls: Vec<String>,
}

/// The TSC rate of the fake machine: 1 GHz, so 1 µs is 1,000 ticks.
pub const TSC_HZ: u64 = 1_000_000_000;

impl Default for FakeMachine {
    fn default() -> Self {
        FakeMachine {
            now: Cell::new(1_000_000),
            ticks: 0,
            calls: Vec::new(),
        }
    }
}

impl Machine for FakeMachine {
    fn cpuid(&self, leaf: u32, _subleaf: u32) -> [u32; 4] {
        match leaf {
            // Family 0xf (qemu64): SSE2 and friends in EDX, no hypervisor bit in ECX.
            1 => [0x0006_63, 0x0800, 0x8020_2001 & !(1 << 31), 0x078b_fbff],
            // x87, SSE and AVX state components.
            0xd => [0b111, 0x340, 0x340, 0],
            // SVM (bit 2) and LM.
            0x8000_0001 => [0, 0, 0x25, 0x2010_0800],
            // SVM revision 1, nested paging.
            0x8000_000a => [1, 0x10, 0, 1],
            _ => [0x11, 0x22, 0x33, 0x44],
        }
    }

    fn tsc_hz(&self) -> u64 {
        TSC_HZ
    }

    fn timer_hz(&self) -> u32 {
        100
    }

    fn now(&self) -> u64 {
        self.now.get()
    }

    fn acknowledge_timer(&mut self) -> u64 {
        self.ticks += 1;
        self.calls.push("acknowledge_timer".into());
        self.ticks
    }

    fn start_timer(&mut self) {
        self.calls.push("start_timer".into());
    }

    fn halt_until(&mut self, tsc: u64) -> u64 {
        // Three of the hypervisor's ticks pass while the CPU halts.
        self.now.set(self.now.get().max(tsc));
        self.ticks += 3;
        self.calls.push(format!("halt_until {tsc}"));
        3
    }

    fn invalidate_page(&mut self, address: u64, asid: u32) {
        self.calls.push(format!("invlpga {address:#x} asid {asid}"));
    }

    fn set_xcr0(&mut self, value: u64) {
        self.calls.push(format!("xsetbv {value:#x}"));
    }

    fn load_breakpoint_address(&mut self, slot: u8, address: u64) {
        self.calls.push(format!("dr{slot} = {address:#x}"));
    }

    fn load_dr7(&mut self, value: u64) {
        self.calls.push(format!("dr7 = {value:#x}"));
    }
}

/// Where a test guest's code starts (the boot protocol's image base).
pub const ENTRY: u64 = boot::IMAGE_BASE;
/// Where the test guests keep their IDT.
pub const IDT: u64 = 0x0030_0000;

/// A domain and a machine to run its exits against.
pub struct Test {
    pub domain: Domain,
    pub machine: FakeMachine,
}

/// What one exit did: its decision, what applying it said, and its events.
pub struct Run {
    pub decision: Decision,
    pub applied: Applied,
    pub events: Vec<Body>,
}

impl Run {
    /// The kinds of the events, in order (`["decide", "emulate"]`).
    pub fn kinds(&self) -> Vec<&'static str> {
        self.events.iter().map(kind).collect()
    }
}

/// The name of an event's kind, as the trace spells it.
pub fn kind(body: &Body) -> &'static str {
    match body {
        Body::Boot(_) => "boot",
        Body::Domain(_) => "domain",
        Body::Exit(_) => "exit",
        Body::Decide(_) => "decide",
        Body::Emulate(_) => "emulate",
        Body::Inject(_) => "inject",
        Body::Bounce(_) => "bounce",
        Body::Return(_) => "return",
        Body::Resume(_) => "resume",
        Body::Console(_) => "console",
        Body::Lost(_) => "lost",
        Body::End(_) => "end",
    }
}

impl Test {
    /// A 64-bit guest as the loader starts one: 16 MiB of RAM mapped 1:1 by 2 MiB pages,
    /// RIP at [`ENTRY`], no IDT yet.
    pub fn long_mode() -> Test {
        Test::with_memory(VecMemory::new(boot::GUEST_RAM_SIZE, false))
    }

    /// The same guest with lazy memory: no page is mapped until touched.
    pub fn lazy() -> Test {
        Test::with_memory(VecMemory::new(boot::GUEST_RAM_SIZE, true))
    }

    fn with_memory(memory: VecMemory) -> Test {
        let mut domain = Domain::new(1, "test".into(), Box::new(memory));
        domain.vcpu.set_long_mode_boot_state(ENTRY);
        let mut test = Test {
            domain,
            machine: FakeMachine::default(),
        };
        let (pml4, pdpt, pd) = (
            boot::BOOT_PAGE_TABLES,
            boot::BOOT_PAGE_TABLES + 0x1000,
            boot::BOOT_PAGE_TABLES + 0x2000,
        );
        let table = pte::PRESENT | pte::WRITABLE | pte::USER;
        test.write_u64(pml4, pdpt | table);
        test.write_u64(pdpt, pd | table);
        for large in 0..(boot::GUEST_RAM_SIZE >> 21) {
            test.write_u64(pd + large * 8, (large << 21) | table | pte::HUGE);
        }
        test
    }

    /// A 32-bit guest in protected mode with paging off (the `overflow` lab's kind).
    pub fn protected_mode() -> Test {
        let mut test = Test::long_mode();
        test.domain.vcpu.set_protected_mode_boot_state(ENTRY);
        test
    }

    /// The read-only view a handler gets.
    pub fn guest(&self) -> Guest<'_> {
        Guest {
            domain: &self.domain,
            machine: &self.machine,
        }
    }

    pub fn write(&mut self, gpa: u64, bytes: &[u8]) {
        self.domain
            .memory
            .write_physical(gpa, bytes)
            .expect("test memory is big enough");
    }

    pub fn write_u64(&mut self, gpa: u64, value: u64) {
        self.write(gpa, &value.to_le_bytes());
    }

    pub fn read_u64(&self, gpa: u64) -> u64 {
        self.domain
            .memory
            .read_u64_physical(gpa)
            .expect("test memory is big enough")
    }

    /// Put `bytes` at RIP.
    pub fn code(&mut self, bytes: &[u8]) {
        let rip = self.domain.vcpu.vmcb.linear_rip();
        self.write(rip, bytes);
    }

    pub fn set_gpr(&mut self, number: u8, value: u64) {
        self.domain.vcpu.set_gpr(number, value);
    }

    /// An interrupt gate for `vector` in the guest's IDT (64-bit, present, DPL 0).
    pub fn gate(&mut self, vector: u8, handler: u64) {
        let idtr = &mut self.domain.vcpu.vmcb.save.idtr;
        idtr.base = IDT;
        idtr.limit = 16 * 256 - 1;
        let mut gate = [0u8; 16];
        gate[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
        gate[2..4].copy_from_slice(&0x08u16.to_le_bytes());
        gate[5] = 0x8e;
        gate[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
        gate[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
        self.write(IDT + 16 * vector as u64, &gate);
    }

    /// The exit the CPU would report for `reason` now: the bytes at RIP read as the run
    /// loop reads them.
    pub fn exit(&self, reason: ExitReason) -> Exit {
        Exit {
            reason,
            ..Exit::read(&self.domain, self.machine.now())
        }
    }

    pub fn decide(&self, exit: Exit) -> Decision {
        exit::handle(&exit, &self.guest())
    }

    /// Decide, apply, and get the guest ready to resume, as the run loop does.
    pub fn run(&mut self, exit: Exit) -> Run {
        let decision = self.decide(exit);
        let mut events = Vec::new();
        let mut applied = apply::apply(
            &mut self.domain,
            decision.clone(),
            &mut self.machine,
            &mut events,
        );
        if applied.end.is_none() {
            apply::before_resume(&mut self.domain, &exit, &mut applied, &mut events);
        }
        Run {
            decision,
            applied,
            events,
        }
    }
}

/// An exit with these instruction bytes and nothing else (for handlers that look only at
/// the reason and the bytes).
pub fn exit(reason: ExitReason, instruction: &[u8]) -> Exit {
    Exit {
        reason,
        interrupted: None,
        instruction: InstructionBytes::new(instruction),
        tsc: 1_000_000,
    }
}
