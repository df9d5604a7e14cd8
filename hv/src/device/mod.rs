//! Devices the hypervisor emulates for its guests.

pub mod uart;
