# Where the instructions of one exit go: single-step the hypervisor through one whole
# trap in QEMU's own gdb stub, and count the instructions by function.
#
#   cargo run --release -- trace --guest cpuid-loop --qemu-arg=-s --qemu-arg=-S >/dev/null &
#   gdb -batch -x tools/exit-profile.py target/bare/x86_64-unknown-linux-gnu/release/traplab-hv
#
# An untraced exit (the bench's middle run): start QEMU as `traplab bench` does, with the
# trace off, instead of `traplab trace`:
#
#   B=target/bare/x86_64-unknown-linux-gnu/release
#   qemu-system-x86_64 -machine q35 -accel tcg -cpu qemu64,+svm,+npt -m 256M \
#     -kernel $B/traplab-hv -nodefaults -display none -monitor none -serial null \
#     -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
#     -fw_cfg name=opt/traplab/trace,string=off -fw_cfg name=opt/traplab/start,string=in-turn \
#     -fw_cfg name=opt/traplab/dom1/name,string=cpuid-loop \
#     -fw_cfg name=opt/traplab/dom1/image,file=$B/cpuid-loop -s -S &
#
# QEMU waits (-S) until this script continues it; the hypervisor runs the guest's first
# SKIP exits (default 1000: past the boot and the first use of every text), then the
# script steps one instruction at a time from the instruction after VMRUN to the same
# place one exit later: the guest's own instructions (one CPUID, a jump) and everything
# the hypervisor does for that exit. It prints how many instructions each function ran,
# itself and with what it called (calls and returns are followed as they come), and the
# 4 KiB pages of code (with the functions that ran on each) and of data touched: under TCG
# each costs a refill of QEMU's software TLB after every world switch (book chapter "What a
# trap costs"), and the translated blocks QEMU must look up again after it (its jump cache
# is emptied with the TLB). A data page is listed with the function that touched it first
# and, for a static, its symbol; the addresses come from each instruction's memory operands
# (AT&T syntax) and the registers before it runs.
# Each block looked up is listed with where control came from and went to: a return and an
# indirect jump or call always look up; a direct one only when it leaves its page. Then QEMU's
# jump cache is replayed over the exit (its hash as QEMU 7.2 computes it): the lookups it
# misses, and which targets evicted which; and its software TLB (direct-mapped by page
# number): the fills, and the pages that took each other's entry, each swap back a call
# into QEMU's slow path.
#
# Environment: SKIP (exits to let pass first), PORT (QEMU's gdb stub, 1234), TLB_ENTRIES
# (the TLB's size QEMU settled on, 64), STEPS_FILE (a file to write the address of each
# instruction the exit ran to, one a line: `addr2line -e <the hypervisor> < FILE` then
# counts them by source line, and `tools/steps-by-call.py` by the inlined call they came from).
import collections
import os
import re

import gdb

SKIP = int(os.environ.get("SKIP", "1000"))
PORT = os.environ.get("PORT", "1234")
LIMIT = 200_000  # instructions: a trap that takes more is not a trap this script is for

gdb.execute("set pagination off")
gdb.execute(f"target remote localhost:{PORT}")

# The instruction after VMRUN in world_switch: where the hypervisor gets control back.
found = gdb.execute("info functions world_switch::world_switch", to_string=True)
start = int(re.search(r"(0x[0-9a-f]+)\s+traplab_hv::svm::world_switch", found).group(1), 16)
listing = gdb.execute(f"disassemble {start:#x},+256", to_string=True).splitlines()
lines = [line for line in listing if re.match(r"^\s*0x", line)]
vmrun = next(index for index, line in enumerate(lines) if "vmrun" in line)
after_vmrun = int(lines[vmrun + 1].split()[0], 16)

gdb.execute(f"hbreak *{after_vmrun:#x}")
gdb.execute(f"ignore 1 {SKIP}")
gdb.execute("continue")
gdb.execute("delete")

architecture = gdb.selected_frame().architecture()

