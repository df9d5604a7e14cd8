//! A device a domain owns, booted for real: QEMU's legacy ATA controller with a raw image
//! file, given whole to a driver domain. Its port I/O reaches the controller without an
//! exit, its writes land in the image file on the host; another domain's accesses exit and
//! are refused, naming the owner.

mod common;

use common::{console, ending, run_machine};
use std::path::PathBuf;
use traplab_abi::ata;
use traplab_abi::event::{Action, Body, DomainState, Event};
use traplab_tracer::disk::SECTOR_SIZE;

/// The sector d1 writes (`guests/src/bin/driver-domain.rs`), and what it writes there.
const MESSAGE_SECTOR: u64 = 3;
const MESSAGE: &[u8] = b"traplab: written by d1, the driver domain";

/// An image file for one test, under cargo's temporary folder for integration tests.
fn image(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("devices-{}-{name}.img", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// The IOIO exits of domain `dom`: `(index, port, input)`.
fn port_exits(events: &[Event], dom: u16) -> Vec<(usize, u16, bool)> {
    events
        .iter()
        .enumerate()
        .filter(|(_, event)| event.dom == Some(dom))
        .filter_map(|(index, event)| match &event.body {
            // EXITINFO1 of IOIO: the port in bits 31:16, bit 0 set for IN (APM vol. 2, 15.10.2).
            Body::Exit(exit) if exit.exitcode == 0x7b => Some((
                index,
                (exit.exitinfo1 >> 16) as u16,
                exit.exitinfo1 & 1 == 1,
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn the_driver_domain_reaches_the_disk_without_an_exit_and_the_other_domain_is_refused() {
    // An image the test made: 2048 sectors, with something of the host's in sector 0 that
    // the run must leave alone (an existing image is used as it is).
    let path = image("driver-domain");
    let mut bytes = vec![0u8; 2048 * SECTOR_SIZE as usize];
    bytes[..16].copy_from_slice(b"kept by the host");
    std::fs::write(&path, &bytes).expect("the test writes its image");

    let lab = traplab_labs::find("driver-domain")
        .expect("the catalogue parses")
        .expect("the lab");
    let mut machine = lab.machine().expect("the lab's machine");
    let disk = machine.disk.as_mut().expect("the lab has a disk");
    assert_eq!((disk.owner, disk.sectors), (1, 2048));
    disk.image = Some(path.clone());
    let run = run_machine(&machine);
    let events = &run.events;

    // d1 found itself the owner, identified QEMU's disk, wrote and read back its sector.
    assert_eq!(
        console(events, 1),
        [
            "d1: the disk controller is mine (BootInfo.disk_owner = 1)",
            "d1: the disk is \"QEMU HARDDISK\", 2048 sectors of 512 bytes",
            "d1: sector 3 written, flushed and read back: \"traplab: written by d1, the driver domain\"",
        ]
    );
    // …and none of its port I/O exited: the controller's ports are open in its map.
    let d1_ports = port_exits(events, 1);
    assert!(
        d1_ports
            .iter()
            .all(|&(_, port, _)| !ata::is_controller_port(port)),
        "d1's accesses to the controller exited: {d1_ports:x?}"
    );

    // d2's accesses all exited, each one refused in the owner's name, none killing it.
    let d2_ports = port_exits(events, 2);
    assert_eq!(
        d2_ports
            .iter()
            .map(|&(_, port, input)| (port, input))
            .collect::<Vec<_>>(),
        [(0x1f7, true), (0x3f6, false), (0x1f7, true)],
        "the status read, then identify's device control write and its status read"
    );
    for &(index, port, input) in &d2_ports {
        let Body::Decide(decide) = &events[index + 1].body else {
            panic!(
                "a decision follows the exit: {:#?}",
                &events[index..index + 2]
            );
        };
        assert_eq!(decide.action, Action::Emulate, "refused, not killed");
        assert!(
            decide.at.starts_with("hv/src/exit/ioio.rs:"),
            "{}",
            decide.at
        );
        let answer = if input {
            "reads all ones"
        } else {
            "the write is dropped"
        };
        assert_eq!(
            decide.why,
            format!(
                "{} port {port:#x} (ATA disk controller): the controller belongs to d1, the driver domain; d2 may not reach it: {answer}",
                if input { "IN from" } else { "OUT to" }
            )
        );
        if input {
            let Body::Emulate(emulate) = &events[index + 2].body else {
                panic!("{:#?}", &events[index..index + 3]);
            };
            assert_eq!(
                emulate.what,
                format!("IN 0xff from port {port:#x} (ATA disk controller)")
            );
        }
    }
    // d2 ran its part only once d1 was done (its store wait), and found no drive.
    let d1_last_line = events
        .iter()
        .rposition(|event| event.dom == Some(1) && matches!(event.body, Body::Console(_)))
        .expect("d1 printed");
    assert!(d2_ports[0].0 > d1_last_line);
    assert_eq!(
        console(events, 2),
        [
            "d2: the disk controller is d1's; its status port reads 0xff",
            "d2: identify: no drive answers (status 0xff)",
        ]
    );
    for dom in [1, 2] {
        assert_eq!(ending(events, dom).0, DomainState::Exited, "d{dom}");
        assert_eq!(ending(events, dom).1, Some(0), "d{dom}");
    }

    // The catalogue checks the same (`absent` on d1's lines): the run passes, and the same
    // run with one IOIO exit of d1's in its sector's work fails, naming the exit.
    let symbols = lab.symbols().expect("the lab's symbols");
    let verdict = traplab_labs::grade::grade(&lab, None, &run, &symbols);
    assert!(verdict.passed, "{:?}", verdict.problems);
    let mut exited = run.clone();
    let mut exit = events[d2_ports[0].0].clone();
    exit.dom = Some(1);
    exited.events.insert(d1_last_line, exit);
    let verdict = traplab_labs::grade::grade(&lab, None, &exited, &symbols);
    assert!(!verdict.passed);
    let problems: Vec<&str> = verdict
        .problems
        .iter()
        .map(|problem| problem.explanation())
        .collect();
    assert!(
        problems.iter().any(|problem| problem.contains("IOIO")),
        "{problems:#?}"
    );

    // On the host, after the run: the sector at its offset in the image, padded with zeros;
    // the host's own bytes untouched; the size as it was.
    let after = std::fs::read(&path).expect("the image is kept");
    assert_eq!(after.len(), bytes.len());
    assert_eq!(&after[..16], b"kept by the host");
    let at = (MESSAGE_SECTOR * SECTOR_SIZE) as usize;
    let sector = &after[at..at + SECTOR_SIZE as usize];
    assert_eq!(&sector[..MESSAGE.len()], MESSAGE);
    assert!(sector[MESSAGE.len()..].iter().all(|&byte| byte == 0));
    // Nothing else was written.
    assert!(
        after
            .iter()
            .enumerate()
            .filter(
                |&(offset, _)| offset >= 16 && !(at..at + SECTOR_SIZE as usize).contains(&offset)
            )
            .all(|(_, &byte)| byte == 0)
    );
    let _ = std::fs::remove_file(&path);
}
