//! The replayer: restores the trace's initial image and re-executes the
//! program natively, feeding it the recorded events in order. Emulated
//! syscalls are skipped and their results written; syscalls that shape the
//! process run for real at the recorded addresses. A thread runs only when
//! the next event is its own, so the recorded interleaving comes back.
//! Nothing outside the process is touched: the program's writes to its
//! stdout and stderr are shown from the log, not performed.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use libc::{pid_t, user_regs_struct};
use rewind_ckpt::restore::{self, RestartOptions};
use rewind_ckpt::sys::ptrace::{self, Stop, PTRACE_EVENT_STOP};
use rewind_ckpt::tracee::Tracee;

use crate::recorder::{call_disposition, cpu_info, native_syscalls, regs_args, tsc_instruction};
use crate::syscalls::{self, Disposition};
use crate::trace::format::{Event, TraceHeader};
use crate::trace::{self, EventReader, TraceError};
use crate::{regs_checksum, Error};

const ERESTARTSYS: i64 = -512;
const ERESTART_RESTARTBLOCK: i64 = -516;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;

#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    pub dir: PathBuf,
    /// Don't show what the program wrote to its stdout and stderr.
    pub quiet: bool,
    /// Compare register checksums at every event.
    pub verify: bool,
    /// Also compare writable-memory checksums (traces recorded with them).
    pub verify_memory: bool,
    /// Start from the last checkpoint at or before this event.
    pub from: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Replayed {
    pub events: u64,
    pub exit_code: i32,
}

/// Where a replayed thread is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Somewhere in its code; resumed with `sig`.
    Stopped { sig: i32 },
    /// At the seccomp stop of a syscall already checked against an Enter.
    Entry,
    /// At a syscall exit: a boundary.
    Exit,
    /// At the seccomp stop of a syscall skipped with its result in place:
    /// a boundary too (it returns before any instruction runs).
    Skipped,
}

struct Replayer<'a> {
    dir: PathBuf,
    opts: &'a ReplayOptions,
    tracee: Tracee,
    threads: Threads,
    event: u64,
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    exit: Option<i32>,
    cpu: usize,
    /// Stops of other threads seen while waiting for one.
    queued: HashMap<pid_t, std::collections::VecDeque<Stop>>,
}

/// Check that this machine can replay a trace made with `header`.
pub fn check_machine(header: &TraceHeader) -> Result<(), Error> {
    let (vendor, flags) = cpu_info();
    if vendor != header.cpu_vendor || flags != header.cpu_flags {
        let ours: std::collections::HashSet<&str> = flags.split_whitespace().collect();
        let missing: Vec<&str> = header
            .cpu_flags
            .split_whitespace()
            .filter(|f| !ours.contains(f))
            .collect();
        return Err(Error::Unsupported(format!(
            "the trace was recorded on another CPU ({} vs {}; features missing here: {}): CPUID cannot be trapped on this machine, so replay could diverge",
            header.cpu_vendor,
            vendor,
            if missing.is_empty() { "none, but the feature sets differ".to_string() } else { missing.join(" ") }
        )));
    }
    Ok(())
}

/// Recorded tid -> (real tid, where it is).
type Threads = HashMap<i32, (pid_t, At)>;

fn start(image: &Path, cpu: usize) -> Result<(Tracee, Threads), Error> {
    let native = native_syscalls();
    let build = move |ip: u64| rewind_ckpt::seccomp::filter_all_but(&native, Some(ip));
    let mut plugins = rewind_ckpt::plugin::builtin();
    let opts = RestartOptions {
        seccomp: Some(&build),
        notsc: true,
        ..Default::default()
    };
    let restored = restore::restart(image, &mut plugins, &opts)?;
    let mut threads = HashMap::new();
    for t in &restored.state.threads {
        let real = restored.vids.to_real(t.vtid);
        rewind_ckpt::sys::pin_to_cpu(real, cpu).map_err(|e| {
            Error::Unsupported(format!(
                "cannot run on CPU {cpu}, where the trace was recorded: {e}"
            ))
        })?;
        threads.insert(t.vtid, (real, At::Stopped { sig: 0 }));
    }
    Ok((restored.tracee, threads))
}

