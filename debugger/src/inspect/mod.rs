//! Looking at a stopped program: modules, symbols, source lines, unwinding,
//! DWARF variables and types, expressions, `x` formats and disassembly.
//! Everything here reads the program through [`Target`]; nothing here
//! runs it.

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
}
