//! Forked checkpoints (issue 7's checkpoint time): the program is stopped only while it is captured
//! and a copy-on-write copy of its memory is made, then runs on while its images are written from
//! the copy. `cow_counter` rewrites a counter into every page of 64 MiB of private and 16 MiB of
//! MAP_SHARED memory, pass after pass, checking that each page still holds the previous pass's
//! value: an image holding any page as it was after the checkpoint (a later pass's value, private
//! or shared) makes the restarted program stop with an error. Oracles: the launched program's
//! output equals the uninterrupted run's (the checkpoint did not disturb it), the restarted image's
//! output is the end of it, and the program printed lines past the checkpoint while the command
//! that took it was still waiting for the images (it ran on before they were durable).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use rewind_tests::*;
use serde_json::Value;

/// `cow_counter 64 PASSES [fork]`; each test gives its own number of passes, so that parallel
/// tests do not see each other's processes.
fn counter(passes: u32, fork: bool) -> Command {
    let mut program = fixture("cow_counter");
    program.args(["64", &passes.to_string()]);
    if fork {
        program.arg("fork");
    }
    program
}

/// `cow_counter 64 PASSES fork-subreaper`: the parent is a child subreaper, and says so of any
/// child it reaps that it did not make.
fn subreaper_counter(passes: u32) -> Command {
    let mut program = fixture("cow_counter");
    program.args(["64", &passes.to_string(), "fork-subreaper"]);
    program
}

fn expected_output(program: &Command) -> String {
    let uninterrupted = run_uninterrupted(program);
    assert!(
        uninterrupted.status.success(),
        "the uninterrupted run failed: {uninterrupted:?}"
    );
    String::from_utf8_lossy(&uninterrupted.stdout).into_owned()
}

/// Runs `rewind ARGS...` from `dir` while watching the outputs of `watched`: what it printed, and
/// the most bytes each had printed while the command was still running.
fn run_watching(dir: &Path, args: &[&str], watched: &[&Running]) -> (Finished, Vec<usize>) {
    let mut seen = vec![0; watched.len()];
    let done = thread::scope(|s| {
        let command = s.spawn(|| rewind_in(dir, args));
        while !command.is_finished() {
            for (seen, running) in seen.iter_mut().zip(watched) {
                *seen = (*seen).max(running.output().len());
            }
            thread::sleep(Duration::from_millis(2));
        }
        command.join().expect("the command's thread")
    });
    (done, seen)
}

/// `rewind command --ckpt-dir D FLAGS...` of `running`, watched ([`run_watching`]).
fn checkpoint_watching(running: &Running, flags: &[&str]) -> (Finished, usize) {
    let dir = running.ckpt_dir().to_string_lossy().into_owned();
    let mut args = vec!["command", "--ckpt-dir", dir.as_str()];
    args.extend_from_slice(flags);
    let (done, seen) = run_watching(running.ckpt_dir(), &args, &[running]);
    (done, seen[0])
}

/// The restarted image printed the end of the uninterrupted output; returns where in it the
/// checkpoint was (bytes printed before it).
#[track_caller]
fn assert_restarted_end(expected: &str, after: &Finished) -> usize {
    after.assert_success();
    assert!(
        !after.stdout.is_empty() && expected.ends_with(&after.stdout),
        "the restarted image must print the end of the uninterrupted run:\n{}\n{}",
        first_difference(
            &expected[expected.len().saturating_sub(after.stdout.len())..],
            &after.stdout
        ),
        after.describe()
    );
    expected.len() - after.stdout.len()
}

/// The program printed past the checkpoint while the command was still waiting for the images.
#[track_caller]
fn assert_ran_on(seen: usize, at_checkpoint: usize, expected: &str) {
    assert!(
        seen > at_checkpoint,
        "the program did not run on while its image was written: while the command waited it had \
         printed {seen} bytes, and the checkpoint caught it at byte {at_checkpoint} of:\n{expected}"
    );
}

#[track_caller]
fn times(report: &Value) -> (f64, f64) {
    let paused = report["paused_ms"].as_f64();
    let durable = report["durable_ms"].as_f64();
    match (paused, durable) {
        (Some(p), Some(d)) if p > 0.0 && p <= d => (p, d),
        _ => panic!("no pause and durability times, or a pause longer than the wait: {report:#}"),
    }
}

