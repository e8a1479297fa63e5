//! A process under ptrace control: its threads, its memory, and syscall
//! injection through a trampoline page.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use libc::{pid_t, user_regs_struct};
use nix::errno::Errno;

use crate::sys::ptrace::{self, Stop, PTRACE_EVENT_STOP};
use crate::Error;

mod copy;
pub use copy::{read_thread, recreate_threads, ThreadCopy};

pub const PAGE: u64 = 4096;
/// `syscall; int3; int3` — the whole code of the trampoline.
const TRAMPOLINE_CODE: [u8; 4] = [0x0f, 0x05, 0xcc, 0xcc];
/// Code page + scratch page.
pub const TRAMPOLINE_SIZE: u64 = 2 * PAGE;

/// Why a thread is stopped (only meaningful while the tracer holds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadStop {
    Running,
    /// Stopped by us (PTRACE_INTERRUPT) or in a group-stop.
    Interrupted,
    /// Stopped on the way to deliver a signal the program must still get.
    Signal(i32),
}

/// One thread under control.
#[derive(Debug, Clone)]
pub struct Thread {
    pub tid: pid_t,
    pub stop: ThreadStop,
    /// Signal mask the program had before the tracer blocked everything.
    pub saved_mask: Option<u64>,
    /// siginfo of `ThreadStop::Signal`, kept to re-deliver it.
    pub stop_siginfo: Option<[u8; ptrace::SIGINFO_SIZE]>,
    /// The plugin (index) waiting for the end of this thread's syscall.
    pub exit_watcher: Option<usize>,
    /// In a job-control stop (a group-stop, by this signal) that lasts
    /// until a SIGCONT: whenever the tracer lets the thread go, it stays
    /// stopped (PTRACE_LISTEN), across checkpoints and restarts too.
    pub job_stop: Option<i32>,
}

/// A traced process (thread group).
pub struct Tracee {
    pub pid: pid_t,
    pub threads: BTreeMap<pid_t, Thread>,
    mem: File,
}

