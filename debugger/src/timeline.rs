//! The timeline of `rewind debug`: a recorded trace, replayed, with every
//! stop given an exact coordinate (a [`Moment`], DESIGN §5) and any moment
//! reachable again: restore the nearest in-memory snapshot before it, replay
//! events up to it, then follow its path (counted breakpoint arrivals and
//! single steps). Reverse execution is built on that: look for the last
//! breakpoint arrival before here, or the instruction executed just before
//! here, and go there.
//!
//! Snapshots are forks of the replayed process (copy-on-write, taken at
//! event boundaries as replay moves forward, spaced by replay time and
//! thinned so that older history keeps fewer of them). Fork copies one
//! thread: a snapshot of a threaded program holds its other threads as
//! data, recreated in each working copy made from it
//! ([`Replayer::snapshot`], [`Replayer::fork`]). The trace's own images
//! (the initial one and periodic checkpoints) are the starting points when
//! no snapshot is (a signal being delivered at every boundary).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use libc::user_regs_struct;
pub use rewind_rr::replayer::Watch;
use rewind_rr::replayer::{Advance, Console, LoadedTrace, Pause, Replayer};
use rewind_rr::trace::format::Event;

mod search;
pub use search::{Cause, Found as SearchFound, Predicate, SearchOptions, Verdict};

/// One step of the way from an event boundary to a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Seg {
    /// Single-step this many instructions.
    Steps(u64),
    /// Run until the `n`-th arrival at `addr` (a breakpoint there; the
    /// position we start from does not count).
    Hit(u64, u64),
    /// Run the next event's thread into the event's syscall, without
    /// applying it (where history ends, before the program exits).
    ToSyscall,
    /// Run until the `n`-th trigger of this hardware watchpoint (just after
    /// the instruction that accessed it).
    Watch(Watch, u64),
}

/// An exact point in history: after `event` events, then `path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Moment {
    pub event: u64,
    pub path: Vec<Seg>,
}

impl Moment {
    fn at_event(event: u64) -> Moment {
        Moment {
            event,
            path: Vec::new(),
        }
    }

    /// This moment followed by `seg` (merged with the last step when they
    /// continue each other).
    pub fn then(&self, seg: Seg) -> Moment {
        let mut m = self.clone();
        match (m.path.last_mut(), seg) {
            (_, Seg::ToSyscall) => m.path = vec![Seg::ToSyscall],
            (Some(Seg::Steps(a)), Seg::Steps(b)) => *a += b,
            (Some(Seg::Hit(x, a)), Seg::Hit(y, b)) if *x == y => *a += b,
            (Some(Seg::Watch(x, a)), Seg::Watch(y, b)) if *x == y => *a += b,
            (_, Seg::Steps(0)) => {}
            _ => m.path.push(seg),
        }
        m
    }
}

impl Seg {
    /// The same counted segment with count `n`.
    fn with_count(self, n: u64) -> Seg {
        match self {
            Seg::Steps(_) => Seg::Steps(n),
            Seg::Hit(a, _) => Seg::Hit(a, n),
            Seg::Watch(w, _) => Seg::Watch(w, n),
            Seg::ToSyscall => Seg::ToSyscall,
        }
    }

    /// Whether pause `p` is one this segment counts.
    fn counts(&self, p: &Pause) -> bool {
        match (self, p) {
            (Seg::Hit(a, _), Pause::Breakpoint { addr, .. }) => a == addr,
            (Seg::Watch(w, _), Pause::Watch { watch, .. }) => w == watch,
            (Seg::Steps(_), Pause::Step { .. }) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Moment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.event)?;
        for s in &self.path {
            match s {
                Seg::Steps(n) => write!(f, "+{n}")?,
                Seg::Hit(a, n) => write!(f, "@{a:#x}#{n}")?,
                Seg::ToSyscall => write!(f, "+syscall")?,
                Seg::Watch(w, n) => write!(
                    f,
                    "!{:#x}:{}{}#{n}",
                    w.addr,
                    w.len,
                    if w.access { "a" } else { "w" }
                )?,
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for Moment {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Moment, String> {
        let bad = || format!("bad moment {s:?} (expected EVENT, EVENT+STEPS, EVENT@0xADDR#N...)");
        let s = s.trim();
        let end = s.find(['+', '@', '!']).unwrap_or(s.len());
        let event = s[..end].parse::<u64>().map_err(|_| bad())?;
        let mut m = Moment::at_event(event);
        let mut rest = &s[end..];
        while !rest.is_empty() {
            let next = rest[1..]
                .find(['+', '@', '!'])
                .map(|i| i + 1)
                .unwrap_or(rest.len());
            let part = &rest[..next];
            rest = &rest[next..];
            if part == "+syscall" {
                m = m.then(Seg::ToSyscall);
            } else if let Some(n) = part.strip_prefix('+') {
                m.path.push(Seg::Steps(n.parse().map_err(|_| bad())?));
            } else if let Some(w) = part.strip_prefix('!') {
                let (spec, n) = w.split_once('#').ok_or_else(bad)?;
                let (a, l) = spec.split_once(':').ok_or_else(bad)?;
                let addr =
                    u64::from_str_radix(a.trim_start_matches("0x"), 16).map_err(|_| bad())?;
                let access = l.ends_with('a');
                let len = l.trim_end_matches(['a', 'w']).parse().map_err(|_| bad())?;
                let watch = Watch { addr, len, access };
                m.path
                    .push(Seg::Watch(watch, n.parse().map_err(|_| bad())?));
            } else if let Some(hit) = part.strip_prefix('@') {
                let (a, n) = hit.split_once('#').ok_or_else(bad)?;
                let a = u64::from_str_radix(a.trim_start_matches("0x"), 16).map_err(|_| bad())?;
                m.path.push(Seg::Hit(a, n.parse().map_err(|_| bad())?));
            } else {
                return Err(bad());
            }
        }
        Ok(m)
    }
}

/// Errors of the timeline, one line each.
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error(transparent)]
    Replay(#[from] rewind_rr::Error),
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Other(String),
}

type Result<T> = std::result::Result<T, TimelineError>;

/// Shown what a long operation is doing; returns true to interrupt it.
pub type Progress = Box<dyn FnMut(&str) -> bool>;

/// Why a forward or backward run stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Arrived at a breakpoint address.
    Breakpoint(u64),
    /// One instruction done (or the requested number).
    Step,
    /// The end of recorded history: the program is about to exit (or has
    /// nothing more to do).
    End,
    /// The beginning of history.
    Start,
    /// Arrived where we were asked to go.
    Arrived,
    /// A watched location changed (or, for an access watchpoint, was
    /// accessed): forward, just after the instruction; backward, just
    /// before it.
    Watch(Watch),
}

/// What a forward or backward run arrives at, for its caller to say
/// whether it stops there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// A breakpoint address.
    Breakpoint(u64),
    /// A watchpoint that counts (a write watchpoint whose value changed, an
    /// access watchpoint), just after the instruction (or event) that did
    /// it.
    Watch(Watch),
}

/// Says whether a run stops at an arrival.
pub type Stops<'a> = dyn FnMut(&mut Timeline, Arrival) -> bool + 'a;

struct Snapshot {
    event: u64,
    rep: Replayer<'static>,
}

/// A snapshot between events, to make walking back through a long stretch
/// without events cheap.
struct Anchor {
    moment: Moment,
    /// The thread selected there.
    thread: i32,
    rep: Replayer<'static>,
}

/// Anchors kept (the most recent ones).
const MAX_ANCHORS: usize = 24;

/// What a backward scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Breakpoint(u64),
    Watch(Watch),
}

/// Options of a timeline.
#[derive(Debug, Clone)]
pub struct TimelineOptions {
    /// At most this many in-memory snapshots (each one is a stopped
    /// process sharing unchanged pages with the others).
    pub max_snapshots: usize,
    /// Replay time between snapshots while moving forward.
    pub snapshot_interval: Duration,
    /// At most this much memory held by snapshots and anchors alone (the
    /// pages they no longer share with anybody, as the kernel counts
    /// them); older snapshots are dropped first when over.
    pub memory_budget: u64,
}

impl Default for TimelineOptions {
    fn default() -> Self {
        TimelineOptions {
            max_snapshots: 48,
            snapshot_interval: Duration::from_millis(40),
            memory_budget: 4 << 30,
        }
    }
}

/// Memory a stopped copy holds alone: its private pages (smaps_rollup).
fn private_bytes(pid: libc::pid_t) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("Private_Clean:") || l.starts_with("Private_Dirty:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum::<u64>()
        * 1024
}

