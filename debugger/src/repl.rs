//! `rewind debug`: gdb's vocabulary over a [`Timeline`], forward and
//! backward. The command interpreter is independent of the terminal: the
//! interactive loop (rustyline), `-x FILE`, `-ex CMD` and `source` all feed
//! it lines.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::inspect::{self, Frame, Program, Target};
use crate::timeline::{Arrival, Moment, StopReason, Timeline, TimelineError};

mod search;
pub use search::{parse_search, Search};

/// A user breakpoint.
#[derive(Debug, Clone)]
struct Breakpoint {
    id: u32,
    /// What the user typed.
    spec: String,
    addrs: Vec<u64>,
    enabled: bool,
    temporary: bool,
    condition: Option<String>,
    hits: u64,
    /// Arrivals still to pass without stopping (`continue N`, `ignore`).
    ignore: u64,
}

/// A user watchpoint: an expression's bytes, in debug-register slots.
#[derive(Debug, Clone)]
struct UserWatch {
    id: u32,
    expr: String,
    /// "watch", "rwatch" or "awatch".
    kind: &'static str,
    slots: Vec<crate::timeline::Watch>,
    enabled: bool,
    hits: u64,
    /// The value as last shown (gdb's Old value).
    shown: String,
    /// `watch EXPR if COND`: a trigger stops only when COND is true there.
    condition: Option<String>,
}

impl UserWatch {
    fn title(&self) -> &'static str {
        match self.kind {
            "rwatch" => "Hardware read watchpoint",
            "awatch" => "Hardware access (read/write) watchpoint",
            _ => "Hardware watchpoint",
        }
    }
}

/// The program as the inspector sees it at the timeline's current moment.
pub struct Now<'a> {
    pub tl: &'a Timeline,
    pub exe: &'a Path,
}

impl Target for Now<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), String> {
        self.tl
            .replayer()
            .tracee()
            .read_mem(addr, buf)
            .map_err(|_| format!("Cannot access memory at address {addr:#x}"))
    }

    fn regs(&self) -> libc::user_regs_struct {
        // A thread that vanished shows zeros rather than failing every
        // command.
        self.tl.regs().unwrap_or_else(|_| zero_regs())
    }

    fn auxv(&self) -> Vec<(u64, u64)> {
        crate::gcore::read_auxv(self.tl.replayer().tracee().pid).unwrap_or_default()
    }

    fn exe(&self) -> PathBuf {
        self.exe.to_path_buf()
    }

    fn xmm(&self, i: usize) -> Option<[u8; 16]> {
        // The xsave area starts with the FXSAVE layout: xmm0 at 160.
        let tid = self.tl.real_thread()?;
        let x = rewind_ckpt::sys::ptrace::get_xstate(tid).ok()?;
        x.get(160 + 16 * i..176 + 16 * i)?.try_into().ok()
    }
}

fn zero_regs() -> libc::user_regs_struct {
    rewind_ckpt::capture::zero_regs()
}

/// What the interpreter wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Go,
    Quit,
}

pub struct Debugger {
    tl: Timeline,
    prog: Program,
    exe: PathBuf,
    bps: Vec<Breakpoint>,
    watches: Vec<UserWatch>,
    next_bp: u32,
    out: Box<dyn Write>,
    /// Selected frame (0 = innermost).
    frame: usize,
    history: Vec<inspect::Value>,
    /// `x`'s last format, size and next address (a plain `x` continues).
    examiner: inspect::Examiner,
    /// User checkpoints: moments with an id.
    checkpoints: Vec<(u32, Moment)>,
    /// Last line shown by `list`.
    list_next: Option<(PathBuf, u32)>,
}

/// An error shown to the user (one line), the command not done.
type CmdResult = Result<(), String>;

fn terr(e: TimelineError) -> String {
    match e {
        TimelineError::Interrupted => "Quit (interrupted)".into(),
        other => other.to_string(),
    }
}

const COMMANDS: &[&str] = &[
    "advance",
    "backtrace",
    "bisect",
    "break",
    "checkpoint",
    "continue",
    "delete",
    "disable",
    "disassemble",
    "down",
    "echo",
    "enable",
    "finish",
    "frame",
    "gcore",
    "goto",
    "help",
    "info",
    "kill",
    "list",
    "next",
    "nexti",
    "print",
    "quit",
    "restart",
    "reverse-continue",
    "reverse-finish",
    "reverse-next",
    "reverse-nexti",
    "reverse-step",
    "reverse-stepi",
    "reverse-watch",
    "run",
    "source",
    "start",
    "step",
    "stepi",
    "tbreak",
    "thread",
    "until",
    "up",
    "awatch",
    "rwatch",
    "watch",
    "when",
    "whatis",
    "ptype",
    "where",
    "x",
];

/// Command names for completion.
pub fn command_names() -> &'static [&'static str] {
    COMMANDS
}

impl Debugger {
    pub fn new(mut tl: Timeline, exe: PathBuf, out: Box<dyn Write>) -> Debugger {
        tl.predecessors = Some(predecessor_hook(exe.clone()));
        let mut d = Debugger {
            tl,
            prog: Program::new(),
            exe,
            bps: Vec::new(),
            watches: Vec::new(),
            next_bp: 1,
            out,
            frame: 0,
            history: Vec::new(),
            examiner: inspect::Examiner::default(),
            checkpoints: Vec::new(),
            list_next: None,
        };
        d.refresh();
        d
    }

    pub fn timeline_mut(&mut self) -> &mut Timeline {
        &mut self.tl
    }

