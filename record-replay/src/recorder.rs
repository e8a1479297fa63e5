//! The recorder: runs a program live, one thread at a time, and logs every
//! nondeterministic event (DESIGN §4).
//!
//! Scheduling: only the current thread runs user code. Threads switch at
//! syscalls: when the current one enters a syscall that may block (an
//! `Enter` event is logged), and at syscall exits when others are waiting.
//! A blocked thread whose syscall completes waits, stopped, until it is
//! scheduled; its result is logged then. So the log's order alone fixes
//! the interleaving of every thread's memory effects.
//!
//! Asynchronous signals are delivered only right after a syscall of the
//! thread (a boundary): one arriving elsewhere is held and re-sent with
//! tgkill at the thread's next syscall exit, with its original siginfo.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use libc::{pid_t, user_regs_struct};
use rewind_ckpt::capture::{self, CaptureEnv};
use rewind_ckpt::sys::process::PreExec;
use rewind_ckpt::sys::ptrace::{self, Stop, PTRACE_EVENT_STOP, SIGINFO_SIZE};
use rewind_ckpt::tracee::{ThreadStop, Tracee};
use rewind_ckpt::vids::VirtualIds;

use crate::syscalls::{self, Disposition};
use crate::trace::format::{Event, TraceEnd, TraceHeader};
use crate::trace::{self, EventLog};
use crate::{regs_checksum, Error};

const AT_NULL: u64 = 0;
const AT_IGNORE: u64 = 1;
const AT_SYSINFO_EHDR: u64 = 33;
const MAX_SYSCALL: i64 = 462;
/// How long the current thread may run without an event while others wait.
const PREEMPT_AFTER: std::time::Duration = std::time::Duration::from_millis(20);

#[derive(Debug, Clone, Default)]
pub struct RecordOptions {
    /// The trace directory (created; must not exist or be empty).
    pub dir: PathBuf,
    pub verify_memory: bool,
    /// Write a durable checkpoint into the trace this often (at the next
    /// safe point); None for none.
    pub checkpoint_interval: Option<std::time::Duration>,
    /// Take common syscalls through the in-process buffer (`sbuf`).
    pub syscallbuf: bool,
}

#[derive(Debug, Clone)]
pub struct Recording {
    pub dir: PathBuf,
    pub events: u64,
    pub bytes: u64,
    pub exit_code: i32,
}

/// Syscalls that run natively in record and replay: the only ones the
/// filter lets through.
pub fn native_syscalls() -> Vec<i64> {
    (0..=MAX_SYSCALL)
        .filter(|&nr| disposition(nr, &[0; 6]) == Disposition::Native)
        .collect()
}

/// The table's disposition with the cases that depend on arguments or on
/// how threads end.
pub fn disposition(nr: i64, args: &[u64; 6]) -> Disposition {
    match nr {
        // A new thread runs for real; a new process is emulated (its
        // children run live while recording and are not replayed).
        libc::SYS_clone => {
            if args[0] & libc::CLONE_THREAD as u64 != 0 {
                Disposition::Shape
            } else {
                Disposition::Emulate
            }
        }
        // clone3's flags live in memory: the recorder reads them (see
        // `clone3_flags`); without them, assume a process.
        libc::SYS_fork | libc::SYS_vfork => Disposition::Emulate,
        // A thread's end must happen at its place in the log (it clears
        // and wakes its tid futex).
        libc::SYS_exit | libc::SYS_exit_group => Disposition::Shape,
        libc::SYS_execve | libc::SYS_execveat => Disposition::Shape,
        _ => syscalls::disposition(nr),
    }
}

/// `disposition` for a call about to run in `tracee`, where clone3's flags
/// (which live in memory) decide between a thread and a process.
pub fn call_disposition(tracee: &Tracee, nr: i64, args: &[u64; 6]) -> Disposition {
    if nr == libc::SYS_clone3 {
        return if clone3_flags(tracee, args) & libc::CLONE_THREAD as u64 != 0 {
            Disposition::Shape
        } else {
            Disposition::Emulate
        };
    }
    disposition(nr, args)
}

/// The flags of a clone3 call (first field of `struct clone_args`).
pub fn clone3_flags(tracee: &Tracee, args: &[u64; 6]) -> u64 {
    tracee.read_u64(args[0]).unwrap_or(0)
}

/// What a fork, vfork, clone or clone3 call `nr(args)` of `tracee` asks:
/// its flags (vfork's as clone's), and where the kernel stores the new
/// task's id in the parent (CLONE_PARENT_SETTID) and in the child
/// (CLONE_CHILD_SETTID); zeros for any other call.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub parent_tid: u64,
    pub child_tid: u64,
}

pub fn clone_args(tracee: &Tracee, nr: i64, args: &[u64; 6]) -> CloneArgs {
    match nr {
        libc::SYS_clone => CloneArgs {
            flags: args[0],
            parent_tid: args[2],
            child_tid: args[3],
        },
        // struct clone_args: flags, pidfd, child_tid, parent_tid...
        libc::SYS_clone3 => CloneArgs {
            flags: clone3_flags(tracee, args),
            parent_tid: tracee.read_u64(args[0] + 24).unwrap_or(0),
            child_tid: tracee.read_u64(args[0] + 16).unwrap_or(0),
        },
        libc::SYS_vfork => CloneArgs {
            flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64,
            ..CloneArgs::default()
        },
        _ => CloneArgs::default(),
    }
}

pub fn regs_args(r: &user_regs_struct) -> [u64; 6] {
    [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9]
}

/// Hide the vdso from a program stopped at exec: AT_SYSINFO_EHDR becomes
/// AT_IGNORE in the auxv on its stack, so glibc makes real time syscalls.
pub fn hide_vdso(tracee: &Tracee, tid: pid_t) -> Result<(), Error> {
    let regs =
        ptrace::getregs(tid).map_err(|e| rewind_ckpt::Error::ptrace("PTRACE_GETREGS", tid, e))?;
    let mut at = regs.rsp;
    let argc = tracee.read_u64(at)?;
    at += 8 * (argc + 2); // argc, argv[], NULL
    for _ in 0..100_000 {
        let p = tracee.read_u64(at)?;
        at += 8;
        if p == 0 {
            break;
        }
    }
    for _ in 0..512 {
        let kind = tracee.read_u64(at)?;
        if kind == AT_NULL {
            return Ok(());
        }
        if kind == AT_SYSINFO_EHDR {
            tracee.write_mem(at, &AT_IGNORE.to_le_bytes())?;
        }
        at += 16;
    }
    Ok(())
}

/// rdtsc is `0f 31`, rdtscp `0f 01 f9`.
pub fn tsc_instruction(tracee: &Tracee, rip: u64) -> Option<(bool, u64)> {
    let mut b = [0u8; 3];
    tracee.read_mem(rip, &mut b).ok()?;
    match b {
        [0x0f, 0x31, _] => Some((false, 2)),
        [0x0f, 0x01, 0xf9] => Some((true, 3)),
        _ => None,
    }
}

/// Signals that come from the instruction the thread executes.
pub fn is_sync_signal(sig: i32, info: &[u8; SIGINFO_SIZE]) -> bool {
    let code = i32::from_le_bytes([info[8], info[9], info[10], info[11]]);
    matches!(
        sig,
        libc::SIGSEGV | libc::SIGBUS | libc::SIGFPE | libc::SIGILL | libc::SIGTRAP
    ) && code > 0
}

/// This CPU's vendor and its /proc/cpuinfo flags.
pub fn cpu_info() -> (String, String) {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    (field("vendor_id"), field("flags"))
}

fn trace_header(argv: &[String], verify_memory: bool) -> TraceHeader {
    let (cpu_vendor, cpu_flags) = cpu_info();
    TraceHeader {
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        cpu_vendor,
        cpu_flags,
        argv: argv.to_vec(),
        cwd: std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        verify_memory,
        cpu: rewind_ckpt::sys::first_allowed_cpu() as u32,
    }
}

