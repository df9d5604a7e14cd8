//! One file per subcommand.

pub mod bench;
pub mod bench_ui;
pub mod book_traces;
pub mod check;
pub mod diff;
pub mod export;
pub mod list;
pub mod load;
pub mod replay;
pub mod run;
pub mod stats;
pub mod status;
pub mod trace;
