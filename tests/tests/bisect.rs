//! `rewind bisect`, `bisect` and `reverse-watch` end to end, on fixtures
//! with planted bugs (tests/targets/dbg_bugs.c) and python3. The oracle is
//! a brute-force forward search over the same recording: one run from the
//! beginning with a hardware watchpoint on the memory the predicate reads,
//! judging it at every change; bisect must land on the very same moment
//! (same event, same registers).

use std::path::Path;

use rewind_debugger::inspect::{self, Program};
use rewind_debugger::repl::Now;
use rewind_debugger::timeline::{watch_slots, Moment, StopReason, Timeline, TimelineOptions};
use rewind_rr::replayer::{self, Console};
use rewind_tests::*;

fn open(dir: &Path) -> (Timeline, Sink) {
    let trace = replayer::load(dir).expect("load the trace");
    let out = Sink::default();
    let console = Console::new(Box::new(out.clone()), Box::new(out.clone()));
    let tl = Timeline::open(trace, console, TimelineOptions::default()).expect("open");
    (tl, out)
}

fn exe_of(tl: &Timeline) -> std::path::PathBuf {
    let pid = tl.replayer().tracee().pid;
    std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe")
}

/// Evaluate `expr` at the timeline's moment: (truth, value, address and
/// size when it is an lvalue).
fn eval(tl: &Timeline, prog: &mut Program, exe: &Path, expr: &str) -> (bool, Option<(u64, u64)>) {
    let now = Now { tl, exe };
    let _ = prog.refresh(&now);
    match inspect::evaluate(expr, prog, &now, 0) {
        Ok(v) => (
            prog.value_is_true(&v).unwrap_or(false),
            v.address().map(|a| (a, v.bytes().len() as u64)),
        ),
        Err(_) => (false, None),
    }
}

fn regs(tl: &Timeline) -> Vec<u64> {
    let mut r = rewind_ckpt::capture::regs_to_vec(&tl.regs().expect("registers"));
    r[15] = 0; // orig_rax: the kernel's own
    r
}

/// The oracle: from the beginning, forward with watchpoints on `lvalues`
/// (as they are at the end of history), the first stop where `pred`
/// holds. Returns the timeline there.
fn brute_force(dir: &Path, lvalues: &[&str], pred: &str) -> Timeline {
    let (mut tl, _) = open(dir);
    let exe = exe_of(&tl);
    let mut prog = Program::new();
    assert_eq!(
        tl.cont(&mut |_, _| false).expect("to the end"),
        StopReason::End
    );
    let mut watches = Vec::new();
    for lv in lvalues {
        let (_, at) = eval(&tl, &mut prog, &exe, lv);
        let (addr, len) = at.unwrap_or_else(|| panic!("{lv} is not an lvalue at the end"));
        watches.extend(watch_slots(addr, len, false));
    }
    tl.goto(&Moment::default()).expect("back to the start");
    tl.watches = watches;
    loop {
        match tl.cont(&mut |_, _| false).expect("continue") {
            StopReason::Watch(_) => {
                if eval(&tl, &mut prog, &exe, pred).0 {
                    return tl;
                }
            }
            r => panic!("brute force: {pred} never held (stopped: {r:?})"),
        }
    }
}

/// `rewind bisect --trace DIR ARGS... --json`, parsed.
fn bisect(dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec![
        "bisect",
        "--trace",
        dir.to_str().expect("utf-8 path"),
        "--json",
    ];
    all.extend_from_slice(args);
    let done = rewind_in(dir.parent().unwrap_or(dir), &all);
    assert!(done.status.success(), "{}", done.describe());
    serde_json::from_str(&done.stdout).unwrap_or_else(|e| panic!("{e}: {}", done.stdout))
}

/// The line of dbg_bugs.c that contains `marker`.
fn line_of(marker: &str) -> u64 {
    let src =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("targets/dbg_bugs.c"))
            .expect("fixture source");
    src.lines()
        .position(|l| l.contains(marker))
        .map(|i| i as u64 + 1)
        .unwrap_or_else(|| panic!("no {marker:?} in dbg_bugs.c"))
}

