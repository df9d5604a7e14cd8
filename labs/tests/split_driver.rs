//! The split block driver, booted for real: the swap-in labs' page goes to a real disk
//! (QEMU's ATA controller, a raw image file the test reads afterwards) and comes back byte
//! for byte; the driver domain reaches the controller without an exit; dom0 does nothing
//! while d1's page comes back; and a hostile frontend gets error codes while the backend
//! lives on. (Each catalogue lab's own flow is checked by `flows.rs` too.)

mod common;

use common::{console, ending, index_of, run_machine};
use std::path::PathBuf;
use traplab_abi::event::{Body, DomainState, Event};
use traplab_tracer::session::Run;

/// Where d1's page goes (`guests/src/bin/swap-in.rs`): sector 8, and what its first line is.
const SWAP_OFFSET: usize = 8 * 512;
const HEADER: &[u8] = b"traplab swap-in: d1's page, kept in swap at sector 8\n";

/// Byte `index` of d1's page, as `swap-in.rs` fills it.
fn expected_byte(index: usize) -> u8 {
    HEADER.get(index).copied().unwrap_or((index % 251) as u8)
}

/// Run catalogue lab `id` with its disk in a file the test can read afterwards.
fn run_lab(id: &str) -> (Run, Vec<u8>) {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("split-driver-{}-{id}.img", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let lab = traplab_labs::find(id)
        .expect("the catalogue parses")
        .expect("the lab");
    let mut machine = lab.machine().expect("the lab's machine");
    machine.disk.as_mut().expect("the lab has a disk").image = Some(path.clone());
    let run = run_machine(&machine);
    let image = std::fs::read(&path).expect("the run leaves the image file");
    let _ = std::fs::remove_file(&path);
    (run, image)
}

/// IOIO exits of `dom` on the disk controller's ports.
fn controller_exits(events: &[Event], dom: u16) -> usize {
    events
        .iter()
        .filter(|event| event.dom == Some(dom))
        .filter(|event| match &event.body {
            Body::Exit(exit) if exit.exitcode == 0x7b => {
                traplab_abi::ata::is_controller_port((exit.exitinfo1 >> 16) as u16)
            }
            _ => false,
        })
        .count()
}

fn swap_in_end_to_end(id: &str, backend: u16) {
    let (run, image) = run_lab(id);
    let events = &run.events;
    for dom in [0, 1, backend] {
        assert_eq!(
            ending(events, dom).0,
            DomainState::Exited,
            "d{dom}: {:?}",
            ending(events, dom)
        );
    }
    assert!(
        console(events, 1)
            .iter()
            .any(|line| line == "d1: the retried access read 't': all 4096 bytes are back"),
        "{:#?}",
        console(events, 1)
    );
    // What d1 wrote is on the host's image file, byte for byte, where d1 put it.
    let slot = &image[SWAP_OFFSET..SWAP_OFFSET + 4096];
    let wrong = (0..4096)
        .filter(|&index| slot[index] != expected_byte(index))
        .count();
    assert_eq!(wrong, 0, "sector 8 onwards: {:?}", &slot[..64]);
    // The rest of the disk is untouched.
    assert!(image[..SWAP_OFFSET].iter().all(|&byte| byte == 0));
    assert!(image[SWAP_OFFSET + 4096..].iter().all(|&byte| byte == 0));
    // The backend drove the controller without one exit on its ports.
    assert_eq!(controller_exits(events, backend), 0);
    // The page-in: the #PF exit of d1 at the swapped page, and d1's return from it.
    let fault = index_of(events, 0, |event| {
        event.dom == Some(1)
            && matches!(&event.body, Body::Exit(exit) if exit.exitcode == 0x4e && exit.exitinfo2 == 0x6000_0000)
    });
    let back = index_of(events, fault, |event| {
        event.dom == Some(1) && matches!(&event.body, Body::Return(ret) if ret.vector == Some(14))
    });
    let lanes: std::collections::BTreeSet<u16> = events[fault..=back]
        .iter()
        .filter_map(|event| event.dom)
        .collect();
    if backend == 0 {
        assert_eq!(lanes, [0, 1].into(), "the backend's lane and d1's");
    } else {
        assert!(
            lanes.contains(&1) && lanes.contains(&backend),
            "d1 and its backend work in the page-in: {lanes:?}"
        );
        // dom0 takes no part: no event, no grant, no store write, no console line. (Its
        // toolstack may still wake, late, to look at the state d1 set before the fault: when
        // a woken domain runs is the scheduler's choice, and a time slice ends anywhere.)
        let involved: Vec<&Event> = events[fault..=back]
            .iter()
            .filter(|event| event.dom == Some(0))
            .filter(|event| match &event.body {
                Body::Notify(_) | Body::GrantMap(_) | Body::Console(_) => true,
                Body::Decide(decide) => decide.why.contains("d0 sets"),
                _ => false,
            })
            .collect();
        assert!(
            involved.is_empty(),
            "dom0 took part in the page-in: {involved:?}"
        );
    }
}

#[test]
fn swap_in_pages_through_the_driver_domain_and_dom0_does_nothing() {
    swap_in_end_to_end("swap-in", 2);
}

#[test]
fn swap_in_with_the_backend_in_dom0() {
    swap_in_end_to_end("swap-in-dom0", 0);
}

/// A driver domain with no disk cannot serve the device the toolstack gave it: it closes
/// it (Linux's `xenbus_dev_fatal`). The frontend, waiting for the backend to connect, takes
/// the close for what it is and gives up, closing its end; dom0, waiting for that, ends.
/// Before, the frontend took Closed for a state past InitWait and went on, then waited for
/// ever for Connected, and the hypervisor killed it and dom0 as deadlocked.
#[test]
fn a_backend_without_a_disk_closes_the_device_and_the_frontend_gives_up() {
    let lab = traplab_labs::find("swap-in")
        .expect("the catalogue parses")
        .expect("the lab");
    let mut machine = lab.machine().expect("the lab's machine");
    // d2 owns the controller's ports, and no controller is there: they read all ones.
    machine.disk = None;
    machine.extra_args.extend([
        "-fw_cfg".to_string(),
        "name=opt/traplab/disk-owner,string=2".to_string(),
    ]);
    let run = run_machine(&machine);
    let events = &run.events;
    for (dom, said) in [
        (2, "blkback: no disk: NoDevice"),
        (
            2,
            "blkback: d2 cannot serve d1's disk 51712 (-22 (EINVAL)): closing the device",
        ),
        (1, "d1: could not connect to the disk: -19 (ENODEV)"),
        (0, "d0: d1's disk is closed"),
    ] {
        let lines = console(events, dom);
        assert!(
            lines.iter().any(|line| line.starts_with(said)),
            "d{dom}: {said}: {lines:#?}"
        );
    }
    for (dom, code) in [(0, 0), (1, 40), (2, 30)] {
        let (state, status, reason) = ending(events, dom);
        assert_eq!(
            (state, status),
            (DomainState::Exited, Some(code)),
            "d{dom}: {reason}"
        );
    }
}

/// A frontend that dies (a triple fault) without closing its disk: nobody sends an event or
/// moves a state for it. The store's `@releaseDomain` tells dom0's toolstack, blocked in a
/// watch on it, and the backend, which watches it through its store port and polls that
/// beside its ring's port: both end normally. Before, both waited for ever, and the
/// hypervisor killed them as deadlocked.
#[test]
fn a_frontend_that_dies_is_released_and_the_toolstack_and_the_backend_live_on() {
    let lab = traplab_labs::find("swap-in")
        .expect("the catalogue parses")
        .expect("the lab");
    let mut machine = lab.machine().expect("the lab's machine");
    let swap_in = &mut machine.guests[0];
    swap_in.image = swap_in.image.with_file_name("frontend-dies");
    let run = run_machine(&machine);
    let events = &run.events;
    let (state, _, reason) = ending(events, 1);
    assert_eq!(state, DomainState::Killed);
    assert!(reason.contains("triple fault"), "{reason}");
    for (dom, said) in [
        (
            1,
            "d1: disk 51712 connected, backend d2: now d1 dies without closing it",
        ),
        (
            2,
            "blkback: d1 has ended without closing its disk: d2 closes its end",
        ),
        (
            2,
            "d2: blkback done: 0 requests, 0 refused; the frontend ended without closing",
        ),
        (
            0,
            "d0: d1 has ended and left its disk Connected: its backend, d2, closes it",
        ),
    ] {
        let lines = console(events, dom);
        assert!(
            lines.iter().any(|line| line == said),
            "d{dom}: {said}: {lines:#?}"
        );
    }
    for dom in [0, 2] {
        let (state, status, reason) = ending(events, dom);
        assert_eq!(
            (state, status),
            (DomainState::Exited, Some(0)),
            "d{dom}: {reason}"
        );
    }
    // Right after d1's end, d2 hears its channel's other end is gone; then the store tells
    // both: d0 blocked in its watch, d2 on its store port.
    let killed = index_of(events, 0, |event| {
        event.dom == Some(1)
            && matches!(&event.body, Body::Domain(change) if change.state == DomainState::Killed)
    });
    let told: Vec<(Option<u16>, &str)> = events[killed + 1..killed + 4]
        .iter()
        .map(|event| match &event.body {
            Body::Emulate(emulate) => (event.dom, emulate.what.as_ref()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        told,
        [
            (
                Some(2),
                "d1 has ended: its port 1 is closed, so d2's port 1, the channel's other end, is unbound again, waiting for d1 (Xen's evtchn_close): a send on it is dropped"
            ),
            (
                Some(0),
                "d1 has ended: the store lists it in @releaseDomain, which d0 waits for in store_watch: it wakes"
            ),
            (
                Some(2),
                "d1 has ended: the store lists it in @releaseDomain, which d2 watches: its store port 2 is pending, and it wakes"
            ),
        ]
    );
}

#[test]
fn a_hostile_frontend_gets_error_codes_and_the_backend_lives_on() {
    let (run, image) = run_lab("bad-blkif");
    let events = &run.events;
    let d1 = console(events, 1);
    for line in [
        "d1: the disk controller's status port reads 0xff",
        "d1: grant 7, never granted: BLKIF_RSP_ERROR",
        "d1: a write whose second grant was never made: BLKIF_RSP_ERROR",
        "d1: 8 sectors from 4 before the end: BLKIF_RSP_ERROR",
        "d1: nr_segments 12: BLKIF_RSP_ERROR",
        "d1: the backend closed the connection",
    ] {
        assert!(d1.iter().any(|printed| printed == line), "{line}: {d1:#?}");
    }
    // The rewritten request: one answer, ERROR for the 12 segments as a rule (OKAY if the
    // scheduler ran blkback between the post and the rewrite: it copied the honest one).
    assert!(
        d1.iter().any(
            |printed| printed.starts_with("d1: rewritten after posting: BLKIF_RSP_")
                && printed.ends_with("(one answer, for the copy blkback read)")
        ),
        "{d1:#?}"
    );
    // Its state names none, and is longer than any state's text: blkback, if it saw it (d1
    // may be quick enough to write 3 first), waited for a change, blocked. It used to read
    // such a value again and again, its watch returning at once (846 times for "7"), and
    // then to give up on one longer than 15 bytes (EINVAL), ending its service.
    let decides = |text: &str| {
        events
            .iter()
            .filter(|event| {
                event.dom == Some(2)
                    && matches!(&event.body, Body::Decide(decide) if decide.why.contains(text))
            })
            .count()
    };
    let reads = decides("/local/domain/1/device/vbd/51712/state = \"7, Reconfiguring");
    assert!(
        reads <= 2,
        "blkback read the state that names none {reads} times"
    );
    // The hypervisor refused d1's touch of the controller, naming the owner.
    assert_eq!(controller_exits(events, 1), 1);
    assert!(events.iter().any(|event| event.dom == Some(1)
        && matches!(&event.body, Body::Decide(decide) if decide.why.contains("belongs to d2"))));
    // The hypervisor refused blkback's map of grant 7 (in d2's lane).
    assert!(events.iter().any(|event| event.dom == Some(2)
        && matches!(&event.body, Body::Decide(decide) if decide.why.contains("GNTTABOP_map_grant_ref") && decide.why.contains("grant 7 of d1"))));
    // blkback stopped serving the lying ring, and lived on: every domain ended normally.
    assert!(
        console(events, 2)
            .iter()
            .any(|line| line.contains("more than the 32 a ring holds"))
    );
    assert!(
        console(events, 2)
            .iter()
            .any(|line| line.contains("the frontend's ring was broken"))
    );
    for dom in [0, 1, 2] {
        assert_eq!(ending(events, dom).0, DomainState::Exited, "d{dom}");
    }
    // Nothing reached the disk: every request was refused or a read.
    assert!(image.iter().all(|&byte| byte == 0));
}