# The hypervisor's code: the ELF's .text. Any other PC is the guest's, even one that
# `info symbol` names: a guest runs at its own physical addresses, which can be the
# hypervisor's (its .bss reaches past 2 MiB, where a lab guest starts, once the image grows).
# (A guest whose code sat inside the hypervisor's .text range would be counted as the
# hypervisor's: the labs' guests start at 2 MiB, above it.)
CODE = [
    (int(start, 16), int(end, 16))
    for start, end in re.findall(
        r"(0x[0-9a-f]+) - (0x[0-9a-f]+) is \.text", gdb.execute("info files", to_string=True)
    )
]


def function(pc, names={}):
    """The function whose code `pc` is in (not an inlined one: the one called)."""
    if not any(start <= pc < end for start, end in CODE):
        return "(the guest)"
    if pc not in names:
        text = gdb.execute(f"info symbol {pc:#x}", to_string=True)
        name = text.split(" in section")[0]
        name = re.sub(r" \+ \d+$", "", name)
        name = re.sub(r"::h[0-9a-f]{16}$", "", name)  # the symbol's hash
        names[pc] = "(the guest)" if name.startswith("No symbol") else name
    return names[pc]


# A memory operand in AT&T syntax: [segment:]displacement(base,index,scale).
OPERAND = re.compile(r"(?:%(\w+):)?(-?0x[0-9a-f]+|-?\d+)?\((%\w+)?(?:,(%\w+)(?:,(\d+))?)?\)")
STACK = ("push", "pop", "call", "ret", "leave")
WIDTH = {"b": 1, "w": 2, "l": 4, "q": 8}


def register(name):
    return int(gdb.selected_frame().read_register(name)) & (2**64 - 1)


def data_addresses(pc):
    """The addresses the instruction at `pc` reads or writes, from the registers now (before
    it runs): its memory operands, the stack for a push, pop, call or return, and the whole
    of a REP MOVS or STOS. Not the world switch's (VMRUN, VMLOAD, VMSAVE: the same in every
    configuration)."""
    if function(pc) == "(the guest)":
        return []
    instruction = architecture.disassemble(pc, count=2)
    text = instruction[0]["asm"]
    mnemonic = text.split()[0]
    # A NOP's operand (`data16 cs nopw 0x0(%rax,%rax,1)`, padding) and LEA's are not read.
    if mnemonic.startswith(("lea", "vm")) or "nop" in text:
        return []
    addresses = []
    if mnemonic.startswith(STACK):
        addresses.append(register("rsp") - 8)
    for segment, displacement, base, index, scale in OPERAND.findall(text.split("#")[0]):
        if segment in ("fs", "gs"):
            continue  # not used by the hypervisor
        address = int(displacement, 0) if displacement else 0
        if base == "%rip":
            address += instruction[1]["addr"]
        elif base:
            address += register(base[1:])
        if index:
            address += register(index[1:]) * int(scale or "1")
        addresses.append(address & (2**64 - 1))
    words = text.split()
    if words[0] == "rep" and words[1][:4] in ("movs", "stos"):
        count = register("rcx") * WIDTH.get(words[1][4:5], 1)
        starts = [register("rdi")] + ([register("rsi")] if words[1].startswith("movs") else [])
        for start in starts:
            addresses.extend(range(start, start + count, 4096))
    return addresses


steps = []
data = []  # (pc, address) of every access
accessed_at = []  # (step, address) of every access: the step is the instruction's index
pc = after_vmrun
while len(steps) < LIMIT:
    addresses = data_addresses(pc)
    data.extend((pc, address) for address in addresses)
    accessed_at.extend((len(steps), address) for address in addresses)
    try:
        gdb.execute("stepi", to_string=True)
    except gdb.MemoryError:
        # The step was taken; what failed was gdb's look at the code of the symbol it
        # takes the guest's PC to be in (the hypervisor's .bss, once the image passes
        # 2 MiB), read through the guest's address space.
        pass
    pc = int(gdb.parse_and_eval("$pc")) & (2**64 - 1)
    steps.append(pc)
    if pc == after_vmrun:
        break
if os.environ.get("STEPS_FILE"):
    with open(os.environ["STEPS_FILE"], "w") as f:
        f.write("\n".join(f"{pc:#x}" for pc in steps))


