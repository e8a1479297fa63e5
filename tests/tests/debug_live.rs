//! `rewind debug -- PROG`: the program runs live, recorded only as far as
//! the debugger's forward commands go; reverse commands replay what was
//! recorded, forward ones from the past replay up to the end of history
//! and then run the live program on. Oracles: what the program printed
//! (each line once, live), the values a script prints going back and
//! forth, `rewind replay` of the recording made on the way, and no process
//! left behind. (The gdb comparisons of `debug_repl.rs` also run live.)

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rewind_tests::*;

/// Whether any process is left in process group `pgid` after a few
/// seconds (tracees end shortly after their tracer; zombies count until
/// reaped): the `ps` lines of those left.
fn group_left(pgid: i32) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // SAFETY: kill(2) with signal 0 only checks for processes.
        if unsafe { libc::kill(-pgid, 0) } != 0 {
            return None;
        }
        if Instant::now() > deadline {
            let ps = Command::new("ps")
                .args(["-o", "pid,stat,comm", "-g", &pgid.to_string()])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            return Some(ps);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many lines of `text` are `line`.
fn count_lines(text: &str, line: &str) -> usize {
    text.lines().filter(|l| *l == line).count()
}

#[test]
fn typed_input_is_read_live_once_and_replayed_when_going_back() {
    let scratch = Scratch::new("live-stdin");
    let trace = scratch.join("trace");
    let script = scratch.write(
        "cmds.gdb",
        "break got\nrun\nprint v\ncontinue\nprint v\ncontinue\nprint v\n\
         reverse-continue\nprint v\nreverse-continue\nprint v\n\
         continue\ncontinue\nprint v\ncontinue\nwhen\n",
    );
    let mut child = Command::new(rewind_bin())
        .args(["debug", "--batch", "-o"])
        .arg(&trace)
        .arg("-x")
        .arg(&script)
        .arg("--")
        .arg(target("dbg_stdin"))
        .current_dir(scratch.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start rewind debug");
    let pgid = child.id() as i32;
    let out = Arc::new(Mutex::new(String::new()));
    let reader = {
        let out = out.clone();
        let mut stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock()
                    .expect("output")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let mut stderr = child.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // Type each number once the program has answered the previous one, as
    // a person at the terminal would.
    let deadline = Instant::now() + Duration::from_secs(240);
    let wait_for = |text: &str| loop {
        if out.lock().expect("output").contains(text) {
            return;
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on the test's own child process group.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            panic!(
                "no {text:?} in time:\n{}",
                out.lock().expect("output").as_str()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdin = child.stdin.take().expect("stdin");
    wait_for("ready\n");
    for (number, answer) in [
        ("5", "line 1 total 5\n"),
        ("7", "line 2 total 12\n"),
        ("30", "line 3 total 42\n"),
    ] {
        stdin
            .write_all(format!("{number}\n").as_bytes())
            .expect("type");
        stdin.flush().expect("flush");
        wait_for(answer);
    }
    drop(stdin);
    let status = child.wait().expect("wait");
    reader.join().expect("reader");
    let stderr = err_reader.join().expect("stderr");
    let stdout = out.lock().expect("output").clone();
    let describe = format!("--- stdout:\n{stdout}\n--- stderr:\n{stderr}");
    assert!(status.success(), "{describe}");
    // Values read live, then replayed backward and forward again.
    assert_eq!(
        printed_values(&stdout),
        ["5", "7", "30", "7", "5", "30"],
        "{describe}"
    );
    // Everything the program printed appeared once, live.
    let program_lines = [
        "ready",
        "line 1 total 5",
        "line 2 total 12",
        "line 3 total 42",
        "bye",
    ];
    for line in program_lines {
        assert_eq!(count_lines(&stdout, line), 1, "{line:?}: {describe}");
    }
    assert!(
        stdout.contains("No more reverse-execution history."),
        "the last continue reaches the program's end: {describe}"
    );
    if let Some(ps) = group_left(pgid) {
        panic!("processes left behind:\n{ps}");
    }
    // The recording made on the way replays to the same output, with no
    // input at all.
    let replayed = rewind_in(scratch.path(), ["replay", &trace.display().to_string()]);
    assert!(replayed.status.success(), "{}", replayed.describe());
    let want: String = program_lines.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(replayed.stdout, want, "{}", replayed.describe());
}

/// The pid in `[Inferior 1 (process N) killed...` or `the program
/// (process N) was killed`.
fn killed_pid(text: &str) -> Option<i32> {
    let at = text.find("(process ")? + "(process ".len();
    text[at..].split(')').next()?.parse().ok()
}

#[test]
fn kill_ends_the_live_program_and_keeps_its_history() {
    let scratch = Scratch::new("live-kill");
    let mut cmds = vec!["break sum_to", "run", "continue", "continue", "kill"];
    // Forward again: replayed up to where the program was killed, no
    // further.
    cmds.extend(["continue", "print n", "continue", "print n"]);
    cmds.extend(["continue", "print n", "continue", "when"]);
    let done = debug_live(
        &scratch,
        &fixture("dbg_demo"),
        &scratch.join("trace"),
        &cmds,
    );
    assert!(done.status.success(), "{}", done.describe());
    let pid = killed_pid(&done.stdout).expect("the kill names the process");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} is gone"
    );
    assert_eq!(
        printed_values(&done.stdout),
        ["100", "200", "300"],
        "{}",
        done.describe()
    );
    assert!(
        done.stdout.contains("No more reverse-execution history."),
        "history ends where the program was killed: {}",
        done.describe()
    );
    // Killed after its third round began: it printed two rounds, live.
    assert_eq!(
        done.stdout
            .lines()
            .filter(|l| l.starts_with("round "))
            .count(),
        2,
        "{}",
        done.describe()
    );
    assert!(!done.stderr.contains("was killed"), "{}", done.describe());
}

#[test]
fn quit_kills_a_live_program_left_stopped() {
    let scratch = Scratch::new("live-quit");
    let done = debug_live(
        &scratch,
        &fixture("dbg_demo"),
        &scratch.join("trace"),
        &["break fact", "run", "bt", "quit"],
    );
    assert!(done.status.success(), "{}", done.describe());
    let pid = killed_pid(&done.stderr).expect("quit says it killed the program");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} is gone"
    );
    assert!(done.stdout.contains("fact (n=6)"), "{}", done.describe());
    // Stopped before its last line: it printed its five rounds only.
    assert!(!done.stdout.contains("fact 720"), "{}", done.describe());
    // The recording made so far opens as any trace (no end record).
    let again = debug(&scratch.join("trace"), &["break fact", "run", "bt"]);
    assert!(again.status.success(), "{}", again.describe());
    assert!(again.stdout.contains("fact (n=6)"), "{}", again.describe());
}

#[test]
fn ctrl_c_stops_a_long_live_continue_and_comes_back() {
    let scratch = Scratch::new("live-ctrl-c");
    // About 2 s of syscall-free computing between the two marks, run live.
    let mut child = Command::new(rewind_bin())
        .args(["debug", "-o"])
        .arg(scratch.join("trace"))
        .arg("--")
        .arg(target("dbg_spin"))
        .arg("1500")
        .current_dir(scratch.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start rewind debug");
    let pgid = child.id() as i32;
    let out = Arc::new(Mutex::new(String::new()));
    let reader = {
        let out = out.clone();
        let mut stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock()
                    .expect("output")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let mut stderr = child.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    let wait_for = |text: &str| loop {
        if out.lock().expect("output").contains(text) {
            return;
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on the test's own child process group.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            panic!(
                "no {text:?} in time:\n{}",
                out.lock().expect("output").as_str()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"break mark\nrun\nwhen\n")
        .expect("commands");
    stdin.flush().expect("flush");
    // At mark(0): then a continue, interrupted while the program computes.
    wait_for("Current event:");
    stdin.write_all(b"continue\n").expect("commands");
    stdin.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(700));
    // Ctrl-C as a front end sends it (gdb to its gdbserver): to rewind,
    // which passes it on to the program's running thread.
    let started = Instant::now();
    rewind_ckpt::sys::process::kill(pgid, libc::SIGINT).expect("send SIGINT");
    stdin
        .write_all(b"when\ncontinue\nwhen\ncontinue\nquit\n")
        .expect("commands");
    drop(stdin);
    let status = child.wait().expect("wait");
    reader.join().expect("reader");
    let stderr = err_reader.join().expect("stderr");
    let stdout = out.lock().expect("output").clone();
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("Quit (interrupted)"), "{stdout}\n{stderr}");
    // Back where the interrupted continue began, then on to mark(1) (the
    // program went on meanwhile: what it computed is recorded), then to
    // its end.
    let whens: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("Current event:"))
        .collect();
    assert_eq!(whens.len(), 3, "{stdout}\n{stderr}");
    assert_eq!(whens[0], whens[1], "{stdout}\n{stderr}");
    assert!(stdout.contains("mark (i=1)"), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("No more reverse-execution history."),
        "{stdout}\n{stderr}"
    );
    // Its one line of output, once.
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.chars().all(|c| c.is_ascii_digit()) && !l.is_empty())
            .count(),
        1,
        "{stdout}\n{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(120));
    if let Some(ps) = group_left(pgid) {
        panic!("processes left behind:\n{ps}");
    }
}
