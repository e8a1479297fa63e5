//! Process trees (issue 7, item 1): a program that forks runs under one `rewind launch`; a checkpoint
//! stops and captures every process (one image each), and `rewind restart` of those images recreates
//! the tree: each restored child is a child of its restored parent (wait works), pids are the old
//! ones, pipes between processes keep the bytes in flight. Oracle: the uninterrupted output equals
//! the output before the checkpoint plus the output after the restart. No process may be left
//! behind.

use std::path::PathBuf;
use std::process::Command;

use rewind_tests::*;

fn tree_pipe(steps: u32) -> Command {
    let mut program = fixture("tree_pipe");
    program.arg(steps.to_string());
    program
}

#[test]
fn tree_runs_to_its_end_under_launch() {
    let scratch = Scratch::new("tree_runs_to_its_end_under_launch");
    let program = tree_pipe(12);
    let uninterrupted = run_uninterrupted(&program);
    let done = launch(
        &program,
        &scratch.dir("ckpt"),
        Redirect::to(scratch.join("out")),
    )
    .wait();
    done.assert_success();
    assert_eq!(
        done.stdout,
        String::from_utf8_lossy(&uninterrupted.stdout),
        "{}",
        done.describe()
    );
    assert_nothing_left(&program);
}

#[test]
fn tree_with_pipes_checkpoint_kill_restart() {
    let scratch = Scratch::new("tree_with_pipes_checkpoint_kill_restart");
    let program = tree_pipe(40);
    let uninterrupted = run_uninterrupted(&program);
    let mut running = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    running.wait_for(Wait::LineContaining("parent 10: got"));
    let status: serde_json::Value =
        serde_json::from_str(running.status_json().trim()).expect("status JSON");
    assert_eq!(
        status["status"]["processes"].as_array().map(Vec::len),
        Some(2),
        "the session follows the parent and its child: {status}"
    );
    let images = running.checkpoint_tree_and_kill();
    assert_eq!(
        images.len(),
        2,
        "one image per process (parent and child): {images:?}"
    );
    let before = running.wait_timeout(KILL_TIMEOUT);
    // The launch is gone and so is every process of the tree.
    assert_nothing_left(&program);
    let after = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    assert_pieces_match(&uninterrupted, &[&before.stdout, &after.stdout], &after);
    // The restored child is the restored parent's own child, with its old pid.
    assert!(
        after.stdout.contains("parent is mine") && after.stdout.contains("waitpid: my child"),
        "{}",
        after.describe()
    );
    assert_nothing_left(&program);
}

#[test]
fn tree_checkpointed_twice_in_a_chain() {
    let scratch = Scratch::new("tree_checkpointed_twice_in_a_chain");
    let program = tree_pipe(41);
    let uninterrupted = run_uninterrupted(&program);
    let chain = checkpoint_chain(
        &scratch,
        &program,
        &[
            Wait::LineContaining("parent 8: got"),
            Wait::LineContaining("parent 25: got"),
        ],
    );
    assert_eq!(
        chain.images.len(),
        4,
        "two processes, twice: {:?}",
        chain.images
    );
    chain.assert_matches(&uninterrupted);
    assert_nothing_left(&program);
}