/// Replay the trace in `opts.dir`, writing the program's output to `out`
/// and `err`.
pub fn replay(
    opts: &ReplayOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Replayed, Error> {
    let header = trace::read_header(&opts.dir)?;
    check_machine(&header)?;
    if opts.verify_memory && !header.verify_memory {
        return Err(Error::Usage(format!(
            "{} was recorded without memory checksums: record with --verify=memory to replay with it",
            opts.dir.display()
        )));
    }
    let end = trace::read_end(&opts.dir)?;
    // Where to start: the initial image, or the last checkpoint at or
    // before `from` (its events up to there are skipped).
    let (image, skip) = match opts.from {
        None => ("initial.rwd".to_string(), 0),
        Some(from) => {
            let mut scan = EventReader::open(&opts.dir)?;
            let mut best = ("initial.rwd".to_string(), 0u64);
            let mut n = 0u64;
            while let Some(ev) = scan.next_event()? {
                n += 1;
                if n > from {
                    break;
                }
                if let Event::Checkpoint { image } = ev {
                    best = (image, n);
                }
            }
            best
        }
    };
    let mut events = EventReader::open(&opts.dir)?;
    for _ in 0..skip {
        events.next_event()?;
    }
    let cpu = header.cpu as usize;
    let (tracee, threads) = start(&opts.dir.join(&image), cpu)?;
    let mut r = Replayer {
        dir: opts.dir.clone(),
        opts,
        tracee,
        threads,
        event: skip,
        out,
        err,
        exit: None,
        cpu,
        queued: HashMap::new(),
    };
    let result = r.run(&mut events);
    if r.exit.is_none() {
        r.kill();
    }
    result?;
    let exit_code = r.exit.unwrap_or(0);
    match end {
        None => Err(TraceError::Truncated {
            path: opts.dir.join("events"),
            what: format!(
                "trace: no end record after {} events (replayed that far)",
                r.event
            ),
        }
        .into()),
        Some(end) if end.exit_code != exit_code => Err(Error::Divergence {
            event: r.event,
            tid: r.tracee.pid,
            what: format!(
                "the program ended with status {exit_code}, the recording with {}",
                end.exit_code
            ),
        }),
        Some(_) => Ok(Replayed {
            events: r.event,
            exit_code,
        }),
    }
}

fn perr(op: &'static str, tid: pid_t) -> impl Fn(nix::errno::Errno) -> Error {
    move |e| rewind_ckpt::Error::ptrace(op, tid, e).into()
}

fn describe(nr: i64, args: &[u64; 6]) -> String {
    format!(
        "{}#{nr}({:#x}, {:#x}, {:#x}, {:#x}, {:#x}, {:#x})",
        syscalls::name(nr),
        args[0],
        args[1],
        args[2],
        args[3],
        args[4],
        args[5]
    )
}

fn describe_stop(stop: Stop, regs: Option<&user_regs_struct>) -> String {
    match (stop, regs) {
        (Stop::Event(libc::PTRACE_EVENT_SECCOMP, _), Some(r)) => {
            describe(r.orig_rax as i64, &regs_args(r))
        }
        (Stop::Signal(s), Some(r)) => format!("signal {s} at rip {:#x} (rsp {:#x})", r.rip, r.rsp),
        (Stop::Exited(c), _) => format!("exit with status {c}"),
        (Stop::Killed(s), _) => format!("death by signal {s}"),
        (other, _) => format!("{other:?}"),
    }
}

impl Replayer<'_> {
    /// The next stop of thread `real`. Waits for any thread (a tracer must
    /// reap every thread, or the leader's end is never reported) and keeps
    /// the others' stops for later. The program's end is returned to
    /// whoever waits: nothing of it will stop again.
    fn wait_for(&mut self, real: pid_t) -> Result<Stop, Error> {
        if let Some(stop) = self.queued.get_mut(&real).and_then(|q| q.pop_front()) {
            return Ok(stop);
        }
        let pid = self.tracee.pid;
        loop {
            let Some((tid, stop)) = ptrace::wait(-1, false).map_err(perr("waitpid", real))? else {
                continue;
            };
            if tid == pid && matches!(stop, Stop::Exited(_) | Stop::Killed(_)) {
                self.exit = Some(match stop {
                    Stop::Exited(c) => c,
                    Stop::Killed(s) => 128 + s,
                    _ => 0,
                });
                return Ok(stop);
            }
            if tid == real {
                return Ok(stop);
            }
            if !matches!(stop, Stop::Exited(_) | Stop::Killed(_)) {
                self.queued.entry(tid).or_default().push_back(stop);
            }
        }
    }

    fn kill(&mut self) {
        let pid = self.tracee.pid;
        let _ = rewind_ckpt::sys::process::kill(pid, libc::SIGKILL);
        // Every thread is reaped (the leader is reported last).
        loop {
            match ptrace::wait(-1, false) {
                Ok(Some((tid, Stop::Exited(_) | Stop::Killed(_)))) if tid == pid => break,
                Err(_) => break,
                _ => {}
            }
        }
        self.queued.clear();
    }

    fn diverge(&self, tid: i32, what: String) -> Error {
        Error::Divergence {
            event: self.event,
            tid,
            what,
        }
    }

    fn thread(&self, tid: i32) -> Result<(pid_t, At), Error> {
        self.threads.get(&tid).copied().ok_or_else(|| {
            self.diverge(
                tid,
                "the trace names a thread the replay does not have".into(),
            )
        })
    }

    fn set_at(&mut self, tid: i32, at: At) {
        if let Some(t) = self.threads.get_mut(&tid) {
            t.1 = at;
        }
    }

    fn run(&mut self, events: &mut EventReader) -> Result<(), Error> {
        while let Some(ev) = events.next_event()? {
            self.event += 1;
            if tracing::enabled!(tracing::Level::TRACE) {
                let mut shown = format!("{ev:?}");
                shown.truncate(300);
                tracing::trace!("event {}: {shown}", self.event);
            }
            self.step(ev)?;
            if self.exit.is_some() {
                break;
            }
        }
        if self.exit.is_none() {
            self.finish()?;
        }
        Ok(())
    }

    /// After the last event the program must end without another event.
    fn finish(&mut self) -> Result<(), Error> {
        let tids: Vec<(i32, pid_t, At)> =
            self.threads.iter().map(|(&v, &(r, a))| (v, r, a)).collect();
        for (_, real, at) in &tids {
            let sig = match at {
                At::Stopped { sig } => *sig,
                _ => 0,
            };
            let _ = ptrace::cont(*real, sig);
        }
        let pid = self.tracee.pid;
        loop {
            let Some((tid, stop)) = ptrace::wait(-1, false).map_err(perr("waitpid", pid))? else {
                continue;
            };
            match stop {
                Stop::Exited(c) if tid == pid => {
                    self.exit = Some(c);
                    return Ok(());
                }
                Stop::Killed(s) if tid == pid => {
                    self.exit = Some(128 + s);
                    return Ok(());
                }
                Stop::Event(libc::PTRACE_EVENT_SECCOMP, _) => {
                    let regs = ptrace::getregs(tid).ok();
                    return Err(self.diverge(
                        tid,
                        format!(
                            "the program went on past the end of the trace: {}",
                            describe_stop(stop, regs.as_ref())
                        ),
                    ));
                }
                Stop::Signal(s) => {
                    let _ = ptrace::cont(tid, s);
                }
                _ => {
                    let _ = ptrace::cont(tid, 0);
                }
            }
        }
    }

    /// Resume `real` until its next stop that can be an event. Signals the
    /// kernel sends on its own in replay (none should come: timers are
    /// emulated) are dropped.
    fn run_to_stop(&mut self, vtid: i32) -> Result<(Stop, Option<user_regs_struct>), Error> {
        let (real, at) = self.thread(vtid)?;
        let sig = match at {
            At::Stopped { sig } => sig,
            _ => 0,
        };
        ptrace::cont(real, sig).map_err(perr("PTRACE_CONT", real))?;
        self.set_at(vtid, At::Stopped { sig: 0 });
        loop {
            let stop = self.wait_for(real)?;
            match stop {
                Stop::Signal(s) => {
                    let info = ptrace::getsiginfo(real).map_err(perr("PTRACE_GETSIGINFO", real))?;
                    let regs = ptrace::getregs(real).ok();
                    let is_tsc = s == libc::SIGSEGV
                        && regs
                            .as_ref()
                            .and_then(|r| tsc_instruction(&self.tracee, r.rip))
                            .is_some();
                    if crate::recorder::is_sync_signal(s, &info) || is_tsc {
                        return Ok((stop, regs));
                    }
                    ptrace::cont(real, 0).map_err(perr("PTRACE_CONT", real))?;
                }
                Stop::Event(libc::PTRACE_EVENT_SECCOMP, _) => {
                    return Ok((stop, ptrace::getregs(real).ok()))
                }
                Stop::Exited(_) | Stop::Killed(_) => return Ok((stop, None)),
                _ => ptrace::cont(real, 0).map_err(perr("PTRACE_CONT", real))?,
            }
        }
    }

    /// Bring `vtid` to the seccomp stop of syscall `nr(args)`.
    fn run_to_entry(
        &mut self,
        vtid: i32,
        nr: i64,
        args: &[u64; 6],
        sum: u64,
    ) -> Result<user_regs_struct, Error> {
        let (real, at) = self.thread(vtid)?;
        let regs = if at == At::Entry {
            ptrace::getregs(real).map_err(perr("PTRACE_GETREGS", real))?
        } else {
            match self.run_to_stop(vtid)? {
                (Stop::Event(libc::PTRACE_EVENT_SECCOMP, _), Some(r)) => r,
                (stop, regs) => {
                    return Err(self.diverge(
                        vtid,
                        format!(
                            "expected {}, got {}",
                            describe(nr, args),
                            describe_stop(stop, regs.as_ref())
                        ),
                    ))
                }
            }
        };
        let got = regs_args(&regs);
        if regs.orig_rax as i64 != nr || &got != args {
            return Err(self.diverge(
                vtid,
                format!(
                    "expected {}, got {} (rip {:#x}, rsp {:#x}, rbp {:#x})",
                    describe(nr, args),
                    describe(regs.orig_rax as i64, &got),
                    regs.rip,
                    regs.rsp,
                    regs.rbp
                ),
            ));
        }
        if self.opts.verify && regs_checksum(&regs) != sum {
            return Err(self.diverge(
                vtid,
                format!("register checksum mismatch at {}", describe(nr, args)),
            ));
        }
        self.set_at(vtid, At::Entry);
        Ok(regs)
    }

    fn step(&mut self, ev: Event) -> Result<(), Error> {
        match ev {
            Event::Preempt { tid, regs } => self.run_to_regs(tid, &regs)?,
            // Only a starting point for `--from`.
            Event::Checkpoint { .. } => {}
            Event::Enter {
                tid,
                nr,
                args,
                regs,
            } => {
                self.run_to_entry(tid, nr, &args, regs)?;
            }
            Event::Syscall {
                tid,
                nr,
                args,
                ret,
                writes,
                regs,
                console,
                mem,
            } => {
                let entry = self.run_to_entry(tid, nr, &args, regs)?;
                if let (true, Some(want)) = (self.opts.verify_memory, mem) {
                    if crate::memory_checksum(&self.tracee) != want {
                        return Err(self.diverge(
                            tid,
                            format!("memory checksum mismatch at {}", describe(nr, &args)),
                        ));
                    }
                }
                if console != 0 {
                    self.echo(console, nr, &args, ret);
                }
                self.syscall(tid, entry, nr, &args, ret, &writes)?;
            }
            Event::Rdtsc {
                tid,
                value,
                aux,
                regs: sum,
            } => match self.run_to_stop(tid)? {
                (Stop::Signal(libc::SIGSEGV), Some(mut r)) => {
                    let Some((rdtscp, len)) = tsc_instruction(&self.tracee, r.rip) else {
                        return Err(self
                            .diverge(tid, format!("expected rdtsc, got SIGSEGV at {:#x}", r.rip)));
                    };
                    if rdtscp != aux.is_some() {
                        return Err(
                            self.diverge(tid, "expected rdtsc, got rdtscp (or the reverse)".into())
                        );
                    }
                    if self.opts.verify && regs_checksum(&r) != sum {
                        return Err(self.diverge(
                            tid,
                            format!("register checksum mismatch at rdtsc {:#x}", r.rip),
                        ));
                    }
                    let (real, _) = self.thread(tid)?;
                    r.rax = value & 0xffff_ffff;
                    r.rdx = value >> 32;
                    if let Some(a) = aux {
                        r.rcx = a as u64;
                    }
                    r.rip += len;
                    ptrace::setregs(real, &r).map_err(perr("PTRACE_SETREGS", real))?;
                    self.set_at(tid, At::Stopped { sig: 0 });
                }
                (stop, regs) => {
                    return Err(self.diverge(
                        tid,
                        format!("expected rdtsc, got {}", describe_stop(stop, regs.as_ref())),
                    ))
                }
            },
            Event::Signal {
                tid,
                sig,
                info,
                sync: true,
                regs: sum,
            } => match self.run_to_stop(tid)? {
                (Stop::Signal(s), Some(r)) if s == sig => {
                    if self.opts.verify && regs_checksum(&r) != sum {
                        return Err(self
                            .diverge(tid, format!("register checksum mismatch at signal {sig}")));
                    }
                    let _ = info;
                    self.set_at(tid, At::Stopped { sig });
                }
                (stop, regs) => {
                    return Err(self.diverge(
                        tid,
                        format!(
                            "expected signal {sig}, got {}",
                            describe_stop(stop, regs.as_ref())
                        ),
                    ))
                }
            },
            Event::Signal {
                tid,
                sig,
                info,
                sync: false,
                ..
            } => self.async_signal(tid, sig, &info)?,
            Event::Exec { tid, image } => {
                let (real, at) = self.thread(tid)?;
                if at != At::Entry {
                    match self.run_to_stop(tid)? {
                        (Stop::Event(libc::PTRACE_EVENT_SECCOMP, _), Some(r))
                            if matches!(
                                r.orig_rax as i64,
                                libc::SYS_execve | libc::SYS_execveat
                            ) => {}
                        (stop, regs) => {
                            return Err(self.diverge(
                                tid,
                                format!(
                                    "expected execve, got {}",
                                    describe_stop(stop, regs.as_ref())
                                ),
                            ))
                        }
                    }
                }
                let _ = real;
                self.kill();
                let (tracee, threads) = start(&self.dir.join(&image), self.cpu)?;
                self.tracee = tracee;
                self.threads = threads;
            }
        }
        Ok(())
    }

    /// Run `vtid` until its registers are `want` again: the point where it
    /// was preempted while recording (DESIGN §5: no counters, so the whole
    /// register file is the position). A software breakpoint at the recorded
    /// rip; at each hit the registers are compared, else stepped over.
    fn run_to_regs(&mut self, vtid: i32, want: &[u64]) -> Result<(), Error> {
        let want = rewind_ckpt::capture::regs_from_slice(want).ok_or_else(|| {
            self.diverge(vtid, "malformed preemption registers in the trace".into())
        })?;
        let (real, at) = self.thread(vtid)?;
        let same = |r: &user_regs_struct| {
            // RF and TF are the debugger's, not the program's; orig_rax is
            // the kernel's bookkeeping (set if the interrupt came right
            // after a native syscall, never at a breakpoint).
            let flags = !((1u64 << 16) | (1 << 8));
            let mut a = *r;
            let mut b = want;
            a.eflags &= flags;
            b.eflags &= flags;
            a.orig_rax = 0;
            b.orig_rax = 0;
            rewind_ckpt::capture::regs_to_vec(&a) == rewind_ckpt::capture::regs_to_vec(&b)
        };
        let now = ptrace::getregs(real).map_err(perr("PTRACE_GETREGS", real))?;
        if same(&now) {
            return Ok(());
        }
        let addr = want.rip;
        let mut orig = [0u8; 1];
        self.tracee.read_mem(addr, &mut orig)?;
        let mut sig = match at {
            At::Stopped { sig } => sig,
            _ => 0,
        };
        for _ in 0..(1u64 << 22) {
            self.tracee.write_mem(addr, &[0xcc])?;
            ptrace::cont(real, sig).map_err(perr("PTRACE_CONT", real))?;
            sig = 0;
            let stop = self.wait_for(real)?;
            self.tracee.write_mem(addr, &orig)?;
            let mut r = match stop {
                Stop::Signal(libc::SIGTRAP) => {
                    ptrace::getregs(real).map_err(perr("PTRACE_GETREGS", real))?
                }
                other => {
                    let regs = ptrace::getregs(real).ok();
                    return Err(self.diverge(
                        vtid,
                        format!(
                            "expected to reach the preemption point at rip {addr:#x}, got {}",
                            describe_stop(other, regs.as_ref())
                        ),
                    ));
                }
            };
            if r.rip != addr + 1 {
                return Err(self.diverge(vtid, format!("unexpected SIGTRAP at rip {:#x}", r.rip)));
            }
            r.rip = addr;
            ptrace::setregs(real, &r).map_err(perr("PTRACE_SETREGS", real))?;
            if same(&r) {
                self.set_at(vtid, At::Stopped { sig: 0 });
                return Ok(());
            }
            // Not this time through: execute the real instruction, re-arm.
            ptrace::singlestep(real, 0).map_err(perr("PTRACE_SINGLESTEP", real))?;
            match self.wait_for(real)? {
                Stop::Signal(libc::SIGTRAP) => {}
                other => {
                    return Err(self.diverge(
                        vtid,
                        format!("stepping at {addr:#x}: {}", describe_stop(other, None)),
                    ))
                }
            }
        }
        Err(self.diverge(vtid, format!("the preemption point at rip {addr:#x} was never reached with the recorded registers")))
    }

    /// Deliver a recorded asynchronous signal at `tid`'s syscall exit.
    fn async_signal(&mut self, tid: i32, sig: i32, info: &[u8]) -> Result<(), Error> {
        let (real, at) = self.thread(tid)?;
        if at != At::Exit && at != At::Skipped {
            return Err(self.diverge(
                tid,
                format!("signal {sig} was delivered after a syscall, but the thread is elsewhere"),
            ));
        }
        rewind_ckpt::sys::process::tgkill(self.tracee.pid, real, sig)
            .map_err(|e| rewind_ckpt::Error::Tracee(format!("tgkill: {e}")))?;
        ptrace::cont(real, 0).map_err(perr("PTRACE_CONT", real))?;
        loop {
            let stop = self.wait_for(real)?;
            match stop {
                Stop::Signal(s) if s == sig => break,
                Stop::Signal(_) => ptrace::cont(real, 0).map_err(perr("PTRACE_CONT", real))?,
                other => {
                    return Err(self.diverge(
                        tid,
                        format!(
                            "expected signal {sig} to arrive, got {}",
                            describe_stop(other, None)
                        ),
                    ))
                }
            }
        }
        let mut raw = [0u8; ptrace::SIGINFO_SIZE];
        let n = info.len().min(raw.len());
        raw[..n].copy_from_slice(&info[..n]);
        ptrace::setsiginfo(real, &raw).map_err(perr("PTRACE_SETSIGINFO", real))?;
        self.set_at(tid, At::Stopped { sig });
        Ok(())
    }

    /// Show what the program wrote to its stdout or stderr.
    fn echo(&mut self, console: u8, nr: i64, args: &[u64; 6], ret: i64) {
        if self.opts.quiet || ret <= 0 {
            return;
        }
        let mut data = Vec::new();
        match nr {
            libc::SYS_write | libc::SYS_pwrite64 => {
                let mut buf = vec![0u8; ret.min(64 << 20) as usize];
                if self.tracee.read_mem(args[1], &mut buf).is_ok() {
                    data = buf;
                }
            }
            libc::SYS_writev | libc::SYS_pwritev | libc::SYS_pwritev2 => {
                let mut left = ret as u64;
                for i in 0..args[2].min(1024) {
                    if left == 0 {
                        break;
                    }
                    let (Ok(base), Ok(len)) = (
                        self.tracee.read_u64(args[1] + 16 * i),
                        self.tracee.read_u64(args[1] + 16 * i + 8),
                    ) else {
                        break;
                    };
                    let take = len.min(left);
                    let mut buf = vec![0u8; take as usize];
                    if self.tracee.read_mem(base, &mut buf).is_err() {
                        break;
                    }
                    data.extend_from_slice(&buf);
                    left -= take;
                }
            }
            _ => return,
        }
        let sink: &mut dyn Write = if console == 1 {
            &mut *self.out
        } else {
            &mut *self.err
        };
        let _ = sink.write_all(&data);
        let _ = sink.flush();
    }

    fn syscall(
        &mut self,
        tid: i32,
        entry: user_regs_struct,
        nr: i64,
        args: &[u64; 6],
        ret: i64,
        writes: &[(u64, Vec<u8>)],
    ) -> Result<(), Error> {
        let (real, _) = self.thread(tid)?;
        let mut disp = call_disposition(&self.tracee, nr, args);
        // A failed exec is only an error code.
        if matches!(nr, libc::SYS_execve | libc::SYS_execveat) {
            disp = Disposition::Emulate;
        }
        if nr == libc::SYS_exit {
            // The thread ends, clearing and waking its tid futex; as when
            // recording, nothing runs until it is gone.
            ptrace::cont(real, 0).map_err(perr("PTRACE_CONT", real))?;
            self.threads.remove(&tid);
            if let Some(q) = self.queued.get_mut(&real) {
                q.clear();
            }
            rewind_ckpt::tracee::wait_thread_gone(self.tracee.pid, real);
            return Ok(());
        }
        if nr == libc::SYS_exit_group {
            ptrace::cont(real, 0).map_err(perr("PTRACE_CONT", real))?;
            let pid = self.tracee.pid;
            loop {
                let Some((t, stop)) = ptrace::wait(-1, false).map_err(perr("waitpid", real))?
                else {
                    continue;
                };
                match stop {
                    Stop::Exited(c) if t == pid => {
                        self.exit = Some(c);
                        return Ok(());
                    }
                    Stop::Killed(s) if t == pid => {
                        self.exit = Some(128 + s);
                        return Ok(());
                    }
                    Stop::Exited(_) | Stop::Killed(_) => {}
                    Stop::Signal(s) => {
                        let _ = ptrace::cont(t, s);
                    }
                    _ => {
                        let _ = ptrace::cont(t, 0);
                    }
                }
            }
        }
        let mut regs = entry;
        let interrupted = (ERESTART_RESTARTBLOCK..=ERESTARTSYS).contains(&ret);
        if disp != Disposition::Shape && !interrupted {
            // One stop: skipped at its seccomp stop, the syscall returns
            // what rax holds.
            regs.orig_rax = u64::MAX;
            regs.rax = ret as u64;
            ptrace::setregs(real, &regs).map_err(perr("PTRACE_SETREGS", real))?;
            for (addr, data) in writes {
                self.tracee.write_mem(*addr, data)?;
            }
            self.set_at(tid, At::Skipped);
            return Ok(());
        }
        match disp {
            Disposition::Emulate | Disposition::Native => {
                regs.orig_rax = u64::MAX;
            }
            Disposition::Shape => {
                if nr == libc::SYS_mmap && ret >= 0 {
                    let fixed = if args[3] & libc::MAP_FIXED as u64 != 0 {
                        libc::MAP_FIXED as u64
                    } else {
                        MAP_FIXED_NOREPLACE
                    };
                    regs.rdi = ret as u64;
                    if args[3] & libc::MAP_ANONYMOUS as u64 == 0 {
                        // The file's bytes come from the trace.
                        regs.r10 = libc::MAP_PRIVATE as u64 | libc::MAP_ANONYMOUS as u64 | fixed;
                        regs.r8 = u64::MAX;
                        regs.r9 = 0;
                    } else {
                        regs.r10 = (args[3] & !(libc::MAP_FIXED as u64)) | fixed;
                    }
                } else if nr == libc::SYS_mmap {
                    regs.orig_rax = u64::MAX;
                } else if nr == libc::SYS_mremap && ret >= 0 && ret as u64 != args[0] {
                    regs.r10 = args[3] | (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
                    regs.r8 = ret as u64;
                }
            }
        }
        ptrace::setregs(real, &regs).map_err(perr("PTRACE_SETREGS", real))?;
        ptrace::syscall(real, 0).map_err(perr("PTRACE_SYSCALL", real))?;
        loop {
            let stop = self.wait_for(real)?;
            match stop {
                Stop::Syscall => break,
                Stop::Event(libc::PTRACE_EVENT_CLONE, _) => {
                    let new = ptrace::geteventmsg(real).map_err(perr("PTRACE_GETEVENTMSG", real))?
                        as pid_t;
                    loop {
                        match self.wait_for(new)? {
                            Stop::Event(PTRACE_EVENT_STOP, _)
                            | Stop::Exited(_)
                            | Stop::Killed(_) => break,
                            _ => {}
                        }
                    }
                    self.tracee
                        .threads
                        .insert(new, rewind_ckpt::tracee::Thread::new(new));
                    self.threads
                        .insert(ret as i32, (new, At::Stopped { sig: 0 }));
                    ptrace::syscall(real, 0).map_err(perr("PTRACE_SYSCALL", real))?;
                }
                Stop::Signal(_) => {
                    ptrace::syscall(real, 0).map_err(perr("PTRACE_SYSCALL", real))?
                }
                Stop::Exited(_) | Stop::Killed(_) => {
                    return Err(
                        self.diverge(tid, format!("the thread died in {}", describe(nr, args)))
                    )
                }
                _ => ptrace::syscall(real, 0).map_err(perr("PTRACE_SYSCALL", real))?,
            }
        }
        let mut after = ptrace::getregs(real).map_err(perr("PTRACE_GETREGS", real))?;
        let got = after.rax as i64;
        let id_result = matches!(
            nr,
            libc::SYS_clone | libc::SYS_clone3 | libc::SYS_set_tid_address
        );
        if disp == Disposition::Shape && regs.orig_rax != u64::MAX && !id_result && got != ret {
            return Err(self.diverge(
                tid,
                format!(
                    "{} returned {got:#x} in replay, {ret:#x} when recorded",
                    describe(nr, args)
                ),
            ));
        }
        after.rax = ret as u64;
        // The kernel keeps argument registers; the program may rely on
        // them: give back the ones we rewrote.
        after.rdi = entry.rdi;
        after.rsi = entry.rsi;
        after.rdx = entry.rdx;
        after.r10 = entry.r10;
        after.r8 = entry.r8;
        after.r9 = entry.r9;
        if (ERESTART_RESTARTBLOCK..=ERESTARTSYS).contains(&ret) {
            // Let the kernel's restart logic see the interrupted syscall.
            after.orig_rax = nr as u64;
        }
        ptrace::setregs(real, &after).map_err(perr("PTRACE_SETREGS", real))?;
        for (addr, data) in writes {
            self.tracee.write_mem(*addr, data)?;
        }
        self.set_at(tid, At::Exit);
        Ok(())
    }
}