/// Where a thread is, as far as the scheduler is concerned.
#[derive(Debug)]
enum State {
    /// Runs user code (only the current thread).
    Running,
    /// Stopped, waiting to be scheduled; resumed with this signal.
    Waiting { sig: i32 },
    /// Inside a syscall the kernel is executing.
    InSyscall {
        nr: i64,
        args: [u64; 6],
        regs: u64,
        mem: Option<u64>,
        /// 1 or 2 for a write to our stdout or stderr.
        console: u8,
    },
    /// Its syscall completed while another thread ran: the event is logged
    /// when it is scheduled.
    Completed { events: Vec<Event> },
    /// Stopped at a syscall exit whose event is logged, waiting its turn.
    AtBoundary,
}

struct Thread {
    state: State,
    /// The last stop was a syscall exit and no user code ran since.
    at_boundary: bool,
    /// rip and rsp at the thread's last syscall exit: with the syscall
    /// buffer, user code runs long after it without a stop, so a signal
    /// is at the boundary only if the thread is still there.
    boundary: (u64, u64),
    /// Async signals held for the next boundary.
    held: VecDeque<[u8; SIGINFO_SIZE]>,
    /// A held signal re-sent with tgkill, expected at the next stop.
    resent: Option<[u8; SIGINFO_SIZE]>,
}

impl Thread {
    fn new(state: State) -> Thread {
        Thread {
            state,
            at_boundary: false,
            boundary: (0, 0),
            held: VecDeque::new(),
            resent: None,
        }
    }
}

struct Recorder {
    /// The process being handled; with a tree, the others wait in
    /// `others` (see `activate`).
    tracee: Tracee,
    /// Its trace directory (`proc-PID/` for a process the program made).
    dir: PathBuf,
    /// Its event log; None once it ended.
    log: Option<EventLog>,
    /// Events in its log.
    pushed: u64,
    threads: HashMap<pid_t, Thread>,
    current: Option<pid_t>,
    ready: VecDeque<pid_t>,
    execs: u32,
    exit_code: Option<i32>,
    /// Identity of our own stdin/stdout/stderr.
    stdio: rewind_ckpt::plugin::StdioIds,
    verify_memory: bool,
    checkpoint_interval: Option<std::time::Duration>,
    last_checkpoint: std::time::Instant,
    checkpoints: u32,
    /// When the last stop was handled (for preemption).
    last_progress: std::time::Instant,
    /// The thread we sent PTRACE_INTERRUPT to, until it stops for it.
    preempting: Option<pid_t>,
    /// Guest memory and kvm_run pages written by KVM_RUN.
    kvm: crate::kvm::KvmRecord,
    /// Driven step by step by a debugger (`live`), not run to the end.
    live: Option<live::LiveState>,
    /// The in-process syscall buffer, when on.
    sbuf: Option<SbufState>,
    /// The trace directory.
    trace_dir: PathBuf,
    /// The files in its `blobs/`.
    blobs: std::collections::HashSet<String>,
    /// Events logged, every process together.
    total: u64,
    /// The other processes of a recorded tree.
    others: HashMap<pid_t, Proc>,
    /// Recording the processes the program makes (`rewind record`); a live
    /// recording lets them run unrecorded.
    tree: Option<TreeRec>,
}

/// A recorded process other than the one being handled: the recorder's
/// per-process fields, swapped in by `activate`.
struct Proc {
    tracee: Tracee,
    dir: PathBuf,
    log: Option<EventLog>,
    pushed: u64,
    execs: u32,
    sbuf: Option<SbufState>,
    kvm: crate::kvm::KvmRecord,
}

/// What a recording of a process tree keeps besides each process's log.
#[derive(Default)]
struct TreeRec {
    root: pid_t,
    schedule: crate::trace::format::Schedule,
    /// Processes stopped at their first stop before their parent's fork
    /// event was seen.
    early: std::collections::HashSet<pid_t>,
}

/// The recorder's side of the syscall buffer (`crate::sbuf`).
#[derive(Clone)]
struct SbufState {
    /// The blob is mapped in the current image.
    active: bool,
    /// Descriptors whose reads / writes the blob takes (mirrors the
    /// control page).
    read_ok: [u8; 128],
    write_ok: [u8; 128],
    /// Stub areas and how many slots each has used (slot 0: the header).
    areas: Vec<(u64, u64)>,
    /// Sites already looked at.
    tried: std::collections::HashSet<u64>,
    /// (descriptor, for writes) whose kind was looked at since it was
    /// last opened: a traced call on it does not stat it again.
    checked: std::collections::HashSet<(u64, bool)>,
}

impl Default for SbufState {
    fn default() -> SbufState {
        SbufState {
            active: false,
            read_ok: [0; 128],
            write_ok: [0; 128],
            areas: Vec::new(),
            tried: Default::default(),
            checked: Default::default(),
        }
    }
}

mod live;
pub use live::{Extension, Live};

/// Record `argv` into `opts.dir`.
pub fn record(argv: &[String], opts: &RecordOptions) -> Result<Recording, Error> {
    let mut rec = Recorder::launch(argv, opts)?;
    let root = rec.tracee.pid;
    let mut tree = TreeRec {
        root,
        ..Default::default()
    };
    tree.schedule.root = root;
    rec.tree = Some(tree);
    let result = rec.run();
    if result.is_err() {
        rec.kill_program();
    }
    result?;
    rec.finish()
}

impl Recorder {
    /// Start `argv` traced, stopped after its exec with the initial image
    /// written into `opts.dir`.
    fn launch(argv: &[String], opts: &RecordOptions) -> Result<Recorder, Error> {
        let prog = argv
            .first()
            .ok_or_else(|| Error::Usage("no program given".into()))?;
        // Before the trace directory exists: a missing program leaves nothing.
        rewind_ckpt::session::resolve_program(prog)?;
        prepare_dir(&opts.dir)?;
        let header = trace_header(argv, opts.verify_memory);
        trace::write_header(&opts.dir, &header)?;
        let code = opts
            .syscallbuf
            .then_some((crate::sbuf::BASE, crate::sbuf::CODE_LEN));
        let pre = PreExec {
            seccomp: Some(rewind_ckpt::seccomp::filter_all_but_ranges(
                &native_syscalls(),
                None,
                code,
            )),
            notsc: true,
            cpu: Some(header.cpu as usize),
            // glibc's lazy binding saves the registers with XSAVEC on the
            // stack, whose output depends on the CPU's tracking of unused
            // register state, not on the program: with memory checksums,
            // symbols are bound at start-up instead, so that the stack
            // holds the same bytes in record and replay.
            env: if opts.verify_memory {
                vec![("LD_BIND_NOW".into(), "1".into())]
            } else {
                Vec::new()
            },
        };
        let options =
            ptrace::default_options() | libc::PTRACE_O_TRACEFORK | libc::PTRACE_O_TRACEVFORK;
        let (pid, _) = rewind_ckpt::session::spawn_traced(argv, &pre, options)?;
        let tracee = Tracee::new(pid)?;
        let mut rec = Recorder {
            tracee,
            dir: opts.dir.clone(),
            log: Some(EventLog::create(&opts.dir)?),
            pushed: 0,
            threads: HashMap::new(),
            current: Some(pid),
            ready: VecDeque::new(),
            execs: 0,
            exit_code: None,
            stdio: rewind_ckpt::fds::own_stdio(),
            verify_memory: opts.verify_memory,
            checkpoint_interval: opts.checkpoint_interval,
            last_checkpoint: std::time::Instant::now(),
            checkpoints: 0,
            last_progress: std::time::Instant::now(),
            preempting: None,
            kvm: Default::default(),
            live: None,
            sbuf: opts.syscallbuf.then(SbufState::default),
            trace_dir: opts.dir.clone(),
            blobs: Default::default(),
            total: 0,
            others: HashMap::new(),
            tree: None,
        };
        if let Err(e) = rec.start(pid) {
            rec.kill_program();
            return Err(e);
        }
        Ok(rec)
    }

    /// Kill the program and reap it.
    fn kill_program(&mut self) {
        for &other in self.others.keys() {
            let _ = rewind_ckpt::sys::process::kill(other, libc::SIGKILL);
        }
        let pid = self.tree.as_ref().map_or(self.tracee.pid, |t| t.root);
        let _ = rewind_ckpt::sys::process::kill(pid, libc::SIGKILL);
        while let Ok(Some((tid, stop))) = ptrace::wait(-1, false) {
            if tid == pid && matches!(stop, Stop::Exited(_) | Stop::Killed(_)) {
                break;
            }
        }
    }