pub struct Timeline {
    trace: LoadedTrace,
    console: Rc<RefCell<Console<'static>>>,
    cur: Replayer<'static>,
    at: Moment,
    /// The thread that ran last (recorded id).
    thread: i32,
    snapshots: Vec<Snapshot>,
    anchors: Vec<Anchor>,
    /// (event, image) of the trace's images: the initial one and periodic
    /// checkpoints.
    images: Vec<(u64, String)>,
    opts: TimelineOptions,
    since_snapshot: Instant,
    /// Called every so often during long operations; returning true
    /// interrupts them.
    pub progress: Option<Progress>,
    last_progress: Instant,
    pub breakpoints: BTreeSet<u64>,
    /// Snapshots added so far (the memory budget is checked every 8th).
    thinned: u64,
    /// The current process is somewhere without a coordinate (a Ctrl-C
    /// stopped it): the next goto starts from a snapshot.
    lost: bool,
    /// Hardware watchpoints, at most 4 (the debug registers).
    pub watches: Vec<Watch>,
    /// Where execution can come from to reach an address (for going back
    /// one instruction without stepping a long way); given the timeline at
    /// the moment in question.
    pub predecessors: Option<Predecessors>,
    restores: Restores,
    /// A live recording the history grows from (`rewind debug -- PROG`).
    live: Option<LiveEnd>,
}

/// The live program at the end of history: it is where the last recorded
/// event left it, or at the entry of `pending`, a syscall it has not run.
struct LiveEnd {
    live: rewind_rr::recorder::Live,
    pending: Option<Event>,
}

/// Where the timeline went back from, so far (`info checkpoints`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restores {
    /// Copies of an in-memory snapshot (at an event boundary).
    pub snapshots: u64,
    /// Copies of an anchor (a snapshot between events).
    pub anchors: u64,
    /// Restarts of one of the trace's images (the first one included).
    pub images: u64,
}

/// See [`Timeline::predecessors`].
pub type Predecessors = Box<dyn FnMut(&Timeline, u64) -> Vec<u64>>;

/// Aligned watch slots of 1, 2, 4 or 8 bytes covering `[addr, addr+len)`
/// (what the debug registers can watch).
pub fn watch_slots(addr: u64, len: u64, access: bool) -> Vec<Watch> {
    let mut slots = Vec::new();
    let (mut at, end) = (addr, addr.saturating_add(len));
    while at < end {
        let mut size = 8u64;
        while size > 1 && (at % size != 0 || at + size > end) {
            size /= 2;
        }
        slots.push(Watch {
            addr: at,
            len: size as u8,
            access,
        });
        at += size;
    }
    slots
}

fn other(msg: impl Into<String>) -> TimelineError {
    TimelineError::Other(msg.into())
}

impl Timeline {
    /// Open `trace` at its first instruction. The program's output goes to
    /// `console` the first time replay passes it.
    pub fn open(
        trace: LoadedTrace,
        console: Rc<RefCell<Console<'static>>>,
        opts: TimelineOptions,
    ) -> Result<Timeline> {
        Self::open_image(trace, "initial.rwd", console, opts)
    }

    /// Open `trace` at image `first` (a file of its directory) instead of
    /// its initial image: a checkpoint image with no events is a history
    /// of one moment, to look at.
    pub fn open_image(
        trace: LoadedTrace,
        first: &str,
        console: Rc<RefCell<Console<'static>>>,
        opts: TimelineOptions,
    ) -> Result<Timeline> {
        let mut images = vec![(0u64, first.to_string())];
        for i in 0..trace.events.len() {
            if let Some(Event::Checkpoint { image }) = trace.events.get(i).as_deref() {
                images.push((i as u64 + 1, image.clone()));
            }
        }
        let cur = Replayer::open(&trace, first, 0, console.clone())?;
        let thread = cur.threads().first().map(|t| t.0).unwrap_or(0);
        let mut t = Timeline {
            trace,
            console,
            cur,
            at: Moment::at_event(0),
            thread,
            snapshots: Vec::new(),
            anchors: Vec::new(),
            images,
            opts,
            since_snapshot: Instant::now(),
            progress: None,
            last_progress: Instant::now(),
            breakpoints: BTreeSet::new(),
            lost: false,
            thinned: 0,
            watches: Vec::new(),
            predecessors: None,
            restores: Restores {
                images: 1,
                ..Restores::default()
            },
            live: None,
        };
        t.take_snapshot();
        Ok(t)
    }

    /// Start `argv` under a live recording into `dir` and open the
    /// timeline at its first instruction: history is recorded as far as
    /// forward commands go (see `rewind_rr::recorder::Live`); the program
    /// does its I/O live, once, when replay reaches it.
    pub fn open_live(
        argv: &[String],
        dir: &std::path::Path,
        console: Rc<RefCell<Console<'static>>>,
        opts: TimelineOptions,
    ) -> Result<Timeline> {
        let events = rewind_rr::trace::EventList::default();
        let live = rewind_rr::recorder::Live::start(
            argv,
            &rewind_rr::recorder::RecordOptions {
                dir: dir.to_path_buf(),
                verify_memory: false,
                checkpoint_interval: Some(Duration::from_secs(5)),
                syscallbuf: false,
            },
            events.clone(),
        )?;
        let trace = LoadedTrace {
            dir: dir.to_path_buf(),
            header: rewind_rr::trace::read_header(dir).map_err(rewind_rr::Error::from)?,
            events,
            end: None,
            blobs: dir.join("blobs"),
            renamed: None,
        };
        let mut t = Self::open(trace, console, opts)?;
        t.live = Some(LiveEnd {
            live,
            pending: None,
        });
        Ok(t)
    }

    /// The live program's pid, while there is one.
    pub fn live_pid(&self) -> Option<libc::pid_t> {
        self.live
            .as_ref()
            .filter(|l| l.live.ended().is_none())
            .map(|l| l.live.pid)
    }

    /// End the live recording: a program about to exit exits (unless
    /// `kill`), any other is killed; history stays as recorded. Its status.
    pub fn finish_live(&mut self, kill: bool) -> Option<i32> {
        let l = self.live.as_mut()?;
        let code = l.live.finish(kill);
        l.pending = None;
        code
    }

    /// Whether replay has used every recorded event and a live program
    /// may record more.
    fn at_live_end(&self) -> bool {
        self.cur.next().is_none() && self.live.as_ref().is_some_and(|l| l.live.ended().is_none())
    }

    /// At the end of what is recorded, in a live recording: have the
    /// program log its next events, or say which syscall it is about to
    /// make. Nothing to do elsewhere.
    fn ensure_next(&mut self) -> Result<()> {
        if !self.at_live_end() || self.live.as_ref().is_some_and(|l| l.pending.is_some()) {
            return Ok(());
        }
        let before = self.events();
        let bps = self.live_breakpoints();
        let ext = match self.live.as_mut() {
            Some(l) => l.live.extend(&bps)?,
            None => return Ok(()),
        };
        self.extended(before, ext)
    }

    /// Where the live program stops early (an `Event::Mark`), so that a
    /// forward command shows an arrival without waiting for the program's
    /// next event: the breakpoints of the run under way and the user's.
    fn live_breakpoints(&mut self) -> BTreeSet<u64> {
        let mut bps = self.cur.debug_mut().breakpoints.clone();
        bps.extend(self.breakpoints.iter().copied());
        bps
    }

    /// Take in what the live program did.
    fn extended(&mut self, before: u64, ext: rewind_rr::recorder::Extension) -> Result<()> {
        use rewind_rr::recorder::Extension;
        let now = self.events();
        // Its output went to the terminal live: replay does not show it.
        self.console.borrow_mut().shown_through = now;
        for i in before..now {
            if let Some(ev) = self.trace.events.get(i as usize) {
                if let Event::Checkpoint { image } = &*ev {
                    self.images.push((i + 1, image.clone()));
                }
            }
        }
        match ext {
            Extension::Events | Extension::Ended(_) => Ok(()),
            Extension::AtSyscall(ev) => {
                if let Some(l) = self.live.as_mut() {
                    l.pending = Some(ev);
                }
                Ok(())
            }
            Extension::Interrupted => Err(TimelineError::Interrupted),
        }
    }

    /// The next event, or the syscall the live program is about to make.
    fn next_or_pending(&self) -> Option<std::sync::Arc<Event>> {
        self.cur.next().or_else(|| {
            self.live
                .as_ref()
                .and_then(|l| l.pending.clone())
                .map(std::sync::Arc::new)
        })
    }

