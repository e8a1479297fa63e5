//! `rewind debug`: record (or open a recording), then the REPL.

use std::cell::Cell;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use crate::cli::{err, CliError, CliResult};
use crate::repl::{command_names, Debugger, Flow};
use crate::timeline::{self, TimelineOptions};

pub struct DebugRequest {
    /// A trace written by `rewind record`.
    pub trace: Option<PathBuf>,
    /// With `trace`: the process of a recorded tree to debug (its recorded
    /// pid), from its first exec.
    pub process: Option<i32>,
    /// Or a checkpoint image, to look at (no history).
    pub image: Option<PathBuf>,
    /// Or a program to record first.
    pub argv: Vec<String>,
    /// Where to keep that recording (default: a temporary directory,
    /// removed at the end).
    pub output: Option<PathBuf>,
    pub scripts: Vec<PathBuf>,
    pub commands: Vec<String>,
    pub batch: bool,
    pub max_snapshots: usize,
    /// Memory budget of the snapshots, MiB.
    pub snapshot_memory: u64,
}

/// Removes a temporary trace directory when dropped.
pub(crate) struct TempTrace(Option<PathBuf>);

impl Drop for TempTrace {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The executable the trace ran: the restored process's own, else the
/// recorded argv[0] (against the recorded cwd, then PATH).
pub(crate) fn executable(tl: &timeline::Timeline) -> PathBuf {
    let pid = tl.replayer().tracee().pid;
    if let Ok(p) = std::fs::read_link(format!("/proc/{pid}/exe")) {
        if p.is_file() {
            return p;
        }
    }
    let header = &tl.trace().header;
    let argv0 = header.argv.first().cloned().unwrap_or_default();
    let p = Path::new(&header.cwd).join(&argv0);
    if p.is_file() {
        return p;
    }
    rewind_ckpt::session::resolve_program(&argv0).unwrap_or(p)
}

/// A history of one moment: the program in checkpoint image `image`.
fn image_timeline(image: &Path, opts: TimelineOptions) -> Result<timeline::Timeline, CliError> {
    let (vendor, flags) = rewind_rr::recorder::cpu_info();
    let dir = image
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| err(format!("{}: not an image file", image.display())))?;
    let trace = rewind_rr::replayer::LoadedTrace {
        blobs: dir.join("blobs"),
        renamed: None,
        dir,
        header: rewind_rr::trace::format::TraceHeader {
            kernel: String::new(),
            cpu_vendor: vendor,
            cpu_flags: flags,
            argv: vec![name.clone()],
            cwd: String::new(),
            created_unix: 0,
            verify_memory: false,
            cpu: rewind_ckpt::sys::first_allowed_cpu() as u32,
        },
        events: rewind_rr::trace::EventList::default(),
        end: None,
    };
    let console =
        rewind_rr::replayer::Console::new(Box::new(std::io::stdout()), Box::new(std::io::stderr()));
    timeline::Timeline::open_image(trace, &name, console, opts).map_err(|e| err(e.to_string()))
}

/// The recording in `dir` for a debugger and the image it starts from: the
/// program's own process, or `process` of a recorded tree from its first
/// exec.
pub(crate) fn load_trace(
    dir: &Path,
    process: Option<i32>,
) -> Result<(rewind_rr::replayer::LoadedTrace, String), CliError> {
    if let Some(pid) = process {
        let pdir = dir.join(format!("proc-{pid}"));
        if pdir.is_dir() && !pdir.join("exec-1.rwd").exists() && !pdir.join("forked.rwd").exists() {
            eprintln!(
                "rewind: replaying the tree up to where process {pid} was made (once: kept in {})",
                pdir.join("forked.rwd").display()
            );
        }
    }
    match process {
        Some(pid) => rewind_rr::replayer::load_process(dir, pid),
        None => rewind_rr::replayer::load(dir).map(|t| (t, "initial.rwd".to_string())),
    }
    .map_err(|e| err(e.to_string()))
}

