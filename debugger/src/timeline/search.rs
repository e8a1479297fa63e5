//! Searching history (DESIGN §6, FReD's bisection done exactly): the first
//! moment a predicate holds, and the last change of a value.
//!
//! `first_true` narrows the search the cheap way first: a binary search over
//! event boundaries (probing at in-memory snapshots when one is near the
//! middle), then inside the one interval between two events where the
//! predicate turned true:
//! - when the predicate reads only memory (a debugger expression without
//!   registers), forward with hardware watchpoints on the bytes it read,
//!   judging it at each write to them (the set is re-derived at each one,
//!   so `p->next->x` follows `p` as it changes);
//! - otherwise (registers, an external script) over single steps,
//!   exponential probing then bisection, so an expensive predicate is
//!   judged O(log n) times.
//!
//! `last_change` goes backward from here with watchpoints on what the
//! value reads, like gdb's reverse watchpoints, and skips writes that leave
//! the value as it was.

use super::*;

/// What a predicate says about one moment.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub truth: bool,
    /// The memory `(addr, len)` the verdict was derived from; None when it
    /// depends on more than memory (registers, an external program).
    pub reads: Option<Vec<(u64, u64)>>,
    /// The value to show in a report.
    pub shown: String,
}

/// Something judged at moments of the timeline.
pub trait Predicate {
    /// Judge the timeline's current moment (it may look at it, not move).
    fn judge(&mut self, tl: &Timeline) -> Result<Verdict>;
    /// How to name it in messages.
    fn describe(&self) -> String;
}

/// Limits of a search.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// At most this many single steps inside one interval between events
    /// (when the predicate cannot be watched).
    pub max_steps: u64,
    /// Check the result against every in-memory snapshot (a predicate
    /// that turns false again, or was true earlier, is reported).
    pub check_monotone: bool,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            max_steps: 20_000_000,
            check_monotone: true,
        }
    }
}

/// What made the predicate true (or the value change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The instruction at `rip`, executed at moment `before`.
    Instruction { rip: u64, before: Moment },
    /// A write by the instruction the thread executed just before the
    /// moment (a watchpoint trapped after it). Which one that is the code
    /// usually tells (the instruction that ends where the thread is);
    /// `reverse-stepi` finds it exactly, at the cost of counting arrivals
    /// from the last event, which in a hot loop is slow.
    Write,
    /// Event `index` of the trace (a syscall's result or a signal), applied
    /// by the kernel; `before` is where its thread was about to make it
    /// (when known).
    Event { index: u64, before: Option<Moment> },
}

/// The result of a search.
#[derive(Debug, Clone)]
pub struct Found {
    /// `first_true`: the first moment the predicate holds (just after the
    /// cause). `last_change`: the moment just before the last change.
    pub moment: Moment,
    pub cause: Cause,
    pub old: String,
    pub new: String,
    /// Moments judged (snapshots, events, writes or steps).
    pub probes: u64,
    /// Snapshots the result was checked against.
    pub checked: usize,
}

/// How the predicate's read set is watched: aligned slots, at most 4.
fn slots_for(reads: &[(u64, u64)]) -> Option<Vec<Watch>> {
    let mut ranges: Vec<(u64, u64)> = reads
        .iter()
        .filter(|r| r.1 > 0)
        .map(|&(a, l)| (a, a.saturating_add(l)))
        .collect();
    ranges.sort();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let slots: Vec<Watch> = merged
        .iter()
        .flat_map(|&(a, b)| watch_slots(a, b - a, false))
        .collect();
    (!slots.is_empty() && slots.len() <= 4).then_some(slots)
}

/// How one step inside an interval ended.
enum StepEnd {
    /// One instruction, still inside the interval.
    Stepped,
    /// The interval's end: the next event was applied (`stepped`: by the
    /// instruction just executed) or history ended.
    Boundary { stepped: bool },
}

