//! Deterministic record and replay (DESIGN §4), without hardware
//! performance counters.
//!
//! The [`recorder`] runs a program live under ptrace with a seccomp filter
//! that stops every syscall outside a reviewed table of deterministic ones
//! ([`syscalls`]), rdtsc made to fault (PR_SET_TSC) and the vdso hidden, and
//! writes every nondeterministic outcome to an event log ([`trace`]), next
//! to an engine image of the program at its first instruction. The
//! [`replayer`] restores that image and re-executes the program natively,
//! feeding it the recorded results; it never touches the outside world and
//! stops at the first divergence.

mod kvm;
pub mod recorder;
pub mod replayer;
pub mod sbuf;
pub mod syscalls;
pub mod trace;

/// Errors of record and replay, one line each.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Engine(#[from] rewind_ckpt::Error),
    #[error(transparent)]
    Trace(#[from] trace::TraceError),
    #[error("divergence at event {event} (thread {tid}): {what}")]
    Divergence { event: u64, tid: i32, what: String },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Unsupported(String),
    /// Replay stopped for a debugger before the pending event (internal:
    /// [`replayer::Replayer::advance`] turns it into a pause).
    #[error("replay paused")]
    Paused,
}

/// Whether thread `tid`'s process has a handler for `sig` (SigCgt of
/// /proc/TID/status).
pub fn has_handler(tid: libc::pid_t, sig: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| (1..=64).contains(&sig) && mask >> (sig - 1) & 1 != 0)
}

/// Offsets in a signal frame, from the stack pointer at the handler's
/// first instruction (x86-64 `rt_sigframe`: the return address, then the
/// ucontext: flags, link, stack (24 bytes), sigcontext (256 bytes), mask).
pub mod frame {
    const SIGCONTEXT: u64 = 8 + 40;
    pub const ERR: u64 = SIGCONTEXT + 152;
    pub const TRAPNO: u64 = SIGCONTEXT + 160;
    pub const OLDMASK: u64 = SIGCONTEXT + 168;
    pub const CR2: u64 = SIGCONTEXT + 176;
    pub const MASK: u64 = SIGCONTEXT + 256;
}

/// An asynchronous signal's frame records the thread's last hardware
/// exception (`err`, `trapno`, `cr2`: a page fault's address...), which
/// differs between a recording and its replay (their memory is populated
/// differently): record and replay both clear them in the frame of the
/// thread `tid` of `tracee`, stopped at its handler's first instruction.
pub fn clear_frame_fault(tracee: &rewind_ckpt::tracee::Tracee, rsp: u64) -> Result<(), Error> {
    for field in [frame::ERR, frame::TRAPNO, frame::CR2] {
        tracee.write_mem(rsp + field, &0u64.to_le_bytes())?;
    }
    Ok(())
}

/// A checksum of a thread's registers (FNV-1a over the 27 words), the same
/// in record and replay when execution is the same.
pub fn regs_checksum(r: &libc::user_regs_struct) -> u64 {
    let words = rewind_ckpt::capture::regs_to_vec(r);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    // orig_rax (15) and rax (10) at a seccomp stop are the kernel's
    // bookkeeping (-ENOSYS), not program state.
    for (i, w) in words.iter().enumerate() {
        if i == 10 || i == 15 {
            continue;
        }
        for b in w.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// A checksum of the writable memory of a process, for `--verify=memory`:
/// every writable byte in address order, independent of how the kernel
/// splits it into mappings (replay maps files as anonymous memory, which
/// the kernel may merge with neighbours).
pub fn memory_checksum(tracee: &rewind_ckpt::tracee::Tracee) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let Ok(maps) = rewind_ckpt::maps::read(tracee.pid) else {
        return 0;
    };
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for m in maps
        .iter()
        .filter(|m| m.prot & libc::PROT_WRITE as u32 != 0 && !sbuf::contains(m.start))
    {
        match ranges.last_mut() {
            Some(last) if last.1 == m.start => last.1 = m.end,
            _ => ranges.push((m.start, m.end)),
        }
    }
    let mut buf = vec![0u8; 1 << 20];
    for (start, end) in ranges {
        h = (h ^ start).wrapping_mul(0x0100_0000_01b3);
        let mut at = start;
        while at < end {
            let len = ((end - at) as usize).min(buf.len());
            let chunk = &mut buf[..len];
            if rewind_ckpt::sys::ptrace::vm_read(tracee.pid, at, chunk) != Ok(len)
                && tracee.read_mem(at, chunk).is_err()
            {
                chunk.fill(0);
            }
            for w in chunk.chunks_exact(8) {
                let v = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
                h = (h ^ v).wrapping_mul(0x0100_0000_01b3).rotate_left(29);
            }
            at += len as u64;
        }
        tracing::trace!("memory {start:#x}-{end:#x}: checksum so far {h:#x}");
    }
    h
}
