//! traplab-hv: a small real hypervisor for teaching what happens when a guest traps.
//!
//! QEMU boots it with `-kernel` (PVH, `boot.rs`). It sets up its own CPU tables, reads its
//! guests from QEMU's fw_cfg, checks for and enables AMD SVM, and runs each guest in a
//! domain, taking every trap and recording every step in the trace ring.
//!
//! This is the bare-metal program: the parts that need the machine. What the hypervisor
//! *decides* is the library (`lib.rs`, the crate `traplab_hv`), which the host tests too.
//! The path of one trap, in reading order: `run.rs` (the loop) → `svm/world_switch.rs`
//! (VMRUN) → `exit/mod.rs` (the exit reason picks a handler) → one file in `exit/` (the
//! decision) → `apply.rs` (the decision carried out, the events recorded) → `run.rs`.
#![no_std]
#![no_main]

extern crate alloc;

// The memcpy & co. that `core` expects.
use traplab_baremetal as _;

mod bench_bare;
mod boot;
mod clock;
mod console;
mod control;
mod cpu;
mod frames;
mod fw_cfg;
mod gdb;
mod guest_ram;
mod hardware;
mod heap;
mod intercepts;
mod loader;
mod power;
mod run;
mod settings;
mod svm;
mod time;
mod timer;
mod trace;

use alloc::borrow::Cow;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use power::HvStatus;
use traplab_abi::event::{self, Body};
use traplab_hv::Domain;
use traplab_hv::device::ata;
use traplab_hv::schedule::Start;

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Domains we look for in fw_cfg (`opt/traplab/dom0` … `dom7`): dom0, the control domain,
/// only when the lab has one; the unprivileged domains from 1.
const MAX_DOMAINS: u16 = 8;

