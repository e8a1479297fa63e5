//! A live recording driven by a debugger (`rewind debug -- PROG`): the
//! program runs under the recorder only as far as the debugger's forward
//! commands need, one event at a time.
//!
//! The debugger replays what is recorded (its in-memory snapshots, its
//! breakpoints and single steps all work on replays); when its replay has
//! used every event, it asks for more ([`Live::extend`]). The program then
//! runs from where the last event left it until it logs events, and is held
//! there; or until its current thread is about to make a syscall, which is
//! not run yet ([`Extension::AtSyscall`]): syscalls are where a program
//! touches the world (its output, its input), so that happens only when the
//! debugger's replay has reached the syscall too and asks for it
//! ([`Live::commit`]). The program's terminal I/O thus happens live, once,
//! when the debugger's view passes it.
//!
//! The recorder runs on a thread of its own: it is the program's tracer, and
//! waiting for its stops never takes the stops of the debugger's replays.

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::thread::JoinHandle;

use libc::pid_t;
use rewind_ckpt::sys::ptrace;

use super::{perr, regs_args, sigchld_fd, RecordOptions, Recorder, State};
use crate::trace::format::Event;
use crate::trace::{self, EventList};
use crate::{regs_checksum, Error};

/// What the program did when asked for more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extension {
    /// It logged events (appended to the shared list); it is held where
    /// the last one left it.
    Events,
    /// Its current thread is at the entry of this syscall (an
    /// `Event::Syscall` whose result is not known: `ret` 0, no writes),
    /// which has not run: [`Live::commit`] runs it.
    AtSyscall(Event),
    /// It ended, with this status as a shell sees it (128 + signal).
    Ended(i32),
    /// Ctrl-C stopped it inside a syscall, where nothing was logged; it
    /// goes on from there when asked again.
    Interrupted,
}

/// The recorder's side of a live recording.
pub(super) struct LiveState {
    events: EventList,
    /// Events logged since the debugger last asked for more.
    new_events: u64,
    /// Threads kept stopped once an event was logged, to resume (with
    /// this signal) when the debugger asks for more.
    held: Vec<(pid_t, i32)>,
    /// The current thread, stopped at the seccomp stop of a syscall that
    /// has not run.
    parked: Option<pid_t>,
    /// Ctrl-C stopped the program with nothing logged.
    interrupted: bool,
    /// The debugger's breakpoints: the current thread stops at its first
    /// arrival at one (an `Event::Mark`), so that a forward command does
    /// not wait for the program's next event to show it.
    breakpoints: BTreeSet<u64>,
    /// Breakpoints written while the current thread runs (what was there).
    armed: Vec<(u64, u8)>,
    /// Those last armed, until the next arming.
    was_armed: Vec<u64>,
    /// The thread single-stepped off a breakpoint it was at (from this
    /// rip) before the others are armed.
    skipping: Option<(pid_t, u64)>,
}

impl LiveState {
    pub(super) fn pushed(&mut self, event: Event) {
        self.events.push(event);
        self.new_events += 1;
    }

    /// Whether resuming `tid` waits for the debugger (an event was logged,
    /// or Ctrl-C came).
    pub(super) fn hold(&mut self, tid: pid_t, sig: i32) -> bool {
        if self.new_events > 0 || self.interrupted {
            self.held.push((tid, sig));
            return true;
        }
        false
    }

    /// The debugger has something to look at.
    pub(super) fn done(&self) -> bool {
        self.new_events > 0 || self.parked.is_some() || self.interrupted
    }

    /// Take the breakpoints out of the program's code.
    pub(super) fn disarm(&mut self, tracee: &rewind_ckpt::tracee::Tracee) {
        if self.armed.is_empty() {
            return;
        }
        self.was_armed.clear();
        for (addr, orig) in self.armed.drain(..).rev() {
            // The program may have unmapped it meanwhile.
            let _ = tracee.write_mem(addr, &[orig]);
            self.was_armed.push(addr);
        }
    }

