//! rewind front ends: the command line, and the pieces of `rewind debug`
//! (the program inspector; the timeline and REPL come next).

pub mod bisect_cli;
pub mod cli;
pub mod coordinator_cli;
pub mod debug_cli;
pub mod gcore;
pub mod gdbserver;
pub mod inspect;
pub mod repl;
pub mod timeline;
