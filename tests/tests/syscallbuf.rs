//! The in-process syscall buffer of `rewind record --syscallbuf` (issue 3): common syscalls
//! (reads and writes of regular files, lseek, fstat/newfstatat, clock_gettime, gettimeofday,
//! getpid, reads of /dev/urandom) made without a ptrace stop, logged in chunks, fed back by replay.
//! Oracles: the native run (deterministic lines), the recorded run itself (replay prints exactly
//! what it printed, twice, with `--verify` register checksums at every event), and the same
//! program recorded without the buffer, every syscall stopped (the buffer must cut the event
//! count).

use std::fs;
use std::path::Path;

use rewind_tests::*;

/// `rewind record`'s event count, from its summary line.
fn events(recorded: &Recorded) -> u64 {
    recorded
        .stderr
        .split_whitespace()
        .skip_while(|w| *w != "recorded")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no event count in:\n{}", recorded.describe()))
}

fn sbuf_io(dir: &Path, mode: &str, n: u32) -> std::process::Command {
    let mut program = fixture("sbuf_io");
    program.arg(dir).arg(mode).arg(n.to_string());
    program
}

/// The lines of `text` that start with `prefix`.
fn lines(text: &str, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn buffered_io_replays_as_recorded_with_far_fewer_events() {
    let scratch = Scratch::new("buffered_io_replays_as_recorded_with_far_fewer_events");
    let program = sbuf_io(scratch.path(), "io", 20000);
    let native = run_natively(&scratch, &program, None);
    native.assert_success();
    let recorded = record_with(&scratch, &program, &["--syscallbuf"], None);
    assert!(recorded.status.success(), "{}", recorded.describe());
    // The computed sum is deterministic: the recording did not change what the program read.
    assert_eq!(
        lines(&recorded.stdout, "sum "),
        lines(&native.stdout, "sum "),
        "{}",
        recorded.describe()
    );
    let unbuffered = record_with(&scratch, &program, &["--no-syscallbuf"], None);
    assert!(unbuffered.status.success(), "{}", unbuffered.describe());
    let (with, without) = (events(&recorded), events(&unbuffered));
    // 20000 preads, 4096 writes, ~300 each of lseek+read, clock_gettime, gettimeofday, getpid.
    assert!(
        without > 20000 && with * 10 < without,
        "buffered: {with} events, without --syscallbuf: {without}: the buffer took too few calls"
    );
    recorded.assert_replays_as_recorded(&["--verify"]);
    recorded.assert_replays_as_recorded(&["--verify"]);
    unbuffered.assert_replays_as_recorded(&["--verify"]);
}

#[test]
fn buffered_io_replays_with_memory_checksums() {
    let scratch = Scratch::new("buffered_io_replays_with_memory_checksums");
    let program = sbuf_io(scratch.path(), "io", 3000);
    let recorded = record_with(
        &scratch,
        &program,
        &["--syscallbuf", "--verify=memory"],
        None,
    );
    assert!(recorded.status.success(), "{}", recorded.describe());
    recorded.assert_replays_as_recorded(&["--verify=memory"]);
    recorded.assert_replays_as_recorded(&["--verify=memory"]);
}

#[test]
fn buffered_io_under_a_sigalrm_storm_replays_as_recorded() {
    let scratch = Scratch::new("buffered_io_under_a_sigalrm_storm_replays_as_recorded");
    let program = sbuf_io(scratch.path(), "alarm", 20000);
    let native = run_natively(&scratch, &program, None);
    native.assert_success();
    let recorded = record_with(&scratch, &program, &["--syscallbuf"], None);
    assert!(recorded.status.success(), "{}", recorded.describe());
    let alarms: u64 = lines(&recorded.stdout, "alarms: ")
        .first()
        .and_then(|l| l["alarms: ".len()..].parse().ok())
        .unwrap_or(0);
    assert!(
        alarms > 10,
        "the recorded run got {alarms} SIGALRMs: the storm did not hit the buffered calls\n{}",
        recorded.describe()
    );
    assert_eq!(
        lines(&recorded.stdout, "sum "),
        lines(&native.stdout, "sum ")
    );
    // Each alarm's handler reads /dev/urandom and writes a file (buffered) and reads the clock.
    recorded.assert_replays_as_recorded(&["--verify"]);
    recorded.assert_replays_as_recorded(&["--verify"]);
}

#[test]
fn buffered_io_in_four_threads_replays_as_recorded() {
    let scratch = Scratch::new("buffered_io_in_four_threads_replays_as_recorded");
    let program = sbuf_io(scratch.path(), "threads", 10000);
    let native = run_natively(&scratch, &program, None);
    native.assert_success();
    let recorded = record_with(&scratch, &program, &["--syscallbuf"], None);
    assert!(recorded.status.success(), "{}", recorded.describe());
    for prefix in ["all: ", "thread "] {
        assert_eq!(
            lines(&recorded.stdout, prefix),
            lines(&native.stdout, prefix),
            "{}",
            recorded.describe()
        );
    }
    recorded.assert_replays_as_recorded(&["--verify"]);
    recorded.assert_replays_as_recorded(&["--verify"]);
}

#[test]
fn buffered_io_after_an_exec_replays_as_recorded() {
    let scratch = Scratch::new("buffered_io_after_an_exec_replays_as_recorded");
    let mut program = system_program("sh");
    program.arg("-c").arg(format!(
        "exec {} {} io 5000",
        target("sbuf_io").display(),
        scratch.path().display()
    ));
    let recorded = record_with(&scratch, &program, &["--syscallbuf"], None);
    assert!(
        recorded.status.success() && recorded.stdout.contains("sum "),
        "{}",
        recorded.describe()
    );
    recorded.assert_replays_as_recorded(&["--verify"]);
    recorded.assert_replays_as_recorded(&["--verify"]);
}

#[test]
fn replay_from_a_checkpoint_taken_between_buffered_calls() {
    let scratch = Scratch::new("replay_from_a_checkpoint_taken_between_buffered_calls");
    let program = sbuf_io(scratch.path(), "io", 400000);
    let recorded = record_with(
        &scratch,
        &program,
        &["--syscallbuf", "--checkpoint-interval", "0.1"],
        None,
    );
    assert!(recorded.status.success(), "{}", recorded.describe());
    let checkpoints = fs::read_dir(&recorded.dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ckpt-"))
        .count();
    assert!(
        checkpoints >= 1,
        "no periodic checkpoint in the trace:\n{}",
        recorded.describe()
    );
    // From late in the trace: the lines printed at the end, exactly.
    let from = replay(
        &recorded.dir,
        &["--from", &(events(&recorded) - 2).to_string()],
    );
    from.assert_success();
    let tail: Vec<&str> = recorded
        .stdout
        .lines()
        .rev()
        .take(from.stdout.lines().count())
        .collect();
    let got: Vec<&str> = from.stdout.lines().rev().collect();
    assert!(
        !got.is_empty() && got == tail && from.stdout.contains("sum "),
        "replay --from printed\n{}\nnot the end of what the recording printed:\n{}",
        from.stdout,
        recorded.stdout
    );
    recorded.assert_replays_as_recorded(&[]);
}

#[test]
fn corrupt_buffered_chunk_fails_clearly() {
    let scratch = Scratch::new("corrupt_buffered_chunk_fails_clearly");
    let program = sbuf_io(scratch.path(), "io", 20000);
    let recorded = record_with(&scratch, &program, &["--syscallbuf"], None);
    recorded.assert_replays_as_recorded(&[]);
    let log = recorded.dir.join("events");
    let mut bytes = fs::read(&log).unwrap();
    // Most of the log is buffered records (20000 preads of 16 bytes each).
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 16] {
        *byte ^= 0x5a;
    }
    fs::write(&log, bytes).unwrap();
    let replayed = recorded.replay(&[]);
    assert_fails_clearly(&replayed, &["chunk", "corrupt"]);
}

#[test]
fn python3_small_reads_and_stats_replay_with_the_buffer() {
    const SCRIPT: &str = r#"
import os, sys, time
path = sys.argv[1]
with open(path, "wb") as f:
    for i in range(2000):
        f.write(bytes([i % 256]) * 16)
total = 0
with open(path, "rb", buffering=0) as f:
    while True:
        b = f.read(16)
        if not b:
            break
        total += b[0]
sizes = sum(os.stat(path).st_size for _ in range(2000))
print("total:", total, "sizes:", sizes)
print("time:", time.time(), "pid:", os.getpid())
"#;
    let scratch = Scratch::new("python3_small_reads_and_stats_replay_with_the_buffer");
    let mut program = python3_interpreter();
    program.arg("-c").arg(SCRIPT).arg(scratch.join("data.bin"));
    let recorded = record_with(&scratch, &program, &["--syscallbuf"], None);
    assert!(
        recorded.status.success() && recorded.stdout.contains("total: 250008 sizes: 64000000"),
        "{}",
        recorded.describe()
    );
    let unbuffered = record_with(&scratch, &program, &["--no-syscallbuf"], None);
    assert!(
        events(&recorded) * 2 < events(&unbuffered),
        "python3: {} events buffered, {} without --syscallbuf",
        events(&recorded),
        events(&unbuffered)
    );
    recorded.assert_replays_as_recorded(&["--verify"]);
    recorded.assert_replays_as_recorded(&["--verify"]);
}

#[test]
fn vfork_children_making_buffered_calls_replay_as_recorded() {
    // A vfork child runs in the parent's memory, where the buffer is, until it exits: its calls
    // must not land in the parent's buffer (replay would find records the parent never made).
    let scratch = Scratch::new("vfork_children_making_buffered_calls_replay_as_recorded");
    let program = sbuf_io(scratch.path(), "vfork", 50);
    let recorded = record_with(&scratch, &program, &["--syscallbuf"], None);
    assert!(
        recorded.status.success() && recorded.stdout.contains("vfork children: 50"),
        "{}",
        recorded.describe()
    );
    recorded.assert_replays_as_recorded(&["--verify"]);
    recorded.assert_replays_as_recorded(&["--verify"]);
}

#[test]
fn python3_spawning_children_with_vfork_replays_with_the_buffer() {
    // subprocess spawns with vfork, the child running in the parent's memory until it execs.
    const SCRIPT: &str = r#"
import os, subprocess, sys
path = sys.argv[1]
for i in range(5):
    with open(path, "wb") as f:
        f.write(os.urandom(64))
    out = subprocess.run(["cat", path], capture_output=True, check=True).stdout
    print(i, len(out), out[:8].hex(), os.stat(path).st_size)
"#;
    let scratch = Scratch::new("python3_spawning_children_with_vfork_replays_with_the_buffer");
    let mut program = python3_interpreter();
    program.arg("-c").arg(SCRIPT).arg(scratch.join("data.bin"));
    let recorded = record_with(&scratch, &program, &["--syscallbuf"], None);
    assert!(
        recorded.status.success() && recorded.stdout.lines().count() == 5,
        "{}",
        recorded.describe()
    );
    recorded.assert_replays_as_recorded(&["--verify"]);
    recorded.assert_replays_as_recorded(&["--verify"]);
}

#[test]
fn debugging_backwards_through_buffered_syscalls_stops_where_the_unbuffered_trace_does() {
    // dbg_syscalls: 3000 preads and clock reads, hit() every 500 iterations. The same debugger
    // session (breakpoints forward, reverse-continue back, a reverse watchpoint) on a trace made
    // with the buffer and one made without must print the same values: the oracle is the
    // unbuffered trace, where every syscall is an event.
    let scratch = Scratch::new("debugging_backwards_through_buffered_syscalls");
    let buffered = record_with(&scratch, &fixture("dbg_syscalls"), &["--syscallbuf"], None);
    let plain = record_with(
        &scratch,
        &fixture("dbg_syscalls"),
        &["--no-syscallbuf"],
        None,
    );
    assert!(
        events(&buffered) * 10 < events(&plain),
        "buffered: {} events, without the buffer: {}",
        events(&buffered),
        events(&plain)
    );
    let mut cmds = vec!["break hit", "run", "p i"];
    for _ in 0..5 {
        cmds.extend(["continue", "p i", "p total"]);
    }
    for _ in 0..5 {
        cmds.extend(["reverse-continue", "p i", "p total"]);
    }
    cmds.extend(["delete", "watch last_hit", "reverse-continue", "p last_hit"]);
    let with = debug(&buffered.dir, &cmds);
    let without = debug(&plain.dir, &cmds);
    assert!(with.status.success(), "{}", with.describe());
    assert!(without.status.success(), "{}", without.describe());
    let (a, b) = (
        printed_values(&with.stdout),
        printed_values(&without.stdout),
    );
    assert_eq!(a.len(), 1 + 10 + 10 + 1, "{}", with.describe());
    assert_eq!(
        a, b,
        "buffered:\n{}\nunbuffered:\n{}",
        with.stdout, without.stdout
    );
    assert_eq!(a[0], "500");
    assert_eq!(a[9], "3000", "{}", with.describe());
}