/// Called by `boot.rs` in 64-bit mode with the PVH start info.
#[unsafe(no_mangle)]
extern "C" fn hv_main(start_info: u64) -> ! {
    console::init();
    cpu::init();
    timer::init_pic();
    log!("traplab-hv {VERSION}");
    let Some(memory_map) = boot::memory_map(start_info) else {
        stop(
            HvStatus::BadConfig,
            "no PVH start info with a memory map: boot me with QEMU's -kernel",
        )
    };
    let ram_end = match frames::init(memory_map) {
        Ok(end) => end,
        Err(message) => stop(HvStatus::BadConfig, message),
    };

    let fw_cfg = match fw_cfg::FwCfg::open() {
        Ok(fw_cfg) => fw_cfg,
        Err(message) => stop(HvStatus::BadConfig, message),
    };
    let mode = match fw_cfg.read_text("opt/traplab/trace") {
        Ok(Some(text)) => trace::Transport::parse(&text).unwrap_or(trace::Transport::Lossy),
        _ => trace::Transport::Lossy,
    };
    if let Ok(Some(text)) = fw_cfg.read_text("opt/traplab/settings") {
        match settings::parse(&text) {
            Ok(parsed) => settings::init(parsed),
            Err(unknown) => {
                let message = format!("unknown setting \"{unknown}\" in opt/traplab/settings");
                start_trace(mode, traplab_abi::ring::DATA_SIZE / 1024);
                stop(HvStatus::BadConfig, &message)
            }
        }
    }
    let ring_kib = match fw_cfg.read_text("opt/traplab/ring-kib") {
        Ok(Some(text)) => text.parse().unwrap_or(traplab_abi::ring::DATA_SIZE / 1024),
        _ => traplab_abi::ring::DATA_SIZE / 1024,
    };
    start_trace(mode, ring_kib);
    if settings::get().bench_bare && mode != trace::Transport::Off {
        // Its CPUIDs would be answered in the run loop and never recorded: a trace that hides
        // traps (`bench_bare.rs`). Refused, as an unknown setting is.
        stop(
            HvStatus::BadConfig,
            "the setting bench-bare answers CPUID without recording it: it runs only with the trace off (traplab bench's baseline)",
        )
    }
    match fw_cfg.read_text("opt/traplab/control") {
        Ok(Some(text)) if text == "run" => control::enable(false),
        Ok(Some(text)) if text == "pause" => control::enable(true),
        _ => {}
    }

    traplab_hv::instruction::warm_up();
    // The TSC rate is measured, unless the host gives it (`opt/traplab/tsc-hz`): a count of
    // QEMU's own work must not depend on how fast the host runs it (`tools/qemu-cost.sh`).
    let given_hz = match fw_cfg.read_text("opt/traplab/tsc-hz") {
        // At least 1 MHz: a guest's CPUID reports the rate in kHz (`exit/cpuid.rs`).
        Ok(Some(text)) => text.trim().parse().ok().filter(|&hz| hz >= 1_000_000),
        _ => None,
    };
    let tsc_hz = given_hz.map_or_else(time::calibrate_tsc, time::set_tsc_hz);
    time::read_wall_clock();
    let features = svm::check();
    run::record(
        None,
        &Body::Boot(boot_event(features.ok(), tsc_hz, ram_end)),
    );
    log!(
        "RAM {} MiB, TSC {} MHz, trace {:?}",
        ram_end >> 20,
        tsc_hz / 1_000_000,
        mode
    );
    if let Err(status) = features {
        let message = match status {
            HvStatus::NoSvm => "this CPU has no AMD SVM: run QEMU with -cpu qemu64,+svm,+npt",
            HvStatus::SvmDisabled => "SVM is disabled by firmware (VM_CR.SVMDIS)",
            _ => "this CPU has no nested paging: run QEMU with -cpu qemu64,+svm,+npt",
        };
        stop(status, message);
    }
    let Some(host) = svm::enable() else {
        stop(HvStatus::BadConfig, "out of memory enabling SVM")
    };
    if let Ok(Some(text)) = fw_cfg.read_text("opt/traplab/timer-hz")
        && let Ok(hz) = text.parse::<u32>()
        && hz > 0
    {
        timer::start(hz);
        log!("timer: {hz} Hz");
    }

    if let Ok(Some(text)) = fw_cfg.read_text("opt/traplab/gdb") {
        let id = text.trim().parse().unwrap_or(1);
        gdb::enable(id);
        log!("gdb: served on COM2 for d{id}");
    }
    let start = match fw_cfg.read_text("opt/traplab/start") {
        Ok(Some(text)) if text.trim() == "together" => Start::Together,
        _ => Start::InTurn,
    };

    // The disk controller's owner (device/ata.rs): a domain id, or no disk at all.
    let disk = match fw_cfg.read_text("opt/traplab/disk-owner") {
        Ok(Some(text)) => match text.parse::<u16>() {
            Ok(owner) => ata::Assignment::Owner(owner),
            Err(_) => stop(
                HvStatus::BadConfig,
                &format!("opt/traplab/disk-owner is \"{text}\", not a domain id"),
            ),
        },
        _ => ata::Assignment::NoDisk,
    };
    if let Some(owner) = disk.owner() {
        log!("disk: the ATA controller belongs to d{owner}");
    }

    let (domains, refused) = load_domains(&fw_cfg, disk);
    if domains.is_empty() && refused == 0 {
        stop(
            HvStatus::BadConfig,
            "no guest to run (fw_cfg opt/traplab/dom1/image)",
        );
    }
    if domains.is_empty() {
        // Each refused image ended its domain (a `killed` event says why): the run is over,
        // as when every domain has ended.
        stop(
            HvStatus::Done,
            "every domain has ended: none could be loaded",
        );
    }
    drop(fw_cfg);
    run::run_all(domains, start, &host);
    stop(HvStatus::Done, "every domain has ended")
}

/// Open the trace ring. The control mailbox shares the ring's header page: it is cleaned
/// before the ring's magic tells the host it may look.
fn start_trace(mode: trace::Transport, kib: usize) {
    control::reset_mailbox();
    trace::init(mode, kib);
}