    pub fn trace(&self) -> &LoadedTrace {
        &self.trace
    }

    pub fn now(&self) -> &Moment {
        &self.at
    }

    /// Recorded id of the thread that ran last (the selected one).
    pub fn thread(&self) -> i32 {
        self.thread
    }

    pub fn replayer(&self) -> &Replayer<'static> {
        &self.cur
    }

    /// Real tid of the selected thread.
    pub fn real_thread(&self) -> Option<libc::pid_t> {
        self.cur
            .threads()
            .iter()
            .find(|t| t.0 == self.thread)
            .or(self.cur.threads().first())
            .map(|t| t.1)
    }

    pub fn select_thread(&mut self, vtid: i32) -> Result<()> {
        if self.cur.threads().iter().any(|t| t.0 == vtid) {
            self.thread = vtid;
            Ok(())
        } else {
            Err(other(format!("Invalid thread ID: {vtid}")))
        }
    }

    pub fn regs(&self) -> Result<user_regs_struct> {
        let tid = self
            .real_thread()
            .ok_or_else(|| other("the program has no threads"))?;
        rewind_ckpt::sys::ptrace::getregs(tid)
            .map_err(|e| other(format!("cannot read registers of thread {tid}: {e}")))
    }

    /// The NUL-terminated string at `addr` (at most 4096 bytes; reads stop
    /// at page ends, so a string at the top of the stack is fine).
    pub fn read_c_string(&self, addr: u64) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        while out.len() < 4096 {
            let at = addr.wrapping_add(out.len() as u64);
            let n = (4096 - at % 4096).min(256) as usize;
            let mut b = vec![0u8; n];
            self.cur.tracee().read_mem(at, &mut b).ok()?;
            if let Some(i) = b.iter().position(|&c| c == 0) {
                out.extend_from_slice(&b[..i]);
                return Some(out);
            }
            out.extend_from_slice(&b);
        }
        None
    }

    /// Events in the trace.
    pub fn events(&self) -> u64 {
        self.trace.events.len() as u64
    }

    /// (event of each in-memory snapshot).
    pub fn snapshot_events(&self) -> Vec<u64> {
        self.snapshots.iter().map(|s| s.event).collect()
    }

    /// How often the timeline went back from snapshots, anchors and the
    /// trace's images so far.
    pub fn restores(&self) -> Restores {
        self.restores
    }

    fn tick(&mut self, what: &dyn Fn() -> String) -> Result<()> {
        if self.last_progress.elapsed() >= Duration::from_millis(200) {
            self.last_progress = Instant::now();
            if let Some(p) = self.progress.as_mut() {
                if p(&what()) {
                    return Err(TimelineError::Interrupted);
                }
            }
        }
        Ok(())
    }

    /// Fork a snapshot here, between events.
    fn take_anchor(&mut self) {
        if self.at.path.is_empty() || !self.cur.can_fork() {
            return;
        }
        if self.anchors.iter().any(|a| a.moment == self.at) {
            return;
        }
        match self.cur.snapshot() {
            Ok(rep) => {
                if self.anchors.len() >= MAX_ANCHORS {
                    self.anchors.remove(0);
                }
                self.anchors.push(Anchor {
                    moment: self.at.clone(),
                    thread: self.thread,
                    rep,
                });
            }
            Err(e) => tracing::debug!("no anchor at {}: {e}", self.at),
        }
    }

    /// A snapshot here if replay ran long enough since the last one.
    fn snapshot_if_due(&mut self) {
        if self.since_snapshot.elapsed() >= self.opts.snapshot_interval {
            self.take_snapshot();
        }
    }

    fn take_snapshot(&mut self) {
        if !self.at.path.is_empty() || !self.cur.can_fork() {
            return;
        }
        let event = self.at.event;
        if self.snapshots.iter().any(|s| s.event == event) {
            return;
        }
        match self.cur.snapshot() {
            Ok(rep) => {
                let i = self.snapshots.partition_point(|s| s.event < event);
                self.snapshots.insert(i, Snapshot { event, rep });
                self.since_snapshot = Instant::now();
                self.thin();
            }
            Err(e) => tracing::debug!("no snapshot at event {event}: {e}"),
        }
    }

    /// Take an in-memory snapshot here now (an anchor if between events):
    /// how long the program was paused and the snapshot's pid.
    pub fn snapshot_now(&mut self) -> Result<(Duration, libc::pid_t)> {
        if !self.cur.can_fork() {
            return Err(other(
                "no in-memory snapshot possible here (a signal is being delivered)",
            ));
        }
        let t = Instant::now();
        let rep = self.cur.snapshot()?;
        let pause = t.elapsed();
        let pid = rep.tracee().pid;
        if self.at.path.is_empty() {
            let event = self.at.event;
            self.snapshots.retain(|s| s.event != event);
            let i = self.snapshots.partition_point(|s| s.event < event);
            self.snapshots.insert(i, Snapshot { event, rep });
            self.thin();
        } else {
            if self.anchors.len() >= MAX_ANCHORS {
                self.anchors.remove(0);
            }
            self.anchors.push(Anchor {
                moment: self.at.clone(),
                thread: self.thread,
                rep,
            });
        }
        Ok((pause, pid))
    }

    /// Keep at most `max_snapshots`: drop the one whose loss leaves the
    /// smallest gap relative to its age (distance from the newest), so
    /// spacing grows with age, like rr's doubling intervals.
    fn thin(&mut self) {
        let held = |t: &Timeline| t.snapshot_memory().0;
        // Measuring walks every snapshot's page tables: not every time.
        self.thinned += 1;
        let mut over_budget = self.thinned % 8 == 1 && held(self) > self.opts.memory_budget;
        while over_budget && !self.anchors.is_empty() {
            self.anchors.remove(0);
            over_budget = held(self) > self.opts.memory_budget;
        }
        while self.snapshots.len() > self.opts.max_snapshots.max(2)
            || (over_budget && self.snapshots.len() > 2)
        {
            let newest = self.snapshots.last().map(|s| s.event).unwrap_or(0);
            let n = self.snapshots.len();
            let mut best = (f64::MAX, 1usize);
            for i in 1..n - 1 {
                let gap = (self.snapshots[i + 1].event - self.snapshots[i - 1].event) as f64;
                let age = (newest - self.snapshots[i].event) as f64 + 1.0;
                let score = gap / age;
                if score < best.0 {
                    best = (score, i);
                }
            }
            self.snapshots.remove(best.1);
            if over_budget {
                over_budget = held(self) > self.opts.memory_budget;
            }
        }
    }

    /// Memory the snapshots and anchors hold alone, and how many there are.
    pub fn snapshot_memory(&self) -> (u64, usize) {
        let pids: Vec<libc::pid_t> = self
            .snapshots
            .iter()
            .map(|s| s.rep.tracee().pid)
            .chain(self.anchors.iter().map(|a| a.rep.tracee().pid))
            .collect();
        (pids.iter().map(|&p| private_bytes(p)).sum(), pids.len())
    }

    fn set_mode(&mut self, breakpoints: BTreeSet<u64>, step: bool) {
        self.set_mode_w(breakpoints, step, Vec::new());
    }

    fn set_mode_w(&mut self, breakpoints: BTreeSet<u64>, step: bool, watches: Vec<Watch>) {
        let d = self.cur.debug_mut();
        d.breakpoints = breakpoints;
        d.step = step;
        d.watches = watches;
    }

    /// The bytes a watchpoint covers, now (None if unreadable).
    pub fn watched_bytes(&self, w: &Watch) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; w.len as usize];
        self.cur.tracee().read_mem(w.addr, &mut buf).ok()?;
        Some(buf)
    }

    fn watch_values(&self) -> HashMap<Watch, Option<Vec<u8>>> {
        self.watches
            .iter()
            .map(|w| (*w, self.watched_bytes(w)))
            .collect()
    }

    /// A watchpoint triggered: whether it counts as a stop (an access
    /// watchpoint always; a write one if the value changed).
    fn watch_counts(&self, w: &Watch, values: &mut HashMap<Watch, Option<Vec<u8>>>) -> bool {
        let now = self.watched_bytes(w);
        let before = values.insert(*w, now.clone());
        w.access || before.flatten() != now
    }

    /// A watched location whose bytes an event just changed (the kernel
    /// writing it, which no debug register sees), updating `values`.
    fn changed_by_event(&self, values: &mut HashMap<Watch, Option<Vec<u8>>>) -> Option<Watch> {
        let mut changed = None;
        for w in &self.watches {
            let now = self.watched_bytes(w);
            if values.insert(*w, now.clone()).flatten() != now && changed.is_none() {
                changed = Some(*w);
            }
        }
        changed
    }

    /// Whether the next event ends the program (history stops before it).
    fn next_is_final(&mut self) -> Result<bool> {
        self.ensure_next()?;
        Ok(match self.next_or_pending().as_deref() {
            Some(Event::Syscall { nr, .. }) => {
                *nr == libc::SYS_exit_group
                    || (*nr == libc::SYS_exit && self.cur.threads().len() <= 1)
            }
            None => true,
            _ => false,
        })
    }

    fn at_end(&mut self) -> Result<bool> {
        self.ensure_next()?;
        Ok(self.at.path.last() == Some(&Seg::ToSyscall)
            || (self.next_or_pending().is_none() && self.at.event >= self.events()))
    }

    /// Apply the next event (no breakpoints, no stepping): for moving
    /// between event boundaries.
    fn apply_event(&mut self) -> Result<()> {
        self.set_mode(BTreeSet::new(), false);
        match self.adv()? {
            Advance::Event { .. } => {
                self.set_at_boundary();
                self.snapshot_if_due();
                Ok(())
            }
            Advance::Paused(p) => Err(other(format!("replay paused unexpectedly: {p:?}"))),
            Advance::End => Err(other("no more events")),
        }
    }

    fn last_thread(&self) -> Option<i32> {
        let e = self.cur.event();
        let tid = self.trace.events.get(e.checked_sub(1)? as usize)?.tid();
        self.cur.threads().iter().any(|t| t.0 == tid).then_some(tid)
    }

    /// The thread a stop at an event boundary shows: the one whose event
    /// led there or, when that event ended it, the first one left (however
    /// the boundary was reached: one stop, one thread).
    fn boundary_thread(&self) -> i32 {
        self.last_thread()
            .or_else(|| self.cur.threads().first().map(|t| t.0))
            .unwrap_or(self.thread)
    }

    /// Replay is at an event boundary: that is where we are.
    fn set_at_boundary(&mut self) {
        self.at = Moment::at_event(self.cur.event());
        self.thread = self.boundary_thread();
    }

    /// One more arrival at (or trigger of) `key`, counted from `start`
    /// by thread `tid`: we are now at `start` + `seg(key, count)`.
    fn counted<K: std::hash::Hash + Eq + Copy>(
        &mut self,
        start: &Moment,
        counts: &mut HashMap<K, u64>,
        key: K,
        tid: i32,
        seg: fn(K, u64) -> Seg,
    ) -> u64 {
        let n = counts.entry(key).or_insert(0);
        *n += 1;
        self.thread = tid;
        self.at = start.then(seg(key, *n));
        *n
    }

    /// Go to moment `m` exactly.
    /// Go to moment `m` exactly (Ctrl-C: back where it was).
    pub fn goto(&mut self, m: &Moment) -> Result<()> {
        self.guard(|t| t.goto_inner(m))
    }

    /// Run `op`; if Ctrl-C interrupts it, come back to where it began
    /// (the place it stopped has no coordinate) and say so.
    fn guard<T>(&mut self, op: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let start = self.at.clone();
        match op(self) {
            Err(TimelineError::Interrupted) => {
                rewind_ckpt::sys::take_interrupt();
                self.lost = true;
                self.goto_inner(&start)?;
                Err(TimelineError::Interrupted)
            }
            other_result => other_result,
        }
    }

    /// `advance`, with Ctrl-C turned into an error. At the end of a live
    /// recording, the program records more first; when it is about to make
    /// a syscall, replay runs to that syscall (pausing on the way as asked),
    /// and only then does the program make it, and replay apply it.
    fn adv(&mut self) -> Result<Advance> {
        self.ensure_next()?;
        let pending = match (self.cur.next(), &self.live) {
            (None, Some(l)) => l.pending.clone(),
            _ => None,
        };
        if let Some(syscall) = pending {
            self.cur.set_pending(Some(syscall));
            if let Some(p) = self.rts_here()? {
                return Ok(Advance::Paused(p));
            }
            let stepped = self.cur.stepped();
            let before = self.events();
            let bps = self.live_breakpoints();
            let ext = match self.live.as_mut() {
                Some(l) => {
                    l.pending = None;
                    l.live.commit(&bps)?
                }
                None => return Err(other("no live program")),
            };
            self.cur.set_pending(None);
            self.extended(before, ext)?;
            return match self.cur.advance()? {
                Advance::Event { stepped: s } => Ok(Advance::Event {
                    stepped: s || stepped,
                }),
                a => Ok(a),
            };
        }
        match self.cur.advance()? {
            Advance::Paused(Pause::Interrupted { .. }) => {
                self.lost = true;
                Err(TimelineError::Interrupted)
            }
            a => Ok(a),
        }
    }

    /// `run_to_syscall`, with Ctrl-C turned into an error (after the last
    /// recorded event, to the syscall the live program is about to make).
    fn rts(&mut self) -> Result<Option<Pause>> {
        self.ensure_next()?;
        let pending = match (self.cur.next(), &self.live) {
            (None, Some(l)) => l.pending.clone(),
            _ => None,
        };
        self.cur.set_pending(pending);
        self.rts_here()
    }

    fn rts_here(&mut self) -> Result<Option<Pause>> {
        match self.cur.run_to_syscall()? {
            Some(Pause::Interrupted { .. }) => {
                self.lost = true;
                Err(TimelineError::Interrupted)
            }
            p => Ok(p),
        }
    }

    fn goto_inner(&mut self, m: &Moment) -> Result<()> {
        if m.event > self.events() {
            return Err(other(format!(
                "event {} is past the end of the trace ({} events)",
                m.event,
                self.events()
            )));
        }
        let from_here = self.remaining_from_here(m);
        let anchor = self.best_anchor(m);
        let rest = match (from_here, anchor) {
            (Some(rest), Some((_, arest))) if cost(&rest) <= cost(&arest) => rest,
            (Some(rest), None) => rest,
            (_, Some((i, arest))) => {
                let fresh = self.anchors[i].rep.fork()?;
                self.restores.anchors += 1;
                let mut old = std::mem::replace(&mut self.cur, fresh);
                old.kill();
                self.lost = false;
                self.at = self.anchors[i].moment.clone();
                self.thread = self.anchors[i].thread;
                arest
            }
            (None, None) => {
                self.restore_before(m.event)?;
                m.path.clone()
            }
        };
        while self.cur.event() < m.event {
            if self.next_is_final()? {
                return Err(other(format!("moment {m} lies past the end of history")));
            }
            let (e, total) = (self.cur.event(), m.event);
            self.tick(&|| format!("replaying event {e} of {total}"))?;
            self.apply_event()?;
        }
        for seg in rest {
            self.follow(seg)?;
        }
        if self.at != *m {
            // Reached by another path; the position is the same.
            self.at = m.clone();
        }
        Ok(())
    }

    /// If `m` can be reached by going on from here, the rest of its path.
    fn remaining_from_here(&self, m: &Moment) -> Option<Vec<Seg>> {
        if self.cur.exit_code().is_some() || self.lost {
            return None;
        }
        remaining(&self.at, m)
    }

    /// An anchor from which `m` can be reached, if one is closer than the
    /// event boundary before `m`: (index, rest of the path).
    fn best_anchor(&self, m: &Moment) -> Option<(usize, Vec<Seg>)> {
        self.anchors
            .iter()
            .enumerate()
            .filter(|(_, a)| a.moment.event == m.event)
            .filter_map(|(i, a)| remaining(&a.moment, m).map(|r| (i, r)))
            .min_by_key(|(_, r)| cost(r))
    }
}

