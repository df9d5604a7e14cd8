//! The machine's disk controller: a legacy ATA controller (ports 0x1f0–0x1f7 and 0x3f6,
//! `traplab_abi::ata`) that the hypervisor does **not** emulate. It belongs, whole, to one
//! domain — the *driver domain* — and this file is the rule of who reaches it:
//!
//! | who                  | its I/O permission map (`intercepts.rs`) | an IN or OUT at the controller's ports |
//! |----------------------|------------------------------------------|-----------------------------------------|
//! | the owner            | the 9 bits cleared                       | goes to the controller, no exit (passthrough) |
//! | every other domain   | every bit set                            | exits (IOIO); refused as an empty bus answers: reads all ones, writes dropped |
//! | anyone, with no disk | every bit set                            | exits; "no device", as every empty port |
//!
//! A refused access is not a fault: on a PC without that device the same IN reads all
//! ones and the program goes on, so the hypervisor answers the same and the domain lives.
//! The decision (`exit/ioio.rs`) says whose the controller is.
//!
//! Why a whole controller, and why PIO: the owner moves every byte through the data port
//! with its own CPU (IN/OUT), and the device never writes memory by itself (no DMA). So
//! nothing but the ports needs guarding — no IOMMU, no emulation — and clearing the owner's
//! bits in its I/O permission map (AMD APM vol. 2, 15.10.1) is the whole assignment. A
//! driver for it is a few dozen lines (`guests/src/ata.rs`). virtio-blk or AHCI would need
//! DMA into the owner's memory, and an IOMMU to keep them there.
//!
//! Interrupts: the controller raises IRQ 14 (`traplab_abi::ata::IRQ`), which must never land
//! in the hypervisor's IDT or in a guest. It cannot: at boot the hypervisor masks every line
//! of both 8259 PICs (`timer.rs`, `init_pic`; only IRQ 0 is unmasked when its own timer
//! runs), and it never programs the IO-APIC, whose redirection entries stay masked as reset
//! leaves them. The driver also sets nIEN in the device control register, so the line stays
//! quiet: it is a polled driver. A real driver domain gets the interrupt routed to it as an
//! event channel (Xen: `PHYSDEVOP_map_pirq`, `EVTCHNOP_bind_pirq`); traplab leaves that out.
//!
//! The owner is the host's choice (`[disk] owner = N` in a lab's catalogue file, fw_cfg
//! `opt/traplab/disk-owner`), read once at boot; every domain learns it from its
//! `BootInfo::disk_owner`.

use crate::iopm::IoPermissionMap;
use alloc::format;
use alloc::string::String;
use traplab_abi::ata;
use traplab_abi::boot::NO_DISK;

/// Who may reach the disk controller. Every domain's devices hold the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Assignment {
    /// The machine has no disk: the controller's ports are empty, like any other.
    #[default]
    NoDisk,
    /// The controller belongs to this domain, the driver domain.
    Owner(u16),
}

impl Assignment {
    /// The assignment `BootInfo::disk_owner` describes (`NO_DISK`, or a domain id).
    pub fn from_boot_info(disk_owner: u32) -> Assignment {
        match u16::try_from(disk_owner) {
            Ok(owner) if disk_owner != NO_DISK => Assignment::Owner(owner),
            _ => Assignment::NoDisk,
        }
    }

    /// What `BootInfo::disk_owner` says of it.
    pub fn boot_info(self) -> u32 {
        match self {
            Assignment::NoDisk => NO_DISK,
            Assignment::Owner(owner) => owner as u32,
        }
    }

    pub fn owner(self) -> Option<u16> {
        match self {
            Assignment::NoDisk => None,
            Assignment::Owner(owner) => Some(owner),
        }
    }

    /// Does domain `dom` reach the controller without an exit? Only its owner does.
    pub fn passes_through(self, dom: u16) -> bool {
        self == Assignment::Owner(dom)
    }

    /// Clear the controller's bits in the I/O permission map of `dom` if it is the owner;
    /// every other domain's map keeps them set.
    pub fn open_ports(self, dom: u16, map: &mut IoPermissionMap) {
        if self.passes_through(dom) {
            for port in ata::PORTS {
                map.pass_through(port);
            }
        }
    }

    /// Is `port` the controller's, on a machine that has one?
    pub fn claims(self, port: u16) -> bool {
        self != Assignment::NoDisk && ata::is_controller_port(port)
    }

