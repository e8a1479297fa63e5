//! Searches through history (DESIGN §6), shared by the REPL (`bisect`,
//! `reverse-watch`) and `rewind bisect`: the predicates (a debugger
//! expression, the program's output, an external check) and the report.

use std::os::fd::AsFd;
use std::time::Instant;

use super::*;
use crate::timeline::{Cause, Predicate, SearchFound, SearchOptions, Verdict};

/// What to look for.
#[derive(Debug, Clone)]
pub enum Search {
    /// The first moment the expression is true (nonzero).
    Until(String),
    /// The last change of the value the expression has now.
    Changes(String),
    /// The first moment the program's output matches the regex.
    Output(String),
    /// The first moment for which the command exits 0, given a core file.
    Check(String),
}

impl Search {
    fn kind(&self) -> &'static str {
        match self {
            Search::Until(_) => "until",
            Search::Changes(_) => "changes",
            Search::Output(_) => "output",
            Search::Check(_) => "check",
        }
    }

    fn text(&self) -> &str {
        match self {
            Search::Until(s) | Search::Changes(s) | Search::Output(s) | Search::Check(s) => s,
        }
    }
}

/// A debugger expression, judged in the innermost frame: true when
/// nonzero; unreadable memory counts as false.
struct ExprPredicate<'a> {
    expr: &'a str,
    prog: &'a Program,
    exe: &'a Path,
}

impl Predicate for ExprPredicate<'_> {
    fn judge(&mut self, tl: &Timeline) -> Result<Verdict, TimelineError> {
        let t = Now { tl, exe: self.exe };
        let (r, used) = inspect::evaluate_tracking(self.expr, self.prog, &t, 0);
        let (truth, mut shown) = match r {
            Ok(v) => (
                self.prog.value_is_true(&v).unwrap_or(false),
                inspect::format_value(self.prog, &t, &v),
            ),
            Err(e) => (false, format!("<{}>", e.message)),
        };
        // A comparison's 0 or 1 says little: show its left side too.
        if let Some(left) = left_operand(self.expr) {
            if let Ok(v) = inspect::evaluate(left, self.prog, &t, 0) {
                let lv = inspect::format_value(self.prog, &t, &v);
                shown = format!("{shown} ({left} = {lv})");
            }
        }
        // `$rax`, `$pc`: registers change at every instruction.
        let reads = (!self.expr.contains('$')).then_some(used);
        Ok(Verdict {
            truth,
            reads,
            shown,
        })
    }

    fn describe(&self) -> String {
        format!("`{}'", self.expr)
    }
}

/// The left side of an expression's first comparison outside brackets
/// (`g.x` of `g.x != 5 && y`).
fn left_operand(expr: &str) -> Option<&str> {
    let b = expr.as_bytes();
    let mut depth = 0i32;
    for i in 0..b.len() {
        match b[i] {
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth -= 1,
            b'=' | b'!' | b'<' | b'>' if depth == 0 => {
                let next = b.get(i + 1).copied();
                let prev = if i > 0 { b[i - 1] } else { b' ' };
                let cmp = match b[i] {
                    b'=' | b'!' => next == Some(b'='),
                    _ => next != Some(b[i]) && prev != b[i] && prev != b'-',
                };
                if cmp {
                    let left = expr[..i].trim();
                    return (!left.is_empty()).then_some(left);
                }
            }
            _ => {}
        }
    }
    None
}

/// An external command decides, given a core file of the moment.
struct CheckPredicate<'a> {
    cmd: &'a str,
    exe: &'a Path,
    dir: PathBuf,
    runs: u64,
}