/// Rough cost of following `path` (stops of the tracee).
fn cost(path: &[Seg]) -> u64 {
    path.iter()
        .map(|s| match s {
            Seg::Steps(n) | Seg::Hit(_, n) | Seg::Watch(_, n) => *n,
            Seg::ToSyscall => 1,
        })
        .sum()
}

/// If `to` can be reached by going on from `from`, the rest of its path.
fn remaining(from: &Moment, to: &Moment) -> Option<Vec<Seg>> {
    {
        let (at, m) = (from, to);
        if at.event < m.event {
            return Some(m.path.clone());
        }
        if at.event > m.event || at.path.len() > m.path.len() {
            return None;
        }
        let k = at.path.len();
        if k == 0 {
            return Some(m.path.clone());
        }
        if at.path[..k - 1] != m.path[..k - 1] {
            return None;
        }
        let mut rest: Vec<Seg> = m.path[k..].to_vec();
        match (at.path[k - 1], m.path[k - 1]) {
            (a, b) if a == b => {}
            (Seg::Steps(a), Seg::Steps(b)) if b > a => rest.insert(0, Seg::Steps(b - a)),
            (Seg::Hit(x, a), Seg::Hit(y, b)) if x == y && b > a => {
                rest.insert(0, Seg::Hit(x, b - a))
            }
            (Seg::Watch(x, a), Seg::Watch(y, b)) if x == y && b > a => {
                rest.insert(0, Seg::Watch(x, b - a))
            }
            _ => return None,
        }
        Some(rest)
    }
}

