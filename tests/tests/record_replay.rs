//! Record and replay real programs (DESIGN §4, §9 oracle (b)): `rewind replay` of a trace prints on
//! its stdout and stderr exactly what the program printed while `rewind record` ran it, and exits with
//! the recorded exit code, every time, without the outside world: stdin is /dev/null, input files are
//! changed or gone, nothing real is written. Damaged traces and bad arguments get a clear failure.
//! Each test names the behaviour it pins down; each rr_* fixture in tests/targets/ exercises one
//! source of nondeterminism.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use rewind_tests::*;

#[test]
fn replay_reproduces_clocks_rdtsc_and_random_bytes() {
    let scratch = Scratch::new("replay_reproduces_clocks_rdtsc_and_random_bytes");
    let program = fixture("rr_time_random");
    // Sanity: the fixture really is nondeterministic, or matching its replay would prove nothing.
    let first = run_uninterrupted(&program);
    let second = run_uninterrupted(&program);
    let (first, second) = (
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&second.stdout),
    );
    for source in [
        "rdtsc:",
        "rdtscp:",
        "getrandom:",
        "urandom:",
        "clock_realtime:",
    ] {
        assert_ne!(
            lines_with(&first, source),
            lines_with(&second, source),
            "two native runs of rr_time_random printed the same {source} lines:\n{first}"
        );
    }

    let recorded = record(&scratch, &program, None);
    recorded.assert_replays_as_recorded(&[]);
    recorded.assert_replays_as_recorded(&[]);
}

#[test]
fn replay_reproduces_file_and_stdin_reads_without_them() {
    let scratch = Scratch::new("replay_reproduces_file_and_stdin_reads_without_them");
    let input = scratch.write("input.bin", random_bytes(300 * 1024));
    let stdin = scratch.write(
        "stdin.txt",
        "first line from stdin\n\nthird line, after an empty one\nlast line without a newline",
    );
    let mut program = fixture("rr_files_stdin");
    program.arg(&input);

    let native = run_natively(&scratch, &program, Some(&stdin));
    native.assert_success();
    let recorded = record(&scratch, &program, Some(&stdin));
    assert_recorded_like_native(&recorded, &native);
    assert!(
        recorded.stdout.contains("stdin: 4 lines")
            && recorded.stdout.contains("file: 307200 bytes"),
        "the recorded run did not read the whole file and the 4 stdin lines:\n{}",
        recorded.describe()
    );

    // The replay reads neither: its stdin is /dev/null, and the file and stdin's file are gone.
    fs::remove_file(&input).unwrap();
    fs::remove_file(&stdin).unwrap();
    recorded.assert_replays_as_recorded(&[]);
    recorded.assert_replays_as_recorded(&[]);
}

#[test]
fn replay_reproduces_thread_schedule_and_racy_flag() {
    let scratch = Scratch::new("replay_reproduces_thread_schedule_and_racy_flag");
    let recorded = record(&scratch, &fixture("rr_threads_counters"), None);
    assert!(
        recorded.stdout.contains("(expected 3000): ok"),
        "the recorded run lost counter updates (threads not under their mutex?):\n{}",
        recorded.describe()
    );
    // The lines of the threads, the lock order hash and the poll counts all depend on the schedule.
    recorded.assert_replays_as_recorded(&[]);
    recorded.assert_replays_as_recorded(&[]);
}

#[test]
fn replay_reproduces_alarm_segv_sigchld_and_raise() {
    let scratch = Scratch::new("replay_reproduces_alarm_segv_sigchld_and_raise");
    let program = fixture("rr_signals");
    let native = run_natively(&scratch, &program, None);
    assert_eq!(
        native.status.code(),
        Some(3),
        "rr_signals exits with status 3 natively:\n{}",
        native.describe()
    );
    let recorded = record(&scratch, &program, None);
    // Every signal arrived while recorded as it does natively (the output says so line by line).
    assert_recorded_like_native(&recorded, &native);
    recorded.assert_replays_as_recorded(&[]);
    recorded.assert_replays_as_recorded(&[]);
}

#[test]
fn replay_verify_memory_passes_through_signal_handlers() {
    // A handler's frame is memory the program owns: it must hold the same bytes in record and replay
    // (the last fault's address and the alternate stack's flags used to differ, and glibc's lazy
    // binding left XSAVEC output on the stack that depends on the CPU, not the program).
    let scratch = Scratch::new("replay_verify_memory_passes_through_signal_handlers");
    let recorded = record_with(&scratch, &fixture("rr_signals"), &["--verify=memory"], None);
    recorded.assert_replays_as_recorded(&["--verify=memory"]);
    recorded.assert_replays_as_recorded(&["--verify=memory"]);
}

