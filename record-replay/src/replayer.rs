//! The replayer: restores the trace's initial image and re-executes the
//! program natively, feeding it the recorded events in order. Emulated
//! syscalls are skipped and their results written; syscalls that shape the
//! process run for real at the recorded addresses. A thread runs only when
//! the next event is its own, so the recorded interleaving comes back.
//! Nothing outside the process is touched: the program's writes to its
//! stdout and stderr are shown from the log, not performed.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use libc::{pid_t, user_regs_struct};
use rewind_ckpt::restore::{self, RestartOptions};
use rewind_ckpt::sys::ptrace::{self, Stop, PTRACE_EVENT_STOP};
use rewind_ckpt::tracee::{ThreadCopy, Tracee};

use crate::recorder::{call_disposition, cpu_info, native_syscalls, regs_args, tsc_instruction};
use crate::syscalls::{self, Disposition};
use crate::trace::format::{Event, TraceHeader};
use crate::trace::{self, EventList, EventReader, TraceError};
use crate::{regs_checksum, Error};

const ERESTARTSYS: i64 = -512;
const ERESTART_RESTARTBLOCK: i64 = -516;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
/// TF in rflags.
const TRAP_FLAG: u64 = 1 << 8;

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
    /// Inside fork, vfork or clone, past its event stop: the child exists
    /// (replaying a tree).
    InFork,
}

type BlobCache = Rc<RefCell<HashMap<String, Rc<Vec<u8>>>>>;

/// Stops of threads caught while waiting for another, by thread; shared
/// by the replayers of a tree's processes.
type Queue = Rc<RefCell<HashMap<pid_t, std::collections::VecDeque<Stop>>>>;

/// A process made by a `Fork` event while replaying a tree, for the
/// driver to replay from its own log.
#[derive(Debug, Clone, Copy)]
pub struct Forked {
    /// Its recorded pid.
    pub recorded: i32,
    /// The process made in replay, at its first stop.
    pub real: pid_t,
    /// Where the kernel stored its (real) pid in its memory
    /// (CLONE_CHILD_SETTID): the recorded pid goes there.
    pub settid: Option<u64>,
    /// It runs in its parent's memory (vfork, CLONE_VM).
    pub shares_memory: bool,
}

/// Where the program's writes to its stdout and stderr go, shared by every
/// copy of a replay (a debugger re-executes the same events many times:
/// each write is shown once, the first time replay passes it).
pub struct Console<'a> {
    /// Writes of events up to this one were shown already.
    pub shown_through: u64,
    pub out: Box<dyn Write + 'a>,
    pub err: Box<dyn Write + 'a>,
}

impl<'a> Console<'a> {
    pub fn new(out: Box<dyn Write + 'a>, err: Box<dyn Write + 'a>) -> Rc<RefCell<Console<'a>>> {
        Rc::new(RefCell::new(Console {
            shown_through: 0,
            out,
            err,
        }))
    }
}

/// Where the events come from: streamed from the trace (plain replay), or
/// all in memory (a debugger going back and forth).
enum Source {
    Stream(Box<EventReader>),
    Loaded(EventList),
}

/// What a debugger asks of a replay: breakpoints to stop at, or one
/// instruction at a time. Replay pauses before the pending event is
/// applied and goes on from there when advanced again.
#[derive(Debug, Clone, Default)]
pub struct DebugCtl {
    /// Addresses of software breakpoints (int3 is written only while a
    /// thread runs; memory reads never see it).
    pub breakpoints: BTreeSet<u64>,
    /// Run one instruction at a time.
    pub step: bool,
    /// Hardware watchpoints (at most 4, the debug registers), armed while
    /// threads run (also while stepping: an instruction that triggers one
    /// pauses as `Pause::Watch` rather than `Pause::Step`).
    pub watches: Vec<Watch>,
}

/// A hardware watchpoint: `len` (1, 2, 4 or 8, aligned) bytes at `addr`;
/// writes only, or any access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Watch {
    pub addr: u64,
    pub len: u8,
    pub access: bool,
}

/// Why replay paused between events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Thread `tid` (recorded id) arrived at breakpoint `addr` (not yet
    /// executed). Resuming from a breakpoint does not report it again.
    Breakpoint { tid: i32, addr: u64 },
    /// Thread `tid` executed one instruction.
    Step { tid: i32 },
    /// Thread `tid` accessed a watched location (the instruction is done).
    Watch { tid: i32, watch: Watch },
    /// Ctrl-C stopped thread `tid` somewhere between events: a position
    /// with no coordinate, to be left (the debugger goes back to where the
    /// command began).
    Interrupted { tid: i32 },
}

/// What [`Replayer::advance`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// The pending event was applied; `stepped` if, in step mode, an
    /// instruction ran on the way (some events apply without running any).
    Event { stepped: bool },
    /// Stopped before the pending event.
    Paused(Pause),
    /// No events are left: the program would run to its end.
    End,
}

pub struct Replayer<'a> {
    dir: PathBuf,
    opts: ReplayOptions,
    tracee: Tracee,
    threads: Threads,
    event: u64,
    source: Source,
    console: Rc<RefCell<Console<'a>>>,
    exit: Option<i32>,
    cpu: usize,
    /// Stops of other threads seen while waiting for one.
    queued: Queue,
    /// Replaying one process of a tree: fork-like calls run for real.
    tree: bool,
    /// Processes made since the driver last looked.
    forked: Vec<Forked>,
    /// With `verify_memory`: the memory checksum when a thread reached a
    /// blocking syscall (its `Enter`), where the recorder took the one its
    /// `Syscall` event holds (others may run before that is applied).
    entry_mem: HashMap<i32, u64>,
    /// Threads whose last syscall returned a restart code (it was
    /// interrupted by a signal): the kernel restarts it only if a signal
    /// comes; if none is sent to the thread, replay restarts it.
    restart: std::collections::HashSet<i32>,
    /// The trace's `blobs/` (a tree's processes share the root's).
    blobs: PathBuf,
    /// Blobs read so far, shared by the replayers of a tree and the
    /// copies of a replay.
    blob_cache: BlobCache,
    /// The last syscall event applied to each thread (number, arguments).
    last_call: HashMap<i32, (i64, [u64; 6])>,
    /// Asynchronous signals re-sent to a thread, to be delivered at its
    /// next run: the handler's frame is fixed as the recorder fixed it
    /// (`clear_frame_fault`). A signal that interrupted a call with a
    /// temporary mask (pselect6, ppoll, epoll_pwait, rt_sigsuspend) is
    /// delivered under that mask, set with ptrace as the emulated call never
    /// did; the frame then holds the thread's own mask (Some), for sigreturn
    /// to restore, as the kernel's saved mask did when recording.
    frame_fix: HashMap<i32, Option<u64>>,
    debug: Option<DebugCtl>,
    pause: Option<Pause>,
    stepped: bool,
    /// The breakpoint run_to_regs uses to find a preemption point.
    internal_bp: Option<u64>,
    /// Watchpoints programmed in each thread's debug registers.
    dr_state: HashMap<pid_t, Vec<Watch>>,
    /// A snapshot's threads other than its live one (see
    /// [`Replayer::snapshot`]).
    held: Option<Held>,
    /// The last reading of each thread for a copy (by recorded id), kept
    /// while the thread does not run: its syscall-made parts are reused.
    known: RefCell<HashMap<i32, ThreadCopy>>,
    /// See [`Replayer::set_pending`].
    pending: Option<Event>,
    /// The `Mark` event of this index was reached and reported as a pause:
    /// applying it runs nothing.
    mark_reached: Option<u64>,
    /// The process has the syscall buffer (`crate::sbuf`).
    sbuf: bool,
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
    if crate::sbuf::present(&restored.tracee) {
        crate::sbuf::start_replay(&restored.tracee)?;
    }
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
    if let Some(schedule) = trace::read_schedule(&opts.dir)? {
        if opts.from.is_some() {
            return Err(Error::Usage(format!(
                "{} holds a process tree (the program made processes): --from is for a trace of one process; replay it whole",
                opts.dir.display()
            )));
        }
        return tree::replay(opts, &header, end, &schedule, out, err);
    }
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
    let console = Console::new(Box::new(out), Box::new(err));
    let mut r = Replayer::streamed(opts, tracee, threads, events, skip, console, cpu);
    let result = r.run();
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

