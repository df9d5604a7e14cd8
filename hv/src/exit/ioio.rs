//! IN/OUT and INS/OUTS (exit code 0x7B IOIO): emulate the port.
//!
//! Every port is marked in the I/O permission map, so every port access exits. EXITINFO1
//! says which port, which direction, how wide, and whether it is a string (INS/OUTS) or
//! REP instruction; EXITINFO2 holds the RIP of the next instruction (AMD APM vol. 2,
//! 15.10.2), so IOIO is the one exit where we need no decoder to skip the instruction.
//!
//! The ports a guest has are the device bus's (`device/mod.rs`): its console UART at
//! 0x3f8–0x3ff, and nothing elsewhere, like an empty ISA bus: reads return all ones,
//! writes vanish.

use super::Exit;
use crate::decide;
use crate::decision::{Decision, Effect, PortAccess};
use crate::device::Devices;
use crate::domain::Guest;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use traplab_abi::boot::CONSOLE_PORT;
use traplab_abi::event::Action;
use traplab_abi::svm::IoioInfo;
use traplab_abi::x86::RFlags;
use traplab_abi::x86::operand_mask;

pub fn handle(_exit: &Exit, guest: &Guest, info: IoioInfo, next_rip: u64) -> Decision {
    let device = Devices::port_name(info.port);
    let decision = decide!(
        Action::Emulate,
        "{} port {:#x} ({}): the hypervisor emulates every port",
        if info.input { "IN from" } else { "OUT to" },
        info.port,
        device
    );
    if info.string {
        return match string_io(guest, info) {
            Ok((effects, what)) => decision
                .with_all(effects)
                .with(Effect::Rip(next_rip))
                .describe(what),
            Err(reason) => decide!(Action::Kill, "{reason}").killing(reason),
        };
    }
    let (access, what) = port_access(guest, info.port, info.size, info.input);
    let decision = decision
        .with(Effect::Port(access))
        .with(Effect::Rip(next_rip));
    match what {
        Some(what) => decision.describe(what),
        // An IN says what it read once the device has answered.
        None => decision,
    }
}

/// An IN or OUT (not a string one) of `size` bytes at `port`: the access, and for an OUT
/// what the trace says of it (an IN's value is known only when the device answers).
pub(super) fn port_access(
    guest: &Guest,
    port: u16,
    size: u8,
    input: bool,
) -> (PortAccess, Option<String>) {
    if input {
        return (PortAccess::In { port, size }, None);
    }
    let value = (guest.gpr(0) & operand_mask(size)) as u32;
    let what = match (port, value) {
        (CONSOLE_PORT, 0x20..=0x7e) => {
            format!("OUT {:?} to the console UART", value as u8 as char)
        }
        _ => format!(
            "OUT {:#x} to port {:#x} ({})",
            value,
            port,
            Devices::port_name(port)
        ),
    };
    (PortAccess::Out { port, size, value }, Some(what))
}

/// INS/OUTS, with or without REP: `count` elements between the port and guest memory at
/// ES:RDI (INS) or DS:RSI (OUTS), stepping by the size, backwards when RFLAGS.DF is set.
/// Every element's address is translated now; one the guest cannot reach is an error.
fn string_io(guest: &Guest, info: IoioInfo) -> Result<(Vec<Effect>, String), String> {
    let address_mask = match info.address_bits {
        16 => 0xffff,
        32 => 0xffff_ffff,
        _ => u64::MAX,
    };
    let count = if info.rep {
        guest.gpr(1) & address_mask
    } else {
        1
    };
    let backwards =
        RFlags::from_bits_truncate(guest.vcpu.vmcb.save.rflags).contains(RFlags::DIRECTION_FLAG);
    let step = if backwards {
        (info.size as u64).wrapping_neg()
    } else {
        info.size as u64
    };
    // RSI (6) for OUTS, RDI (7) for INS.
    let index_register = if info.input { 7 } else { 6 };
    let mut index = guest.gpr(index_register);
    let size = info.size as usize;
    let access = if info.input {
        let mut to = Vec::new();
        for _ in 0..count {
            let address = index & address_mask;
            let pieces = guest
                .memory
                .physical_pieces(guest.cr3(), address, size)
                .map_err(|error| {
                    format!("INS wrote to {address:#x}, which the guest cannot reach: {error:?}")
                })?;
            if pieces.len() != 1 {
                return Err(format!(
                    "INS wrote an element across a page boundary at {address:#x}, which the hypervisor does not emulate"
                ));
            }
            to.push(pieces[0].0);
            index = index.wrapping_add(step);
        }
        PortAccess::InString {
            port: info.port,
            size: info.size,
            to,
        }
    } else {
        let mut values = Vec::new();
        for _ in 0..count {
            let address = index & address_mask;
            let mut element = [0u8; 4];
            guest
                .read_virtual(address, &mut element[..size])
                .map_err(|error| {
                    format!("OUTS read from {address:#x}, which the guest cannot reach: {error:?}")
                })?;
            values.push(u32::from_le_bytes(element));
            index = index.wrapping_add(step);
        }
        PortAccess::OutString {
            port: info.port,
            size: info.size,
            values,
        }
    };
    let mut effects = vec![Effect::Port(access), Effect::Gpr(index_register, index)];
    if info.rep {
        effects.push(Effect::Gpr(1, guest.gpr(1) & !address_mask));
    }
    let what = format!(
        "{}{} {} element(s) of {} byte(s) {} port {:#x} ({})",
        if info.rep { "REP " } else { "" },
        if info.input { "INS" } else { "OUTS" },
        count,
        info.size,
        if info.input { "from" } else { "to" },
        info.port,
        Devices::port_name(info.port)
    );
    Ok((effects, what))
}