    /// The program as it is now, for the inspector.
    fn now(&self) -> Now<'_> {
        Now {
            tl: &self.tl,
            exe: &self.exe,
        }
    }

    fn refresh(&mut self) {
        // After an exec the program is another one.
        if let Some(exe) = exe_now(&self.tl).filter(|e| *e != self.exe) {
            self.exe = exe;
            self.prog = Program::new();
        }
        let now = Now {
            tl: &self.tl,
            exe: &self.exe,
        };
        if let Err(e) = self.prog.refresh(&now) {
            tracing::debug!("symbols: {e}");
        }
    }

    /// The session ends: a live program about to exit exits, any other is
    /// killed (said on stderr).
    pub fn finish(&mut self) {
        if let Some(pid) = self.tl.live_pid() {
            let about_to_exit = self.tl.finish_live(false);
            if about_to_exit == Some(128 + libc::SIGKILL) || about_to_exit.is_none() {
                eprintln!("rewind: the program (process {pid}) was killed");
            }
        }
    }

    fn say(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    /// Run one command line.
    pub fn execute(&mut self, line: &str) -> Result<Flow, String> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(Flow::Go);
        }
        let (cmd, args) = split_command(line);
        let args = args.trim();
        match cmd {
            "q" | "quit" | "exit" => return Ok(Flow::Quit),
            "b" | "br" | "break" => self.cmd_break(args, false)?,
            "tb" | "tbreak" => self.cmd_break(args, true)?,
            "d" | "delete" => self.cmd_delete(args)?,
            "disable" => self.cmd_enable(args, false)?,
            "enable" => self.cmd_enable(args, true)?,
            "condition" => self.cmd_condition(args)?,
            "ignore" => self.cmd_ignore(args)?,
            "r" | "run" => self.cmd_run()?,
            "start" => {
                self.cmd_break("main", true)?;
                self.cmd_run()?
            }
            "c" | "cont" | "continue" | "fg" => self.cmd_continue(args)?,
            "si" | "stepi" => self.repeat(args, |d| d.stepi_once())?,
            "ni" | "nexti" => self.repeat(args, |d| d.nexti_once())?,
            "s" | "step" => self.repeat(args, |d| d.line_step(false, false))?,
            "n" | "next" => self.repeat(args, |d| d.line_step(true, false))?,
            "fin" | "finish" => self.cmd_finish()?,
            "u" | "until" | "advance" => self.cmd_advance(args)?,
            "rsi" | "reverse-stepi" => self.repeat(args, |d| d.reverse_stepi_once())?,
            "rni" | "reverse-nexti" => self.repeat(args, |d| d.reverse_nexti_once())?,
            "rs" | "reverse-step" => self.repeat(args, |d| d.reverse_line_step(false))?,
            "rn" | "reverse-next" => self.repeat(args, |d| d.reverse_line_step(true))?,
            "rf" | "reverse-finish" => self.cmd_reverse_finish()?,
            "rc" | "reverse-continue" => self.cmd_reverse_continue()?,
            "goto" => self.cmd_goto(args)?,
            "when" => self.cmd_when(),
            "checkpoint" => self.cmd_checkpoint(),
            "restart" => self.cmd_restart(args)?,
            "kill" | "k" => {
                if let Some(pid) = self.tl.live_pid() {
                    self.tl.finish_live(true);
                    self.say(&format!(
                        "[Inferior 1 (process {pid}) killed; the history recorded so far is kept]"
                    ));
                }
                self.tl.goto(&Moment::default()).map_err(terr)?;
                self.frame = 0;
                self.say("[Inferior 1 killed; history is kept: `run` starts again]");
            }
            "p" | "print" | "inspect" | "call" => self.cmd_print(cmd, args)?,
            "output" => self.cmd_print(cmd, args)?,
            "whatis" | "ptype" => {
                self.refresh();
                let now = self.now();
                let ty = inspect::describe_type(args, cmd == "ptype", &self.prog, &now, self.frame)
                    .map_err(|e| expr_error(args, &e))?;
                self.say(&format!("type = {ty}"));
            }
            "x" => self.cmd_examine(cmd, args)?,
            "bt" | "backtrace" | "where" => self.cmd_backtrace(args)?,
            "f" | "frame" => self.cmd_frame(args)?,
            "up" => self.cmd_updown(args, true)?,
            "down" => self.cmd_updown(args, false)?,
            "l" | "list" => self.cmd_list(args)?,
            "disas" | "disassemble" => self.cmd_disassemble(args)?,
            "i" | "info" => self.cmd_info(args)?,
            "t" | "thread" => self.cmd_thread(args)?,
            "source" => self.cmd_source(args)?,
            "echo" => {
                let text = args.replace("\\n", "\n");
                let _ = write!(self.out, "{text}");
                let _ = self.out.flush();
            }
            "h" | "help" => self.cmd_help(),
            "maint" | "maintenance" => self.cmd_maint(args)?,
            "watch" => self.cmd_watch(args, "watch")?,
            "bisect" => self.cmd_bisect(args, false)?,
            "reverse-watch" => self.cmd_bisect(args, true)?,
            "gcore" | "generate-core-file" => self.cmd_gcore(args)?,
            "rwatch" => self.cmd_watch(args, "rwatch")?,
            "awatch" => self.cmd_watch(args, "awatch")?,
            "set" => {
                return Err(
                    "History is read-only: the program's state cannot be changed while replaying"
                        .into(),
                )
            }
            _ if cmd.starts_with("x/") || cmd.starts_with("p/") || cmd.starts_with("print/") => {
                if cmd.starts_with('x') {
                    self.cmd_examine(cmd, args)?
                } else {
                    self.cmd_print(cmd, args)?
                }
            }
            _ => return Err(format!("Undefined command: \"{cmd}\".  Try \"help\".")),
        }
        Ok(Flow::Go)
    }

    fn repeat(
        &mut self,
        args: &str,
        mut f: impl FnMut(&mut Self) -> Result<bool, String>,
    ) -> CmdResult {
        let n = if args.is_empty() {
            1
        } else {
            parse_count(args)?
        };
        for i in 0..n {
            let last = i + 1 == n;
            // f returns false when it stopped for another reason (a
            // breakpoint, an end of history): the count ends there.
            let go_on = f(self)?;
            if !go_on {
                return Ok(());
            }
            if last {
                self.show_position(false);
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------
    // Breakpoints
    // ---------------------------------------------------------------

    fn resolve_location(&mut self, spec: &str) -> Result<(Vec<u64>, String), String> {
        self.refresh();
        let spec = spec.trim();
        if let Some(expr) = spec.strip_prefix('*') {
            let addr = self.eval_address(expr)?;
            let what = self.describe_addr(addr);
            return Ok((vec![addr], what));
        }
        if spec.is_empty() {
            let pc = self.pc();
            return Ok((vec![pc], self.describe_addr(pc)));
        }
        if let Some((file, line)) = spec.rsplit_once(':') {
            if let Ok(line) = line.trim().parse::<u32>() {
                let locs = self.prog.line_breakpoint(file.trim(), line)?;
                let addrs: Vec<u64> = locs.iter().map(|l| l.addr).collect();
                let what = locs
                    .first()
                    .map(|l| self.describe_breakloc(l))
                    .unwrap_or_default();
                return Ok((addrs, what));
            }
        }
        if let Ok(line) = spec.parse::<u32>() {
            // A line of the current file.
            let loc = self
                .prog
                .location(self.frame_pc())
                .and_then(|l| l.file)
                .ok_or("No symbol table is loaded.  Use a FILE:LINE location.")?;
            let file = loc.to_string_lossy().to_string();
            let locs = self.prog.line_breakpoint(&file, line)?;
            let addrs: Vec<u64> = locs.iter().map(|l| l.addr).collect();
            let what = locs
                .first()
                .map(|l| self.describe_breakloc(l))
                .unwrap_or_default();
            return Ok((addrs, what));
        }
        let locs = self.prog.function_breakpoint(spec)?;
        let addrs: Vec<u64> = locs.iter().map(|l| l.addr).collect();
        let what = locs
            .first()
            .map(|l| self.describe_breakloc(l))
            .unwrap_or_default();
        Ok((addrs, what))
    }

    fn describe_breakloc(&self, l: &inspect::BreakLoc) -> String {
        match (&l.file, l.line) {
            (Some(f), Some(line)) => format!(
                "{:#x}: file {}, line {line}.",
                l.addr,
                f.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            ),
            _ => self.describe_addr(l.addr),
        }
    }

    fn describe_addr(&self, addr: u64) -> String {
        match self.prog.symbolize(addr) {
            Some((name, 0)) => format!("{addr:#x} <{name}>"),
            Some((name, off)) => format!("{addr:#x} <{name}+{off}>"),
            None => format!("{addr:#x}"),
        }
    }

    fn cmd_break(&mut self, args: &str, temporary: bool) -> CmdResult {
        let (spec, condition) = match find_word(args, "if") {
            Some(i) => (args[..i].trim(), Some(args[i + 2..].trim().to_string())),
            None => (args, None),
        };
        let kind = if temporary {
            "Temporary breakpoint"
        } else {
            "Breakpoint"
        };
        let (addrs, what) = match self.resolve_location(spec) {
            Ok(found) => found,
            // A function of a library not loaded yet: pending, resolved
            // when the dynamic linker loads more (gdb's `set breakpoint
            // pending on`).
            Err(e) if is_plain_name(spec) && e.contains("not defined") => {
                let _ = writeln!(self.out, "{e}");
                (Vec::new(), String::new())
            }
            Err(e) => return Err(e),
        };
        let id = self.next_bp;
        self.next_bp += 1;
        if addrs.is_empty() {
            self.say(&format!("{kind} {id} ({spec}) pending."));
        } else {
            self.say(&format!("{kind} {id} at {what}"));
        }
        self.bps.push(Breakpoint {
            id,
            spec: spec.to_string(),
            addrs,
            enabled: true,
            temporary,
            condition,
            hits: 0,
            ignore: 0,
        });
        self.sync_breakpoints();
        Ok(())
    }

    /// watch/rwatch/awatch EXPR: hardware watchpoints on the expression's
    /// bytes (debug registers: 4 slots of 1, 2, 4 or 8 aligned bytes).
    fn cmd_watch(&mut self, args: &str, kind: &'static str) -> CmdResult {
        let (expr, condition) = match args.split_once(" if ") {
            Some((e, c)) if !c.trim().is_empty() => (e.trim(), Some(c.trim().to_string())),
            _ => (args.trim(), None),
        };
        if expr.is_empty() {
            return Err("Argument required (expression to compute).".into());
        }
        self.refresh();
        let now = Now {
            tl: &self.tl,
            exe: &self.exe,
        };
        let v = inspect::evaluate_with_history(expr, &self.prog, &now, self.frame, &self.history)
            .map_err(|e| expr_error(expr, &e))?;
        let Some(addr) = v.address() else {
            return Err(format!("Cannot watch constant value `{expr}'."));
        };
        let len = v.bytes().len() as u64;
        if len == 0 {
            return Err(format!("Cannot watch `{expr}': it has no size."));
        }
        let slots = crate::timeline::watch_slots(addr, len, kind != "watch");
        let used: usize = self
            .watches
            .iter()
            .filter(|w| w.enabled)
            .map(|w| w.slots.len())
            .sum();
        if used + slots.len() > 4 {
            return Err(format!(
                "Hardware watchpoints used up: `{expr}' needs {} of the 4 debug registers, {} are taken (delete a watchpoint)",
                slots.len(),
                used
            ));
        }
        let id = self.next_bp;
        self.next_bp += 1;
        let shown = inspect::format_value(&self.prog, &now, &v);
        let w = UserWatch {
            id,
            expr: expr.to_string(),
            kind,
            slots,
            enabled: true,
            hits: 0,
            shown,
            condition,
        };
        self.say(&format!("{} {id}: {expr}", w.title()));
        self.watches.push(w);
        self.sync_breakpoints();
        Ok(())
    }

    /// After a watchpoint stop: gdb's Old/New value (or Value) report.
    fn announce_watch(&mut self, slot: crate::timeline::Watch) {
        self.refresh();
        let now = Now {
            tl: &self.tl,
            exe: &self.exe,
        };
        let mut text = String::new();
        for w in &mut self.watches {
            if !w.enabled || !w.slots.contains(&slot) {
                continue;
            }
            w.hits += 1;
            let value = inspect::evaluate(&w.expr, &self.prog, &now, 0)
                .map(|v| inspect::format_value(&self.prog, &now, &v))
                .unwrap_or_else(|e| e.message);
            text.push_str(&format!("\n{} {}: {}\n\n", w.title(), w.id, w.expr));
            if w.kind == "rwatch" || (w.kind == "awatch" && value == w.shown) {
                text.push_str(&format!("Value = {value}\n"));
            } else {
                text.push_str(&format!("Old value = {}\nNew value = {value}\n", w.shown));
            }
            w.shown = value;
        }
        let _ = write!(self.out, "{text}");
        self.show_position(true);
    }

    fn sync_breakpoints(&mut self) {
        let mut set: BTreeSet<u64> = self
            .bps
            .iter()
            .filter(|b| b.enabled)
            .flat_map(|b| b.addrs.iter().copied())
            .collect();
        if self.bps.iter().any(|b| b.enabled && b.addrs.is_empty()) {
            if let Some(hook) = self.prog.address_of("_dl_debug_state") {
                set.insert(hook);
            }
        }
        self.tl.breakpoints = set;
        self.tl.watches = self
            .watches
            .iter()
            .filter(|w| w.enabled)
            .flat_map(|w| w.slots.iter().copied())
            .collect();
    }

    /// At the dynamic linker's hook: resolve pending breakpoints in the
    /// libraries it loaded. Returns the new addresses.
    fn resolve_pending(bps: &mut [Breakpoint], prog: &mut Program) -> Vec<u64> {
        let mut added = Vec::new();
        for b in bps.iter_mut().filter(|b| b.addrs.is_empty()) {
            if let Ok(locs) = prog.function_breakpoint(&b.spec) {
                b.addrs = locs.iter().map(|l| l.addr).collect();
                added.extend(b.addrs.iter().copied());
            }
        }
        added
    }

    fn parse_ids(&self, args: &str) -> Result<Vec<u32>, String> {
        let mut ids = Vec::new();
        for w in args.split_whitespace() {
            if let Some((a, b)) = w.split_once('-') {
                let (a, b): (u32, u32) = (
                    a.parse()
                        .map_err(|_| format!("Bad breakpoint number '{w}'"))?,
                    b.parse()
                        .map_err(|_| format!("Bad breakpoint number '{w}'"))?,
                );
                ids.extend(a..=b);
            } else {
                ids.push(
                    w.parse()
                        .map_err(|_| format!("Bad breakpoint number '{w}'"))?,
                );
            }
        }
        Ok(ids)
    }

    fn cmd_delete(&mut self, args: &str) -> CmdResult {
        let args = args.strip_prefix("breakpoints").unwrap_or(args).trim();
        if args.is_empty() {
            self.bps.clear();
            self.watches.clear();
        } else {
            for id in self.parse_ids(args)? {
                let before = self.bps.len() + self.watches.len();
                self.bps.retain(|b| b.id != id);
                self.watches.retain(|w| w.id != id);
                if before == self.bps.len() + self.watches.len() {
                    self.say(&format!("No breakpoint number {id}."));
                }
            }
        }
        self.sync_breakpoints();
        Ok(())
    }

    fn cmd_enable(&mut self, args: &str, on: bool) -> CmdResult {
        let ids = self.parse_ids(args)?;
        for w in &mut self.watches {
            if ids.is_empty() || ids.contains(&w.id) {
                w.enabled = on;
            }
        }
        for b in &mut self.bps {
            if ids.is_empty() || ids.contains(&b.id) {
                b.enabled = on;
            }
        }
        self.sync_breakpoints();
        Ok(())
    }

    fn cmd_condition(&mut self, args: &str) -> CmdResult {
        let (id, cond) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
        let id: u32 = id
            .parse()
            .map_err(|_| format!("Bad breakpoint argument: '{args}'"))?;
        if let Some(w) = self.watches.iter_mut().find(|w| w.id == id) {
            w.condition = (!cond.trim().is_empty()).then(|| cond.trim().to_string());
            return Ok(());
        }
        let b = self
            .bps
            .iter_mut()
            .find(|b| b.id == id)
            .ok_or(format!("No breakpoint number {id}."))?;
        b.condition = (!cond.trim().is_empty()).then(|| cond.trim().to_string());
        Ok(())
    }

    fn cmd_ignore(&mut self, args: &str) -> CmdResult {
        let mut w = args.split_whitespace();
        let (Some(id), Some(n)) = (w.next(), w.next()) else {
            return Err("Argument required (a breakpoint number and a count).".into());
        };
        let id: u32 = id
            .parse()
            .map_err(|_| format!("Bad breakpoint number '{id}'"))?;
        let n = parse_count(n)?;
        let b = self
            .bps
            .iter_mut()
            .find(|b| b.id == id)
            .ok_or(format!("No breakpoint number {id}."))?;
        b.ignore = n;
        self.say(&format!(
            "Will ignore next {n} crossings of breakpoint {id}."
        ));
        Ok(())
    }

    /// Whether an arrival at `addr` should stop (conditions, ignore
    /// counts); counts the hit of the breakpoints that say yes.
    fn breakpoint_says_stop(
        bps: &mut [Breakpoint],
        prog: &mut Program,
        exe: &Path,
        tl: &Timeline,
        addr: u64,
        forward: bool,
    ) -> bool {
        let now = Now { tl, exe };
        // Libraries come and go only through the dynamic linker's hook.
        if prog.address_of("_dl_debug_state") == Some(addr) {
            let _ = prog.refresh(&now);
            let added = Self::resolve_pending(bps, prog);
            if !added.is_empty() {
                tracing::debug!("pending breakpoints resolved at {added:x?}");
            }
        }
        let mut stop = false;
        for b in bps.iter_mut() {
            if !b.enabled || !b.addrs.contains(&addr) {
                continue;
            }
            let ok = match &b.condition {
                None => true,
                Some(c) => match inspect::evaluate(c, prog, &now, 0) {
                    Ok(v) => prog.value_is_true(&v).unwrap_or(true),
                    // gdb stops when a condition cannot be evaluated.
                    Err(_) => true,
                },
            };
            if !ok {
                continue;
            }
            if forward && b.ignore > 0 {
                b.ignore -= 1;
                continue;
            }
            stop = true;
        }
        stop
    }

    /// Whether a trigger of watchpoint slot `slot` (its value changed, or
    /// it was accessed) should stop: an enabled watchpoint on it without a
    /// condition, or whose condition is true here. Going forward, one
    /// whose condition is false takes the new value as its old one, as
    /// gdb's does.
    fn watch_says_stop(
        watches: &mut [UserWatch],
        prog: &Program,
        exe: &Path,
        tl: &Timeline,
        slot: crate::timeline::Watch,
        forward: bool,
    ) -> bool {
        let now = Now { tl, exe };
        let mut stop = false;
        for w in watches.iter_mut() {
            if !w.enabled || !w.slots.contains(&slot) {
                continue;
            }
            let ok = match &w.condition {
                None => true,
                Some(c) => match inspect::evaluate(c, prog, &now, 0) {
                    Ok(v) => prog.value_is_true(&v).unwrap_or(true),
                    // gdb stops when a condition cannot be evaluated.
                    Err(_) => true,
                },
            };
            if ok {
                stop = true;
            } else if forward {
                if let Ok(v) = inspect::evaluate(&w.expr, prog, &now, 0) {
                    w.shown = inspect::format_value(prog, &now, &v);
                }
            }
        }
        stop
    }

    /// After a stop at a breakpoint: count hits, announce, drop temporary
    /// ones.
    fn announce_breakpoint(&mut self, addr: u64) {
        let mut ids = Vec::new();
        for b in &mut self.bps {
            if b.enabled && b.addrs.contains(&addr) {
                b.hits += 1;
                ids.push((b.id, b.temporary));
            }
        }
        let _ = writeln!(self.out);
        for (id, temp) in &ids {
            let kind = if *temp {
                "Temporary breakpoint"
            } else {
                "Breakpoint"
            };
            let _ = write!(self.out, "{kind} {id}, ");
        }
        self.bps
            .retain(|b| !(b.temporary && b.addrs.contains(&addr)));
        self.sync_breakpoints();
        self.show_position(true);
    }

    // ---------------------------------------------------------------
    // Running
    // ---------------------------------------------------------------

    fn pc(&self) -> u64 {
        self.tl.regs().map(|r| r.rip).unwrap_or(0)
    }

    fn sp(&self) -> u64 {
        self.tl.regs().map(|r| r.rsp).unwrap_or(0)
    }

    fn frame_pc(&self) -> u64 {
        if self.frame == 0 {
            return self.pc();
        }
        let now = self.now();
        self.prog
            .frame(&now, self.frame)
            .map(|f| f.lookup_pc)
            .unwrap_or_else(|| self.pc())
    }

    /// The watched values here: what a watchpoint stop reports as old.
    fn note_watch_values(&mut self) {
        if self.watches.is_empty() {
            return;
        }
        self.refresh();
        let now = Now {
            tl: &self.tl,
            exe: &self.exe,
        };
        for w in &mut self.watches {
            if let Ok(v) = inspect::evaluate(&w.expr, &self.prog, &now, 0) {
                w.shown = inspect::format_value(&self.prog, &now, &v);
            }
        }
    }

    fn cont_with(&mut self, forward: bool) -> Result<StopReason, String> {
        self.run_with(forward, &[], &|_, _| false)
    }

    /// Run forward or backward with the user's breakpoints and
    /// watchpoints, plus breakpoints at `extra` where `target` says which
    /// arrivals end the run. Pending breakpoints are resolved on the way.
    fn run_with(
        &mut self,
        forward: bool,
        extra: &[u64],
        target: &dyn Fn(&Timeline, u64) -> bool,
    ) -> Result<StopReason, String> {
        self.note_watch_values();
        self.frame = 0;
        self.tl.breakpoints.extend(extra.iter().copied());
        let Debugger {
            tl,
            prog,
            exe,
            bps,
            watches,
            ..
        } = self;
        let mut stop = |t: &mut Timeline, arrival: Arrival| {
            let addr = match arrival {
                Arrival::Watch(slot) => {
                    return Self::watch_says_stop(watches, prog, exe, t, slot, forward)
                }
                Arrival::Breakpoint(addr) => addr,
            };
            if target(t, addr) {
                return true;
            }
            let pending = bps.iter().filter(|b| b.addrs.is_empty()).count();
            let yes = Self::breakpoint_says_stop(bps, prog, exe, t, addr, forward);
            if pending != bps.iter().filter(|b| b.addrs.is_empty()).count() {
                for b in bps.iter().filter(|b| b.enabled) {
                    t.breakpoints.extend(b.addrs.iter().copied());
                }
            }
            yes
        };
        let r = if forward {
            tl.cont_to(&mut stop)
        } else {
            tl.reverse_cont_to(&mut stop)
        };
        // Back to the user's own (with those resolved meanwhile).
        self.sync_breakpoints();
        self.refresh();
        r.map_err(terr)
    }

    fn report(&mut self, reason: StopReason) {
        match reason {
            StopReason::Breakpoint(addr) => self.announce_breakpoint(addr),
            StopReason::End | StopReason::Start => {
                self.say("\nNo more reverse-execution history.");
                self.show_position(true);
            }
            StopReason::Step | StopReason::Arrived => self.show_position(false),
            StopReason::Watch(w) => self.announce_watch(w),
        }
    }

    fn cmd_run(&mut self) -> CmdResult {
        self.tl.goto(&Moment::default()).map_err(terr)?;
        let r = self.cont_with(true)?;
        self.report(r);
        Ok(())
    }

    fn cmd_continue(&mut self, args: &str) -> CmdResult {
        if !args.is_empty() {
            // continue N: ignore the breakpoint we are at N-1 more times.
            let n = parse_count(args)?;
            let pc = self.pc();
            for b in &mut self.bps {
                if b.addrs.contains(&pc) {
                    b.ignore = n.saturating_sub(1);
                    let id = b.id;
                    let _ = writeln!(
                        self.out,
                        "Will ignore next {} crossings of breakpoint {id}.  Continuing.",
                        n.saturating_sub(1)
                    );
                }
            }
        }
        let r = self.cont_with(true)?;
        self.report(r);
        Ok(())
    }

    fn cmd_reverse_continue(&mut self) -> CmdResult {
        let r = self.cont_with(false)?;
        self.report(r);
        Ok(())
    }

    /// One stepi; false when history ended.
    fn stepi_once(&mut self) -> Result<bool, String> {
        self.frame = 0;
        self.stepi_quiet()
    }

    fn reverse_stepi_once(&mut self) -> Result<bool, String> {
        self.frame = 0;
        self.reverse_stepi_quiet()
    }

    /// Run until the thread is at `addr` with stack pointer `sp` (a
    /// return from a call forward, the call itself backward), unless a
    /// breakpoint stops it first. Returns false if something else stopped
    /// it (reported).
    fn run_to_frame(&mut self, addr: u64, sp: u64, forward: bool) -> Result<bool, String> {
        let at_frame = |t: &Timeline, a: u64| a == addr && t.regs().map(|r| r.rsp).ok() == Some(sp);
        match self.run_with(forward, &[addr], &at_frame)? {
            StopReason::Breakpoint(a) if at_frame(&self.tl, a) => Ok(true),
            other => {
                self.report(other);
                Ok(false)
            }
        }
    }

    fn nexti_once(&mut self) -> Result<bool, String> {
        self.frame = 0;
        let pc = self.pc();
        let sp = self.sp();
        let call = {
            let now = self.now();
            inspect::is_call(&now, pc)
        };
        match call {
            Some(len) => self.run_to_frame(pc + len as u64, sp, true),
            None => self.stepi_once(),
        }
    }

    /// The call instruction that returns to `ret` (its address).
    fn call_before(&self, ret: u64) -> Option<u64> {
        let now = self.now();
        [5u64, 6, 2, 3, 7, 4, 8, 9]
            .iter()
            .map(|k| ret.wrapping_sub(*k))
            .find(|&a| inspect::is_call(&now, a).map(|l| a + l as u64) == Some(ret))
    }

    fn reverse_nexti_once(&mut self) -> Result<bool, String> {
        let sp = self.sp();
        let pc = self.pc();
        if !self.reverse_stepi_once()? {
            return Ok(false);
        }
        // Stepped back into a callee (onto its return)? Go to the call.
        if self.sp() < sp {
            if let Some(call) = self.call_before(pc) {
                return self.run_to_frame(call, sp, false);
            }
        }
        Ok(true)
    }

    fn line_of(&self, pc: u64) -> Option<inspect::LineRow> {
        self.prog.line_info(pc)
    }

    /// gdb's step/next: run until the start of another line. `over`:
    /// calls are stepped over (next).
    /// `until`: like next, but a jump back (a loop) does not stop it: it
    /// runs on while pc stays between the function's start and the end of
    /// the current line, as gdb's until_next does.
    fn line_step(&mut self, over: bool, until: bool) -> Result<bool, String> {
        self.frame = 0;
        self.refresh();
        let start_pc = self.pc();
        let Some(start) = self.line_of(start_pc) else {
            // No line info here: like gdb, finish out of this function.
            return self.step_out_of_unknown();
        };
        let start_fn = self.prog.function_range(start_pc).map(|f| f.0);
        let range_lo = match (until, start_fn) {
            (true, Some(lo)) => lo,
            _ => start.start,
        };
        let frame_sp = self.sp();
        for _ in 0..1_000_000u32 {
            let pc = self.pc();
            let sp = self.sp();
            let call = {
                let now = self.now();
                inspect::is_call(&now, pc)
            };
            if let Some(len) = call {
                if over {
                    if !self.run_to_frame(pc + len as u64, sp, true)? {
                        return Ok(false);
                    }
                } else {
                    if !self.stepi_quiet()? {
                        return Ok(false);
                    }
                    self.refresh();
                    let callee = self.pc();
                    if self.line_of(callee).is_none() {
                        // A function without line info (libc, PLT):
                        // step over it as a whole.
                        if !self.run_to_frame(pc + len as u64, sp, true)? {
                            return Ok(false);
                        }
                    } else {
                        // Stepped into a function with line info: stop
                        // after its prologue, at its first line.
                        return self.finish_prologue();
                    }
                }
            } else if !self.stepi_quiet()? {
                return Ok(false);
            }
            let pc = self.pc();
            let in_start_fn = self.prog.function_range(pc).map(|f| f.0) == start_fn;
            if !in_start_fn && self.sp() > frame_sp {
                // Returned to the caller: gdb stops right there, in the
                // middle of the caller's line (or, without line info,
                // keeps going until there is some).
                if self.line_of(pc).is_some() {
                    return Ok(true);
                }
                return self.step_out_of_unknown();
            }
            match self.line_of(pc) {
                Some(_) if pc >= range_lo && pc < start.end && in_start_fn => continue,
                Some(row)
                    if row.line == start.line
                        && row.file == start.file
                        && in_start_fn
                        && self.sp() == frame_sp =>
                {
                    // Another range of the same line (a loop condition):
                    // gdb keeps going only if it is mid-line.
                    if pc == row.start && row.is_stmt {
                        return Ok(true);
                    }
                }
                Some(row) => {
                    if pc == row.start {
                        return Ok(true);
                    }
                    // Mid-line (after a return): keep going to a line start.
                }
                None => {
                    // Returned into code without lines (main's caller).
                    return self.step_out_of_unknown();
                }
            }
        }
        Err("step: gave up after a million instructions".into())
    }

    /// stepi without end-of-history report duplication; false at the end.
    /// One instruction forward; false (after saying so) at the end of
    /// history or when it triggered a watchpoint (as gdb's steps do).
    fn stepi_quiet(&mut self) -> Result<bool, String> {
        if !self.watches.iter().any(|w| w.enabled) {
            let r = self.tl.stepi().map_err(terr)?;
            return Ok(self.not_at_an_end(r));
        }
        self.note_watch_values();
        let Debugger {
            tl,
            prog,
            exe,
            watches,
            ..
        } = self;
        let mut stop = |t: &mut Timeline, arrival: Arrival| match arrival {
            Arrival::Watch(slot) => Self::watch_says_stop(watches, prog, exe, t, slot, true),
            Arrival::Breakpoint(_) => false,
        };
        let r = tl.stepi_to(&mut stop).map_err(terr)?;
        self.refresh();
        if let StopReason::Watch(w) = r {
            self.announce_watch(w);
            return Ok(false);
        }
        Ok(self.not_at_an_end(r))
    }

    /// False (after saying so) if `r` is an end of history.
    fn not_at_an_end(&mut self, r: StopReason) -> bool {
        if matches!(r, StopReason::End | StopReason::Start) {
            self.report(r);
            return false;
        }
        true
    }

    /// Just entered a function: run to the breakpoint address gdb would
    /// use for it (after the prologue).
    fn finish_prologue(&mut self) -> Result<bool, String> {
        let pc = self.pc();
        let Some((lo, _, name)) = self.prog.function_range(pc) else {
            return Ok(true);
        };
        if pc != lo {
            return Ok(true);
        }
        let target = self
            .prog
            .function_breakpoint(&name)
            .ok()
            .and_then(|v| v.into_iter().map(|l| l.addr).find(|&a| a >= lo))
            .unwrap_or(pc);
        let mut guard = 0;
        while self.pc() != target && guard < 64 {
            if !self.stepi_quiet()? {
                return Ok(false);
            }
            guard += 1;
        }
        Ok(true)
    }

    fn step_out_of_unknown(&mut self) -> Result<bool, String> {
        let now = self.now();
        let caller = self.prog.frame(&now, 1);
        match caller {
            Some(f) if f.cfa != 0 => {
                let (pc, cfa) = (f.pc, self.prog.frame(&now, 0).map(|f| f.cfa).unwrap_or(0));
                if cfa == 0 {
                    return self.stepi_quiet();
                }
                self.run_to_frame(pc, cfa, true)
            }
            _ => self.stepi_quiet(),
        }
    }

    /// The selected frame, its caller and the frame's description, for
    /// finish and reverse-finish.
    fn frame_and_caller(&mut self) -> Result<(Frame, Frame, String), String> {
        self.refresh();
        let now = self.now();
        let f = self.frame;
        let (Some(this), Some(caller)) = (self.prog.frame(&now, f), self.prog.frame(&now, f + 1))
        else {
            return Err("\"finish\" not meaningful in the outermost frame.".into());
        };
        let head = self.prog.describe_frame(&now, &this);
        Ok((this, caller, head))
    }

    fn cmd_finish(&mut self) -> CmdResult {
        let (this, caller, head) = self.frame_and_caller()?;
        self.say(&format!("Run till exit from {head}"));
        if this.cfa == 0 {
            return Err("Cannot find the caller's frame (no unwind information).".into());
        }
        let function = this.function.clone();
        if self.run_to_frame(caller.pc, this.cfa, true)? {
            self.frame = 0;
            self.show_position(true);
            if let Some(f) = function {
                self.show_returned(&f);
            }
        }
        Ok(())
    }

    /// After `finish`: gdb's "Value returned is $N = ..." (integers,
    /// pointers, enums, float and double, structs and unions, where the
    /// ABI leaves them).
    fn show_returned(&mut self, function: &str) {
        self.refresh();
        let now = self.now();
        let Some(v) = inspect::returned_value(function, &self.prog, &now) else {
            return;
        };
        let text = inspect::format_value(&self.prog, &now, &v);
        self.history.push(v);
        let n = self.history.len();
        self.say(&format!("Value returned is ${n} = {text}"));
    }

    fn cmd_reverse_finish(&mut self) -> CmdResult {
        let (this, caller, head) = self.frame_and_caller()?;
        let Some(call) = self.call_before(caller.pc) else {
            return Err(format!(
                "Cannot find the call that returns to {:#x}",
                caller.pc
            ));
        };
        self.say(&format!("Run back to call of {head}"));
        if self.run_to_frame(call, this.cfa, false)? {
            self.frame = 0;
            self.show_position(true);
        }
        Ok(())
    }

    /// gdb's reverse-step/reverse-next: back to the beginning of the
    /// previous line (into callees for reverse-step, their last line).
    fn reverse_line_step(&mut self, over: bool) -> Result<bool, String> {
        self.frame = 0;
        self.refresh();
        let start_pc = self.pc();
        let start_row = self.line_of(start_pc);
        let start_fn = self.prog.function_range(start_pc).map(|f| f.0);
        let frame_sp = self.sp();
        // Phase 1: leave the current line (backwards).
        let mut target: Option<inspect::LineRow> = None;
        for _ in 0..100_000u32 {
            let pc = self.pc();
            let sp = self.sp();
            if !self.reverse_stepi_quiet()? {
                return Ok(false);
            }
            let now_pc = self.pc();
            self.refresh();
            let now_fn = self.prog.function_range(now_pc).map(|f| f.0);
            if now_fn == start_fn && self.in_prologue(now_pc) {
                // Back through the prologue: on to the call.
                continue;
            }
            if now_fn != start_fn && self.sp() > frame_sp {
                // Back out of the function we started in, at the call:
                // gdb goes on to the beginning of the caller's line.
                match self.line_of(now_pc) {
                    Some(row) => {
                        target = Some(row);
                        break;
                    }
                    None => return Ok(true),
                }
            }
            if self.sp() < sp && self.line_of(now_pc).is_none() || (over && self.sp() < frame_sp) {
                // Stepped back into a callee: go to its call.
                if let Some(call) = self.call_before(pc) {
                    if !self.run_to_frame(call, sp, false)? {
                        return Ok(false);
                    }
                    continue;
                }
            }
            let now_pc = self.pc();
            let Some(row) = self.line_of(now_pc) else {
                continue;
            };
            let same_line = start_row
                .as_ref()
                .is_some_and(|s| s.line == row.line && s.file == row.file)
                && self.prog.function_range(now_pc).map(|f| f.0) == start_fn
                && self.sp() == frame_sp;
            let in_start_range = start_row
                .as_ref()
                .is_some_and(|s| now_pc >= s.start && now_pc < s.end);
            if same_line && (in_start_range || now_pc != row.start) {
                // Still in the line we started on.
                if now_pc == start_row.as_ref().map(|s| s.start).unwrap_or(0) && start_pc != now_pc
                {
                    // At the beginning of our own line: that is the
                    // previous line only if we started mid-line.
                    return Ok(true);
                }
                continue;
            }
            target = Some(row);
            break;
        }
        let Some(row) = target else {
            return Err("reverse-step: gave up".into());
        };
        tracing::debug!(
            "reverse line step: to line {} from {:#x}",
            row.line,
            row.start
        );
        // Phase 2: go back to the beginning of that line's execution.
        let line_fn = self.prog.function_range(self.pc()).map(|f| f.0);
        let line_sp = self.sp();
        for _ in 0..100_000u32 {
            if self.pc() == row.start {
                return Ok(true);
            }
            let here = self.tl.now().clone();
            let pc = self.pc();
            let sp = self.sp();
            if !self.reverse_stepi_quiet()? {
                return Ok(false);
            }
            let now_pc = self.pc();
            self.refresh();
            if self.sp() < sp {
                // Into a callee of this line: jump over it to its call.
                if let Some(call) = self.call_before(pc) {
                    if !self.run_to_frame(call, sp, false)? {
                        return Ok(false);
                    }
                    continue;
                }
            }
            tracing::debug!(
                "reverse line step: back at {now_pc:#x} (sp {:#x}, line {:?})",
                self.sp(),
                self.line_of(now_pc).map(|r| (r.line, r.start))
            );
            let same = self
                .line_of(now_pc)
                .is_some_and(|r| r.line == row.line && r.file == row.file)
                && self.prog.function_range(now_pc).map(|f| f.0) == line_fn
                && self.sp() >= line_sp;
            if !same {
                // Went one too far: back to where we were.
                self.tl.goto(&here).map_err(terr)?;
                return Ok(true);
            }
        }
        Ok(true)
    }

    /// Whether `pc` lies before the address where `break FUNCTION` would
    /// stop, in its function.
    fn in_prologue(&self, pc: u64) -> bool {
        let Some((lo, _, name)) = self.prog.function_range(pc) else {
            return false;
        };
        let after = self
            .prog
            .function_breakpoint(&name)
            .ok()
            .and_then(|v| v.into_iter().map(|l| l.addr).find(|&a| a >= lo && a > pc));
        after.is_some_and(|a| pc < a)
    }

    fn reverse_stepi_quiet(&mut self) -> Result<bool, String> {
        let r = self.tl.reverse_stepi().map_err(terr)?;
        Ok(self.not_at_an_end(r))
    }

    fn cmd_advance(&mut self, args: &str) -> CmdResult {
        if args.is_empty() {
            // until without argument: next, but not backwards in loops.
            if self.line_step(true, true)? {
                self.show_position(false);
            }
            return Ok(());
        }
        let (addrs, _) = self.resolve_location(args)?;
        // Also stop when the current function returns, as gdb does.
        let ret = {
            let now = self.now();
            match (self.prog.frame(&now, 0), self.prog.frame(&now, 1)) {
                (Some(this), Some(caller)) if this.cfa != 0 => Some((caller.pc, this.cfa)),
                _ => None,
            }
        };
        let targets: BTreeSet<u64> = addrs.iter().copied().collect();
        let is_target = |t: &Timeline, a: u64| {
            targets.contains(&a)
                || ret.is_some_and(|(pc, cfa)| a == pc && t.regs().map(|r| r.rsp).ok() == Some(cfa))
        };
        let extra: Vec<u64> = addrs.iter().copied().chain(ret.map(|r| r.0)).collect();
        match self.run_with(true, &extra, &is_target)? {
            StopReason::Breakpoint(a) if is_target(&self.tl, a) => self.show_position(true),
            other => self.report(other),
        }
        Ok(())
    }

    fn cmd_goto(&mut self, args: &str) -> CmdResult {
        let m: Moment = args.parse()?;
        self.tl.goto(&m).map_err(terr)?;
        self.frame = 0;
        self.refresh();
        self.show_position(true);
        Ok(())
    }

    fn cmd_when(&mut self) {
        let m = self.tl.now().clone();
        let total = self.tl.events();
        let tid = self.tl.thread();
        self.say(&format!(
            "Current event: {} of {total} (moment {m}, thread {tid})",
            m.event
        ));
    }

    fn cmd_checkpoint(&mut self) {
        let id = self.checkpoints.last().map(|c| c.0 + 1).unwrap_or(1);
        let m = self.tl.now().clone();
        self.say(&format!("checkpoint {id}: moment {m}"));
        self.checkpoints.push((id, m));
    }

    fn cmd_restart(&mut self, args: &str) -> CmdResult {
        let id: u32 = args
            .trim()
            .parse()
            .map_err(|_| "restart: which checkpoint? (info checkpoints lists them)".to_string())?;
        let m = self
            .checkpoints
            .iter()
            .find(|c| c.0 == id)
            .map(|c| c.1.clone())
            .ok_or(format!("No checkpoint number {id}."))?;
        self.tl.goto(&m).map_err(terr)?;
        self.frame = 0;
        self.refresh();
        self.show_position(true);
        Ok(())
    }

    // ---------------------------------------------------------------
    // Looking
    // ---------------------------------------------------------------

    fn eval_address(&mut self, expr: &str) -> Result<u64, String> {
        self.refresh();
        let now = self.now();
        let v = inspect::evaluate_with_history(expr, &self.prog, &now, self.frame, &self.history)
            .map_err(|e| expr_error(expr, &e))?;
        self.prog.value_as_address(&v)
    }

    fn cmd_print(&mut self, cmd: &str, args: &str) -> CmdResult {
        self.refresh();
        let fmt = cmd.split_once('/').map(|(_, f)| f.to_string());
        let expr = if args.is_empty() {
            "$".to_string()
        } else {
            args.to_string()
        };
        let now = self.now();
        let v = inspect::evaluate_with_history(&expr, &self.prog, &now, self.frame, &self.history)
            .map_err(|e| expr_error(&expr, &e))?;
        let text = match fmt.as_deref().and_then(|f| f.chars().last()) {
            Some(c) => inspect::format_value_as(&self.prog, &now, &v, c)?,
            None => inspect::format_value(&self.prog, &now, &v),
        };
        if cmd == "output" {
            let _ = write!(self.out, "{text}");
            let _ = self.out.flush();
            return Ok(());
        }
        self.history.push(v);
        let n = self.history.len();
        self.say(&format!("${n} = {text}"));
        Ok(())
    }

    fn cmd_examine(&mut self, cmd: &str, args: &str) -> CmdResult {
        self.refresh();
        let fmt = cmd.split_once('/').map(|(_, f)| f).unwrap_or("");
        let addr = if args.is_empty() {
            if self.examiner.next.is_none() {
                return Err("Argument required (starting display address).".into());
            }
            None
        } else {
            Some(self.eval_address(args)?)
        };
        let now = Now {
            tl: &self.tl,
            exe: &self.exe,
        };
        let text = self.examiner.examine(&self.prog, &now, fmt, addr)?;
        let _ = write!(self.out, "{text}");
        if !text.ends_with('\n') {
            let _ = writeln!(self.out);
        }
        Ok(())
    }

    fn cmd_backtrace(&mut self, args: &str) -> CmdResult {
        self.refresh();
        let max = if args.trim().is_empty() {
            256
        } else {
            parse_count(args.trim())? as usize
        };
        let now = self.now();
        let frames = self.prog.backtrace(&now, max);
        let mut text = String::new();
        for f in &frames {
            text.push_str(&self.prog.describe_frame(&now, f));
            text.push('\n');
        }
        let _ = write!(self.out, "{text}");
        Ok(())
    }

    fn show_frame(&mut self, f: &Frame) {
        let now = self.now();
        let head = self.prog.describe_frame(&now, f);
        let src = self.source_line_at(f.lookup_pc);
        self.say(&head);
        if let Some(s) = src {
            self.say(&s);
        }
    }

    fn cmd_frame(&mut self, args: &str) -> CmdResult {
        self.refresh();
        if !args.trim().is_empty() {
            let n = parse_count(args.trim())? as usize;
            let now = self.now();
            if self.prog.frame(&now, n).is_none() {
                return Err("No frame at level ".to_string() + args.trim() + ".");
            }
            self.frame = n;
        }
        let now = self.now();
        let f = self.prog.frame(&now, self.frame).ok_or("No stack.")?;
        self.show_frame(&f);
        Ok(())
    }

    fn cmd_updown(&mut self, args: &str, up: bool) -> CmdResult {
        let n = if args.trim().is_empty() {
            1
        } else {
            parse_count(args.trim())? as usize
        };
        let target = if up {
            self.frame + n
        } else {
            self.frame
                .checked_sub(n)
                .ok_or("Bottom (innermost) frame selected; you cannot go down.")?
        };
        let now = self.now();
        if self.prog.frame(&now, target).is_none() {
            return Err("Initial frame selected; you cannot go up.".into());
        }
        self.cmd_frame(&target.to_string())
    }

    fn source_line_at(&self, pc: u64) -> Option<String> {
        let loc = self.prog.location(pc)?;
        let (file, line) = (loc.file?, loc.line?);
        let lines = self.prog.source_lines(&file, line, line).ok()?;
        lines.first().map(|(n, text)| format!("{n}\t{text}"))
    }

    /// Show where we are: the frame line (when `full` or the function
    /// changed) and the source line, gdb-style.
    fn show_position(&mut self, full: bool) {
        self.refresh();
        let pc = self.pc();
        let now = self.now();
        let row = self.prog.line_info(pc);
        let at_line_start = row.as_ref().is_some_and(|r| r.start == pc);
        let src = self.source_line_at(pc);
        match (&row, &src) {
            (Some(_), Some(s)) if !full => {
                if at_line_start {
                    self.say(s);
                } else {
                    self.say(&format!("{pc:#018x}\t{s}"));
                }
            }
            _ => {
                if let Some(f) = self.prog.frame(&now, 0) {
                    let head = self.prog.describe_frame(&now, &f);
                    // describe_frame starts with "#0  ".
                    let head = head.trim_start_matches("#0").trim_start().to_string();
                    self.say(&head);
                } else {
                    self.say(&self.describe_addr(pc));
                }
                if let Some(s) = src {
                    self.say(&s);
                }
            }
        }
        self.list_next = self
            .prog
            .location(pc)
            .and_then(|l| Some((l.file?, l.line?.saturating_sub(5).max(1))));
    }

    fn cmd_list(&mut self, args: &str) -> CmdResult {
        self.refresh();
        let (file, first) = if args.trim().is_empty() {
            self.list_next
                .clone()
                .ok_or("No symbol table is loaded.  Use the \"file\" command.")?
        } else {
            let (addrs, _) = self.resolve_location(args)?;
            let addr = *addrs.first().ok_or("No line here.")?;
            let loc = self
                .prog
                .location(addr)
                .ok_or("No line number information.")?;
            (
                loc.file.ok_or("No source file.")?,
                loc.line.unwrap_or(1).saturating_sub(5).max(1),
            )
        };
        let lines = self.prog.source_lines(&file, first, first + 9)?;
        if lines.is_empty() {
            return Err(format!(
                "Line number {first} out of range; \"{}\" has fewer lines.",
                file.display()
            ));
        }
        let mut text = String::new();
        for (n, l) in &lines {
            text.push_str(&format!("{n}\t{l}\n"));
        }
        let _ = write!(self.out, "{text}");
        self.list_next = Some((file, first + 10));
        Ok(())
    }

    fn cmd_disassemble(&mut self, args: &str) -> CmdResult {
        self.refresh();
        let pc = self.frame_pc();
        let at = if args.trim().is_empty() {
            pc
        } else {
            self.eval_address(args)?
        };
        let (lo, hi, name) = self
            .prog
            .function_range(at)
            .ok_or(format!("No function contains specified address {at:#x}."))?;
        let now = self.now();
        let count = ((hi - lo) as usize).min(4096);
        let insns = self.prog.disassemble(&now, lo, count);
        let mut text = format!("Dump of assembler code for function {name}:\n");
        for i in insns.iter().take_while(|i| i.addr < hi) {
            let marker = if i.addr == self.pc() { "=> " } else { "   " };
            let off = i.addr - lo;
            text.push_str(&format!("{marker}{:#018x} <+{off}>:\t{}\n", i.addr, i.text));
        }
        text.push_str("End of assembler dump.\n");
        let _ = write!(self.out, "{text}");
        Ok(())
    }

    fn cmd_info(&mut self, args: &str) -> CmdResult {
        let (what, rest) = split_command(args.trim());
        let rest = rest.trim();
        match what {
            "r" | "reg" | "registers" | "all-registers" => self.info_registers(rest),
            "b" | "br" | "break" | "breakpoints" => {
                self.info_breakpoints();
                Ok(())
            }
            "threads" => {
                self.info_threads();
                Ok(())
            }
            "checkpoints" => {
                self.info_checkpoints();
                Ok(())
            }
            "frame" => self.cmd_frame(""),
            "locals" | "args" => {
                self.refresh();
                let now = self.now();
                let text = if what == "locals" {
                    self.prog.info_locals(&now, self.frame)?
                } else {
                    self.prog.info_args(&now, self.frame)?
                };
                let _ = write!(self.out, "{text}");
                if !text.ends_with('\n') {
                    let _ = writeln!(self.out);
                }
                Ok(())
            }
            "sharedlibrary" | "shared" | "dll" => {
                self.refresh();
                let mut text = String::from("From                To                  Syms Read   Shared Object Library\n");
                for m in self.prog.modules().iter().skip(1) {
                    let (lo, hi) = m.text_range().unwrap_or((m.start, m.end));
                    text.push_str(&format!(
                        "{lo:#018x}  {hi:#018x}  Yes         {}\n",
                        m.path.display()
                    ));
                }
                let _ = write!(self.out, "{text}");
                Ok(())
            }
            "line" => {
                let pc = self.frame_pc();
                match self.prog.line_info(pc) {
                    Some(r) => self.say(&format!(
                        "Line {} of \"{}\" starts at address {:#x} and ends at {:#x}.",
                        r.line,
                        r.file.display(),
                        r.start,
                        r.end
                    )),
                    None => self.say(&format!("No line number information available for address {pc:#x}")),
                }
                Ok(())
            }
            "" => Err("List of info subcommands: registers, breakpoints, threads, checkpoints, frame, locals, args, sharedlibrary, line".into()),
            other => Err(format!("Undefined info command: \"{other}\".  Try \"help info\".")),
        }
    }

    fn info_registers(&mut self, which: &str) -> CmdResult {
        let now = self.now();
        let regs = match self.prog.frame(&now, self.frame) {
            Some(f) => f.regs,
            None => self.tl.regs().map_err(terr)?,
        };
        let all: Vec<(&str, u64)> = vec![
            ("rax", regs.rax),
            ("rbx", regs.rbx),
            ("rcx", regs.rcx),
            ("rdx", regs.rdx),
            ("rsi", regs.rsi),
            ("rdi", regs.rdi),
            ("rbp", regs.rbp),
            ("rsp", regs.rsp),
            ("r8", regs.r8),
            ("r9", regs.r9),
            ("r10", regs.r10),
            ("r11", regs.r11),
            ("r12", regs.r12),
            ("r13", regs.r13),
            ("r14", regs.r14),
            ("r15", regs.r15),
            ("rip", regs.rip),
            ("eflags", regs.eflags),
            ("cs", regs.cs),
            ("ss", regs.ss),
            ("ds", regs.ds),
            ("es", regs.es),
            ("fs", regs.fs),
            ("gs", regs.gs),
            ("fs_base", regs.fs_base),
            ("gs_base", regs.gs_base),
        ];
        let wanted: Vec<String> = which
            .split_whitespace()
            .map(|w| w.trim_start_matches('$').to_string())
            .collect();
        let mut text = String::new();
        for w in &wanted {
            let w = if w == "pc" {
                "rip"
            } else if w == "sp" {
                "rsp"
            } else {
                w.as_str()
            };
            if !all.iter().any(|(n, _)| *n == w) {
                return Err(format!("Invalid register `{w}'"));
            }
        }
        for (name, v) in &all {
            if !wanted.is_empty()
                && !wanted.iter().any(|w| {
                    w == name || (w == "pc" && *name == "rip") || (w == "sp" && *name == "rsp")
                })
            {
                continue;
            }
            let natural = match *name {
                "rip" => self.describe_addr(*v),
                "eflags" => inspect::eflags_text(*v),
                "rsp" | "rbp" => format!("{v:#x}"),
                _ => format!("{}", *v as i64),
            };
            text.push_str(&format!("{name:<15}{:<19}{natural}\n", format!("{v:#x}")));
        }
        let _ = write!(self.out, "{text}");
        Ok(())
    }

    fn info_breakpoints(&mut self) {
        if self.bps.is_empty() && self.watches.is_empty() {
            self.say("No breakpoints or watchpoints.");
            return;
        }
        let mut text = String::from("Num     Type           Disp Enb Address            What\n");
        for b in &self.bps {
            let disp = if b.temporary { "del " } else { "keep" };
            let enb = if b.enabled { "y" } else { "n" };
            let addr = b.addrs.first().copied().unwrap_or(0);
            let what = self
                .prog
                .location(addr)
                .and_then(|l| {
                    Some(format!(
                        "in {} at {}:{}",
                        l.function.unwrap_or_default(),
                        l.file_name?,
                        l.line?
                    ))
                })
                .unwrap_or_else(|| {
                    if b.addrs.is_empty() {
                        format!("<PENDING> {}", b.spec)
                    } else {
                        self.describe_addr(addr)
                    }
                });
            text.push_str(&format!(
                "{:<7} breakpoint     {disp} {enb}   {addr:#018x} {what}\n",
                b.id
            ));
            if let Some(c) = &b.condition {
                text.push_str(&format!("\tstop only if {c}\n"));
            }
            if b.hits > 0 {
                let s = if b.hits == 1 { "" } else { "s" };
                text.push_str(&format!("\tbreakpoint already hit {} time{s}\n", b.hits));
            }
            if b.ignore > 0 {
                text.push_str(&format!(
                    "\tWill ignore next {} crossings of breakpoint.\n",
                    b.ignore
                ));
            }
        }
        for w in &self.watches {
            let kind = match w.kind {
                "rwatch" => "read watchpoint",
                "awatch" => "acc watchpoint",
                _ => "hw watchpoint ",
            };
            let enb = if w.enabled { "y" } else { "n" };
            text.push_str(&format!(
                "{:<7} {kind} keep {enb}                      {}\n",
                w.id, w.expr
            ));
            if let Some(c) = &w.condition {
                text.push_str(&format!("\tstop only if {c}\n"));
            }
            if w.hits > 0 {
                let s = if w.hits == 1 { "" } else { "s" };
                text.push_str(&format!("\tbreakpoint already hit {} time{s}\n", w.hits));
            }
        }
        let _ = write!(self.out, "{text}");
    }

    fn info_threads(&mut self) {
        let cur = self.tl.thread();
        let threads = self.tl.replayer().threads();
        let mut text = String::from("  Id   Target Id                         Frame\n");
        for (i, (vtid, real)) in threads.iter().enumerate() {
            let rip = rewind_ckpt::sys::ptrace::getregs(*real)
                .map(|r| r.rip)
                .unwrap_or(0);
            let mark = if *vtid == cur { "*" } else { " " };
            let fname = self
                .prog
                .function_name(rip)
                .map(|n| format!(" in {n} ()"))
                .unwrap_or_default();
            text.push_str(&format!(
                "{mark} {:<4} Thread {vtid} (recorded id)           {rip:#018x}{fname}\n",
                i + 1
            ));
        }
        let _ = write!(self.out, "{text}");
    }

    fn cmd_thread(&mut self, args: &str) -> CmdResult {
        let threads = self.tl.replayer().threads();
        if args.trim().is_empty() {
            let cur = self.tl.thread();
            let i = threads
                .iter()
                .position(|t| t.0 == cur)
                .map(|i| i + 1)
                .unwrap_or(0);
            self.say(&format!("[Current thread is {i} (Thread {cur})]"));
            return Ok(());
        }
        let n: usize = args
            .trim()
            .parse()
            .map_err(|_| format!("Invalid thread ID: {args}"))?;
        let (vtid, _) = *threads
            .get(n.wrapping_sub(1))
            .ok_or(format!("Invalid thread ID: {n}"))?;
        self.tl.select_thread(vtid).map_err(terr)?;
        self.frame = 0;
        self.say(&format!("[Switching to thread {n} (Thread {vtid})]"));
        self.show_position(true);
        Ok(())
    }

    fn info_checkpoints(&mut self) {
        let mut text = checkpoints_text(&self.checkpoints, &self.tl, "checkpoint");
        text.push('\n');
        let (bytes, n) = self.tl.snapshot_memory();
        text.push_str(&format!(
            "{n} snapshot processes (with anchors) hold {:.1} MiB of their own\n",
            bytes as f64 / (1u64 << 20) as f64
        ));
        let r = self.tl.restores();
        text.push_str(&format!(
            "Gone back from: {} snapshots, {} anchors, {} trace images (the first included)\n",
            r.snapshots, r.anchors, r.images
        ));
        let _ = write!(self.out, "{text}");
    }

    fn cmd_source(&mut self, args: &str) -> CmdResult {
        let path = args.trim();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}."))?;
        for (i, line) in text.lines().enumerate() {
            match self.execute(line) {
                Ok(Flow::Quit) => return Ok(()),
                Ok(Flow::Go) => {}
                Err(e) => {
                    return Err(format!(
                        "{path}:{}: Error in sourced command file:\n{e}",
                        i + 1
                    ))
                }
            }
        }
        Ok(())
    }

    /// `maint snapshot`: fork an in-memory snapshot here and report its
    /// cost (the pause, and the page tables the copy needs: its data pages
    /// are shared until either side writes them).
    fn cmd_maint(&mut self, args: &str) -> CmdResult {
        match args.trim() {
            "snapshot" => {
                let (pause, pid) = self.tl.snapshot_now().map_err(terr)?;
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let field = |k: &str| {
                    status
                        .lines()
                        .find(|l| l.starts_with(k))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .unwrap_or("?")
                        .to_string()
                };
                let m = self.tl.now().clone();
                self.say(&format!(
                    "snapshot at moment {m}: pause {:.3} ms, process {pid}, VmRSS {} kB shared copy-on-write, page tables {} kB",
                    pause.as_secs_f64() * 1e3,
                    field("VmRSS:"),
                    field("VmPTE:")
                ));
                Ok(())
            }
            _ => Err(
                "maint: `maint snapshot` forks an in-memory snapshot here and reports its cost"
                    .into(),
            ),
        }
    }

    fn cmd_help(&mut self) {
        self.say(HELP);
    }
}

/// The user's checkpoints and the events of the in-memory snapshots (no
/// final newline); `make` is the command that makes a checkpoint.
pub(crate) fn checkpoints_text(checkpoints: &[(u32, Moment)], tl: &Timeline, make: &str) -> String {
    let mut text = String::new();
    if checkpoints.is_empty() {
        text.push_str(&format!("No checkpoints (`{make}` makes one).\n"));
    }
    for (id, m) in checkpoints {
        text.push_str(&format!("{id}  moment {m}\n"));
    }
    let snaps: Vec<String> = tl.snapshot_events().iter().map(|e| e.to_string()).collect();
    text.push_str(&format!(
        "In-memory snapshots at events: {}",
        snaps.join(" ")
    ));
    text
}

/// The executable the program runs now, from its auxiliary vector's
/// AT_EXECFN (what it was exec'd as; relative to the recording's working
/// directory), if that names a file.
fn exe_now(tl: &Timeline) -> Option<PathBuf> {
    let auxv = crate::gcore::read_auxv(tl.replayer().tracee().pid).ok()?;
    let at = auxv.iter().find(|a| a.0 == libc::AT_EXECFN)?.1;
    let name = tl.read_c_string(at)?;
    use std::os::unix::ffi::OsStrExt;
    let p = Path::new(std::ffi::OsStr::from_bytes(&name));
    let p = Path::new(&tl.trace().header.cwd).join(p);
    p.is_file().then_some(p)
}

/// Where control can come from to arrive at an address, from the code
/// around it (for reverse-stepi): the instruction before it (unless that
/// one jumps or returns), the direct jumps to it in its function, the call
/// that entered its function (from the return address on the stack), and
/// the returns of the function called just before it.
pub(crate) fn predecessor_hook(mut exe: PathBuf) -> crate::timeline::Predecessors {
    let mut prog = Program::new();
    Box::new(move |tl: &Timeline, addr: u64| {
        if let Some(e) = exe_now(tl).filter(|e| *e != exe) {
            exe = e;
            prog = Program::new();
        }
        let now = Now { tl, exe: &exe };
        let _ = prog.refresh(&now);
        let mut out = Vec::new();
        let Some((lo, hi, _)) = prog.function_range(addr) else {
            return out;
        };
        if hi.saturating_sub(lo) > 1 << 20 {
            return out;
        }
        let insns = prog.disassemble(&now, lo, (hi - lo) as usize);
        let target_of = |text: &str| -> Option<u64> {
            let operand = text.split_whitespace().nth(1)?;
            u64::from_str_radix(operand.trim_start_matches("0x"), 16).ok()
        };
        for i in insns.iter().take_while(|i| i.addr < hi) {
            let mnemonic = i.text.split_whitespace().next().unwrap_or("");
            let end = i.addr + i.len as u64;
            if end == addr && !mnemonic.starts_with("jmp") && !mnemonic.starts_with("ret") {
                out.push(i.addr);
                if mnemonic.starts_with("call") {
                    // A return address: the callee's returns.
                    if let Some(t) = target_of(&i.text) {
                        if let Some((clo, chi, _)) = prog.function_range(t) {
                            if chi.saturating_sub(clo) < 1 << 20 {
                                for c in prog.disassemble(&now, clo, (chi - clo) as usize) {
                                    if c.addr < chi && c.text.starts_with("ret") {
                                        out.push(c.addr);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            if mnemonic.starts_with('j') && target_of(&i.text) == Some(addr) {
                out.push(i.addr);
            }
        }
        if addr == lo {
            // Entered by a call: the return address is on the stack.
            let rsp = tl.regs().map(|r| r.rsp).unwrap_or(0);
            let mut word = [0u8; 8];
            if now.read(rsp, &mut word).is_ok() {
                let ret = u64::from_le_bytes(word);
                for k in [5u64, 6, 2, 3, 7, 4] {
                    let at = ret.wrapping_sub(k);
                    if inspect::is_call(&now, at).map(|l| at + l as u64) == Some(ret) {
                        out.push(at);
                        // Through a PLT stub: its instructions too.
                        let call = prog.disassemble(&now, at, 1);
                        if let Some(t) = call.first().and_then(|c| target_of(&c.text)) {
                            if t != addr {
                                out.extend(prog.disassemble(&now, t, 4).iter().map(|c| c.addr));
                            }
                        }
                        break;
                    }
                }
            }
        }
        out
    })
}

const HELP: &str = "\
rewind debug: gdb's commands, forward and backward, over a recording.
Running:   run (r), start, continue (c) [N], step (s) [N], next (n) [N],
           stepi (si) [N], nexti (ni) [N], finish (fin), until (u), advance LOC
Backward:  reverse-continue (rc), reverse-step (rs), reverse-next (rn),
           reverse-stepi (rsi), reverse-nexti (rni), reverse-finish (rf)
Time:      when, goto EVENT[+STEPS...], checkpoint, restart N, info checkpoints
Search:    bisect EXPR: the first moment EXPR is true (from the beginning of
           history to here); bisect --output REGEX | --check CMD;
           reverse-watch EXPR: the last change of EXPR's value (stops just
           before the instruction or syscall that made it); gcore [FILE]
Stops:     break (b) LOC [if COND], tbreak LOC, watch/rwatch/awatch EXPR,
           delete [N...], disable/enable [N...], condition N COND,
           ignore N COUNT, info breakpoints
           LOC is FUNCTION, FILE:LINE, LINE or *ADDRESS.
Looking:   print (p) EXPR, p/x EXPR, x/NFU ADDR, whatis/ptype EXPR,
           backtrace (bt), frame (f) N,
           up, down, list (l), disassemble, info registers|frame|locals|args|
           threads|sharedlibrary|line, thread N
Other:     source FILE, echo TEXT, kill (k), help, quit (q)
An empty line repeats the last command. History is read-only: `set var`
cannot change the past. Long operations show progress; Ctrl-C stops them.
With `rewind debug -- PROG`, forward commands past the end of history run
the program live (recording it); `kill` kills it, keeping its history.";

fn expr_error(expr: &str, e: &inspect::ExprError) -> String {
    if e.column == 0 || e.column > expr.chars().count() {
        return e.message.clone();
    }
    format!(
        "{}\n  {expr}\n  {}^ (column {})",
        e.message,
        " ".repeat(e.column),
        e.column + 1
    )
}

fn parse_count(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("Invalid number \"{}\".", s.trim()))
}

/// Split "cmd args" (also "x/4x" and "p/x" forms).
fn split_command(line: &str) -> (&str, &str) {
    let end = line.find(|c: char| c.is_whitespace()).unwrap_or(line.len());
    (&line[..end], &line[end..])
}

/// Whether a location is a bare function name (not FILE:LINE, LINE or
/// *ADDRESS).
fn is_plain_name(spec: &str) -> bool {
    !spec.is_empty()
        && spec
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '@')
        && !spec.chars().all(|c| c.is_ascii_digit())
}

/// Position of `word` as a separate word in `s`.
fn find_word(s: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find(word) {
        let at = from + i;
        let before = at == 0 || s[..at].ends_with(char::is_whitespace);
        let after = s[at + word.len()..]
            .chars()
            .next()
            .is_none_or(|c| c.is_whitespace());
        if before && after {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}
