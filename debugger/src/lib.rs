//! rewind front ends: the command line, and the pieces of `rewind debug`
//! (the program inspector; the timeline and REPL come next).

pub mod cli;
pub mod inspect;
pub mod timeline;
