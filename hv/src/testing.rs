//! What the host tests of the hypervisor stand on: a guest's memory in a vector, a machine
//! that records what it is asked, and a domain booted as the loader boots a 64-bit guest —
//! so that a handler can be fed a synthetic exit and its decision checked, and a decision
//! applied and its events checked, without QEMU (firecracker's `handle_kvm_exit` tests do
//! the same for a VMM).

use crate::apply::{self, Applied};
use crate::decision::{Bounce, Decision, Delivery, DomainEnd};
use crate::domain::memory::{GuestMemory, MemoryError, PAGE_SIZE};
use crate::domain::vcpu::RunState;
use crate::domain::walk_cache::WalkCache;
use crate::domain::{Domain, Guest};
use crate::domain::{Others, OthersMut};
use crate::exit::{self, Exit};
use crate::machine::{Machine, WallTime};
use crate::store::Store;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use traplab_abi::boot;
use traplab_abi::event::{self, Body, Decide, Emulate, InstructionBytes, Return};
use traplab_abi::exit::ExitReason;
use traplab_abi::hypercall::TrapInfo;
use traplab_abi::svm;
use traplab_abi::x86::{Cr0Flags, RFlags, pte};

/// The fake machine's time of day: 2026-12-02 07:23:45 UTC (a Wednesday).
pub const WALL_CLOCK: u64 = 1_796_196_225;

/// Both 8259As initialised as a PC kernel does, a byte at a time (port, value): ICW1–ICW4 of
/// each, vectors 0x20 and 0x28, the slave on IR2, 8086 mode; every IRQ open after it.
pub const PICS_INITIALISED: [(u16, u8); 8] = [
    (0x20, 0x11),
    (0xa0, 0x11),
    (0x21, 0x20),
    (0xa1, 0x28),
    (0x21, 0x04),
    (0xa1, 0x02),
    (0x21, 0x01),
    (0xa1, 0x01),
];

/// Where the fake host frames of a test's RAM start: page `gpa` is frame `FRAMES + gpa`.
pub const FRAMES: u64 = 0x4000_0000;

/// Guest RAM as a plain vector. With `lazy`, pages start unmapped (for the NPF tests).
pub struct VecMemory {
    ram: RefCell<Vec<u8>>,
    lazy: bool,
    mapped: RefCell<BTreeSet<u64>>,
    /// No frame left: `populate` and `map_foreign` fail.
    pub exhausted: bool,
    pub fetches_forbidden: bool,
    /// Pages of other domains mapped here (grants): guest-physical page → (host frame,
    /// writable). Shared, so that a test still sees it once the memory is boxed in its
    /// domain ([`Test::foreign`]).
    pub foreign: Rc<RefCell<BTreeMap<u64, (u64, bool)>>>,
    /// How many reads of guest-physical memory were made (shared, as `foreign`): what a
    /// test of the hypervisor's work per exit counts.
    pub reads: Rc<Cell<u64>>,
    /// The guest's page walks remembered, as the real memory does (every test goes through it).
    walks: WalkCache,
    /// Reads only look (`GuestMemory::look_only`): they map no lazy page.
    looking: Cell<bool>,
}

impl VecMemory {
    pub fn new(size: u64, lazy: bool) -> VecMemory {
        VecMemory {
            ram: RefCell::new(vec![0; size as usize]),
            lazy,
            mapped: RefCell::new(BTreeSet::new()),
            exhausted: false,
            fetches_forbidden: false,
            foreign: Rc::new(RefCell::new(BTreeMap::new())),
            reads: Rc::new(Cell::new(0)),
            walks: WalkCache::default(),
            looking: Cell::new(false),
        }
    }

    fn check(&self, gpa: u64, length: usize) -> Result<(), MemoryError> {
        let size = self.ram.borrow().len() as u64;
        match gpa.checked_add(length as u64) {
            Some(end) if end <= size => Ok(()),
            _ => Err(MemoryError::NotGuestMemory { gpa: gpa.max(size) }),
        }
    }