/// The trace to work on: `trace` itself, or a recording of `argv` made
/// now (into `output`, else a temporary directory removed when the
/// returned guard drops).
pub(crate) fn prepare_trace(
    trace: Option<&Path>,
    argv: &[String],
    output: Option<&Path>,
) -> Result<(PathBuf, TempTrace), CliError> {
    let mut _temp = TempTrace(None);
    let dir = match (trace, argv.is_empty()) {
        (Some(d), true) => d.to_path_buf(),
        (None, false) => {
            let dir = match &output {
                Some(d) => d.to_path_buf(),
                None => {
                    let prog = Path::new(&argv[0])
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "prog".into());
                    let d = std::env::temp_dir()
                        .join(format!("rewind-debug-{prog}-{}", std::process::id()));
                    _temp = TempTrace(Some(d.clone()));
                    d
                }
            };
            rewind_ckpt::session::resolve_program(&argv[0]).map_err(|e| err(e.to_string()))?;
            eprintln!(
                "rewind: recording {} to its end first; then rewind works on the recording",
                argv[0]
            );
            rewind_ckpt::sys::process::ignore_terminal_signals();
            let rec = rewind_rr::recorder::record(
                argv,
                &rewind_rr::recorder::RecordOptions {
                    dir: dir.clone(),
                    verify_memory: false,
                    checkpoint_interval: Some(Duration::from_secs(5)),
                    syscallbuf: false,
                },
            )
            .map_err(|e| err(e.to_string()))?;
            eprintln!(
                "rewind: recorded {} events; the program exited with status {}",
                rec.events, rec.exit_code
            );
            dir
        }
        (Some(_), false) => {
            return Err(CliError {
                message: "give either --trace DIR or -- PROG ARGS, not both".into(),
                usage: true,
            })
        }
        (None, true) => {
            return Err(CliError {
                message: "nothing to debug: give --trace DIR or -- PROG ARGS".into(),
                usage: true,
            })
        }
    };
    Ok((dir, _temp))
}

pub fn debug(req: DebugRequest) -> CliResult {
    let sources =
        req.trace.is_some() as u8 + req.image.is_some() as u8 + !req.argv.is_empty() as u8;
    if sources != 1 {
        return Err(CliError {
            message: if sources == 0 {
                "nothing to debug: give --trace DIR, --image FILE or -- PROG ARGS".into()
            } else {
                "give one of --trace DIR, --image FILE or -- PROG ARGS".into()
            },
            usage: true,
        });
    }
    let opts = TimelineOptions {
        max_snapshots: req.max_snapshots,
        memory_budget: req.snapshot_memory << 20,
        ..Default::default()
    };
    if req.process.is_some() && req.trace.is_none() {
        return Err(CliError {
            message: "--process picks a process of a recording: give it with --trace DIR".into(),
            usage: true,
        });
    }
    if let Some(image) = &req.image {
        let _ = rewind_ckpt::sys::set_child_subreaper();
        let tl = image_timeline(image, opts)?;
        return session(tl, &req);
    }
    if !req.argv.is_empty() {
        let (tl, _temp) = live_timeline(&req.argv, req.output.as_deref(), opts, false)?;
        return session(tl, &req);
    }
    let (dir, _temp) = prepare_trace(req.trace.as_deref(), &req.argv, req.output.as_deref())?;
    let _ = rewind_ckpt::sys::set_child_subreaper();
    let (trace, image) = load_trace(&dir, req.process)?;
    let console =
        rewind_rr::replayer::Console::new(Box::new(std::io::stdout()), Box::new(std::io::stderr()));
    let tl = timeline::Timeline::open_image(trace, &image, console, opts)
        .map_err(|e| err(e.to_string()))?;
    session(tl, &req)
}

/// A timeline over `argv` started now under a live recording (into
/// `output`, else a temporary directory removed when the returned guard
/// drops). The program's output is its own (live); with `to_stderr`, the
/// replayed output of events it did not make live goes to stderr.
pub(crate) fn live_timeline(
    argv: &[String],
    output: Option<&Path>,
    opts: TimelineOptions,
    to_stderr: bool,
) -> Result<(timeline::Timeline, TempTrace), CliError> {
    rewind_ckpt::session::resolve_program(&argv[0]).map_err(|e| err(e.to_string()))?;
    let mut temp = TempTrace(None);
    let dir = match output {
        Some(d) => d.to_path_buf(),
        None => {
            let prog = Path::new(&argv[0])
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "prog".into());
            let d =
                std::env::temp_dir().join(format!("rewind-debug-{prog}-{}", std::process::id()));
            temp = TempTrace(Some(d.clone()));
            d
        }
    };
    rewind_ckpt::sys::process::ignore_terminal_signals();
    let _ = rewind_ckpt::sys::set_child_subreaper();
    let console = rewind_rr::replayer::Console::new(
        if to_stderr {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        },
        Box::new(std::io::stderr()),
    );
    let tl =
        timeline::Timeline::open_live(argv, &dir, console, opts).map_err(|e| err(e.to_string()))?;
    Ok((tl, temp))
}

