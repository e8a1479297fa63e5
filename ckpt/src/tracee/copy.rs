//! Copies of a stopped process with all its threads. Fork copies only the
//! calling thread ([`super::fork_stopped`]); the others are read from the
//! original ([`read_thread`]) and recreated in the copy by injected clone3
//! ([`recreate_threads`]): registers, xsave, signal mask, clear_child_tid,
//! robust list, alternate stack, rseq and name, as restart's threads are.

use libc::{pid_t, user_regs_struct};

use super::{errno_text, syscall_at_rip, Thread, ThreadStop, Tracee};
use crate::sys::ptrace::{self, Stop, PTRACE_EVENT_STOP};
use crate::Error;

/// `struct stack_t` (sigaltstack).
const STACK_T: usize = 24;
const SS_ONSTACK: i32 = 1;
const SS_DISABLE: i32 = 2;
/// Below the stack pointer and its red zone: room for the results and
/// arguments of injected syscalls (saved and put back).
const SCRATCH_BELOW_SP: u64 = 1024;
const SCRATCH: usize = 128;

/// A thread as a copy of its process needs it (what fork does not copy).
#[derive(Debug, Clone)]
pub struct ThreadCopy {
    pub tid: pid_t,
    pub regs: user_regs_struct,
    pub xstate: Vec<u8>,
    pub sigmask: u64,
    pub clear_child_tid: u64,
    pub robust_list: (u64, u64),
    /// Raw `stack_t`.
    pub altstack: [u8; STACK_T],
    pub rseq: Option<(u64, u32, u32)>,
    pub comm: Vec<u8>,
    /// Stopped at the seccomp stop of a syscall it has not run yet (a
    /// tracer's decision pending): the copy is put at the same stop.
    pub at_entry: bool,
}

/// Read stopped thread `tid` of `tracee`: at a plain stop, or with
/// `at_entry` at the seccomp stop of a syscall not run yet (the queries
/// take that syscall's place, then the thread enters it again and is left
/// at the same stop with the same registers). clear_child_tid and the
/// alternate stack need syscalls run by the thread itself: they are taken
/// from `known` instead, an earlier reading of the thread, when the caller
/// knows the thread has not run since (its registers must be the same).
pub fn read_thread(
    tracee: &Tracee,
    tid: pid_t,
    at_entry: bool,
    known: Option<&ThreadCopy>,
) -> Result<ThreadCopy, Error> {
    let regs = ptrace::getregs(tid).map_err(|e| Error::ptrace("PTRACE_GETREGS", tid, e))?;
    let (clear_child_tid, altstack) = match known {
        Some(k) if k.tid == tid && same_regs(&k.regs, &regs) => (k.clear_child_tid, k.altstack),
        _ => {
            if at_entry {
                leave_entry(tid, &regs)?;
            }
            let queried = query_thread(tracee, tid);
            if at_entry {
                reenter(tid, &regs)?;
            }
            queried?
        }
    };
    let comm = std::fs::read(format!("/proc/{}/task/{tid}/comm", tracee.pid))
        .map(|mut c| {
            if c.last() == Some(&b'\n') {
                c.pop();
            }
            c
        })
        .unwrap_or_default();
    Ok(ThreadCopy {
        tid,
        regs,
        xstate: ptrace::get_xstate(tid).map_err(|e| Error::ptrace("PTRACE_GETREGSET", tid, e))?,
        sigmask: ptrace::getsigmask(tid).map_err(|e| Error::ptrace("PTRACE_GETSIGMASK", tid, e))?,
        clear_child_tid,
        robust_list: ptrace::robust_list(tid)
            .map_err(|e| Error::ptrace("get_robust_list", tid, e))?,
        altstack,
        rseq: ptrace::rseq_configuration(tid)
            .map_err(|e| Error::ptrace("PTRACE_GET_RSEQ_CONFIGURATION", tid, e))?,
        comm,
        at_entry,
    })
}

fn same_regs(a: &user_regs_struct, b: &user_regs_struct) -> bool {
    crate::capture::regs_to_vec(a) == crate::capture::regs_to_vec(b)
}

