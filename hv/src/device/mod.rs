//! Devices the hypervisor emulates for its guests.

pub mod lab_device;
pub mod uart;