    /// Why the hypervisor refuses domain `dom`'s access at `port` (an IN when `input`), in
    /// the decision's words; `None` when `port` is not the controller's (or there is none).
    /// The access itself is answered by the device bus as an empty port (`mod.rs`).
    pub fn refusal(self, dom: u16, port: u16, input: bool) -> Option<String> {
        let Assignment::Owner(owner) = self else {
            return None;
        };
        if !ata::is_controller_port(port) {
            return None;
        }
        let answer = if input {
            "reads all ones"
        } else {
            "the write is dropped"
        };
        Some(if owner == dom {
            // Its IN and OUT at the controller's ports go through without an exit; this
            // one exited all the same: a 2- or 4-byte access that reaches a port past the
            // controller's (the map checks every port it touches), or a PV kernel's IN at
            // CPL 3, which the hypervisor emulates. It does not do I/O for a domain.
            format!(
                "d{owner} owns the controller, but only its IN and OUT within the controller's ports reach it; this one came to the hypervisor, which does no I/O for a domain: {answer}"
            )
        } else {
            format!(
                "the controller belongs to {}; d{dom} may not reach it: {answer}",
                owner_label(owner)
            )
        })
    }
}

/// "d1, the driver domain"; "d0, the control domain" when dom0 keeps the disk, as in a
/// Xen machine without driver domains.
pub fn owner_label(owner: u16) -> String {
    match owner {
        0 => String::from("d0, the control domain"),
        _ => format!("d{owner}, the driver domain"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iopm;

    /// Domain `dom`'s map as `intercepts.rs` fills it.
    fn map_of(assignment: Assignment, dom: u16) -> [u8; iopm::SIZE] {
        let mut bits = [0u8; iopm::SIZE];
        let mut map = IoPermissionMap::new(&mut bits);
        map.intercept_all();
        assignment.open_ports(dom, &mut map);
        bits
    }

    /// The ports whose bit is clear.
    fn open(bits: &mut [u8; iopm::SIZE]) -> Vec<u16> {
        let map = IoPermissionMap::new(bits);
        (0..=u16::MAX)
            .filter(|&port| !map.intercepts(port))
            .collect()
    }

    #[test]
    fn the_owner_s_map_opens_exactly_the_controller_s_nine_ports() {
        let mut bits = map_of(Assignment::Owner(2), 2);
        assert_eq!(
            open(&mut bits),
            [
                0x1f0, 0x1f1, 0x1f2, 0x1f3, 0x1f4, 0x1f5, 0x1f6, 0x1f7, 0x3f6
            ]
        );
        // Bytes 0x3e (ports 0x1f0–0x1f7) and 0x7e bit 6 (port 0x3f6); the 4 KiB past
        // port 0xffff stay set too.
        assert_eq!((bits[0x3e], bits[0x7e]), (0x00, 0xbf));
    }

    #[test]
    fn every_other_domain_s_map_and_every_map_without_a_disk_open_nothing() {
        for (assignment, dom) in [
            (Assignment::Owner(2), 1),
            (Assignment::Owner(2), 0),
            (Assignment::NoDisk, 1),
        ] {
            let mut bits = map_of(assignment, dom);
            assert!(open(&mut bits).is_empty(), "{assignment:?}, d{dom}");
            assert!(bits.iter().all(|&byte| byte == 0xff));
        }
    }

    #[test]
    fn the_boot_info_says_who_owns_the_disk() {
        assert_eq!(Assignment::from_boot_info(NO_DISK), Assignment::NoDisk);
        assert_eq!(Assignment::from_boot_info(1), Assignment::Owner(1));
        assert_eq!(Assignment::from_boot_info(0x1_0000), Assignment::NoDisk);
        assert_eq!(Assignment::Owner(3).boot_info(), 3);
        assert_eq!(Assignment::NoDisk.boot_info(), NO_DISK);
    }

    #[test]
    fn a_refusal_names_the_owner_and_what_the_bus_answers() {
        let disk = Assignment::Owner(1);
        assert_eq!(
            disk.refusal(2, 0x1f7, true).as_deref(),
            Some(
                "the controller belongs to d1, the driver domain; d2 may not reach it: reads all ones"
            )
        );
        assert_eq!(
            disk.refusal(2, 0x3f6, false).as_deref(),
            Some(
                "the controller belongs to d1, the driver domain; d2 may not reach it: the write is dropped"
            )
        );
        assert!(
            Assignment::Owner(0)
                .refusal(1, 0x1f0, true)
                .is_some_and(|why| why.contains("d0, the control domain"))
        );
        assert_eq!(
            disk.refusal(2, 0x3f7, true),
            None,
            "0x3f7 is not the controller's"
        );
        assert_eq!(Assignment::NoDisk.refusal(2, 0x1f7, true), None);
        assert!(
            disk.refusal(1, 0x1f6, true)
                .is_some_and(|why| why.starts_with("d1 owns the controller, but"))
        );
    }
}