/// clear_child_tid and the alternate stack of a thread at a plain stop,
/// through syscalls injected at its rip.
fn query_thread(tracee: &Tracee, tid: pid_t) -> Result<(u64, [u8; STACK_T]), Error> {
    with_scratch(tracee, tid, |at| {
        let ret = syscall_at_rip(
            tracee,
            tid,
            libc::SYS_prctl,
            &[libc::PR_GET_TID_ADDRESS as u64, at],
        )?
        .0;
        if ret != 0 {
            return Err(Error::Tracee(format!(
                "prctl(PR_GET_TID_ADDRESS) in thread {tid}: {}",
                errno_text(ret)
            )));
        }
        let ctid = tracee.read_u64(at)?;
        let ret = syscall_at_rip(tracee, tid, libc::SYS_sigaltstack, &[0, at + 8])?.0;
        if ret != 0 {
            return Err(Error::Tracee(format!(
                "sigaltstack in thread {tid}: {}",
                errno_text(ret)
            )));
        }
        let mut ss = [0u8; STACK_T];
        tracee.read_mem(at + 8, &mut ss)?;
        Ok((ctid, ss))
    })
}

/// Run `f` with `SCRATCH` bytes of `tid`'s stack below its red zone,
/// given back as they were whatever `f` returns.
fn with_scratch<T>(
    tracee: &Tracee,
    tid: pid_t,
    f: impl FnOnce(u64) -> Result<T, Error>,
) -> Result<T, Error> {
    let regs = ptrace::getregs(tid).map_err(|e| Error::ptrace("PTRACE_GETREGS", tid, e))?;
    let at = (regs.rsp - SCRATCH_BELOW_SP) & !15;
    let mut saved = [0u8; SCRATCH];
    tracee.read_mem(at, &mut saved)?;
    let result = f(at);
    let restored = tracee.write_mem(at, &saved);
    let value = result?;
    restored?;
    Ok(value)
}

/// From the seccomp stop of a syscall not run yet (registers `regs`) to a
/// plain stop just before its `syscall` instruction: the syscall is
/// skipped and the thread stops at its exit, nothing executed.
fn leave_entry(tid: pid_t, regs: &user_regs_struct) -> Result<(), Error> {
    let mut r = *regs;
    r.orig_rax = u64::MAX;
    r.rax = regs.orig_rax;
    r.rip = regs.rip.wrapping_sub(2);
    ptrace::setregs(tid, &r).map_err(|e| Error::ptrace("PTRACE_SETREGS", tid, e))?;
    ptrace::syscall(tid, 0).map_err(|e| Error::ptrace("PTRACE_SYSCALL", tid, e))?;
    match wait_stop(tid)? {
        Stop::Syscall => Ok(()),
        other => Err(Error::Tracee(format!(
            "thread {tid}: expected the end of a skipped syscall, got {other:?}"
        ))),
    }
}

/// Put a thread stopped just before a `syscall` instruction into that
/// syscall's seccomp stop again, with registers `regs` (those of the stop).
fn reenter(tid: pid_t, regs: &user_regs_struct) -> Result<(), Error> {
    let mut r = *regs;
    r.orig_rax = u64::MAX;
    r.rax = regs.orig_rax;
    r.rip = regs.rip.wrapping_sub(2);
    ptrace::setregs(tid, &r).map_err(|e| Error::ptrace("PTRACE_SETREGS", tid, e))?;
    ptrace::cont(tid, 0).map_err(|e| Error::ptrace("PTRACE_CONT", tid, e))?;
    match wait_stop(tid)? {
        Stop::Event(libc::PTRACE_EVENT_SECCOMP, _) => {}
        other => {
            return Err(Error::Tracee(format!(
                "thread {tid}: expected to enter syscall {} again, got {other:?}",
                regs.orig_rax as i64
            )))
        }
    }
    ptrace::setregs(tid, regs).map_err(|e| Error::ptrace("PTRACE_SETREGS", tid, e))
}

fn wait_stop(tid: pid_t) -> Result<Stop, Error> {
    loop {
        if let Some((_, stop)) =
            ptrace::wait(tid, false).map_err(|e| Error::ptrace("waitpid", tid, e))?
        {
            return match stop {
                Stop::Exited(_) | Stop::Killed(_) => {
                    Err(Error::Gone(format!("thread {tid} ended")))
                }
                s => Ok(s),
            };
        }
    }
}