/// Whether the bisect result's moment is the oracle's: same event, same
/// registers.
fn assert_same_moment(dir: &Path, found: &serde_json::Value, oracle: &mut Timeline) {
    let m: Moment = found["moment"]
        .as_str()
        .expect("moment")
        .parse()
        .expect("a moment");
    let (mut tl, _) = open(dir);
    tl.goto(&m).expect("go to the found moment");
    assert_eq!(
        m.event,
        oracle.now().event,
        "bisect found {m}, the forward search {}",
        oracle.now()
    );
    assert_eq!(
        regs(&tl),
        regs(oracle),
        "registers at {m} vs {}",
        oracle.now()
    );
}

#[test]
fn an_overflow_at_iteration_700000_of_a_million_is_found_exactly() {
    let scratch = Scratch::new("bisect-overflow");
    let rec = record(
        &scratch,
        fixture("dbg_bugs").args(["overflow", "700000", "1000000", "100000"]),
        None,
    );
    let pred = "g.sentinel != 0x5eed";
    let found = bisect(&rec.dir, &["--until", pred]);
    let mut oracle = brute_force(&rec.dir, &["g.sentinel"], pred);
    assert_same_moment(&rec.dir, &found, &mut oracle);
    assert_eq!(found["cause"]["line"], line_of("g.buf[k] +="), "{found:#}");
    assert!(
        found["old"].as_str().unwrap_or("").contains("= 24301"),
        "{found:#}"
    );
    assert!(found["probes"].as_u64().unwrap_or(99) <= 30, "{found:#}");
    assert!(
        found["backtrace"][0]
            .as_str()
            .unwrap_or("")
            .contains("overflow ("),
        "{found:#}"
    );
}

#[test]
fn a_use_after_free_is_traced_to_the_new_owner_forward_and_backward() {
    let scratch = Scratch::new("bisect-uaf");
    let rec = record(&scratch, fixture("dbg_bugs").arg("uaf"), None);
    let pred = "stale->value != 1";
    let found = bisect(&rec.dir, &["--until", pred]);
    let mut oracle = brute_force(&rec.dir, &["stale", "stale->value"], pred);
    assert_same_moment(&rec.dir, &found, &mut oracle);
    assert_eq!(
        found["cause"]["line"],
        line_of("b->value = 99"),
        "{found:#}"
    );

    // The last change of the value, backward: just before the same write
    // (one instruction before the forward search's stop).
    let changed = bisect(&rec.dir, &["--changes", "stale->value"]);
    oracle.reverse_stepi().expect("reverse-stepi");
    assert_same_moment(&rec.dir, &changed, &mut oracle);
    assert_eq!(changed["old"], "1", "{changed:#}");
    assert_eq!(changed["new"], "99", "{changed:#}");
}

#[test]
fn a_wrong_value_deep_in_a_recursion_is_found_with_its_stack() {
    let scratch = Scratch::new("bisect-recurse");
    let rec = record(&scratch, fixture("dbg_bugs").arg("recurse"), None);
    let pred = "memo[13] != 0 && memo[13] != 233";
    let found = bisect(&rec.dir, &["--until", pred]);
    let mut oracle = brute_force(&rec.dir, &["memo[13]"], pred);
    assert_same_moment(&rec.dir, &found, &mut oracle);
    let bt: Vec<String> = found["backtrace"]
        .as_array()
        .expect("a backtrace")
        .iter()
        .map(|f| f.as_str().unwrap_or("").to_string())
        .collect();
    assert!(bt[0].contains("fib (n=13)"), "{bt:#?}");
    assert_eq!(
        bt.iter().filter(|f| f.contains(" fib (n=")).count(),
        13,
        "{bt:#?}"
    );
}