#[test]
fn bash_pipeline_checkpoint_kill_restart() {
    // bash forks and execs both sides of the pipeline; tree_pipe forks its own child: four
    // processes, the pipe between tree_pipe (both processes write to it) and cat.
    let scratch = Scratch::new("bash_pipeline_checkpoint_kill_restart");
    let fixture_path = target("tree_pipe");
    let script = format!("{} 42 | cat", fixture_path.display());
    let mut program = system_program("bash");
    program.arg("-c").arg(&script);
    let uninterrupted = run_uninterrupted(&program);
    let mut running = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    running.wait_for(Wait::LineContaining("parent 12: got"));
    let images = running.checkpoint_tree_and_kill();
    let names: Vec<String> = images
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    assert_eq!(images.len(), 4, "bash, tree_pipe twice, cat: {names:?}");
    assert!(
        names[0].starts_with("ckpt_bash_"),
        "the root first: {names:?}"
    );
    let before = running.wait_timeout(KILL_TIMEOUT);
    let leftover_check = {
        let mut p = Command::new(&fixture_path);
        p.arg("42");
        p
    };
    assert_nothing_left(&leftover_check);
    // In another order (the root last): restart finds the root by the images' parent links.
    let mut reversed = images.clone();
    reversed.reverse();
    let after = restart_tree(
        &reversed,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    assert_pieces_match(&uninterrupted, &[&before.stdout, &after.stdout], &after);
    assert_nothing_left(&leftover_check);
    assert_nothing_left(&program);
}

#[test]
fn restart_of_a_tree_refuses_a_missing_image() {
    let scratch = Scratch::new("restart_of_a_tree_refuses_a_missing_image");
    let images: Vec<PathBuf> = vec![
        scratch.join("ckpt_none_1.rwd"),
        scratch.join("ckpt_none_2.rwd"),
    ];
    let done = rewind_in(
        scratch.path(),
        [
            "restart".as_ref(),
            "--ckpt-dir".as_ref(),
            scratch.path().as_os_str(),
        ]
        .into_iter()
        .chain(images.iter().map(|p| p.as_os_str())),
    );
    assert_fails_clearly(&done, &["no such image"]);
}

#[test]
fn tree_keeps_sessions_and_process_groups() {
    // A child leads its own session, another leads its own group with a grandchild in it (three
    // levels); the parent checks them at every step and ends them with a signal to the group.
    let scratch = Scratch::new("tree_keeps_sessions_and_process_groups");
    let mut program = fixture("tree_groups");
    program.arg("30");
    let uninterrupted = run_uninterrupted(&program);
    let mut running = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    running.wait_for(Wait::LineContaining("step 8:"));
    let images = running.checkpoint_tree_and_kill();
    assert_eq!(
        images.len(),
        4,
        "parent, two children, a grandchild: {images:?}"
    );
    let before = running.wait_timeout(KILL_TIMEOUT);
    assert_nothing_left(&program);
    let after = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    assert_pieces_match(&uninterrupted, &[&before.stdout, &after.stdout], &after);
    assert_nothing_left(&program);
}

#[test]
fn checkpoints_during_vfork_and_posix_spawn() {
    // A vfork parent cannot stop before its child execs: checkpoints taken meanwhile let the child
    // reach its exec first. Several checkpoints of a running program, then a chain of two restarts.
    let scratch = Scratch::new("checkpoints_during_vfork_and_posix_spawn");
    let mut program = fixture("tree_vfork");
    program.arg("61");
    let uninterrupted = run_uninterrupted(&program);
    let mut running = launch(
        &program,
        &scratch.dir("ckpt-live"),
        Redirect::to(scratch.join("live.out")),
    );
    running.wait_for(Wait::Lines(3));
    for _ in 0..6 {
        let done = running.command(&["--checkpoint"]);
        assert!(done.status.success(), "{}", done.describe());
        std::thread::sleep(std::time::Duration::from_millis(40));
    }
    let live = running.wait();
    live.assert_success();
    assert_eq!(
        live.stdout,
        String::from_utf8_lossy(&uninterrupted.stdout),
        "{}",
        live.describe()
    );
    let chain = checkpoint_chain(&scratch, &program, &[Wait::Lines(11), Wait::Lines(26)]);
    chain.assert_matches(&uninterrupted);
    assert_nothing_left(&program);
}

#[test]
fn tree_restarted_while_the_original_runs_translates_ids() {
    // The original tree keeps its pids, so the restored one cannot have them back: the child must
    // still see its parent's old pid (getppid) and the parent reap its child by its old pid.
    let scratch = Scratch::new("tree_restarted_while_the_original_runs_translates_ids");
    let program = tree_pipe(43);
    let uninterrupted = String::from_utf8_lossy(&run_uninterrupted(&program).stdout).into_owned();
    let mut launched = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("original.out")),
    );
    launched.wait_for(Wait::LineContaining("parent 6: got"));
    let images = launched.checkpoint_tree_with(&["--checkpoint"]);
    assert_eq!(images.len(), 2, "{images:?}");
    let copy = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("copy.out")),
    )
    .wait();
    copy.assert_success();
    let original = launched.wait();
    original.assert_success();
    assert_eq!(
        original.stdout, uninterrupted,
        "the original must be unaffected"
    );
    let n = copy.stdout.lines().count();
    assert!(
        n > 0 && n < uninterrupted.lines().count(),
        "copy printed {n} lines:\n{}",
        copy.stdout
    );
    let expected: String = uninterrupted
        .lines()
        .skip(uninterrupted.lines().count() - n)
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        copy.stdout,
        expected,
        "{}",
        first_difference(&expected, &copy.stdout)
    );
    assert_nothing_left(&program);
}

