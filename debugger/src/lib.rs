//! rewind front ends: the command line today; the timeline, REPL, gdb
//! server and bisection come with later issues.

pub mod cli;
