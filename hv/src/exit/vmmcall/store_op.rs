//! `store_op(cmd, path, path_len, value, value_len)`: the store, where the control domain
//! publishes how domains find each other (the ABI and how it differs from xenstore:
//! `traplab_abi::store`; the tree itself: `store.rs`).
//!
//! `store_wait` on a node that does not exist yet blocks the vCPU *without* moving RIP: when
//! a write wakes it, the VMMCALL runs again and now reads the node (as a Xen hypercall
//! continuation re-executes its call).

use super::finish;
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use crate::domain::vcpu::Wait;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use traplab_abi::event::Action;
use traplab_abi::hypercall::{self, error};
use traplab_abi::store::{PATH_MAX, VALUE_MAX, cmd, writable_by};

pub fn handle(guest: &Guest, next: u64) -> Decision {
    let (command, path, path_length) = (guest.gpr(7), guest.gpr(6), guest.gpr(2));
    let (value, value_length) = (guest.gpr(10), guest.gpr(8));
    let name = cmd::name(command).unwrap_or("store_op");
    let number = hypercall::STORE_OP;
    let refuse = |why: String, code| {
        finish(
            decide!(Action::Emulate, "{name}: {why}"),
            next,
            number,
            code,
        )
    };
    if cmd::name(command).is_none() {
        return refuse(format!("no such command {command}, ENOSYS"), error::ENOSYS);
    }
    let path = match read_text(guest, path, path_length, PATH_MAX) {
        Ok(path) if path.starts_with('/') => path,
        Ok(path) => {
            return refuse(
                format!("\"{path}\" is not a path (it starts with /), EINVAL"),
                error::EINVAL,
            );
        }
        Err(code) => {
            return refuse(
                format!("the path is not readable text of 1 to {PATH_MAX} bytes"),
                code,
            );
        }
    };
    match command {
        cmd::WRITE => {
            let text = match read_text(guest, value, value_length, VALUE_MAX) {
                Ok(text) => text,
                Err(code) => {
                    return refuse(format!("the value is not readable text of at most {VALUE_MAX} bytes"), code);
                }
            };
            if !writable_by(guest.id, &path) {
                return refuse(
                    format!(
                        "d{} may write only under /local/domain/{}/ (dom0 anywhere), not {path}: EPERM",
                        guest.id, guest.id
                    ),
                    error::EPERM,
                );
            }
            if !guest.others.store.has_room_for(&path) {
                return refuse(format!("the store is full, {path} cannot be added: ENOSPC"), error::ENOSPC);
            }
            let decision = decide!(
                Action::Emulate,
                "{name}: d{} sets {path} = \"{text}\"",
                guest.id
            )
            .with(Effect::StoreWrite {
                path,
                value: text,
            });
            finish(decision, next, number, 0)
        }
        _ => match guest.others.store.read(&path) {
            Some(found) => {
                // Like snprintf: as much as fits, and the whole length returned.
                let bytes = found.as_bytes();
                let copied = &bytes[..bytes.len().min(value_length as usize)];
                if guest.memory.physical_pieces(guest.cr3(), value, copied.len()).is_err() {
                    return refuse(format!("the buffer at {value:#x} is not in the guest's memory, EFAULT"), error::EFAULT);
                }
                let decision = decide!(
                    Action::Emulate,
                    "{name}: {path} = \"{found}\", copied to the guest"
                )
                .with(Effect::GuestWrite {
                    address: value,
                    bytes: copied.to_vec(),
                });
                finish(decision, next, number, bytes.len() as i64)
            }
            None if command == cmd::WAIT => decide!(
                Action::Emulate,
                "{name}: {path} does not exist yet: d{} blocks until a domain writes it, then runs this VMMCALL again",
                guest.id
            )
            .with(Effect::Block(Wait::Store(path)))
            .describe("store_wait: blocked, RIP stays at the VMMCALL"),
            None => refuse(format!("{path} does not exist, ENOENT"), error::ENOENT),
        },
    }
}

/// Text of 1 to `max` bytes at guest-virtual `address`: EFAULT if it is not readable,
/// EINVAL if it is too long, empty, or not UTF-8.
fn read_text(guest: &Guest, address: u64, length: u64, max: u64) -> Result<String, i64> {
    if length == 0 || length > max {
        return Err(error::EINVAL);
    }
    let mut bytes = vec![0u8; length as usize];
    guest
        .read_virtual(address, &mut bytes)
        .map_err(|_| error::EFAULT)?;
    String::from_utf8(bytes).map_err(|_| error::EINVAL)
}