    /// The process being handled ended with `exit_code`: write what is
    /// pending of its log and its end record.
    fn close_log(&mut self, exit_code: i32) -> Result<(), Error> {
        if let Some(log) = self.log.take() {
            let (events, chunks, _) = log.finish()?;
            trace::write_end(
                &self.dir,
                &TraceEnd {
                    events,
                    chunks,
                    exit_code,
                },
            )?;
        }
        Ok(())
    }

    /// The program ended: write what is pending and the end record.
    fn finish(mut self) -> Result<Recording, Error> {
        let exit_code = self.exit_code.unwrap_or(0);
        self.close_log(exit_code)?;
        if let Some(tree) = self
            .tree
            .as_ref()
            .filter(|t| !t.schedule.children.is_empty())
        {
            trace::write_schedule(&self.trace_dir, &tree.schedule)?;
        }
        let dir = self.trace_dir.clone();
        Ok(Recording {
            bytes: dir_size(&dir),
            dir,
            events: self.total,
            exit_code,
        })
    }
}

/// SIGCHLD blocked in this thread and readable on a descriptor: stops
/// arrive there, so waiting can time out (a thread that runs too long
/// without an event while others wait is preempted).
fn sigchld_fd() -> Result<nix::sys::signalfd::SignalFd, Error> {
    let mut mask = nix::sys::signal::SigSet::empty();
    mask.add(nix::sys::signal::Signal::SIGCHLD);
    mask.thread_block()
        .map_err(|e| rewind_ckpt::Error::Tracee(format!("sigprocmask: {e}")))?;
    nix::sys::signalfd::SignalFd::with_flags(
        &mask,
        nix::sys::signalfd::SfdFlags::SFD_NONBLOCK | nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
    )
    .map_err(|e| rewind_ckpt::Error::Tracee(format!("signalfd: {e}")).into())
}

/// Bytes of the files in `dir` and its subdirectories (processes' logs).
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| {
                let e = e.ok()?;
                let md = e.metadata().ok()?;
                Some(if md.is_dir() {
                    dir_size(&e.path())
                } else {
                    md.len()
                })
            })
            .sum()
        })
        .unwrap_or(0)
}

fn prepare_dir(dir: &Path) -> Result<(), Error> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Usage(format!(
                    "{} exists and is not empty: choose another trace directory with -o",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(dir)
            .map_err(|e| rewind_ckpt::Error::io(dir.display().to_string(), e).into()),
        Err(e) => Err(rewind_ckpt::Error::io(dir.display().to_string(), e).into()),
    }
}

fn perr(op: &'static str, tid: pid_t) -> impl Fn(nix::errno::Errno) -> Error {
    move |e| rewind_ckpt::Error::ptrace(op, tid, e).into()
}

impl Recorder {
    /// At the first exec stop: on to execve's exit (a clean point: the
    /// kernel has written its result), hide the vdso, write the initial
    /// image, go.
    fn start(&mut self, pid: pid_t) -> Result<(), Error> {
        self.threads.insert(pid, Thread::new(State::Running));
        self.run_to_exec_exit(pid)?;
        self.install_sbuf(pid)?;
        self.snapshot_exec(pid, "initial.rwd")?;
        ptrace::cont(pid, 0).map_err(perr("PTRACE_CONT", pid))?;
        Ok(())
    }

    /// From an exec event stop to the syscall-exit stop of that execve.
    fn run_to_exec_exit(&mut self, tid: pid_t) -> Result<(), Error> {
        ptrace::syscall(tid, 0).map_err(perr("PTRACE_SYSCALL", tid))?;
        loop {
            match ptrace::wait(tid, false).map_err(perr("waitpid", tid))? {
                Some((_, Stop::Syscall)) => return Ok(()),
                Some((_, Stop::Exited(_) | Stop::Killed(_))) => {
                    return Err(
                        rewind_ckpt::Error::Gone("the program died during exec".into()).into(),
                    )
                }
                Some(_) => ptrace::syscall(tid, 0).map_err(perr("PTRACE_SYSCALL", tid))?,
                None => {}
            }
        }
    }

    fn snapshot_exec(&mut self, tid: pid_t, name: &str) -> Result<(), Error> {
        hide_vdso(&self.tracee, tid)?;
        if let Some(t) = self.tracee.threads.get_mut(&tid) {
            t.stop = ThreadStop::Interrupted;
        }
        let env = CaptureEnv {
            stdio: &rewind_ckpt::fds::own_stdio(),
            vids: &VirtualIds::default(),
            vppid: std::process::id() as i32,
            terminals: None,
        };
        let mut plugins = rewind_ckpt::plugin::builtin();
        capture::checkpoint(&mut self.tracee, &mut plugins, &env, &self.dir.join(name))?;
        if let Some(t) = self.tracee.threads.get_mut(&tid) {
            t.stop = ThreadStop::Running;
        }
        Ok(())
    }

    fn push(&mut self, event: Event) -> Result<(), Error> {
        let Some(log) = self.log.as_mut() else {
            return Err(rewind_ckpt::Error::Tracee(format!(
                "an event of process {} after its end",
                self.tracee.pid
            ))
            .into());
        };
        log.push(&event)?;
        self.pushed += 1;
        self.total += 1;
        if let Some(tree) = self.tree.as_mut() {
            let pid = self.tracee.pid;
            match tree.schedule.runs.last_mut() {
                Some(last) if last.0 == pid => last.1 = self.pushed,
                _ => tree.schedule.runs.push((pid, self.pushed)),
            }
        }
        if let Some(live) = self.live.as_mut() {
            live.pushed(event);
        }
        Ok(())
    }

    fn run(&mut self) -> Result<(), Error> {
        let sigfd = sigchld_fd()?;
        while self.turn(&sigfd)? {}
        Ok(())
    }

    /// One turn of the event loop: schedule, wait for a stop, handle it.
    /// False once the program has ended.
    fn turn(&mut self, sigfd: &nix::sys::signalfd::SignalFd) -> Result<bool, Error> {
        let pid = self.tracee.pid;
        if self.current.is_none() {
            self.schedule()?;
            if self.live.as_ref().is_some_and(|l| l.done()) {
                return Ok(true);
            }
        }
        // A deadline only matters while another thread waits to run;
        // otherwise block in waitpid (one syscall per stop).
        let nohang = self.current.is_some() && !self.ready.is_empty();
        let Some((tid, stop)) = ptrace::wait(-1, nohang).map_err(perr("waitpid", pid))? else {
            if nohang {
                self.idle(sigfd)?;
            }
            return Ok(true);
        };
        self.last_progress = std::time::Instant::now();
        if let Some(live) = self.live.as_mut() {
            live.disarm(&self.tracee);
            if stop != Stop::Signal(libc::SIGTRAP) {
                live.forget_skip(tid);
            }
        }
        let code = match stop {
            Stop::Exited(c) => Some(c),
            Stop::Killed(s) => Some(128 + s),
            _ => None,
        };
        if let Some(code) = code {
            if self.tree.is_some() && self.is_process(tid) {
                return self.process_ended(tid, code);
            }
            if self.tree.is_none() && tid == pid {
                self.exit_code = Some(code);
                return Ok(false);
            }
        }
        match self.owner(tid) {
            Some(owner) => self.activate(owner),
            None => {
                let first_stop = matches!(stop, Stop::Event(PTRACE_EVENT_STOP, _));
                if let Some(tree) = self.tree.as_mut().filter(|_| first_stop) {
                    if rewind_ckpt::tracee::tgid_of(tid) == Some(tid) {
                        // A new process, before its parent's fork event:
                        // it waits there until that is seen.
                        tree.early.insert(tid);
                        return Ok(true);
                    }
                }
                passenger(tid, stop);
                return Ok(true);
            }
        }
        self.handle(tid, stop)?;
        Ok(true)
    }

