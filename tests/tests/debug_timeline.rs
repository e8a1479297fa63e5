//! The timeline of `rewind debug` against oracles: a forward single-step
//! trace of a recorded fixture (every instruction's registers) is walked
//! exactly backwards by reverse-stepi; reverse-continue lands on the last
//! arrival at a breakpoint the forward trace saw; going to a moment twice
//! gives identical registers. The same with five threads, going back from
//! in-memory snapshots of all of them, and over syscalls that waited (their
//! end applied later, when no instruction runs).

use std::collections::BTreeSet;

use rewind_debugger::timeline::{watch_slots, Moment, StopReason, Timeline, TimelineOptions};
use rewind_rr::replayer::{self, Console};
use rewind_rr::trace::format::Event;
use rewind_tests::*;

fn open(dir: &std::path::Path, opts: TimelineOptions) -> (Timeline, Sink) {
    let trace = replayer::load(dir).expect("load the trace");
    let out = Sink::default();
    let console = Console::new(Box::new(out.clone()), Box::new(Sink::default()));
    (
        Timeline::open(trace, console, opts).expect("open the timeline"),
        out,
    )
}

fn regs(t: &Timeline) -> Vec<u64> {
    rewind_ckpt::capture::regs_to_vec(&t.regs().expect("registers"))
}

/// The registers a thread shows the program: what the kernel keeps for
/// itself at a syscall stop (orig_rax, and rax before the result) aside.
fn program_regs(r: &[u64]) -> Vec<u64> {
    let mut r = r.to_vec();
    r[15] = 0; // orig_rax
    r
}

#[test]
fn reverse_stepi_walks_the_forward_trace_backwards() {
    let scratch = Scratch::new("rsi-walk");
    let rec = record(&scratch, &fixture("dbg_demo"), None);
    assert!(rec.status.success(), "{}", rec.stderr);
    let (mut t, _) = open(&rec.dir, TimelineOptions::default());

    // Forward: a stretch in the middle of the program (past the dynamic
    // loader, across syscalls and calls into libc).
    // (Start nine events before the end: the last write of the loop,
    // raise(), the handler, printf.)
    let start = Moment {
        event: t.events() - 9,
        path: vec![],
    };
    t.goto(&start).expect("goto");
    let n = 1500;
    let mut forward: Vec<(Moment, Vec<u64>)> = Vec::new();
    for _ in 0..n {
        forward.push((t.now().clone(), regs(&t)));
        assert_eq!(t.stepi().expect("stepi"), StopReason::Step);
    }
    let events_crossed = forward.last().map(|f| f.0.event).unwrap_or(0) - forward[0].0.event;
    assert!(
        events_crossed > 0,
        "the stretch should cross syscall events"
    );

    // Backward, one instruction at a time, over the last 1000 of them.
    for (i, (m, want)) in forward.iter().rev().take(1000).enumerate() {
        assert_eq!(t.reverse_stepi().expect("reverse-stepi"), StopReason::Step);
        let got = regs(&t);
        assert_eq!(
            program_regs(&got),
            program_regs(want),
            "reverse-stepi #{} should land where forward step {} was (moment {m}), at {}",
            i + 1,
            n - 1 - i,
            t.now()
        );
    }
    // Forward again reproduces the trace.
    let back = forward.len() - 1000;
    for (m, want) in &forward[back..back + 200] {
        assert_eq!(
            program_regs(&regs(&t)),
            program_regs(want),
            "forward again at {m}"
        );
        t.stepi().expect("stepi");
    }
}

#[test]
fn reverse_continue_lands_on_the_last_arrival() {
    let scratch = Scratch::new("rc-last");
    let rec = record(&scratch, &fixture("dbg_demo"), None);
    let (mut t, out) = open(&rec.dir, TimelineOptions::default());
    // Oracle: the forward run with breakpoints at two functions, every
    // arrival with its registers.
    let sym = |name: &str| symbol_address(&target("dbg_demo"), name);
    let (exe_base, _) = (0u64, 0u64);
    let _ = exe_base;
    // Stop at the program's first instruction, find where the executable
    // is loaded (PIE) from its entry point.
    let entry_bias = load_bias(&t);
    let bps: BTreeSet<u64> = [sym("sum_to") + entry_bias, sym("fact") + entry_bias]
        .into_iter()
        .collect();
    t.breakpoints = bps.clone();
    let mut hits: Vec<(Moment, Vec<u64>)> = Vec::new();
    loop {
        match t.cont(&mut |_, _| true).expect("continue") {
            StopReason::Breakpoint(a) => {
                assert!(bps.contains(&a));
                hits.push((t.now().clone(), regs(&t)));
            }
            StopReason::End => break,
            other => panic!("unexpected stop {other:?}"),
        }
    }
    assert_eq!(hits.len(), 5 + 6, "5 calls of sum_to, 6 of fact");
    assert_eq!(
        String::from_utf8_lossy(&out.0.borrow()),
        rec.stdout,
        "replay shows the program's output once, as recorded"
    );
    // Backward: each reverse-continue lands on the previous arrival.
    for (m, want) in hits.iter().rev() {
        match t.reverse_cont(&mut |_, _| true).expect("reverse-continue") {
            StopReason::Breakpoint(_) => {}
            other => panic!("expected a breakpoint, got {other:?}"),
        }
        assert_eq!(program_regs(&regs(&t)), program_regs(want), "at {m}");
    }
    assert_eq!(
        t.reverse_cont(&mut |_, _| true).expect("rc"),
        StopReason::Start
    );
    // A moment visited twice gives the same registers and memory.
    let (m, want) = &hits[7];
    t.goto(m).expect("goto");
    let first = regs(&t);
    assert_eq!(program_regs(&first), program_regs(want));
    t.goto(&Moment::default()).expect("goto start");
    t.goto(m).expect("goto again");
    assert_eq!(regs(&t), first);
}

