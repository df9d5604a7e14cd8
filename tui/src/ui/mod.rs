//! The terminal UI: `traplab replay FILE` and `traplab run LAB`.
//!
//! | module     | what it does                                                      |
//! |------------|-------------------------------------------------------------------|
//! | [`app`]    | the state, and what each key does to it                          |
//! | [`story`]  | one trap's steps: the flow, the handler's run, the return         |
//! | [`view`]   | drawing: `impl Widget for &App`, a pure function of the state    |
//! | [`terminal`] | the real terminal: raw mode, restoring it always, the event loop |

pub mod app;
pub mod story;
pub mod terminal;
pub mod view;

pub use app::{App, Options};