impl Tracee {
    /// Take control of an already-seized process whose leader is `pid`.
    pub fn new(pid: pid_t) -> Result<Tracee, Error> {
        let mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|e| Error::io(format!("/proc/{pid}/mem"), e))?;
        let mut threads = BTreeMap::new();
        threads.insert(pid, Thread::new(pid));
        Ok(Tracee { pid, threads, mem })
    }

    /// Re-open /proc/pid/mem (after exec the old handle is stale).
    pub fn reopen_mem(&mut self) -> Result<(), Error> {
        let pid = self.pid;
        self.mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|e| Error::io(format!("/proc/{pid}/mem"), e))?;
        Ok(())
    }

    /// Read memory, whatever its protection (FOLL_FORCE through /proc/pid/mem).
    pub fn read_mem(&self, addr: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.mem.read_exact_at(buf, addr).map_err(|e| {
            Error::Tracee(format!("cannot read {} bytes at {addr:#x}: {e}", buf.len()))
        })
    }

    /// Write memory, whatever its protection.
    pub fn write_mem(&self, addr: u64, buf: &[u8]) -> Result<(), Error> {
        self.mem.write_all_at(buf, addr).map_err(|e| {
            Error::Tracee(format!(
                "cannot write {} bytes at {addr:#x}: {e}",
                buf.len()
            ))
        })
    }

    /// A NUL-terminated string of at most `max` bytes, read page by page so
    /// it never reads past the end of a mapping.
    pub fn read_cstr(&self, addr: u64, max: usize) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        let mut at = addr;
        loop {
            let mut b = [0u8; 256];
            let n = (PAGE - at % PAGE).min(256) as usize;
            self.read_mem(at, &mut b[..n])?;
            if let Some(i) = b[..n].iter().position(|&c| c == 0) {
                out.extend_from_slice(&b[..i]);
                return Ok(out);
            }
            out.extend_from_slice(&b[..n]);
            at += n as u64;
            if out.len() > max {
                return Err(Error::Tracee(format!(
                    "string at {addr:#x} longer than {max} bytes"
                )));
            }
        }
    }

    pub fn read_u64(&self, addr: u64) -> Result<u64, Error> {
        let mut b = [0u8; 8];
        self.read_mem(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Threads the kernel lists for the process right now.
    pub fn list_tasks(&self) -> Result<Vec<pid_t>, Error> {
        let dir = format!("/proc/{}/task", self.pid);
        let mut tids: Vec<pid_t> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        tids.sort_unstable();
        Ok(tids)
    }

    /// Whether `tid` is a thread of this process (known, or new: its clone
    /// event may still be queued), rather than another traced process.
    pub fn owns(&self, tid: pid_t) -> bool {
        self.threads.contains_key(&tid) || tgid_of(tid) == Some(self.pid)
    }

    pub fn all_stopped(&self) -> bool {
        self.threads.values().all(|t| t.stop != ThreadStop::Running)
    }

    /// Resume every stopped thread, giving back signals it was stopped for.
    pub fn resume_all(&mut self) -> Result<(), Error> {
        for t in self.threads.values_mut() {
            let sig = match t.stop {
                ThreadStop::Running => continue,
                ThreadStop::Interrupted => 0,
                ThreadStop::Signal(s) => s,
            };
            if let Some(info) = t.stop_siginfo.take() {
                let _ = ptrace::setsiginfo(t.tid, &info);
            }
            // A plugin waiting for a syscall's end still gets its exit stop;
            // a thread in a job-control stop stays stopped until SIGCONT.
            let resumed = if t.job_stop.is_some() && t.stop == ThreadStop::Interrupted {
                keep_stopped(t.tid)
            } else if t.exit_watcher.is_some() {
                ptrace::syscall(t.tid, sig)
            } else {
                ptrace::cont(t.tid, sig)
            };
            match resumed {
                Ok(()) | Err(Errno::ESRCH) => t.stop = ThreadStop::Running,
                Err(e) => {
                    return Err(Error::Tracee(format!(
                        "cannot resume thread {}: {e}",
                        t.tid
                    )))
                }
            }
        }
        Ok(())
    }
}

/// Let thread `tid` go without letting it run: PTRACE_LISTEN, which needs
/// a PTRACE_EVENT_STOP trap; a thread in another stop (an injected
/// syscall's trap) is first brought to one (PTRACE_INTERRUPT then
/// PTRACE_CONT: it traps again before any instruction of its own).
fn keep_stopped(tid: pid_t) -> Result<(), Errno> {
    match ptrace::listen(tid) {
        Err(Errno::EIO) => {}
        other => return other,
    }
    ptrace::interrupt(tid)?;
    ptrace::cont(tid, 0)?;
    loop {
        match ptrace::wait(tid, false)? {
            Some((_, Stop::Event(PTRACE_EVENT_STOP, _))) => return ptrace::listen(tid),
            Some((_, Stop::Exited(_) | Stop::Killed(_))) => return Ok(()),
            // A signal on the way is delivered when it runs again.
            Some((_, Stop::Signal(sig))) => {
                ptrace::interrupt(tid)?;
                ptrace::cont(tid, sig)?;
            }
            Some(_) | None => {}
        }
    }
}

/// The thread group a thread belongs to (None once it is gone).
pub fn tgid_of(tid: pid_t) -> Option<pid_t> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

impl Thread {
    pub fn new(tid: pid_t) -> Thread {
        Thread {
            tid,
            stop: ThreadStop::Running,
            saved_mask: None,
            stop_siginfo: None,
            exit_watcher: None,
            job_stop: None,
        }
    }
}

/// SIGTRAPs of the program itself that stopped a thread in the middle of an
/// injected syscall, by thread: taken off its queue then, and to be given
/// back (see [`take_held_trap`]).
static HELD_TRAPS: std::sync::Mutex<BTreeMap<pid_t, [u8; ptrace::SIGINFO_SIZE]>> =
    std::sync::Mutex::new(BTreeMap::new());

/// The program's own SIGTRAP that an injected syscall in thread `tid` took
/// off its queue, if any. SIGTRAP stays unblocked while the tracer works
/// (see `capture::BLOCK_ALL`), so one that was pending (an `int3` of the
/// program's, raised just before the thread stopped) is delivered at the
/// next injected syscall, before it runs: the tracer keeps its siginfo, and
/// the capture treats it as pending (stored in the image, delivered again
/// when the program goes on).
pub fn take_held_trap(tid: pid_t) -> Option<[u8; ptrace::SIGINFO_SIZE]> {
    HELD_TRAPS.lock().ok()?.remove(&tid)
}

/// [`take_held_trap`] without taking it.
pub fn held_trap(tid: pid_t) -> Option<[u8; ptrace::SIGINFO_SIZE]> {
    HELD_TRAPS.lock().ok()?.get(&tid).copied()
}

/// Wait until thread `tid` reaches the SIGTRAP of the `int3` that ends an
/// injected syscall (`trap_rip`: the address after it), or, with
/// `want_segv`, a SIGSEGV signal-delivery-stop, letting clone and
/// group-stop events pass; the child a clone event announced on the way,
/// if any. A SIGTRAP elsewhere is the program's own: held (see
/// [`take_held_trap`]) and the syscall goes on.
fn wait_trap(tid: pid_t, want_segv: bool, trap_rip: u64) -> Result<Option<pid_t>, Error> {
    let mut child = None;
    loop {
        let Some((_, stop)) =
            ptrace::wait(tid, false).map_err(|e| Error::ptrace("waitpid", tid, e))?
        else {
            continue;
        };
        match stop {
            Stop::Signal(libc::SIGTRAP) => {
                let at = ptrace::getregs(tid)
                    .map_err(|e| Error::ptrace("PTRACE_GETREGS", tid, e))?
                    .rip;
                if at == trap_rip {
                    return Ok(child);
                }
                if let Ok(info) = ptrace::getsiginfo(tid) {
                    if let Ok(mut held) = HELD_TRAPS.lock() {
                        held.insert(tid, info);
                    }
                }
                ptrace::cont(tid, 0).map_err(|e| Error::ptrace("PTRACE_CONT", tid, e))?;
            }
            Stop::Signal(libc::SIGSEGV) if want_segv => return Ok(child),
            Stop::Event(
                libc::PTRACE_EVENT_CLONE | libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK,
                _,
            ) => {
                child = Some(
                    ptrace::geteventmsg(tid)
                        .map_err(|e| Error::ptrace("PTRACE_GETEVENTMSG", tid, e))?
                        as pid_t,
                );
                ptrace::cont(tid, 0).map_err(|e| Error::ptrace("PTRACE_CONT", tid, e))?;
            }
            Stop::Signal(sig) => {
                return Err(Error::Tracee(format!(
                    "thread {tid} got signal {sig} during an injected syscall"
                )))
            }
            Stop::Event(_, _) | Stop::Syscall => {
                ptrace::cont(tid, 0).map_err(|e| Error::ptrace("PTRACE_CONT", tid, e))?;
            }
            Stop::Exited(code) => {
                return Err(Error::Gone(format!("the program exited (status {code})")))
            }
            Stop::Killed(sig) => {
                return Err(Error::Gone(format!(
                    "the program was killed by signal {sig}"
                )))
            }
        }
    }
}

/// A mapped trampoline page through which syscalls are injected.
#[derive(Debug, Clone, Copy)]
pub struct Injector {
    /// Address of the code page; the scratch page follows it.
    pub addr: u64,
}

impl Injector {
    pub fn scratch(&self) -> u64 {
        self.addr + PAGE
    }

    /// Map a trampoline at `addr` in the stopped thread `tid` by briefly
    /// writing `syscall; int3` at its instruction pointer.
    pub fn install(tracee: &Tracee, tid: pid_t, addr: u64) -> Result<Injector, Error> {
        let (ret, _) = syscall_at_rip(
            tracee,
            tid,
            libc::SYS_mmap,
            &[
                addr,
                TRAMPOLINE_SIZE,
                (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
                u64::MAX,
                0,
            ],
        )?;
        if ret as u64 != addr {
            return Err(Error::Tracee(format!(
                "cannot map the trampoline at {addr:#x}: {}",
                errno_text(ret)
            )));
        }
        tracee.write_mem(addr, &TRAMPOLINE_CODE)?;
        Ok(Injector { addr })
    }

    /// Run syscall `nr` in stopped thread `tid`; returns the raw result
    /// (negative errno on failure). The thread's registers are unchanged.
    pub fn syscall(&self, tid: pid_t, nr: i64, args: &[u64]) -> Result<i64, Error> {
        let saved = ptrace::getregs(tid).map_err(|e| Error::ptrace("PTRACE_GETREGS", tid, e))?;
        let mut regs = saved;
        regs.rip = self.addr;
        set_syscall(&mut regs, nr, args);
        let result = run_to_trap(tid, &regs, false);
        ptrace::setregs(tid, &saved).map_err(|e| Error::ptrace("PTRACE_SETREGS", tid, e))?;
        result
    }

    /// Like `syscall`, failing with the syscall's name on a negative result.
    pub fn call(&self, tid: pid_t, what: &str, nr: i64, args: &[u64]) -> Result<u64, Error> {
        let ret = self.syscall(tid, nr, args)?;
        if ret < 0 && ret > -4096 {
            return Err(Error::Injected {
                what: what.to_string(),
                errno: Errno::from_raw(-ret as i32),
            });
        }
        Ok(ret as u64)
    }

    /// Run the raw `clone(flags)` in stopped thread `tid` (exit signal 0
    /// unless `flags` names one: the child's end is then never reported to
    /// the program, whose injected `wait4(__WALL)` must reap it). The child
    /// is traced (a session's ptrace options follow clones) and sits in its
    /// attach stop at the trampoline, never having run. Returns its pid;
    /// `tid`'s registers are unchanged.
    pub fn clone_stopped(&self, tid: pid_t, flags: u64) -> Result<pid_t, Error> {
        let saved = ptrace::getregs(tid).map_err(|e| Error::ptrace("PTRACE_GETREGS", tid, e))?;
        let mut regs = saved;
        regs.rip = self.addr;
        set_syscall(&mut regs, libc::SYS_clone, &[flags, 0, 0, 0, 0]);
        let result = run_to_trap_child(tid, &regs, false);
        ptrace::setregs(tid, &saved).map_err(|e| Error::ptrace("PTRACE_SETREGS", tid, e))?;
        let (ret, child) = result?;
        let Some(child) = child else {
            if ret > 0 {
                // Not traced after all: it must not run the program's code.
                let _ = crate::sys::process::kill(ret as pid_t, libc::SIGKILL);
                return Err(Error::Tracee(format!(
                    "the clone of process {tid} is not traced"
                )));
            }
            return Err(Error::Injected {
                what: "clone".into(),
                errno: Errno::from_raw(-ret as i32),
            });
        };
        loop {
            match ptrace::wait(child, false).map_err(|e| Error::ptrace("waitpid", child, e))? {
                Some((_, Stop::Event(PTRACE_EVENT_STOP, _))) => return Ok(child),
                Some((_, Stop::Exited(_) | Stop::Killed(_))) => {
                    return Err(Error::Gone(format!(
                        "the clone of process {tid} died at birth"
                    )))
                }
                _ => {}
            }
        }
    }

    /// Map `len` bytes of private, anonymous, read-write memory in the
    /// program (room for the arguments of injected syscalls); its address.
    pub fn map_buffer(&self, tid: pid_t, what: &str, len: u64) -> Result<u64, Error> {
        self.call(
            tid,
            &format!("mmap ({what})"),
            libc::SYS_mmap,
            &[
                0,
                len,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )
    }

    /// Run `f` with a buffer of `len` bytes mapped in the program
    /// ([`Injector::map_buffer`]); it is unmapped after, whatever `f`
    /// returns (`f`'s error first).
    pub fn with_buffer<T, E: From<Error>>(
        &self,
        tid: pid_t,
        what: &str,
        len: u64,
        f: impl FnOnce(u64) -> Result<T, E>,
    ) -> Result<T, E> {
        let buf = self.map_buffer(tid, what, len)?;
        let result = f(buf);
        let unmapped = self.call(
            tid,
            &format!("munmap ({what})"),
            libc::SYS_munmap,
            &[buf, len],
        );
        let value = result?;
        unmapped?;
        Ok(value)
    }

    /// Unmap the trampoline itself, from a `syscall; int3` briefly written
    /// at the thread's instruction pointer (as [`Injector::install`] maps
    /// it). Never from the trampoline: the thread would fault on the next
    /// instruction fetch, and a fault while SIGSEGV is blocked (as it is
    /// during a capture) makes the kernel reset the program's SIGSEGV
    /// handler to the default (`force_sig_info`): a JVM, whose safepoints
    /// are SIGSEGVs, then dies at the next one.
    pub fn remove(self, tracee: &Tracee, tid: pid_t) -> Result<(), Error> {
        let (ret, _) =
            syscall_at_rip(tracee, tid, libc::SYS_munmap, &[self.addr, TRAMPOLINE_SIZE])?;
        if ret != 0 {
            return Err(Error::Tracee(format!(
                "cannot unmap the trampoline: {}",
                errno_text(ret)
            )));
        }
        Ok(())
    }
}

fn set_syscall(regs: &mut user_regs_struct, nr: i64, args: &[u64]) {
    regs.rax = nr as u64;
    // orig_rax = -1: the kernel must not treat this stop as inside a syscall
    // (no restart logic on our registers).
    regs.orig_rax = u64::MAX;
    let get = |i: usize| args.get(i).copied().unwrap_or(0);
    regs.rdi = get(0);
    regs.rsi = get(1);
    regs.rdx = get(2);
    regs.r10 = get(3);
    regs.r8 = get(4);
    regs.r9 = get(5);
}

fn run_to_trap(tid: pid_t, regs: &user_regs_struct, want_segv: bool) -> Result<i64, Error> {
    run_to_trap_child(tid, regs, want_segv).map(|r| r.0)
}

/// [`run_to_trap`], with the child a clone made on the way.
fn run_to_trap_child(
    tid: pid_t,
    regs: &user_regs_struct,
    want_segv: bool,
) -> Result<(i64, Option<pid_t>), Error> {
    ptrace::setregs(tid, regs).map_err(|e| Error::ptrace("PTRACE_SETREGS", tid, e))?;
    ptrace::cont(tid, 0).map_err(|e| Error::ptrace("PTRACE_CONT", tid, e))?;
    // `syscall` (2 bytes), then `int3` (1 byte): the trap stops after it.
    let child = wait_trap(tid, want_segv, regs.rip + 3)?;
    let after = ptrace::getregs(tid).map_err(|e| Error::ptrace("PTRACE_GETREGS", tid, e))?;
    Ok((after.rax as i64, child))
}

/// Run syscall `nr` in stopped thread `tid` without a trampoline, by
/// briefly writing `syscall; int3` at its instruction pointer; code and
/// registers are put back whatever happens. The raw result, and the child
/// a clone made.
fn syscall_at_rip(
    tracee: &Tracee,
    tid: pid_t,
    nr: i64,
    args: &[u64],
) -> Result<(i64, Option<pid_t>), Error> {
    let saved = ptrace::getregs(tid).map_err(|e| Error::ptrace("PTRACE_GETREGS", tid, e))?;
    let mut orig = [0u8; 4];
    tracee.read_mem(saved.rip, &mut orig)?;
    tracee.write_mem(saved.rip, &TRAMPOLINE_CODE)?;
    let mut regs = saved;
    set_syscall(&mut regs, nr, args);
    let result = run_to_trap_child(tid, &regs, false);
    let restored = tracee.write_mem(saved.rip, &orig);
    let _ = ptrace::setregs(tid, &saved);
    let ret = result?;
    restored?;
    Ok(ret)
}

pub fn errno_text(ret: i64) -> String {
    if ret < 0 && ret > -4096 {
        Errno::from_raw(-ret as i32).desc().to_string()
    } else {
        format!("unexpected result {ret:#x}")
    }
}

/// Stop every thread of `tracee` (PTRACE_INTERRUPT), following threads that
/// appear or vanish meanwhile. Other stops seen on the way are passed to
/// `other`, which must resume the thread or mark it stopped.
pub fn stop_all(
    tracee: &mut Tracee,
    mut other: impl FnMut(&mut Tracee, pid_t, Stop) -> Result<(), Error>,
) -> Result<(), Error> {
    for t in tracee.threads.values() {
        if t.stop == ThreadStop::Running {
            match ptrace::interrupt(t.tid) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => return Err(Error::ptrace("PTRACE_INTERRUPT", t.tid, e)),
            }
        }
    }
    while !tracee.all_stopped() {
        let Some((tid, stop)) =
            ptrace::wait(-1, false).map_err(|e| Error::ptrace("waitpid", tracee.pid, e))?
        else {
            continue;
        };
        match stop {
            Stop::Event(PTRACE_EVENT_STOP, _) if tracee.owns(tid) => {
                if let Some(t) = tracee.threads.get_mut(&tid) {
                    t.stop = ThreadStop::Interrupted;
                } else {
                    // A thread we have not heard of (its clone event is
                    // still queued): take it as stopped.
                    let mut t = Thread::new(tid);
                    t.stop = ThreadStop::Interrupted;
                    tracee.threads.insert(tid, t);
                }
            }
            Stop::Signal(sig) if tracee.owns(tid) => {
                let info = ptrace::getsiginfo(tid).ok();
                let t = tracee
                    .threads
                    .entry(tid)
                    .or_insert_with(|| Thread::new(tid));
                t.stop = ThreadStop::Signal(sig);
                t.stop_siginfo = info;
            }
            Stop::Exited(_) | Stop::Killed(_) if tid == tracee.pid => {
                return Err(Error::Gone("the program exited".into()));
            }
            Stop::Exited(_) | Stop::Killed(_) => {
                tracee.threads.remove(&tid);
            }
            _ => other(tracee, tid, stop)?,
        }
    }
    Ok(())
}

/// Whether a PTRACE_EVENT_STOP with this signal is a group-stop (job
/// control), as opposed to an interrupt or a new thread's first stop.
pub fn is_group_stop(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    )
}

/// Resume a stop of a process that is followed but not the program itself
/// (a child it forked): signals are passed on, group-stops kept.
pub fn resume_passenger(tid: pid_t, stop: Stop) {
    match stop {
        Stop::Exited(_) | Stop::Killed(_) => {}
        Stop::Signal(sig) => {
            let _ = ptrace::cont(tid, sig);
        }
        Stop::Event(PTRACE_EVENT_STOP, sig) if is_group_stop(sig) => {
            let _ = ptrace::listen(tid);
        }
        _ => {
            let _ = ptrace::cont(tid, 0);
        }
    }
}

/// Wait until thread `tid` of process `pid`, which was let go into exit(),
/// is really gone: the kernel has then cleared and woken its tid futex. A
/// group leader is not reported before its group ends: it is done once it
/// is a zombie.
pub fn wait_thread_gone(pid: pid_t, tid: pid_t) {
    if tid != pid {
        loop {
            match ptrace::wait(tid, false) {
                Ok(Some((_, Stop::Exited(_) | Stop::Killed(_)))) | Err(_) => return,
                Ok(Some((_, stop))) => {
                    let sig = if let Stop::Signal(s) = stop { s } else { 0 };
                    let _ = ptrace::cont(tid, sig);
                }
                Ok(None) => {}
            }
        }
    }
    for _ in 0..10_000 {
        match std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) {
            Ok(stat) => {
                let state = stat
                    .rfind(')')
                    .and_then(|i| stat[i + 1..].split_whitespace().next());
                if matches!(state, Some("Z") | Some("X")) {
                    return;
                }
            }
            Err(_) => return,
        }
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}

/// Fork the process of stopped thread `tid` into a new traced process that
/// sits stopped with the same registers, memory (copy-on-write; MAP_SHARED
/// memory copied into objects of its own, see `shm::unshare_after_fork`),
/// signal state and descriptors: an in-memory snapshot (only `tid` is
/// copied, as with any fork). The child has no exit signal, so its end is never
/// reported to the program. `tid`'s registers and code are unchanged.
/// Returns the child's pid.
pub fn fork_stopped(tracee: &Tracee, tid: pid_t) -> Result<pid_t, Error> {
    let saved = ptrace::getregs(tid).map_err(|e| Error::ptrace("PTRACE_GETREGS", tid, e))?;
    let mut orig = [0u8; 4];
    tracee.read_mem(saved.rip, &mut orig)?;
    // clone(flags = 0: exit signal none, no sharing; stack 0: the same).
    let (ret, child) = syscall_at_rip(tracee, tid, libc::SYS_clone, &[0, 0, 0, 0, 0])?;
    let Some(child) = child else {
        return Err(Error::Tracee(format!(
            "fork for a snapshot failed: {}",
            errno_text(ret)
        )));
    };
    // The child starts with its attach stop; it holds our code at rip.
    loop {
        match ptrace::wait(child, false).map_err(|e| Error::ptrace("waitpid", child, e))? {
            Some((_, Stop::Event(PTRACE_EVENT_STOP, _))) => break,
            Some((_, Stop::Exited(_) | Stop::Killed(_))) => {
                return Err(Error::Gone("the snapshot died at birth".into()))
            }
            _ => {}
        }
    }
    let prepared = (|| {
        let copy = Tracee::new(child)?;
        copy.write_mem(saved.rip, &orig)?;
        ptrace::setregs(child, &saved).map_err(|e| Error::ptrace("PTRACE_SETREGS", child, e))?;
        // Shared memory is the snapshot's own, as the rest of its memory.
        crate::shm::unshare_after_fork(&copy)
    })();
    if let Err(e) = prepared {
        let _ = crate::sys::process::kill(child, libc::SIGKILL);
        let _ = ptrace::wait(child, false);
        return Err(e);
    }
    Ok(child)
}

/// Fork stopped thread `tid` (a restart husk, traced with
/// PTRACE_O_TRACEFORK) into a child process of it, with pid `want` when
/// that pid is free (clone3 `set_tid`), else any pid. The child is a normal
/// child (exit signal SIGCHLD) and sits in its attach stop; its memory is
/// the parent's, with our code at rip: it is meant to be emptied and
/// refilled. Returns the child's pid.
pub fn fork_husk(tracee: &Tracee, tid: pid_t, want: Option<pid_t>) -> Result<pid_t, Error> {
    let regs = ptrace::getregs(tid).map_err(|e| Error::ptrace("PTRACE_GETREGS", tid, e))?;
    // struct clone_args and the pid array, well below the stack pointer
    // (the husk sleeps in pause(): nothing lives there).
    let at = (regs.rsp - 4096) & !15;
    let mut saved = [0u8; 128];
    tracee.read_mem(at, &mut saved)?;
    let mut child = None;
    if let Some(pid) = want {
        let mut args = [0u64; 11];
        args[4] = libc::SIGCHLD as u64; // exit_signal
        args[8] = at + 96; // set_tid
        args[9] = 1; // set_tid_size
        let mut bytes: Vec<u8> = args.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.resize(96, 0);
        bytes.extend_from_slice(&(pid as i64).to_le_bytes());
        tracee.write_mem(at, &bytes)?;
        let (ret, c) = syscall_at_rip(tracee, tid, libc::SYS_clone3, &[at, 88])?;
        if ret > 0 {
            child = c;
        } else {
            tracing::debug!("clone3(set_tid {pid}) failed: {}", errno_text(ret));
        }
    }
    tracee.write_mem(at, &saved)?;
    let child = match child {
        Some(c) => c,
        None => {
            let (ret, c) = syscall_at_rip(
                tracee,
                tid,
                libc::SYS_clone,
                &[libc::SIGCHLD as u64, 0, 0, 0, 0],
            )?;
            c.ok_or_else(|| Error::Restore(format!("fork of a husk failed: {}", errno_text(ret))))?
        }
    };
    loop {
        match ptrace::wait(child, false).map_err(|e| Error::ptrace("waitpid", child, e))? {
            Some((_, Stop::Event(PTRACE_EVENT_STOP, _))) => return Ok(child),
            Some((_, Stop::Exited(_) | Stop::Killed(_))) => {
                return Err(Error::Restore("a forked husk died at birth".into()))
            }
            _ => {}
        }
    }
}

/// Run syscall `nr` in stopped thread `tid` of a process without a
/// trampoline (see `syscall_at_rip`); the raw result.
pub fn syscall_in_place(tracee: &Tracee, tid: pid_t, nr: i64, args: &[u64]) -> Result<i64, Error> {
    syscall_at_rip(tracee, tid, nr, args).map(|r| r.0)
}
