//! The gdbstub target: a [`Timeline`] seen as a stopped multithreaded
//! process that runs forward and backward.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use gdbstub::common::{Signal, Tid};
use gdbstub::stub::MultiThreadStopReason;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::reverse_exec::{
    ReplayLogPosition, ReverseCont, ReverseContOps, ReverseStep, ReverseStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwWatchpoint, HwWatchpointOps, SwBreakpoint, SwBreakpointOps,
    WatchKind,
};
use gdbstub::target::ext::monitor_cmd::{outputln, ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::{Target, TargetError, TargetResult};

use super::conn::Signals;
use super::regs::{Layout, Regs, X86_64Rewind};
use crate::inspect::Program;
use crate::timeline::{Moment, StopReason, Timeline, TimelineError, Watch};

/// What gdb asked to do next; done in `run_pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Cont,
    Step(i32),
    ReverseCont,
    ReverseStep(i32),
}

/// A watchpoint gdb inserted (Z2/Z3/Z4) and the debug-register slots
/// covering it.
struct GdbWatch {
    addr: u64,
    len: u64,
    kind: WatchKind,
    slots: Vec<Watch>,
}

/// What running produced.
pub enum Ran {
    Stopped(MultiThreadStopReason<u64>),
    /// gdb sent something (Ctrl-C) or went away: the timeline is back
    /// where the action began; the action is kept to be run again.
    Interrupted,
}

pub struct Server {
    pub tl: Timeline,
    exe: PathBuf,
    prog: Program,
    layout: Layout,
    /// Set by resume/reverse_*, taken by run_pending.
    pub action: Option<Action>,
    /// From vCont: the thread to step (else continue).
    step_thread: Option<i32>,
    watches: Vec<GdbWatch>,
    signals: Signals,
    /// `monitor checkpoint`s: moments with an id.
    checkpoints: Vec<(u32, Moment)>,
    /// The dynamic linker's `r_debug`, once found.
    r_debug: Option<u64>,
    /// The process id gdb sees: the recorded one (the program's `getpid()`).
    pub(super) vpid: i32,
    /// Files gdb opened through `vFile:open`.
    pub(super) files: super::hostio::OpenFiles,
}

/// Most single steps taken to move a given thread by one instruction when
/// others run first.
const STEP_OTHER_THREADS_LIMIT: u32 = 1_000_000;

fn tid_of(vtid: i32) -> Tid {
    NonZeroUsize::new(vtid.max(1) as usize).unwrap_or(NonZeroUsize::MIN)
}

fn vtid_of(tid: Tid) -> i32 {
    tid.get() as i32
}

/// The auxiliary vector of the replayed process, as the kernel keeps it.
fn raw_auxv(tl: &Timeline) -> Vec<u8> {
    let pid = tl.replayer().tracee().pid;
    std::fs::read(format!("/proc/{pid}/auxv")).unwrap_or_default()
}

