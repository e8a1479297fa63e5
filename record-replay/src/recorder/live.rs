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
}

const SI_KERNEL: i32 = 0x80;

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

    /// A SIGINT that stopped `tid` in a live recording, while Ctrl-C is
    /// pending or sent by the terminal: the debugger's interrupt, not a
    /// signal for the program (gdb's `handle SIGINT nopass`). True when it
    /// was taken so.
    pub(super) fn live_interrupt(&mut self, tid: pid_t) -> Result<bool, Error> {
        if self.live.is_none() {
            return Ok(false);
        }
        let info = ptrace::getsiginfo(tid).map_err(perr("PTRACE_GETSIGINFO", tid))?;
        let code = i32::from_le_bytes([info[8], info[9], info[10], info[11]]);
        if !rewind_ckpt::sys::interrupt_pending() && code != SI_KERNEL {
            return Ok(false);
        }
        let running = self.current == Some(tid)
            && matches!(
                self.threads.get(&tid).map(|t| &t.state),
                Some(State::Running)
            );
        if running {
            // Somewhere in its code: that place becomes an event (its
            // registers, as a preemption point), so that the debugger can
            // show it and come back to it.
            let regs = ptrace::getregs(tid).map_err(perr("PTRACE_GETREGS", tid))?;
            self.push(Event::Preempt {
                tid,
                regs: rewind_ckpt::capture::regs_to_vec(&regs),
            })?;
            if let Some(t) = self.threads.get_mut(&tid) {
                t.at_boundary = false;
            }
        } else if let Some(live) = self.live.as_mut() {
            live.interrupted = true;
        }
        // Held (without the signal) until the debugger asks for more.
        self.go(tid, 0)?;
        Ok(true)
    }

    /// Give the debugger more: resume what the last extension held, run
    /// until something is logged, the current thread reaches a syscall,
    /// Ctrl-C, or the end.
    fn extend(&mut self, sigfd: &nix::sys::signalfd::SignalFd) -> Result<Extension, Error> {
        let Some(live) = self.live.as_mut() else {
            return Err(Error::Unsupported("not a live recording".into()));
        };
        if let Some(tid) = live.parked {
            return at_syscall(tid);
        }
        live.new_events = 0;
        live.interrupted = false;
        for (tid, sig) in std::mem::take(&mut live.held) {
            match ptrace::cont(tid, sig) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => return Err(perr("PTRACE_CONT", tid)(e)),
            }
        }
        self.run_live(sigfd)
    }

    /// Run the syscall the current thread is parked at, and on.
    fn commit(&mut self, sigfd: &nix::sys::signalfd::SignalFd) -> Result<Extension, Error> {
        let Some(live) = self.live.as_mut() else {
            return Err(Error::Unsupported("not a live recording".into()));
        };
        let Some(tid) = live.parked.take() else {
            return self.extend(sigfd);
        };
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
    Extend,
    Commit,
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
        let (argv, opts) = (argv.to_vec(), opts.clone());
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

    /// Run the program on until it logs events, reaches a syscall, is
    /// interrupted or ends.
    pub fn extend(&mut self) -> Result<Extension, Error> {
        self.ask(Request::Extend)
    }

    /// Run the syscall [`Extension::AtSyscall`] said, and on as `extend`.
    pub fn commit(&mut self) -> Result<Extension, Error> {
        self.ask(Request::Commit)
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
            Request::Extend => rec.extend(&sigfd),
            Request::Commit => rec.commit(&sigfd),
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
                match self.commit(sigfd) {
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
        let (events, chunks, _) = self.log.sync()?;
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