#[test]
fn another_thread_corrupting_a_value_is_named() {
    let scratch = Scratch::new("bisect-threads");
    let rec = record(&scratch, fixture("dbg_bugs").args(["threads", "150"]), None);
    let pred = "shared.value < 0";
    let found = bisect(&rec.dir, &["--until", pred]);
    let mut oracle = brute_force(&rec.dir, &["shared.value"], pred);
    assert_same_moment(&rec.dir, &found, &mut oracle);
    assert!(
        found["backtrace"][0]
            .as_str()
            .unwrap_or("")
            .contains("corruptor"),
        "{found:#}"
    );
    assert_eq!(
        found["cause"]["line"],
        line_of("shared.value = -1;"),
        "{found:#}"
    );
}

#[test]
fn a_value_a_blocked_syscall_wrote_is_traced_to_that_syscall() {
    // The reader thread's read() waits while the main thread runs; the byte
    // lands where the read ends, an event no instruction leads to (the
    // reader waited at the syscall), not by the instruction of the step
    // that passes it.
    let scratch = Scratch::new("bisect-blocked");
    let rec = record(&scratch, &fixture("dbg_blocking"), None);
    assert!(rec.status.success(), "{}", rec.stderr);
    let changed = bisect(&rec.dir, &["--changes", "received"]);
    // Oracle: the trace, where the read's result and the byte it wrote are.
    let trace = replayer::load(&rec.dir).expect("load the trace");
    let read = (0..trace.events.len())
        .find(|&i| {
            matches!(
                trace.events.get(i).as_deref(),
                Some(rewind_rr::trace::format::Event::Syscall { nr: libc::SYS_read, ret: 1, writes, .. })
                    if writes.iter().any(|w| w.1 == b"x")
            )
        })
        .expect("the read of the byte in the trace");
    assert_eq!(changed["cause"]["kind"], "event", "{changed:#}");
    assert_eq!(changed["cause"]["index"], read, "{changed:#}");
    assert!(
        changed["cause"]["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("the read syscall")),
        "{changed:#}"
    );
    assert!(
        changed["new"].as_str().is_some_and(|v| v.contains("'x'")),
        "{changed:#}"
    );
}

#[test]
fn python3_output_is_traced_to_the_write_that_printed_it() {
    let scratch = Scratch::new("bisect-python");
    let script = scratch.write(
        "steps.py",
        "total = 0\nfor i in range(60):\n    total += i * i\n    status = 'BAD' if i == 37 else 'ok'\n    print(f'step {i}: {status} {total}', flush=True)\n",
    );
    // The system's python3 itself (a pyenv shim on PATH would be bash
    // exec'ing python through helper processes).
    let py = Path::new("/usr/bin/python3");
    let mut cmd = if py.is_file() {
        std::process::Command::new(py)
    } else {
        python3()
    };
    let rec = record(&scratch, cmd.arg(&script), None);
    let found = bisect(&rec.dir, &["--output", "step [0-9]+: BAD"]);
    // Oracle: plain replay, event by event, until the output shows it.
    let trace = replayer::load(&rec.dir).expect("load the trace");
    let out = Sink::default();
    let console = Console::new(Box::new(out.clone()), Box::new(out.clone()));
    let mut rep = replayer::Replayer::open(&trace, "initial.rwd", 0, console).expect("replay");
    let mut e = 0;
    while !String::from_utf8_lossy(&out.0.borrow()).contains(": BAD") {
        match rep.advance().expect("advance") {
            replayer::Advance::Event { .. } => e = rep.event(),
            other => panic!("replay stopped: {other:?}"),
        }
    }
    assert_eq!(found["event"], e, "{found:#}");
    assert!(
        found["new"].as_str().unwrap_or("").contains("step 37: BAD"),
        "{found:#}"
    );
    let bt = found["backtrace"].to_string();
    assert!(bt.contains("write"), "{found:#}");
}

#[test]
fn a_python_check_reading_core_files_with_gdb_finds_the_same_moment() {
    let scratch = Scratch::new("bisect-check");
    let rec = record(
        &scratch,
        fixture("dbg_bugs").args(["overflow", "7000", "10000", "500"]),
        None,
    );
    let check = scratch.write(
        "check.py",
        "import os, subprocess, sys\n\
         out = subprocess.run(['gdb', '-batch', '-nx', os.environ['REWIND_EXE'], os.environ['REWIND_CORE'],\n\
                               '-ex', 'print/x g.sentinel'], capture_output=True, text=True).stdout\n\
         value = out.strip().splitlines()[-1].split('=')[-1].strip()\n\
         sys.exit(0 if value != '0x5eed' else 1)\n",
    );
    let cmd = format!("python3 {}", check.display());
    let found = bisect(&rec.dir, &["--check", &cmd]);
    let mut oracle = brute_force(&rec.dir, &["g.sentinel"], "g.sentinel != 0x5eed");
    assert_same_moment(&rec.dir, &found, &mut oracle);
    assert_eq!(found["cause"]["line"], line_of("g.buf[k] +="), "{found:#}");
}

#[test]
fn the_repl_bisects_reverse_watches_and_writes_cores() {
    let scratch = Scratch::new("bisect-repl");
    let rec = record(
        &scratch,
        fixture("dbg_bugs").args(["overflow", "7000", "10000", "500"]),
        None,
    );
    let core = scratch.join("moment.core");
    let cmds = [
        "continue",
        "bisect g.sentinel != 0x5eed",
        "print/x g.sentinel",
        format!("gcore {}", core.display()).leak(),
        "reverse-watch g.sentinel",
        "print/x g.sentinel",
        "stepi",
        "print/x g.sentinel",
    ];
    let mut args = vec![
        "debug",
        "--trace",
        rec.dir.to_str().expect("utf-8"),
        "--batch",
    ];
    for c in &cmds {
        args.extend(["--ex", c]);
    }
    let done = rewind_in(scratch.path(), &args);
    assert!(done.status.success(), "{}", done.describe());
    let values: Vec<&str> = done.stdout.lines().filter(|l| l.starts_with('$')).collect();
    assert_eq!(values.len(), 3, "{}", done.describe());
    // Stopped just after the write; the reverse watchpoint just before it;
    // one instruction on, the write again.
    assert!(values[0].ends_with("= 0x5eee"), "{values:?}");
    assert!(values[1].ends_with("= 0x5eed"), "{values:?}");
    assert!(values[2].ends_with("= 0x5eee"), "{values:?}");
    assert!(
        done.stdout
            .contains(&format!("Saved corefile {}", core.display())),
        "{}",
        done.describe()
    );
    let gdb = std::process::Command::new("gdb")
        .args(["-batch", "-nx"])
        .arg(target("dbg_bugs"))
        .arg(&core)
        .args(["-ex", "print/x g.sentinel"])
        .output()
        .expect("gdb runs");
    let text = String::from_utf8_lossy(&gdb.stdout);
    assert!(
        text.trim_end().ends_with("= 0x5eee"),
        "gdb on the core: {text}"
    );
}

#[test]
fn predicates_that_cannot_be_bisected_get_clear_errors() {
    let scratch = Scratch::new("bisect-errors");
    let rec = record(&scratch, fixture("dbg_bugs").arg("uaf"), None);
    let dir = rec.dir.to_str().expect("utf-8");
    let cases: [(&[&str], &str, i32); 6] = [
        (&["--until", "stale == 0"], "not true at the end", 1),
        (
            &["--until", "memo[0] == 0"],
            "already true at the beginning",
            1,
        ),
        (&["--until", "no_such_symbol > 1"], "not true at the end", 1),
        (&["--output", "(unclosed"], "bad regex", 1),
        (&["--output", "never printed"], "never matches", 1),
        (&[], "required", 2),
    ];
    for (args, message, code) in cases {
        let mut all = vec!["bisect", "--trace", dir];
        all.extend_from_slice(args);
        let done = rewind_in(scratch.path(), &all);
        assert_eq!(done.status.code(), Some(code), "{}", done.describe());
        assert!(
            done.stderr.contains(message),
            "{args:?}: {}",
            done.describe()
        );
        assert!(!done.stderr.contains("panicked"), "{}", done.describe());
    }
}