#[test]
fn replay_reproduces_private_file_mapping_after_the_file_changes() {
    let scratch = Scratch::new("replay_reproduces_private_file_mapping_after_the_file_changes");
    let file = scratch.write("mapped.txt", random_text_lines(4000));
    let mut program = fixture("rr_mmap_file");
    program.arg(&file);
    let native = run_natively(&scratch, &program, None);
    native.assert_success();
    let recorded = record(&scratch, &program, None);
    assert_recorded_like_native(&recorded, &native);

    // Same size, other bytes: a replay that maps the real file again would checksum these.
    let size = fs::metadata(&file).unwrap().len() as usize;
    let other = "changed after the recording\n".repeat(size / 28 + 1);
    fs::write(&file, &other[..size]).unwrap();
    recorded.assert_replays_as_recorded(&[]);
    fs::remove_file(&file).unwrap();
    recorded.assert_replays_as_recorded(&[]);
}

#[test]
fn replay_reproduces_sort_of_a_file_changed_then_deleted() {
    let scratch = Scratch::new("replay_reproduces_sort_of_a_file_changed_then_deleted");
    let file = scratch.write("lines.txt", random_text_lines(5000));
    let mut program = system_program("sort");
    program.arg(&file);
    let native = run_natively(&scratch, &program, None);
    native.assert_success();
    let recorded = record(&scratch, &program, None);
    assert_recorded_like_native(&recorded, &native);

    fs::write(
        &file,
        "zz replaced after the recording\naa and not sorted by the replay\n",
    )
    .unwrap();
    recorded.assert_replays_as_recorded(&[]);
    fs::remove_file(&file).unwrap();
    recorded.assert_replays_as_recorded(&[]);
}

#[test]
fn replay_goes_on_in_the_program_a_shell_execs() {
    // sh runs a command, then execs the fixture: replay goes on in the new
    // image (it used to take the exec for the program's end).
    let scratch = Scratch::new("replay_goes_on_in_the_program_a_shell_execs");
    let mut program = system_program("sh");
    program.arg("-c").arg(format!(
        "echo before the exec; exec {}",
        target("dbg_demo").display()
    ));
    let native = run_natively(&scratch, &program, None);
    native.assert_success();
    let recorded = record(&scratch, &program, None);
    assert_recorded_like_native(&recorded, &native);
    recorded.assert_replays_as_recorded(&[]);
}

#[test]
fn replay_reproduces_python3_time_random_and_pid() {
    const SCRIPT: &str = r#"
import hashlib, os, random, time
print("sum of squares:", sum(i * i for i in range(200000)))
print("sha256 of the digits:", hashlib.sha256("".join(map(str, range(10000))).encode()).hexdigest())
print("time.time():", time.time())
print("random.random():", random.random())
print("os.getpid():", os.getpid())
print("os.urandom(8):", os.urandom(8).hex())
print("str hash (randomized per run):", hash("rewind"))
print("set order (randomized per run):", list({"alpha", "beta", "gamma", "delta", "epsilon"}))
"#;
    let scratch = Scratch::new("replay_reproduces_python3_time_random_and_pid");
    let mut program = python3_interpreter();
    program.arg("-c").arg(SCRIPT);
    let recorded = record(&scratch, &program, None);
    recorded.assert_replays_as_recorded(&[]);
    recorded.assert_replays_as_recorded(&[]);
}

#[test]
fn replay_reproduces_sqlite3_without_touching_the_database() {
    const SQL: &str = "create table t(x); \
        with recursive c(i) as (select 1 union all select i + 1 from c where i < 2000) \
        insert into t select i from c; \
        select count(*), sum(x) from t; \
        select random();";
    let scratch = Scratch::new("replay_reproduces_sqlite3_without_touching_the_database");
    let database = scratch.join("test.db");
    let mut program = system_program("sqlite3");
    program.arg(&database).arg(SQL);
    let recorded = record(&scratch, &program, None);
    assert!(
        recorded.stdout.starts_with("2000|2001000\n") && database.is_file(),
        "sqlite3 did not fill {} while recorded:\n{}",
        database.display(),
        recorded.describe()
    );

    // Had the replay run the SQL on the real database, `create table t` would fail on this one.
    recorded.assert_replays_as_recorded(&[]);
    fs::remove_file(&database).unwrap();
    recorded.assert_replays_as_recorded(&[]);
    let left: Vec<_> = fs::read_dir(scratch.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("test.db"))
        .collect();
    assert!(
        left.is_empty(),
        "a replay wrote {left:?} in {}: replays must not touch the outside world",
        scratch.path().display()
    );
}