impl Timeline {
    /// The first moment at or before `end` at which `pred` holds, given
    /// that it does not hold at the beginning of history and holds at
    /// `end` (errors say which of those fails). Breakpoints and watchpoints
    /// are set aside meanwhile. Ctrl-C: back where it began.
    pub fn first_true(
        &mut self,
        pred: &mut dyn Predicate,
        end: &Moment,
        opts: &SearchOptions,
    ) -> Result<Found> {
        self.aside(|t| t.first_true_inner(pred, end, opts))
    }

    /// Run `op` guarded for Ctrl-C, with the user's breakpoints and
    /// watchpoints set aside.
    fn aside<T>(&mut self, op: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let saved = (
            std::mem::take(&mut self.breakpoints),
            std::mem::take(&mut self.watches),
        );
        let r = self.guard(op);
        (self.breakpoints, self.watches) = saved;
        r
    }

    /// Go to `m` and judge it.
    fn probe(
        &mut self,
        pred: &mut dyn Predicate,
        m: &Moment,
        probes: &mut u64,
        what: &dyn Fn() -> String,
    ) -> Result<Verdict> {
        self.goto_inner(m)?;
        self.judge_here(pred, probes, what)
    }

    fn judge_here(
        &mut self,
        pred: &mut dyn Predicate,
        probes: &mut u64,
        what: &dyn Fn() -> String,
    ) -> Result<Verdict> {
        *probes += 1;
        let n = *probes;
        self.tick(&|| format!("probe {n}: {}", what()))?;
        pred.judge(self)
    }

    fn first_true_inner(
        &mut self,
        pred: &mut dyn Predicate,
        end: &Moment,
        opts: &SearchOptions,
    ) -> Result<Found> {
        let mut probes = 0u64;
        let name = pred.describe();
        let v_end = self.probe(pred, end, &mut probes, &|| format!("the end ({end})"))?;
        if !v_end.truth {
            return Err(other(format!(
                "{name} is not true at the end of the search (moment {end}; value {}): nothing to bisect",
                v_end.shown
            )));
        }
        let start = Moment::at_event(0);
        let v0 = self.probe(pred, &start, &mut probes, &|| "the beginning".into())?;
        if v0.truth {
            return Err(other(format!(
                "{name} is already true at the beginning of history (value {}): nothing to bisect",
                v0.shown
            )));
        }
        // Event boundaries: `lo` false, `hi` true (None: only `end`, which
        // lies after the boundary `end.event`, is known true).
        let (mut lo, mut lo_v) = (0u64, v0);
        let mut hi: Option<u64> = end.path.is_empty().then_some(end.event);
        if hi.is_none() && end.event > 0 {
            let m = Moment::at_event(end.event);
            let v = self.probe(pred, &m, &mut probes, &|| format!("event {}", end.event))?;
            if v.truth {
                hi = Some(end.event);
            } else {
                (lo, lo_v) = (end.event, v);
            }
        }
        while let Some(h) = hi.filter(|&h| h - lo > 1) {
            let mid = self.bisection_point(lo, h);
            let m = Moment::at_event(mid);
            let v = self.probe(pred, &m, &mut probes, &|| {
                format!("events {lo}..{h}, trying {mid}")
            })?;
            if v.truth {
                hi = Some(mid);
            } else {
                (lo, lo_v) = (mid, v);
            }
        }
        let base = Moment::at_event(lo);
        let interval_end = hi.map(Moment::at_event).unwrap_or_else(|| end.clone());
        let mut found = match lo_v.reads.as_deref().and_then(slots_for) {
            Some(slots) => self.watch_first_true(pred, &base, lo_v, slots, &mut probes, opts)?,
            None => self.step_first_true(pred, &base, lo_v, &interval_end, &mut probes, opts)?,
        };
        found.probes = probes;
        if opts.check_monotone {
            found.checked = self.check_monotone(pred, &found, end)?;
        }
        self.goto_inner(&found.moment)?;
        Ok(found)
    }