impl Timeline {
    /// Make `cur` a fresh copy of the best starting point at or before
    /// `event`: an in-memory snapshot, or the trace's nearest image.
    fn restore_before(&mut self, event: u64) -> Result<()> {
        let snap = self.snapshots.iter().rposition(|s| s.event <= event);
        let image = self
            .images
            .iter()
            .rev()
            .find(|(e, _)| *e <= event)
            .cloned()
            .unwrap_or_else(|| self.images[0].clone());
        let use_snap = snap.filter(|&i| self.snapshots[i].event >= image.0);
        // Replace only if the current position is not itself better.
        let cur_ok = !self.lost
            && self.cur.exit_code().is_none()
            && self.at.path.is_empty()
            && self.at.event <= event
            && self.at.event >= use_snap.map(|i| self.snapshots[i].event).unwrap_or(image.0);
        if cur_ok {
            return Ok(());
        }
        let fresh = match use_snap {
            Some(i) => {
                let s = &self.snapshots[i];
                self.restores.snapshots += 1;
                (s.rep.fork()?, s.event)
            }
            None => {
                self.restores.images += 1;
                (
                    Replayer::open(&self.trace, &image.1, image.0, self.console.clone())?,
                    image.0,
                )
            }
        };
        let mut old = std::mem::replace(&mut self.cur, fresh.0);
        old.kill();
        self.lost = false;
        self.at = Moment::at_event(fresh.1);
        self.thread = self.boundary_thread();
        self.since_snapshot = Instant::now();
        Ok(())
    }

    /// Follow one segment from here (within the current event interval),
    /// leaving anchors on long ways, densest near the end.
    fn follow(&mut self, seg: Seg) -> Result<()> {
        match seg {
            Seg::Steps(n) | Seg::Hit(_, n) | Seg::Watch(_, n) => {
                // Single steps, or arrivals at one breakpoint, or triggers
                // of one watchpoint, with nothing else armed. Anchors are
                // left on a long way, densest near its end (`near` last
                // ones every `near_every`, else every `every`), so that
                // going back a little later is not redone from far.
                let (bps, watches, step, what, (near, near_every, every)) = match seg {
                    Seg::Steps(_) => (
                        BTreeSet::new(),
                        vec![],
                        true,
                        "step".to_string(),
                        (512, 32, 1024),
                    ),
                    Seg::Hit(addr, _) => (
                        BTreeSet::from([addr]),
                        vec![],
                        false,
                        format!("arrival at {addr:#x}"),
                        (4096, 512, 65536),
                    ),
                    Seg::Watch(w, _) => (
                        BTreeSet::new(),
                        vec![w],
                        false,
                        format!("access to {:#x}", w.addr),
                        (4096, 512, 65536),
                    ),
                    Seg::ToSyscall => return Err(other("follow: not a counted segment")),
                };
                let base = self.at.clone();
                for i in 0..n {
                    if i % 1024 == 1023 {
                        self.tick(&|| format!("following: {what} {i} of {n}"))?;
                    }
                    let left = n - i;
                    if i > 0 && ((left <= near && i % near_every == 0) || i % every == 0) {
                        self.at = base.then(seg.with_count(i));
                        self.take_anchor();
                    }
                    self.set_mode_w(bps.clone(), step, watches.clone());
                    match self.adv()? {
                        Advance::Paused(p) if seg.counts(&p) => {
                            if let Pause::Breakpoint { tid, .. }
                            | Pause::Watch { tid, .. }
                            | Pause::Step { tid } = p
                            {
                                self.thread = tid;
                            }
                        }
                        other_stop => {
                            return Err(other(format!(
                                "moment unreachable: expected {what} #{}, got {other_stop:?}",
                                i + 1
                            )))
                        }
                    }
                }
                self.at = base.then(seg.with_count(n));
            }
            Seg::ToSyscall => {
                self.set_mode(BTreeSet::new(), false);
                match self.rts()? {
                    None => {}
                    Some(p) => return Err(other(format!("moment unreachable: paused at {p:?}"))),
                }
                if let Some(tid) = self.cur.next().map(|e| e.tid()) {
                    self.thread = tid;
                }
                self.at = self.at.then(Seg::ToSyscall);
            }
        }
        Ok(())
    }

    /// Execute one instruction forward (of whichever thread runs next).
    pub fn stepi(&mut self) -> Result<StopReason> {
        self.guard(|t| t.stepi_inner(None))
    }

    /// [`Timeline::stepi`], with the watchpoints checked: an instruction
    /// (or syscall) that triggers one for which `stop` says yes gives
    /// `StopReason::Watch` (the position is the same as the step's).
    pub fn stepi_to(&mut self, stop: &mut Stops) -> Result<StopReason> {
        self.guard(|t| t.stepi_inner(Some(stop)))
    }

    fn stepi_inner(&mut self, mut stop: Option<&mut Stops>) -> Result<StopReason> {
        let watching = stop.is_some() && !self.watches.is_empty();
        let mut values = if watching {
            self.watch_values()
        } else {
            HashMap::new()
        };
        loop {
            if self.at_end()? {
                return Ok(StopReason::End);
            }
            if self.next_is_final()? {
                self.set_mode(BTreeSet::new(), true);
                match self.rts()? {
                    Some(Pause::Step { tid }) => {
                        self.thread = tid;
                        self.at = self.at.then(Seg::Steps(1));
                        return Ok(StopReason::Step);
                    }
                    Some(p) => return Err(other(format!("unexpected pause {p:?}"))),
                    None => {
                        self.at = self.at.then(Seg::ToSyscall);
                        return Ok(StopReason::End);
                    }
                }
            }
            let watches = if watching {
                self.watches.clone()
            } else {
                Vec::new()
            };
            self.set_mode_w(BTreeSet::new(), true, watches);
            match self.adv()? {
                Advance::Paused(Pause::Step { tid }) => {
                    self.thread = tid;
                    self.at = self.at.then(Seg::Steps(1));
                    return Ok(StopReason::Step);
                }
                Advance::Paused(Pause::Watch { tid, watch }) => {
                    // A step that triggered a watchpoint.
                    self.thread = tid;
                    self.at = self.at.then(Seg::Steps(1));
                    if let Some(stop) = stop.as_mut() {
                        if self.watch_counts(&watch, &mut values)
                            && stop(self, Arrival::Watch(watch))
                        {
                            return Ok(StopReason::Watch(watch));
                        }
                    }
                    return Ok(StopReason::Step);
                }
                Advance::Paused(p) => return Err(other(format!("unexpected pause {p:?}"))),
                Advance::Event { stepped } => {
                    self.set_at_boundary();
                    self.snapshot_if_due();
                    if watching {
                        // The kernel wrote a watched location.
                        if let (Some(w), Some(stop)) =
                            (self.changed_by_event(&mut values), stop.as_mut())
                        {
                            if stop(self, Arrival::Watch(w)) {
                                return Ok(StopReason::Watch(w));
                            }
                        }
                    }
                    if stepped {
                        return Ok(StopReason::Step);
                    }
                }
                Advance::End => return Ok(StopReason::End),
            }
        }
    }

    /// Run forward until a breakpoint arrival for which `stop` says yes,
    /// or the end of history.
    pub fn cont(&mut self, stop: &mut dyn FnMut(&mut Timeline, u64) -> bool) -> Result<StopReason> {
        self.cont_to(&mut breakpoints_only(stop))
    }

    /// Run forward until an arrival (breakpoint, or watchpoint that
    /// counts) for which `stop` says yes, or the end of history.
    pub fn cont_to(&mut self, stop: &mut Stops) -> Result<StopReason> {
        self.guard(|t| t.cont_inner(stop))
    }

