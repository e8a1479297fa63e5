//! Replaying a recorded process tree: every process from its own log
//! (`proc-PID/` of the trace), in the order the trace's `schedule` gives
//! across processes. A process is made in replay where it was made when
//! recording: its parent's `Event::Fork` runs the fork for real, so the
//! child starts as the same copy of its parent (memory shared through
//! `MAP_SHARED` or vfork included), and the schedule lets only one process
//! run at a time, as the recorder did.

use super::*;
use crate::trace::format::{Schedule, TraceEnd};

/// Replay the tree of `opts.dir`, whose root's end record is `end`.
pub(super) fn replay(
    opts: &ReplayOptions,
    header: &TraceHeader,
    end: Option<TraceEnd>,
    schedule: &Schedule,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Replayed, Error> {
    let console = Console::new(Box::new(out), Box::new(err));
    let mut procs = start_tree(opts, header, schedule, console)?;
    let mut ended = Vec::new();
    // On an error every replayer is dropped, which kills its process.
    run(opts, schedule, &mut procs, &mut ended)?;
    let mut events = 0;
    let mut exit_code = 0;
    for e in &ended {
        events += e.events;
        let end = if e.pid == schedule.root {
            exit_code = e.exit;
            end.clone()
        } else {
            trace::read_end(&e.dir)?
        };
        match end {
            None => {
                return Err(TraceError::Truncated {
                    path: e.dir.join("events"),
                    what: format!(
                        "trace: no end record of process {} after {} events (replayed that far)",
                        e.pid, e.events
                    ),
                }
                .into())
            }
            Some(end) if end.exit_code != e.exit => {
                return Err(Error::Divergence {
                    event: e.events,
                    tid: e.pid,
                    what: format!(
                        "process {} ended with status {}, the recording with {}",
                        e.pid, e.exit, end.exit_code
                    ),
                })
            }
            Some(_) => {}
        }
    }
    Ok(Replayed { events, exit_code })
}

/// The replayers of a tree's replay at its start: the program's process,
/// restored from the initial image of `opts.dir`.
fn start_tree<'a>(
    opts: &ReplayOptions,
    header: &TraceHeader,
    schedule: &Schedule,
    console: Rc<RefCell<Console<'a>>>,
) -> Result<HashMap<i32, Replayer<'a>>, Error> {
    let cpu = header.cpu as usize;
    let (tracee, threads) = start(&opts.dir.join("initial.rwd"), cpu)?;
    let events = EventReader::open(&opts.dir)?;
    let mut root = Replayer::streamed(opts, tracee, threads, events, 0, console, cpu);
    root.tree = true;
    let mut procs = HashMap::new();
    procs.insert(schedule.root, root);
    Ok(procs)
}

/// A replayed process that ended: what is checked against its end record
/// (its replayer is dropped, with its descriptors, as soon as it ends).
struct Ended {
    pid: i32,
    events: u64,
    exit: i32,
    dir: PathBuf,
}

impl Ended {
    fn of(pid: i32, r: &Replayer) -> Ended {
        Ended {
            pid,
            events: r.event,
            exit: r.exit.unwrap_or(0),
            dir: r.dir.clone(),
        }
    }
}

/// Replay the tree of `dir` until process `pid` is made, and write an
/// image of it as it starts (its first instruction after the fork) to
/// `out`: where a debugger starts a process that never exec'd. The image
/// names it by its pid in this replay (returned), not by its recorded one.
pub(super) fn image_of_forked(dir: &Path, pid: i32, out: &Path) -> Result<i32, Error> {
    let header = trace::read_header(dir)?;
    check_machine(&header)?;
    let Some(schedule) = trace::read_schedule(dir)? else {
        return Err(Error::Usage(format!("{} holds one process", dir.display())));
    };
    let opts = ReplayOptions {
        dir: dir.to_path_buf(),
        quiet: true,
        ..Default::default()
    };
    let console = Console::new(Box::new(std::io::sink()), Box::new(std::io::sink()));
    let mut procs = start_tree(&opts, &header, &schedule, console)?;
    run_until(&opts, &schedule, &mut procs, &mut Vec::new(), Some(pid))?;
    let Some(child) = procs.get_mut(&pid) else {
        return Err(Error::Unsupported(format!(
            "process {pid} was not made in the replay of {}",
            dir.display()
        )));
    };
    let real = child.tracee.pid;
    for t in child.tracee.threads.values_mut() {
        t.stop = rewind_ckpt::tracee::ThreadStop::Interrupted;
    }
    let env = rewind_ckpt::capture::CaptureEnv {
        stdio: &rewind_ckpt::fds::own_stdio(),
        vids: &rewind_ckpt::vids::VirtualIds::default(),
        vppid: std::process::id() as i32,
        terminals: None,
    };
    let mut plugins = rewind_ckpt::plugin::builtin();
    rewind_ckpt::capture::checkpoint(&mut child.tracee, &mut plugins, &env, out)?;
    // Every replayer is dropped: its process is killed.
    Ok(real)
}