    /// An event between `lo` and `hi` to probe: a snapshot near the middle
    /// if there is one (a probe there is a fork), else the middle.
    fn bisection_point(&self, lo: u64, hi: u64) -> u64 {
        let mid = lo + (hi - lo) / 2;
        let quarter = (hi - lo) / 4;
        self.snapshots
            .iter()
            .map(|s| s.event)
            .filter(|&e| e > lo && e < hi && e.abs_diff(mid) <= quarter)
            .min_by_key(|&e| e.abs_diff(mid))
            .unwrap_or(mid)
    }

    /// Inside the interval that starts at `base` (where `pred` is false,
    /// verdict `v`): forward with watchpoints on what it reads.
    fn watch_first_true(
        &mut self,
        pred: &mut dyn Predicate,
        base: &Moment,
        mut v: Verdict,
        mut slots: Vec<Watch>,
        probes: &mut u64,
        opts: &SearchOptions,
    ) -> Result<Found> {
        self.goto_inner(base)?;
        let mut start = base.clone();
        let mut counts: HashMap<Watch, u64> = HashMap::new();
        let interval = base.event;
        loop {
            self.set_mode_w(BTreeSet::new(), false, slots.clone());
            let stop = if self.next_is_final()? {
                match self.rts()? {
                    None => {
                        self.at = self.at.then(Seg::ToSyscall);
                        None
                    }
                    Some(p) => Some(p),
                }
            } else {
                match self.adv()? {
                    Advance::Paused(p) => Some(p),
                    Advance::Event { .. } => {
                        self.set_at_boundary();
                        None
                    }
                    Advance::End => return Err(other("history ended during the search")),
                }
            };
            match stop {
                Some(Pause::Watch { tid, watch }) => {
                    self.counted(&start, &mut counts, watch, tid, Seg::Watch);
                    let at = self.at.clone();
                    let nv = self.judge_here(pred, probes, &|| {
                        format!("writes watched after event {interval}, at {at}")
                    })?;
                    if nv.truth {
                        return Ok(Found {
                            moment: self.at.clone(),
                            cause: Cause::Write,
                            old: v.shown,
                            new: nv.shown,
                            probes: 0,
                            checked: 0,
                        });
                    }
                    let nslots = nv.reads.as_deref().and_then(slots_for);
                    match nslots {
                        Some(s) if s == slots => {}
                        Some(s) => {
                            // It reads other memory now: watch that, from here.
                            slots = s;
                            start = self.at.clone();
                            counts.clear();
                        }
                        None => {
                            let here = self.at.clone();
                            let iend = Moment::at_event(interval + 1);
                            return self.step_first_true(pred, &here, nv, &iend, probes, opts);
                        }
                    }
                    v = nv;
                }
                Some(p) => return Err(other(format!("search: unexpected pause {p:?}"))),
                None => {
                    // The interval's end: the event (a syscall's result
                    // written by the kernel, a signal) made it true.
                    let here = self.at.clone();
                    let nv = self.judge_here(pred, probes, &|| format!("moment {here}"))?;
                    if !nv.truth {
                        return Err(other(format!(
                            "{} is false at {here} although it was true there when probed before: \
                             it does not depend on memory alone (registers, the selected frame?)",
                            pred.describe()
                        )));
                    }
                    let before = self.event_start(interval)?;
                    self.goto_inner(&here)?;
                    return Ok(Found {
                        moment: here,
                        cause: Cause::Event {
                            index: interval,
                            before,
                        },
                        old: v.shown,
                        new: nv.shown,
                        probes: 0,
                        checked: 0,
                    });
                }
            }
        }
    }

    /// Where the thread of event `index` was about to make its syscall
    /// (None for other events).
    fn event_start(&mut self, index: u64) -> Result<Option<Moment>> {
        if !matches!(
            self.trace.events.get(index as usize).as_deref(),
            Some(Event::Syscall { .. })
        ) {
            return Ok(None);
        }
        let after = Moment::at_event(index + 1);
        self.goto_inner(&after)?;
        self.syscall_anchor(&Moment::at_event(index))
    }

