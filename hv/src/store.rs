//! The store: names and values the domains share (the ABI and how it differs from
//! xenstore: `traplab_abi::store`).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use traplab_abi::store::{NODES_MAX, NODES_PER_DOMAIN, RELEASE_DOMAIN, WATCHES_PER_DOMAIN};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Store {
    nodes: BTreeMap<String, Node>,
    /// The watches `store_watch_event` registered: (domain, path). A write of the path makes
    /// the domain's store port pending.
    watches: Vec<(u16, String)>,
}

/// A node's value, and the domain that created it: its quota pays for it (xenstored counts
/// a node against its creator's quota too, wherever it is in the tree).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    value: String,
    owner: u16,
}

impl Store {
    pub fn read(&self, path: &str) -> Option<&str> {
        self.nodes.get(path).map(|node| node.value.as_str())
    }

    /// Why domain `writer` cannot set `path`, if it cannot: a new node when the store is
    /// full, or when the writer, a domU, has created its quota of them. Rewriting a node
    /// takes no room.
    pub fn no_room(&self, writer: u16, path: &str) -> Option<&'static str> {
        if self.nodes.contains_key(path) {
            return None;
        }
        if self.nodes.len() >= NODES_MAX {
            return Some("the store is full");
        }
        let owned = self
            .nodes
            .values()
            .filter(|node| node.owner == writer)
            .count();
        (writer != 0 && owned >= NODES_PER_DOMAIN)
            .then_some("the domain has created its quota of nodes")
    }

    /// Set `path`, for domain `writer` (the caller checked permission and room). A new node
    /// is the writer's; a node keeps its creator when another domain rewrites it.
    pub fn write(&mut self, writer: u16, path: String, value: String) {
        match self.nodes.get_mut(&path) {
            Some(node) => node.value = value,
            None => {
                self.nodes.insert(
                    path,
                    Node {
                        value,
                        owner: writer,
                    },
                );
            }
        }
    }

    /// Why domain `id` cannot watch `path` one more time, if it cannot.
    pub fn no_watch(&self, id: u16, path: &str) -> Option<&'static str> {
        if self.watching(id, path) {
            return None;
        }
        let registered = self
            .watches
            .iter()
            .filter(|(watcher, _)| *watcher == id)
            .count();
        (registered >= WATCHES_PER_DOMAIN)
            .then_some("the domain has registered its quota of watches")
    }

    /// Domain `id` watches `path` (once, however often it asks).
    pub fn watch(&mut self, id: u16, path: String) {
        if !self.watching(id, &path) {
            self.watches.push((id, path));
        }
    }

    /// Does domain `id` watch `path` already?
    fn watching(&self, id: u16, path: &str) -> bool {
        self.watches
            .iter()
            .any(|(watcher, watched)| *watcher == id && watched == path)
    }

    /// The domains that watch `path`.
    pub fn watchers<'a>(&'a self, path: &'a str) -> impl Iterator<Item = u16> + 'a {
        self.watches
            .iter()
            .filter(move |(_, watched)| watched == path)
            .map(|(watcher, _)| *watcher)
    }

    /// Domain `id` has ended: its watches go, and [`RELEASE_DOMAIN`] lists it. The node's
    /// path, for the caller to wake its watchers.
    pub fn release(&mut self, id: u16) -> &'static str {
        self.watches.retain(|(watcher, _)| *watcher != id);
        let value = match self.read(RELEASE_DOMAIN) {
            Some(ended) => format!("{ended} {id}"),
            None => format!("{id}"),
        };
        // The store's own node: it counts against nobody's quota (dom0 has none).
        self.write(0, RELEASE_DOMAIN.into(), value);
        RELEASE_DOMAIN
    }

    /// Every node, for gdb and the log.
    pub fn nodes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.nodes
            .iter()
            .map(|(path, node)| (path.as_str(), node.value.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn a_full_store_has_room_only_for_the_nodes_it_holds() {
        let mut store = Store::default();
        for node in 0..NODES_MAX {
            assert_eq!(store.no_room(0, &format!("/n/{node}")), None);
            store.write(0, format!("/n/{node}"), "x".into());
        }
        assert_eq!(store.no_room(0, "/n/new"), Some("the store is full"));
        assert_eq!(
            store.no_room(0, "/n/0"),
            None,
            "rewriting a node takes no room"
        );
        store.write(0, "/n/0".into(), "y".into());
        assert_eq!(store.read("/n/0"), Some("y"));
        assert_eq!(store.nodes().count(), NODES_MAX);
    }

    #[test]
    fn a_domu_creates_its_quota_of_nodes_and_dom0_still_has_room() {
        let mut store = Store::default();
        for node in 0..NODES_PER_DOMAIN {
            let path = format!("/local/domain/1/n{node}");
            assert_eq!(store.no_room(1, &path), None);
            store.write(1, path, "x".into());
        }
        let over = "/local/domain/1/one-more";
        assert_eq!(
            store.no_room(1, over),
            Some("the domain has created its quota of nodes")
        );
        assert_eq!(store.no_room(1, "/local/domain/1/n0"), None, "a rewrite");
        assert_eq!(store.no_room(2, "/local/domain/2/n0"), None, "another domU");
        assert_eq!(store.no_room(0, "/local/domain/0/backend"), None, "dom0");
    }

    #[test]
    fn an_ended_domain_is_listed_in_release_domain_and_its_watches_go() {
        let mut store = Store::default();
        store.watch(2, RELEASE_DOMAIN.into());
        store.watch(1, "/local/domain/2/state".into());
        store.watch(1, "/local/domain/2/state".into());
        assert_eq!(
            store.watchers("/local/domain/2/state").collect::<Vec<_>>(),
            [1]
        );
        store.release(1);
        assert_eq!(store.read(RELEASE_DOMAIN), Some("1"));
        assert_eq!(store.watchers("/local/domain/2/state").count(), 0);
        store.release(3);
        assert_eq!(store.read(RELEASE_DOMAIN), Some("1 3"));
        assert_eq!(store.watchers(RELEASE_DOMAIN).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn a_domain_registers_its_quota_of_watches() {
        let mut store = Store::default();
        for watch in 0..WATCHES_PER_DOMAIN {
            let path = format!("/w/{watch}");
            assert_eq!(store.no_watch(1, &path), None);
            store.watch(1, path);
        }
        assert!(store.no_watch(1, "/w/more").is_some());
        assert_eq!(store.no_watch(1, "/w/0"), None, "one it has");
        assert_eq!(store.no_watch(2, "/w/more"), None, "another domain");
    }

    #[test]
    fn a_node_counts_against_the_domain_that_created_it() {
        // dom0 creates a node in d1's part of the tree, which d1 rewrites: still dom0's.
        let mut store = Store::default();
        for node in 0..NODES_PER_DOMAIN - 1 {
            store.write(1, format!("/local/domain/1/n{node}"), "x".into());
        }
        store.write(0, "/local/domain/1/backend".into(), "b".into());
        store.write(1, "/local/domain/1/backend".into(), "c".into());
        assert_eq!(store.read("/local/domain/1/backend"), Some("c"));
        assert_eq!(store.no_room(1, "/local/domain/1/last"), None, "one more");
        store.write(1, "/local/domain/1/last".into(), "x".into());
        assert!(store.no_room(1, "/local/domain/1/one-too-many").is_some());
    }
}