    /// `tid` stopped otherwise than for the step off a breakpoint.
    pub(super) fn forget_skip(&mut self, tid: pid_t) {
        if self.skipping.is_some_and(|(t, _)| t == tid) {
            self.skipping = None;
        }
    }

    fn arm(&mut self, tracee: &rewind_ckpt::tracee::Tracee) {
        for &addr in &self.breakpoints {
            let mut orig = [0u8; 1];
            // An address not mapped (yet) cannot be hit.
            if tracee.read_mem(addr, &mut orig).is_ok() && tracee.write_mem(addr, &[0xcc]).is_ok() {
                self.armed.push((addr, orig[0]));
            }
        }
    }
}

const SI_KERNEL: i32 = 0x80;
const TRAP_BRKPT: i32 = 1;
const TRAP_TRACE: i32 = 2;
/// TF in rflags.
const TRAP_FLAG: u64 = 1 << 8;
const SI_TKILL: i32 = -6;
const ERESTARTSYS: i64 = -512;
const ERESTART_RESTARTBLOCK: i64 = -516;

/// A SIGINT from the terminal (Ctrl-C) or from rewind itself (its Ctrl-C
/// handler passes the signal on to the program's running thread).
fn is_interrupt(info: &[u8; ptrace::SIGINFO_SIZE]) -> bool {
    let code = i32::from_le_bytes([info[8], info[9], info[10], info[11]]);
    let sender = i32::from_le_bytes([info[16], info[17], info[18], info[19]]);
    code == SI_KERNEL || (code == SI_TKILL && sender == std::process::id() as i32)
}

/// Whether SIGINT is pending for thread `tid` of process `pid`.
fn sigint_pending(pid: pid_t, tid: pid_t) -> bool {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
    let bit = 1u64 << (libc::SIGINT - 1);
    status
        .lines()
        .filter(|l| l.starts_with("SigPnd:") || l.starts_with("ShdPnd:"))
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .any(|mask| mask & bit != 0)
}

impl Recorder {
    /// In a live recording, the seccomp stop of the current thread waits
    /// for the debugger: true when `tid` is parked there.
    pub(super) fn park(&mut self, tid: pid_t) -> bool {
        let current = self.current;
        match self.live.as_mut() {
            Some(live) if current == Some(tid) => {
                live.parked = Some(tid);
                true
            }
            _ => false,
        }
    }

    /// Let the current thread `tid` run its code (with `sig`) with the
    /// debugger's breakpoints armed; one it is at is stepped over first (it
    /// was reported, or is where an event left it), as replay does.
    pub(super) fn live_cont(&mut self, tid: pid_t, sig: i32) -> Result<(), Error> {
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        let rip = if live.breakpoints.is_empty() {
            None
        } else {
            ptrace::getregs(tid).ok().map(|r| r.rip)
        };
        let resumed = match rip {
            Some(rip) if live.breakpoints.contains(&rip) => {
                live.skipping = Some((tid, rip));
                ptrace::singlestep(tid, sig)
            }
            _ => {
                live.arm(&self.tracee);
                ptrace::cont(tid, sig)
            }
        };
        match resumed {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(perr("PTRACE_CONT", tid)(e)),
        }
    }

