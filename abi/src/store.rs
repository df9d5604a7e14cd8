//! The store: a small tree of names and values the domains share, where the control domain
//! (dom0) publishes how they find each other (ports, grant references, connection states).
//!
//! It plays the part of Xen's xenstore, much reduced. What is the same: paths like
//! `/local/domain/2/device/evtchn`, values as short strings, dom0 may write anywhere and a
//! domain under its own `/local/domain/<id>/`, and waiting for a node to appear (xenstore's
//! *watch*; here `store_wait` waits for a node to appear and `store_watch` for its value to
//! change). What differs: xenstore is a daemon in dom0, reached through a shared ring and
//! an event channel, with transactions and per-node permissions; traplab's store lives in
//! the hypervisor, is reached by one hypercall, `store_op(cmd, path, path_len, value,
//! value_len)` (hypercall [`crate::hypercall::STORE_OP`]), and every domain may read every
//! node. The store holds [`NODES_MAX`] nodes, of which a domU may create
//! [`NODES_PER_DOMAIN`]; a write past either is `-ENOSPC`, as xenstored answers a domain
//! over its quota.
//!
//! Watches come two ways. `store_wait` and `store_watch` block the caller on one node. A
//! watch registered with `store_watch_event` instead makes the domain's *store port* pending
//! at each write of its node, as xenstored sends a watch event on a domain's xenstore event
//! channel: a driver that sleeps in SCHEDOP_poll on its ring's port polls that one too, and
//! so hears of the store while it waits for the other end. And as in xenstore, the special
//! node [`RELEASE_DOMAIN`] changes when a domain ends (xenstored fires `@releaseDomain`
//! when the hypervisor tells it, by VIRQ_DOM_EXC, that a domain died): a toolstack learns
//! that its guest is gone, a backend that its frontend is. Xen's watchers then ask the
//! hypervisor which domain it was; here the node says it.

/// The commands of `store_op`.
pub mod cmd {
    /// Copy the node's value into `value` (at most `value_len` bytes); returns its length,
    /// or `-ENOENT`.
    pub const READ: u64 = 0;
    /// Set the node to `value`; returns 0, or `-EACCES` outside the caller's part of the
    /// tree (`-EINVAL` for `@releaseDomain`, the store's own), or `-ENOSPC` when a new node
    /// does not fit (the store, or the caller's quota), as xenstored answers.
    pub const WRITE: u64 = 1;
    /// As [`READ`], but when the node does not exist yet the vCPU blocks until some domain
    /// writes it (a watch that fires once), then the read completes.
    pub const WAIT: u64 = 2;
    /// As [`WAIT`], and also while the node still holds the value the caller knows: the
    /// text in `value` up to its first NUL byte (or all `value_len` bytes). The vCPU blocks
    /// until some domain writes a different value, then the read completes into `value`.
    /// This is how a XenBus driver waits for the other end's state to move on (xenstore: a
    /// watch on the `state` node, and a read when it fires).
    pub const WATCH: u64 = 3;
    /// Register a watch on the node (which need not exist): from now on each write of it
    /// makes the caller's store port pending. Returns that port, the same for all the
    /// domain's watches (its first watch binds it, to the lowest free port), or `-ENOSPC`
    /// when no port is free, `-E2BIG` when the domain has [`super::WATCHES_PER_DOMAIN`]
    /// watches (xenstored's answer over the watch quota).
    /// `value` and `value_len` are not used.
    pub const WATCH_EVENT: u64 = 4;

    /// The command's name.
    pub fn name(cmd: u64) -> Option<&'static str> {
        Some(match cmd {
            READ => "store_read",
            WRITE => "store_write",
            WAIT => "store_wait",
            WATCH => "store_watch",
            WATCH_EVENT => "store_watch_event",
            _ => return None,
        })
    }
}

/// The text a READ, WAIT or WATCH left in `buffer`, from what it returned (`result`): the
/// hypervisor copies what fits and returns the whole value's length, as `snprintf` does. A
/// value longer than the buffer is `E2BIG`, never its first bytes taken for the whole:
/// another domain wrote it, and `"0000000000000000000000007"` cut to 24 bytes is a
/// different number (Linux's `xenbus_read` always gives the whole value). Not UTF-8:
/// `EINVAL`; an error `result` is that error.
pub fn value_read(result: i64, buffer: &[u8]) -> Result<&str, i64> {
    use crate::hypercall::error;
    if result < 0 {
        return Err(result);
    }
    let value = buffer.get(..result as usize).ok_or(error::E2BIG)?;
    core::str::from_utf8(value).map_err(|_| error::EINVAL)
}

/// The node the store itself writes when a domain ends, and no domain may: the ids of the
/// domains that have ended, in the order they did, separated by spaces (`"1"`, `"1 3"`).
/// (xenstore's special watch name `@releaseDomain`.)
pub const RELEASE_DOMAIN: &str = "@releaseDomain";