/// Children that have ended but are not reaped yet when the checkpoint lands (a compiler driver
/// whose cc1 just finished, a shell's command substitution) come back as zombies of the restarted
/// parent, with their pid and status (exit codes and signals): its wait finds them. Without them
/// `wait` failed with ECHILD (`gcc: fatal error: failed to get exit status`).
#[test]
fn unreaped_children_are_waited_for_after_restart() {
    let scratch = Scratch::new("unreaped_children_are_waited_for_after_restart");
    let mut program = fixture("tree_zombie");
    program.arg("14");
    let uninterrupted = run_uninterrupted(&program);
    let chain = checkpoint_chain(
        &scratch,
        &program,
        &[
            Wait::LineContaining("round  3: child ended"),
            // Round 5's child was killed by a signal.
            Wait::LineContaining("round  5: child ended"),
        ],
    );
    chain.assert_matches(&uninterrupted);
    assert_nothing_left(&program);
}

fn tree_cma(steps: u32) -> Command {
    let mut program = fixture("tree_cma");
    program.args([steps.to_string(), "30000".to_string()]);
    program
}

#[test]
fn processes_reading_each_others_memory_checkpoint_kill_restart() {
    let scratch = Scratch::new("processes_reading_each_others_memory");
    let program = tree_cma(40);
    let uninterrupted = run_uninterrupted(&program);
    let mut running = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    running.wait_for(Wait::LineContaining("step 10:"));
    let images = running.checkpoint_tree_and_kill();
    assert_eq!(images.len(), 2, "{images:?}");
    let before = running.wait_timeout(KILL_TIMEOUT);
    assert_nothing_left(&program);
    let after = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    assert_pieces_match(&uninterrupted, &[&before.stdout, &after.stdout], &after);
    assert_nothing_left(&program);
}

#[test]
fn processes_reading_each_others_memory_by_old_pids_while_the_original_runs() {
    // The original keeps its pids: the copy's process_vm_readv/writev name them and must reach the
    // copy's own processes, not the original's.
    let scratch = Scratch::new("processes_reading_each_others_memory_by_old_pids");
    let program = tree_cma(41);
    let uninterrupted = String::from_utf8_lossy(&run_uninterrupted(&program).stdout).into_owned();
    let mut launched = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("original.out")),
    );
    launched.wait_for(Wait::LineContaining("step 8:"));
    let images = launched.checkpoint_tree_with(&["--checkpoint"]);
    assert_eq!(images.len(), 2, "{images:?}");
    let copy = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("copy.out")),
    )
    .wait();
    copy.assert_success();
    let original = launched.wait();
    original.assert_success();
    assert_eq!(
        original.stdout,
        uninterrupted,
        "the original must be unaffected: {}",
        first_difference(&uninterrupted, &original.stdout)
    );
    let n = copy.stdout.lines().count();
    assert!(
        n > 1 && n < uninterrupted.lines().count(),
        "copy printed {n} lines:\n{}",
        copy.stdout
    );
    let expected: String = uninterrupted
        .lines()
        .skip(uninterrupted.lines().count() - n)
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        copy.stdout,
        expected,
        "{}",
        first_difference(&expected, &copy.stdout)
    );
    assert_nothing_left(&program);
}