mod tree;

/// A trace loaded for a debugger: its header, every event, and how the
/// recording ended (None if it was cut short).
pub struct LoadedTrace {
    /// The directory of the process's log and images (a process of a
    /// tree: `proc-PID/` of the trace).
    pub dir: PathBuf,
    pub header: TraceHeader,
    pub events: EventList,
    pub end: Option<crate::trace::format::TraceEnd>,
    /// The trace's store of mapped files (`blobs/`).
    pub blobs: PathBuf,
    /// The thread id the starting image gives the process's thread, and the
    /// recorded one the events name it by (a process of a tree started from
    /// an image made in a replay, see `load_process`).
    pub renamed: Option<(i32, i32)>,
}

/// Every event of the log in `dir`.
fn read_events(dir: &Path) -> Result<Vec<Event>, Error> {
    let mut reader = EventReader::open(dir)?;
    let mut events = Vec::new();
    while let Some(ev) = reader.next_event()? {
        events.push(ev);
    }
    Ok(events)
}

/// Read a whole trace into memory, checking first that this machine can
/// replay it.
pub fn load(dir: &Path) -> Result<LoadedTrace, Error> {
    let header = trace::read_header(dir)?;
    check_machine(&header)?;
    let end = trace::read_end(dir)?;
    Ok(LoadedTrace {
        dir: dir.to_path_buf(),
        header,
        events: EventList::new(read_events(dir)?),
        end,
        blobs: dir.join("blobs"),
        renamed: None,
    })
}

/// Read process `pid` of a recorded tree into memory, for a debugger, and
/// name the image it starts from. A process that exec'd starts at its
/// first exec (its events after it, its exec image); one that never did
/// starts where it was made: the tree is replayed to that point once and
/// an image of the new process written into its directory (`forked.rwd`,
/// kept for the next time; in the temporary directory if the trace cannot
/// be written). The program's own process is read whole, from its initial
/// image.
pub fn load_process(dir: &Path, pid: i32) -> Result<(LoadedTrace, String), Error> {
    let Some(schedule) = trace::read_schedule(dir)? else {
        return Err(Error::Usage(format!(
            "{} is a recording of one process: --process is for a recording of a process tree",
            dir.display()
        )));
    };
    if pid == schedule.root {
        return Ok((load(dir)?, "initial.rwd".into()));
    }
    if !schedule.children.iter().any(|&(child, _)| child == pid) {
        let mut known: Vec<String> = std::iter::once(schedule.root)
            .chain(schedule.children.iter().map(|c| c.0))
            .map(|p| p.to_string())
            .collect();
        known.truncate(20);
        return Err(Error::Usage(format!(
            "process {pid} is not in {} (its processes: {}{})",
            dir.display(),
            known.join(" "),
            if schedule.children.len() + 1 > 20 {
                " ..."
            } else {
                ""
            }
        )));
    }
    let header = trace::read_header(dir)?;
    check_machine(&header)?;
    let pdir = trace::process_dir(dir, pid, schedule.root);
    let end = trace::read_end(&pdir)?;
    let mut all = read_events(&pdir)?;
    let first_exec = all.iter().enumerate().find_map(|(i, e)| match e {
        Event::Exec { image, .. } => Some((i, image.clone())),
        _ => None,
    });
    let (events, image, renamed) = match first_exec {
        Some((i, image)) => (all.split_off(i + 1), image, None),
        None => {
            let (image, real) = forked_image(dir, &pdir, pid)?;
            (all, image, Some((real, pid)))
        }
    };
    let trace = LoadedTrace {
        dir: pdir,
        header,
        events: EventList::new(events),
        end,
        blobs: dir.join("blobs"),
        renamed,
    };
    Ok((trace, image))
}

/// The image of process `pid` (never exec'd) of the tree in `dir` where it
/// was made, and the pid it names the process by: `forked.rwd` of its
/// directory `pdir`, made by a replay of the tree the first time.
fn forked_image(dir: &Path, pdir: &Path, pid: i32) -> Result<(String, i32), Error> {
    let kept = pdir.join("forked.rwd");
    let real_file = pdir.join("forked.pid");
    if let (true, Ok(text)) = (kept.is_file(), std::fs::read_to_string(&real_file)) {
        if let Ok(real) = text.trim().parse() {
            return Ok(("forked.rwd".into(), real));
        }
    }
    let writable = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&real_file)
        .is_ok();
    let out = if writable {
        kept
    } else {
        std::env::temp_dir().join(format!("rewind-forked-{pid}-{}.rwd", std::process::id()))
    };
    let real = tree::image_of_forked(dir, pid, &out)?;
    if writable {
        let _ = std::fs::write(&real_file, real.to_string());
        return Ok(("forked.rwd".into(), real));
    }
    // (Absolute: the debugger opens images relative to `pdir`.)
    Ok((out.display().to_string(), real))
}