#[test]
fn replay_quiet_prints_nothing_and_keeps_the_exit_code() {
    let scratch = Scratch::new("replay_quiet_prints_nothing_and_keeps_the_exit_code");
    let recorded = record(&scratch, &fixture("rr_signals"), None);
    let quiet = recorded.replay(&["--quiet"]);
    assert!(
        quiet.status.code() == recorded.status.code()
            && quiet.stdout.is_empty()
            && without_rewind_lines(&quiet.stderr).is_empty()
            && !quiet.stderr.contains("panicked"),
        "replay --quiet must print none of the program's output and exit with {:?}:\n{}",
        recorded.status.code(),
        quiet.describe()
    );
}

#[test]
fn replay_verify_passes_twice() {
    let scratch = Scratch::new("replay_verify_passes_twice");
    let recorded = record(&scratch, &fixture("rr_time_random"), None);
    // The registers at every event (rdtsc results and signal frames included) match the recording.
    recorded.assert_replays_as_recorded(&["--verify"]);
    recorded.assert_replays_as_recorded(&["--verify"]);
}

#[test]
fn replay_verify_memory_passes_when_recorded_with_memory_checksums() {
    let scratch = Scratch::new("replay_verify_memory_passes_when_recorded_with_memory_checksums");
    let file = scratch.write("mapped.txt", random_text_lines(1000));
    let mut program = fixture("rr_mmap_file");
    program.arg(&file);
    let recorded = record_with(&scratch, &program, &["--verify=memory"], None);
    recorded.assert_replays_as_recorded(&["--verify=memory"]);
    recorded.assert_replays_as_recorded(&["--verify=memory"]);
}

#[test]
fn corrupt_trace_fails_clearly() {
    let scratch = Scratch::new("corrupt_trace_fails_clearly");
    let recorded = record_big_reads(&scratch);
    let log = event_log(&recorded.dir);
    let mut bytes = fs::read(&log).unwrap();
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 16] {
        *byte ^= 0xa5;
    }
    fs::write(&log, bytes).unwrap();

    let replayed = recorded.replay(&[]);
    assert_fails_clearly(&replayed, &["chunk", "corrupt", "divergence"]);
    assert_prefix_of_recorded(&recorded, &replayed);
}

#[test]
fn truncated_trace_replays_prefix_then_fails_clearly() {
    let scratch = Scratch::new("truncated_trace_replays_prefix_then_fails_clearly");
    let recorded = record_big_reads(&scratch);
    let log = event_log(&recorded.dir);
    let len = fs::metadata(&log).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .and_then(|f| f.set_len(len / 2))
        .unwrap();

    let replayed = recorded.replay(&[]);
    assert_fails_clearly(&replayed, &["truncated"]);
    assert_prefix_of_recorded(&recorded, &replayed);
    assert!(
        !replayed.stdout.is_empty(),
        "the replay of a trace cut in half printed nothing: the intact chunks before the cut \
         should replay\n{}",
        replayed.describe()
    );
}

#[test]
fn record_missing_program_fails_clearly() {
    let scratch = Scratch::new("record_missing_program_fails_clearly");
    let trace = scratch.join("trace");
    let done = rewind_in(
        scratch.path(),
        [
            "record".as_ref(),
            "-o".as_ref(),
            trace.as_os_str(),
            "--".as_ref(),
            scratch.join("no-such-program").as_os_str(),
        ],
    );
    assert_fails_clearly(&done, &["no-such-program", "no such", "not found"]);
}

#[test]
fn replay_missing_trace_fails_clearly() {
    let scratch = Scratch::new("replay_missing_trace_fails_clearly");
    let missing = scratch.join("no-such-trace");
    let done = rewind_in(scratch.path(), ["replay".as_ref(), missing.as_os_str()]);
    assert_fails_clearly(&done, &["no-such-trace", "no such", "not found", "not a"]);
}

