//! Pseudo-terminals the program makes itself (issue 7): a process of the tree opens /dev/ptmx and
//! drives a session on the slave, whose leader has it as its controlling terminal, with job
//! control; checkpointed with bytes in flight both ways, killed and restarted (the pair is made
//! again at the same index, with its settings, queues, controlling terminal and foreground process
//! group), or left running.
//!
//! Oracles: what the program prints before the checkpoint followed by what the restarted copy
//! prints is what an uninterrupted run prints (the fixture `pty_shell` prints every answer of a
//! job driven through the master, checks that the echo is exactly what it typed and that the
//! slave's name did not change; `pty_bash` prints the transcript of an interactive bash); the
//! images hold the pty with bytes in flight, decoded from them, so a test cannot pass with a
//! checkpoint that caught nothing. No process may be left behind.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use rewind_ckpt::image::format::FdKind;
use rewind_ckpt::image::ImageReader;
use rewind_tests::*;

/// The kernel gives a new pty the lowest free index: tests of this file run one at a time, so
/// that none takes the index of another's killed program before its restart.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The driver, shell and job of `pty_shell` for `n` requests.
fn shell(n: u32) -> Command {
    let mut cmd = fixture("pty_shell");
    cmd.arg(n.to_string());
    cmd
}

/// The driver of an interactive bash.
fn bash() -> Command {
    let mut cmd = fixture("pty_bash");
    cmd.arg(system_program("bash").get_program());
    cmd
}

/// What the images of one checkpoint hold of the program's ptys.
#[derive(Debug, Default)]
struct Held {
    ptys: usize,
    /// Descriptors of masters and of slaves, and the slaves' open files.
    masters: usize,
    slaves: usize,
    slave_files: usize,
    /// Bytes in flight: for the slave's reader (complete lines, rest) and the master's.
    input_lines: usize,
    input_rest: usize,
    output: usize,
    /// Whether the pty was a session's controlling terminal, and its foreground group was not
    /// the session leader's.
    controlling: bool,
    foreground_elsewhere: bool,
}

fn held(images: &[PathBuf]) -> Held {
    let mut h = Held::default();
    let mut seen = std::collections::HashSet::new();
    let mut files = std::collections::HashSet::new();
    for image in images {
        let reader = ImageReader::open(image)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", image.display()));
        for fd in &reader.state.fds {
            let FdKind::Pty { master, file, pty } = &fd.kind else {
                continue;
            };
            if *master {
                h.masters += 1;
            } else {
                h.slaves += 1;
                files.insert((pty.index, *file));
            }
            if seen.insert(pty.index) {
                h.ptys += 1;
                h.input_lines += pty.input_lines.iter().map(Vec::len).sum::<usize>();
                h.input_rest += pty.input_rest.len();
                h.output += pty.output.len();
                h.controlling |= pty.session.is_some();
                h.foreground_elsewhere |= pty.foreground.is_some() && pty.foreground != pty.session;
            }
        }
    }
    h.slave_files = files.len();
    h
}

impl Held {
    fn in_flight(&self) -> usize {
        self.input_lines + self.input_rest + self.output
    }
}

