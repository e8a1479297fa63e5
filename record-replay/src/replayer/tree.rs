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
    let cpu = header.cpu as usize;
    let (tracee, threads) = start(&opts.dir.join("initial.rwd"), cpu)?;
    let console = Console::new(Box::new(out), Box::new(err));
    let events = EventReader::open(&opts.dir)?;
    let mut root = Replayer::streamed(opts, tracee, threads, events, 0, console, cpu);
    root.tree = true;
    let mut procs: HashMap<i32, Replayer> = HashMap::new();
    procs.insert(schedule.root, root);
    // On an error every replayer is dropped, which kills its process.
    run(opts, schedule, &mut procs)?;
    let mut events = 0;
    for (&pid, r) in &procs {
        events += r.event;
        let end = if pid == schedule.root {
            end.clone()
        } else {
            trace::read_end(&r.dir)?
        };
        let exit_code = r.exit.unwrap_or(0);
        match end {
            None => {
                return Err(TraceError::Truncated {
                    path: r.dir.join("events"),
                    what: format!(
                        "trace: no end record of process {pid} after {} events (replayed that far)",
                        r.event
                    ),
                }
                .into())
            }
            Some(end) if end.exit_code != exit_code => {
                return Err(Error::Divergence {
                    event: r.event,
                    tid: pid,
                    what: format!(
                        "process {pid} ended with status {exit_code}, the recording with {}",
                        end.exit_code
                    ),
                })
            }
            Some(_) => {}
        }
    }
    Ok(Replayed {
        events,
        exit_code: procs.get(&schedule.root).and_then(|r| r.exit).unwrap_or(0),
    })
}

/// Apply every event in the schedule's order, making processes as the
/// events say; then every process ends, without another event.
fn run(
    opts: &ReplayOptions,
    schedule: &Schedule,
    procs: &mut HashMap<i32, Replayer<'_>>,
) -> Result<(), Error> {
    let corrupt = |why: String| TraceError::Corrupt {
        path: opts.dir.join("schedule"),
        what: "schedule".into(),
        why,
    };
    for &(pid, upto) in &schedule.runs {
        let r = procs.get_mut(&pid).ok_or_else(|| {
            corrupt(format!(
                "process {pid} runs before it was made (no fork event made it)"
            ))
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
        for f in made {
            let dir = trace::process_dir(&opts.dir, f.recorded, schedule.root);
            let child = adopt(opts, &dir, f, sbuf, shared.clone(), cpu)?;
            procs.insert(f.recorded, child);
        }
    }
    for r in procs.values_mut() {
        if r.exit.is_none() {
            r.finish()?;
        }
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