/// The real pid of the program of a session.
fn real_pid(running: &Running) -> String {
    let status: Value = serde_json::from_str(&running.status_json()).expect("status JSON");
    status["status"]["real_pid"].to_string()
}

/// Once the command returned, no copy of the program is left: only the program itself (if it
/// still runs) has its command line.
#[track_caller]
fn assert_no_copy_left(program: &Command, pid: &str) {
    let others: Vec<String> = processes_running(&argv_of(program))
        .into_iter()
        .filter(|p| p != pid)
        .collect();
    assert!(
        others.is_empty(),
        "processes other than the program (pid {pid}) run its command line after the checkpoint: {others:?}"
    );
}

#[test]
fn image_holds_memory_at_the_checkpoint_while_the_program_writes_on() {
    let scratch = Scratch::new("forked_memory_at_the_checkpoint");
    let program = counter(6001, false);
    let expected = expected_output(&program);
    let mut running = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("run.out")),
    );
    running.wait_for(Wait::LineContaining("pass 100"));
    let pid = real_pid(&running);
    let (done, seen) = checkpoint_watching(&running, &["--checkpoint", "--json"]);
    done.assert_success();
    assert_no_copy_left(&program, &pid);
    let report: Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", done.describe()));
    times(&report);
    let image = running
        .ckpt_dir()
        .join(report["image"].as_str().unwrap_or_default());
    assert!(image.is_file(), "no image {image:?}: {report:#}");

    let finished = running.wait();
    finished.assert_success();
    assert_eq!(
        finished.stdout,
        expected,
        "the checkpoint disturbed the program:\n{}",
        first_difference(&expected, &finished.stdout)
    );
    assert_nothing_left(&program);

    let after = restart(
        &image,
        &scratch.dir("ckpt-1"),
        &[],
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    let at_checkpoint = assert_restarted_end(&expected, &after);
    assert_ran_on(seen, at_checkpoint, &expected);
    assert_nothing_left(&program);
}

#[test]
fn a_process_tree_runs_on_while_its_images_are_written() {
    let scratch = Scratch::new("forked_tree");
    // The child rewrites the shared memory, the parent its private memory.
    let program = counter(6002, true);
    let expected = expected_output(&program);
    assert!(expected.contains("child ok"), "{expected}");
    let mut running = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("run.out")),
    );
    running.wait_for(Wait::LineContaining("pass 100"));
    let (done, seen) = checkpoint_watching(&running, &["--checkpoint"]);
    done.assert_success();
    let images: Vec<PathBuf> = done
        .stdout
        .lines()
        .map(|l| running.ckpt_dir().join(l.trim()))
        .collect();
    assert_eq!(
        images.len(),
        2,
        "one image per process:\n{}",
        done.describe()
    );
    assert!(
        done.stderr.contains("stopped") && done.stderr.contains("durable after"),
        "the command says how long the program was stopped and when the images were durable:\n{}",
        done.describe()
    );

    let finished = running.wait();
    finished.assert_success();
    assert_eq!(
        finished.stdout,
        expected,
        "{}",
        first_difference(&expected, &finished.stdout)
    );
    assert_nothing_left(&program);

    let after = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    let at_checkpoint = assert_restarted_end(&expected, &after);
    assert_ran_on(seen, at_checkpoint, &expected);
    assert_nothing_left(&program);
}

#[test]
fn a_subreaper_program_never_gets_a_copy_as_its_child() {
    // The child's copy would be orphaned below the parent, a subreaper, which would adopt it: the
    // child's image is written stopped instead. The parent's own copy is rewind's child.
    let scratch = Scratch::new("forked_subreaper");
    let program = subreaper_counter(6008);
    let expected = expected_output(&program);
    assert!(!expected.contains("did not make"), "{expected}");
    let mut running = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("run.out")),
    );
    running.wait_for(Wait::LineContaining("pass 100"));
    let written = running.checkpoint_tree_with(&["--checkpoint"]);
    assert_eq!(written.len(), 2, "one image per process: {written:?}");
    // Kept aside: the next checkpoint writes over them.
    let kept = scratch.dir("kept");
    let images: Vec<PathBuf> = written
        .iter()
        .map(|i| {
            let to = kept.join(i.file_name().expect("an image's name"));
            std::fs::rename(i, &to).expect("move the image");
            to
        })
        .collect();
    running.wait_for(Wait::LineContaining("pass 300"));
    running.checkpoint_tree_with(&["--checkpoint"]);
    let finished = running.wait();
    finished.assert_success();
    assert_eq!(
        finished.stdout,
        expected,
        "{}",
        first_difference(&expected, &finished.stdout)
    );
    assert_nothing_left(&program);
    let after = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    assert_restarted_end(&expected, &after);
    assert_nothing_left(&program);
}