#[test]
fn record_into_nonempty_dir_fails_clearly() {
    const KEPT: &str = "a file that was there before\n";
    let scratch = Scratch::new("record_into_nonempty_dir_fails_clearly");
    let dir = scratch.dir("taken");
    fs::write(dir.join("kept.txt"), KEPT).unwrap();
    let done = rewind_in(
        scratch.path(),
        [
            "record".as_ref(),
            "-o".as_ref(),
            dir.as_os_str(),
            "--".as_ref(),
            target("rr_time_random").as_os_str(),
        ],
    );
    assert_fails_clearly(&done, &["not empty", "non-empty", "nonempty", "exists"]);
    assert!(
        done.stdout.is_empty(),
        "the program ran although the trace directory was refused:\n{}",
        done.describe()
    );
    let entries: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        entries == ["kept.txt"] && fs::read_to_string(dir.join("kept.txt")).unwrap() == KEPT,
        "the refused directory was changed: it holds {entries:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers of this file
// ---------------------------------------------------------------------------------------------

/// A recording whose event log spans several chunks: rr_files_stdin reading 8 MiB of random bytes.
/// Checks that the intact trace replays, so that what a damaged one does is the damage's doing.
fn record_big_reads(scratch: &Scratch) -> Recorded {
    let input = scratch.write("big.bin", random_bytes(8 << 20));
    let mut program = fixture("rr_files_stdin");
    program.arg(&input);
    let recorded = record(scratch, &program, None);
    recorded.assert_replays_as_recorded(&[]);
    recorded
}

/// The event log of a trace: its largest file.
fn event_log(trace: &Path) -> PathBuf {
    let mut files: Vec<(u64, PathBuf)> = fs::read_dir(trace)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", trace.display()))
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file().then(|| (meta.len(), e.path()))
        })
        .collect();
    files.sort();
    let (len, path) = files
        .pop()
        .unwrap_or_else(|| panic!("no file in the trace {}", trace.display()));
    assert!(
        len >= 64,
        "the largest file of the trace, {}, has only {len} bytes",
        path.display()
    );
    path
}

/// The program wrote what it wrote live, stdout and stderr, and ended the same way as natively: the
/// recording did not change its behaviour (for deterministic programs).
#[track_caller]
fn assert_recorded_like_native(recorded: &Recorded, native: &Finished) {
    assert!(
        recorded.status.code() == native.status.code()
            && recorded.stdout == native.stdout
            && recorded.program_stderr() == native.stderr,
        "the program behaved differently while recorded: {}\n--- recorded: {}\n--- native: {}",
        first_difference(&native.stdout, &recorded.stdout),
        recorded.describe(),
        native.describe()
    );
}

/// A damaged trace may replay some events before it fails, but only what was recorded.
#[track_caller]
fn assert_prefix_of_recorded(recorded: &Recorded, replayed: &Finished) {
    assert!(
        recorded.stdout.starts_with(&replayed.stdout),
        "a damaged trace replayed output that was never recorded: {}\n{}",
        first_difference(&recorded.stdout, &replayed.stdout),
        replayed.describe()
    );
}

/// The lines of `text` that contain `word`.
fn lines_with<'a>(text: &'a str, word: &str) -> BTreeSet<&'a str> {
    text.lines().filter(|line| line.contains(word)).collect()
}

/// A xorshift64* generator seeded from the clock: inputs differ between test runs, as real ones do.
struct Random(u64);

