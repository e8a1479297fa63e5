//! Looking at a stopped program: modules, symbols, source lines, unwinding,
//! DWARF variables and types, expressions, `x` formats and disassembly.
//! Everything here reads the program through [`Target`]; nothing here
//! runs it.
//!
//! [`Program`] is the entry point: it finds the modules (executable,
//! dynamic linker, libraries) from the auxiliary vector and the dynamic
//! linker's `link_map` list, and parses each file's symbols, DWARF and CFI
//! on first use.

mod disasm;
mod dwarf;
mod elf;
mod examine;
mod expr;
mod format;
mod program;
mod returned;
mod symbols;
mod types;
mod unwind;
mod value;

pub use disasm::{insn_len, is_call, is_ret, Insn};
pub use examine::{examine, Examiner};
pub use expr::{describe_type, evaluate, evaluate_tracking, evaluate_with_history, ExprError};
pub use format::{eflags_text, format_value, format_value_as, type_name};
pub use program::{BreakLoc, LineRow, Loc, Module, Program};
pub use returned::returned_value;
pub use unwind::Frame;
pub use value::Value;

/// What the inspector needs from a stopped program.
pub trait Target {
    /// Read `buf.len()` bytes at `addr`; an error (one line) if any byte is
    /// unreadable.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), String>;
    /// The selected thread's registers.
    fn regs(&self) -> libc::user_regs_struct;
    /// The auxiliary vector: (AT_* type, value) pairs.
    fn auxv(&self) -> Vec<(u64, u64)>;
    /// Path of the main executable.
    fn exe(&self) -> std::path::PathBuf;
    /// The selected thread's register xmm`i` (16 bytes), if known.
    fn xmm(&self, _i: usize) -> Option<[u8; 16]> {
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn program_can_move_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<super::Program>();
        send_sync::<super::Value>();
        send_sync::<super::Frame>();
    }
}