/// Launch, wait for `line`, checkpoint the tree and kill it, restart every image; the output
/// around the checkpoint must be the uninterrupted one, without a warning. Returns what the
/// images held.
#[track_caller]
fn checkpoint_kill_restart(scratch: &Scratch, program: &Command, line: &'static str) -> Held {
    let uninterrupted = run_uninterrupted(program);
    let mut running = launch(
        program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    running.wait_for(Wait::LineContaining(line));
    let images = running.checkpoint_tree_and_kill();
    let before = running.wait_timeout(KILL_TIMEOUT);
    assert_nothing_left(program);
    let held = held(&images);
    let after = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    assert_pieces_match(&uninterrupted, &[&before.stdout, &after.stdout], &after);
    assert!(
        !after.stderr.contains("warning"),
        "the restart warned about something:\n{}",
        after.describe()
    );
    assert_nothing_left(program);
    held
}

/// A program checkpointed without being killed printed what its uninterrupted run printed.
#[track_caller]
fn assert_ran_as(uninterrupted: &std::process::Output, done: &Finished) {
    done.assert_success();
    let expected = String::from_utf8_lossy(&uninterrupted.stdout);
    assert!(
        done.stdout == expected,
        "the output differs from the uninterrupted run's: {}\n--- expected:\n{expected}\n--- got: {}",
        first_difference(&expected, &done.stdout),
        done.describe()
    );
}

/// The pty of `pty_shell` as the images must hold it: one pair, the master in the driver, the
/// slave's one open file shared by the shell's and the job's descriptors, the shell's session's
/// controlling terminal with the job as foreground, and bytes in flight.
#[track_caller]
fn assert_shell_pty(held: &Held) {
    assert_eq!(held.ptys, 1, "{held:?}");
    assert!(held.masters >= 1 && held.slaves >= 6, "{held:?}");
    assert_eq!(held.slave_files, 1, "one open file of the slave: {held:?}");
    assert!(
        held.controlling && held.foreground_elsewhere,
        "the pty is the shell's controlling terminal, the job its foreground: {held:?}"
    );
    assert!(
        held.in_flight() > 0,
        "the checkpoint caught no byte in flight in the pty: {held:?}"
    );
}

#[test]
fn pty_session_restarts_with_bytes_in_flight() {
    let _one = serial();
    let scratch = Scratch::new("pty_session_restarts_with_bytes_in_flight");
    let program = shell(60);
    let held = checkpoint_kill_restart(&scratch, &program, "rep 12 ");
    assert_shell_pty(&held);
}

#[test]
fn pty_session_restarts_in_raw_mode() {
    let _one = serial();
    let scratch = Scratch::new("pty_session_restarts_in_raw_mode");
    let program = shell(50);
    let held = checkpoint_kill_restart(&scratch, &program, "raw 6 ");
    assert_shell_pty(&held);
}

#[test]
fn pty_session_restarts_twice_in_a_chain() {
    let _one = serial();
    let scratch = Scratch::new("pty_session_restarts_twice_in_a_chain");
    let program = shell(50);
    let uninterrupted = run_uninterrupted(&program);
    let chain = checkpoint_chain(
        &scratch,
        &program,
        &[
            Wait::LineContaining("rep 5 "),
            Wait::LineContaining("rep 40 "),
        ],
    );
    chain.assert_matches(&uninterrupted);
    assert!(
        !chain.last.stderr.contains("warning"),
        "{}",
        chain.last.describe()
    );
    assert_nothing_left(&program);
}

#[test]
fn pty_session_runs_on_after_checkpoints() {
    let _one = serial();
    let scratch = Scratch::new("pty_session_runs_on_after_checkpoints");
    // Reps enough past the last checkpoint's line (~20 ms each) that the
    // program is still running when that checkpoint comes, under load too.
    let program = shell(120);
    let uninterrupted = run_uninterrupted(&program);
    let mut running = launch(
        &program,
        &scratch.dir("ckpt"),
        Redirect::to(scratch.join("live.out")),
    );
    let mut in_flight = 0;
    for line in ["rep 4 ", "raw 3 ", "rep 35 "] {
        running.wait_for(Wait::LineContaining(line));
        let h = held(&running.checkpoint_tree_with(&["--checkpoint"]));
        assert_eq!(h.ptys, 1, "{h:?}");
        in_flight += h.in_flight();
    }
    let done = running.wait();
    assert_ran_as(&uninterrupted, &done);
    assert!(in_flight > 0, "no checkpoint caught a byte in flight");
    assert_nothing_left(&program);
}

/// bash's job control through a checkpoint: once with a pipeline waiting in the background, once
/// with a pipeline in the foreground that a Ctrl-C typed after the restart must stop.
#[test]
fn interactive_bash_keeps_job_control_across_restarts() {
    let _one = serial();
    let scratch = Scratch::new("interactive_bash_keeps_job_control_across_restarts");
    let program = bash();
    let uninterrupted = run_uninterrupted(&program);
    let transcript = String::from_utf8_lossy(&uninterrupted.stdout);
    assert!(
        transcript.contains("HELLO FROM THE PIPE") && transcript.contains("same terminal"),
        "the uninterrupted run did not go as planned:\n{transcript}"
    );
    let chain = checkpoint_chain(
        &scratch,
        &program,
        &[
            Wait::LineContaining("background job listed"),
            Wait::LineContaining("ready"),
        ],
    );
    chain.assert_matches(&uninterrupted);
    assert!(
        !chain.last.stderr.contains("warning"),
        "{}",
        chain.last.describe()
    );
    let images: Vec<PathBuf> = chain.images.clone();
    let h = held(&images);
    assert!(h.controlling, "bash's controlling terminal: {h:?}");
    assert_nothing_left(&program);
    let mut shell = Command::new("bash");
    shell.args(["--norc", "--noprofile", "--noediting", "-i"]);
    assert_nothing_left(&shell);
}

/// `pty_queues` waiting for `go` (a file) with bytes in flight in its three ptys.
fn queues(go: &std::path::Path) -> Command {
    let mut cmd = fixture("pty_queues");
    cmd.arg(go);
    cmd
}

/// The bytes of `pty_queues`' output line "`what` N: ESCAPED" (each such line in order).
fn reads(output: &str, what: &str) -> Vec<Vec<u8>> {
    let prefix = format!("{what} ");
    output
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| l.split_once(": ").map(|(_, s)| s).or(l.strip_suffix(':')))
        .map(|s| {
            let mut out = Vec::new();
            let b = s.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 4 <= b.len() {
                    let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap_or("zz");
                    out.push(u8::from_str_radix(hex, 16).expect("an escaped byte"));
                    i += 4;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            out
        })
        .collect()
}

/// What waited in `pty_queues`' ptys must be what its uninterrupted run reads afterwards: the
/// canonical reader's lines one by one (the last completed after the hold), the raw reader's
/// bytes, and the masters' output (echo included).
#[track_caller]
fn assert_queues_held(images: &[PathBuf], uninterrupted: &str) {
    let mut ptys = Vec::new();
    for image in images {
        let reader = ImageReader::open(image).expect("an image");
        for fd in &reader.state.fds {
            if let FdKind::Pty {
                master: true, pty, ..
            } = &fd.kind
            {
                ptys.push((**pty).clone());
            }
        }
    }
    assert_eq!(ptys.len(), 3, "three ptys: {ptys:?}");
    let a = ptys
        .iter()
        .find(|p| p.exclusive)
        .expect("pty A (exclusive)");
    let b = ptys
        .iter()
        .find(|p| p.packet_mode)
        .expect("pty B (packet mode)");
    let c = ptys.iter().find(|p| p.locked).expect("pty C (locked)");
    let mut lines = reads(uninterrupted, "a reads");
    let last = lines.pop().expect("A's reads");
    assert_eq!(a.input_lines, lines, "A's complete lines");
    let mut partial = a.input_rest.clone();
    partial.extend_from_slice(b"ne\n");
    assert_eq!(partial, last, "A's partial line, completed after the hold");
    let mut output = reads(uninterrupted, "a master got").concat();
    assert!(output.ends_with(b"ne\r\n"), "{output:?}");
    output.truncate(output.len() - 4); // the echo of what was typed after the hold
    assert_eq!(a.output, output, "A's output");
    assert_eq!(b.input_rest, reads(uninterrupted, "b got").concat());
    assert_eq!(b.output, reads(uninterrupted, "b master got").concat());
    assert!(
        c.input_lines.len() == 1 && c.winsize[..2] == [7, 9],
        "{c:?}"
    );
}

#[test]
fn pty_queues_come_back_exactly() {
    let _one = serial();
    let scratch = Scratch::new("pty_queues_come_back_exactly");
    let reference = scratch.write("go-at-once", "");
    let uninterrupted = run_uninterrupted(&queues(&reference));
    let uninterrupted_text = String::from_utf8_lossy(&uninterrupted.stdout).into_owned();
    assert!(
        uninterrupted_text.contains("partial line"),
        "{uninterrupted_text}"
    );
    let go = scratch.join("go");
    let program = queues(&go);
    let mut running = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    running.wait_for(Wait::LineContaining("holding"));
    let images = running.checkpoint_tree_and_kill();
    let before = running.wait_timeout(KILL_TIMEOUT);
    assert_nothing_left(&program);
    assert_queues_held(&images, &uninterrupted_text);
    std::fs::write(&go, "").expect("the go file");
    let after = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    assert_pieces_match(&uninterrupted, &[&before.stdout, &after.stdout], &after);
    assert!(!after.stderr.contains("warning"), "{}", after.describe());
    assert_nothing_left(&program);
}

#[test]
fn pty_queues_stay_after_a_checkpoint() {
    let _one = serial();
    let scratch = Scratch::new("pty_queues_stay_after_a_checkpoint");
    let reference = scratch.write("go-at-once", "");
    let uninterrupted = run_uninterrupted(&queues(&reference));
    let go = scratch.join("go");
    let program = queues(&go);
    let mut running = launch(
        &program,
        &scratch.dir("ckpt"),
        Redirect::to(scratch.join("live.out")),
    );
    running.wait_for(Wait::LineContaining("holding"));
    let images = running.checkpoint_tree_with(&["--checkpoint"]);
    assert_queues_held(&images, &String::from_utf8_lossy(&uninterrupted.stdout));
    std::fs::write(&go, "").expect("the go file");
    let done = running.wait();
    assert_ran_as(&uninterrupted, &done);
    assert_nothing_left(&program);
}

/// A job bash stopped with Ctrl-Z must stay stopped until its `fg` (it would print "woke up"
/// early): after a checkpoint the program runs on from, and after a restart (the image records
/// the stop).
#[test]
fn a_stopped_job_stays_stopped_after_a_checkpoint_and_a_restart() {
    let _one = serial();
    let scratch = Scratch::new("stopped_job");
    let program = bash();
    let uninterrupted = run_uninterrupted(&program);
    let expected = String::from_utf8_lossy(&uninterrupted.stdout).into_owned();
    assert!(
        expected.contains("Stopped") && expected.contains("woke up"),
        "the uninterrupted run did not go as planned:\n{expected}"
    );
    // Runs on after a checkpoint.
    let mut running = launch(
        &program,
        &scratch.dir("live"),
        Redirect::to(scratch.join("live.out")),
    );
    running.wait_for(Wait::LineContaining("stopped job listed"));
    let images = running.checkpoint_tree_with(&["--checkpoint"]);
    let stopped: Vec<i32> = images
        .iter()
        .filter_map(|i| rewind_ckpt::jobs::stop_of(&ImageReader::open(i).expect("an image").state))
        .collect();
    assert_eq!(
        stopped,
        [libc::SIGTSTP],
        "the stopped job's image records its stop"
    );
    let done = running.wait();
    assert_ran_as(&uninterrupted, &done);
    // Killed and restarted.
    let mut running = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    running.wait_for(Wait::LineContaining("stopped job listed"));
    let images = running.checkpoint_tree_and_kill();
    let before = running.wait_timeout(KILL_TIMEOUT);
    assert_nothing_left(&program);
    let after = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    assert_pieces_match(&uninterrupted, &[&before.stdout, &after.stdout], &after);
    assert!(!after.stderr.contains("warning"), "{}", after.describe());
    assert_nothing_left(&program);
}

/// Restarted while the original still runs (its pty index and its pids are taken): the copy gets
/// another pty (with a warning; the slave's name the driver knows differs) and translated ids
/// (tcgetpgrp, getpgrp, getsid answer the program's own), and runs on exactly as the original.
#[test]
fn pty_session_restarted_beside_the_original_gets_another_index() {
    let _one = serial();
    let scratch = Scratch::new("pty_beside_original");
    let program = shell(50);
    let uninterrupted = run_uninterrupted(&program);
    let expected = String::from_utf8_lossy(&uninterrupted.stdout).into_owned();
    let mut running = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("original.out")),
    );
    running.wait_for(Wait::LineContaining("rep 10 "));
    let images = running.checkpoint_tree_with(&["--checkpoint"]);
    let copy = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("copy.out")),
    )
    .wait();
    let original = running.wait();
    assert_ran_as(&uninterrupted, &original);
    copy.assert_success();
    assert!(
        copy.stderr.contains("is taken: it is /dev/pts/"),
        "the restart should say the terminal changed:\n{}",
        copy.describe()
    );
    let as_original = copy.stdout.replace("slave CHANGED", "slave unchanged");
    assert!(
        as_original.contains("shell: bye") && expected.ends_with(&as_original),
        "the copy's output is not the end of the uninterrupted run's: {}\n--- expected:\n{expected}",
        copy.describe()
    );
    assert_nothing_left(&program);
}