    /// The hypervisor's own accesses map lazy pages silently, as the real one does, unless
    /// they only look. (An untouched page's bytes are zeros here, as the frame it would get.)
    fn touch(&self, gpa: u64, length: usize) {
        if self.lazy && !self.looking.get() {
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

    fn walk_cache(&self) -> Option<&WalkCache> {
        Some(&self.walks)
    }

    /// qemu64's, as [`FakeMachine`]'s CPUID leaf 8000_0008 says.
    fn physical_address_bits(&self) -> u32 {
        40
    }

    fn read_physical(&self, gpa: u64, buffer: &mut [u8]) -> Result<(), MemoryError> {
        self.reads.set(self.reads.get() + 1);
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
        let page = gpa & !(PAGE_SIZE - 1);
        (gpa < self.size() && (!self.lazy || self.mapped.borrow().contains(&page)))
            || self.foreign.borrow().contains_key(&page)
    }

    fn lazy(&self) -> bool {
        self.lazy
    }

    fn look_only(&self, on: bool) {
        self.looking.set(on);
    }

    fn populate(&mut self, gpa: u64) -> Option<u64> {
        if self.exhausted || gpa >= self.size() {
            return None;
        }
        let page = gpa & !(PAGE_SIZE - 1);
        self.mapped.borrow_mut().insert(page);
        Some(FRAMES + page)
    }

    fn populated_pages(&self) -> u64 {
        self.mapped.borrow().len() as u64
    }

    fn host_frame(&self, gpa: u64) -> Option<u64> {
        (gpa < self.size()).then_some(FRAMES + (gpa & !(PAGE_SIZE - 1)))
    }

    fn map_foreign(&mut self, gpa: u64, frame: u64, writable: bool) -> bool {
        // No frame left for the nested page table the mapping needs.
        if self.exhausted {
            return false;
        }
        self.foreign
            .borrow_mut()
            .insert(gpa & !(PAGE_SIZE - 1), (frame, writable));
        true
    }

    fn unmap_foreign(&mut self, gpa: u64) {
        self.foreign.borrow_mut().remove(&(gpa & !(PAGE_SIZE - 1)));
    }

    fn forbid_fetches(&mut self, forbid: bool) {
        self.fetches_forbidden = forbid;
    }
}

/// A machine that answers fixed facts and writes down what it is asked to do.
pub struct FakeMachine {
    pub now: Cell<u64>,
    /// How far the clock moves on at each look (0: it stands still): the time the
    /// hypervisor's own work takes between two looks at the TSC.
    pub now_step: Cell<u64>,
    pub ticks: u64,
    pub calls: Vec<String>,
    /// A terminal forwards keys (`traplab run`).
    pub keyboard: bool,
    /// gdb debugs a domain.
    pub debugger: bool,
    /// Keys typed and not taken: for which domain, what.
    pub keys: Vec<(u16, Vec<u8>)>,
    /// The XSAVE state components the CPU has (CPUID 0xD, EAX): x87, SSE and AVX unless a
    /// test gives it more.
    pub xsave_components: u32,
    /// DR0–DR3 as the CPU holds them (`load_breakpoint_address`).
    pub breakpoints: [u64; 4],
    /// CPUID answers of another CPU than qemu64, by leaf and subleaf (the host's under KVM,
    /// say): they come before the fixed ones.
    pub cpuid_answers: Vec<(u32, u32, [u32; 4])>,
}

/// The TSC rate of the fake machine: 1 GHz, so 1 µs is 1,000 ticks.
pub const TSC_HZ: u64 = 1_000_000_000;

impl Default for FakeMachine {
    fn default() -> Self {
        FakeMachine {
            now: Cell::new(1_000_000),
            now_step: Cell::new(0),
            ticks: 0,
            calls: Vec::new(),
            keyboard: false,
            debugger: false,
            keys: Vec::new(),
            xsave_components: 0b111,
            breakpoints: [0; 4],
            cpuid_answers: Vec::new(),
        }
    }
}

impl Machine for FakeMachine {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        // Leaves 7 and 0xD read ECX as their subleaf; the others ignore it, as a CPU does.
        let asked = |&&(at, at_subleaf, _): &&(u32, u32, [u32; 4])| {
            at == leaf && (at_subleaf == subleaf || !matches!(leaf, 7 | 0xd))
        };
        if let Some((_, _, answer)) = self.cpuid_answers.iter().find(asked) {
            return *answer;
        }
        match leaf {
            // Family 0xf (qemu64): SSE2 and friends in EDX; SSE3 and CX16 in ECX, without
            // x2APIC or the hypervisor bit (as QEMU 7.2's TCG answers).
            1 => [0x0000_0663, 0x0800, 0x0000_2001, 0x078b_fbff],
            // No structured extended features (qemu64).
            7 => [0, 0, 0, 0],
            0xd => [self.xsave_components, 0x340, 0x340, 0],
            // SVM (bit 2) and LM.
            0x8000_0001 => [0, 0, 0x25, 0x2010_0800],
            // SVM revision 1, nested paging.
            0x8000_000a => [1, 0x10, 0, 1],
            // 40 physical and 48 virtual address bits (qemu64 under TCG).
            0x8000_0008 => [0x3028, 0, 0, 0],
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
        let now = self.now.get();
        self.now.set(now + self.now_step.get());
        now
    }

    /// The host's time of day, carried by the TSC as the real machine's is: WALL_CLOCK and
    /// a half when the TSC reads its first value, a nanosecond more at each tick (1 GHz).
    fn wall_clock(&self) -> WallTime {
        let since = self.now.get().saturating_sub(1_000_000) + 500_000_000;
        WallTime {
            seconds: WALL_CLOCK + since / 1_000_000_000,
            nanos: (since % 1_000_000_000) as u32,
        }
    }

    fn acknowledge_timer(&mut self) -> u64 {
        self.ticks += 1;
        self.calls.push("acknowledge_timer".into());
        self.ticks
    }

    fn start_timer(&mut self) {
        self.calls.push("start_timer".into());
    }

    fn quicken_timer(&mut self, hz: u32) {
        self.calls.push(format!("quicken_timer {hz}"));
    }

    fn halt_until(&mut self, tsc: u64) -> u64 {
        // As `Hardware::halt_until`: a key typed (for any domain) ends the halt at once.
        if !self.keys.is_empty() {
            self.calls.push(format!("halt_until {tsc} (keys typed)"));
            return 0;
        }
        // Three of the hypervisor's ticks pass while the CPU halts.
        self.now.set(self.now.get().max(tsc));
        self.ticks += 3;
        self.calls.push(format!("halt_until {tsc}"));
        3
    }

    fn keyboard(&self) -> bool {
        self.keyboard
    }

    fn debugger_attached(&self) -> bool {
        self.debugger
    }

    fn keys_typed(&mut self) -> bool {
        !self.keys.is_empty()
    }

    fn discard_keys(&mut self) -> usize {
        core::mem::take(&mut self.keys)
            .iter()
            .map(|(_, bytes)| bytes.len())
            .sum()
    }

    fn take_keys(&mut self, domain: u16) -> Vec<u8> {
        let (mine, others) = core::mem::take(&mut self.keys)
            .into_iter()
            .partition(|(to, _)| *to == domain);
        self.keys = others;
        mine.into_iter().flat_map(|(_, bytes)| bytes).collect()
    }

    fn invalidate_page(&mut self, address: u64, asid: u32) {
        self.calls.push(format!("invlpga {address:#x} asid {asid}"));
    }

    fn set_xcr0(&mut self, value: u64) {
        self.calls.push(format!("xsetbv {value:#x}"));
    }

    fn load_breakpoint_address(&mut self, slot: u8, address: u64) {
        self.calls.push(format!("dr{slot} = {address:#x}"));
        self.breakpoints[slot as usize & 3] = address;
    }

    fn breakpoint_address(&self, slot: u8) -> u64 {
        self.breakpoints[slot as usize & 3]
    }

    fn load_dr7(&mut self, value: u64) {
        self.calls.push(format!("dr7 = {value:#x}"));
    }
}

/// The hypercall instruction (`0f 01 d9`).
pub const VMMCALL: [u8; 3] = [0x0f, 0x01, 0xd9];
/// UD0 (`0f ff`): an instruction that raises #UD, for a test about any #UD. Not UD2 (`0f 0b`):
/// the invalid-opcode lab's exercise makes the hypervisor skip UD2 itself, and a test that
/// needs a #UD must hold with that exercise solved too (`labs/tests/exercises.rs` runs these
/// tests with each solution applied).
pub const UD0: [u8; 2] = [0x0f, 0xff];

/// Where a test guest's code starts (the boot protocol's image base).
pub const ENTRY: u64 = boot::IMAGE_BASE;
/// Where the test guests keep their IDT.
pub const IDT: u64 = 0x0030_0000;
/// The boot page tables (`traplab_abi::boot`): one PML4, one PDPT, one PD of 2 MiB pages.
pub const PML4: u64 = boot::BOOT_PAGE_TABLES;
pub const PDPT: u64 = PML4 + 0x1000;
pub const PD: u64 = PML4 + 0x2000;
/// The 4 KiB page table [`Test::read_only_page_tables`] gives the first 2 MiB.
pub const PT: u64 = PML4 + 0x3000;
/// A page of RAM no test uses for anything else: buffers, frames, tables.
pub const DATA: u64 = 0x0010_0000;
/// The shared-info page of the domains of the event-channel tests.
pub const SHARED_INFO: u64 = 0x0011_0000;
/// An address no page table maps (the PDPT maps only the first GiB, the PD only 16 MiB).
pub const UNMAPPED: u64 = 0x4000_0000;

/// A domain and a machine to run its exits against, and the other domains and the store
/// beside it (none, unless a test adds them).
pub struct Test {
    pub domain: Domain,
    pub machine: FakeMachine,
    pub others: Vec<Domain>,
    pub store: Store,
    /// The grants mapped into the test's domain (its [`VecMemory::foreign`]).
    foreign: Rc<RefCell<BTreeMap<u64, (u64, bool)>>>,
    /// Its reads of guest memory (its [`VecMemory::reads`]).
    reads: Rc<Cell<u64>>,
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
        self.events.iter().map(Body::kind).collect()
    }

    /// Every `decide` event (a second one says why applying the decision failed).
    pub fn decides(&self) -> Vec<&Decide> {
        self.events
            .iter()
            .filter_map(|body| match body {
                Body::Decide(decide) => Some(decide),
                _ => None,
            })
            .collect()
    }

    /// The `emulate` event (panics when there is none).
    pub fn emulate(&self) -> &Emulate {
        self.events
            .iter()
            .find_map(|body| match body {
                Body::Emulate(emulate) => Some(emulate),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no emulate event in {:?}", self.kinds()))
    }

    /// The register changes the `emulate` event lists, as `(name, old, new)`.
    pub fn changes(&self) -> Vec<(&str, u64, u64)> {
        self.emulate()
            .changes
            .iter()
            .map(|change| (change.name.as_ref(), change.old, change.new))
            .collect()
    }

    /// The console lines, in order.
    pub fn console(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|body| match body {
                Body::Console(console) => Some(console.text.as_ref()),
                _ => None,
            })
            .collect()
    }

    /// The `inject` event (panics when there is none).
    pub fn injected(&self) -> &event::Inject {
        self.events
            .iter()
            .find_map(|body| match body {
                Body::Inject(inject) => Some(inject),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no inject event in {:?}", self.kinds()))
    }

    /// The `bounce` event (panics when there is none).
    pub fn bounced(&self) -> &event::Bounce {
        self.events
            .iter()
            .find_map(|body| match body {
                Body::Bounce(bounce) => Some(bounce),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no bounce event in {:?}", self.kinds()))
    }

    /// Every `notify` event, in order.
    pub fn notifies(&self) -> Vec<&event::Notify> {
        self.events
            .iter()
            .filter_map(|body| match body {
                Body::Notify(notify) => Some(notify),
                _ => None,
            })
            .collect()
    }

    /// The `grant_map` event (panics when there is none).
    pub fn grant_mapped(&self) -> &event::GrantMap {
        self.events
            .iter()
            .find_map(|body| match body {
                Body::GrantMap(map) => Some(map),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no grant_map event in {:?}", self.kinds()))
    }

    /// The `grant_unmap` event (panics when there is none).
    pub fn grant_unmapped(&self) -> &event::GrantUnmap {
        self.events
            .iter()
            .find_map(|body| match body {
                Body::GrantUnmap(unmap) => Some(unmap),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no grant_unmap event in {:?}", self.kinds()))
    }

    /// The `return` event (panics when there is none).
    pub fn returned(&self) -> &Return {
        self.events
            .iter()
            .find_map(|body| match body {
                Body::Return(returned) => Some(returned),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no return event in {:?}", self.kinds()))
    }
}

/// The event a decision puts in EVENTINJ, its IDT handler and whether the hypervisor made
/// it up (panics when the decision injects nothing).
pub fn injected(decision: &Decision) -> (svm::Event, Option<u64>, bool) {
    match decision.delivery.as_deref() {
        Some(Delivery::Inject {
            event,
            handler,
            synthetic,
        }) => (*event, *handler, *synthetic),
        other => panic!("no injection but {other:?}: {}", decision.why),
    }
}

/// The bounce a decision carries (panics when it has none).
pub fn bounced(decision: &Decision) -> &Bounce {
    match decision.delivery.as_deref() {
        Some(Delivery::Bounce(bounce)) => bounce,
        other => panic!("no bounce but {other:?}: {}", decision.why),
    }
}

/// Why a decision kills the domain (panics when it does not).
pub fn killed(decision: &Decision) -> &str {
    match decision.end.as_deref() {
        Some(DomainEnd::Killed { reason }) => reason,
        other => panic!("not killed but {other:?}: {}", decision.why),
    }
}

/// The status and reason a decision ends the domain with, when the domain asked to end.
pub fn exited(decision: &Decision) -> (i32, &str) {
    match decision.end.as_deref() {
        Some(DomainEnd::Exited { status, reason }) => (*status, reason),
        other => panic!("not exited but {other:?}: {}", decision.why),
    }
}

/// A trap-table entry: `vector` bounced to `handler`, with interrupts off (Xen's
/// `TI_SET_IF`: an interrupt gate), reached by INT n from any privilege level (DPL 3).
pub fn trap(vector: u8, handler: u64) -> TrapInfo {
    TrapInfo {
        vector,
        flags: TrapInfo::CLEAR_IF | TrapInfo::DPL,
        handler,
        ..TrapInfo::default()
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

    /// The same guest on this memory (a [`VecMemory`] with no frame left, say).
    pub fn with_memory(memory: VecMemory) -> Test {
        let foreign = Rc::clone(&memory.foreign);
        let reads = Rc::clone(&memory.reads);
        let mut domain = Domain::new(1, "test".into(), Box::new(memory));
        domain.vcpu.set_long_mode_boot_state(ENTRY);
        domain.vcpu.run_state = RunState::Runnable;
        let mut test = Test {
            domain,
            machine: FakeMachine::default(),
            others: Vec::new(),
            store: Store::default(),
            foreign,
            reads,
        };
        let table = pte::PRESENT | pte::WRITABLE | pte::USER;
        test.write_u64(PML4, PDPT | table);
        test.write_u64(PDPT, PD | table);
        for large in 0..(boot::GUEST_RAM_SIZE >> 21) {
            test.write_u64(PD + large * 8, (large << 21) | table | pte::HUGE);
        }
        test
    }

    /// Another domain beside the test's, runnable, with its RAM in a vector and a
    /// shared-info page at [`SHARED_INFO`].
    pub fn add_domain(&mut self, id: u16) -> &mut Domain {
        let memory = VecMemory::new(boot::GUEST_RAM_SIZE, false);
        let mut domain = Domain::new(id, format!("d{id}"), Box::new(memory));
        domain.vcpu.set_long_mode_boot_state(ENTRY);
        domain.vcpu.run_state = RunState::Runnable;
        domain.events.shared_info = Some(SHARED_INFO);
        self.others.push(domain);
        self.others.last_mut().expect("just added")
    }

    /// How many reads of guest-physical memory the test's domain has seen so far.
    pub fn memory_reads(&self) -> u64 {
        self.reads.get()
    }

    /// The pages of other domains mapped into the test's domain (grants): guest-physical
    /// page → (host frame, writable).
    pub fn foreign(&self) -> BTreeMap<u64, (u64, bool)> {
        self.foreign.borrow().clone()
    }

    /// The test's domain at a VMMCALL with RAX = `number`, RDI = `first`, RSI = `second`
    /// (the first two arguments of every hypercall, `traplab_abi::hypercall`).
    pub fn hypercall(number: u64, first: u64, second: u64) -> Test {
        let mut test = Test::long_mode();
        test.code(&VMMCALL);
        test.set_gpr(0, number);
        test.set_gpr(7, first);
        test.set_gpr(6, second);
        test
    }

    /// Run the VMMCALL at RIP again (its registers as they are now), from [`ENTRY`].
    pub fn call(&mut self) -> Run {
        self.domain.vcpu.vmcb.save.rip = ENTRY;
        self.run(self.exit(ExitReason::Vmmcall))
    }

    /// Another domain, by id.
    pub fn other(&mut self, id: u16) -> &mut Domain {
        self.others
            .iter_mut()
            .find(|domain| domain.id == id)
            .expect("a domain the test added")
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
            others: Others::new(&self.others, &self.store),
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

    /// `bytes` at RIP access guest-physical `gpa`, where no RAM is (a device): the nested
    /// page fault, run.
    pub fn mmio(&mut self, bytes: &[u8], gpa: u64) -> Run {
        self.code(bytes);
        let exit = self.exit(ExitReason::Npf {
            gpa,
            info: svm::NpfInfo::decode(0),
        });
        self.run(exit)
    }

    /// `OUT DX, AL` of `value` to `port` at RIP, run; RIP back where it was after it, for the
    /// next. (The port's device sees it as a guest's OUT: a write that reprograms a timer
    /// reaches the guest's timers, `apply.rs`.)
    pub fn out(&mut self, port: u16, value: u8) -> Run {
        let rip = self.domain.vcpu.vmcb.save.rip;
        self.code(&[0xee]);
        self.set_gpr(0, value as u64);
        self.set_gpr(2, port as u64);
        let exit = self.exit(ExitReason::Ioio {
            info: svm::IoioInfo {
                port,
                input: false,
                string: false,
                rep: false,
                size: 1,
                address_bits: 64,
                segment: 0,
            },
            next_rip: rip + 1,
        });
        let run = self.run(exit);
        self.domain.vcpu.vmcb.save.rip = rip;
        run
    }

    /// Both 8259As initialised as a PC kernel does (vectors 0x20 and 0x28, the slave on IR2,
    /// 8086 mode), then masked with `master_mask` and `slave_mask`: OUTs, as the guest makes
    /// them ([`Test::out`]).
    pub fn initialise_the_pics(&mut self, master_mask: u8, slave_mask: u8) {
        for (port, value) in PICS_INITIALISED {
            self.out(port, value);
        }
        self.out(0x21, master_mask);
        self.out(0xa1, slave_mask);
    }

    /// The RTC's update-ended interrupt on, through the slave 8259A (IRQ 8, vector 0x28,
    /// whose gate goes to 0x20_0000; only IRQ 2 and IRQ 8 open), status C selected at 0x70 as
    /// a kernel's handler leaves it, and the clock at the update's end: the RTC's timer due
    /// and not yet ticked. OUTs, as the guest makes them ([`Test::out`]).
    pub fn rtc_update_ended_due(&mut self) {
        self.gate(0x28, 0x20_0000);
        self.initialise_the_pics(0xfb, 0xfe);
        // Status A: no periodic rate; status B: UIE, 24-hour.
        for (port, value) in [(0x70, 0x0a), (0x71, 0x20), (0x70, 0x0b), (0x71, 0x12)] {
            self.out(port, value);
        }
        self.out(0x70, 0x0c);
        let armed = self.domain.vcpu.interrupts.timers.rtc;
        let due = armed.expect("UIE arms the RTC's timer").due_tsc;
        self.machine.now.set(due);
    }

    /// Map the 4th GiB, where the devices are (the lab device, the APICs), as itself with
    /// one 1 GiB page: the boot page tables map only the first 16 MiB, and an instruction
    /// that the hypervisor translates addresses for (a string instruction) must reach them.
    pub fn map_devices(&mut self) {
        let flags = pte::PRESENT | pte::WRITABLE | pte::HUGE;
        self.write_u64(PDPT + 3 * 8, 0xc000_0000 | flags);
    }

    pub fn set_gpr(&mut self, number: u8, value: u64) {
        self.domain.vcpu.set_gpr(number, value);
    }

    pub fn gpr(&self, number: u8) -> u64 {
        self.domain.vcpu.gpr_64(number)
    }

    pub fn rip(&self) -> u64 {
        self.domain.vcpu.vmcb.save.rip
    }

    /// Set RFLAGS.IF (the boot state has interrupts off).
    pub fn interrupts_on(&mut self) {
        self.domain.vcpu.vmcb.save.rflags |= RFlags::INTERRUPT_FLAG.bits();
    }

    /// Register trap-table entries, as a `set_trap_table` hypercall would have.
    pub fn trap_table(&mut self, entries: &[TrapInfo]) {
        self.domain.pv.trap_table = entries.to_vec();
    }

    /// Write a trap table for `set_trap_table` at `gva` (identity-mapped): the entries, then
    /// the entry with handler 0 that ends it.
    pub fn write_trap_table(&mut self, gva: u64, entries: &[TrapInfo]) {
        for (index, entry) in entries.iter().chain([&TrapInfo::default()]).enumerate() {
            let mut bytes = [0u8; 16];
            bytes[0] = entry.vector;
            bytes[1] = entry.flags;
            bytes[8..].copy_from_slice(&entry.handler.to_le_bytes());
            self.write(gva + 16 * index as u64, &bytes);
        }
    }

    /// Map the first 2 MiB with 4 KiB pages (a new page table at [`PT`]) and every page
    /// table read-only: what a PV guest must do before `pin_page_table`, since a pinned
    /// table may only be mapped read-only (`domain/page_tables.rs`). The rest of the first
    /// 2 MiB (the stack, [`DATA`]) stays writable.
    pub fn read_only_page_tables(&mut self) {
        for page in 0..512u64 {
            let address = page << 12;
            let writable = match address {
                PML4..=PT => 0,
                _ => pte::WRITABLE,
            };
            self.write_u64(PT + 8 * page, address | pte::PRESENT | pte::USER | writable);
        }
        self.write_u64(PD, PT | pte::PRESENT | pte::WRITABLE | pte::USER);
    }

    /// [`Test::read_only_page_tables`], then pin them all, as `pin_page_table(PML4)` does.
    pub fn pin_page_tables(&mut self) {
        self.read_only_page_tables();
        let tables = self
            .domain
            .tables_under(PML4)
            .expect("read-only tables can be pinned");
        self.domain.pv.pin(tables);
    }

    /// Write `entry` at `gpa`, in a pinned table, as the hypervisor writes a checked one
    /// (`Effect::PageTableEntry`), unchecked: the pinned tables' writable leaves follow. The
    /// scene a guest would have made with checked stores.
    pub fn write_pinned_entry(&mut self, gpa: u64, entry: u64) {
        let level = self.domain.pinned_level(gpa).expect("a pinned table");
        let old = self.read_u64(gpa);
        self.write_u64(gpa, entry);
        self.domain.pv.entry_written(level, old, entry);
    }

    /// What VMRUN and the next #VMEXIT do to the state the tests look at: `Vcpu::before_vmrun`
    /// notes an interrupt shadow, the guest took the injected event (EVENTINJ is consumed),
    /// and `Vcpu::after_vmrun` resets the TLB flush and puts a suspended IRET intercept back.
    pub fn vmrun(&mut self) {
        self.domain.vcpu.before_vmrun();
        self.domain.vcpu.vmcb.control.eventinj = 0;
        self.domain.vcpu.after_vmrun();
    }

    /// A data breakpoint of the guest's in slot 0, as its own MOVs to DR0 and DR7 leave it:
    /// `length` bytes (1, 2, 4 or 8: LEN0) at DR0 = `address`, for writes (R/W0 = 01b) or for
    /// reads and writes (11b), enabled by L0 (AMD APM vol. 2, 13.1.1.5).
    pub fn watch(&mut self, address: u64, length: u64, reads_too: bool) {
        let rw: u64 = if reads_too { 0b11 } else { 0b01 };
        let len: u64 = match length {
            1 => 0b00,
            2 => 0b01,
            8 => 0b10,
            _ => 0b11,
        };
        self.domain.vcpu.vmcb.save.dr7 = 0x400 | (len << 2 | rw) << 16 | 1;
        self.machine.breakpoints[0] = address;
    }

    /// The state where a CPU checks alignment (`Vcpu::alignment_checks`): CPL 3, CR0.AM and
    /// RFLAGS.AC set.
    pub fn check_alignment(&mut self) {
        let save = &mut self.domain.vcpu.vmcb.save;
        save.cpl = 3;
        save.cr0 |= Cr0Flags::ALIGNMENT_MASK.bits();
        save.rflags |= RFlags::ALIGNMENT_CHECK.bits();
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
        let mut others = OthersMut::new(&mut self.others, &mut self.store);
        let mut applied = apply::apply(
            &mut self.domain,
            &mut others,
            decision.clone(),
            &mut self.machine,
            &mut events,
            &mut Vec::new(),
            true,
        );
        if applied.end.is_none() {
            apply::keys_from_host(&mut self.domain, &mut self.machine, &mut events);
            apply::before_resume(&mut self.domain, &exit, &mut applied, &mut events);
        }
        // A template is filled in by the host (`decision::Words`): the tests read the line
        // the trace shows.
        for body in &mut events {
            if let Body::Emulate(emulate) = body
                && !emulate.arguments.is_empty()
            {
                emulate.what = event::render(&emulate.what, emulate.arguments.iter()).into();
                emulate.arguments = Default::default();
            }
        }
        Run {
            decision,
            applied,
            events,
        }
    }
}

/// The hypercall at [`ENTRY`] returned `result` in RAX, and the guest continues after the
/// three-byte VMMCALL.
pub fn assert_returned(test: &Test, result: i64) {
    assert_eq!(test.gpr(0) as i64, result);
    assert_eq!(test.rip(), ENTRY + 3, "RIP past the VMMCALL");
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
