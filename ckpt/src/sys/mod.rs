//! Everything unsafe in rewind, and every raw syscall: one small safe
//! function per operation, each unsafe block with a `// SAFETY:` line.
//! The rest of the workspace is safe Rust.

pub mod cpu;
pub mod ipc;
pub mod net;
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

/// Starts writing `len` bytes of `fd` from `offset` to disk without waiting
/// for it (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so a later fsync has
/// less left to wait for.
pub fn start_writeback(fd: RawFd, offset: u64, len: u64) -> Result<(), Errno> {
    let offset = libc::off64_t::try_from(offset).map_err(|_| Errno::EINVAL)?;
    let len = libc::off64_t::try_from(len).map_err(|_| Errno::EINVAL)?;
    // SAFETY: sync_file_range takes no pointers; the kernel checks the fd and range.
    if unsafe { libc::sync_file_range(fd, offset, len, libc::SYNC_FILE_RANGE_WRITE) } != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Read the time-stamp counter (what a recorded rdtsc returns).
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no memory effects; the tracer itself may execute it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// rdtscp: the counter and TSC_AUX (the cpu number, as Linux sets it).
pub fn rdtscp() -> (u64, u32) {
    let mut aux = 0u32;
    // SAFETY: rdtscp writes only `aux`, a valid local.
    let v = unsafe { core::arch::x86_64::__rdtscp(&mut aux) };
    (v, aux)
}

/// The lowest CPU this process may run on.
pub fn first_allowed_cpu() -> usize {
    nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .ok()
        .and_then(|set| (0..nix::sched::CpuSet::count()).find(|&c| set.is_set(c).unwrap_or(false)))
        .unwrap_or(0)
}

/// Pin thread `tid` to `cpu`.
pub fn pin_to_cpu(tid: libc::pid_t, cpu: usize) -> Result<(), Errno> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set)
}

/// Make this process the reaper of its orphaned descendants (snapshots
/// forked from a process we later kill end up ours, not init's).
pub fn set_child_subreaper() -> Result<(), Errno> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes a plain integer.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The traced thread running right now (pid << 32 | tid), 0 if none: a
/// Ctrl-C is passed to it so that a long run stops at once.
static RUNNING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
    let running = RUNNING.load(std::sync::atomic::Ordering::SeqCst);
    if running != 0 {
        let (pid, tid) = (
            (running >> 32) as libc::pid_t,
            running as u32 as libc::pid_t,
        );
        // SAFETY: tgkill is async-signal-safe and takes plain integers.
        unsafe {
            libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGINT);
        }
    }
}

/// Say which traced thread is about to run (0, 0: none), for Ctrl-C.
pub fn set_running(pid: libc::pid_t, tid: libc::pid_t) {
    let v = ((pid as u32 as u64) << 32) | tid as u32 as u64;
    RUNNING.store(v, std::sync::atomic::Ordering::SeqCst);
}

/// Whether Ctrl-C was pressed and not taken yet (the flag stays).
pub fn interrupt_pending() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Route SIGINT (Ctrl-C) to a flag that long operations poll with
/// [`take_interrupt`], instead of killing rewind.
pub fn catch_interrupt() -> Result<(), Errno> {
    // SAFETY: a zeroed sigaction is valid; the handler only stores to an
    // atomic, which is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut()) != 0 {
            return Err(Errno::last());
        }
    }
    Ok(())
}

/// Whether Ctrl-C was pressed since the last call (clears the flag).
pub fn take_interrupt() -> bool {
    INTERRUPTED.swap(false, std::sync::atomic::Ordering::SeqCst)
}
