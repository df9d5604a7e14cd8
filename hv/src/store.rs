//! The store: names and values the domains share (the ABI and how it differs from
//! xenstore: `traplab_abi::store`).

use alloc::collections::BTreeMap;
use alloc::string::String;
use traplab_abi::store::NODES_MAX;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Store {
    nodes: BTreeMap<String, String>,
}

impl Store {
    pub fn read(&self, path: &str) -> Option<&str> {
        self.nodes.get(path).map(String::as_str)
    }

    /// Is there room for `path` (a new node, or one that exists already)?
    pub fn has_room_for(&self, path: &str) -> bool {
        self.nodes.contains_key(path) || self.nodes.len() < NODES_MAX
    }

    /// Set `path` (the caller checked permission and room).
    pub fn write(&mut self, path: String, value: String) {
        self.nodes.insert(path, value);
    }

    /// Every node, for gdb and the log.
    pub fn nodes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.nodes
            .iter()
            .map(|(path, value)| (path.as_str(), value.as_str()))
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
            assert!(store.has_room_for(&format!("/n/{node}")));
            store.write(format!("/n/{node}"), "x".into());
        }
        assert!(!store.has_room_for("/n/new"));
        assert!(store.has_room_for("/n/0"), "rewriting a node takes no room");
        store.write("/n/0".into(), "y".into());
        assert_eq!(store.read("/n/0"), Some("y"));
        assert_eq!(store.nodes().count(), NODES_MAX);
    }
}
