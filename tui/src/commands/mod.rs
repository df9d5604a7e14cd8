//! One file per subcommand.

pub mod bench;
pub mod list;
pub mod status;
pub mod trace;