impl Predicate for CheckPredicate<'_> {
    fn judge(&mut self, tl: &Timeline) -> Result<Verdict, TimelineError> {
        self.runs += 1;
        let core = self.dir.join(format!("core.{}", self.runs));
        crate::gcore::write_core_of(tl, self.exe, &core)
            .map_err(|e| TimelineError::Other(format!("writing a core file: {e:#}")))?;
        let stdout = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map(std::process::Stdio::from)
            .unwrap_or_else(|_| std::process::Stdio::null());
        let status = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(self.cmd)
            .env("REWIND_CORE", &core)
            .env("REWIND_MOMENT", tl.now().to_string())
            .env("REWIND_EXE", self.exe)
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .status();
        let _ = std::fs::remove_file(&core);
        let status = status.map_err(|e| {
            TimelineError::Other(format!("cannot run /bin/sh -c {:?}: {e}", self.cmd))
        })?;
        match status.code() {
            Some(0) => Ok(Verdict {
                truth: true,
                reads: None,
                shown: "exit status 0".into(),
            }),
            Some(c) if c < 128 => Ok(Verdict {
                truth: false,
                reads: None,
                shown: format!("exit status {c}"),
            }),
            _ => Err(TimelineError::Other(format!(
                "the check command failed ({status}) at moment {}: giving up",
                tl.now()
            ))),
        }
    }

    fn describe(&self) -> String {
        format!("the check `{}'", self.cmd)
    }
}

/// Removes a directory (and what is in it) when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Printable text of output bytes, the end of it if long.
fn output_text(bytes: &[u8], tail: bool) -> String {
    let max = 200;
    let b = if bytes.len() > max {
        if tail {
            &bytes[bytes.len() - max..]
        } else {
            &bytes[..max]
        }
    } else {
        bytes
    };
    format!("{:?}", String::from_utf8_lossy(b))
}

impl Debugger {
    /// Search history from its beginning to here for `s`, go to what was
    /// found and describe it: the text report and the same as JSON.
    pub fn search(
        &mut self,
        s: &Search,
        opts: &SearchOptions,
    ) -> Result<(String, serde_json::Value), String> {
        let t0 = Instant::now();
        self.refresh();
        let here = self.tl.now().clone();
        let found = match s {
            Search::Until(expr) => {
                let mut p = ExprPredicate {
                    expr,
                    prog: &self.prog,
                    exe: &self.exe,
                };
                self.tl.first_true(&mut p, &here, opts)
            }
            Search::Changes(expr) => {
                let mut p = ExprPredicate {
                    expr,
                    prog: &self.prog,
                    exe: &self.exe,
                };
                self.tl.last_change(&mut p)
            }
            Search::Check(cmd) => {
                let dir = std::env::temp_dir().join(format!("rewind-check-{}", std::process::id()));
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                let _clean = TempDir(dir.clone());
                let mut p = CheckPredicate {
                    cmd,
                    exe: &self.exe,
                    dir,
                    runs: 0,
                };
                self.tl.first_true(&mut p, &here, opts)
            }
            Search::Output(re) => self.output_search(re, &here)?,
        }
        .map_err(terr)?;
        self.frame = 0;
        self.refresh();
        Ok(self.describe_found(s, &found, t0.elapsed().as_secs_f64()))
    }

    /// The write event that first makes the output match `re`, up to
    /// `here`.
    fn output_search(
        &mut self,
        re: &str,
        here: &Moment,
    ) -> Result<Result<SearchFound, TimelineError>, String> {
        let rx = regex::bytes::Regex::new(re).map_err(|e| format!("bad regex: {e}"))?;
        let out = match self.tl.collect_output() {
            Ok(o) => o,
            Err(e) => return Ok(Err(e)),
        };
        let found = (|| {
            let end = rx.shortest_match(&out.text).ok_or_else(|| {
                TimelineError::Other(format!(
                    "the program's output ({} bytes) never matches /{re}/",
                    out.text.len()
                ))
            })?;
            let (index, start) = out
                .write_reaching(end)
                .ok_or_else(|| TimelineError::Other("no write reaches the match".into()))?;
            if index >= here.event {
                return Err(TimelineError::Other(format!(
                    "the output matches /{re}/ only after here (at event {index})"
                )));
            }
            let before = self.tl.syscall_start(index)?;
            let moment = Moment {
                event: index + 1,
                path: Vec::new(),
            };
            self.tl.goto(&moment)?;
            let next = out
                .writes
                .iter()
                .find(|w| w.0 == index)
                .map(|w| w.1)
                .unwrap_or(out.text.len());
            Ok(SearchFound {
                moment,
                cause: Cause::Event { index, before },
                old: output_text(&out.text[..start], true),
                new: output_text(&out.text[start..next], false),
                probes: 1,
                checked: 0,
            })
        })();
        Ok(found)
    }

