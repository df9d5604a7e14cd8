//! The store (`store_op`, `traplab_abi::store`): where domains publish ports and grant
//! references for each other.

use crate::hypercall::store_op;
use traplab_abi::store::{cmd, value_read};

/// Set `path` to `value`. 0, or a negative error (`EACCES` outside our part of the tree,
/// `EINVAL` for a value longer than the store keeps, as the hypervisor refuses one: never
/// written cut short).
pub fn write(path: &str, value: &str) -> i64 {
    let mut bytes = [0u8; traplab_abi::store::VALUE_MAX as usize];
    let Some(room) = bytes.get_mut(..value.len()) else {
        return traplab_abi::hypercall::error::EINVAL;
    };
    room.copy_from_slice(value.as_bytes());
    store_op(cmd::WRITE, path, room)
}

/// Set `path` to `value`, in decimal (the store holds text).
pub fn write_number(path: &str, value: u32) -> i64 {
    write(path, crate::text!(10, "{value}").as_str())
}

/// Read `path` into `buffer`: its value, or a negative error (`ENOENT`, `E2BIG` when it is
/// longer than `buffer`: `traplab_abi::store::value_read`).
pub fn read<'a>(path: &str, buffer: &'a mut [u8]) -> Result<&'a str, i64> {
    value_read(store_op(cmd::READ, path, buffer), buffer)
}

/// Read `path`, waiting (blocked) until some domain writes it.
pub fn wait<'a>(path: &str, buffer: &'a mut [u8]) -> Result<&'a str, i64> {
    value_read(store_op(cmd::WAIT, path, buffer), buffer)
}

/// Wait (blocked) until `path` holds something other than `known`, and read it into
/// `buffer` (`known` must fit in it, with room for the NUL that ends it).
pub fn watch<'a>(path: &str, known: &str, buffer: &'a mut [u8]) -> Result<&'a str, i64> {
    if known.len() >= buffer.len() {
        return Err(traplab_abi::hypercall::error::EINVAL);
    }
    buffer.fill(0);
    buffer[..known.len()].copy_from_slice(known.as_bytes());
    value_read(store_op(cmd::WATCH, path, buffer), buffer)
}

/// Watch `path`: from now on each write of it makes our store port pending (a port to
/// poll beside others, `sched::poll`). That port, or a negative error (`ENOSPC`).
pub fn watch_event(path: &str) -> Result<traplab_abi::evtchn::Port, i64> {
    let result = store_op(cmd::WATCH_EVENT, path, &mut []);
    match result {
        0.. => Ok(result as traplab_abi::evtchn::Port),
        _ => Err(result),
    }
}

/// Read `path`, waiting for it, as a number.
pub fn wait_number(path: &str) -> Result<u32, i64> {
    let mut buffer = [0u8; 16];
    let text = wait(path, &mut buffer)?;
    text.parse()
        .map_err(|_| traplab_abi::hypercall::error::EINVAL)
}