#[test]
fn checkpoint_and_kill_writes_the_image_before_the_program_is_killed() {
    let scratch = Scratch::new("forked_kill");
    let program = counter(6005, false);
    let uninterrupted = run_uninterrupted(&program);
    let interrupted = checkpoint_kill_restart(&scratch, &program, Wait::LineContaining("pass 100"));
    // Nothing printed after the checkpoint by the killed program: it never ran on.
    interrupted.assert_matches(&uninterrupted);
    assert_nothing_left(&program);
}

#[test]
fn a_failed_checkpoint_with_kill_leaves_the_program_running() {
    let scratch = Scratch::new("forked_failed_kill");
    let program = counter(3009, false);
    let expected = expected_output(&program);
    let mut running = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("run.out")),
    );
    running.wait_for(Wait::LineContaining("pass 100"));
    // A directory holds the image's name: the image cannot be renamed into place.
    let taken = running
        .ckpt_dir()
        .join(format!("ckpt_cow_counter_{}.rwd", real_pid(&running)));
    std::fs::create_dir_all(taken.join("occupied")).expect("a directory at the image's name");
    let done = running.command(&["--checkpoint", "--kill"]);
    assert_fails_clearly(&done, &["not killed"]);
    let finished = running.wait();
    finished.assert_success();
    assert_eq!(
        finished.stdout,
        expected,
        "{}",
        first_difference(&expected, &finished.stdout)
    );
    assert_nothing_left(&program);
}

#[test]
fn periodic_checkpoints_while_the_program_runs_on() {
    let scratch = Scratch::new("forked_interval");
    let program = counter(9006, false);
    let expected = expected_output(&program);
    let ckpt0 = scratch.dir("ckpt-0");
    let finished = launch_with(
        &["--interval", "0.4"],
        &program,
        &ckpt0,
        Redirect::to(scratch.join("run.out")),
    )
    .wait();
    finished.assert_success();
    assert_eq!(
        finished.stdout,
        expected,
        "periodic checkpoints disturbed the program:\n{}",
        first_difference(&expected, &finished.stdout)
    );
    assert_nothing_left(&program);
    // The last periodic checkpoint's image, complete even if the program ended while it was being
    // written, restarts into the end of the same run.
    let images: Vec<PathBuf> = std::fs::read_dir(&ckpt0)
        .expect("checkpoint directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rwd"))
        .collect();
    assert_eq!(
        images.len(),
        1,
        "one image, rewritten by each checkpoint, and no temporary file left: {images:?}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&ckpt0)
        .expect("checkpoint directory")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "temporary images left: {leftovers:?}");
    let after = restart(
        &images[0],
        &scratch.dir("ckpt-1"),
        &[],
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    assert_restarted_end(&expected, &after);
    assert_nothing_left(&program);
}

#[test]
fn no_forked_checkpoints_keeps_the_program_stopped_until_the_image_is_durable() {
    let scratch = Scratch::new("forked_off");
    let program = counter(6007, false);
    let expected = expected_output(&program);
    let mut running = launch_with(
        &["--no-forked-checkpoints"],
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("run.out")),
    );
    running.wait_for(Wait::LineContaining("pass 100"));
    let done = running.command(&["--checkpoint", "--json"]);
    done.assert_success();
    let report: Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", done.describe()));
    let (paused, durable) = times(&report);
    // The write is part of the pause: only the moment between resuming the program and answering
    // separates them.
    assert!(
        paused >= 0.9 * durable,
        "stopped {paused} ms, durable after {durable} ms: {report:#}"
    );
    let image = running
        .ckpt_dir()
        .join(report["image"].as_str().unwrap_or_default());
    let finished = running.wait();
    assert_eq!(
        finished.stdout,
        expected,
        "{}",
        first_difference(&expected, &finished.stdout)
    );
    let after = restart(
        &image,
        &scratch.dir("ckpt-1"),
        &[],
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    assert_restarted_end(&expected, &after);
    assert_nothing_left(&program);
}