/// Copy the part of `data` at `offset` into `buf` (qXfer reads).
fn xfer(data: &[u8], offset: u64, length: usize, buf: &mut [u8]) -> usize {
    let start = (offset as usize).min(data.len());
    let n = (data.len() - start).min(length).min(buf.len());
    buf[..n].copy_from_slice(&data[start..start + n]);
    n
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Server {
    pub fn new(tl: Timeline, exe: PathBuf, signals: Signals) -> Server {
        let xs = tl
            .real_thread()
            .and_then(|t| rewind_ckpt::sys::ptrace::get_xstate(t).ok())
            .unwrap_or_default();
        tracing::debug!(
            "xstate: {} bytes, registers: {:?}",
            xs.len(),
            Layout::of_machine(xs.len())
        );
        let real = tl.replayer().tracee().pid;
        let vpid = tl
            .replayer()
            .threads()
            .iter()
            .find(|t| t.1 == real)
            .map_or(real, |t| t.0);
        let mut s = Server {
            tl,
            exe,
            prog: Program::new(),
            layout: Layout::of_machine(xs.len()),
            action: None,
            step_thread: None,
            watches: Vec::new(),
            signals,
            checkpoints: Vec::new(),
            r_debug: None,
            vpid,
            files: Default::default(),
        };
        s.find_r_debug();
        s.tl.predecessors = Some(crate::repl::predecessor_hook(s.exe.clone()));
        s
    }

    pub fn current_tid(&self) -> Tid {
        tid_of(self.tl.thread())
    }

    fn real_tid(&self, tid: Tid) -> Option<libc::pid_t> {
        let v = vtid_of(tid);
        self.tl
            .replayer()
            .threads()
            .iter()
            .find(|t| t.0 == v)
            .map(|t| t.1)
    }

    /// The debug-register slots in use (no duplicates).
    fn sync_watches(&mut self) {
        let mut all: Vec<Watch> = Vec::new();
        for w in &self.watches {
            for s in &w.slots {
                if !all.contains(s) {
                    all.push(*s);
                }
            }
        }
        self.tl.watches = all;
    }

    /// The bytes of every write watchpoint slot (to see a change made by
    /// a single step, which does not arm the debug registers).
    fn write_slot_values(&self) -> Vec<(Watch, Option<Vec<u8>>)> {
        self.tl
            .watches
            .iter()
            .map(|w| (*w, self.tl.watched_bytes(w)))
            .collect()
    }

    fn changed_slot(&self, before: &[(Watch, Option<Vec<u8>>)]) -> Option<Watch> {
        before
            .iter()
            .find(|(w, v)| self.tl.watched_bytes(w) != *v)
            .map(|(w, _)| *w)
    }

    fn watch_stop(&self, slot: Watch) -> MultiThreadStopReason<u64> {
        let kind = self
            .watches
            .iter()
            .find(|w| w.slots.contains(&slot))
            .map(|w| w.kind)
            .unwrap_or(WatchKind::Write);
        MultiThreadStopReason::Watch {
            tid: self.current_tid(),
            kind,
            addr: slot.addr,
        }
    }

    fn stop_of(&self, r: StopReason) -> MultiThreadStopReason<u64> {
        let tid = self.current_tid();
        match r {
            StopReason::Breakpoint(_) => MultiThreadStopReason::SwBreak(tid),
            StopReason::Watch(w) => self.watch_stop(w),
            StopReason::End => MultiThreadStopReason::ReplayLog {
                tid: Some(tid),
                pos: ReplayLogPosition::End,
            },
            StopReason::Start => MultiThreadStopReason::ReplayLog {
                tid: Some(tid),
                pos: ReplayLogPosition::Begin,
            },
            StopReason::Step | StopReason::Arrived => MultiThreadStopReason::SignalWithThread {
                tid,
                signal: Signal::SIGTRAP,
            },
        }
    }

    /// Do what gdb asked (the pending action).
    pub fn run_pending(&mut self) -> Ran {
        let Some(action) = self.action else {
            return Ran::Stopped(MultiThreadStopReason::SignalWithThread {
                tid: self.current_tid(),
                signal: Signal::SIGTRAP,
            });
        };
        // A Ctrl-C left over from a finished run is not for this one.
        let _ = rewind_ckpt::sys::take_interrupt();
        self.signals.set_running(true);
        let r = self.run(action);
        self.signals.set_running(false);
        self.find_r_debug();
        match r {
            Ok(stop) => {
                self.action = None;
                Ran::Stopped(stop)
            }
            Err(TimelineError::Interrupted) => Ran::Interrupted,
            Err(e) => {
                self.action = None;
                eprintln!("rewind: {e}");
                Ran::Stopped(MultiThreadStopReason::SignalWithThread {
                    tid: self.current_tid(),
                    signal: Signal::SIGSTOP,
                })
            }
        }
    }

    fn run(&mut self, action: Action) -> Result<MultiThreadStopReason<u64>, TimelineError> {
        match action {
            Action::Cont => {
                let r = self.tl.cont(&mut |_, _| true)?;
                Ok(self.stop_of(r))
            }
            Action::ReverseCont => {
                let r = self.tl.reverse_cont(&mut |_, _| true)?;
                Ok(self.stop_of(r))
            }
            Action::Step(vtid) | Action::ReverseStep(vtid) => {
                let forward = matches!(action, Action::Step(_));
                let before = self.write_slot_values();
                let start = self.tl.now().clone();
                let mut n = 0u32;
                let mut check_at = 4096u32;
                loop {
                    let r = if forward {
                        self.tl.stepi()?
                    } else {
                        self.tl.reverse_stepi()?
                    };
                    if r != StopReason::Step {
                        return Ok(self.stop_of(r));
                    }
                    n += 1;
                    let mine = self.tl.thread() == vtid
                        || !self.tl.replayer().threads().iter().any(|t| t.0 == vtid);
                    if mine || n >= STEP_OTHER_THREADS_LIMIT {
                        break;
                    }
                    // Another thread ran into a breakpoint meanwhile.
                    let pc = self.tl.regs().map(|r| r.rip).unwrap_or(0);
                    if self.tl.breakpoints.contains(&pc) {
                        return Ok(MultiThreadStopReason::SwBreak(self.current_tid()));
                    }
                    if n >= check_at {
                        check_at += 4096;
                        if self.signals.wants_attention() {
                            self.tl.goto(&start)?;
                            return Err(TimelineError::Interrupted);
                        }
                    }
                }
                if let Some(slot) = self.changed_slot(&before) {
                    return Ok(self.watch_stop(slot));
                }
                Ok(MultiThreadStopReason::SignalWithThread {
                    tid: self.current_tid(),
                    signal: Signal::SIGTRAP,
                })
            }
        }
    }

    /// Find the dynamic linker's `r_debug` (once; it never moves).
    fn find_r_debug(&mut self) {
        if self.r_debug.is_some() {
            return;
        }
        let view = crate::repl::Now {
            tl: &self.tl,
            exe: &self.exe,
        };
        let _ = self.prog.refresh(&view);
        self.r_debug = self.prog.r_debug_addr();
    }

    fn monitor(&mut self, cmd: &str) -> String {
        let (word, args) = cmd
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or((cmd.trim(), ""));
        match word {
            "when" => {
                let m = self.tl.now().clone();
                format!(
                    "Current event: {} of {} (moment {m}, thread {})",
                    m.event,
                    self.tl.events(),
                    self.tl.thread()
                )
            }
            "checkpoint" => {
                let id = self.checkpoints.last().map(|c| c.0 + 1).unwrap_or(1);
                let m = self.tl.now().clone();
                let snap = match self.tl.snapshot_now() {
                    Ok((pause, pid)) => format!(
                        " (in-memory snapshot: process {pid}, {:.1} ms)",
                        pause.as_secs_f64() * 1e3
                    ),
                    Err(e) => format!(" ({e})"),
                };
                self.checkpoints.push((id, m.clone()));
                format!("checkpoint {id}: moment {m}{snap}\n`monitor goto {m}` comes back here.")
            }
            "checkpoints" => {
                crate::repl::checkpoints_text(&self.checkpoints, &self.tl, "monitor checkpoint")
            }
            "goto" => {
                let arg = args.trim();
                // A checkpoint number, or a moment.
                let target = match arg.strip_prefix('#').or(Some(arg)).and_then(|a| {
                    let id: u32 = a.parse().ok()?;
                    if arg.starts_with('#') {
                        self.checkpoints
                            .iter()
                            .find(|c| c.0 == id)
                            .map(|c| c.1.clone())
                    } else {
                        None
                    }
                }) {
                    Some(m) => Ok(m),
                    None => arg.parse::<Moment>(),
                };
                match target {
                    Err(e) => e,
                    Ok(m) => {
                        let _ = rewind_ckpt::sys::take_interrupt();
                        self.signals.set_running(true);
                        let r = self.tl.goto(&m);
                        self.signals.set_running(false);
                        match r {
                            Ok(()) => format!(
                                "Now at moment {m} (thread {}).\ngdb still shows the old registers and frames: run `maint flush register-cache` (or `flushregs`) now.",
                                self.tl.thread()
                            ),
                            Err(TimelineError::Interrupted) => "Interrupted.".into(),
                            Err(e) => e.to_string(),
                        }
                    }
                }
            }
            "" | "help" => MONITOR_HELP.into(),
            other => format!("Unknown monitor command `{other}'. `monitor help` lists them."),
        }
    }
}

const MONITOR_HELP: &str = "\
rewind gdbserver monitor commands:
  monitor when             the current moment (event, path) and thread
  monitor checkpoint       remember this moment (and snapshot it in memory)
  monitor checkpoints      list them, and the in-memory snapshots
  monitor goto MOMENT      go to a moment (EVENT, EVENT+STEPS..., as `when`
                           shows) or to checkpoint #N; then run
                           `maint flush register-cache` so gdb rereads
  monitor help             this text
gdb's reverse-step/next/finish/continue/stepi and reverse watchpoints work;
history is read-only: writes to memory or registers are refused.";

impl Target for Server {
    type Arch = X86_64Rewind;
    type Error = String;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    fn support_exec_file(
        &mut self,
    ) -> Option<gdbstub::target::ext::exec_file::ExecFileOps<'_, Self>> {
        Some(self)
    }

    fn support_auxv(&mut self) -> Option<gdbstub::target::ext::auxv::AuxvOps<'_, Self>> {
        Some(self)
    }

    fn support_libraries_svr4(
        &mut self,
    ) -> Option<gdbstub::target::ext::libraries::LibrariesSvr4Ops<'_, Self>> {
        Some(self)
    }

    fn support_target_description_xml_override(
        &mut self,
    ) -> Option<
        gdbstub::target::ext::target_description_xml_override::TargetDescriptionXmlOverrideOps<
            '_,
            Self,
        >,
    > {
        Some(self)
    }

    fn support_host_io(&mut self) -> Option<gdbstub::target::ext::host_io::HostIoOps<'_, Self>> {
        Some(self)
    }

    fn support_extended_mode(
        &mut self,
    ) -> Option<gdbstub::target::ext::extended_mode::ExtendedModeOps<'_, Self>> {
        Some(self)
    }

    // Software breakpoints are kept by the timeline, never written as int3.
    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }
}