    /// One instruction forward inside the current event interval.
    fn step_in_interval(&mut self) -> Result<StepEnd> {
        if self.at_end()? {
            return Ok(StepEnd::Boundary { stepped: false });
        }
        self.set_mode(BTreeSet::new(), true);
        if self.next_is_final()? {
            return match self.rts()? {
                Some(Pause::Step { tid }) => {
                    self.thread = tid;
                    self.at = self.at.then(Seg::Steps(1));
                    Ok(StepEnd::Stepped)
                }
                Some(p) => Err(other(format!("unexpected pause {p:?}"))),
                None => {
                    self.at = self.at.then(Seg::ToSyscall);
                    Ok(StepEnd::Boundary { stepped: false })
                }
            };
        }
        match self.adv()? {
            Advance::Paused(Pause::Step { tid }) => {
                self.thread = tid;
                self.at = self.at.then(Seg::Steps(1));
                Ok(StepEnd::Stepped)
            }
            Advance::Paused(p) => Err(other(format!("unexpected pause {p:?}"))),
            Advance::Event { stepped } => {
                self.set_at_boundary();
                Ok(StepEnd::Boundary { stepped })
            }
            Advance::End => Ok(StepEnd::Boundary { stepped: false }),
        }
    }

    /// From `base` (false, verdict `v`) inside one interval that ends at
    /// `iend` (true): over single steps, probing 1, 2, 4... steps ahead
    /// until true, then bisecting.
    fn step_first_true(
        &mut self,
        pred: &mut dyn Predicate,
        base: &Moment,
        mut v: Verdict,
        iend: &Moment,
        probes: &mut u64,
        opts: &SearchOptions,
    ) -> Result<Found> {
        self.goto_inner(base)?;
        let (mut lo, mut k, mut next) = (0u64, 0u64, 1u64);
        // (steps, moment, verdict, the interval's end reached)
        let hi: (u64, Moment, Verdict, bool);
        'probe: loop {
            while k < next {
                let e = self.step_in_interval()?;
                k += 1;
                if k % 4096 == 0 {
                    self.tick(&|| format!("stepping: {k} instructions after {base}"))?;
                }
                if k > opts.max_steps {
                    return Err(other(format!(
                        "the predicate turned true between {base} and {iend}, more than {} \
                         instructions apart; it cannot be watched (it reads registers or is \
                         decided by a script), so rewind single-steps there: raise --max-steps \
                         or give a predicate over memory",
                        opts.max_steps
                    )));
                }
                if let StepEnd::Boundary { stepped } = e {
                    let here = self.at.clone();
                    let nv = self.judge_here(pred, probes, &|| format!("moment {here}"))?;
                    if !nv.truth {
                        return Err(other(format!(
                            "{} is false at {here} although it was true there when probed before",
                            pred.describe()
                        )));
                    }
                    if !stepped {
                        // No instruction of the interval made it true.
                        let index = here.event.saturating_sub(1);
                        let before = self.event_start(index)?;
                        self.goto_inner(&here)?;
                        return Ok(Found {
                            moment: here,
                            cause: Cause::Event { index, before },
                            old: v.shown,
                            new: nv.shown,
                            probes: 0,
                            checked: 0,
                        });
                    }
                    hi = (k, here, nv, true);
                    break 'probe;
                }
            }
            self.take_anchor();
            let here = self.at.clone();
            let nv = self.judge_here(pred, probes, &|| format!("{k} steps after {base}"))?;
            if nv.truth {
                hi = (k, here, nv, false);
                break;
            }
            (lo, v) = (k, nv);
            next = k.saturating_mul(2);
        }
        let (mut hi_k, mut hi_m, mut hi_v, ends) = hi;
        while hi_k - lo > 1 {
            let mid = lo + (hi_k - lo) / 2;
            let m = base.then(Seg::Steps(mid));
            let nv = self.probe(pred, &m, probes, &|| {
                format!("steps {lo}..{hi_k} after {base}, trying {mid}")
            })?;
            self.take_anchor();
            if nv.truth {
                (hi_k, hi_m, hi_v) = (mid, m, nv);
            } else {
                (lo, v) = (mid, nv);
            }
        }
        let before = base.then(Seg::Steps(lo));
        self.goto_inner(&before)?;
        let rip = self.regs()?.rip;
        let cause = if ends && hi_k == k {
            Cause::Event {
                index: hi_m.event.saturating_sub(1),
                before: Some(before),
            }
        } else {
            Cause::Instruction { rip, before }
        };
        Ok(Found {
            moment: hi_m,
            cause,
            old: v.shown,
            new: hi_v.shown,
            probes: 0,
            checked: 0,
        })
    }

    /// Judge the predicate at every in-memory snapshot: false before the
    /// found moment, true after it up to `end`; the number checked.
    fn check_monotone(
        &mut self,
        pred: &mut dyn Predicate,
        found: &Found,
        end: &Moment,
    ) -> Result<usize> {
        let first_false = match &found.cause {
            Cause::Instruction { before, .. } => before.event,
            Cause::Write => found.moment.event,
            Cause::Event { index, .. } => *index,
        };
        let events: Vec<u64> = self
            .snapshots
            .iter()
            .map(|s| s.event)
            .filter(|&e| e > 0 && (e <= first_false || (e > found.moment.event && e <= end.event)))
            .collect();
        let mut n = 0usize;
        for e in events {
            let m = Moment::at_event(e);
            self.goto_inner(&m)?;
            let v = pred.judge(self)?;
            n += 1;
            let expect = e > first_false;
            if v.truth != expect {
                return Err(other(format!(
                    "{} is not monotone: it turns true at {} but is {} at event {e} (value {}); \
                     bisect finds the first moment only for a predicate that stays true once \
                     true (for the last change of a value, use --changes / reverse-watch)",
                    pred.describe(),
                    found.moment,
                    if v.truth {
                        "already true"
                    } else {
                        "false again"
                    },
                    v.shown
                )));
            }
        }
        Ok(n)
    }

    /// The last change, before here, of the value `pred` shows (its
    /// `shown` text), through watchpoints on the memory it reads now:
    /// stops just before the instruction (or syscall) that changed it,
    /// like a reverse watchpoint. Breakpoints are set aside meanwhile.
    pub fn last_change(&mut self, pred: &mut dyn Predicate) -> Result<Found> {
        self.aside(|t| t.last_change_inner(pred))
    }

    fn last_change_inner(&mut self, pred: &mut dyn Predicate) -> Result<Found> {
        let mut probes = 0u64;
        let now = self.judge_here(pred, &mut probes, &|| "here".into())?;
        let Some(slots) = now.reads.as_deref().and_then(slots_for) else {
            return Err(other(format!(
                "cannot watch {}: it {}",
                pred.describe(),
                if now.reads.is_none() {
                    "depends on registers"
                } else {
                    "reads more memory than the 4 debug registers cover"
                }
            )));
        };
        self.watches = slots;
        loop {
            // Every watchpoint trigger, no breakpoint.
            match self.reverse_cont_inner(&mut |_, a| matches!(a, Arrival::Watch(_)))? {
                StopReason::Watch(_) => {
                    let b = self.at.clone();
                    let old = self.judge_here(pred, &mut probes, &|| format!("moment {b}"))?;
                    self.stepi_inner(None)?;
                    let a = self.at.clone();
                    let new = self.judge_here(pred, &mut probes, &|| format!("moment {a}"))?;
                    // A step that went past event boundaries no instruction
                    // led to (the end of a syscall that blocked while other
                    // threads ran) before its instruction: one of those
                    // events may be what changed it.
                    let mut passed = None;
                    if old.shown != new.shown && !a.path.is_empty() {
                        for e in b.event + 1..=a.event {
                            let m = Moment::at_event(e);
                            self.goto_inner(&m)?;
                            let v =
                                self.judge_here(pred, &mut probes, &|| format!("moment {m}"))?;
                            if v.shown != old.shown {
                                passed = Some(e - 1);
                                break;
                            }
                        }
                    }
                    self.goto_inner(&b)?;
                    if old.shown != new.shown {
                        let rip = self.regs()?.rip;
                        let cause = if let Some(index) = passed {
                            // Its thread made it long before, no instruction here.
                            Cause::Event {
                                index,
                                before: None,
                            }
                        } else if a.path.is_empty() && a.event > b.event {
                            Cause::Event {
                                index: a.event - 1,
                                before: Some(b.clone()),
                            }
                        } else {
                            Cause::Instruction {
                                rip,
                                before: b.clone(),
                            }
                        };
                        return Ok(Found {
                            moment: b,
                            cause,
                            old: old.shown,
                            new: new.shown,
                            probes,
                            checked: 0,
                        });
                    }
                }
                StopReason::Start => {
                    return Err(other(format!(
                        "{} has had its value {} since the beginning of history",
                        pred.describe(),
                        now.shown
                    )))
                }
                r => return Err(other(format!("reverse search stopped: {r:?}"))),
            }
        }
    }
}