    /// The recorded process that thread `tid` belongs to.
    fn owner(&self, tid: pid_t) -> Option<pid_t> {
        if self.log.is_some() && self.tracee.threads.contains_key(&tid) {
            return Some(self.tracee.pid);
        }
        if let Some((&pid, _)) = self
            .others
            .iter()
            .find(|(_, p)| p.tracee.threads.contains_key(&tid))
        {
            return Some(pid);
        }
        // A new thread, before its clone event was seen.
        let tgid = rewind_ckpt::tracee::tgid_of(tid)?;
        self.is_process(tgid).then_some(tgid)
    }

    /// Whether `pid` is a recorded process that has not ended.
    fn is_process(&self, pid: pid_t) -> bool {
        (pid == self.tracee.pid && self.log.is_some()) || self.others.contains_key(&pid)
    }

    /// Make `pid` the process being handled: its fields are swapped in.
    /// An ended process swapped out is forgotten.
    fn activate(&mut self, pid: pid_t) {
        if pid == self.tracee.pid {
            return;
        }
        let Some(mut p) = self.others.remove(&pid) else {
            return;
        };
        std::mem::swap(&mut self.tracee, &mut p.tracee);
        std::mem::swap(&mut self.dir, &mut p.dir);
        std::mem::swap(&mut self.log, &mut p.log);
        std::mem::swap(&mut self.pushed, &mut p.pushed);
        std::mem::swap(&mut self.execs, &mut p.execs);
        std::mem::swap(&mut self.sbuf, &mut p.sbuf);
        std::mem::swap(&mut self.kvm, &mut p.kvm);
        if p.log.is_some() {
            self.others.insert(p.tracee.pid, p);
        }
    }

    /// Process `pid` of a recorded tree ended with `code`: its log is
    /// closed with its end record. False once no recorded process is left.
    fn process_ended(&mut self, pid: pid_t, code: i32) -> Result<bool, Error> {
        self.activate(pid);
        let mine: Vec<pid_t> = self.tracee.threads.keys().copied().chain([pid]).collect();
        for t in &mine {
            self.threads.remove(t);
        }
        self.ready.retain(|t| !mine.contains(t));
        if self.current.is_some_and(|c| mine.contains(&c)) {
            self.current = None;
        }
        self.tracee.threads.clear();
        self.close_log(code)?;
        if self.tree.as_ref().is_some_and(|t| t.root == pid) {
            self.exit_code = Some(code);
            if !self.others.is_empty() {
                let mut left: Vec<pid_t> = self.others.keys().copied().collect();
                left.sort();
                tracing::warn!(
                    "the program exited; the recording goes on until what it left running ends (processes {left:?})"
                );
            }
        }
        Ok(!self.others.is_empty())
    }

    /// Thread `tid`, inside fork, vfork or clone, made a process (event
    /// `ev`): with a tree, it is recorded from here in its own log.
    fn forked(&mut self, tid: pid_t, ev: i32) -> Result<(), Error> {
        let child = ptrace::geteventmsg(tid).map_err(perr("PTRACE_GETEVENTMSG", tid))? as pid_t;
        let (nr, args) = match self.threads.get(&tid).map(|t| &t.state) {
            Some(State::InSyscall { nr, args, .. }) => (*nr, *args),
            _ => (libc::SYS_fork, [0; 6]),
        };
        let flags = clone_args(&self.tracee, nr, &args).flags;
        let shares_memory = ev == libc::PTRACE_EVENT_VFORK || flags & libc::CLONE_VM as u64 != 0;
        if shares_memory && self.sbuf_active() {
            // The child runs in our memory: its calls must not land in
            // our buffer (cleared at the next flush of ours).
            crate::sbuf::force_slow(&self.tracee)?;
        }
        if self.tree.is_some() {
            let dir = self.trace_dir.join(format!("proc-{child}"));
            std::fs::create_dir_all(&dir)
                .map_err(|e| rewind_ckpt::Error::io(dir.display().to_string(), e))?;
            let sbuf = self.sbuf.as_ref().map(|s| SbufState {
                active: s.active && !shares_memory,
                ..s.clone()
            });
            let proc = Proc {
                tracee: Tracee::new(child)?,
                log: Some(EventLog::create(&dir)?),
                dir,
                pushed: 0,
                execs: 0,
                sbuf,
                kvm: Default::default(),
            };
            self.others.insert(child, proc);
            self.threads
                .insert(child, Thread::new(State::Waiting { sig: 0 }));
            let pid = self.tracee.pid;
            if let Some(tree) = self.tree.as_mut() {
                tree.schedule.children.push((child, pid));
                if tree.early.remove(&child) {
                    self.ready.push_back(child);
                }
            }
            self.push(Event::Fork { tid, child })?;
            if flags & libc::CLONE_VFORK as u64 != 0 && self.current == Some(tid) {
                // The parent waits for the child's exec or exit.
                self.current = None;
            }
        }
        ptrace::syscall(tid, 0).map_err(perr("PTRACE_SYSCALL", tid))?;
        Ok(())
    }