impl MultiThreadBase for Server {
    fn read_registers(&mut self, regs: &mut Regs, tid: Tid) -> TargetResult<(), Self> {
        let real = self.real_tid(tid).ok_or(TargetError::Errno(3))?;
        let r = rewind_ckpt::sys::ptrace::getregs(real).map_err(|_| TargetError::Errno(3))?;
        let xs = rewind_ckpt::sys::ptrace::get_xstate(real).unwrap_or_default();
        regs.0 = self.layout.pack(&r, &xs);
        Ok(())
    }

    fn write_registers(&mut self, _regs: &Regs, _tid: Tid) -> TargetResult<(), Self> {
        // History cannot change: replaying on would diverge.
        Err(TargetError::Errno(libc::EROFS as u8))
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], _tid: Tid) -> TargetResult<usize, Self> {
        let t = self.tl.replayer().tracee();
        if t.read_mem(start, data).is_ok() {
            return Ok(data.len());
        }
        // Partly readable: the readable prefix, page by page.
        let mut done = 0usize;
        while done < data.len() {
            let at = start.wrapping_add(done as u64);
            let n = ((4096 - at % 4096) as usize).min(data.len() - done);
            if t.read_mem(at, &mut data[done..done + n]).is_err() {
                break;
            }
            done += n;
        }
        if done == 0 {
            return Err(TargetError::Errno(libc::EIO as u8));
        }
        Ok(done)
    }

    fn write_addrs(&mut self, _start: u64, _data: &[u8], _tid: Tid) -> TargetResult<(), Self> {
        Err(TargetError::Errno(libc::EROFS as u8))
    }

    fn list_active_threads(
        &mut self,
        thread_is_active: &mut dyn FnMut(Tid),
    ) -> Result<(), Self::Error> {
        for (vtid, _) in self.tl.replayer().threads() {
            thread_is_active(tid_of(vtid));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadResume for Server {
    fn resume(&mut self) -> Result<(), Self::Error> {
        self.action = Some(match self.step_thread {
            Some(t) => Action::Step(t),
            None => Action::Cont,
        });
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), Self::Error> {
        self.step_thread = None;
        Ok(())
    }

    fn set_resume_action_continue(
        &mut self,
        _tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        // Signals are replayed as recorded; gdb cannot add one.
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_reverse_step(&mut self) -> Option<ReverseStepOps<'_, Tid, Self>> {
        Some(self)
    }

    fn support_reverse_cont(&mut self) -> Option<ReverseContOps<'_, Tid, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadSchedulerLocking for Server {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), Self::Error> {
        // The recorded schedule decides which thread runs; gdb asks this
        // when it steps one thread over a breakpoint, which a step of that
        // thread does.
        Ok(())
    }
}

impl MultiThreadSingleStep for Server {
    fn set_resume_action_step(
        &mut self,
        tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        self.step_thread = Some(vtid_of(tid));
        Ok(())
    }
}

impl ReverseCont<Tid> for Server {
    fn reverse_cont(&mut self) -> Result<(), Self::Error> {
        self.action = Some(Action::ReverseCont);
        Ok(())
    }
}

impl ReverseStep<Tid> for Server {
    fn reverse_step(&mut self, tid: Tid) -> Result<(), Self::Error> {
        self.action = Some(Action::ReverseStep(vtid_of(tid)));
        Ok(())
    }
}

impl Breakpoints for Server {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for Server {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.tl.breakpoints.insert(addr);
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.tl.breakpoints.remove(&addr))
    }
}

