//! ptrace and wait, with raw signal numbers (nix's `Signal` cannot hold
//! real-time signals, which tracees use).

use std::io::IoSliceMut;

use libc::{c_int, c_long, c_void, pid_t, user_regs_struct};
use nix::errno::Errno;

pub type Result<T> = std::result::Result<T, Errno>;

pub const PTRACE_EVENT_STOP: i32 = 128;
const NULL: *mut c_void = std::ptr::null_mut();
const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
const NT_X86_XSTATE: c_int = 0x202;
/// Flag of PTRACE_PEEKSIGINFO: read the process-wide queue.
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
/// Size of one raw siginfo.
pub const SIGINFO_SIZE: usize = 128;

/// Options every rewind tracee gets.
pub fn default_options() -> c_int {
    libc::PTRACE_O_TRACESYSGOOD
        | libc::PTRACE_O_TRACECLONE
        | libc::PTRACE_O_TRACEEXEC
        | libc::PTRACE_O_TRACESECCOMP
        | libc::PTRACE_O_EXITKILL
}

fn check(ret: c_long) -> Result<c_long> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

pub fn seize(pid: pid_t, options: c_int) -> Result<()> {
    // SAFETY: PTRACE_SEIZE takes no pointers; data carries the option bits.
    check(unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, NULL, options as c_long) }).map(drop)
}

pub fn setoptions(tid: pid_t, options: c_int) -> Result<()> {
    // SAFETY: no pointers are passed; data carries the option bits.
    check(unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, tid, NULL, options as c_long) }).map(drop)
}

pub fn interrupt(tid: pid_t) -> Result<()> {
    // SAFETY: no pointers are passed.
    check(unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, NULL, NULL) }).map(drop)
}

/// Resume a stopped thread, delivering `sig` (0 for none).
pub fn cont(tid: pid_t, sig: i32) -> Result<()> {
    // SAFETY: no pointers are passed; data is the signal number.
    check(unsafe { libc::ptrace(libc::PTRACE_CONT, tid, NULL, sig as c_long) }).map(drop)
}

/// Resume until the next syscall entry or exit.
pub fn syscall(tid: pid_t, sig: i32) -> Result<()> {
    // SAFETY: no pointers are passed; data is the signal number.
    check(unsafe { libc::ptrace(libc::PTRACE_SYSCALL, tid, NULL, sig as c_long) }).map(drop)
}

/// Execute one instruction.
pub fn singlestep(tid: pid_t, sig: i32) -> Result<()> {
    // SAFETY: no pointers are passed; data is the signal number.
    check(unsafe { libc::ptrace(libc::PTRACE_SINGLESTEP, tid, NULL, sig as c_long) }).map(drop)
}

/// Leave a group-stop reported as PTRACE_EVENT_STOP without resuming.
pub fn listen(tid: pid_t) -> Result<()> {
    // SAFETY: no pointers are passed.
    check(unsafe { libc::ptrace(libc::PTRACE_LISTEN, tid, NULL, NULL) }).map(drop)
}

pub fn detach(tid: pid_t, sig: i32) -> Result<()> {
    // SAFETY: no pointers are passed.
    check(unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, NULL, sig as c_long) }).map(drop)
}

pub fn getregs(tid: pid_t) -> Result<user_regs_struct> {
    // SAFETY: user_regs_struct is plain data; zeroed is a valid value.
    let mut regs: user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes exactly one user_regs_struct to the pointer.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            tid,
            NULL,
            &mut regs as *mut _ as *mut c_void,
        )
    })?;
    Ok(regs)
}

pub fn setregs(tid: pid_t, regs: &user_regs_struct) -> Result<()> {
    // SAFETY: the kernel reads one user_regs_struct from the pointer.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGS,
            tid,
            NULL,
            regs as *const _ as *mut c_void,
        )
    })
    .map(drop)
}

/// The full xsave area (NT_X86_XSTATE) of a thread.
pub fn get_xstate(tid: pid_t) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the iovec describes `buf`, which outlives the call; the kernel
    // writes at most iov_len bytes and updates iov_len.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            tid,
            NT_X86_XSTATE as *mut c_void,
            &mut iov as *mut _ as *mut c_void,
        )
    })?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