def mnemonic(pc, known={}):
    """The instruction's mnemonic; none for the guest's, which gdb would read through the
    hypervisor's addresses."""
    if function(pc) == "(the guest)":
        return ""
    if pc not in known:
        known[pc] = architecture.disassemble(pc)[0]["asm"].split()[0]
    return known[pc]


itself = collections.Counter()
with_callees = collections.Counter()
stack = []
previous = None
for pc in steps:
    if previous is not None:
        if mnemonic(previous).startswith("call"):
            stack.append(function(previous))
        elif mnemonic(previous).startswith("ret") and stack:
            stack.pop()
    name = function(pc)
    itself[name] += 1
    for caller in set(stack + [name]):
        with_callees[caller] += 1
    previous = pc

hypervisor = [pc for pc in steps if function(pc) != "(the guest)"]
print(f"one exit: {len(steps)} instructions, {len(hypervisor)} of them the hypervisor's")
code_pages = collections.defaultdict(collections.Counter)
for pc in hypervisor:
    code_pages[pc >> 12][function(pc)] += 1
print(f"code pages touched: {len(code_pages)}")
# Which functions ran on each: a change that moves code shows here where its pages went.
for page in sorted(code_pages):
    names = ", ".join(f"{name[:50]} {count}" for name, count in code_pages[page].most_common(4))
    print(f"  {page << 12:#10x} {sum(code_pages[page].values()):>5} instructions: {names}")
data_pages = sorted(set(address >> 12 for pc, address in data if function(pc) != "(the guest)"))
print(f"data pages touched: {len(data_pages)}")
for page in data_pages:
    on_page = [(pc, address) for pc, address in data if address >> 12 == page]
    pc, first = on_page[0]
    named = gdb.execute(f"info symbol {first:#x}", to_string=True).strip()
    what = "" if named.startswith("No symbol") else named.split(" in section")[0]
    print(f"  {page << 12:#10x} {len(on_page):>5} accesses, first by {function(pc)[:60]}  {what[:50]}")
# The control transfers for which QEMU looks the next translated block up: its jump cache is
# emptied with the TLB at every world switch, while a direct jump within a page stays chained
# to its target. So: every transfer by a return, an indirect call or jump (a match's jump
# table), or to another page.


def transfer_kind(previous, pc):
    """How control went from `previous` to `pc` if QEMU looks the next block up for it: a
    return, an indirect jump or call, or a move to another page (a jump, a call, or running
    on past the page's end: a block is never chained to one on another page); None when the
    blocks stay chained (the next instruction, or a direct jump within the page)."""
    instruction = architecture.disassemble(previous)[0]
    jumped = pc != previous + instruction["length"]
    if jumped and instruction["asm"].startswith(("ret", "repz ret")):
        return "return"
    if jumped and "*" in instruction["asm"]:
        return "indirect"
    if pc >> 12 != previous >> 12:
        return "page"
    return None


# Every transfer of the hypervisor's that looks a block up, in order: (kind, from, to), with
# the step of the instruction that transfers (counted as in `accessed_at`).
transfer_steps = []
for step, (previous, pc) in enumerate(zip([after_vmrun] + steps, steps)):
    if function(previous) == "(the guest)":
        continue
    kind = transfer_kind(previous, pc)
    if kind:
        transfer_steps.append((step, (kind, previous, pc)))
transfers = [transfer for _, transfer in transfer_steps]
# Each target once, in the order they came: (jump or page, target) -> (kind, from, to).
looked_up = {}
for kind, previous, pc in transfers:
    group = "page" if kind == "page" else "jump"
    looked_up.setdefault((group, pc), (kind, function(previous), function(pc)))
indirect = sum(1 for group, _ in looked_up if group == "jump")
print(
    f"blocks looked up: {len(looked_up)} "
    f"({indirect} targets of returns and indirect jumps, {len(looked_up) - indirect} on another page)"
)


