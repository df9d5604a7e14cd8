//! IN/OUT and INS/OUTS (exit code 0x7B IOIO): emulate the port.
//!
//! Every port is marked in the I/O permission map, so every port access exits. EXITINFO1
//! says which port, which direction, how wide, and whether it is a string (INS/OUTS) or
//! REP instruction; EXITINFO2 holds the RIP of the next instruction (AMD APM vol. 2,
//! 15.10.2), so IOIO is the one exit where we need no decoder to skip the instruction.
//!
//! The ports a guest has:
//! - 0x3f8–0x3ff: its console UART (`device/uart.rs`);
//! - anything else: nothing, like an empty ISA bus: reads return all ones, writes vanish.

use super::{DomainEnd, Next};
use crate::decide;
use crate::domain::Domain;
use crate::emulate::mask;
use alloc::format;
use alloc::string::String;
use traplab_abi::boot::CONSOLE_PORT;
use traplab_abi::event::Action;
use traplab_abi::svm::IoioInfo;

const RFLAGS_DF: u64 = 1 << 10;

pub fn handle(domain: &mut Domain) -> Next {
    let info = IoioInfo::decode(domain.vmcb.control.exitinfo1);
    let next_rip = domain.vmcb.control.exitinfo2;
    let device = device_name(info.port);
    decide!(
        domain,
        Action::Emulate,
        "{} port {:#x} ({}): the hypervisor emulates every port",
        if info.input { "IN from" } else { "OUT to" },
        info.port,
        device
    );

    let what = if info.string {
        match string_io(domain, info) {
            Ok(what) => what,
            Err(reason) => {
                decide!(domain, Action::Kill, "{reason}");
                return Next::End(DomainEnd::Killed { reason });
            }
        }
    } else if info.input {
        let value = port_read(domain, info.port, info.size);
        set_accumulator(domain, info.size, value);
        format!("IN {:#x} from port {:#x} ({device})", value, info.port)
    } else {
        let value = (domain.gpr(0) & mask(info.size)) as u32;
        port_write(domain, info.port, info.size, value);
        match (info.port, value) {
            (CONSOLE_PORT, 0x20..=0x7e) => {
                format!("OUT {:?} to the console UART", value as u8 as char)
            }
            _ => format!("OUT {:#x} to port {:#x} ({device})", value, info.port),
        }
    };
    domain.set_rip(next_rip);
    domain.emulated(what);
    Next::Resume
}

pub(super) fn device_name(port: u16) -> &'static str {
    match port {
        0x3f8..=0x3ff => "console UART",
        _ => "no device",
    }
}

/// IN's result goes to AL, AX or EAX; the rest of RAX is kept, except that a 32-bit result
/// zero-extends into RAX in 64-bit mode (AMD APM vol. 1, 3.1.2.3).
pub(super) fn set_accumulator(domain: &mut Domain, size: u8, value: u32) {
    let rax = domain.gpr(0);
    let merged = match size {
        1 => (rax & !0xff) | value as u64,
        2 => (rax & !0xffff) | value as u64,
        _ => value as u64,
    };
    domain.set_gpr(0, merged);
}

pub(super) fn port_read(domain: &mut Domain, port: u16, size: u8) -> u32 {
    match port {
        0x3f8..=0x3ff if size == 1 => domain.console.read(port - CONSOLE_PORT) as u32,
        _ => mask(size) as u32,
    }
}

pub(super) fn port_write(domain: &mut Domain, port: u16, size: u8, value: u32) {
    if let (0x3f8..=0x3ff, 1) = (port, size) {
        if let Some(line) = domain.console.write(port - CONSOLE_PORT, value as u8) {
            domain.console_line(line);
        }
    }
}

/// INS/OUTS, with or without REP: move `count` elements between the port and guest memory
/// at ES:RDI (INS) or DS:RSI (OUTS), stepping by the size, backwards when RFLAGS.DF is set.
fn string_io(domain: &mut Domain, info: IoioInfo) -> Result<String, String> {
    let address_mask = match info.address_bits {
        16 => 0xffff,
        32 => 0xffff_ffff,
        _ => u64::MAX,
    };
    let count = if info.rep {
        domain.gpr(1) & address_mask
    } else {
        1
    };
    let step = if domain.vmcb.save.rflags & RFLAGS_DF != 0 {
        (info.size as u64).wrapping_neg()
    } else {
        info.size as u64
    };
    // RSI (6) for OUTS, RDI (7) for INS.
    let index_register = if info.input { 7 } else { 6 };
    let mut index = domain.gpr(index_register);
    for _ in 0..count {
        let address = index & address_mask;
        let mut element = [0u8; 4];
        let bytes = &mut element[..info.size as usize];
        if info.input {
            let value = port_read(domain, info.port, info.size);
            bytes.copy_from_slice(&value.to_le_bytes()[..info.size as usize]);
            domain.write_virtual(address, bytes).map_err(|error| {
                format!("INS wrote to {address:#x}, which the guest cannot reach: {error:?}")
            })?;
        } else {
            domain.read_virtual(address, bytes).map_err(|error| {
                format!("OUTS read from {address:#x}, which the guest cannot reach: {error:?}")
            })?;
            let mut value = [0u8; 4];
            value[..info.size as usize].copy_from_slice(bytes);
            port_write(domain, info.port, info.size, u32::from_le_bytes(value));
        }
        index = index.wrapping_add(step);
    }
    domain.set_gpr(index_register, index);
    if info.rep {
        domain.set_gpr(1, domain.gpr(1) & !address_mask);
    }
    Ok(format!(
        "{}{} {} element(s) of {} byte(s) {} port {:#x} ({})",
        if info.rep { "REP " } else { "" },
        if info.input { "INS" } else { "OUTS" },
        count,
        info.size,
        if info.input { "from" } else { "to" },
        info.port,
        device_name(info.port)
    ))
}