pub fn set_xstate(tid: pid_t, xstate: &[u8]) -> Result<()> {
    let mut copy = xstate.to_vec();
    let mut iov = libc::iovec {
        iov_base: copy.as_mut_ptr() as *mut c_void,
        iov_len: copy.len(),
    };
    // SAFETY: the iovec describes `copy`, alive for the call; the kernel reads it.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGSET,
            tid,
            NT_X86_XSTATE as *mut c_void,
            &mut iov as *mut _ as *mut c_void,
        )
    })
    .map(drop)
}

/// The siginfo of the signal that caused the current stop, raw.
pub fn getsiginfo(tid: pid_t) -> Result<[u8; SIGINFO_SIZE]> {
    let mut buf = [0u8; SIGINFO_SIZE];
    // SAFETY: siginfo_t is 128 bytes; the kernel writes at most that.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_GETSIGINFO,
            tid,
            NULL,
            buf.as_mut_ptr() as *mut c_void,
        )
    })?;
    Ok(buf)
}

pub fn setsiginfo(tid: pid_t, info: &[u8; SIGINFO_SIZE]) -> Result<()> {
    // SAFETY: the kernel reads 128 bytes from the buffer.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_SETSIGINFO,
            tid,
            NULL,
            info.as_ptr() as *mut c_void,
        )
    })
    .map(drop)
}

pub fn getsigmask(tid: pid_t) -> Result<u64> {
    let mut mask: u64 = 0;
    // SAFETY: addr is the size of the mask (8), data points to a u64.
    check(unsafe {
        libc::ptrace(
            PTRACE_GETSIGMASK,
            tid,
            8 as *mut c_void,
            &mut mask as *mut u64 as *mut c_void,
        )
    })?;
    Ok(mask)
}

pub fn setsigmask(tid: pid_t, mask: u64) -> Result<()> {
    // SAFETY: addr is the size of the mask (8), data points to a u64.
    check(unsafe {
        libc::ptrace(
            PTRACE_SETSIGMASK,
            tid,
            8 as *mut c_void,
            &mask as *const u64 as *mut c_void,
        )
    })
    .map(drop)
}

#[repr(C)]
struct PeekSiginfoArgs {
    off: u64,
    flags: u32,
    nr: i32,
}

/// Queued (pending) signals of a thread, or of its process with `shared`.
pub fn peek_pending(tid: pid_t, shared: bool) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; SIGINFO_SIZE * 32];
    loop {
        let args = PeekSiginfoArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: 32,
        };
        // SAFETY: args is a valid ptrace_peeksiginfo_args; buf has room for nr siginfos.
        let n = check(unsafe {
            libc::ptrace(
                PTRACE_PEEKSIGINFO,
                tid,
                &args as *const PeekSiginfoArgs as *mut c_void,
                buf.as_mut_ptr() as *mut c_void,
            )
        })? as usize;
        if n == 0 {
            return Ok(out);
        }
        out.extend(buf.chunks(SIGINFO_SIZE).take(n).map(<[u8]>::to_vec));
    }
}

#[repr(C)]
#[derive(Default)]
struct RseqConfig {
    rseq_abi_pointer: u64,
    rseq_abi_size: u32,
    signature: u32,
    flags: u32,
    pad: u32,
}

/// The thread's rseq registration: (address, length, signature), if any.
pub fn rseq_configuration(tid: pid_t) -> Result<Option<(u64, u32, u32)>> {
    let mut conf = RseqConfig::default();
    // SAFETY: addr is the size of the struct; the kernel writes at most that.
    check(unsafe {
        libc::ptrace(
            PTRACE_GET_RSEQ_CONFIGURATION,
            tid,
            std::mem::size_of::<RseqConfig>() as *mut c_void,
            &mut conf as *mut RseqConfig as *mut c_void,
        )
    })?;
    Ok((conf.rseq_abi_pointer != 0).then_some((
        conf.rseq_abi_pointer,
        conf.rseq_abi_size,
        conf.signature,
    )))
}

/// PTRACE_GETEVENTMSG: the new thread's id after a clone event, etc.
pub fn geteventmsg(tid: pid_t) -> Result<u64> {
    let mut msg: libc::c_ulong = 0;
    // SAFETY: the kernel writes one unsigned long.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_GETEVENTMSG,
            tid,
            NULL,
            &mut msg as *mut _ as *mut c_void,
        )
    })?;
    Ok(msg as u64)
}