    /// A SIGTRAP of `tid` that is the debugger's: the step off a breakpoint
    /// (then the others are armed, unless it landed on one), or an arrival
    /// at one, logged as an `Event::Mark` where the thread is held. True
    /// when it was.
    pub(super) fn live_trap(&mut self, tid: pid_t) -> Result<bool, Error> {
        let Some(live) = self.live.as_mut() else {
            return Ok(false);
        };
        let info = ptrace::getsiginfo(tid).map_err(perr("PTRACE_GETSIGINFO", tid))?;
        let code = i32::from_le_bytes([info[8], info[9], info[10], info[11]]);
        let mut regs = ptrace::getregs(tid).map_err(perr("PTRACE_GETREGS", tid))?;
        match live.skipping {
            Some((t, from)) if t == tid => {
                if code != TRAP_TRACE && code != TRAP_BRKPT {
                    live.skipping = None;
                    return Ok(false);
                }
                if code == TRAP_BRKPT && regs.rip == from {
                    // Stepping out of a syscall stop first reports the
                    // syscall's end, nothing executed: once more.
                    ptrace::singlestep(tid, 0).map_err(perr("PTRACE_SINGLESTEP", tid))?;
                    return Ok(true);
                }
                live.skipping = None;
                let landed = live.breakpoints.contains(&regs.rip);
                if self.is_syscall_insn(from) && regs.r11 & TRAP_FLAG != 0 {
                    // `syscall` saved our trap flag in r11, which the
                    // program would not see without stepping (nor replay).
                    regs.r11 &= !TRAP_FLAG;
                    ptrace::setregs(tid, &regs).map_err(perr("PTRACE_SETREGS", tid))?;
                }
                if landed {
                    self.mark(tid, &regs)?;
                } else {
                    self.live_cont(tid, 0)?;
                }
                Ok(true)
            }
            _ => {
                let addr = regs.rip.wrapping_sub(1);
                if code != SI_KERNEL || !live.was_armed.contains(&addr) {
                    return Ok(false);
                }
                regs.rip = addr;
                ptrace::setregs(tid, &regs).map_err(perr("PTRACE_SETREGS", tid))?;
                self.mark(tid, &regs)?;
                Ok(true)
            }
        }
    }

    fn is_syscall_insn(&self, rip: u64) -> bool {
        let mut code = [0u8; 2];
        self.tracee.read_mem(rip, &mut code).is_ok() && code == [0x0f, 0x05]
    }

    /// `tid` arrived at a breakpoint: logged, and held there.
    fn mark(&mut self, tid: pid_t, regs: &libc::user_regs_struct) -> Result<(), Error> {
        self.push(Event::Mark {
            tid,
            addr: regs.rip,
            regs: rewind_ckpt::capture::regs_to_vec(regs),
        })?;
        if let Some(t) = self.threads.get_mut(&tid) {
            t.at_boundary = false;
        }
        self.go(tid, 0)
    }

    /// A SIGINT that stopped `tid` in a live recording, from the terminal
    /// or sent by rewind's Ctrl-C handler: the debugger's interrupt, not a
    /// signal for the program (gdb's `handle SIGINT nopass`). It is
    /// dropped and the program goes on, unwatched, to its next event (where
    /// it waits for the debugger); the debugger's command stops. True when
    /// it was taken so.
    pub(super) fn live_interrupt(&mut self, tid: pid_t) -> Result<bool, Error> {
        if self.live.is_none() {
            return Ok(false);
        }
        let info = ptrace::getsiginfo(tid).map_err(perr("PTRACE_GETSIGINFO", tid))?;
        if !is_interrupt(&info) {
            return Ok(false);
        }
        if let Some(live) = self.live.as_mut() {
            live.interrupted = true;
        }
        // On, with the breakpoints (an arrival waits for the debugger).
        self.live_cont(tid, 0)?;
        Ok(true)
    }

