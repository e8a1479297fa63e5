//! `rewind bisect`: search a recording for the first moment a predicate
//! holds (or the last change of a value) and report it (DESIGN §6).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::cli::{err, CliResult};
use crate::debug_cli::{executable, prepare_trace};
use crate::repl::{Debugger, Search};
use crate::timeline::{self, SearchOptions, StopReason, TimelineOptions};

pub struct BisectRequest {
    pub trace: Option<PathBuf>,
    /// With `trace`: a process of a recorded tree (see `debug --process`).
    pub process: Option<i32>,
    pub argv: Vec<String>,
    pub output: Option<PathBuf>,
    pub search: Search,
    pub json: bool,
    pub max_steps: u64,
    pub check_monotone: bool,
    pub max_snapshots: usize,
}

pub fn bisect(req: BisectRequest) -> CliResult {
    let (dir, _temp) = prepare_trace(req.trace.as_deref(), &req.argv, req.output.as_deref())?;
    let _ = rewind_ckpt::sys::set_child_subreaper();
    let (trace, image) = crate::debug_cli::load_trace(&dir, req.process)?;
    // The program's output is not shown again (an output search reads it).
    let console =
        rewind_rr::replayer::Console::new(Box::new(std::io::sink()), Box::new(std::io::sink()));
    let opts = TimelineOptions {
        max_snapshots: req.max_snapshots,
        ..Default::default()
    };
    let mut tl = timeline::Timeline::open_image(trace, &image, console, opts)
        .map_err(|e| err(e.to_string()))?;
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let shown = Rc::new(std::cell::Cell::new(false));
    {
        let shown = shown.clone();
        tl.progress = Some(Box::new(move |what: &str| {
            if tty && started.elapsed() >= Duration::from_secs(1) {
                eprint!("\r\x1b[K[rewind] bisect: {what} (Ctrl-C stops)");
                shown.set(true);
            }
            rewind_ckpt::sys::take_interrupt()
        }));
    }
    let _ = rewind_ckpt::sys::catch_interrupt();
    let exe = executable(&tl);
    let mut dbg = Debugger::new(tl, exe, Box::new(std::io::sink()));
    let clear = || {
        if shown.replace(false) {
            eprint!("\r\x1b[K");
        }
    };
    // The search runs up to the end of history.
    match dbg.timeline_mut().cont(&mut |_, _| false) {
        Ok(StopReason::End) => {}
        Ok(r) => return Err(err(format!("could not reach the end of history: {r:?}"))),
        Err(e) => {
            clear();
            return Err(err(format!("going to the end of history: {e}")));
        }
    }
    let opts = SearchOptions {
        max_steps: req.max_steps,
        check_monotone: req.check_monotone,
    };
    let r = dbg.search(&req.search, &opts);
    clear();
    let (text, json) = r.map_err(err)?;
    if req.json {
        println!("{json:#}");
    } else {
        print!("{text}");
    }
    Ok(0)
}