/// Apply every event in the schedule's order, making processes as the
/// events say; then every process ends, without another event.
fn run(
    opts: &ReplayOptions,
    schedule: &Schedule,
    procs: &mut HashMap<i32, Replayer<'_>>,
    ended: &mut Vec<Ended>,
) -> Result<(), Error> {
    run_until(opts, schedule, procs, ended, None)
}

/// `run`, or only until process `until` exists.
fn run_until(
    opts: &ReplayOptions,
    schedule: &Schedule,
    procs: &mut HashMap<i32, Replayer<'_>>,
    ended: &mut Vec<Ended>,
    until: Option<i32>,
) -> Result<(), Error> {
    let corrupt = |why: String| TraceError::Corrupt {
        path: opts.dir.join("schedule"),
        what: "schedule".into(),
        why,
    };
    for &(pid, upto) in &schedule.runs {
        let r = procs.get_mut(&pid).ok_or_else(|| {
            if ended.iter().any(|e| e.pid == pid) {
                corrupt(format!("process {pid} runs again after it ended"))
            } else {
                corrupt(format!(
                    "process {pid} runs before it was made (no fork event made it)"
                ))
            }
        })?;
        let mut made = Vec::new();
        while r.event < upto {
            if r.exit.is_some() {
                return Err(r.diverge(
                    pid,
                    format!("process {pid} ended in replay before its recorded events did"),
                ));
            }
            match r.advance()? {
                Advance::Event { .. } => {}
                Advance::End => {
                    return Err(TraceError::Truncated {
                        path: r.dir.join("events"),
                        what: format!(
                            "log of process {pid}: {} events where the schedule counts {upto}",
                            r.event
                        ),
                    }
                    .into())
                }
                Advance::Paused(_) => {
                    return Err(Error::Unsupported("replay paused for no reason".into()))
                }
            }
            made.append(&mut r.forked);
        }
        let (sbuf, cpu) = (r.sbuf, r.cpu);
        let shared = (r.queued.clone(), r.console.clone(), r.blob_cache.clone());
        if r.exit.is_some() {
            // Done: its descriptors go now (a tree may have thousands).
            ended.push(Ended::of(pid, r));
            procs.remove(&pid);
        }
        for f in made {
            let dir = trace::process_dir(&opts.dir, f.recorded, schedule.root);
            let child = adopt(opts, &dir, f, sbuf, shared.clone(), cpu)?;
            procs.insert(f.recorded, child);
        }
        if until.is_some_and(|pid| procs.contains_key(&pid)) {
            return Ok(());
        }
    }
    if until.is_some() {
        return Ok(());
    }
    for (&pid, r) in procs.iter_mut() {
        if r.exit.is_none() {
            r.finish()?;
        }
        ended.push(Ended::of(pid, r));
    }
    Ok(())
}

/// A replayer for the process `f` a fork made, from its log in `dir`.
fn adopt<'a>(
    opts: &ReplayOptions,
    dir: &Path,
    f: Forked,
    parent_sbuf: bool,
    (queued, console, blob_cache): (Queue, Rc<RefCell<Console<'a>>>, BlobCache),
    cpu: usize,
) -> Result<Replayer<'a>, Error> {
    let tracee = Tracee::new(f.real)?;
    if let Some(at) = f.settid {
        // The kernel stored the child's real pid; the program saw its
        // recorded one.
        tracee.write_mem(at, &(f.recorded as u32).to_le_bytes())?;
    }
    let mut threads = HashMap::new();
    threads.insert(f.recorded, (f.real, At::Stopped { sig: 0 }));
    let own = ReplayOptions {
        dir: dir.to_path_buf(),
        ..opts.clone()
    };
    let events = EventReader::open(dir)?;
    let mut r = Replayer::streamed(&own, tracee, threads, events, 0, console, cpu);
    r.tree = true;
    r.queued = queued;
    r.blob_cache = blob_cache;
    // One store for the whole trace.
    r.blobs = opts.dir.join("blobs");
    // A child in its parent's memory uses no buffer of its own (the
    // recorder left the parent's to the parent).
    r.sbuf = parent_sbuf && !f.shares_memory;
    Ok(r)
}