    /// A syscall that the debugger's interrupt (a SIGINT pending for the
    /// program, see `live_interrupt`) made return to be restarted: it is
    /// made again from its `syscall` instruction, unlogged, as if the
    /// signal had never come (the kernel's restart needs the signal, which
    /// replay would not have). True when `tid`'s syscall exit was that.
    pub(super) fn live_restart(&mut self, tid: pid_t) -> Result<bool, Error> {
        if self.live.is_none()
            || !matches!(
                self.threads.get(&tid).map(|t| &t.state),
                Some(State::InSyscall { .. })
            )
        {
            return Ok(false);
        }
        let mut regs = ptrace::getregs(tid).map_err(perr("PTRACE_GETREGS", tid))?;
        if !(ERESTART_RESTARTBLOCK..=ERESTARTSYS).contains(&(regs.rax as i64))
            || !sigint_pending(self.tracee.pid, tid)
        {
            return Ok(false);
        }
        regs.rip -= 2;
        regs.rax = regs.orig_rax;
        regs.orig_rax = u64::MAX;
        ptrace::setregs(tid, &regs).map_err(perr("PTRACE_SETREGS", tid))?;
        // Still in that syscall for the recorder: its next entry is the
        // same call again.
        match ptrace::cont(tid, 0) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(true),
            Err(e) => Err(perr("PTRACE_CONT", tid)(e)),
        }
    }

    /// Give the debugger more: resume what the last extension held, run
    /// until something is logged, the current thread reaches a syscall,
    /// Ctrl-C, or the end.
    fn extend(
        &mut self,
        breakpoints: BTreeSet<u64>,
        sigfd: &nix::sys::signalfd::SignalFd,
    ) -> Result<Extension, Error> {
        let Some(live) = self.live.as_mut() else {
            return Err(Error::Unsupported("not a live recording".into()));
        };
        if let Some(tid) = live.parked {
            return at_syscall(tid);
        }
        live.new_events = 0;
        live.interrupted = false;
        live.breakpoints = breakpoints;
        for (tid, sig) in std::mem::take(&mut live.held) {
            self.live_cont(tid, sig)?;
        }
        self.run_live(sigfd)
    }

    /// Run the syscall the current thread is parked at, and on.
    fn commit(
        &mut self,
        breakpoints: BTreeSet<u64>,
        sigfd: &nix::sys::signalfd::SignalFd,
    ) -> Result<Extension, Error> {
        let Some(live) = self.live.as_mut() else {
            return Err(Error::Unsupported("not a live recording".into()));
        };
        let Some(tid) = live.parked.take() else {
            return self.extend(breakpoints, sigfd);
        };
        live.breakpoints = breakpoints;
        live.new_events = 0;
        live.interrupted = false;
        self.last_progress = std::time::Instant::now();
        self.syscall_entry(tid)?;
        self.run_live(sigfd)
    }

    fn run_live(&mut self, sigfd: &nix::sys::signalfd::SignalFd) -> Result<Extension, Error> {
        let pid = self.tracee.pid;
        self.last_progress = std::time::Instant::now();
        loop {
            if let Some(live) = self.live.as_ref() {
                if live.new_events > 0 {
                    return Ok(Extension::Events);
                }
                if let Some(tid) = live.parked {
                    return at_syscall(tid);
                }
                if live.interrupted {
                    return Ok(Extension::Interrupted);
                }
            }
            // Ctrl-C goes to a thread of the program (the debugger's
            // handler sends it there).
            rewind_ckpt::sys::set_running(pid, self.current.unwrap_or(pid));
            let going = self.turn(sigfd);
            rewind_ckpt::sys::set_running(0, 0);
            if !going? {
                return Ok(Extension::Ended(self.exit_code.unwrap_or(0)));
            }
        }
    }
}

/// The syscall `tid` is stopped at the entry of, as an event without its
/// result.
fn at_syscall(tid: pid_t) -> Result<Extension, Error> {
    let regs = ptrace::getregs(tid).map_err(perr("PTRACE_GETREGS", tid))?;
    Ok(Extension::AtSyscall(Event::Syscall {
        tid,
        nr: regs.orig_rax as i64,
        args: regs_args(&regs),
        ret: 0,
        writes: Vec::new(),
        regs: regs_checksum(&regs),
        mem: None,
        console: 0,
    }))
}

enum Request {
    /// With the debugger's breakpoints.
    Extend(BTreeSet<u64>),
    Commit(BTreeSet<u64>),
    /// Let a program about to exit exit (unless `kill`), kill any other,
    /// and write what is pending.
    Finish {
        kill: bool,
    },
}