/// Is domain `id` among the ended ones [`RELEASE_DOMAIN`]'s `value` lists?
pub fn released(value: &str, id: u16) -> bool {
    value.split(' ').any(|ended| ended.parse() == Ok(id))
}

/// How many watches one domain may register with `store_watch_event` (xenstored's
/// `quota-nb-watch-per-domain`, much reduced).
pub const WATCHES_PER_DOMAIN: usize = 8;

/// The longest path.
pub const PATH_MAX: u64 = 128;
/// The longest value.
pub const VALUE_MAX: u64 = 128;
/// How many nodes the store holds.
pub const NODES_MAX: usize = 128;
/// How many of them one domU may create (its quota, as xenstored's
/// `quota-nb-entry-per-domain`; dom0 has none). Seven domUs at their quota leave dom0 an
/// eighth of the store: one domain cannot fill it for the others.
pub const NODES_PER_DOMAIN: usize = 16;

/// The part of the tree domain `id` may write, unless it is dom0 (which may write anywhere
/// in the tree): `/local/domain/<id>/`. A special node ([`RELEASE_DOMAIN`]) is the store's.
pub fn writable_by(id: u16, path: &str) -> bool {
    if !path.starts_with('/') {
        return false;
    }
    if id == 0 {
        return true;
    }
    let Some(rest) = path.strip_prefix("/local/domain/") else {
        return false;
    };
    let Some((owner, tail)) = rest.split_once('/') else {
        return false;
    };
    // The owner as the store names it, in plain decimal: "01" and "+1" are other nodes,
    // which another reader would take for d1's.
    let plain_decimal = owner.bytes().all(|byte| byte.is_ascii_digit())
        && (owner == "0" || !owner.starts_with('0'));
    plain_decimal && owner.parse::<u16>() == Ok(id) && !tail.is_empty()
}

/// Is `path` a node's name the store takes: `/` then names of letters, digits and `_@-`
/// separated by single `/`s, no `/` at the end (xenstored's `is_valid_nodename`), or the
/// store's own [`RELEASE_DOMAIN`]. (`/local/domain/1//x`, `/local/domain/1/x/` and a name
/// with a NUL, a newline or `..` in it are none.)
pub fn valid_path(path: &str) -> bool {
    if path == RELEASE_DOMAIN {
        return true;
    }
    let Some(names) = path.strip_prefix('/') else {
        return false;
    };
    names.split('/').all(|name| {
        !name.is_empty()
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"_@-".contains(&byte))
    })
}

#[cfg(test)]
mod tests {
    use super::{RELEASE_DOMAIN, released, valid_path, value_read, writable_by};
    use crate::hypercall::error;

    #[test]
    fn a_path_is_names_between_single_slashes_as_xenstored_takes_them() {
        assert!(valid_path("/local/domain/1/shared-page/gref"));
        assert!(valid_path("/local/domain/0/backend/vbd/1/51712/state"));
        assert!(valid_path(RELEASE_DOMAIN));
        for bad in [
            "local/domain/1/x",
            "/local/domain/1//x",
            "/local/domain/1/x/",
            "/local/domain/1/a\0b",
            "/local/domain/1/a\nb",
            "/local/domain/1/../2/x",
            "/",
        ] {
            assert!(!valid_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_domain_s_own_node_is_named_in_plain_decimal() {
        assert!(writable_by(1, "/local/domain/1/x"));
        assert!(!writable_by(1, "/local/domain/01/x"));
        assert!(!writable_by(1, "/local/domain/+1/x"));
    }

    #[test]
    fn a_value_longer_than_the_buffer_is_too_big_never_cut_short() {
        let mut buffer = *b"000000000000000000000000";
        assert_eq!(value_read(24, &buffer), Ok("000000000000000000000000"));
        assert_eq!(value_read(25, &buffer), Err(error::E2BIG));
        assert_eq!(value_read(2, &buffer), Ok("00"));
        assert_eq!(value_read(error::ENOENT, &buffer), Err(error::ENOENT));
        buffer[0] = 0xff;
        assert_eq!(value_read(1, &buffer), Err(error::EINVAL));
    }

    #[test]
    fn a_domain_writes_only_under_its_own_node_and_dom0_anywhere() {
        assert!(writable_by(2, "/local/domain/2/evtchn"));
        assert!(!writable_by(2, "/local/domain/1/evtchn"));
        assert!(!writable_by(2, "/local/domain/2/"));
        assert!(!writable_by(2, "/local/domain/22/evtchn"));
        assert!(!writable_by(1, "/vm/1"));
        assert!(writable_by(0, "/local/domain/1/backend"));
        assert!(!writable_by(0, RELEASE_DOMAIN), "the store's own");
    }

    #[test]
    fn release_domain_s_value_lists_the_ended_domains() {
        assert!(released("1", 1));
        assert!(released("3 1", 1));
        assert!(!released("11 2", 1));
        assert!(!released("", 1));
    }
}