# The distinct targets are the lookups only if QEMU's jump cache kept every one. It keeps one
# block per entry, 4,096 entries indexed by a hash of the target's address (QEMU 7.2,
# accel/tcg/tb-hash.h): the entry's high 6 bits are the low 6 bits of the target's page
# number (XORed with its address), its low 6 bits those of its address. So all the targets
# on one page, and on pages 64 apart, share 64 entries; two in one entry evict each other,
# and each comes back as a lookup in the hash table again. Replayed here over every transfer
# of the hypervisor's part of the exit, the cache empty at its start (the flush at #VMEXIT).
def jump_cache_index(pc):
    mixed = pc ^ (pc >> 6)
    return ((mixed >> 6) & 0xFC0) | (mixed & 0x3F)


jump_cache = {}
misses = 0
evicted = collections.Counter()
code_looked_up = []  # (step, pc): each lookup reads the target's page in QEMU's TLB
for step, (kind, previous, pc) in transfer_steps:
    if function(pc) == "(the guest)":
        continue  # VMRUN: the cache is emptied again
    index = jump_cache_index(pc)
    if jump_cache.get(index) != pc:
        misses += 1
        code_looked_up.append((step, pc))
        if index in jump_cache:
            evicted[(function(jump_cache[index]), function(pc))] += 1
        jump_cache[index] = pc
print(f"jump cache misses (the lookups, QEMU's cache replayed): {misses}")
for (out, into), count in evicted.most_common(8):
    print(f"  {count} x {into[:50]} evicted {out[:50]}")


# QEMU's software TLB, replayed the same way. It is direct-mapped: a page's entry is its page
# number modulo the TLB's size, which QEMU resizes at each flush to the use it saw (QEMU 7.2,
# accel/tcg/cputlb.c, tlb_mmu_resize_locked: 64 entries, its least, while fewer than 45 pages
# are used between two flushes; a CPUID exit uses about 26), and behind it are 8 victims
# (CPU_VTLB_SIZE). A page whose entry another
# took is found among the victims and swapped back: no walk of the page tables, but QEMU's
# slow path (a call of about 60 of its instructions) instead of the inline check. Two pages
# used in turn with the same entry pay that at every turn; one evicted from the victims too is
# walked again. The hypervisor's data accesses, and each block it looks up (the code's page:
# `get_page_addr_code`), the first at #VMEXIT itself, in order, the TLB empty at the exit.
TLB_ENTRIES = int(os.environ.get("TLB_ENTRIES", "64"))
VICTIMS = 8
# (step, 0 for data or 1 for code, page): an instruction's accesses come before the lookup of
# the block it jumps to (`accessed_at` counts from the instruction after VMRUN at 0).
# Sorted by the first two only: one instruction's accesses keep their order.
events = sorted(
    [(-1, 1, after_vmrun >> 12)]
    + [(step, 0, address >> 12) for step, address in accessed_at]
    + [(step, 1, pc >> 12) for step, pc in code_looked_up],
    key=lambda event: event[:2],
)
entries = {}
victims = []
fills = swaps = 0
swapped = collections.Counter()
for _, _, page in events:
    index = page % TLB_ENTRIES
    if entries.get(index) == page:
        continue
    if page in victims:
        swaps += 1
        swapped[tuple(sorted((page, entries[index])))] += 1
        victims[victims.index(page)] = entries[index]
    else:
        fills += 1
        if index in entries:
            victims = (victims + [entries[index]])[-VICTIMS:]
    entries[index] = page
print(
    f"QEMU's TLB replayed ({TLB_ENTRIES} entries by page number, {VICTIMS} victims): "
    f"{fills} fills (a walk of the page tables), {swaps} swaps back from the victims"
)
for (first, second), count in swapped.most_common(6):
    print(f"  {count} x pages {first << 12:#x} and {second << 12:#x} share an entry")
print("\nblocks looked up, in order (a return, an indirect jump or call, a jump to another page):")
for kind, source, target in looked_up.values():
    print(f"  {kind:8} {source[:55]:55} -> {target[:55]}")
print(f"\n{'itself':>7} {'with callees':>13}  function")
for name, count in with_callees.most_common(40):
    print(f"{itself[name]:>7} {count:>13}  {name[:100]}")
gdb.execute("detach")