    fn describe_found(
        &mut self,
        s: &Search,
        found: &SearchFound,
        seconds: f64,
    ) -> (String, serde_json::Value) {
        let total = self.tl.events();
        let m = &found.moment;
        let mut text = String::new();
        let what = match s {
            Search::Until(e) => format!("`{e}' is first true"),
            Search::Changes(e) => format!("`{e}' last changes"),
            Search::Output(r) => format!("the output first matches /{r}/"),
            Search::Check(c) => format!("the check `{c}' first succeeds"),
        };
        text.push_str(&format!(
            "{what} at moment {m} (event {} of {total}).\n",
            m.event
        ));
        let mut cause_json = serde_json::json!({});
        let insn_at = |d: &Debugger, rip: u64| -> (String, serde_json::Value) {
            let now = d.now();
            let insn = d
                .prog
                .disassemble(&now, rip, 1)
                .first()
                .map(|i| i.text.clone())
                .unwrap_or_default();
            let loc = d.prog.location(rip);
            let (file, line) = loc
                .map(|l| (l.file.map(|f| f.display().to_string()), l.line))
                .unwrap_or((None, None));
            let func = d.prog.function_name(rip);
            let mut t = format!("   {}:\t{insn}\n", d.describe_addr(rip));
            if let (Some(f), Some(l)) = (&file, line) {
                let src = d.source_line_at(rip).unwrap_or_else(|| format!("{l}"));
                let short = Path::new(f)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| f.clone());
                t.push_str(&format!("   at {short}:{l}\n   {src}\n"));
            }
            let j = serde_json::json!({
                "pc": format!("{rip:#x}"),
                "function": func,
                "file": file,
                "line": line,
                "instruction": insn,
            });
            (t, j)
        };
        match &found.cause {
            Cause::Instruction { rip, before } => {
                let (t, mut j) = insn_at(self, *rip);
                let verb = if matches!(s, Search::Changes(_)) {
                    "is about to be changed by the instruction"
                } else {
                    "was made true by the instruction"
                };
                text.push_str(&format!("It {verb} (at moment {before}):\n{t}"));
                j["kind"] = "instruction".into();
                j["moment"] = before.to_string().into();
                cause_json = j;
            }
            Cause::Write => {
                let rip = self.pc();
                match self.straight_predecessor(rip) {
                    Some(at) => {
                        let (t, mut j) = insn_at(self, at);
                        text.push_str(&format!(
                            "It was made true by a write of the instruction just before:\n{t}"
                        ));
                        j["kind"] = "instruction".into();
                        cause_json = j;
                    }
                    None => {
                        text.push_str(
                            "It was made true by a write of the instruction just before (reverse-stepi shows it).\n",
                        );
                        cause_json = serde_json::json!({ "kind": "write" });
                    }
                }
            }
            Cause::Event { index, before } => {
                let desc = match self.tl.trace().events.get(*index as usize).as_deref() {
                    Some(rewind_rr::trace::format::Event::Syscall { nr, tid, .. }) => {
                        format!(
                            "the {} syscall of thread {tid}",
                            rewind_rr::syscalls::name(*nr)
                        )
                    }
                    Some(rewind_rr::trace::format::Event::Signal { tid, .. }) => {
                        format!("a signal delivered to thread {tid}")
                    }
                    Some(e) => format!("{e:?}").chars().take(60).collect(),
                    None => "an event".into(),
                };
                text.push_str(&format!("It was done by event {index}: {desc}"));
                cause_json = serde_json::json!({
                    "kind": "event",
                    "index": index,
                    "description": desc,
                });
                if let Some(b) = before {
                    let at = self.tl.now().clone();
                    if self.tl.goto(b).is_ok() {
                        let rip = self.pc();
                        let (t, j) = insn_at(self, rip);
                        text.push_str(&format!(", made at moment {b} by:\n{t}"));
                        cause_json["moment"] = b.to_string().into();
                        cause_json["instruction"] = j;
                    }
                    let _ = self.tl.goto(&at);
                    self.refresh();
                } else {
                    text.push('\n');
                }
            }
        }
        text.push_str(&format!(
            "Old value: {}\nNew value: {}\n",
            found.old, found.new
        ));
        let now = self.now();
        let frames = self.prog.backtrace(&now, 64);
        let bt: Vec<String> = frames
            .iter()
            .map(|f| self.prog.describe_frame(&now, f))
            .collect();
        for f in &bt {
            text.push_str(f);
            text.push('\n');
        }
        let checked = if found.checked > 0 {
            format!("; checked at {} snapshots", found.checked)
        } else {
            String::new()
        };
        text.push_str(&format!(
            "Found with {} probes in {seconds:.2} s{checked}.\n",
            found.probes
        ));
        let json = serde_json::json!({
            "search": s.kind(),
            "predicate": s.text(),
            "moment": m.to_string(),
            "event": m.event,
            "events": total,
            "thread": self.tl.thread(),
            "cause": cause_json,
            "old": found.old,
            "new": found.new,
            "backtrace": bt,
            "probes": found.probes,
            "checked": found.checked,
            "seconds": seconds,
        });
        (text, json)
    }

    /// `gcore [FILE]`: write an ELF core file of this moment (gdb opens
    /// it with the executable).
    pub(super) fn cmd_gcore(&mut self, args: &str) -> CmdResult {
        let file = match args.trim() {
            "" => {
                let pid = self
                    .tl
                    .replayer()
                    .threads()
                    .first()
                    .map(|t| t.0)
                    .unwrap_or(0);
                PathBuf::from(format!("core.{pid}"))
            }
            f => PathBuf::from(f),
        };
        crate::gcore::write_core_of(&self.tl, &self.exe, &file)
            .map_err(|e| format!("Failed to save the core file: {e:#}"))?;
        self.say(&format!("Saved corefile {}", file.display()));
        Ok(())
    }

    /// The instruction that ends at `addr` in its function's code (what
    /// ran just before, unless a jump came to `addr`: not when it is a
    /// jump itself).
    fn straight_predecessor(&self, addr: u64) -> Option<u64> {
        let (lo, hi, _) = self.prog.function_range(addr)?;
        if hi.saturating_sub(lo) > 1 << 20 || addr <= lo {
            return None;
        }
        let now = self.now();
        let insns = self.prog.disassemble(&now, lo, (addr - lo) as usize);
        let i = insns.iter().find(|i| i.addr + i.len as u64 == addr)?;
        let mnemonic = i.text.split_whitespace().next().unwrap_or("");
        let branch = mnemonic.starts_with('j') || mnemonic.starts_with("ret");
        (!branch).then_some(i.addr)
    }

    /// `bisect EXPR | --until EXPR | --changes EXPR | --output REGEX |
    /// --check CMD`, from the beginning of history to here.
    pub(super) fn cmd_bisect(&mut self, args: &str, reverse_watch: bool) -> CmdResult {
        let args = args.trim();
        if args.is_empty() {
            return Err(if reverse_watch {
                "Argument required (expression whose last change to find).".into()
            } else {
                "Argument required: EXPR, --changes EXPR, --output REGEX or --check CMD.".into()
            });
        }
        let s = if reverse_watch {
            Search::Changes(args.into())
        } else {
            parse_search(args)?
        };
        let (text, _) = self.search(&s, &SearchOptions::default())?;
        let _ = write!(self.out, "{text}");
        self.show_position(true);
        Ok(())
    }
}

/// `--until EXPR`, `--changes EXPR`, `--output REGEX`, `--check CMD`, or
/// a bare expression (until).
pub fn parse_search(args: &str) -> Result<Search, String> {
    let args = args.trim();
    for (flag, make) in [
        ("--until", Search::Until as fn(String) -> Search),
        ("--changes", Search::Changes),
        ("--output", Search::Output),
        ("--check", Search::Check),
    ] {
        if let Some(rest) = args.strip_prefix(flag) {
            let rest = rest.trim_start_matches('=').trim();
            if rest.is_empty() {
                return Err(format!("{flag} needs an argument"));
            }
            return Ok(make(rest.to_string()));
        }
    }
    if args.starts_with("--") {
        return Err(format!(
            "unknown search {args:?}: use EXPR, --until EXPR, --changes EXPR, --output REGEX or --check CMD"
        ));
    }
    Ok(Search::Until(args.to_string()))
}