impl HwWatchpoint for Server {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        if len == 0 || len > 32 {
            return Ok(false);
        }
        let slots = crate::timeline::watch_slots(addr, len, kind != WatchKind::Write);
        let mut all: Vec<Watch> = self.tl.watches.clone();
        for s in &slots {
            if !all.contains(s) {
                all.push(*s);
            }
        }
        if all.len() > 4 {
            // gdb says "Could not insert hardware watchpoint".
            return Ok(false);
        }
        self.watches.push(GdbWatch {
            addr,
            len,
            kind,
            slots,
        });
        self.sync_watches();
        Ok(true)
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        let Some(i) = self
            .watches
            .iter()
            .position(|w| w.addr == addr && w.len == len && w.kind == kind)
        else {
            return Ok(false);
        };
        self.watches.remove(i);
        self.sync_watches();
        Ok(true)
    }
}

impl MonitorCmd for Server {
    fn handle_monitor_cmd(&mut self, cmd: &[u8], mut out: ConsoleOutput<'_>) -> Result<(), String> {
        let cmd = String::from_utf8_lossy(cmd).into_owned();
        let text = self.monitor(&cmd);
        for line in text.lines() {
            outputln!(out, "{line}");
        }
        Ok(())
    }
}

impl gdbstub::target::ext::exec_file::ExecFile for Server {
    fn get_exec_file(
        &self,
        _pid: Option<gdbstub::common::Pid>,
        offset: u64,
        length: usize,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        let path = self.exe.to_string_lossy().into_owned();
        Ok(xfer(path.as_bytes(), offset, length, buf))
    }
}