    /// Nothing to handle: wait for the next stop, preempting the current
    /// thread when it made no event for PREEMPT_AFTER while others wait.
    fn idle(&mut self, sigfd: &nix::sys::signalfd::SignalFd) -> Result<(), Error> {
        use std::os::fd::AsFd;
        let mut timeout = nix::poll::PollTimeout::from(1000u16);
        if let (Some(cur), false) = (self.current, self.ready.is_empty()) {
            let left = PREEMPT_AFTER.saturating_sub(self.last_progress.elapsed());
            if left.is_zero() {
                if self.preempting != Some(cur) {
                    match ptrace::interrupt(cur) {
                        Ok(()) | Err(nix::errno::Errno::ESRCH) => self.preempting = Some(cur),
                        Err(e) => return Err(perr("PTRACE_INTERRUPT", cur)(e)),
                    }
                }
            } else {
                timeout = nix::poll::PollTimeout::try_from(left)
                    .unwrap_or(nix::poll::PollTimeout::from(1u16));
            }
        }
        let mut fds = [nix::poll::PollFd::new(
            sigfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(rewind_ckpt::Error::Tracee(format!("poll: {e}")).into()),
        }
        while let Ok(Some(_)) = sigfd.read_signal() {}
        Ok(())
    }

    /// The current thread stopped on our PTRACE_INTERRUPT, somewhere in its
    /// code: log where (its whole register file) and let another run.
    fn preempted(&mut self, tid: pid_t) -> Result<(), Error> {
        self.preempting = None;
        let regs = ptrace::getregs(tid).map_err(perr("PTRACE_GETREGS", tid))?;
        if self.sbuf_active() && crate::sbuf::in_code(regs.rip) {
            // Inside the buffer's code, which replay runs differently:
            // not a point replay can reach. Preempted later.
            return self.go(tid, 0);
        }
        self.push(Event::Preempt {
            tid,
            regs: capture::regs_to_vec(&regs),
        })?;
        if let Some(t) = self.threads.get_mut(&tid) {
            t.state = State::Waiting { sig: 0 };
            t.at_boundary = false;
        }
        if self.current == Some(tid) {
            self.current = None;
        }
        self.ready.push_back(tid);
        Ok(())
    }

    /// Pick the next thread to run: the first waiting one.
    fn schedule(&mut self) -> Result<(), Error> {
        while let Some(tid) = self.ready.pop_front() {
            if let Some(owner) = self.owner(tid) {
                self.activate(owner);
            }
            let Some(t) = self.threads.get_mut(&tid) else {
                continue;
            };
            match std::mem::replace(&mut t.state, State::Running) {
                State::Completed { events } => {
                    for event in events {
                        self.push(event)?;
                    }
                    self.resume_after_syscall(tid)?;
                }
                State::Waiting { sig } => {
                    self.resume(tid, sig)?;
                }
                State::AtBoundary => {
                    self.resume_after_syscall(tid)?;
                }
                other => {
                    t.state = other;
                    continue;
                }
            }
            self.current = Some(tid);
            return Ok(());
        }
        Ok(())
    }

    fn resume(&mut self, tid: pid_t, sig: i32) -> Result<(), Error> {
        if let Some(t) = self.threads.get_mut(&tid) {
            t.at_boundary = false;
            t.state = State::Running;
        }
        self.go(tid, sig)
    }

    /// Let `tid` run its code (with signal `sig`); a live recording that
    /// logged an event keeps it stopped there until the debugger asks for
    /// more.
    fn go(&mut self, tid: pid_t, sig: i32) -> Result<(), Error> {
        if let Some(live) = self.live.as_mut() {
            if live.hold(tid, sig) {
                return Ok(());
            }
            return self.live_cont(tid, sig);
        }
        match ptrace::cont(tid, sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(perr("PTRACE_CONT", tid)(e)),
        }
    }

    /// Resume a thread stopped at a syscall exit: a boundary, where held
    /// signals are delivered.
    fn resume_after_syscall(&mut self, tid: pid_t) -> Result<(), Error> {
        let pid = self.tracee.pid;
        let Some(t) = self.threads.get_mut(&tid) else {
            return Ok(());
        };
        t.state = State::Running;
        t.at_boundary = true;
        if let Some(info) = t.held.pop_front() {
            let sig = i32::from_le_bytes([info[0], info[1], info[2], info[3]]);
            t.resent = Some(info);
            rewind_ckpt::sys::process::tgkill(pid, tid, sig)
                .map_err(|e| rewind_ckpt::Error::Tracee(format!("tgkill: {e}")))?;
        }
        self.go(tid, 0)
    }

    fn handle(&mut self, tid: pid_t, stop: Stop) -> Result<(), Error> {
        if self.current == Some(tid)
            && !matches!(
                stop,
                Stop::Exited(_) | Stop::Killed(_) | Stop::Event(libc::PTRACE_EVENT_EXEC, _)
            )
        {
            // The thread that ran user code stopped: what it buffered
            // comes before whatever this stop logs (an exec's was logged
            // at its execve, the buffer is gone with the old image). Not
            // while it is inside the buffer's code (a signal or an
            // interrupt stops it anywhere): the buffer is half-written.
            let anywhere = matches!(stop, Stop::Signal(_) | Stop::Event(PTRACE_EVENT_STOP, _));
            if !(anywhere && self.in_sbuf_code(tid)) {
                self.flush_sbuf(tid)?;
            }
        }
        match stop {
            Stop::Exited(_) | Stop::Killed(_) => {
                self.threads.remove(&tid);
                self.tracee.threads.remove(&tid);
                if self.current == Some(tid) {
                    self.current = None;
                }
            }
            Stop::Event(libc::PTRACE_EVENT_SECCOMP, _) => {
                if !self.park(tid) {
                    self.syscall_entry(tid)?
                }
            }
            Stop::Syscall => {
                if !self.live_restart(tid)? {
                    self.syscall_exit(tid)?
                }
            }
            Stop::Signal(libc::SIGINT) if self.live_interrupt(tid)? => {}
            Stop::Signal(libc::SIGTRAP) if self.live_trap(tid)? => {}
            Stop::Signal(sig) => self.signal(tid, sig)?,
            Stop::Event(libc::PTRACE_EVENT_CLONE, _) if !self.clones_thread(tid) => {
                self.forked(tid, libc::PTRACE_EVENT_CLONE)?
            }
            Stop::Event(libc::PTRACE_EVENT_CLONE, _) => {
                let new =
                    ptrace::geteventmsg(tid).map_err(perr("PTRACE_GETEVENTMSG", tid))? as pid_t;
                self.threads
                    .entry(new)
                    .or_insert_with(|| Thread::new(State::Waiting { sig: 0 }));
                self.tracee
                    .threads
                    .entry(new)
                    .or_insert_with(|| rewind_ckpt::tracee::Thread::new(new));
                // Still inside clone: on to its exit stop.
                ptrace::syscall(tid, 0).map_err(perr("PTRACE_SYSCALL", tid))?;
            }
            Stop::Event(ev @ (libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK), _) => {
                self.forked(tid, ev)?
            }
            Stop::Event(libc::PTRACE_EVENT_EXEC, _) => self.exec(tid)?,
            Stop::Event(PTRACE_EVENT_STOP, sig) => {
                let known = self.threads.contains_key(&tid);
                if !known {
                    // A new thread, before its clone event was seen.
                    self.threads
                        .insert(tid, Thread::new(State::Waiting { sig: 0 }));
                    self.tracee
                        .threads
                        .entry(tid)
                        .or_insert_with(|| rewind_ckpt::tracee::Thread::new(tid));
                }
                if rewind_ckpt::tracee::is_group_stop(sig) {
                    let _ = ptrace::listen(tid);
                } else if known
                    && matches!(
                        self.threads.get(&tid).map(|t| &t.state),
                        Some(State::Running)
                    )
                {
                    // Our interrupt (possibly delivered late, after a
                    // syscall the thread made first): a preemption point.
                    self.preempted(tid)?;
                } else if matches!(
                    self.threads.get(&tid).map(|t| &t.state),
                    Some(State::Waiting { .. })
                ) {
                    // A new thread waits for its turn.
                    if !self.ready.contains(&tid) && self.current != Some(tid) {
                        self.ready.push_back(tid);
                    }
                } else {
                    let _ = ptrace::cont(tid, 0);
                }
            }
            _ => {
                let _ = ptrace::cont(tid, 0);
            }
        }
        Ok(())
    }

    /// Whether `tid`, stopped at a clone event, is making a thread.
    fn clones_thread(&self, tid: pid_t) -> bool {
        match self.threads.get(&tid).map(|t| &t.state) {
            Some(State::InSyscall { nr, args, .. }) => {
                call_disposition(&self.tracee, *nr, args) == Disposition::Shape
            }
            _ => true,
        }
    }

    /// Whether syscall `nr(args)` is a vfork: its thread waits in it for
    /// the child's exec or exit.
    fn is_vfork(&self, nr: i64, args: &[u64; 6]) -> bool {
        clone_args(&self.tracee, nr, args).flags & libc::CLONE_VFORK as u64 != 0
    }

    fn syscall_entry(&mut self, tid: pid_t) -> Result<(), Error> {
        let regs = ptrace::getregs(tid).map_err(perr("PTRACE_GETREGS", tid))?;
        let nr = regs.orig_rax as i64;
        let args = regs_args(&regs);
        let sum = regs_checksum(&regs);
        let mem = self
            .verify_memory
            .then(|| crate::memory_checksum(&self.tracee));
        if let Some(t) = self.threads.get_mut(&tid) {
            t.at_boundary = false;
        }
        if nr == libc::SYS_exit || nr == libc::SYS_exit_group {
            // No exit stop follows: logged now.
            self.push(Event::Syscall {
                tid,
                nr,
                args,
                ret: 0,
                writes: Vec::new(),
                regs: sum,
                mem,
                console: 0,
            })?;
            if nr == libc::SYS_exit_group {
                // The other threads die with it: nothing of theirs follows.
                let mine = &self.tracee.threads;
                self.ready.retain(|t| !mine.contains_key(t));
                if let Some(t) = self.threads.get_mut(&tid) {
                    t.state = State::Running;
                }
                ptrace::cont(tid, 0).map_err(perr("PTRACE_CONT", tid))?;
                return Ok(());
            }
            // The thread ends; nothing else runs until it is gone, so its
            // tid word is cleared at the same point of every run.
            self.threads.remove(&tid);
            self.tracee.threads.remove(&tid);
            if self.current == Some(tid) {
                self.current = None;
            }
            ptrace::cont(tid, 0).map_err(perr("PTRACE_CONT", tid))?;
            rewind_ckpt::tracee::wait_thread_gone(self.tracee.pid, tid);
            return Ok(());
        }
        if let Some(errno) =
            syscalls::refused_errno(nr).or_else(|| self.refuse_console_copy(tid, nr, &args))
        {
            // Refused while recording (rseq: the kernel would write the cpu
            // number into the program's memory behind our back): skipped,
            // answered with an error, logged like any emulated result.
            let mut r = regs;
            r.orig_rax = u64::MAX;
            r.rax = (-(errno as i64)) as u64;
            ptrace::setregs(tid, &r).map_err(perr("PTRACE_SETREGS", tid))?;
        }
        // A write to our own stdout/stderr cannot wait for another thread
        // of the program: it stays with the current thread, so its output
        // keeps its place in the log.
        let console = self.console(tid, nr, &args);
        // A vfork's parent waits for its child, which must be let run;
        // it stays the current thread until the child exists (its fork
        // event), so the copy is made at a fixed point of the log.
        let vfork = self.tree.is_some() && self.is_vfork(nr, &args);
        let blocking = console == 0 && (vfork || syscalls::may_block_call(nr, &args));
        if blocking {
            self.push(Event::Enter {
                tid,
                nr,
                args,
                regs: sum,
            })?;
        }
        if let Some(t) = self.threads.get_mut(&tid) {
            t.state = State::InSyscall {
                nr,
                args,
                regs: sum,
                mem,
                console,
            };
        }
        self.kvm.entry(&self.tracee, tid, nr, &args);
        ptrace::syscall(tid, 0).map_err(perr("PTRACE_SYSCALL", tid))?;
        if blocking && !vfork && self.current == Some(tid) {
            // Others may run while this one waits in the kernel.
            self.current = None;
        }
        Ok(())
    }

    fn syscall_exit(&mut self, tid: pid_t) -> Result<(), Error> {
        let Some(t) = self.threads.get_mut(&tid) else {
            return Ok(());
        };
        let (nr, args, sum, mem, console) = match std::mem::replace(&mut t.state, State::Running) {
            State::InSyscall {
                nr,
                args,
                regs,
                mem,
                console,
            } => (nr, args, regs, mem, console),
            other => {
                t.state = other;
                let _ = ptrace::cont(tid, 0);
                return Ok(());
            }
        };
        let regs = ptrace::getregs(tid).map_err(perr("PTRACE_GETREGS", tid))?;
        let ret = regs.rax as i64;
        if let Some(t) = self.threads.get_mut(&tid) {
            t.boundary = (regs.rip, regs.rsp);
        }
        let extra = self.kvm.exit(&self.tracee, tid, nr, &args, ret)?;
        let writes = self.writes(nr, &args, ret, extra);
        let mapped = self.mapped_file(tid, nr, &args, ret)?;
        let event = Event::Syscall {
            tid,
            nr,
            args,
            ret,
            writes,
            regs: sum,
            mem,
            console,
        };
        self.sbuf_fds(tid, nr, &args, ret, console)?;
        if self.current == Some(tid) {
            self.push(event)?;
            if let Some(m) = mapped {
                self.push(m)?;
            }
            if crate::sbuf::buffered(nr) {
                self.patch_site(tid, regs.rip.wrapping_sub(2), nr, &args)?;
            }
            self.maybe_checkpoint(tid)?;
            if self.ready.is_empty() {
                self.resume_after_syscall(tid)?;
            } else {
                // Let a waiting thread run; this one waits at its boundary.
                if let Some(t) = self.threads.get_mut(&tid) {
                    t.state = State::AtBoundary;
                }
                self.ready.push_back(tid);
                self.current = None;
            }
        } else if self.current.is_none() {
            self.push(event)?;
            if let Some(m) = mapped {
                self.push(m)?;
            }
            if crate::sbuf::buffered(nr) {
                self.patch_site(tid, regs.rip.wrapping_sub(2), nr, &args)?;
            }
            self.current = Some(tid);
            self.resume_after_syscall(tid)?;
        } else {
            if let Some(t) = self.threads.get_mut(&tid) {
                t.state = State::Completed {
                    events: [event].into_iter().chain(mapped).collect(),
                };
            }
            self.ready.push_back(tid);
        }
        Ok(())
    }

    /// A periodic checkpoint, when one is due and every thread but `tid`
    /// (stopped at the exit of a logged syscall) is stopped at a boundary
    /// or not started: then the image is exactly this point of the log.
    fn maybe_checkpoint(&mut self, tid: pid_t) -> Result<(), Error> {
        let Some(every) = self.checkpoint_interval else {
            return Ok(());
        };
        if self
            .tree
            .as_ref()
            .is_some_and(|t| !t.schedule.children.is_empty())
        {
            // An image holds one process: not once the program made others.
            return Ok(());
        }
        if self.last_checkpoint.elapsed() < every {
            return Ok(());
        }
        let safe = self.threads.iter().all(|(&t, th)| {
            t == tid
                || matches!(th.state, State::AtBoundary | State::Waiting { sig: 0 })
                    && th.held.is_empty()
        });
        if !safe || self.threads.get(&tid).is_some_and(|t| !t.held.is_empty()) {
            return Ok(());
        }
        for t in self.tracee.threads.values_mut() {
            t.stop = ThreadStop::Interrupted;
        }
        self.checkpoints += 1;
        let name = format!("ckpt-{}.rwd", self.checkpoints);
        let env = CaptureEnv {
            stdio: &self.stdio,
            vids: &VirtualIds::default(),
            vppid: std::process::id() as i32,
            terminals: None,
        };
        let mut plugins = rewind_ckpt::plugin::builtin();
        capture::checkpoint(&mut self.tracee, &mut plugins, &env, &self.dir.join(&name))?;
        for t in self.tracee.threads.values_mut() {
            t.stop = ThreadStop::Running;
        }
        self.push(Event::Checkpoint { image: name })?;
        self.last_checkpoint = std::time::Instant::now();
        Ok(())
    }

    /// Whether a write went to the session's own stdout (1) or stderr (2).
    fn console(&self, tid: pid_t, nr: i64, args: &[u64; 6]) -> u8 {
        if !matches!(
            nr,
            libc::SYS_write
                | libc::SYS_writev
                | libc::SYS_pwrite64
                | libc::SYS_pwritev
                | libc::SYS_pwritev2
        ) {
            return 0;
        }
        self.console_fd(tid, args[0] as i32)
    }

    /// Whether descriptor `fd` of `tid` is our stdout (1) or stderr (2).
    fn console_fd(&self, tid: pid_t, fd: i32) -> u8 {
        use std::os::unix::fs::MetadataExt;
        let Ok(md) = std::fs::metadata(format!("/proc/{tid}/fd/{fd}")) else {
            return 0;
        };
        let id = Some((md.dev(), md.ino()));
        match (id == self.stdio[1], id == self.stdio[2]) {
            (true, true) => {
                if fd == 2 {
                    2
                } else {
                    1
                }
            }
            (true, false) => 1,
            (false, true) => 2,
            _ => 0,
        }
    }

    /// Kernel-side copies to our stdout/stderr would show nothing in
    /// replay (the bytes never pass through the program): refused while
    /// recording, so the program falls back to read and write.
    fn refuse_console_copy(&self, tid: pid_t, nr: i64, args: &[u64; 6]) -> Option<i32> {
        let out = match nr {
            libc::SYS_sendfile => args[0],
            libc::SYS_copy_file_range | libc::SYS_splice => args[2],
            _ => return None,
        };
        (self.console_fd(tid, out as i32) != 0).then_some(libc::ENOSYS)
    }

    /// Memory the kernel wrote for this syscall, with its contents;
    /// `extra` ranges come from the recorder's own knowledge (KVM).
    fn writes(
        &self,
        nr: i64,
        args: &[u64; 6],
        ret: i64,
        extra: Vec<(u64, u64)>,
    ) -> Vec<(u64, Vec<u8>)> {
        let tracee = &self.tracee;
        let mut ranges = syscalls::written_ranges(nr, args, ret, &mut |addr, buf| {
            tracee.read_mem(addr, buf).is_ok()
        });
        ranges.extend(extra);
        // Thread ids the kernel stores for a new thread.
        if (nr == libc::SYS_clone || nr == libc::SYS_clone3) && ret > 0 {
            let c = clone_args(tracee, nr, args);
            if c.flags & libc::CLONE_PARENT_SETTID as u64 != 0 && c.parent_tid != 0 {
                ranges.push((c.parent_tid, 4));
            }
            if c.flags & libc::CLONE_CHILD_SETTID as u64 != 0 && c.child_tid != 0 {
                ranges.push((c.child_tid, 4));
            }
        }
        ranges
            .into_iter()
            .filter_map(|(addr, len)| read_range(tracee, addr, len))
            .collect()
    }

    /// A file mapping: its bytes, so replay never needs the file, kept in
    /// the trace's `blobs/` once per file version and range (every process
    /// of a tree maps libc).
    fn mapped_file(
        &mut self,
        tid: pid_t,
        nr: i64,
        args: &[u64; 6],
        ret: i64,
    ) -> Result<Option<Event>, Error> {
        use std::os::unix::fs::MetadataExt;
        if nr != libc::SYS_mmap || ret < 0 || args[3] & libc::MAP_ANONYMOUS as u64 != 0 {
            return Ok(None);
        }
        let Ok(md) = std::fs::metadata(format!("/proc/{tid}/fd/{}", args[4] as i32)) else {
            return Ok(None);
        };
        let avail = md.len().saturating_sub(args[5]).min(args[1]);
        let len = (avail.div_ceil(4096) * 4096).min(args[1]);
        if len == 0 {
            return Ok(None);
        }
        // Same file, unchanged since (ctime moves on any write), same range.
        let key = format!(
            "{:x}-{:x}-{}.{}-{:x}-{:x}-{:x}",
            md.dev(),
            md.ino(),
            md.ctime(),
            md.ctime_nsec(),
            md.len(),
            args[5],
            len
        );
        if !self.blobs.contains(&key) {
            let Some((_, bytes)) = read_range(&self.tracee, ret as u64, len) else {
                return Ok(None);
            };
            let dir = self.trace_dir.join("blobs");
            let path = dir.join(&key);
            let io = |e: std::io::Error| rewind_ckpt::Error::io(path.display().to_string(), e);
            std::fs::create_dir_all(&dir).map_err(io)?;
            let packed = zstd::bulk::compress(&bytes, 3).map_err(io)?;
            std::fs::write(&path, packed).map_err(io)?;
            self.blobs.insert(key.clone());
        }
        Ok(Some(Event::Mapped {
            tid,
            addr: ret as u64,
            blob: key,
        }))
    }

    fn signal(&mut self, tid: pid_t, sig: i32) -> Result<(), Error> {
        let regs = ptrace::getregs(tid).map_err(perr("PTRACE_GETREGS", tid))?;
        let info = ptrace::getsiginfo(tid).map_err(perr("PTRACE_GETSIGINFO", tid))?;
        if sig == libc::SIGSEGV {
            if let Some((rdtscp, len)) = tsc_instruction(&self.tracee, regs.rip) {
                let sum = regs_checksum(&regs);
                let mut r = regs;
                let (value, aux) = if rdtscp {
                    let (v, a) = rewind_ckpt::sys::rdtscp();
                    r.rcx = a as u64;
                    (v, Some(a))
                } else {
                    (rewind_ckpt::sys::rdtsc(), None)
                };
                r.rax = value & 0xffff_ffff;
                r.rdx = value >> 32;
                r.rip += len;
                ptrace::setregs(tid, &r).map_err(perr("PTRACE_SETREGS", tid))?;
                self.push(Event::Rdtsc {
                    tid,
                    value,
                    aux,
                    regs: sum,
                })?;
                if let Some(t) = self.threads.get_mut(&tid) {
                    t.at_boundary = false;
                }
                return self.resume(tid, 0);
            }
        }
        let sum = regs_checksum(&regs);
        let sbuf = self.sbuf_active();
        let (at_boundary, resent) = match self.threads.get_mut(&tid) {
            Some(t) => (
                t.at_boundary && (!sbuf || t.boundary == (regs.rip, regs.rsp)),
                t.resent.take(),
            ),
            None => (false, None),
        };
        if is_sync_signal(sig, &info) {
            self.push(Event::Signal {
                tid,
                sig,
                info: info.to_vec(),
                sync: true,
                regs: sum,
            })?;
            return self.resume(tid, sig);
        }
        if let Some(original) = resent {
            ptrace::setsiginfo(tid, &original).map_err(perr("PTRACE_SETSIGINFO", tid))?;
            self.push(Event::Signal {
                tid,
                sig,
                info: original.to_vec(),
                sync: false,
                regs: sum,
            })?;
            return self.deliver_async(tid, sig);
        }
        if at_boundary {
            self.push(Event::Signal {
                tid,
                sig,
                info: info.to_vec(),
                sync: false,
                regs: sum,
            })?;
            return self.deliver_async(tid, sig);
        }
        // Elsewhere: hold it for the thread's next syscall exit (one the
        // buffer must then leave traced).
        if let Some(t) = self.threads.get_mut(&tid) {
            t.held.push_back(info);
        }
        if self.current == Some(tid) && self.sbuf_active() {
            crate::sbuf::force_slow(&self.tracee)?;
        }
        self.resume(tid, 0)
    }

    /// Deliver the logged asynchronous signal `sig` to `tid`: into its
    /// handler, if it has one, where the frame is fixed
    /// (`crate::clear_frame_fault`) as replay fixes it.
    fn deliver_async(&mut self, tid: pid_t, sig: i32) -> Result<(), Error> {
        if !crate::has_handler(tid, sig) {
            return self.resume(tid, sig);
        }
        if let Some(t) = self.threads.get_mut(&tid) {
            t.at_boundary = false;
            t.state = State::Running;
        }
        ptrace::singlestep(tid, sig).map_err(perr("PTRACE_SINGLESTEP", tid))?;
        let stop = loop {
            if let Some((_, stop)) = ptrace::wait(tid, false).map_err(perr("waitpid", tid))? {
                break stop;
            }
        };
        if stop != Stop::Signal(libc::SIGTRAP) {
            // (Killed, or stopped for something else on the way.)
            return self.handle(tid, stop);
        }
        let rsp = ptrace::getregs(tid)
            .map_err(perr("PTRACE_GETREGS", tid))?
            .rsp;
        crate::clear_frame_fault(&self.tracee, rsp)?;
        self.go(tid, 0)
    }

    /// The program exec'd: a new image replaces it in replay.
    fn exec(&mut self, tid: pid_t) -> Result<(), Error> {
        let pid = self.tracee.pid;
        // Every other thread is gone; the leader runs the new program.
        let mine = &self.tracee.threads;
        self.threads
            .retain(|&t, _| t == pid || t == tid || !mine.contains_key(&t));
        self.ready.retain(|t| !mine.contains_key(t));
        self.tracee.threads.retain(|&t, _| t == pid);
        self.tracee
            .threads
            .entry(pid)
            .or_insert_with(|| rewind_ckpt::tracee::Thread::new(pid));
        self.tracee.reopen_mem()?;
        self.run_to_exec_exit(pid)?;
        self.install_sbuf(pid)?;
        self.execs += 1;
        let name = format!("exec-{}.rwd", self.execs);
        self.snapshot_exec(pid, &name)?;
        self.push(Event::Exec { tid, image: name })?;
        self.threads.insert(pid, Thread::new(State::Running));
        self.current = Some(pid);
        self.resume_after_syscall(pid)?;
        Ok(())
    }
}

/// `len` bytes of `tracee` at `addr`; past the end of a file mapping, the
/// pages that can be read.
fn read_range(tracee: &Tracee, addr: u64, len: u64) -> Option<(u64, Vec<u8>)> {
    let mut buf = vec![0u8; len as usize];
    if tracee.read_mem(addr, &mut buf).is_ok() {
        return Some((addr, buf));
    }
    let mut ok = false;
    for (i, page) in buf.chunks_mut(4096).enumerate() {
        ok |= tracee.read_mem(addr + i as u64 * 4096, page).is_ok();
    }
    ok.then_some((addr, buf))
}

/// A process the program forked: runs live, unrecorded. It inherited the
/// faulting rdtsc, which is answered live here.
fn passenger(tid: pid_t, stop: Stop) {
    if stop == Stop::Signal(libc::SIGSEGV) && emulate_tsc_live(tid) {
        let _ = ptrace::cont(tid, 0);
        return;
    }
    rewind_ckpt::tracee::resume_passenger(tid, stop);
}

/// If `tid` faulted on rdtsc/rdtscp, execute it for the thread.
fn emulate_tsc_live(tid: pid_t) -> bool {
    let Ok(mut r) = ptrace::getregs(tid) else {
        return false;
    };
    let Ok(mem) = std::fs::File::open(format!("/proc/{tid}/mem")) else {
        return false;
    };
    let mut b = [0u8; 3];
    if std::os::unix::fs::FileExt::read_exact_at(&mem, &mut b, r.rip).is_err() {
        return false;
    }
    let (value, len) = match b {
        [0x0f, 0x31, _] => (rewind_ckpt::sys::rdtsc(), 2),
        [0x0f, 0x01, 0xf9] => {
            let (v, aux) = rewind_ckpt::sys::rdtscp();
            r.rcx = aux as u64;
            (v, 3)
        }
        _ => return false,
    };
    r.rax = value & 0xffff_ffff;
    r.rdx = value >> 32;
    r.rip += len;
    ptrace::setregs(tid, &r).is_ok()
}

/// The syscall buffer (`crate::sbuf`).
impl Recorder {
    /// Map the buffer into the program stopped after its exec.
    fn install_sbuf(&mut self, pid: pid_t) -> Result<(), Error> {
        let Some(state) = self.sbuf.as_mut() else {
            return Ok(());
        };
        *state = SbufState::default();
        state.active = crate::sbuf::install(&self.tracee, pid)?;
        if !state.active {
            tracing::warn!("syscall buffer: its address is taken; every syscall is traced");
        }
        Ok(())
    }

