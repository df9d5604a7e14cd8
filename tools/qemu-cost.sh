#!/bin/bash
# What a CPUID trap costs QEMU itself, in host instructions: the bench's three configurations
# (bare world switch, trace off, trace on) run once each under valgrind's callgrind, which counts
# every instruction QEMU executes: the translated code (the hypervisor's and the guest's), and
# what `-icount` cannot see, TCG's work around it: refilling its software TLB page by page and
# looking translated blocks up after each world switch emptied both, and the flushes themselves.
# The count does not depend on the machine's load, and it follows the wall-clock time closely
# (book/src/speed.md, "Where the time goes under TCG").
#
#   tools/qemu-cost.sh            # after `cargo build --release`; a few minutes (2.5 here on 2026-12-04)
#
# Needs valgrind (`sudo apt-get install valgrind`). Each configuration's boot is measured with
# the `hello` guest (a few exits) and taken off, so the figures are per trap of `cpuid-loop`
# (20,000 CPUIDs). The hypervisor is given its TSC rate (`opt/traplab/tsc-hz`) instead of
# measuring it: the calibration polls the PIT for 35 ms of the host's time, which under
# valgrind is a different number of polls in every run (once 8 G instructions of them). What
# port I/O is left is counted apart and taken off too.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is missing: sudo apt-get install valgrind" >&2; exit 1; }
qemu=$(command -v qemu-system-x86_64) || { echo "QEMU is missing: sudo apt-get install qemu-system-x86" >&2; exit 1; }
images=target/bare/x86_64-unknown-linux-gnu/release
[ -x "$images/traplab-hv" ] && [ -x target/release/traplab ] || { echo "build first: cargo build --release" >&2; exit 1; }
work=$(mktemp -d /tmp/qemu-cost.XXXXXX)
TRAPS=20000
# Any rate will do: nothing in these runs waits for a time.
TSC_HZ=2500000000

# The QEMU under callgrind, for `traplab trace` (the traced run needs its reader): a wrapper
# found first on the PATH, writing to the file named by $COST_OUT.
mkdir -p "$work/bin"
cat > "$work/bin/qemu-system-x86_64" <<EOF
#!/bin/bash
exec valgrind --tool=callgrind --smc-check=all-non-file --callgrind-out-file="\$COST_OUT" "$qemu" "\$@" 2>"\$COST_OUT.log"
EOF
chmod +x "$work/bin/qemu-system-x86_64"

# Host instructions of one run, less its port I/O (address_space_ldub/stb: PIO goes through them).
# The port I/O taken off is kept in $out.io: the polling around it (its helpers, QEMU's lock,
# the loop's own code) is not taken off, about 7% more (book/src/speed.md), so a run whose
# calibration polled long is counted high.
cost() {
    local out=$1 total io
    total=$(callgrind_annotate --threshold=100 "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    io=$(callgrind_annotate --threshold=100 --inclusive=yes "$out" 2>/dev/null |
        awk '/:address_space_(ldub|stb) / {gsub(",", "", $1); sum += $1} END {printf "%.0f\n", sum}')
    echo "$io" >"$out.io"
    echo $((total - io))
}

# Of a run's host instructions, those of QEMU's translated code: the hypervisor's and the guest's
# instructions, run. Callgrind files them under the one object it cannot name ("???": the code
# TCG generated, in no file); the rest is QEMU's own work (looking blocks up, refilling its TLB,
# translating, devices). A cost line right after `calls=` is what a call cost, counted again
# where the callee is: skipped.
translated() {
    awk '/^c?ob=/ {
            match($0, /\([0-9]+\)/); id = substr($0, RSTART, RLENGTH); rest = substr($0, RSTART + RLENGTH + 1)
            if (rest != "") name[id] = rest
            if ($0 ~ /^ob=/) object = id
            next
        }
        /^calls=/ { skip = 1; next }
        /^[0-9+*-]/ { if (skip) { skip = 0; next } if (name[object] == "???") sum += $2 }
        END { printf "%.0f\n", sum }' "$1"
}