/// A writer appending to a shared buffer (the console, captured).
struct Capture(Rc<RefCell<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The recorded run's terminal output, by event.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Everything written to stdout and stderr, in order.
    pub text: Vec<u8>,
    /// (event index of a write, length of `text` after it).
    pub writes: Vec<(u64, usize)>,
}

impl Output {
    /// The write that brought `text` to at least `len` bytes.
    pub fn write_reaching(&self, len: usize) -> Option<(u64, usize)> {
        let i = self.writes.iter().position(|w| w.1 >= len)?;
        let start = if i == 0 { 0 } else { self.writes[i - 1].1 };
        Some((self.writes[i].0, start))
    }
}

impl Timeline {
    /// Replay the whole history once, collecting what the program wrote
    /// to its terminal event by event (nothing is shown meanwhile). Ends
    /// at the end of history.
    pub fn collect_output(&mut self) -> Result<Output> {
        let buf = Rc::new(RefCell::new(Vec::new()));
        let saved = {
            let mut c = self.console.borrow_mut();
            (
                std::mem::replace(&mut c.out, Box::new(Capture(buf.clone()))),
                std::mem::replace(&mut c.err, Box::new(Capture(buf.clone()))),
                std::mem::replace(&mut c.shown_through, 0),
            )
        };
        let r = self.guard(|t| {
            // From the start: writes already shown are shown again, into
            // the buffer.
            t.lost = true;
            t.goto_inner(&Moment::at_event(0))?;
            let mut out = Output::default();
            let total = t.events();
            while t.cur.event() < total && !t.next_is_final()? {
                let e = t.cur.event();
                t.tick(&|| format!("collecting output: event {e} of {total}"))?;
                t.apply_event()?;
                let len = buf.borrow().len();
                if len > out.writes.last().map(|w| w.1).unwrap_or(0) {
                    out.writes.push((e, len));
                }
            }
            out.text = buf.borrow().clone();
            Ok(out)
        });
        let mut c = self.console.borrow_mut();
        let shown = c.shown_through;
        c.out = saved.0;
        c.err = saved.1;
        c.shown_through = saved.2.max(shown);
        r
    }

    /// Where the thread of event `index` (a syscall) was about to make it:
    /// at its syscall instruction. None for other events.
    pub fn syscall_start(&mut self, index: u64) -> Result<Option<Moment>> {
        self.guard(|t| t.event_start(index))
    }
}