impl Random {
    fn new() -> Random {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Random(nanos | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// `len` bytes that do not compress.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut random = Random::new();
    let mut bytes: Vec<u8> = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        bytes.extend_from_slice(&random.next().to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// `count` lines of a few random lower-case words each.
fn random_text_lines(count: usize) -> String {
    let mut random = Random::new();
    let mut text = String::new();
    for _ in 0..count {
        let words = 1 + random.next() % 6;
        for w in 0..words {
            if w > 0 {
                text.push(' ');
            }
            for _ in 0..1 + random.next() % 9 {
                text.push((b'a' + (random.next() % 26) as u8) as char);
            }
        }
        text.push('\n');
    }
    text
}

#[test]
fn replay_from_event_starts_at_nearest_checkpoint() {
    let scratch = Scratch::new("replay_from_event_starts_at_nearest_checkpoint");
    // 30 steps over ~1.8 s, with a checkpoint written every 0.2 s.
    let recorded = record_with(
        &scratch,
        &fixture("loop_heap"),
        &["--checkpoint-interval", "0.2"],
        None,
    );
    let checkpoints = std::fs::read_dir(&recorded.dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("ckpt-"))
        })
        .count();
    assert!(
        checkpoints >= 2,
        "expected periodic checkpoints in the trace, found {checkpoints}"
    );
    let events: u64 = recorded
        .stderr
        .split_whitespace()
        .skip_while(|w| *w != "recorded")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("the number of recorded events");
    // From three quarters in (past program startup, and a checkpoint is at
    // most 0.2 s earlier): the output must be a proper, non-empty tail of
    // the recorded output (it starts at a checkpoint, later than the start).
    let from = replay(&recorded.dir, &["--from", &(events * 3 / 4).to_string()]);
    from.assert_success();
    let n = from.stdout.lines().count();
    let all = recorded.stdout.lines().count();
    assert!(
        n > 0 && n < all,
        "replay --from printed {n} of {all} lines:\n{}",
        from.describe()
    );
    let tail: String = recorded
        .stdout
        .lines()
        .skip(all - n)
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        from.stdout,
        tail,
        "{}",
        first_difference(&tail, &from.stdout)
    );
    // And the whole trace still replays as recorded.
    recorded.assert_replays_as_recorded(&[]);
}

#[test]
fn replay_reproduces_a_thread_spinning_without_syscalls() {
    // Without preemption the spinner would keep the setter from ever running
    // (one thread at a time): record would hang.
    let scratch = Scratch::new("replay_reproduces_a_thread_spinning_without_syscalls");
    let recorded = record(&scratch, &fixture("rr_spin_flag"), None);
    assert_eq!(
        recorded
            .stdout
            .lines()
            .filter(|l| l.ends_with("done=1"))
            .count(),
        3,
        "{}",
        recorded.describe()
    );
    recorded.assert_replays_as_recorded(&["--verify"]);
    recorded.assert_replays_as_recorded(&[]);
}

#[test]
fn replay_shows_output_that_cat_copies_in_the_kernel() {
    // coreutils cat copies with copy_file_range: the bytes never pass
    // through its memory, so the recorder makes it fall back to read/write.
    let scratch = Scratch::new("replay_shows_output_that_cat_copies_in_the_kernel");
    let input = scratch.join("input.txt");
    let text: String = (0..200)
        .map(|i| format!("line {i} of the input\n"))
        .collect();
    std::fs::write(&input, &text).unwrap();
    let mut cat = system_program("cat");
    cat.arg(&input);
    let recorded = record(&scratch, &cat, None);
    assert_eq!(recorded.stdout, text, "{}", recorded.describe());
    std::fs::remove_file(&input).unwrap();
    recorded.assert_replays_as_recorded(&[]);
}

/// A program that execs another (a shell script ending in `exec`, `env`, pyenv's shims): replay
/// goes on in the exec'd program from its image, to the same end. It used to end at the exec,
/// "with status 137" (the old image's removal was taken for the program's end).
#[test]
fn replay_goes_on_after_exec() {
    let scratch = Scratch::new("replay_goes_on_after_exec");
    let mut program = Command::new("/bin/sh");
    program
        .arg("-c")
        .arg("echo before the exec; exec /usr/bin/env /bin/sh -c 'echo after two execs; exit 3'");
    let recorded = record(&scratch, &program, None);
    assert!(
        recorded.stdout.contains("after two execs") && recorded.status.code() == Some(3),
        "{}",
        recorded.describe()
    );
    recorded.assert_replays_as_recorded(&[]);
}

#[test]
fn replay_after_an_exec_binds_no_socket_again() {
    // A program execs with a listening unix socket open: the exec's image holds it. Replay emulates
    // the program's socket calls, so the socket is a stand-in bound nowhere: the replay neither
    // needs the socket's directory (gone here) nor creates anything in the world.
    const SCRIPT: &str = r#"
import os, socket, sys
d = sys.argv[1]
s = socket.socket(socket.AF_UNIX)
s.bind(os.path.join(d, "listener.sock"))
s.listen()
os.set_inheritable(s.fileno(), True)
os.execv("/bin/sh", ["sh", "-c", "echo exec with the listener at fd %d; ls /proc/self/fd | wc -l" % s.fileno()])
"#;
    let scratch = Scratch::new("replay_after_an_exec_binds_no_socket_again");
    let dir = scratch.dir("sockdir");
    let mut program = python3();
    program.arg("-c").arg(SCRIPT).arg(&dir);
    let recorded = record(&scratch, &program, None);
    assert!(
        recorded.stdout.contains("exec with the listener at fd"),
        "the program did not exec with its listener:\n{}",
        recorded.describe()
    );
    fs::remove_dir_all(&dir).unwrap();
    recorded.assert_replays_as_recorded(&["--verify"]);
    assert!(
        !dir.exists(),
        "the replay made the socket's directory again"
    );
}