# Untraced: QEMU's command line as traplab builds it, with the trace off (and `bench-bare`).
untraced() {
    local name=$1 guest=$2 settings=$3
    valgrind --tool=callgrind --smc-check=all-non-file --callgrind-out-file="$work/$name.out" \
        "$qemu" -machine q35 -accel tcg -cpu qemu64,+svm,+npt -m 256M -kernel "$images/traplab-hv" \
        -nodefaults -display none -monitor none -serial "file:$work/$name.serial" -no-reboot \
        -device isa-debug-exit,iobase=0xf4,iosize=0x04 -fw_cfg name=opt/traplab/trace,string=off \
        -fw_cfg name=opt/traplab/start,string=in-turn -fw_cfg "name=opt/traplab/dom1/name,string=$guest" \
        -fw_cfg "name=opt/traplab/dom1/image,file=$images/$guest" \
        -fw_cfg "name=opt/traplab/tsc-hz,string=$TSC_HZ" $settings >"$work/$name.log" 2>&1 || true
}

traced() {
    local name=$1 guest=$2
    COST_OUT="$work/$name.out" PATH="$work/bin:$PATH" target/release/traplab trace --guest "$guest" \
        --timeout 3000 --qemu-arg=-fw_cfg "--qemu-arg=name=opt/traplab/tsc-hz,string=$TSC_HZ" \
        >"$work/$name.trace" 2>&1 || true
}

echo "callgrind runs in $work (a few minutes)..."
untraced bare-hello hello "-fw_cfg name=opt/traplab/settings,string=bench-bare"
untraced bare cpuid-loop "-fw_cfg name=opt/traplab/settings,string=bench-bare"
untraced off-hello hello ""
untraced off cpuid-loop ""
traced on-hello hello
traced on cpuid-loop

# A run ends with QEMU's isa-debug-exit status (never 0: hence the `|| true` above), so each
# must show its guest's last words: a run that failed is an error, not a number.
finished() {
    grep -q "$2" "$1" || { echo "qemu-cost: the run in $1 did not finish (no \"$2\" in it)" >&2; exit 1; }
}
for config in bare off; do
    finished "$work/$config-hello.serial" "Hello from a traplab guest!"
    finished "$work/$config.serial" "CPUID exits in"
done
finished "$work/on-hello.trace" "Hello from a traplab guest!"
finished "$work/on.trace" "CPUID exits in"

declare -A per_trap in_code
declare -A label=([bare]="bare world switch" [off]="traplab, trace off" [on]="traplab, trace on")
printf '%-28s %12s %16s %12s\n' "host instructions per trap" "all" "translated code" "QEMU's own"
for config in bare off on; do
    per_trap[$config]=$((($(cost "$work/$config.out") - $(cost "$work/$config-hello.out")) / TRAPS))
    in_code[$config]=$((($(translated "$work/$config.out") - $(translated "$work/$config-hello.out")) / TRAPS))
    printf '%-28s %12d %16d %12d\n' "${label[$config]}" "${per_trap[$config]}" "${in_code[$config]}" \
        $((per_trap[$config] - in_code[$config]))
done
awk -v b="${per_trap[bare]}" -v o="${per_trap[off]}" -v t="${per_trap[on]}" \
    'BEGIN { printf "untraced / bare: %.2fx   traced / untraced: %.2fx\n", o / b, t / o }'
# How far off the polling left around the port I/O can put each figure: 7% of the I/O taken
# off the run and off its boot, per trap. More than 1,000 is worth a second run.
for config in bare off on; do
    run_io=$(cat "$work/$config.out.io") boot_io=$(cat "$work/$config-hello.out.io")
    awk -v c="$config" -v r="$run_io" -v b="$boot_io" -v n="$TRAPS" 'BEGIN {
        off = 0.07 * (r > b ? r : b) / n
        if (off > 1000) printf "%s: the TSC calibration polled the PIT for %.0f M instructions (boot %.0f M):" \
            " the figure may be off by up to %.0f a trap; run again\n", c, r / 1e6, b / 1e6, off }'
done
echo "per function: callgrind_annotate $work/on.out"