impl gdbstub::target::ext::auxv::Auxv for Server {
    fn get_auxv(&self, offset: u64, length: usize, buf: &mut [u8]) -> TargetResult<usize, Self> {
        Ok(xfer(&raw_auxv(&self.tl), offset, length, buf))
    }
}

impl gdbstub::target::ext::libraries::LibrariesSvr4 for Server {
    fn get_libraries_svr4(
        &self,
        offset: u64,
        length: usize,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        let r_debug = self.r_debug.or_else(|| {
            let mut prog = Program::new();
            let view = crate::repl::Now {
                tl: &self.tl,
                exe: &self.exe,
            };
            prog.refresh(&view).ok()?;
            prog.r_debug_addr()
        });
        let xml = svr4_list(&self.tl, r_debug);
        Ok(xfer(xml.as_bytes(), offset, length, buf))
    }
}

impl gdbstub::target::ext::target_description_xml_override::TargetDescriptionXmlOverride
    for Server
{
    fn target_description_xml(
        &self,
        annex: &[u8],
        offset: u64,
        length: usize,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        if annex != b"target.xml" {
            return Err(TargetError::Errno(libc::ENOENT as u8));
        }
        let xml = self.layout.target_xml();
        Ok(xfer(xml.as_bytes(), offset, length, buf))
    }
}

/// The libraries-svr4 document: the dynamic linker's `link_map` list from
/// `r_debug` (the first entry is the executable: `main-lm`).
fn svr4_list(tl: &Timeline, r_debug: Option<u64>) -> String {
    let read_u64 = |a: u64| -> Option<u64> {
        let mut b = [0u8; 8];
        tl.replayer().tracee().read_mem(a, &mut b).ok()?;
        Some(u64::from_le_bytes(b))
    };
    let mut head = String::from("<library-list-svr4 version=\"1.0\"");
    let mut libs = String::new();
    if let Some(rd) = r_debug {
        let mut lm = read_u64(rd + 8).unwrap_or(0);
        let mut first = true;
        let mut n = 0;
        while lm != 0 && n < 4096 {
            n += 1;
            let (Some(l_addr), Some(l_name), Some(l_ld), Some(next)) = (
                read_u64(lm),
                read_u64(lm + 8),
                read_u64(lm + 16),
                read_u64(lm + 24),
            ) else {
                break;
            };
            if first {
                head.push_str(&format!(" main-lm=\"{lm:#x}\""));
                first = false;
            } else {
                let name = tl
                    .read_c_string(l_name)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                libs.push_str(&format!(
                    "<library name=\"{}\" lmid=\"0x0\" lm=\"{lm:#x}\" l_addr=\"{l_addr:#x}\" l_ld=\"{l_ld:#x}\"/>",
                    xml_escape(&name)
                ));
            }
            lm = next;
        }
    }
    format!("{head}>{libs}</library-list-svr4>")
}