fn boot_event(features: Option<svm::Features>, tsc_hz: u64, ram_end: u64) -> event::Boot {
    let vendor = core::arch::x86_64::__cpuid(0);
    let mut name = [0u8; 12];
    name[0..4].copy_from_slice(&vendor.ebx.to_le_bytes());
    name[4..8].copy_from_slice(&vendor.edx.to_le_bytes());
    name[8..12].copy_from_slice(&vendor.ecx.to_le_bytes());
    event::Boot {
        hv: Cow::Owned(format!("traplab-hv {VERSION}")),
        cpu: Cow::Owned(String::from_utf8_lossy(&name).into_owned()),
        svm_revision: features.map_or(0, |features| features.revision),
        nested_paging: features.is_some_and(|features| features.nested_paging),
        nrip_save: features.is_some_and(|features| features.nrip_save),
        decode_assists: features.is_some_and(|features| features.decode_assists),
        tsc_hz,
        ram_mib: (ram_end >> 20) as u32,
    }
}

/// Create a domain for every guest the host passed. A guest that cannot be loaded is
/// reported (its domain is killed before it ran) and skipped: the domains, and how many
/// were refused.
fn load_domains(fw_cfg: &fw_cfg::FwCfg, disk: ata::Assignment) -> (Vec<Domain>, usize) {
    let mut domains = Vec::new();
    let mut refused = 0;
    for id in 0..MAX_DOMAINS {
        let file = |what: &str| format!("opt/traplab/dom{id}/{what}");
        let Ok(Some(image)) = fw_cfg.read(&file("image")) else {
            continue;
        };
        let text = |what: &str| fw_cfg.read_text(&file(what)).ok().flatten();
        let name = text("name").unwrap_or_else(|| format!("d{id}"));
        let created = boot_options(&text("memory-mib")).and_then(|mut options| {
            options.command_line = text("cmdline");
            options.initrd = fw_cfg.read(&file("initrd")).ok().flatten();
            options.input = fw_cfg.read(&file("input")).ok().flatten();
            loader::create(id, name.clone(), &image, &options, disk)
                .map_err(|error| format!("{error}"))
        });
        match created {
            Ok(domain) => domains.push(domain),
            Err(error) => {
                refused += 1;
                let reason = format!("cannot load {name}: {error}");
                log!("{reason}");
                run::record(
                    Some(id),
                    &Body::Domain(event::DomainChange {
                        state: event::DomainState::Killed,
                        name: Cow::Owned(name),
                        status: None,
                        reason: Some(Cow::Owned(reason)),
                    }),
                );
            }
        }
    }
    (domains, refused)
}

/// A domain's boot options with its RAM from fw_cfg `memory-mib` (the default without it).
fn boot_options(memory_mib: &Option<String>) -> Result<loader::BootOptions, String> {
    use traplab_abi::boot::{MAX_GUEST_RAM_MIB, MIN_GUEST_RAM_MIB};
    let memory = match memory_mib {
        None => traplab_abi::boot::GUEST_RAM_SIZE,
        Some(text) => match text.trim().parse::<u32>() {
            Ok(mib) if (MIN_GUEST_RAM_MIB..=MAX_GUEST_RAM_MIB).contains(&mib) => (mib as u64) << 20,
            _ => {
                return Err(format!(
                    "memory-mib {text:?}: a domain has {MIN_GUEST_RAM_MIB} to {MAX_GUEST_RAM_MIB} MiB of RAM"
                ));
            }
        },
    };
    Ok(loader::BootOptions {
        memory,
        command_line: None,
        initrd: None,
        input: None,
    })
}

/// Record why we stop, then power off.
fn stop(status: HvStatus, reason: &str) -> ! {
    log!("{reason}");
    run::record(
        None,
        &Body::End(event::End {
            status: status as u8,
            reason: Cow::Owned(reason.into()),
        }),
    );
    power::exit(status)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    console::write_fmt_emergency(format_args!("hv: PANIC: {info}\n"));
    power::exit(HvStatus::HvFault)
}