/// The robust futex list of a thread: (head, len).
pub fn robust_list(tid: pid_t) -> Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: libc::size_t = 0;
    // SAFETY: both out-pointers are valid for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid,
            &mut head as *mut u64,
            &mut len as *mut libc::size_t,
        )
    })?;
    Ok((head, len as u64))
}

/// How a wait ended, decoded from the raw status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Exited(i32),
    Killed(i32),
    /// Signal-delivery-stop (raw signal number).
    Signal(i32),
    /// PTRACE_EVENT_* stop: (event, signal).
    Event(i32, i32),
    /// Syscall entry or exit stop (TRACESYSGOOD).
    Syscall,
}

/// waitpid(pid, __WALL | flags). `None` when WNOHANG found nothing.
pub fn wait(pid: pid_t, nohang: bool) -> Result<Option<(pid_t, Stop)>> {
    let mut status: c_int = 0;
    // __WNOTHREAD: only our own tracees, not those of other threads
    // (tests run several tracers in one process).
    let flags = libc::__WALL | libc::__WNOTHREAD | if nohang { libc::WNOHANG } else { 0 };
    loop {
        // SAFETY: status is a valid out-pointer.
        let ret = unsafe { libc::waitpid(pid, &mut status, flags) };
        if ret == -1 {
            let e = Errno::last();
            if e == Errno::EINTR {
                continue;
            }
            return Err(e);
        }
        if ret == 0 {
            return Ok(None);
        }
        return Ok(Some((ret, decode_status(status))));
    }
}

pub fn decode_status(status: c_int) -> Stop {
    if libc::WIFEXITED(status) {
        Stop::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Stop::Killed(libc::WTERMSIG(status))
    } else {
        let sig = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xff;
        if sig == (libc::SIGTRAP | 0x80) {
            Stop::Syscall
        } else if event != 0 {
            Stop::Event(event, sig)
        } else {
            Stop::Signal(sig)
        }
    }
}

/// Read memory of another process: returns the number of bytes read.
pub fn vm_read(pid: pid_t, addr: u64, buf: &mut [u8]) -> Result<usize> {
    let remote = [nix::sys::uio::RemoteIoVec {
        base: addr as usize,
        len: buf.len(),
    }];
    let mut local = [IoSliceMut::new(buf)];
    nix::sys::uio::process_vm_readv(nix::unistd::Pid::from_raw(pid), &mut local, &remote)
}

/// Write memory of another process (the pages must be writable).
pub fn vm_write(pid: pid_t, addr: u64, buf: &[u8]) -> Result<usize> {
    let remote = [nix::sys::uio::RemoteIoVec {
        base: addr as usize,
        len: buf.len(),
    }];
    let local = [std::io::IoSlice::new(buf)];
    nix::sys::uio::process_vm_writev(nix::unistd::Pid::from_raw(pid), &local, &remote)
}

/// Offset of `u_debugreg[i]` in `struct user` (x86-64).
fn debugreg_offset(i: usize) -> usize {
    std::mem::offset_of!(libc::user, u_debugreg) + i * 8
}

/// Read debug register `i` (0-3 addresses, 6 status, 7 control) of `tid`.
pub fn get_debugreg(tid: pid_t, i: usize) -> Result<u64> {
    Errno::clear();
    // SAFETY: PTRACE_PEEKUSER reads one word at an offset inside `struct
    // user`; no pointers are passed.
    let v = unsafe {
        libc::ptrace(
            libc::PTRACE_PEEKUSER,
            tid,
            debugreg_offset(i) as *mut c_void,
            NULL,
        )
    };
    if v == -1 && Errno::last() != Errno::UnknownErrno {
        return Err(Errno::last());
    }
    Ok(v as u64)
}

/// Set debug register `i` of `tid`.
pub fn set_debugreg(tid: pid_t, i: usize, value: u64) -> Result<()> {
    // SAFETY: PTRACE_POKEUSER writes one word at an offset inside `struct
    // user`; the kernel validates the value.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_POKEUSER,
            tid,
            debugreg_offset(i) as *mut c_void,
            value as *mut c_void,
        )
    })
    .map(drop)
}