fn load_bias(t: &Timeline) -> u64 {
    let pid = t.replayer().tracee().pid;
    let auxv = std::fs::read(format!("/proc/{pid}/auxv")).expect("auxv");
    let mut at_entry = 0;
    for w in auxv.chunks_exact(16) {
        let k = u64::from_le_bytes(w[..8].try_into().unwrap());
        let v = u64::from_le_bytes(w[8..].try_into().unwrap());
        if k == libc::AT_ENTRY {
            at_entry = v;
        }
    }
    at_entry - elf_entry(&target("dbg_demo"))
}

fn elf_entry(path: &std::path::Path) -> u64 {
    let data = std::fs::read(path).expect("read the fixture");
    u64::from_le_bytes(data[24..32].try_into().unwrap())
}

/// A symbol's address in the ELF file, from `nm`.
fn symbol_address(path: &std::path::Path, name: &str) -> u64 {
    let out = std::process::Command::new("nm")
        .arg(path)
        .output()
        .expect("nm");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (a, _, n) = (f.next()?, f.next()?, f.next()?);
            (n == name)
                .then(|| u64::from_str_radix(a, 16).ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("no symbol {name} in {}", path.display()))
}

/// Every thread's registers (recorded id, registers the program sees).
type AllThreads = Vec<(i32, Vec<u64>)>;

fn all_threads(t: &Timeline) -> AllThreads {
    t.replayer()
        .threads()
        .into_iter()
        .map(|(vtid, real)| {
            let r = rewind_ckpt::sys::ptrace::getregs(real).expect("thread registers");
            (vtid, program_regs(&rewind_ckpt::capture::regs_to_vec(&r)))
        })
        .collect()
}

/// A stop of a threaded replay: which thread stopped, every thread's
/// registers, and the memory near every thread's stack pointer with the
/// program's own data and heap (the moment itself may be spelled
/// differently when reached another way).
type ThreadedStop = (i32, AllThreads, u64);

fn threaded_stop(t: &Timeline) -> ThreadedStop {
    (t.thread(), all_threads(t), program_memory(t))
}

/// A hash of that memory.
fn program_memory(t: &Timeline) -> u64 {
    use std::hash::{DefaultHasher, Hasher};
    let tracee = t.replayer().tracee();
    let maps = rewind_ckpt::maps::read(tracee.pid).expect("maps");
    let mut ranges: Vec<(u64, u64)> = maps
        .iter()
        .filter(|m| m.prot & libc::PROT_WRITE as u32 != 0)
        .filter(|m| m.name == "[heap]" || m.name.ends_with("rr_threads_counters"))
        .map(|m| (m.start, m.end))
        .collect();
    for (_, r) in all_threads(t) {
        let sp = r[19];
        if let Some(m) = maps.iter().find(|m| m.start <= sp && sp < m.end) {
            ranges.push((
                sp.saturating_sub(32 << 10).max(m.start),
                (sp + (32 << 10)).min(m.end),
            ));
        }
    }
    let mut h = DefaultHasher::new();
    for (start, end) in ranges {
        let mut buf = vec![0u8; (end - start) as usize];
        tracee.read_mem(start, &mut buf).expect("read memory");
        h.write_u64(start);
        h.write(&buf);
    }
    h.finish()
}

