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
    pub const fn new() -> Store {
        Store {
            nodes: BTreeMap::new(),
        }
    }

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