impl<'a> Replayer<'a> {
    /// A replay of the process `tracee` (with `threads`) from `source`,
    /// `event` events of which are applied already; everything else at
    /// its start.
    fn new(
        opts: &ReplayOptions,
        tracee: Tracee,
        threads: Threads,
        event: u64,
        source: Source,
        console: Rc<RefCell<Console<'a>>>,
        cpu: usize,
    ) -> Replayer<'a> {
        let sbuf = crate::sbuf::present(&tracee);
        Replayer {
            blobs: opts.dir.join("blobs"),
            dir: opts.dir.clone(),
            opts: opts.clone(),
            tracee,
            threads,
            event,
            source,
            console,
            exit: None,
            cpu,
            queued: Queue::default(),
            tree: false,
            forked: Vec::new(),
            entry_mem: HashMap::new(),
            restart: Default::default(),
            last_call: HashMap::new(),
            frame_fix: HashMap::new(),
            blob_cache: BlobCache::default(),
            debug: None,
            pause: None,
            stepped: false,
            internal_bp: None,
            dr_state: HashMap::new(),
            held: None,
            known: RefCell::default(),
            pending: None,
            mark_reached: None,
            sbuf,
        }
    }

    /// A plain replay of the process `tracee` (with `threads`) from the
    /// log `events`, `skip` events of which are applied already.
    fn streamed(
        opts: &ReplayOptions,
        tracee: Tracee,
        threads: Threads,
        events: EventReader,
        skip: u64,
        console: Rc<RefCell<Console<'a>>>,
        cpu: usize,
    ) -> Replayer<'a> {
        let source = Source::Stream(Box::new(events));
        Replayer::new(opts, tracee, threads, skip, source, console, cpu)
    }

    /// Start replaying `trace` from one of its images (`initial.rwd`, or a
    /// periodic checkpoint taken after `at_event` events), for a debugger.
    pub fn open(
        trace: &LoadedTrace,
        image: &str,
        at_event: u64,
        console: Rc<RefCell<Console<'a>>>,
    ) -> Result<Replayer<'a>, Error> {
        let cpu = trace.header.cpu as usize;
        let (tracee, threads) = start(&trace.dir.join(image), cpu)?;
        let opts = ReplayOptions {
            dir: trace.dir.clone(),
            ..Default::default()
        };
        let mut threads = threads;
        if let Some((image_tid, recorded)) = trace.renamed {
            if let Some(t) = threads.remove(&image_tid) {
                threads.insert(recorded, t);
            }
        }
        let source = Source::Loaded(trace.events.clone());
        let mut r = Replayer::new(&opts, tracee, threads, at_event, source, console, cpu);
        r.debug = Some(DebugCtl::default());
        r.blobs = trace.blobs.clone();
        Ok(r)
    }

    /// Events applied so far.
    pub fn event(&self) -> u64 {
        self.event
    }

    /// The next event to apply.
    pub fn next(&self) -> Option<Arc<Event>> {
        match &self.source {
            Source::Loaded(events) => events.get(self.event as usize),
            Source::Stream(_) => None,
        }
    }

    /// The syscall a live recording's next event will be (its result not
    /// known yet), for [`Replayer::run_to_syscall`] after the last event.
    pub fn set_pending(&mut self, syscall: Option<Event>) {
        self.pending = syscall;
    }

    /// Whether an instruction ran in the last `advance` or
    /// `run_to_syscall` while single-stepping.
    pub fn stepped(&self) -> bool {
        self.stepped
    }

    pub fn debug_mut(&mut self) -> &mut DebugCtl {
        self.debug.get_or_insert_with(DebugCtl::default)
    }

    pub fn tracee(&self) -> &Tracee {
        &self.tracee
    }

    /// (recorded id, real id) of every thread, by recorded id.
    pub fn threads(&self) -> Vec<(i32, pid_t)> {
        let mut v: Vec<(i32, pid_t)> = self.threads.iter().map(|(&v, &(r, _))| (v, r)).collect();
        v.sort();
        v
    }

    /// The program's exit status once it ended.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit
    }

    /// Run the next event's thread up to the event (a syscall), without
    /// applying it: Ok(None) when there, or the pause on the way. After the
    /// last event, the syscall is the one [`Replayer::set_pending`] gave, if
    /// any (a live recording's next event, not made yet).
    pub fn run_to_syscall(&mut self) -> Result<Option<Pause>, Error> {
        self.stepped = false;
        let next = self
            .next()
            .or_else(|| self.pending.clone().map(std::sync::Arc::new));
        let (tid, nr, args, regs) = match next.as_deref() {
            None => return Ok(None),
            Some(&Event::Syscall {
                tid,
                nr,
                args,
                regs,
                ..
            }) => (tid, nr, args, regs),
            Some(_) => return Err(Error::Unsupported("the next event is not a syscall".into())),
        };
        self.event += 1;
        let result = self.run_to_entry(tid, nr, &args, regs);
        self.event -= 1;
        match result {
            Ok(_) => Ok(None),
            Err(Error::Paused) => match self.pause.take() {
                Some(p) => Ok(Some(p)),
                None => Err(Error::Unsupported("replay paused for no reason".into())),
            },
            Err(e) => Err(e),
        }
    }

    /// Whether [`Replayer::fork`] can copy this replay: every thread at a
    /// plain stop or at the seccomp stop of a syscall not applied yet (at
    /// least one at a plain stop), no signal to deliver, no stop pending.
    pub fn can_fork(&self) -> bool {
        self.exit.is_none()
            && self.queued.borrow().values().all(|q| q.is_empty())
            && self.threads.values().all(|&(_, at)| {
                matches!(
                    at,
                    At::Stopped { sig: 0 } | At::Skipped | At::Exit | At::Entry
                )
            })
            && self.threads.values().any(|&(_, at)| at != At::Entry)
    }

    /// An independent copy of this replay, in a new process forked from
    /// this one (copy-on-write), that can run: a working copy of a
    /// snapshot. Fork copies one thread; the others are recreated in the
    /// copy (`rewind_ckpt::tracee::recreate_threads`) from what was read of
    /// them (this replay's threads, or what a snapshot holds of them).
    pub fn fork(&self) -> Result<Replayer<'a>, Error> {
        let (mut copy, held) = self.copy()?;
        if let Some(held) = held {
            let mut created = Vec::new();
            let others: Vec<ThreadCopy> = held.others.iter().map(|t| t.2.clone()).collect();
            let made = rewind_ckpt::tracee::recreate_threads(
                &mut copy.tracee,
                &held.main,
                &others,
                &mut created,
            );
            let known = copy.known.get_mut();
            for (i, tid) in created.into_iter().enumerate() {
                let (vtid, at, ref t) = held.others[i];
                copy.threads.insert(vtid, (tid, at));
                known.insert(vtid, ThreadCopy { tid, ..t.clone() });
            }
            // On failure the copy is dropped: killed with what was made.
            made?;
            if let Some((&vtid, &(tid, _))) =
                copy.threads.iter().find(|t| t.1 .0 == copy.tracee.pid)
            {
                known.insert(vtid, ThreadCopy { tid, ..held.main });
            }
        }
        Ok(copy)
    }

    /// An in-memory snapshot of this replay: a copy that only
    /// [`Replayer::fork`] uses. It is one stopped process (its other
    /// threads are held as data and recreated in each working copy), so
    /// that many snapshots cost the tracer little.
    pub fn snapshot(&self) -> Result<Replayer<'a>, Error> {
        let (mut copy, held) = self.copy()?;
        copy.held = held;
        Ok(copy)
    }

    /// A one-thread copy of this replay and what its other threads are.
    fn copy(&self) -> Result<(Replayer<'a>, Option<Held>), Error> {
        if !self.can_fork() {
            return Err(Error::Unsupported(
                "this replay cannot be forked here (a signal being delivered, or no thread at a plain stop)"
                    .into(),
            ));
        }
        let (main_vtid, main_real, main_at, held) = match &self.held {
            Some(held) => {
                let Some((&vtid, &(real, at))) = self.threads.iter().next() else {
                    return Err(Error::Unsupported("no thread to fork".into()));
                };
                (vtid, real, at, Some(held.clone()))
            }
            None => self.read_threads()?,
        };
        let child = rewind_ckpt::tracee::fork_stopped(&self.tracee, main_real)?;
        let tracee = Tracee::new(child)?;
        let mut threads = HashMap::new();
        threads.insert(main_vtid, (child, main_at));
        let source = match &self.source {
            Source::Loaded(ev) => Source::Loaded(ev.clone()),
            Source::Stream(_) => {
                return Err(Error::Unsupported(
                    "a streamed replay cannot be forked".into(),
                ))
            }
        };
        let console = self.console.clone();
        let mut copy = Replayer::new(
            &self.opts, tracee, threads, self.event, source, console, self.cpu,
        );
        copy.blobs = self.blobs.clone();
        copy.blob_cache = self.blob_cache.clone();
        copy.debug = self.debug.clone();
        // A copy made at a mark's reported arrival is there too.
        copy.mark_reached = self.mark_reached;
        copy.sbuf = self.sbuf;
        Ok((copy, held))
    }

    /// The thread to fork from (the leader when it is at a plain stop)
    /// and, with several threads, what fork does not copy of them.
    fn read_threads(&self) -> Result<(i32, pid_t, At, Option<Held>), Error> {
        let mut order: Vec<(i32, pid_t, At)> =
            self.threads.iter().map(|(&v, &(r, a))| (v, r, a)).collect();
        order.sort_by_key(|t| t.0);
        let main = order
            .iter()
            .position(|t| t.1 == self.tracee.pid && t.2 != At::Entry)
            .or_else(|| order.iter().position(|t| t.2 != At::Entry))
            .ok_or_else(|| Error::Unsupported("no thread to fork".into()))?;
        let (vtid, real, at) = order.remove(main);
        if order.is_empty() {
            return Ok((vtid, real, at, None));
        }
        let read = |vtid: i32, real: pid_t, at: At| {
            let known = self.known.borrow().get(&vtid).cloned();
            let t = rewind_ckpt::tracee::read_thread(
                &self.tracee,
                real,
                at == At::Entry,
                known.as_ref(),
            )?;
            self.known.borrow_mut().insert(vtid, t.clone());
            Ok::<_, Error>(t)
        };
        let held = Held {
            main: read(vtid, real, at)?,
            others: order
                .iter()
                .map(|&(v, r, a)| Ok((v, a, read(v, r, a)?)))
                .collect::<Result<_, Error>>()?,
        };
        let restart = |t: &rewind_ckpt::tracee::ThreadCopy| {
            (t.regs.orig_rax as i64) >= 0
                && (ERESTART_RESTARTBLOCK..=ERESTARTSYS).contains(&(t.regs.rax as i64))
        };
        if restart(&held.main) || held.others.iter().any(|t| restart(&t.2)) {
            return Err(Error::Unsupported(
                "this replay cannot be forked here (a thread's syscall is to be restarted)".into(),
            ));
        }
        Ok((vtid, real, at, Some(held)))
    }
}

