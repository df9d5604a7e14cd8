//! `store_op(cmd, path, path_len, value, value_len)`: the store, where the control domain
//! publishes how domains find each other (the ABI and how it differs from xenstore:
//! `traplab_abi::store`; the tree itself: `store.rs`).
//!
//! `store_wait` on a node that does not exist yet blocks the vCPU *without* moving RIP: when
//! a write wakes it, the VMMCALL runs again and now reads the node (as a Xen hypercall
//! continuation re-executes its call). `store_watch` blocks the same way while the node
//! still holds the value the caller knows, and any write to the node wakes it to look again.

use super::finish;
use crate::decide;
use crate::decision::{Decision, Effect};
use crate::domain::Guest;
use crate::domain::evtchn::PortState;
use crate::domain::vcpu::Wait;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use core::ops::RangeInclusive;
use traplab_abi::event::Action;
use traplab_abi::hypercall::{self, error};
use traplab_abi::store::{PATH_MAX, RELEASE_DOMAIN, VALUE_MAX, cmd, valid_path, writable_by};

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
    let path = match read_text(guest, path, path_length, 1..=PATH_MAX) {
        Ok(path) if valid_path(&path) => path,
        Ok(path) => {
            return refuse(
                format!(
                    "{path:?} is not a node's name (/ then names of letters, digits and _@- between single slashes, as xenstored takes them) nor {RELEASE_DOMAIN}, EINVAL"
                ),
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
            let text = match read_text(guest, value, value_length, 0..=VALUE_MAX) {
                Ok(text) => text,
                Err(code) => {
                    return refuse(format!("the value is not readable text of at most {VALUE_MAX} bytes"), code);
                }
            };
            if path == RELEASE_DOMAIN {
                return refuse(
                    format!("{path} is the store's own: it lists the domains that have ended, and is no node a domain may write (xenstored refuses a special name), EINVAL"),
                    error::EINVAL,
                );
            }
            if !writable_by(guest.id, &path) {
                return refuse(
                    format!(
                        "d{} may write only under /local/domain/{}/ (dom0 anywhere), not {path}: EACCES (as xenstored)",
                        guest.id, guest.id
                    ),
                    error::EACCES,
                );
            }
            if let Some(why) = guest.others.store.no_room(guest.id, &path) {
                return refuse(format!("{why}, {path} cannot be added: ENOSPC"), error::ENOSPC);
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
        cmd::WATCH_EVENT => watch_event(guest, path, next),
        _ => match guest.others.store.read(&path) {
            Some(found) if command == cmd::WATCH && Some(found) == known_value(guest, value, value_length).as_deref() => decide!(
                Action::Emulate,
                "{name}: {path} still holds \"{found}\": d{} blocks until a domain writes another value, then runs this VMMCALL again",
                guest.id
            )
            .with(Effect::Block(Wait::Store(path)))
            .describe("store_watch: blocked, RIP stays at the VMMCALL"),
            Some(found) => {
                // Like snprintf: as much as fits, and the whole length returned.
                let bytes = found.as_bytes();
                let copied = &bytes[..bytes.len().min(value_length as usize)];
                if guest.cpu_pieces(value, copied.len(), true).is_err() {
                    return refuse(format!("the buffer at {value:#x} is not memory the guest can write (unmapped, read-only, a supervisor page at CPL 3, or not its RAM), EFAULT"), error::EFAULT);
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
            None if command == cmd::WAIT || command == cmd::WATCH => decide!(
                Action::Emulate,
                "{name}: {path} does not exist yet: d{} blocks until a domain writes it, then runs this VMMCALL again",
                guest.id
            )
            .with(Effect::Block(Wait::Store(path)))
            .describe(format!("{name}: blocked, RIP stays at the VMMCALL")),
            None => refuse(format!("{path} does not exist, ENOENT"), error::ENOENT),
        },
    }
}

/// `store_watch_event`: the domain watches `path`, and its store port says each write of it
/// (bound now, to the lowest free port, at its first watch). The port; E2BIG over its quota of
/// watches, ENOSPC without a free port, EINVAL without a shared-info page to mark the new
/// port pending in (as every port's allocation, `event_channel.rs`).
fn watch_event(guest: &Guest, path: String, next: u64) -> Decision {
    const NAME: &str = "store_watch_event";
    let number = hypercall::STORE_OP;
    if let Some(why) = guest.others.store.no_watch(guest.id, &path) {
        let decision = decide!(
            Action::Emulate,
            "{NAME}: {why}, {path} cannot be watched: E2BIG (as xenstored)"
        );
        return finish(decision, next, number, error::E2BIG);
    }
    let (port, bind) = match (guest.events.store_port(), guest.events.free_port()) {
        (Some(port), _) => (port, None),
        (None, Some(_)) if guest.events.shared_info.is_none() => {
            let decision = decide!(
                Action::Emulate,
                "{NAME}: d{} has no shared-info page yet (set_shared_info), so no store event could be marked pending on a new port: EINVAL, as for any new port",
                guest.id
            );
            return finish(decision, next, number, error::EINVAL);
        }
        (None, Some(port)) => (
            port,
            Some(Effect::PortState {
                domain: guest.id,
                port,
                state: PortState::Store,
            }),
        ),
        (None, None) => {
            let decision = decide!(
                Action::Emulate,
                "{NAME}: d{} has no store port and no free port to make one: ENOSPC",
                guest.id
            );
            return finish(decision, next, number, error::ENOSPC);
        }
    };
    let bound = match bind {
        Some(_) => ", bound now",
        None => "",
    };
    let decision = decide!(
        Action::Emulate,
        "{NAME}: d{} watches {path}: each write of it will make its store port (port {port}{bound}) pending, as xenstored sends a watch event on a domain's xenstore event channel",
        guest.id
    )
    .with_all(bind)
    .with(Effect::StoreWatch { path });
    finish(decision, next, number, port as i64)
}

/// The value a `store_watch` caller already knows: the text in its buffer up to the first
/// NUL byte. `None` when the buffer is unreadable or not text: then any value is news.
fn known_value(guest: &Guest, address: u64, length: u64) -> Option<String> {
    let mut bytes = vec![0u8; length.min(VALUE_MAX) as usize];
    guest.cpu_read(address, &mut bytes).ok()?;
    let end = bytes
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(bytes.len());
    bytes.truncate(end);
    String::from_utf8(bytes).ok()
}

/// Text of `lengths` bytes at guest-virtual `address`: EFAULT if it is not readable,
/// EINVAL if its length is outside `lengths`, or it is not UTF-8.
fn read_text(
    guest: &Guest,
    address: u64,
    length: u64,
    lengths: RangeInclusive<u64>,
) -> Result<String, i64> {
    if !lengths.contains(&length) {
        return Err(error::EINVAL);
    }
    let mut bytes = vec![0u8; length as usize];
    guest
        .cpu_read(address, &mut bytes)
        .map_err(|_| error::EFAULT)?;
    String::from_utf8(bytes).map_err(|_| error::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::vcpu::RunState;
    use crate::schedule::Switch;
    use crate::store::Store;
    use crate::testing::assert_returned;
    use crate::testing::{DATA, ENTRY, SHARED_INFO, Test, UNMAPPED};
    use traplab_abi::store::NODES_MAX;

    /// Where the tests put the path and the value.
    const PATH: u64 = DATA;
    const VALUE: u64 = DATA + 0x200;
    /// A node d1 may write.
    const MINE: &str = "/local/domain/1/ring-ref";

    /// The test's domain (d1) at `store_op(command, path, len, value, value_len)`, the
    /// path at [`PATH`] and `value` at [`VALUE`] (`value_len` its length).
    fn op(command: u64, path: &str, value: &str) -> Test {
        let mut test = Test::hypercall(hypercall::STORE_OP, command, PATH);
        test.write(PATH, path.as_bytes());
        test.write(VALUE, value.as_bytes());
        test.set_gpr(2, path.len() as u64);
        test.set_gpr(10, VALUE);
        test.set_gpr(8, value.len() as u64);
        test
    }

    /// At `store_read` (or `store_wait`) of `path` into a buffer of `size` bytes at
    /// [`VALUE`], filled with `#` so that what is written shows.
    fn read_into(command: u64, path: &str, size: u64) -> Test {
        let mut test = op(command, path, "");
        test.write(VALUE, &[b'#'; 32]);
        test.set_gpr(8, size);
        test
    }

    fn buffer(test: &Test) -> Vec<u8> {
        let mut bytes = vec![0u8; 16];
        test.domain
            .read_virtual(VALUE, &mut bytes)
            .expect("the buffer");
        bytes
    }

    #[test]
    fn a_domain_writes_a_node_under_its_own_local_domain() {
        // xenstore's default permissions: a domain owns /local/domain/<id>/ (and
        // xenstored's dom0 writes anywhere).
        let mut test = op(cmd::WRITE, MINE, "8");
        let run = test.call();
        assert_eq!(run.decision.action, Action::Emulate);
        assert_eq!(
            run.decision.why,
            "store_write: d1 sets /local/domain/1/ring-ref = \"8\""
        );
        assert_eq!(
            run.decision.effects[0],
            Effect::StoreWrite {
                path: MINE.into(),
                value: "8".into()
            }
        );
        assert_eq!(run.kinds(), ["decide", "emulate"]);
        assert_eq!(run.emulate().what, "store_op returned 0");
        assert_returned(&test, 0);
        assert_eq!(test.store.read(MINE), Some("8"));
    }

    #[test]
    fn a_write_outside_one_s_own_part_of_the_tree_returns_eacces() {
        // xenstored's permission check (`get_node`) fails with EACCES.
        for path in ["/local/domain/2/ring-ref", "/vm/1", "/local/domain/01/x"] {
            let mut test = op(cmd::WRITE, path, "8");
            let run = test.call();
            assert_returned(&test, error::EACCES);
            assert_eq!(
                run.decision.why,
                format!(
                    "store_write: d1 may write only under /local/domain/1/ (dom0 anywhere), not {path}: EACCES (as xenstored)"
                )
            );
            assert_eq!(test.store, Store::default(), "nothing written");
        }
    }

    #[test]
    fn dom0_writes_anywhere() {
        let mut test = op(
            cmd::WRITE,
            "/local/domain/2/backend",
            "/local/domain/0/backend/vbd",
        );
        test.domain.id = 0;
        test.call();
        assert_returned(&test, 0);
        assert_eq!(
            test.store.read("/local/domain/2/backend"),
            Some("/local/domain/0/backend/vbd")
        );
    }

    #[test]
    fn a_write_replaces_the_old_value_even_in_a_full_store() {
        let mut test = op(cmd::WRITE, MINE, "9");
        for node in 0..NODES_MAX - 1 {
            test.store.write(0, format!("/n/{node}"), "x".into());
        }
        test.store.write(0, MINE.into(), "8".into());
        test.call();
        assert_returned(&test, 0);
        assert_eq!(test.store.read(MINE), Some("9"));
    }

    #[test]
    fn a_domu_past_its_quota_of_nodes_gets_enospc_and_dom0_can_still_write() {
        // One domU must not fill the store that dom0 and the others publish in (xenstored's
        // per-domain quota).
        use traplab_abi::store::NODES_PER_DOMAIN;
        let mut test = op(cmd::WRITE, MINE, "8");
        for node in 0..NODES_PER_DOMAIN {
            test.store
                .write(1, format!("/local/domain/1/junk{node}"), "x".into());
        }
        let run = test.call();
        assert_returned(&test, error::ENOSPC);
        assert!(
            run.decision
                .why
                .contains("the domain has created its quota of nodes"),
            "{}",
            run.decision.why
        );
        assert_eq!(test.store.no_room(0, "/local/domain/0/backend"), None);
    }

    #[test]
    fn a_new_node_in_a_full_store_returns_enospc() {
        let mut test = op(cmd::WRITE, MINE, "8");
        for node in 0..NODES_MAX {
            test.store.write(0, format!("/n/{node}"), "x".into());
        }
        let run = test.call();
        assert_returned(&test, error::ENOSPC);
        assert!(run.decision.why.contains("the store is full"));
        assert_eq!(test.store.read(MINE), None);
    }

    #[test]
    fn read_copies_the_value_and_returns_its_length() {
        let mut test = read_into(cmd::READ, "/local/domain/0/port", 16);
        test.store
            .write(0, "/local/domain/0/port".into(), "17".into());
        let run = test.call();
        assert_eq!(
            run.decision.why,
            "store_read: /local/domain/0/port = \"17\", copied to the guest"
        );
        assert_eq!(
            run.decision.effects[0],
            Effect::GuestWrite {
                address: VALUE,
                bytes: b"17".to_vec()
            }
        );
        assert_returned(&test, 2);
        assert_eq!(&buffer(&test)[..3], b"17#", "no terminating NUL");
    }

    #[test]
    fn read_into_a_read_only_page_returns_efault_and_writes_nothing() {
        // A pinned page table is mapped read-only: the value must not land in it, past the
        // checks every write to a pinned table gets (the guest's own store would fault).
        use crate::testing::PDPT;
        let at = PDPT + 0x800;
        let mut test = read_into(cmd::READ, "/local/domain/0/port", 16);
        test.store
            .write(0, "/local/domain/0/port".into(), "17".into());
        test.pin_page_tables();
        test.set_gpr(10, at);
        let run = test.call();
        assert_returned(&test, error::EFAULT);
        assert!(
            run.decision.why.contains("read-only"),
            "{}",
            run.decision.why
        );
        assert_eq!(test.read_u64(at), 0, "nothing written");
    }

    #[test]
    fn read_into_a_short_buffer_copies_what_fits_and_returns_the_whole_length() {
        // As snprintf: the caller learns how big a buffer it needs.
        let mut test = read_into(cmd::READ, "/local/domain/0/name", 5);
        test.store
            .write(0, "/local/domain/0/name".into(), "hello world".into());
        test.call();
        assert_returned(&test, 11);
        assert_eq!(&buffer(&test)[..6], b"hello#");
    }

    #[test]
    fn read_of_a_missing_node_returns_enoent() {
        let mut test = read_into(cmd::READ, "/local/domain/0/port", 16);
        let run = test.call();
        assert_returned(&test, error::ENOENT);
        assert_eq!(
            run.decision.why,
            "store_read: /local/domain/0/port does not exist, ENOENT"
        );
        assert_eq!(buffer(&test)[0], b'#');
    }

    #[test]
    fn read_into_a_buffer_outside_the_guest_returns_efault() {
        let mut test = read_into(cmd::READ, "/local/domain/0/port", 16);
        test.store
            .write(0, "/local/domain/0/port".into(), "17".into());
        test.set_gpr(10, UNMAPPED);
        let run = test.call();
        assert_returned(&test, error::EFAULT);
        assert!(run.decision.why.contains("the buffer at 0x40000000"));
    }

    #[test]
    fn wait_on_a_missing_node_blocks_and_leaves_rip_at_the_vmmcall() {
        // As a Xen hypercall continuation: woken, the guest runs the VMMCALL again.
        let mut test = read_into(cmd::WAIT, "/local/domain/0/port", 16);
        let run = test.call();
        assert_eq!(
            run.decision.why,
            "store_wait: /local/domain/0/port does not exist yet: d1 blocks until a domain writes it, then runs this VMMCALL again"
        );
        assert_eq!(
            run.decision.effects,
            [Effect::Block(Wait::Store("/local/domain/0/port".into()))]
        );
        assert_eq!(
            run.emulate().what,
            "store_wait: blocked, RIP stays at the VMMCALL"
        );
        assert_eq!(run.applied.switch, Some(Switch::Blocked));
        assert_eq!(test.rip(), ENTRY, "RIP does not move");
        assert_eq!(test.gpr(0), hypercall::STORE_OP, "RAX untouched");
        assert_eq!(
            test.domain.vcpu.run_state,
            RunState::Blocked(Wait::Store("/local/domain/0/port".into()))
        );
    }

    #[test]
    fn wait_on_a_node_that_exists_reads_it_at_once() {
        let mut test = read_into(cmd::WAIT, "/local/domain/0/port", 16);
        test.store
            .write(0, "/local/domain/0/port".into(), "17".into());
        let run = test.call();
        assert_returned(&test, 2);
        assert_eq!(&buffer(&test)[..2], b"17");
        assert_eq!(run.applied.switch, None);
        assert_eq!(test.domain.vcpu.run_state, RunState::Runnable);
    }

    #[test]
    fn watch_blocks_while_the_node_holds_the_known_value() {
        let mut test = read_into(cmd::WATCH, "/local/domain/0/state", 16);
        test.store
            .write(0, "/local/domain/0/state".into(), "1".into());
        test.write(VALUE, b"1\0");
        let run = test.call();
        assert_eq!(
            run.decision.why,
            "store_watch: /local/domain/0/state still holds \"1\": d1 blocks until a domain writes another value, then runs this VMMCALL again"
        );
        assert_eq!(
            run.decision.effects,
            [Effect::Block(Wait::Store("/local/domain/0/state".into()))]
        );
        assert_eq!(run.applied.switch, Some(Switch::Blocked));
        assert_eq!(test.rip(), ENTRY, "RIP does not move");
    }

    #[test]
    fn watch_reads_a_changed_value_at_once() {
        let mut test = read_into(cmd::WATCH, "/local/domain/0/state", 16);
        test.store
            .write(0, "/local/domain/0/state".into(), "4".into());
        test.write(VALUE, b"3\0");
        let run = test.call();
        assert_returned(&test, 1);
        assert_eq!(&buffer(&test)[..2], b"4\0");
        assert_eq!(run.applied.switch, None);
    }

    #[test]
    fn watch_on_a_missing_node_blocks_as_wait_does() {
        let mut test = read_into(cmd::WATCH, "/local/domain/0/state", 16);
        let run = test.call();
        assert_eq!(
            run.decision.effects,
            [Effect::Block(Wait::Store("/local/domain/0/state".into()))]
        );
        assert_eq!(
            run.emulate().what,
            "store_watch: blocked, RIP stays at the VMMCALL",
            "the trace names the call it blocked in"
        );
    }

    #[test]
    fn a_write_wakes_the_domain_waiting_for_that_node_and_no_other() {
        let mut test = op(cmd::WRITE, MINE, "8");
        test.add_domain(2).vcpu.run_state = RunState::Blocked(Wait::Store(MINE.into()));
        test.add_domain(3).vcpu.run_state =
            RunState::Blocked(Wait::Store("/local/domain/1/port".into()));
        let run = test.call();
        assert_returned(&test, 0);
        assert_eq!(
            run.emulate().what,
            "store_op returned 0: /local/domain/1/ring-ref written: d2 wakes"
        );
        assert_eq!(test.other(2).vcpu.run_state, RunState::Runnable);
        assert_eq!(
            test.other(3).vcpu.run_state,
            RunState::Blocked(Wait::Store("/local/domain/1/port".into()))
        );
        // d2 runs its VMMCALL again and now reads the node.
        assert_eq!(test.store.read(MINE), Some("8"));
    }

    #[test]
    fn a_first_watch_without_a_shared_info_page_is_einval_and_binds_nothing() {
        // Its store port could never be marked pending: refused, as alloc_unbound and the
        // binds refuse a port to a domain without one.
        let mut test = op(cmd::WATCH_EVENT, "/local/domain/2/state", "");
        test.domain.events.shared_info = None;
        let run = test.call();
        assert_returned(&test, error::EINVAL);
        assert!(
            run.decision.why.contains("no shared-info page"),
            "{}",
            run.decision.why
        );
        assert_eq!(test.domain.events.store_port(), None);
        assert_eq!(test.store.watchers("/local/domain/2/state").count(), 0);
    }

    #[test]
    fn a_watch_over_the_domain_s_quota_is_e2big() {
        // xenstored's do_watch: a domain over its quota of watches gets E2BIG.
        let mut test = op(cmd::WATCH_EVENT, "/w/more", "");
        for watch in 0..traplab_abi::store::WATCHES_PER_DOMAIN {
            test.store.watch(1, format!("/w/{watch}"));
        }
        let run = test.call();
        assert_returned(&test, error::E2BIG);
        assert!(
            run.decision.why.contains("quota of watches"),
            "{}",
            run.decision.why
        );
        assert_eq!(test.store.watchers("/w/more").count(), 0);
    }

    #[test]
    fn store_watch_event_binds_the_store_port_once_and_returns_it() {
        // The first watch binds the lowest free port to the store; the next ones share it.
        let mut test = op(cmd::WATCH_EVENT, "/local/domain/2/state", "");
        test.domain.events.shared_info = Some(SHARED_INFO);
        test.domain.events.ports[1] = PortState::Virq(0);
        let run = test.call();
        assert_returned(&test, 2);
        assert!(
            run.decision
                .why
                .contains("its store port (port 2, bound now) pending"),
            "{}",
            run.decision.why
        );
        assert_eq!(test.domain.events.ports[2], PortState::Store);
        assert_eq!(
            test.store
                .watchers("/local/domain/2/state")
                .collect::<Vec<_>>(),
            [1]
        );
        let mut again = op(cmd::WATCH_EVENT, RELEASE_DOMAIN, "");
        again.domain.events = test.domain.events.clone();
        again.store = test.store.clone();
        again.call();
        assert_returned(&again, 2);
        assert_eq!(
            again.store.watchers(RELEASE_DOMAIN).collect::<Vec<_>>(),
            [1]
        );
    }

    #[test]
    fn a_write_of_a_watched_node_makes_the_watcher_s_store_port_pending_and_wakes_its_poll() {
        // d2 polls its ring's port 1 and its store port 3, and watches d1's node: d1's
        // write notifies port 3, and d2 wakes, as a watch event on xenstore's channel would.
        let mut test = op(cmd::WRITE, MINE, "8");
        let other = test.add_domain(2);
        other.events.ports[3] = PortState::Store;
        other.vcpu.run_state = RunState::Blocked(Wait::Poll(vec![1, 3]));
        test.store.watch(2, MINE.into());
        let run = test.call();
        assert_returned(&test, 0);
        assert_eq!(run.kinds(), ["decide", "notify", "emulate"]);
        let notified: Vec<(u16, u32, bool)> = run
            .notifies()
            .iter()
            .map(|notify| (notify.to, notify.port, notify.woke))
            .collect();
        assert_eq!(notified, [(2, 3, true)]);
        assert_eq!(test.other(2).vcpu.run_state, RunState::Runnable);
    }

    #[test]
    fn no_domain_writes_release_domain_and_every_domain_reads_it() {
        for writer in [0, 1] {
            let mut test = op(cmd::WRITE, RELEASE_DOMAIN, "1");
            test.domain.id = writer;
            let run = test.call();
            // A special name, no node: xenstored refuses to write it as an invalid path.
            assert_returned(&test, error::EINVAL);
            assert!(
                run.decision.why.contains("is the store's own"),
                "{}",
                run.decision.why
            );
        }
        let mut test = read_into(cmd::READ, RELEASE_DOMAIN, 16);
        test.store.release(3);
        test.call();
        assert_returned(&test, 1);
        assert_eq!(&buffer(&test)[..2], b"3#");
    }

    #[test]
    fn a_domain_s_end_wakes_who_waits_for_release_domain_and_who_polls_its_store_port() {
        // d0 waits in store_watch on @releaseDomain; d2 polls its store port 3, which
        // watches it; d4 polls a port the store does not notify: it sleeps on. d6 does both,
        // blocked in store_watch and watching: it wakes, and its store port is pending all
        // the same, for a later poll.
        let mut store = Store::default();
        let mut domains = alloc::vec::Vec::new();
        for id in [0, 2, 4, 6] {
            let mut test = Test::long_mode();
            test.domain.id = id;
            domains.push(test.domain);
        }
        domains[0].vcpu.run_state = RunState::Blocked(Wait::Store(RELEASE_DOMAIN.into()));
        domains[1].events.ports[3] = PortState::Store;
        domains[1].vcpu.run_state = RunState::Blocked(Wait::Poll(vec![1, 3]));
        store.watch(2, RELEASE_DOMAIN.into());
        domains[2].vcpu.run_state = RunState::Blocked(Wait::Poll(vec![1]));
        domains[3].vcpu.run_state = RunState::Blocked(Wait::Store(RELEASE_DOMAIN.into()));
        domains[3].events.ports[5] = PortState::Store;
        store.watch(6, RELEASE_DOMAIN.into());
        store.watch(1, RELEASE_DOMAIN.into());
        let mut others = crate::domain::OthersMut::new(&mut domains, &mut store);
        let said = crate::apply::release_domain(1, &mut others);
        let said: Vec<(u16, &str)> = said
            .iter()
            .map(|(id, body)| match body {
                traplab_abi::event::Body::Emulate(emulate) => (*id, emulate.what.as_ref()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            said,
            [
                (
                    0,
                    "d1 has ended: the store lists it in @releaseDomain, which d0 waits for in store_watch: it wakes"
                ),
                (
                    2,
                    "d1 has ended: the store lists it in @releaseDomain, which d2 watches: its store port 3 is pending, and it wakes"
                ),
                (
                    6,
                    "d1 has ended: the store lists it in @releaseDomain, which d6 waits for in store_watch: it wakes"
                ),
                (
                    6,
                    "d1 has ended: the store lists it in @releaseDomain, which d6 watches: its store port 5 is pending"
                ),
            ]
        );
        assert_eq!(domains[3].vcpu.run_state, RunState::Runnable);
        assert_eq!(domains[0].vcpu.run_state, RunState::Runnable);
        assert_eq!(domains[1].vcpu.run_state, RunState::Runnable);
        assert!(domains[2].vcpu.run_state.is_blocked());
        assert_eq!(store.read(RELEASE_DOMAIN), Some("1"));
        assert_eq!(
            store.watchers(RELEASE_DOMAIN).collect::<Vec<_>>(),
            [2, 6],
            "d1's watch went"
        );
    }

    #[test]
    fn a_path_that_is_not_absolute_empty_too_long_or_unreadable_is_refused() {
        let mut test = op(cmd::READ, "local/domain/1", "");
        let run = test.call();
        assert_returned(&test, error::EINVAL);
        assert_eq!(
            run.decision.why,
            "store_read: \"local/domain/1\" is not a node's name (/ then names of letters, digits and _@- between single slashes, as xenstored takes them) nor @releaseDomain, EINVAL"
        );
        // Names xenstored refuses: an empty one, a NUL or a newline in one, `..`.
        for path in [
            "/local/domain/1/",
            "/local/domain/1//x",
            "/local/domain/1/a\nb",
            "/local/domain/1/../2/x",
        ] {
            let mut test = op(cmd::WRITE, path, "8");
            test.call();
            assert_returned(&test, error::EINVAL);
            assert_eq!(test.store, Store::default(), "nothing written: {path:?}");
        }

        for length in [0, PATH_MAX + 1] {
            let mut test = op(cmd::READ, MINE, "");
            test.set_gpr(2, length);
            test.call();
            assert_returned(&test, error::EINVAL);
        }

        let mut test = op(cmd::READ, MINE, "");
        test.set_gpr(6, UNMAPPED);
        let run = test.call();
        assert_returned(&test, error::EFAULT);
        assert!(
            run.decision
                .why
                .contains("the path is not readable text of 1 to 128 bytes")
        );
    }

    #[test]
    fn a_value_that_is_too_long_or_not_utf8_is_refused() {
        let mut test = op(cmd::WRITE, MINE, "8");
        test.set_gpr(8, VALUE_MAX + 1);
        test.call();
        assert_returned(&test, error::EINVAL);
        assert_eq!(test.store.read(MINE), None);
        let mut test = op(cmd::WRITE, MINE, "8");
        test.write(VALUE, &[0xff]);
        test.call();
        assert_returned(&test, error::EINVAL);
    }

    #[test]
    fn an_empty_value_is_a_value() {
        // xenstored accepts a write of no bytes (`xenstore-write path ""`); a read of the
        // node returns length 0.
        let mut test = op(cmd::WRITE, MINE, "");
        let run = test.call();
        assert_returned(&test, 0);
        assert_eq!(
            run.decision.why,
            format!("store_write: d1 sets {MINE} = \"\"")
        );
        assert_eq!(test.store.read(MINE), Some(""));

        let mut test = read_into(cmd::READ, MINE, 16);
        test.store.write(1, MINE.into(), String::new());
        test.call();
        assert_returned(&test, 0);
    }

    #[test]
    fn an_unknown_command_returns_enosys() {
        let mut test = op(5, MINE, "");
        let run = test.call();
        assert_returned(&test, error::ENOSYS);
        assert_eq!(run.decision.why, "store_op: no such command 5, ENOSYS");
    }
}
