//! The timeline of `rewind debug` against oracles: a forward single-step
//! trace of a recorded fixture (every instruction's registers) is walked
//! exactly backwards by reverse-stepi; reverse-continue lands on the last
//! arrival at a breakpoint the forward trace saw; going to a moment twice
//! gives identical registers.

use std::collections::BTreeSet;

use rewind_debugger::timeline::{Moment, StopReason, Timeline, TimelineOptions};
use rewind_rr::replayer::{self, Console};
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
