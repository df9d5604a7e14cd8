#!/usr/bin/env python3
# Where inside one function of the hypervisor an exit's instructions went, by the inlined
# call they came from: `tools/exit-profile.py` counts by function as the ELF file names
# them, and most of the hot path is inlined into a few of those (the run loop, `apply`, the
# encoder), so its counts say little about which step inside them costs. This reads the
# addresses `exit-profile.py` wrote (its STEPS_FILE, one instruction a line) and the
# hypervisor's debug information (DWARF's inlined-call records, through binutils'
# addr2line), and for each instruction that ran in FUNCTION counts the chain of calls,
# DEPTH deep, that led from FUNCTION's own code to it ("(itself)" for FUNCTION's own lines,
# a call of a function that was not inlined among them: its instructions count for it).
#
#   STEPS_FILE=/tmp/exit.steps gdb -batch -x tools/exit-profile.py target/bare/x86_64-unknown-linux-gnu/release/traplab-hv
#   tools/steps-by-call.py target/bare/x86_64-unknown-linux-gnu/release/traplab-hv /tmp/exit.steps apply::apply 2
#
# FUNCTION is matched as a part of the function's name ("apply::apply", "run_vcpu",
# "Encoder::encode"); DEPTH is 1 by default. Each line: the count, then the calls, outermost
# first, each as the called function's last name and the line it was called from.
import collections
import signal
import subprocess
import sys

USAGE = "usage: tools/steps-by-call.py ELF STEPS_FILE FUNCTION [DEPTH]"


def main():
    # Piped into `head`, it stops quietly when the reader has seen enough.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if len(sys.argv) < 4:
        sys.exit(USAGE)
    elf, steps, function = sys.argv[1], sys.argv[2], sys.argv[3]
    depth = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    with open(steps) as lines:
        addresses = [line.strip() for line in lines if line.strip()]
    # -a: each address first (to tell the groups apart), -f: function names, -i: the chain
    # of inlined calls, innermost first, -C: demangled.
    output = subprocess.run(
        ["addr2line", "-a", "-f", "-i", "-C", "-e", elf],
        input="\n".join(addresses),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    groups = []
    for line in output:
        if line.startswith("0x"):
            groups.append([])
        elif groups:
            groups[-1].append(line)
    counts = collections.Counter()
    for group in groups:
        # (function, file:line) pairs, outermost last: the function the ELF file names.
        frames = list(zip(group[0::2], group[1::2]))
        if not frames or function not in frames[-1][0]:
            continue
        outermost_first = frames[::-1]
        chain = []
        for index in range(1, min(depth + 1, len(outermost_first))):
            called = outermost_first[index][0].split("::")[-1]
            # The line a call is at is the caller's frame's location.
            at = outermost_first[index - 1][1].rsplit("/", 1)[-1].split(" ")[0]
            chain.append(f"{called}@{at}")
        if not chain:
            chain = ["(itself) " + frames[-1][1].rsplit("/", 1)[-1].split(" ")[0]]
        counts[" > ".join(chain)] += 1
    total = sum(counts.values())
    print(f"{total} instructions in {function}")
    for chain, count in counts.most_common():
        print(f"{count:6} {chain}")


main()