/// A live recording, on its recorder's thread.
pub struct Live {
    requests: Option<mpsc::Sender<Request>>,
    replies: mpsc::Receiver<Result<Extension, Error>>,
    thread: Option<JoinHandle<()>>,
    /// The program's pid.
    pub pid: pid_t,
    ended: Option<i32>,
}

impl Live {
    /// Start `argv` under a live recording into `opts.dir` (the initial
    /// image is there when this returns); its events go to `events` as
    /// they are logged.
    pub fn start(argv: &[String], opts: &RecordOptions, events: EventList) -> Result<Live, Error> {
        // SIGCHLD must reach the recorder's signalfd, whichever thread the
        // kernel picks: blocked everywhere (the new thread inherits it).
        let mut mask = nix::sys::signal::SigSet::empty();
        mask.add(nix::sys::signal::Signal::SIGCHLD);
        mask.thread_block()
            .map_err(|e| rewind_ckpt::Error::Tracee(format!("sigprocmask: {e}")))?;
        let (req_tx, req_rx) = mpsc::channel::<Request>();
        let (rep_tx, rep_rx) = mpsc::channel::<Result<Extension, Error>>();
        // The debugger steps and stops the program anywhere: no syscall
        // buffer in live recordings.
        let opts = RecordOptions {
            syscallbuf: false,
            ..opts.clone()
        };
        let argv = argv.to_vec();
        let (pid_tx, pid_rx) = mpsc::channel::<Result<pid_t, Error>>();
        let thread = std::thread::Builder::new()
            .name("rewind-live".into())
            .spawn(move || serve(&argv, &opts, events, pid_tx, req_rx, rep_tx))
            .map_err(|e| rewind_ckpt::Error::Tracee(format!("cannot start a thread: {e}")))?;
        let pid = match pid_rx.recv() {
            Ok(Ok(pid)) => pid,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(Error::Unsupported("the live recorder stopped".into()));
            }
        };
        Ok(Live {
            requests: Some(req_tx),
            replies: rep_rx,
            thread: Some(thread),
            pid,
            ended: None,
        })
    }

    fn ask(&mut self, r: Request) -> Result<Extension, Error> {
        if let Some(code) = self.ended {
            return Ok(Extension::Ended(code));
        }
        let gone = || Error::Unsupported("the live recorder stopped".into());
        self.requests
            .as_ref()
            .ok_or_else(gone)?
            .send(r)
            .map_err(|_| gone())?;
        let reply = self.replies.recv().map_err(|_| gone())?;
        if let Ok(Extension::Ended(code)) = reply {
            self.ended = Some(code);
        }
        reply
    }

    /// Run the program on until it logs events (an arrival at one of
    /// `breakpoints` is one: an `Event::Mark`), reaches a syscall, is
    /// interrupted or ends.
    pub fn extend(&mut self, breakpoints: &BTreeSet<u64>) -> Result<Extension, Error> {
        self.ask(Request::Extend(breakpoints.clone()))
    }

    /// Run the syscall [`Extension::AtSyscall`] said, and on as `extend`.
    pub fn commit(&mut self, breakpoints: &BTreeSet<u64>) -> Result<Extension, Error> {
        self.ask(Request::Commit(breakpoints.clone()))
    }

    /// The program's exit status once it ended.
    pub fn ended(&self) -> Option<i32> {
        self.ended
    }

    /// End the recording: a program about to exit (its current thread
    /// at its exit) exits, unless `kill`; any other is killed. The trace's
    /// events are written, and its end record when the program ended. The
    /// program's status if it ended.
    pub fn finish(&mut self, kill: bool) -> Option<i32> {
        if self.ended.is_none() {
            if let Some(tx) = self.requests.as_ref() {
                if tx.send(Request::Finish { kill }).is_ok() {
                    if let Ok(Ok(Extension::Ended(code))) = self.replies.recv() {
                        self.ended = Some(code);
                    }
                }
            }
        }
        self.requests = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.ended
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.finish(true);
    }
}