    /// The buffer is mapped in the current image.
    fn sbuf_active(&self) -> bool {
        self.sbuf.as_ref().is_some_and(|s| s.active)
    }

    /// Whether the stopped thread `tid` is inside the buffer's code.
    fn in_sbuf_code(&self, tid: pid_t) -> bool {
        self.sbuf_active() && ptrace::getregs(tid).is_ok_and(|r| crate::sbuf::in_code(r.rip))
    }

    /// Log what `tid` buffered since its last stop.
    fn flush_sbuf(&mut self, tid: pid_t) -> Result<(), Error> {
        if !self.sbuf_active() {
            return Ok(());
        }
        let data = crate::sbuf::take(&self.tracee)?;
        if !data.is_empty() {
            self.push(Event::Buffered { tid, data })?;
        }
        Ok(())
    }

    /// After a traced syscall: which descriptors the blob may take.
    fn sbuf_fds(
        &mut self,
        tid: pid_t,
        nr: i64,
        args: &[u64; 6],
        ret: i64,
        console: u8,
    ) -> Result<(), Error> {
        let Some(state) = self.sbuf.as_mut().filter(|s| s.active) else {
            return Ok(());
        };
        let tracee = &self.tracee;
        let mut forget = |fd: u64| {
            state.checked.remove(&(fd, false));
            state.checked.remove(&(fd, true));
            crate::sbuf::mark_fd(tracee, &mut state.read_ok, false, fd, false)?;
            crate::sbuf::mark_fd(tracee, &mut state.write_ok, true, fd, false)
        };
        match nr {
            libc::SYS_close => forget(args[0])?,
            libc::SYS_dup2 | libc::SYS_dup3 => forget(args[1])?,
            libc::SYS_close_range => {
                state.checked.clear();
                crate::sbuf::clear_fds(tracee, &mut state.read_ok, &mut state.write_ok)?;
            }
            libc::SYS_read | libc::SYS_pread64 | libc::SYS_write | libc::SYS_pwrite64
                if ret >= 0 =>
            {
                let write = matches!(nr, libc::SYS_write | libc::SYS_pwrite64);
                // The recording's console stays traced (replay shows it);
                // any other descriptor is looked at once.
                if (write && console != 0) || !state.checked.insert((args[0], write)) {
                    return Ok(());
                }
                if never_blocks(tid, args[0], write) {
                    let bits = if write {
                        &mut state.write_ok
                    } else {
                        &mut state.read_ok
                    };
                    crate::sbuf::mark_fd(tracee, bits, write, args[0], true)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Patch the syscall instruction at `site` (its call to `nr` was just
    /// logged) to go through the buffer, if its code is a known pattern;
    /// the patch is logged for replay.
    fn patch_site(&mut self, tid: pid_t, site: u64, nr: i64, args: &[u64; 6]) -> Result<(), Error> {
        use crate::sbuf;
        let Some(state) = self.sbuf.as_mut().filter(|s| s.active) else {
            return Ok(());
        };
        // A site is patched when a call the blob would take is made there
        // (a console write or a pipe read leaves it alone until then).
        let takes = match nr {
            libc::SYS_read | libc::SYS_pread64 => sbuf::is_marked(&state.read_ok, args[0]),
            libc::SYS_write | libc::SYS_pwrite64 => sbuf::is_marked(&state.write_ok, args[0]),
            libc::SYS_gettimeofday => args[1] == 0,
            _ => true,
        };
        if !takes || !state.tried.insert(site) || site < 8 {
            return Ok(());
        }
        if state
            .areas
            .iter()
            .any(|&(a, _)| (a..a + sbuf::AREA_LEN).contains(&site))
        {
            return Ok(());
        }
        let mut code = [0u8; 16];
        if self.tracee.read_mem(site - 6, &mut code).is_err() {
            return Ok(());
        }
        let Some(p) = sbuf::pattern(&code, nr) else {
            return Ok(());
        };
        // Private code only (writing into a shared mapping would change
        // its file or other processes), the patched bytes in one mapping.
        let private = rewind_ckpt::maps::read(self.tracee.pid).is_ok_and(|maps| {
            maps.iter().any(|m| {
                m.contains(site - 6)
                    && m.contains(site + 9)
                    && !m.shared
                    && m.prot & libc::PROT_EXEC as u32 != 0
            })
        });
        if !private {
            return Ok(());
        }
        // Only this thread runs user code; the others are in or at
        // syscalls (rip after one), or preempted anywhere. The Xor patch
        // overwrites the syscall instruction itself: not under a thread
        // stopped right on it.
        if p == sbuf::Pattern::Xor {
            for (&other, t) in &self.threads {
                if other != tid
                    && matches!(t.state, State::Waiting { .. })
                    && ptrace::getregs(other).map_or(true, |r| r.rip == site)
                {
                    return Ok(());
                }
            }
        }
        let Some(state) = self.sbuf.as_mut() else {
            return Ok(());
        };
        let (lo, hi) = sbuf::stub_window(site, p);
        let mut chosen = None;
        for (i, (area, used)) in state.areas.iter().enumerate() {
            let at = sbuf::slot(*area, *used);
            if *used < sbuf::SLOTS && (lo..=hi).contains(&at) {
                chosen = Some((i, at));
                break;
            }
        }
        let mut new_area = 0;
        let (index, at) = match chosen {
            Some(c) => c,
            None => {
                let area = sbuf::new_area(site, p);
                if sbuf::map_area(&self.tracee, tid, area)? as u64 != area {
                    return Ok(());
                }
                new_area = area;
                state.areas.push((area, 1));
                (state.areas.len() - 1, sbuf::slot(area, 1))
            }
        };
        let area = state.areas[index].0;
        let Some(jump) = sbuf::site_patch(site, p, at) else {
            return Ok(());
        };
        state.areas[index].1 += 1;
        let mut writes = Vec::new();
        if new_area != 0 {
            writes.push((new_area, sbuf::area_header()));
        }
        writes.push((at, sbuf::stub(at, area, nr, site, p)));
        writes.push(jump);
        for (addr, bytes) in &writes {
            self.tracee.write_mem(*addr, bytes)?;
        }
        self.push(Event::Patch {
            tid,
            area: new_area,
            writes,
        })
    }
}

/// Whether calls on descriptor `fd` of `tid` never wait: regular files,
/// and (for reads) the memory devices (/dev/null, zero, urandom...).
fn never_blocks(tid: pid_t, fd: u64, write: bool) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(md) = std::fs::metadata(format!("/proc/{tid}/fd/{fd}")) else {
        return false;
    };
    let ft = md.file_type();
    ft.is_file() || (!write && ft.is_char_device() && libc::major(md.rdev()) == 1)
}