/// The REPL session over a timeline.
fn session(mut tl: timeline::Timeline, req: &DebugRequest) -> CliResult {
    let interactive = std::io::stdin().is_terminal() && !req.batch;
    // Progress for long operations (after a second), and Ctrl-C.
    let started = Rc::new(Cell::new(Instant::now()));
    let shown = Rc::new(Cell::new(false));
    {
        let (started, shown) = (started.clone(), shown.clone());
        let tty = std::io::stderr().is_terminal();
        tl.progress = Some(Box::new(move |what: &str| {
            if tty && started.get().elapsed() >= Duration::from_secs(1) {
                eprint!("\r\x1b[K[rewind] {what} (Ctrl-C stops)");
                shown.set(true);
            }
            rewind_ckpt::sys::take_interrupt()
        }));
    }
    let _ = rewind_ckpt::sys::catch_interrupt();
    let exe = executable(&tl);
    let mut dbg = Debugger::new(tl, exe, Box::new(std::io::stdout()));
    // REWIND_TIME_COMMANDS=1: each command's wall time on stderr (for
    // scripts/bench.sh), like gdb's `maint set per-command time`.
    let timing = std::env::var_os("REWIND_TIME_COMMANDS").is_some_and(|v| v == "1");
    let mut run = |dbg: &mut Debugger, line: &str| -> Flow {
        started.set(Instant::now());
        let r = dbg.execute(line);
        if timing {
            eprintln!(
                "rewind: time {:.6} s: {}",
                started.get().elapsed().as_secs_f64(),
                line.trim()
            );
        }
        if shown.replace(false) {
            eprint!("\r\x1b[K");
        }
        match r {
            Ok(f) => f,
            Err(e) => {
                let _ = std::io::stdout().flush();
                eprintln!("{e}");
                Flow::Go
            }
        }
    };
    for script in &req.scripts {
        let text = std::fs::read_to_string(script)
            .map_err(|e| err(format!("{}: {e}", script.display())))?;
        for (i, line) in text.lines().enumerate() {
            started.set(Instant::now());
            match dbg.execute(line) {
                Ok(Flow::Quit) => {
                    dbg.finish();
                    return Ok(0);
                }
                Ok(Flow::Go) => {}
                Err(e) => {
                    let _ = std::io::stdout().flush();
                    eprintln!(
                        "{}:{}: Error in sourced command file:\n{e}",
                        script.display(),
                        i + 1
                    );
                    break;
                }
            }
        }
    }
    let mut quit = false;
    for c in &req.commands {
        if run(&mut dbg, c) == Flow::Quit {
            quit = true;
            break;
        }
    }
    let result = if quit || req.batch {
        Ok(0)
    } else if interactive {
        repl_loop(&mut dbg, &mut run)
    } else {
        // Commands from a pipe or a file, one per line.
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if run(&mut dbg, &line) == Flow::Quit {
                break;
            }
        }
        Ok(0)
    };
    dbg.finish();
    result
}

struct Completion;

impl Completer for Completion {
    type Candidate = Pair;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        let start = head.rfind(char::is_whitespace).map(|i| i + 1).unwrap_or(0);
        let word = &head[start..];
        if start != 0 {
            return Ok((start, Vec::new()));
        }
        let pairs = command_names()
            .iter()
            .filter(|c| c.starts_with(word))
            .map(|c| Pair {
                display: c.to_string(),
                replacement: format!("{c} "),
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for Completion {
    type Hint = String;
}
impl Highlighter for Completion {}
impl Validator for Completion {}
impl Helper for Completion {}

fn history_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("REWIND_HISTORY") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rewind_history"))
}

fn repl_loop(dbg: &mut Debugger, run: &mut dyn FnMut(&mut Debugger, &str) -> Flow) -> CliResult {
    let mut ed = rustyline::Editor::<Completion, rustyline::history::DefaultHistory>::new()
        .map_err(|e| err(format!("cannot open the terminal: {e}")))?;
    ed.set_helper(Some(Completion));
    let hist = history_file();
    if let Some(h) = &hist {
        let _ = ed.load_history(h);
    }
    let mut last = String::new();
    loop {
        match ed.readline("(rewind) ") {
            Ok(line) => {
                let line = if line.trim().is_empty() {
                    last.clone()
                } else {
                    let _ = ed.add_history_entry(line.as_str());
                    last = line.clone();
                    line
                };
                // A Ctrl-C pressed at the prompt is not for the command.
                let _ = rewind_ckpt::sys::take_interrupt();
                if run(dbg, &line) == Flow::Quit {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => {
                println!("Quit");
            }
            Err(ReadlineError::Eof) => {
                println!("quit");
                break;
            }
            Err(e) => return Err(err(format!("terminal: {e}"))),
        }
    }
    if let Some(h) = &hist {
        let _ = ed.save_history(h);
    }
    Ok(0)
}