/// The recorder's thread: start the program, then answer requests.
fn serve(
    argv: &[String],
    opts: &RecordOptions,
    events: EventList,
    pid_tx: mpsc::Sender<Result<pid_t, Error>>,
    requests: mpsc::Receiver<Request>,
    replies: mpsc::Sender<Result<Extension, Error>>,
) {
    let started = sigchld_fd().and_then(|fd| {
        let mut rec = Recorder::launch(argv, opts)?;
        rec.live = Some(LiveState {
            events,
            new_events: 0,
            held: Vec::new(),
            parked: None,
            interrupted: false,
            breakpoints: BTreeSet::new(),
            armed: Vec::new(),
            was_armed: Vec::new(),
            skipping: None,
        });
        Ok((rec, fd))
    });
    let (mut rec, sigfd) = match started {
        Ok(r) => r,
        Err(e) => {
            let _ = pid_tx.send(Err(e));
            return;
        }
    };
    if pid_tx.send(Ok(rec.tracee.pid)).is_err() {
        rec.kill_program();
        return;
    }
    let mut ended = false;
    while let Ok(r) = requests.recv() {
        let reply = match r {
            Request::Extend(bps) => rec.extend(bps, &sigfd),
            Request::Commit(bps) => rec.commit(bps, &sigfd),
            Request::Finish { kill } => {
                let _ = replies.send(rec.finish_live(kill, &sigfd));
                return;
            }
        };
        let failed = reply.is_err();
        ended = matches!(reply, Ok(Extension::Ended(_)));
        if replies.send(reply).is_err() || failed {
            break;
        }
        if ended {
            break;
        }
    }
    if !ended {
        rec.kill_program();
    }
    let _ = rec.finish_log(ended);
}

impl Recorder {
    /// The debugger is done: a program parked at its exit goes there (the
    /// trace then ends as a recording does), any other is killed.
    fn finish_live(
        &mut self,
        kill: bool,
        sigfd: &nix::sys::signalfd::SignalFd,
    ) -> Result<Extension, Error> {
        let exiting = self
            .live
            .as_ref()
            .and_then(|l| l.parked)
            .and_then(|tid| ptrace::getregs(tid).ok().map(|r| (tid, r.orig_rax as i64)))
            .is_some_and(|(_, nr)| {
                nr == libc::SYS_exit_group || (nr == libc::SYS_exit && self.threads.len() <= 1)
            });
        let ended = if exiting && !kill {
            loop {
                match self.commit(BTreeSet::new(), sigfd) {
                    Ok(Extension::Ended(code)) => break Some(code),
                    Ok(_) => {}
                    Err(_) => break None,
                }
            }
        } else {
            None
        };
        if ended.is_none() {
            // History goes as far as the syscall the program was about to
            // make: replay can run there again.
            if let Some(tid) = self.live.as_ref().and_then(|l| l.parked) {
                if let Ok(regs) = ptrace::getregs(tid) {
                    self.push(Event::Enter {
                        tid,
                        nr: regs.orig_rax as i64,
                        args: regs_args(&regs),
                        regs: regs_checksum(&regs),
                    })?;
                }
            }
            self.kill_program();
        }
        let _ = self.finish_log(ended.is_some());
        Ok(Extension::Ended(ended.unwrap_or(128 + libc::SIGKILL)))
    }

    /// Write the events still pending; with `ended`, the end record.
    fn finish_log(&mut self, ended: bool) -> Result<(), Error> {
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        let (events, chunks, _) = log.sync()?;
        if ended {
            trace::write_end(
                &self.dir,
                &crate::trace::format::TraceEnd {
                    events,
                    chunks,
                    exit_code: self.exit_code.unwrap_or(0),
                },
            )?;
        }
        Ok(())
    }
}