#[test]
fn threaded_program_goes_back_through_snapshots() {
    let scratch = Scratch::new("rc-threads");
    let exe = target("rr_threads_counters");
    // Without the recorder's periodic checkpoints (every 5 s, so only when
    // recording is slow: a loaded machine), which going back prefers to an
    // older snapshot: the test is about snapshots.
    let rec = record_with(
        &scratch,
        &fixture("rr_threads_counters"),
        &["--checkpoint-interval", "0"],
        None,
    );
    assert!(rec.status.success(), "{}", rec.stderr);
    let opts = TimelineOptions {
        snapshot_interval: std::time::Duration::from_millis(5),
        ..TimelineOptions::default()
    };
    let (mut t, out) = open(&rec.dir, opts);
    // Oracle: the forward run, from the trace's initial image only, with a
    // breakpoint where every thread reports (say), and at the end of each
    // worker: every arrival with every thread's registers and the memory.
    let bias = load_bias_of(&t, &exe);
    let bps: BTreeSet<u64> = [
        symbol_address(&exe, "say") + bias,
        symbol_address(&exe, "worker") + bias,
    ]
    .into_iter()
    .collect();
    t.breakpoints = bps.clone();
    let mut hits: Vec<(Moment, ThreadedStop)> = Vec::new();
    loop {
        match t.cont(&mut |_, _| true).expect("continue") {
            StopReason::Breakpoint(a) => {
                assert!(bps.contains(&a));
                hits.push((t.now().clone(), threaded_stop(&t)));
            }
            StopReason::End => break,
            other => panic!("unexpected stop {other:?}"),
        }
    }
    assert_eq!(
        t.restores().images,
        1,
        "forward from the initial image only"
    );
    let threads_seen: BTreeSet<i32> = hits.iter().map(|h| h.1 .0).collect();
    assert_eq!(threads_seen.len(), 4, "every worker thread arrives");
    assert!(
        hits.iter().any(|h| h.1 .1.len() == 5),
        "arrivals while all five threads live"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.0.borrow()),
        rec.stdout,
        "replay shows the program's output once, as recorded"
    );
    assert!(
        t.snapshot_events().len() > 4,
        "snapshots of the threaded replay: {:?}",
        t.snapshot_events()
    );

    // Backward: every reverse-continue lands on the previous arrival, with
    // the same thread, every thread's registers and the same memory, and
    // goes back from in-memory snapshots, never from the trace's images.
    for (m, want) in hits.iter().rev() {
        match t.reverse_cont(&mut |_, _| true).expect("reverse-continue") {
            StopReason::Breakpoint(_) => {}
            other => panic!("expected a breakpoint, got {other:?}"),
        }
        assert_eq!(threaded_stop(&t), *want, "at {} (forward: {m})", t.now());
    }
    assert_eq!(
        t.reverse_cont(&mut |_, _| true).expect("rc"),
        StopReason::Start
    );
    let r = t.restores();
    assert!(r.snapshots > 10, "went back from snapshots: {r:?}");
    assert_eq!(r.images, 1, "never from the trace's images: {r:?}");

    // Forward single steps across thread switches and syscalls, from an
    // arrival in the middle; then reverse-stepi walks them back exactly.
    let mid = &hits[hits.len() / 2];
    t.goto(&mid.0).expect("goto");
    assert_eq!(threaded_stop(&t), mid.1, "goto an arrival");
    let n = 800;
    let mut forward: Vec<(Moment, i32, Vec<u64>)> = Vec::new();
    for _ in 0..n {
        forward.push((t.now().clone(), t.thread(), program_regs(&regs(&t))));
        assert_eq!(t.stepi().expect("stepi"), StopReason::Step);
    }
    let first_event = forward[0].0.event;
    assert!(
        forward.last().is_some_and(|f| f.0.event > first_event),
        "the stretch crosses events"
    );
    for (i, (m, tid, want)) in forward.iter().rev().take(500).enumerate() {
        assert_eq!(t.reverse_stepi().expect("reverse-stepi"), StopReason::Step);
        assert_eq!(
            (t.thread(), program_regs(&regs(&t))),
            (*tid, want.clone()),
            "reverse-stepi #{} should land where forward step {} was (moment {m}), at {}",
            i + 1,
            n - 1 - i,
            t.now()
        );
    }
    assert_eq!(t.restores().images, 1, "{:?}", t.restores());
}