/// A `rewind coordinator` in the background (killed when dropped) and its address.
fn start_coordinator(scratch: &Scratch) -> (Running, String) {
    let mut coord = rewind_background(
        ["coordinator", "--listen", "127.0.0.1:0", "--timeout", "120"],
        scratch.path(),
        Redirect::to(scratch.join("coordinator.out")),
    );
    coord.wait_for(Wait::LineContaining("token: "));
    let addr = coord
        .output()
        .lines()
        .find_map(|l| {
            l.split_once("listening on ")
                .map(|(_, a)| a.trim().to_string())
        })
        .expect("the coordinator's address");
    (coord, addr)
}

#[track_caller]
fn wait_log(coord: &Running, words: &[&str], count: usize) {
    let deadline = Instant::now() + OUTPUT_TIMEOUT;
    while coord
        .output()
        .lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .count()
        < count
    {
        assert!(
            Instant::now() < deadline,
            "no {count} line(s) with {words:?} in the coordinator's log:\n{}",
            coord.output()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn coordinated_programs_run_on_while_their_images_are_written() {
    let scratch = Scratch::new("forked_coordinator");
    let single = counter(6003, false);
    let tree = counter(6004, true);
    let native = [(6003, false), (6004, true)]
        .map(|(passes, fork)| thread::spawn(move || expected_output(&counter(passes, fork))));
    let (coord, addr) = start_coordinator(&scratch);
    let mut launched: Vec<Running> = [(&single, "single"), (&tree, "tree")]
        .into_iter()
        .map(|(program, name)| {
            launch_with(
                &["--coordinator", &addr],
                program,
                &scratch.dir(&format!("ckpt-{name}")),
                Redirect::to(scratch.join(format!("{name}.out"))),
            )
        })
        .collect();
    for running in &mut launched {
        running.wait_for(Wait::LineContaining("pass 100"));
    }
    wait_log(&coord, &["joined"], 2);

    let (done, seen) = run_watching(
        scratch.path(),
        &["command", "--coordinator", &addr, "--checkpoint", "--json"],
        &[&launched[0], &launched[1]],
    );
    done.assert_success();
    let report: Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", done.describe()));
    assert_eq!(report["ok"], true, "{report:#}");
    let phases: Vec<&str> = report["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        phases,
        ["suspend", "drain", "capture", "resume"],
        "{report:#}"
    );
    let (paused, _) = times(&report);
    let sessions = report["sessions"].as_array().cloned().unwrap_or_default();
    assert_eq!(sessions.len(), 2, "{report:#}");
    let mut image_sets = Vec::new();
    for s in &sessions {
        let (p, _) = times(s);
        assert!(p <= paused, "the report's pause is the longest: {report:#}");
        let mut set = vec![PathBuf::from(s["image"].as_str().unwrap_or_default())];
        set.extend(
            s["also"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str())
                .map(PathBuf::from),
        );
        assert!(
            set.iter().all(|i| i.is_file()),
            "images not all there once the command returned: {report:#}"
        );
        image_sets.push((s["info"]["argv"].to_string(), set));
    }
    wait_log(
        &coord,
        &["checkpoint of 2 session(s)", "images durable after"],
        1,
    );

    let expected: Vec<String> = native
        .into_iter()
        .map(|n| n.join().expect("uninterrupted run"))
        .collect();
    for ((running, program), expected) in launched.into_iter().zip([&single, &tree]).zip(&expected)
    {
        let finished = running.wait();
        finished.assert_success();
        assert_eq!(
            &finished.stdout,
            expected,
            "{}",
            first_difference(expected, &finished.stdout)
        );
        assert_nothing_left(program);
    }
    for (i, (program, fork)) in [(&single, false), (&tree, true)].into_iter().enumerate() {
        let (_, images) = image_sets
            .iter()
            .find(|(argv, set)| {
                argv.contains(if fork { "\"6004\"" } else { "\"6003\"" }) && !set.is_empty()
            })
            .expect("the session's images");
        assert_eq!(images.len(), if fork { 2 } else { 1 }, "{report:#}");
        let after = restart_tree(
            images,
            &scratch.dir(&format!("restart-{i}")),
            Redirect::to(scratch.join(format!("after-{i}.out"))),
        )
        .wait();
        let at_checkpoint = assert_restarted_end(&expected[i], &after);
        assert_ran_on(seen[i], at_checkpoint, &expected[i]);
        assert_nothing_left(program);
    }
    drop(coord);
}
