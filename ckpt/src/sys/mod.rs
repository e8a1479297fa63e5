//! Everything unsafe in rewind, and every raw syscall: one small safe
//! function per operation, each unsafe block with a `// SAFETY:` line.
//! The rest of the workspace is safe Rust.

pub mod process;
pub mod ptrace;

use std::os::fd::RawFd;

use nix::errno::Errno;

/// Bytes waiting in a pipe (FIONREAD).
pub fn fionread(fd: RawFd) -> Result<usize, Errno> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the pointer.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n as *mut libc::c_int) } != 0 {
        return Err(Errno::last());
    }
    Ok(n.max(0) as usize)
}