    fn cont_inner(&mut self, stop: &mut Stops) -> Result<StopReason> {
        let mut counts: HashMap<u64, u64> = HashMap::new();
        let mut wcounts: HashMap<Watch, u64> = HashMap::new();
        let mut values = self.watch_values();
        let mut start = self.at.clone();
        loop {
            if self.at_end()? {
                return Ok(StopReason::End);
            }
            let e = self.at.event;
            self.tick(&|| format!("running forward: event {e}"))?;
            let bps = self.breakpoints.clone();
            if self.next_is_final()? {
                self.set_mode(bps, false);
                match self.rts()? {
                    Some(Pause::Breakpoint { tid, addr }) => {
                        self.counted(&start, &mut counts, addr, tid, Seg::Hit);
                        if stop(self, Arrival::Breakpoint(addr)) {
                            return Ok(StopReason::Breakpoint(addr));
                        }
                        continue;
                    }
                    Some(p) => return Err(other(format!("unexpected pause {p:?}"))),
                    None => {
                        self.at = self.at.then(Seg::ToSyscall);
                        return Ok(StopReason::End);
                    }
                }
            }
            let watches = self.watches.clone();
            self.set_mode_w(bps, false, watches);
            match self.adv()? {
                Advance::Paused(Pause::Breakpoint { tid, addr }) => {
                    self.counted(&start, &mut counts, addr, tid, Seg::Hit);
                    if stop(self, Arrival::Breakpoint(addr)) {
                        // Going back from here (or to here) starts from it.
                        self.take_anchor();
                        return Ok(StopReason::Breakpoint(addr));
                    }
                }
                Advance::Paused(Pause::Watch { tid, watch }) => {
                    self.counted(&start, &mut wcounts, watch, tid, Seg::Watch);
                    if self.watch_counts(&watch, &mut values) && stop(self, Arrival::Watch(watch)) {
                        self.take_anchor();
                        return Ok(StopReason::Watch(watch));
                    }
                }
                Advance::Paused(p) => return Err(other(format!("unexpected pause {p:?}"))),
                Advance::Event { .. } => {
                    self.set_at_boundary();
                    start = self.at.clone();
                    counts.clear();
                    wcounts.clear();
                    self.snapshot_if_due();
                    // The kernel wrote a watched location (a read into it):
                    // no debug register sees that.
                    if let Some(w) = self.changed_by_event(&mut values) {
                        if stop(self, Arrival::Watch(w)) {
                            return Ok(StopReason::Watch(w));
                        }
                    }
                }
                Advance::End => return Ok(StopReason::End),
            }
        }
    }

    /// Go back one instruction: to the moment of the instruction executed
    /// last before this one.
    pub fn reverse_stepi(&mut self) -> Result<StopReason> {
        self.guard(|t| t.reverse_stepi_inner())
    }

    fn reverse_stepi_inner(&mut self) -> Result<StopReason> {
        let here = self.at.clone();
        match self.previous_instruction(&here)? {
            Some(m) => {
                self.goto_inner(&m)?;
                Ok(StopReason::Step)
            }
            None => {
                self.goto_inner(&Moment::at_event(0))?;
                Ok(StopReason::Start)
            }
        }
    }

    /// The moment of the instruction executed last before `m` (None at the
    /// beginning of history): the stop a forward stepi from there left.
    fn previous_instruction(&mut self, m: &Moment) -> Result<Option<Moment>> {
        match self.before_instruction(m)? {
            Some(p) if p.path.is_empty() => Ok(Some(self.stop_at_boundary(p.event)?)),
            other => Ok(other),
        }
    }

    /// The stop of a forward stepi that boundary `event` stands for.
    /// Stepi stops at an event boundary only when an instruction led to it;
    /// one reached without any (a syscall its thread entered at an earlier
    /// `Enter` event and waits in, an asynchronous signal, a checkpoint) is
    /// passed on the way to the next instruction, so it stands for the
    /// stop before it: the same next instruction, the one coordinate.
    fn stop_at_boundary(&mut self, mut event: u64) -> Result<Moment> {
        while event > 0 {
            let base = Moment::at_event(event - 1);
            self.goto_inner(&base)?;
            self.set_mode(BTreeSet::new(), true);
            let ran = match self.adv()? {
                Advance::Paused(Pause::Step { tid }) => {
                    self.thread = tid;
                    self.at = base.then(Seg::Steps(1));
                    true
                }
                Advance::Event { stepped } => {
                    self.set_at_boundary();
                    stepped
                }
                other_stop => {
                    return Err(other(format!(
                        "stepping to event {event}: unexpected {other_stop:?}"
                    )))
                }
            };
            if ran {
                break;
            }
            event -= 1;
        }
        Ok(Moment::at_event(event))
    }

    /// The moment just before the instruction executed last before `m`
    /// (None at the beginning of history); an event boundary found may be
    /// one no instruction led to ([`Timeline::stop_at_boundary`]).
    fn before_instruction(&mut self, m: &Moment) -> Result<Option<Moment>> {
        let mut m = m.clone();
        loop {
            let Some(last) = m.path.last().copied() else {
                if m.event == 0 {
                    return Ok(None);
                }
                // Across the event that led here: step from the previous
                // boundary until it is applied.
                let base = Moment::at_event(m.event - 1);
                if self.at == m {
                    if let Some(anchor) = self.syscall_anchor(&base)? {
                        return Ok(Some(anchor));
                    }
                }
                self.goto_inner(&base)?;
                match self.steps_until_event()? {
                    0 => {
                        // Applied without an instruction (a signal, a
                        // preemption): keep looking before it.
                        m = base;
                        continue;
                    }
                    k => return Ok(Some(base.then(Seg::Steps(k - 1)))),
                }
            };
            let mut prefix = m.clone();
            prefix.path.pop();
            match last {
                Seg::Steps(n) => return Ok(Some(prefix.then(Seg::Steps(n - 1)))),
                Seg::Hit(addr, n) => {
                    if let Some(found) = self.previous_by_predecessors(&m, &prefix, addr, n)? {
                        return Ok(Some(found));
                    }
                    let base = if n > 1 {
                        prefix.then(Seg::Hit(addr, n - 1))
                    } else {
                        prefix
                    };
                    self.goto_inner(&base)?;
                    let k = self.steps_until_arrival(addr, None)?.unwrap_or(1);
                    return Ok(Some(base.then(Seg::Steps(k - 1))));
                }
                Seg::Watch(w, n) => {
                    // As an arrival: the trap leaves the thread at rip R
                    // without an arrival there; with a breakpoint at R
                    // instead, it is the next arrival after those seen.
                    self.goto_inner(&m)?;
                    let r = self.regs()?.rip;
                    self.goto_inner(&prefix)?;
                    let start = self.at.clone();
                    let mut bps = BTreeSet::new();
                    bps.insert(r);
                    let (mut arrivals, mut triggers) = (0u64, 0u64);
                    while triggers < n {
                        self.set_mode_w(bps.clone(), false, vec![w]);
                        match self.adv()? {
                            Advance::Paused(Pause::Breakpoint { .. }) => arrivals += 1,
                            Advance::Paused(Pause::Watch { .. }) => triggers += 1,
                            other_stop => {
                                return Err(other(format!(
                                    "going back from a watchpoint stop: unexpected {other_stop:?}"
                                )))
                            }
                        }
                    }
                    self.at = m.clone();
                    m = start.then(Seg::Hit(r, arrivals + 1));
                    continue;
                }
                Seg::ToSyscall => {
                    self.goto_inner(&prefix)?;
                    let k = self.steps_until_syscall()?;
                    if k == 0 {
                        m = prefix;
                        continue;
                    }
                    return Ok(Some(prefix.then(Seg::Steps(k - 1))));
                }
            }
        }
    }

