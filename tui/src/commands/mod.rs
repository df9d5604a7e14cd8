//! One file per subcommand.

pub mod bench;
pub mod book_traces;
pub mod check;
pub mod list;
pub mod status;
pub mod trace;
