//! The command line: flags (`args`), the options they resolve to (`settings`), and what each
//! command does with them (`commands`). `main.rs` only dispatches.

pub mod args;
pub mod commands;
pub mod settings;