/// The threads of a snapshot other than its one live thread, as data.
#[derive(Clone)]
struct Held {
    /// What fork drops of the live thread.
    main: ThreadCopy,
    /// (recorded id, where it was, what it was).
    others: Vec<(i32, At, ThreadCopy)>,
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
        let pid = self.tracee.pid;
        let popped = self
            .queued
            .borrow_mut()
            .get_mut(&real)
            .and_then(|q| q.pop_front());
        if let Some(stop) = popped {
            if real == pid {
                self.note_exit(stop);
            }
            return Ok(stop);
        }
        loop {
            let Some((tid, stop)) = ptrace::wait(-1, false).map_err(perr("waitpid", real))? else {
                continue;
            };
            let ended = matches!(stop, Stop::Exited(_) | Stop::Killed(_));
            if tid == pid && ended {
                self.note_exit(stop);
                return Ok(stop);
            }
            if tid == real {
                return Ok(stop);
            }
            // Another process's end is its replayer's to see.
            if !ended || self.tree {
                self.queued
                    .borrow_mut()
                    .entry(tid)
                    .or_default()
                    .push_back(stop);
            }
        }
    }

    fn note_exit(&mut self, stop: Stop) {
        match stop {
            Stop::Exited(c) => self.exit = Some(c),
            Stop::Killed(s) => self.exit = Some(128 + s),
            _ => {}
        }
    }

    /// The next stop of any thread of this process. Replaying a tree, the
    /// stops of other processes are kept for their replayers.
    fn wait_own(&mut self) -> Result<(pid_t, Stop), Error> {
        let pid = self.tracee.pid;
        let own: Vec<pid_t> = self.threads.values().map(|t| t.0).chain([pid]).collect();
        {
            let mut queued = self.queued.borrow_mut();
            for &t in &own {
                if let Some(stop) = queued.get_mut(&t).and_then(|q| q.pop_front()) {
                    return Ok((t, stop));
                }
            }
        }
        loop {
            let Some((tid, stop)) = ptrace::wait(-1, false).map_err(perr("waitpid", pid))? else {
                continue;
            };
            if self.tree && !own.contains(&tid) && rewind_ckpt::tracee::tgid_of(tid) != Some(pid) {
                self.queued
                    .borrow_mut()
                    .entry(tid)
                    .or_default()
                    .push_back(stop);
                continue;
            }
            return Ok((tid, stop));
        }
    }

    /// Kill the replayed process and reap every thread of it (the leader
    /// is reported last). Other processes under our control are left be.
    pub fn kill(&mut self) {
        let pid = self.tracee.pid;
        let _ = rewind_ckpt::sys::process::kill(pid, libc::SIGKILL);
        let mut tids: Vec<pid_t> = self.threads.values().map(|t| t.0).collect();
        tids.retain(|&t| t != pid);
        tids.push(pid);
        for tid in tids {
            loop {
                match ptrace::wait(tid, false) {
                    Ok(Some((_, Stop::Exited(_) | Stop::Killed(_)))) | Err(_) => break,
                    _ => {}
                }
            }
        }
        {
            let mut queued = self.queued.borrow_mut();
            queued.remove(&pid);
            for (real, _) in self.threads.values() {
                queued.remove(real);
            }
        }
        self.exit.get_or_insert(128 + libc::SIGKILL);
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
        // Every run of a thread ends here: what was read of it is stale.
        self.known.get_mut().remove(&tid);
        if let Some(t) = self.threads.get_mut(&tid) {
            t.1 = at;
        }
    }

    /// The next event; for a trace in memory, by index, so that after a
    /// pause the same event comes again.
    fn next_event(&mut self) -> Result<Option<Event>, Error> {
        match &mut self.source {
            Source::Stream(reader) => Ok(reader.next_event()?),
            Source::Loaded(events) => Ok(events.get(self.event as usize).map(|e| (*e).clone())),
        }
    }

    fn run(&mut self) -> Result<(), Error> {
        loop {
            match self.advance()? {
                Advance::End => break,
                _ if self.exit.is_some() => break,
                _ => {}
            }
        }
        if self.exit.is_none() {
            self.finish()?;
        }
        Ok(())
    }

    /// Apply the next event: run its thread up to it and feed it. In debug
    /// mode this may pause first (a breakpoint, one step); advancing again
    /// goes on from there.
    pub fn advance(&mut self) -> Result<Advance, Error> {
        let Some(ev) = self.next_event()? else {
            return Ok(Advance::End);
        };
        self.event += 1;
        if tracing::enabled!(tracing::Level::TRACE) {
            let mut shown = format!("{ev:?}");
            shown.truncate(300);
            tracing::trace!("event {}: {shown}", self.event);
        }
        self.stepped = false;
        match self.step(ev) {
            Ok(()) => Ok(Advance::Event {
                stepped: self.stepped,
            }),
            Err(Error::Paused) => {
                // Not applied: advancing again takes it up where it paused.
                self.event -= 1;
                match self.pause.take() {
                    Some(p) => Ok(Advance::Paused(p)),
                    None => Err(Error::Unsupported("replay paused for no reason".into())),
                }
            }
            Err(e) => Err(e),
        }
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
            let (tid, stop) = self.wait_own()?;
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
    /// emulated) are dropped. In debug mode, pauses at breakpoints (and
    /// at `internal_bp`, returned as a SIGTRAP stop with rip at it) or
    /// after one instruction.
    fn run_to_stop(&mut self, vtid: i32) -> Result<(Stop, Option<user_regs_struct>), Error> {
        let (real, at) = self.thread(vtid)?;
        let mut sig = match at {
            At::Stopped { sig } => sig,
            _ => 0,
        };
        if let (Some(own), true) = (self.frame_fix.remove(&vtid), sig != 0) {
            if own.is_some() || crate::has_handler(real, sig) {
                self.enter_handler(vtid, real, sig, own)?;
                sig = 0;
            }
        }
        let mut from_syscall_stop = matches!(at, At::Skipped | At::Exit | At::Entry);
        if self.restart.remove(&vtid) && at == At::Exit {
            self.restart_syscall(real)?;
        }
        self.set_at(vtid, At::Stopped { sig: 0 });
        loop {
            let stepping = self.debug.as_ref().is_some_and(|d| d.step);
            self.sync_watches(real, stepping)?;
            let stop = match stepping {
                true => {
                    let before = ptrace::getregs(real).map(|r| r.rip).ok();
                    let syscall_insn = before.is_some_and(|rip| self.is_syscall_insn(rip));
                    ptrace::singlestep(real, sig).map_err(perr("PTRACE_SINGLESTEP", real))?;
                    self.stepped = true;
                    let mut stop = self.wait_for(real)?;
                    if from_syscall_stop && stop == Stop::Signal(libc::SIGTRAP) {
                        // Stepping out of a syscall stop, the kernel first
                        // reports the syscall's end (TRAP_BRKPT, nothing
                        // executed). A thread resumed from a copy of this
                        // state does not: step once more so both agree.
                        let info =
                            ptrace::getsiginfo(real).map_err(perr("PTRACE_GETSIGINFO", real))?;
                        let code = i32::from_le_bytes([info[8], info[9], info[10], info[11]]);
                        let rip = ptrace::getregs(real).map(|r| r.rip).ok();
                        if code == 1 && rip == before {
                            ptrace::singlestep(real, 0).map_err(perr("PTRACE_SINGLESTEP", real))?;
                            stop = self.wait_for(real)?;
                        }
                    }
                    from_syscall_stop = false;
                    if syscall_insn && !matches!(stop, Stop::Exited(_) | Stop::Killed(_)) {
                        // `syscall` saved rflags, with our trap flag, in
                        // r11: the program must not see it (it does not when
                        // the same code runs without stepping).
                        if let Ok(mut r) = ptrace::getregs(real) {
                            if r.r11 & TRAP_FLAG != 0 {
                                r.r11 &= !TRAP_FLAG;
                                ptrace::setregs(real, &r).map_err(perr("PTRACE_SETREGS", real))?;
                            }
                        }
                    }
                    if stop == Stop::Signal(libc::SIGTRAP) && self.is_step_trap(real)? {
                        if let Some(addr) = self.internal_bp {
                            let r = ptrace::getregs(real).map_err(perr("PTRACE_GETREGS", real))?;
                            if r.rip == addr {
                                return Ok((stop, Some(r)));
                            }
                        }
                        // A watchpoint armed while stepping (a debugger's
                        // stepi) that the instruction triggered.
                        self.pause = Some(match self.watch_hit(real)? {
                            Some(watch) => Pause::Watch { tid: vtid, watch },
                            None => Pause::Step { tid: vtid },
                        });
                        return Err(Error::Paused);
                    }
                    stop
                }
                false => {
                    // (Plain replay has no breakpoints: no register read.)
                    let at_breakpoint = self.any_breakpoints()
                        && self.is_breakpoint(
                            ptrace::getregs(real)
                                .map_err(perr("PTRACE_GETREGS", real))?
                                .rip,
                        );
                    if at_breakpoint {
                        // Already there: execute it before arming.
                        ptrace::singlestep(real, sig).map_err(perr("PTRACE_SINGLESTEP", real))?;
                        sig = 0;
                        let stop = self.wait_for(real)?;
                        if stop == Stop::Signal(libc::SIGTRAP) {
                            if let Some(watch) = self.watch_hit(real)? {
                                self.pause = Some(Pause::Watch { tid: vtid, watch });
                                return Err(Error::Paused);
                            }
                        }
                        if stop == Stop::Signal(libc::SIGTRAP) && self.is_step_trap(real)? {
                            // Landed on another breakpoint: that is an
                            // arrival (only the starting one is not).
                            let r = ptrace::getregs(real).map_err(perr("PTRACE_GETREGS", real))?;
                            if self.internal_bp == Some(r.rip) {
                                return Ok((stop, Some(r)));
                            }
                            if self.is_breakpoint(r.rip) {
                                self.pause = Some(Pause::Breakpoint {
                                    tid: vtid,
                                    addr: r.rip,
                                });
                                return Err(Error::Paused);
                            }
                            continue;
                        }
                        stop
                    } else {
                        let armed = self.arm()?;
                        if self.debug.is_some() {
                            rewind_ckpt::sys::set_running(self.tracee.pid, real);
                        }
                        let r = ptrace::cont(real, sig).map_err(perr("PTRACE_CONT", real));
                        let stop = r.and_then(|()| self.wait_for(real));
                        rewind_ckpt::sys::set_running(0, 0);
                        self.disarm(&armed)?;
                        let stop = stop?;
                        if stop == Stop::Signal(libc::SIGTRAP) {
                            if let Some(watch) = self.watch_hit(real)? {
                                self.pause = Some(Pause::Watch { tid: vtid, watch });
                                return Err(Error::Paused);
                            }
                            if let Some(hit) = self.breakpoint_trap(real, &armed)? {
                                if self.internal_bp == Some(hit.rip) {
                                    // run_to_regs decides; a user breakpoint
                                    // there is reported if it is not the
                                    // preemption point.
                                    return Ok((stop, Some(hit)));
                                }
                                self.pause = Some(Pause::Breakpoint {
                                    tid: vtid,
                                    addr: hit.rip,
                                });
                                return Err(Error::Paused);
                            }
                        }
                        stop
                    }
                }
            };
            sig = 0;
            if stop == Stop::Signal(libc::SIGINT)
                && self.debug.is_some()
                && rewind_ckpt::sys::interrupt_pending()
            {
                // Our own Ctrl-C, passed on to stop the run (resuming
                // later with no signal drops it).
                self.pause = Some(Pause::Interrupted { tid: vtid });
                return Err(Error::Paused);
            }
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
                }
                Stop::Event(libc::PTRACE_EVENT_SECCOMP, _) => {
                    return Ok((stop, ptrace::getregs(real).ok()))
                }
                Stop::Exited(_) | Stop::Killed(_) => return Ok((stop, None)),
                _ => {}
            }
        }
    }

    /// Restart the interrupted syscall `real` stopped at the exit of, as
    /// the kernel does when no handler runs: when recording, the signal
    /// that interrupted it went to another thread (or was ignored), and
    /// none comes to this one in replay to make the kernel do it.
    fn restart_syscall(&mut self, real: pid_t) -> Result<(), Error> {
        let mut r = ptrace::getregs(real).map_err(perr("PTRACE_GETREGS", real))?;
        let code = r.rax as i64;
        if !(ERESTART_RESTARTBLOCK..=ERESTARTSYS).contains(&code) || (r.orig_rax as i64) < 0 {
            return Ok(());
        }
        r.rax = if code == ERESTART_RESTARTBLOCK {
            libc::SYS_restart_syscall as u64
        } else {
            r.orig_rax
        };
        r.rip -= 2;
        // Not again by the kernel, should a signal come now.
        r.orig_rax = u64::MAX;
        ptrace::setregs(real, &r).map_err(perr("PTRACE_SETREGS", real))
    }

    /// Program `real`'s debug registers with the watchpoints (none while
    /// stepping), if they are not already.
    fn sync_watches(&mut self, real: pid_t, stepping: bool) -> Result<(), Error> {
        // Watchpoints are armed while stepping only when the debugger asks
        // for both (a step then reports the access as `Pause::Watch`).
        let _ = stepping;
        let want: Vec<Watch> = match &self.debug {
            Some(d) => d.watches.iter().take(4).copied().collect(),
            _ => Vec::new(),
        };
        let have = self.dr_state.get(&real).cloned().unwrap_or_default();
        if want == have {
            return Ok(());
        }
        let bad = |e: nix::errno::Errno| {
            Error::Unsupported(format!("cannot program the debug registers: {e}"))
        };
        ptrace::set_debugreg(real, 7, 0).map_err(bad)?;
        let mut dr7 = 0u64;
        for (i, w) in want.iter().enumerate() {
            ptrace::set_debugreg(real, i, w.addr).map_err(bad)?;
            let rw = if w.access { 0b11 } else { 0b01 };
            let len = match w.len {
                1 => 0b00,
                2 => 0b01,
                8 => 0b10,
                _ => 0b11,
            };
            dr7 |= 1 << (2 * i);
            dr7 |= (rw | (len << 2)) << (16 + 4 * i);
        }
        if dr7 != 0 {
            ptrace::set_debugreg(real, 7, dr7).map_err(bad)?;
        }
        self.dr_state.insert(real, want);
        Ok(())
    }

    /// If `real`'s SIGTRAP came from a watchpoint, which (and reset DR6).
    fn watch_hit(&mut self, real: pid_t) -> Result<Option<Watch>, Error> {
        let Some(have) = self.dr_state.get(&real).filter(|h| !h.is_empty()).cloned() else {
            return Ok(None);
        };
        let dr6 = ptrace::get_debugreg(real, 6).unwrap_or(0);
        let hit = (0..have.len()).find(|&i| dr6 & (1 << i) != 0);
        if dr6 & 0xf != 0 {
            let _ = ptrace::set_debugreg(real, 6, 0);
        }
        Ok(hit.map(|i| have[i]))
    }

    /// Whether the instruction at `rip` is `syscall`.
    fn is_syscall_insn(&self, rip: u64) -> bool {
        let mut code = [0u8; 2];
        self.tracee.read_mem(rip, &mut code).is_ok() && code == [0x0f, 0x05]
    }

    fn any_breakpoints(&self) -> bool {
        self.internal_bp.is_some()
            || self
                .debug
                .as_ref()
                .is_some_and(|d| !d.breakpoints.is_empty())
    }

    fn is_breakpoint(&self, addr: u64) -> bool {
        self.internal_bp == Some(addr)
            || self
                .debug
                .as_ref()
                .is_some_and(|d| d.breakpoints.contains(&addr))
    }

    /// Write int3 at every breakpoint; returns what was there.
    fn arm(&self) -> Result<Vec<(u64, u8)>, Error> {
        let mut armed = Vec::new();
        let addrs = self
            .debug
            .iter()
            .flat_map(|d| d.breakpoints.iter().copied())
            .chain(self.internal_bp);
        for addr in addrs {
            if armed.iter().any(|&(a, _)| a == addr) {
                continue;
            }
            let mut orig = [0u8; 1];
            // An address that is not mapped (yet) cannot be hit.
            if self.tracee.read_mem(addr, &mut orig).is_ok()
                && self.tracee.write_mem(addr, &[0xcc]).is_ok()
            {
                armed.push((addr, orig[0]));
            }
        }
        Ok(armed)
    }

    fn disarm(&self, armed: &[(u64, u8)]) -> Result<(), Error> {
        for &(addr, orig) in armed.iter().rev() {
            // The program may have unmapped it meanwhile.
            let _ = self.tracee.write_mem(addr, &[orig]);
        }
        Ok(())
    }

    /// If the SIGTRAP `real` stopped with comes from one of our int3s,
    /// put rip back on it and return the registers.
    fn breakpoint_trap(
        &self,
        real: pid_t,
        armed: &[(u64, u8)],
    ) -> Result<Option<user_regs_struct>, Error> {
        let info = ptrace::getsiginfo(real).map_err(perr("PTRACE_GETSIGINFO", real))?;
        let code = i32::from_le_bytes([info[8], info[9], info[10], info[11]]);
        if code != 0x80 {
            return Ok(None);
        }
        let mut r = ptrace::getregs(real).map_err(perr("PTRACE_GETREGS", real))?;
        let addr = r.rip.wrapping_sub(1);
        if !armed.iter().any(|&(a, _)| a == addr) {
            return Ok(None);
        }
        r.rip = addr;
        ptrace::setregs(real, &r).map_err(perr("PTRACE_SETREGS", real))?;
        Ok(Some(r))
    }

    /// Whether the SIGTRAP `real` stopped with is the end of a single step
    /// (not the program's own trap).
    fn is_step_trap(&self, real: pid_t) -> Result<bool, Error> {
        let info = ptrace::getsiginfo(real).map_err(perr("PTRACE_GETSIGINFO", real))?;
        let code = i32::from_le_bytes([info[8], info[9], info[10], info[11]]);
        // TRAP_TRACE, TRAP_BRKPT (x86 reports some steps so), or the
        // kernel's own notification (si_code SIGTRAP) after stepping into
        // a signal handler.
        Ok(code == 2 || code == 1 || code == libc::SIGTRAP)
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
            Event::Mark { tid, addr, regs } => self.run_to_mark(tid, addr, &regs)?,
            // Only a starting point for `--from`.
            Event::Checkpoint { .. } => {}
            Event::Enter {
                tid,
                nr,
                args,
                regs,
            } => {
                self.run_to_entry(tid, nr, &args, regs)?;
                self.check_buffer_consumed(tid, nr, &args)?;
                if self.opts.verify_memory {
                    self.entry_mem
                        .insert(tid, crate::memory_checksum(&self.tracee));
                }
            }
            Event::Buffered { tid, data } => {
                if let Err(why) = crate::sbuf::check_records(&data) {
                    return Err(TraceError::Corrupt {
                        path: self.dir.join("events"),
                        what: format!("buffered syscalls of event {}", self.event),
                        why,
                    }
                    .into());
                }
                crate::sbuf::load(&self.tracee, &data).map_err(|e| self.diverge(tid, e))?;
            }
            Event::Patch { tid, area, writes } => self.patch(tid, area, &writes)?,
            Event::Mapped { addr, blob, .. } => {
                let bytes = self.blob(&blob)?;
                self.tracee.write_mem(addr, &bytes)?;
            }
            // Replaying one process, its children are not made.
            Event::Fork { .. } if !self.tree => {}
            Event::Fork { tid, child } => self.fork_child(tid, child)?,
            Event::Syscall {
                tid,
                nr,
                args,
                ret,
                writes,
                mem,
                ..
            } if self.threads.get(&tid).is_some_and(|t| t.1 == At::InFork) => {
                // Memory as it was at the call's entry, which the fork
                // event passed (`fork_child`).
                let have = self.entry_mem.remove(&tid);
                if let (true, Some(want), Some(have)) = (self.opts.verify_memory, mem, have) {
                    if have != want {
                        return Err(self.diverge(
                            tid,
                            format!("memory checksum mismatch at {}", describe(nr, &args)),
                        ));
                    }
                }
                self.finish_fork(tid, nr, &args, ret, &writes)?
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
                self.check_buffer_consumed(tid, nr, &args)?;
                if let (true, Some(want)) = (self.opts.verify_memory, mem) {
                    let have = match self.entry_mem.remove(&tid) {
                        Some(at_entry) => at_entry,
                        None => crate::memory_checksum(&self.tracee),
                    };
                    if have != want {
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
                // The program goes on in the new image: it has not ended.
                self.exit = None;
                let (tracee, threads) = start(&self.dir.join(&image), self.cpu)?;
                self.sbuf = crate::sbuf::present(&tracee);
                self.tracee = tracee;
                self.threads = threads;
            }
        }
        Ok(())
    }

    /// A `Fork` event, replaying a tree: run thread `vtid` into its fork,
    /// vfork or clone until the process `child` (recorded pid) exists; the
    /// call's result is its next event (`finish_fork`).
    fn fork_child(&mut self, vtid: i32, child: i32) -> Result<(), Error> {
        let (real, at) = self.thread(vtid)?;
        let makes_process = |nr: i64| {
            matches!(
                nr,
                libc::SYS_fork | libc::SYS_vfork | libc::SYS_clone | libc::SYS_clone3
            )
        };
        let regs = if at == At::Entry {
            ptrace::getregs(real).map_err(perr("PTRACE_GETREGS", real))?
        } else {
            match self.run_to_stop(vtid)? {
                (Stop::Event(libc::PTRACE_EVENT_SECCOMP, _), Some(r))
                    if makes_process(r.orig_rax as i64) =>
                {
                    r
                }
                (stop, regs) => {
                    return Err(self.diverge(
                        vtid,
                        format!(
                            "expected the fork that made process {child}, got {}",
                            describe_stop(stop, regs.as_ref())
                        ),
                    ))
                }
            }
        };
        let nr = regs.orig_rax as i64;
        let args = regs_args(&regs);
        self.set_at(vtid, At::Entry);
        self.check_buffer_consumed(vtid, nr, &args)?;
        if self.opts.verify_memory {
            // (A vfork's was taken at its `Enter`.)
            if let std::collections::hash_map::Entry::Vacant(e) = self.entry_mem.entry(vtid) {
                e.insert(crate::memory_checksum(&self.tracee));
            }
        }
        let crate::recorder::CloneArgs {
            flags,
            child_tid: settid,
            ..
        } = crate::recorder::clone_args(&self.tracee, nr, &args);
        let options =
            ptrace::default_options() | libc::PTRACE_O_TRACEFORK | libc::PTRACE_O_TRACEVFORK;
        ptrace::setoptions(real, options).map_err(perr("PTRACE_SETOPTIONS", real))?;
        ptrace::syscall(real, 0).map_err(perr("PTRACE_SYSCALL", real))?;
        let new = loop {
            match self.wait_for(real)? {
                Stop::Event(
                    libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE,
                    _,
                ) => {
                    break ptrace::geteventmsg(real).map_err(perr("PTRACE_GETEVENTMSG", real))?
                        as pid_t
                }
                Stop::Signal(_) => {
                    ptrace::syscall(real, 0).map_err(perr("PTRACE_SYSCALL", real))?
                }
                other => {
                    return Err(self.diverge(
                        vtid,
                        format!(
                            "{} made process {child} when recorded, not in replay: {}",
                            describe(nr, &args),
                            describe_stop(other, None)
                        ),
                    ))
                }
            }
        };
        match self.wait_for(new)? {
            Stop::Event(PTRACE_EVENT_STOP, _) => {}
            other => {
                return Err(self.diverge(
                    vtid,
                    format!(
                        "process {child} did not start in replay: {}",
                        describe_stop(other, None)
                    ),
                ))
            }
        }
        self.set_at(vtid, At::InFork);
        self.forked.push(Forked {
            recorded: child,
            real: new,
            settid: (flags & libc::CLONE_CHILD_SETTID as u64 != 0 && settid != 0).then_some(settid),
            shares_memory: flags & libc::CLONE_VM as u64 != 0,
        });
        Ok(())
    }

    /// The result of a fork-like call whose child `fork_child` made: the
    /// thread runs to the call's end (a vfork's, once its child exec'd or
    /// ended), which returns the recorded value.
    fn finish_fork(
        &mut self,
        tid: i32,
        nr: i64,
        args: &[u64; 6],
        ret: i64,
        writes: &[(u64, Vec<u8>)],
    ) -> Result<(), Error> {
        let (real, _) = self.thread(tid)?;
        ptrace::syscall(real, 0).map_err(perr("PTRACE_SYSCALL", real))?;
        loop {
            match self.wait_for(real)? {
                Stop::Syscall => break,
                Stop::Exited(_) | Stop::Killed(_) => {
                    return Err(
                        self.diverge(tid, format!("the thread died in {}", describe(nr, args)))
                    )
                }
                _ => ptrace::syscall(real, 0).map_err(perr("PTRACE_SYSCALL", real))?,
            }
        }
        let mut after = ptrace::getregs(real).map_err(perr("PTRACE_GETREGS", real))?;
        let got = regs_args(&after);
        if after.orig_rax as i64 != nr || &got != args {
            return Err(self.diverge(
                tid,
                format!(
                    "expected the end of {}, got that of {}",
                    describe(nr, args),
                    describe(after.orig_rax as i64, &got)
                ),
            ));
        }
        after.rax = ret as u64;
        ptrace::setregs(real, &after).map_err(perr("PTRACE_SETREGS", real))?;
        for (addr, data) in writes {
            self.tracee.write_mem(*addr, data)?;
        }
        self.set_at(tid, At::Exit);
        Ok(())
    }

    /// The bytes of blob `name` of the trace.
    fn blob(&self, name: &str) -> Result<Rc<Vec<u8>>, Error> {
        if let Some(bytes) = self.blob_cache.borrow().get(name) {
            return Ok(bytes.clone());
        }
        let path = self.blobs.join(name);
        let packed = std::fs::read(&path).map_err(|e| TraceError::Io {
            path: path.clone(),
            source: e,
        })?;
        let bytes = zstd::stream::decode_all(&packed[..]).map_err(|e| TraceError::Corrupt {
            path: path.clone(),
            what: "mapped file bytes".into(),
            why: e.to_string(),
        })?;
        let bytes = Rc::new(bytes);
        self.blob_cache
            .borrow_mut()
            .insert(name.to_string(), bytes.clone());
        Ok(bytes)
    }

    /// Every buffered syscall loaded for the thread was made before it
    /// reached this traced one.
    fn check_buffer_consumed(&self, tid: i32, nr: i64, args: &[u64; 6]) -> Result<(), Error> {
        if !self.sbuf {
            return Ok(());
        }
        let left = crate::sbuf::unconsumed(&self.tracee);
        if left > 0 {
            return Err(self.diverge(
                tid,
                format!(
                    "{} with {left} bytes of buffered syscalls not made before it",
                    describe(nr, args)
                ),
            ));
        }
        Ok(())
    }

    /// Apply a syscall-site patch of the syscall buffer, as recorded.
    fn patch(&mut self, tid: i32, area: u64, writes: &[(u64, Vec<u8>)]) -> Result<(), Error> {
        let (real, _) = self.thread(tid)?;
        if area != 0 {
            let ret = crate::sbuf::map_area(&self.tracee, real, area)?;
            if ret as u64 != area {
                return Err(self.diverge(
                    tid,
                    format!(
                        "cannot map the syscall buffer's stubs at {area:#x}: {}",
                        rewind_ckpt::tracee::errno_text(ret)
                    ),
                ));
            }
        }
        for (addr, bytes) in writes {
            self.tracee.write_mem(*addr, bytes)?;
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
        let _ = at;
        let addr = want.rip;
        self.internal_bp = Some(addr);
        let result = (|| {
            for _ in 0..(1u64 << 22) {
                let (stop, regs) = self.run_to_stop(vtid)?;
                match (stop, regs) {
                    (Stop::Signal(libc::SIGTRAP), Some(r)) if r.rip == addr => {
                        if same(&r) {
                            self.set_at(vtid, At::Stopped { sig: 0 });
                            return Ok(());
                        }
                        let user = self
                            .debug
                            .as_ref()
                            .is_some_and(|d| !d.step && d.breakpoints.contains(&addr));
                        if user {
                            self.pause = Some(Pause::Breakpoint { tid: vtid, addr });
                            return Err(Error::Paused);
                        }
                        // Not this time through: run_to_stop steps over it.
                    }
                    (other, regs) => {
                        return Err(self.diverge(
                            vtid,
                            format!(
                                "expected to reach the preemption point at rip {addr:#x}, got {}",
                                describe_stop(other, regs.as_ref())
                            ),
                        ));
                    }
                }
            }
            Err(self.diverge(vtid, format!("the preemption point at rip {addr:#x} was never reached with the recorded registers")))
        })();
        self.internal_bp = None;
        result
    }

    /// Run `vtid` to its first arrival at `addr` since the previous event,
    /// where a debugger stopped the live recording (the registers must be
    /// `want`). A user breakpoint there, or the single step that got
    /// there, is reported first (a pause, as without the mark); the mark is
    /// applied, running nothing, on the next advance.
    fn run_to_mark(&mut self, vtid: i32, addr: u64, want: &[u64]) -> Result<(), Error> {
        let want = rewind_ckpt::capture::regs_from_slice(want)
            .ok_or_else(|| self.diverge(vtid, "malformed mark registers in the trace".into()))?;
        if self.mark_reached.take() == Some(self.event) {
            self.set_at(vtid, At::Stopped { sig: 0 });
            return Ok(());
        }
        let same = |r: &user_regs_struct| {
            // RF and TF are the debugger's.
            let flags = !((1u64 << 16) | TRAP_FLAG);
            let (mut a, mut b) = (*r, want);
            a.eflags &= flags;
            b.eflags &= flags;
            a.orig_rax = 0;
            b.orig_rax = 0;
            rewind_ckpt::capture::regs_to_vec(&a) == rewind_ckpt::capture::regs_to_vec(&b)
        };
        self.internal_bp = Some(addr);
        let result = match self.run_to_stop(vtid) {
            Err(Error::Paused) => Err(Error::Paused),
            Ok((Stop::Signal(libc::SIGTRAP), Some(r))) if r.rip == addr => {
                if !same(&r) {
                    Err(self.diverge(
                        vtid,
                        format!("the registers at the mark at {addr:#x} differ from the recording"),
                    ))
                } else if let Some(pause) = match &self.debug {
                    Some(d) if d.step => Some(Pause::Step { tid: vtid }),
                    Some(d) if d.breakpoints.contains(&addr) => {
                        Some(Pause::Breakpoint { tid: vtid, addr })
                    }
                    _ => None,
                } {
                    // The step or arrival that got there is the debugger's
                    // to see; applying the mark then runs nothing.
                    self.mark_reached = Some(self.event);
                    self.pause = Some(pause);
                    Err(Error::Paused)
                } else {
                    self.set_at(vtid, At::Stopped { sig: 0 });
                    Ok(())
                }
            }
            Ok((stop, regs)) => Err(self.diverge(
                vtid,
                format!(
                    "expected to reach the mark at {addr:#x}, got {}",
                    describe_stop(stop, regs.as_ref())
                ),
            )),
            Err(e) => Err(e),
        };
        self.internal_bp = None;
        result
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
        // An interrupted syscall is restarted (or fails) by the kernel as
        // the signal is delivered.
        self.restart.remove(&tid);
        let mut own_mask = None;
        if let Some(temp) = self.temporary_mask(tid) {
            let own = ptrace::getsigmask(real).map_err(perr("PTRACE_GETSIGMASK", real))?;
            let bit = 1u64 << (sig - 1);
            if own & bit != 0 && temp & bit == 0 {
                ptrace::setsigmask(real, temp).map_err(perr("PTRACE_SETSIGMASK", real))?;
                own_mask = Some(own);
            }
        }
        self.frame_fix.insert(tid, own_mask);
        rewind_ckpt::sys::process::tgkill(self.tracee.pid, real, sig)
            .map_err(|e| rewind_ckpt::Error::Tracee(format!("tgkill: {e}")))?;
        ptrace::cont(real, 0).map_err(perr("PTRACE_CONT", real))?;
        loop {
            let stop = self.wait_for(real)?;
            match stop {
                Stop::Signal(s) if s == sig => break,
                // A SIGCONT sent to a seized process first notifies its
                // tracer with a PTRACE_EVENT_STOP of every thread.
                Stop::Signal(_) | Stop::Event(PTRACE_EVENT_STOP, _) => {
                    ptrace::cont(real, 0).map_err(perr("PTRACE_CONT", real))?
                }
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

    /// The mask thread `tid`'s last syscall put in place while it waited,
    /// if it is one that does and was given one.
    fn temporary_mask(&self, tid: i32) -> Option<u64> {
        let &(nr, args) = self.last_call.get(&tid)?;
        let (at, size) = match nr {
            libc::SYS_rt_sigsuspend => (args[0], args[1]),
            libc::SYS_ppoll => (args[3], args[4]),
            libc::SYS_epoll_pwait | libc::SYS_epoll_pwait2 => (args[4], args[5]),
            libc::SYS_pselect6 if args[5] != 0 => (
                self.tracee.read_u64(args[5]).ok()?,
                self.tracee.read_u64(args[5] + 8).ok()?,
            ),
            _ => return None,
        };
        if at == 0 || size != 8 {
            return None;
        }
        self.tracee.read_u64(at).ok()
    }

    /// Deliver the asynchronous signal `sig` of `real` (thread `vtid`),
    /// stopping at its handler's first instruction to fix the frame as
    /// the recorder did, and to put the thread's own mask `own` in it when
    /// the signal came under a temporary one (see `frame_fix`).
    fn enter_handler(
        &mut self,
        vtid: i32,
        real: pid_t,
        sig: i32,
        own: Option<u64>,
    ) -> Result<(), Error> {
        ptrace::singlestep(real, sig).map_err(perr("PTRACE_SINGLESTEP", real))?;
        match self.wait_for(real)? {
            Stop::Signal(libc::SIGTRAP) => {
                let rsp = ptrace::getregs(real)
                    .map_err(perr("PTRACE_GETREGS", real))?
                    .rsp;
                crate::clear_frame_fault(&self.tracee, rsp)?;
                if let Some(own) = own {
                    self.tracee
                        .write_mem(rsp + crate::frame::OLDMASK, &own.to_le_bytes())?;
                    self.tracee
                        .write_mem(rsp + crate::frame::MASK, &own.to_le_bytes())?;
                }
                Ok(())
            }
            other => Err(self.diverge(
                vtid,
                format!(
                    "expected signal {sig}'s handler to start, got {}",
                    describe_stop(other, None)
                ),
            )),
        }
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
        let mut c = self.console.borrow_mut();
        if matches!(self.source, Source::Loaded(_)) {
            // (A plain replay passes each event once; a tree's processes
            // count their events each on their own.)
            if c.shown_through >= self.event {
                return;
            }
            c.shown_through = self.event;
        }
        let sink: &mut dyn Write = if console == 1 { &mut c.out } else { &mut c.err };
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
        self.last_call.insert(tid, (nr, *args));
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
            if let Some(q) = self.queued.borrow_mut().get_mut(&real) {
                q.clear();
            }
            rewind_ckpt::tracee::wait_thread_gone(self.tracee.pid, real);
            return Ok(());
        }
        if nr == libc::SYS_exit_group {
            ptrace::cont(real, 0).map_err(perr("PTRACE_CONT", real))?;
            let pid = self.tracee.pid;
            loop {
                let (t, stop) = self.wait_own()?;
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
                        // The file's bytes come from the trace. Replaying a
                        // tree, a shared one stays shared with the processes
                        // forked later (a semaphore in a file of /dev/shm).
                        // (Not a read-only one: the trace's bytes are
                        // written into it through /proc/PID/mem.)
                        let shared = self.tree
                            && args[3] & libc::MAP_SHARED as u64 != 0
                            && args[2] & libc::PROT_WRITE as u64 != 0;
                        let kind = if shared {
                            libc::MAP_SHARED
                        } else {
                            libc::MAP_PRIVATE
                        };
                        regs.r10 = kind as u64 | libc::MAP_ANONYMOUS as u64 | fixed;
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
            self.restart.insert(tid);
        }
        ptrace::setregs(real, &after).map_err(perr("PTRACE_SETREGS", real))?;
        for (addr, data) in writes {
            self.tracee.write_mem(*addr, data)?;
        }
        self.set_at(tid, At::Exit);
        Ok(())
    }
}

impl Drop for Replayer<'_> {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.kill();
        }
    }
}