    /// When here is just after a syscall event (applied at the event
    /// after `base`), the moment its thread was about to execute the
    /// syscall instruction: counted arrivals at that instruction, found
    /// with one breakpoint rather than by stepping the whole interval.
    fn syscall_anchor(&mut self, base: &Moment) -> Result<Option<Moment>> {
        let Some(Event::Syscall { tid, nr, .. }) = self
            .trace
            .events
            .get(base.event as usize)
            .as_deref()
            .cloned()
        else {
            return Ok(None);
        };
        if matches!(
            nr,
            libc::SYS_execve | libc::SYS_execveat | libc::SYS_rt_sigreturn
        ) {
            return Ok(None);
        }
        let Some(real) = self.cur.threads().iter().find(|t| t.0 == tid).map(|t| t.1) else {
            return Ok(None);
        };
        let Ok(regs) = rewind_ckpt::sys::ptrace::getregs(real) else {
            return Ok(None);
        };
        let insn = regs.rip.wrapping_sub(2);
        let mut code = [0u8; 2];
        if self.cur.tracee().read_mem(insn, &mut code).is_err() || code != [0x0f, 0x05] {
            return Ok(None);
        }
        self.goto_inner(base)?;
        // Where the thread is at `base` (its id in this process).
        let rip_at_base = self
            .cur
            .threads()
            .iter()
            .find(|t| t.0 == tid)
            .and_then(|t| rewind_ckpt::sys::ptrace::getregs(t.1).ok())
            .map(|r| r.rip);
        let mut n = 0u64;
        let mut bps = BTreeSet::new();
        bps.insert(insn);
        loop {
            self.set_mode(bps.clone(), false);
            match self.rts()? {
                Some(Pause::Breakpoint { addr, .. }) if addr == insn => n += 1,
                None => break,
                Some(p) => return Err(other(format!("unexpected pause {p:?}"))),
            }
        }
        self.at = base.then(Seg::ToSyscall);
        if n == 0 {
            if rip_at_base == Some(insn) {
                // It was there already at the boundary.
                return Ok(Some(base.clone()));
            }
            // Nothing ran: the thread waited in the syscall since an
            // earlier `Enter` event (the position is still `base`'s).
            // Stepping across the event says so, and looks before it.
            self.at = base.clone();
            return Ok(None);
        }
        Ok(Some(base.then(Seg::Hit(insn, n))))
    }

    /// The instruction before `m = prefix + Hit(addr, n)` found through the
    /// places that can lead to `addr` (the [`Timeline::predecessors`] hook:
    /// the instruction before it, jumps to it, the call that entered its
    /// function...): one run from `prefix` with breakpoints there gives the
    /// last such arrival before `m`, and a few steps from it reach `m`.
    /// None when that does not work out (stepping is the fallback).
    fn previous_by_predecessors(
        &mut self,
        m: &Moment,
        prefix: &Moment,
        addr: u64,
        n: u64,
    ) -> Result<Option<Moment>> {
        let Some(mut hook) = self.predecessors.take() else {
            return Ok(None);
        };
        // The hook looks at the state at `m`.
        let cands = if self.at == *m {
            hook(self, addr)
        } else {
            Vec::new()
        };
        self.predecessors = Some(hook);
        let cands: BTreeSet<u64> = cands.into_iter().filter(|&c| c != addr).collect();
        if cands.is_empty() {
            return Ok(None);
        }
        self.goto_inner(prefix)?;
        let start = self.at.clone();
        let mut bps = cands.clone();
        bps.insert(addr);
        let mut counts: HashMap<u64, u64> = HashMap::new();
        let mut last: Option<(u64, u64)> = None;
        let mut arrivals = 0u64;
        let mut stops = 0u64;
        while arrivals < n {
            stops += 1;
            if stops.is_multiple_of(1024) {
                self.tick(&|| format!("going back one instruction: {stops} stops"))?;
            }
            if stops > 20_000 {
                // A hot loop: stepping from the previous arrival is cheaper.
                return Ok(None);
            }
            self.set_mode(bps.clone(), false);
            match self.adv()? {
                Advance::Paused(Pause::Breakpoint { tid, addr: a }) => {
                    let c = self.counted(&start, &mut counts, a, tid, Seg::Hit);
                    if a == addr {
                        arrivals += 1;
                        if arrivals < n {
                            last = None;
                        }
                    } else {
                        last = Some((a, c));
                    }
                }
                other_stop => {
                    tracing::debug!("predecessor search: unexpected {other_stop:?}");
                    return Ok(None);
                }
            }
        }
        self.at = m.clone();
        let Some((c, k)) = last else {
            return Ok(None);
        };
        let from = start.then(Seg::Hit(c, k));
        self.goto_inner(&from)?;
        match self.steps_until_arrival(addr, Some(4096))? {
            Some(steps) => Ok(Some(from.then(Seg::Steps(steps - 1)))),
            None => Ok(None),
        }
    }

    /// Single-step from here until the pending event is applied; the
    /// number of instructions executed.
    fn steps_until_event(&mut self) -> Result<u64> {
        let mut k = 0u64;
        loop {
            if k % 4096 == 4095 {
                self.tick(&|| format!("stepping back across an event: {k} instructions"))?;
            }
            self.set_mode(BTreeSet::new(), true);
            match self.adv()? {
                Advance::Paused(Pause::Step { .. }) => k += 1,
                Advance::Event { stepped } => {
                    self.set_at_boundary();
                    return Ok(k + stepped as u64);
                }
                Advance::Paused(p) => return Err(other(format!("unexpected pause {p:?}"))),
                Advance::End => return Err(other("ran out of events while stepping")),
            }
        }
    }

    /// Single-step until the thread arrives at `addr`; the number of
    /// steps, or None after `limit` of them.
    fn steps_until_arrival(&mut self, addr: u64, limit: Option<u64>) -> Result<Option<u64>> {
        let mut k = 0u64;
        loop {
            if limit.is_some_and(|l| k >= l) {
                self.at = self.at.then(Seg::Steps(k));
                return Ok(None);
            }
            if k % 4096 == 4095 {
                self.tick(&|| format!("stepping back: {k} instructions"))?;
            }
            self.set_mode(BTreeSet::new(), true);
            match self.adv()? {
                Advance::Paused(Pause::Step { tid }) => {
                    k += 1;
                    let real = self.cur.threads().iter().find(|t| t.0 == tid).map(|t| t.1);
                    let rip = real
                        .and_then(|r| rewind_ckpt::sys::ptrace::getregs(r).ok())
                        .map(|r| r.rip);
                    if rip == Some(addr) {
                        self.at = self.at.then(Seg::Steps(k));
                        return Ok(Some(k));
                    }
                }
                other_stop => {
                    return Err(other(format!(
                        "stepping to {addr:#x}: unexpected {other_stop:?}"
                    )))
                }
            }
        }
    }

    fn steps_until_syscall(&mut self) -> Result<u64> {
        let mut k = 0u64;
        loop {
            self.set_mode(BTreeSet::new(), true);
            match self.rts()? {
                Some(Pause::Step { .. }) => k += 1,
                None => {
                    self.at = self.at.then(Seg::ToSyscall);
                    return Ok(k + 1);
                }
                Some(p) => return Err(other(format!("unexpected pause {p:?}"))),
            }
        }
    }

    /// Run backward to the last breakpoint arrival before here for which
    /// `stop` says yes, or to the beginning of history.
    pub fn reverse_cont(
        &mut self,
        stop: &mut dyn FnMut(&mut Timeline, u64) -> bool,
    ) -> Result<StopReason> {
        self.reverse_cont_to(&mut breakpoints_only(stop))
    }

    /// Run backward to the last arrival before here for which `stop` says
    /// yes (a watchpoint's stop is just before the instruction that did
    /// it), or to the beginning of history.
    pub fn reverse_cont_to(&mut self, stop: &mut Stops) -> Result<StopReason> {
        self.guard(|t| t.reverse_cont_inner(stop))
    }

    fn reverse_cont_inner(&mut self, stop: &mut Stops) -> Result<StopReason> {
        let target = self.at.clone();
        // Windows [from, to) scanned backward: from anchors in the current
        // event interval (stops made there), then from its beginning, then
        // from each earlier starting point.
        let mut to = target.clone();
        let mut from_event = target.event;
        loop {
            let anchor = self
                .anchors
                .iter()
                .filter(|a| a.moment.event == to.event && a.moment != to)
                .filter_map(|a| remaining(&a.moment, &to).map(|r| (a.moment.clone(), cost(&r))))
                .filter(|(_, c)| *c > 0)
                .min_by_key(|(_, c)| *c)
                .map(|(m, _)| m);
            let start = anchor.clone().unwrap_or(Moment::at_event(from_event));
            self.goto_inner(&start)?;
            // An anchor made at a breakpoint stop is an arrival itself.
            let at_start = match (anchor.is_some(), start.path.last()) {
                (true, Some(Seg::Hit(x, _)))
                    if self.breakpoints.contains(x) && stop(self, Arrival::Breakpoint(*x)) =>
                {
                    Some((start.clone(), Found::Breakpoint(*x)))
                }
                _ => None,
            };
            let found = self.scan(&to, stop)?.or(at_start);
            match found {
                Some((m, Found::Breakpoint(addr))) => {
                    self.goto_inner(&m)?;
                    self.take_anchor();
                    return Ok(StopReason::Breakpoint(addr));
                }
                Some((m, Found::Watch(w))) => {
                    // Backward, the stop is before the instruction that
                    // changed (or touched) the location; before the event
                    // that did, if no instruction led to it (the end of a
                    // syscall that blocked): the stop it stands for.
                    let stands_for = match m.path.is_empty() {
                        true => Some(self.stop_at_boundary(m.event)?),
                        false => None,
                    };
                    match stands_for {
                        Some(p) if p != m => self.goto_inner(&p)?,
                        _ => {
                            self.goto_inner(&m)?;
                            self.reverse_stepi_inner()?;
                        }
                    }
                    self.take_anchor();
                    return Ok(StopReason::Watch(w));
                }
                None => {}
            }
            if anchor.is_some() {
                to = start;
                continue;
            }
            if from_event == 0 {
                self.goto_inner(&Moment::at_event(0))?;
                return Ok(StopReason::Start);
            }
            to = Moment::at_event(from_event);
            // The next window back: from the previous snapshot or image,
            // at least one event back.
            let snap = self
                .snapshots
                .iter()
                .rev()
                .map(|s| s.event)
                .find(|&e| e < from_event);
            let image = self
                .images
                .iter()
                .rev()
                .map(|i| i.0)
                .find(|&e| e < from_event)
                .unwrap_or(0);
            from_event = snap.unwrap_or(image).max(image).min(from_event - 1);
            let e = from_event;
            self.tick(&|| format!("searching backward from event {e}"))?;
        }
    }