/// A syscall that may block is logged twice: `Enter` where its thread went
/// into the kernel, and `Syscall` with its result where it came back (the
/// schedule decides what runs between). Replay applies that end without
/// running an instruction, so forward stepi passes its boundary without
/// stopping there; reverse-stepi must land on the stops forward stepi made
/// (the thread that executed the instruction, in the same state), never on
/// such a boundary. In this program, whatever the schedule, the main thread
/// sleeps while the reader waits for the pipe, and the reader waits while
/// the main thread writes to it and joins it.
#[test]
fn reverse_stepi_walks_back_over_syscalls_that_waited() {
    let scratch = Scratch::new("rsi-waited");
    let rec = record(&scratch, &fixture("dbg_blocking"), None);
    assert!(rec.status.success(), "{}", rec.stderr);
    let opts = TimelineOptions {
        snapshot_interval: std::time::Duration::from_millis(5),
        ..TimelineOptions::default()
    };
    let (mut t, _) = open(&rec.dir, opts);
    // The syscalls that waited, from the trace: (index of their Enter,
    // index of their end, whether another thread's event came between).
    let events: Vec<_> = (0..t.events() as usize)
        .map(|i| t.trace().events.get(i).expect("an event of the trace"))
        .collect();
    let mut waited: Vec<(usize, usize, bool)> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let Event::Enter { tid, nr, .. } = **e else {
            continue;
        };
        let end = events[i + 1..].iter().position(
            |e| matches!(**e, Event::Syscall { tid: t, nr: n, .. } if t == tid && n == nr),
        );
        if let Some(k) = end {
            let j = i + 1 + k;
            let others = events[i + 1..j].iter().any(|e| e.tid() != tid);
            waited.push((i, j, others));
        }
    }
    // Those while another thread ran (the dynamic loader's opens, before,
    // wait alone).
    waited.retain(|w| w.2);
    assert!(
        waited.len() >= 2,
        "syscalls that waited while another thread ran: {waited:?}"
    );
    let first = waited.iter().map(|w| w.0).min().unwrap_or(0) as u64;
    let last = waited.iter().map(|w| w.1).max().unwrap_or(0) as u64;

    // Forward: from just before the first of them to just after the last.
    t.goto(&Moment {
        event: first,
        path: vec![],
    })
    .expect("goto");
    assert_eq!(t.stepi().expect("stepi"), StopReason::Step);
    // With the byte the reader's read() gets, at every step.
    let exe = target("dbg_blocking");
    let received = symbol_address(&exe, "received") + load_bias_of(&t, &exe);
    let byte = |t: &Timeline| t.watched_bytes(&watch_slots(received, 1, false)[0]);
    let mut forward: Vec<(Moment, i32, AllThreads)> = Vec::new();
    let mut bytes = Vec::new();
    while t.now().event <= last + 1 {
        assert!(forward.len() < 200_000, "the stretch never ends");
        forward.push((t.now().clone(), t.thread(), all_threads(&t)));
        bytes.push(byte(&t));
        assert_eq!(t.stepi().expect("stepi"), StopReason::Step);
    }
    // No instruction leads to where a waiting syscall ends: stepi goes on.
    let stops_at: BTreeSet<u64> = forward
        .iter()
        .filter(|f| f.0.path.is_empty())
        .map(|f| f.0.event)
        .collect();
    for &(_, j, _) in &waited {
        let end = j as u64 + 1;
        assert!(
            !stops_at.contains(&end),
            "forward stepi stopped at event {end}, where a waiting syscall ended"
        );
    }

    // Backward, every instruction of it.
    for (i, (m, tid, want)) in forward.iter().rev().enumerate() {
        assert_eq!(t.reverse_stepi().expect("reverse-stepi"), StopReason::Step);
        assert_eq!(
            (t.thread(), all_threads(&t)),
            (*tid, want.clone()),
            "reverse-stepi #{} should land where forward step {} was (moment {m}), at {}",
            i + 1,
            forward.len() - 1 - i,
            t.now()
        );
    }

    // A watchpoint on the byte, going back from the end of the stretch:
    // the kernel wrote it at the end of the read, which no instruction led
    // to; the stop before that change is the forward step whose stepi made
    // it.
    let changed = bytes
        .windows(2)
        .position(|w| w[0] != w[1])
        .expect("the read's byte arrives in the stretch");
    assert_eq!(
        bytes[changed + 1],
        Some(b"x".to_vec()),
        "the byte main writes"
    );
    t.goto(&forward[forward.len() - 1].0).expect("goto");
    t.watches = watch_slots(received, 1, false);
    assert_eq!(
        t.reverse_cont_to(&mut |_, _| true)
            .expect("reverse-continue"),
        StopReason::Watch(t.watches[0])
    );
    let (m, tid, want) = &forward[changed];
    assert_eq!(
        (t.thread(), all_threads(&t), byte(&t)),
        (*tid, want.clone(), bytes[changed].clone()),
        "a reverse watchpoint should stop where forward step {changed} was (moment {m}), at {}",
        t.now()
    );
}

fn load_bias_of(t: &Timeline, exe: &std::path::Path) -> u64 {
    let pid = t.replayer().tracee().pid;
    let auxv = std::fs::read(format!("/proc/{pid}/auxv")).expect("auxv");
    let at_entry = auxv
        .chunks_exact(16)
        .find(|w| u64::from_le_bytes(w[..8].try_into().unwrap()) == libc::AT_ENTRY)
        .map(|w| u64::from_le_bytes(w[8..].try_into().unwrap()))
        .expect("AT_ENTRY");
    at_entry - elf_entry(exe)
}