/// In `copy` (a process forked from the thread `main` was read from), give
/// its one thread what fork dropped (clear_child_tid, robust list), then
/// recreate every thread of `others` by clone3 injected into it. Each new
/// thread's tid is pushed to `created` as soon as it exists (so a caller
/// that fails half-way knows what to reap), in the order of `others`.
pub fn recreate_threads(
    copy: &mut Tracee,
    main: &ThreadCopy,
    others: &[ThreadCopy],
    created: &mut Vec<pid_t>,
) -> Result<(), Error> {
    let pid = copy.pid;
    set_links(copy, pid, main)?;
    let flags = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM) as u64;
    for t in others {
        let tid = with_scratch(copy, pid, |at| {
            // struct clone_args: flags, then nothing but zeros (no exit
            // signal, the same stack).
            let mut args = [0u64; 11];
            args[0] = flags;
            let bytes: Vec<u8> = args.iter().flat_map(|v| v.to_le_bytes()).collect();
            debug_assert!(bytes.len() <= SCRATCH);
            copy.write_mem(at, &bytes)?;
            let (ret, child) =
                syscall_at_rip(copy, pid, libc::SYS_clone3, &[at, bytes.len() as u64])?;
            child.ok_or_else(|| {
                Error::Tracee(format!(
                    "clone3 of a thread in a snapshot failed: {}",
                    errno_text(ret)
                ))
            })
        })?;
        created.push(tid);
        loop {
            match wait_stop(tid)? {
                Stop::Event(PTRACE_EVENT_STOP, _) => break,
                _ => continue,
            }
        }
        let mut th = Thread::new(tid);
        th.stop = ThreadStop::Interrupted;
        copy.threads.insert(tid, th);
        fill_thread(copy, tid, t)?;
    }
    Ok(())
}

/// clear_child_tid and the robust list of `tid` as in `t`.
fn set_links(copy: &Tracee, tid: pid_t, t: &ThreadCopy) -> Result<(), Error> {
    let ret = syscall_at_rip(copy, tid, libc::SYS_set_tid_address, &[t.clear_child_tid])?.0;
    if ret < 0 {
        return Err(Error::Tracee(format!(
            "set_tid_address in a snapshot: {}",
            errno_text(ret)
        )));
    }
    if t.robust_list.0 != 0 {
        let ret = syscall_at_rip(
            copy,
            tid,
            libc::SYS_set_robust_list,
            &[t.robust_list.0, t.robust_list.1],
        )?
        .0;
        if ret != 0 {
            return Err(Error::Tracee(format!(
                "set_robust_list in a snapshot: {}",
                errno_text(ret)
            )));
        }
    }
    Ok(())
}

/// Make new thread `tid` of `copy` the thread `t` was.
fn fill_thread(copy: &Tracee, tid: pid_t, t: &ThreadCopy) -> Result<(), Error> {
    set_links(copy, tid, t)?;
    let fail = |what: &str, ret: i64| {
        Err(Error::Tracee(format!(
            "{what} in a snapshot's thread: {}",
            errno_text(ret)
        )))
    };
    with_scratch(copy, tid, |at| {
        let mut ss = t.altstack;
        let flags = i32::from_le_bytes([ss[8], ss[9], ss[10], ss[11]]);
        // On the stack now or not is the stack pointer's business.
        let flags = if flags & SS_DISABLE != 0 {
            SS_DISABLE
        } else {
            flags & !SS_ONSTACK
        };
        ss[8..12].copy_from_slice(&flags.to_le_bytes());
        copy.write_mem(at, &ss)?;
        let ret = syscall_at_rip(copy, tid, libc::SYS_sigaltstack, &[at, 0])?.0;
        if ret != 0 {
            return fail("sigaltstack", ret);
        }
        let mut comm: Vec<u8> = t.comm.iter().copied().take(15).collect();
        comm.push(0);
        copy.write_mem(at, &comm)?;
        let ret = syscall_at_rip(copy, tid, libc::SYS_prctl, &[libc::PR_SET_NAME as u64, at])?.0;
        if ret != 0 {
            return fail("prctl(PR_SET_NAME)", ret);
        }
        Ok(())
    })?;
    if let Some((addr, len, sig)) = t.rseq {
        let ret = syscall_at_rip(
            copy,
            tid,
            libc::SYS_rseq,
            &[addr, len as u64, 0, sig as u64],
        )?
        .0;
        if ret != 0 {
            return fail("rseq", ret);
        }
    }
    ptrace::set_xstate(tid, &t.xstate)
        .map_err(|e| Error::ptrace("PTRACE_SETREGSET(xstate)", tid, e))?;
    ptrace::setsigmask(tid, t.sigmask).map_err(|e| Error::ptrace("PTRACE_SETSIGMASK", tid, e))?;
    if t.at_entry {
        reenter(tid, &t.regs)
    } else {
        ptrace::setregs(tid, &t.regs).map_err(|e| Error::ptrace("PTRACE_SETREGS", tid, e))
    }
}
