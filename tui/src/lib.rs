//! The `traplab` command as a library: its subcommands, and the terminal UI (so that the
//! tests can drive the UI with ratatui's `TestBackend`).

pub mod cli;
pub mod commands;
pub mod setup;
pub mod ui;