    /// From here, run forward to `to` with the breakpoints, and return the
    /// last arrival strictly before `to` that `stop` accepts.
    fn scan(&mut self, to: &Moment, stop: &mut Stops) -> Result<Option<(Moment, Found)>> {
        let mut last: Option<(Moment, Found)> = None;
        let mut values = self.watch_values();
        // Events up to `to`'s interval: continue with breakpoints.
        while self.at.event < to.event {
            let e = self.at.event;
            self.tick(&|| format!("scanning event {e}"))?;
            let start = self.at.clone();
            let mut counts: HashMap<u64, u64> = HashMap::new();
            let mut wcounts: HashMap<Watch, u64> = HashMap::new();
            loop {
                let bps = self.breakpoints.clone();
                let watches = self.watches.clone();
                self.set_mode_w(bps, false, watches);
                match self.adv()? {
                    Advance::Paused(Pause::Breakpoint { tid, addr }) => {
                        self.counted(&start, &mut counts, addr, tid, Seg::Hit);
                        if stop(self, Arrival::Breakpoint(addr)) {
                            last = Some((self.at.clone(), Found::Breakpoint(addr)));
                        }
                    }
                    Advance::Paused(Pause::Watch { tid, watch }) => {
                        self.counted(&start, &mut wcounts, watch, tid, Seg::Watch);
                        if self.watch_counts(&watch, &mut values)
                            && stop(self, Arrival::Watch(watch))
                        {
                            last = Some((self.at.clone(), Found::Watch(watch)));
                        }
                    }
                    Advance::Event { .. } => {
                        self.set_at_boundary();
                        self.snapshot_if_due();
                        if let Some(w) = self.changed_by_event(&mut values) {
                            if stop(self, Arrival::Watch(w)) {
                                last = Some((self.at.clone(), Found::Watch(w)));
                            }
                        }
                        break;
                    }
                    other_stop => return Err(other(format!("scan: unexpected {other_stop:?}"))),
                }
            }
        }
        // Within `to`'s interval: follow the rest of its path, watching
        // breakpoints.
        let segs = remaining(&self.at, to)
            .ok_or_else(|| other(format!("cannot scan from {} to {to}", self.at)))?;
        for (si, seg) in segs.iter().copied().enumerate() {
            let last_seg = si + 1 == segs.len();
            match seg {
                Seg::Steps(n) => {
                    for _ in 0..n {
                        self.follow(Seg::Steps(1))?;
                        let rip = self.regs()?.rip;
                        if self.breakpoints.contains(&rip)
                            && self.at != *to
                            && stop(self, Arrival::Breakpoint(rip))
                        {
                            last = Some((self.at.clone(), Found::Breakpoint(rip)));
                        }
                        // Watchpoints are not armed while stepping: look.
                        for w in self.watches.clone() {
                            if self.watch_counts(&w, &mut values) && stop(self, Arrival::Watch(w)) {
                                last = Some((self.at.clone(), Found::Watch(w)));
                            }
                        }
                    }
                }
                Seg::Hit(addr, n) => {
                    let start = self.at.clone();
                    let mut counts: HashMap<u64, u64> = HashMap::new();
                    let mut wcounts: HashMap<Watch, u64> = HashMap::new();
                    let mut bps = self.breakpoints.clone();
                    bps.insert(addr);
                    loop {
                        if counts.get(&addr).copied().unwrap_or(0) == n {
                            break;
                        }
                        let watches = self.watches.clone();
                        self.set_mode_w(bps.clone(), false, watches);
                        match self.adv()? {
                            Advance::Paused(Pause::Watch { tid, watch }) => {
                                self.counted(&start, &mut wcounts, watch, tid, Seg::Watch);
                                if self.watch_counts(&watch, &mut values)
                                    && stop(self, Arrival::Watch(watch))
                                {
                                    last = Some((self.at.clone(), Found::Watch(watch)));
                                }
                            }
                            Advance::Paused(Pause::Breakpoint { tid, addr: a }) => {
                                let c = self.counted(&start, &mut counts, a, tid, Seg::Hit);
                                // The arrival that ends the path is `to`
                                // itself, not before it.
                                let is_target = a == addr && c == n && last_seg;
                                if !is_target
                                    && self.breakpoints.contains(&a)
                                    && stop(self, Arrival::Breakpoint(a))
                                {
                                    last = Some((self.at.clone(), Found::Breakpoint(a)));
                                }
                            }
                            other_stop => {
                                return Err(other(format!("scan: unexpected {other_stop:?}")))
                            }
                        }
                    }
                    self.at = start.then(Seg::Hit(addr, n));
                }
                Seg::Watch(target, n) => {
                    // Triggers of the watchpoint the path counts, and of
                    // the user's (a moment reached through a watchpoint
                    // stop).
                    let start = self.at.clone();
                    let mut wcounts: HashMap<Watch, u64> = HashMap::new();
                    let mut watches = self.watches.clone();
                    if !watches.contains(&target) {
                        watches.push(target);
                    }
                    while wcounts.get(&target).copied().unwrap_or(0) < n {
                        self.set_mode_w(BTreeSet::new(), false, watches.clone());
                        match self.adv()? {
                            Advance::Paused(Pause::Watch { tid, watch }) => {
                                self.counted(&start, &mut wcounts, watch, tid, Seg::Watch);
                                // Unlike a breakpoint arrival, the access
                                // that ends the path (the trap comes after
                                // the instruction) lies before `to`.
                                let counts_as = self.watch_counts(&watch, &mut values);
                                if self.watches.contains(&watch)
                                    && counts_as
                                    && stop(self, Arrival::Watch(watch))
                                {
                                    last = Some((self.at.clone(), Found::Watch(watch)));
                                }
                            }
                            other_stop => {
                                return Err(other(format!("scan: unexpected {other_stop:?}")))
                            }
                        }
                    }
                    self.at = start.then(Seg::Watch(target, n));
                }
                Seg::ToSyscall => {
                    let start = self.at.clone();
                    let mut counts: HashMap<u64, u64> = HashMap::new();
                    loop {
                        let bps = self.breakpoints.clone();
                        self.set_mode(bps, false);
                        match self.rts()? {
                            Some(Pause::Breakpoint { tid, addr }) => {
                                self.counted(&start, &mut counts, addr, tid, Seg::Hit);
                                if stop(self, Arrival::Breakpoint(addr)) {
                                    last = Some((self.at.clone(), Found::Breakpoint(addr)));
                                }
                            }
                            None => break,
                            Some(p) => return Err(other(format!("scan: unexpected {p:?}"))),
                        }
                    }
                    self.at = start.then(Seg::ToSyscall);
                }
            }
        }
        Ok(last)
    }
}

/// A stop callback over breakpoint addresses only: every watchpoint that
/// counts stops.
fn breakpoints_only<'a>(
    stop: &'a mut dyn FnMut(&mut Timeline, u64) -> bool,
) -> impl FnMut(&mut Timeline, Arrival) -> bool + 'a {
    move |t, a| match a {
        Arrival::Breakpoint(addr) => stop(t, addr),
        Arrival::Watch(_) => true,
    }
}
