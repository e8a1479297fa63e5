//! MPI programs under MPICH's `mpirun` (issue 7): `rewind launch -- mpirun -n 4 mpi_ring` follows
//! mpirun, hydra_pmi_proxy and the four ranks as one process tree; a checkpoint writes one image
//! per process; `rewind restart` of all of them brings the computation back. MPICH 4 (ch4:ucx)
//! moves data through UCX: System V and POSIX shared memory (segments deleted or marked removed
//! while mapped, opened by peers through /proc/<pid>/fd), cross-memory attach, TCP, socket pairs to
//! hydra_pmi_proxy and nested epolls. Oracle: the output before the checkpoint plus the output
//! after the restart is the uninterrupted run's, every rank having checked every block it received.
//!
//! These tests need MPICH (`mpicc`, `mpirun`): scripts/setup.sh installs it. Without it they fail,
//! saying so; they never skip.

use std::path::PathBuf;
use std::process::Command;

use rewind_tests::*;

/// The MPI runs take turns: a restart makes UCX's System V segments again with their old ids, which
/// a segment another run made in between could take.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// `mpirun -n RANKS mpi_ring ITERATIONS DELAY_US` (each test gives its own arguments, so parallel
/// tests do not see each other's processes), with `tls` as `UCX_TLS` when given.
fn mpi_ring(ranks: u32, iterations: u32, delay_us: u32, tls: Option<&str>) -> Command {
    let ring = PathBuf::from(env!("REWIND_TARGETS_DIR")).join("mpi_ring");
    assert!(
        ring.is_file(),
        "tests/targets/mpi_ring.c was not built: mpicc (MPICH) is not installed; \
         scripts/setup.sh installs mpich and libmpich-dev (then rebuild the tests)"
    );
    let mut program = system_program("mpirun");
    program
        .args(["-n", &ranks.to_string()])
        .arg(&ring)
        .args([iterations.to_string(), delay_us.to_string()]);
    if let Some(tls) = tls {
        program.env("UCX_TLS", tls);
    }
    program
}

/// The argv of the ranks of `program` (an [`mpi_ring`] command): what hydra_pmi_proxy runs.
fn ranks_argv(program: &Command) -> Vec<String> {
    argv_of(program).split_off(3)
}

/// The pid in an image's name (`ckpt_<prog>_<pid>.rwd`).
fn image_pid(image: &std::path::Path) -> i32 {
    image
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.rsplit('_').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in the image name {}", image.display()))
}

/// The images of one checkpoint of an MPI run: mpirun's first, then one hydra_pmi_proxy and
/// `ranks` ranks.
#[track_caller]
fn assert_images_of_the_run(images: &[PathBuf], ranks: usize) {
    let names: Vec<String> = images
        .iter()
        .map(|i| {
            i.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let count = |prefix: &str| names.iter().filter(|n| n.starts_with(prefix)).count();
    assert!(
        names.first().is_some_and(|n| n.starts_with("ckpt_mpirun_"))
            && count("ckpt_hydra_pmi_proxy_") == 1
            && count("ckpt_mpi_ring_") == ranks
            && names.len() == ranks + 2,
        "one image per process: mpirun first, hydra_pmi_proxy and {ranks} ranks: {names:?}"
    );
}

/// System V segments made by the processes of `images` (their pids are the images'), from
/// /proc/sysvipc/shm: none may outlive the program.
fn segments_made_by(images: &[PathBuf]) -> Vec<String> {
    let pids: Vec<i32> = images.iter().map(|i| image_pid(i)).collect();
    let table = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let Some(cpid) = header.iter().position(|c| *c == "cpid") else {
        return Vec::new();
    };
    lines
        .filter(|l| {
            l.split_whitespace()
                .nth(cpid)
                .and_then(|p| p.parse::<i32>().ok())
                .is_some_and(|p| pids.contains(&p))
        })
        .map(str::to_string)
        .collect()
}

/// Nothing of the run is left: no mpirun, no rank, no process of the images' pids still running
/// their program (hydra_pmi_proxy), no System V segment they made.
#[track_caller]
fn assert_run_left_nothing(program: &Command, images: &[PathBuf]) {
    assert_nothing_left(program);
    let mut ranks = Command::new(&ranks_argv(program)[0]);
    ranks.args(&ranks_argv(program)[1..]);
    assert_nothing_left(&ranks);
    let alive = || -> Vec<String> {
        images
            .iter()
            .filter_map(|i| {
                let pid = image_pid(i);
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let zombie = state
                    .rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'));
                let name = i.file_name()?.to_string_lossy().into_owned();
                (!zombie && name.contains(comm.trim())).then(|| format!("{pid} ({})", comm.trim()))
            })
            .collect()
    };
    for _ in 0..250 {
        if alive().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(alive().is_empty(), "processes left behind: {:?}", alive());
    let segments = segments_made_by(images);
    assert!(
        segments.is_empty(),
        "System V segments of the run left behind:\n{}",
        segments.join("\n")
    );
}

/// Checkpoint an MPI run mid-way, kill every process, restart all the images: the restarted
/// computation prints the rest of the uninterrupted run.
fn checkpoint_kill_restart_mpi(test: &str, program: &Command, wait: Wait) {
    let _turn = turn();
    let scratch = Scratch::new(test);
    let uninterrupted = run_uninterrupted(program);
    let mut running = launch(
        program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    running.wait_for(wait);
    let images = running.checkpoint_tree_and_kill();
    assert_images_of_the_run(&images, 4);
    let before = running.wait_timeout(KILL_TIMEOUT);
    assert_run_left_nothing(program, &images);
    let after = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    assert_pieces_match(&uninterrupted, &[&before.stdout, &after.stdout], &after);
    assert_run_left_nothing(program, &images);
}

#[test]
fn mpi_ring_of_4_ranks_checkpoint_kill_restart() {
    // UCX's default transports here: System V and POSIX shared memory, cross-memory attach.
    checkpoint_kill_restart_mpi(
        "mpi_ring_of_4_ranks_checkpoint_kill_restart",
        &mpi_ring(4, 90, 15000, None),
        Wait::LineContaining("iteration 30:"),
    );
}

#[test]
fn mpi_ring_over_tcp_checkpoint_kill_restart() {
    // The ranks talk over TCP (loopback) only.
    checkpoint_kill_restart_mpi(
        "mpi_ring_over_tcp_checkpoint_kill_restart",
        &mpi_ring(4, 91, 15000, Some("tcp,self")),
        Wait::LineContaining("iteration 30:"),
    );
}

#[test]
fn mpi_ring_runs_on_after_a_checkpoint_and_restarts_from_it() {
    let _turn = turn();
    let scratch = Scratch::new("mpi_ring_runs_on_after_a_checkpoint");
    let program = mpi_ring(4, 92, 15000, None);
    let uninterrupted = run_uninterrupted(&program);
    let expected = String::from_utf8_lossy(&uninterrupted.stdout).into_owned();
    let mut running = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("run.out")),
    );
    running.wait_for(Wait::LineContaining("iteration 30:"));
    let images = running.checkpoint_tree_with(&["--checkpoint"]);
    assert_images_of_the_run(&images, 4);
    // The computation goes on from the checkpoint to the same end.
    let done = running.wait();
    done.assert_success();
    assert_eq!(
        done.stdout,
        expected,
        "the run checkpointed on the way differs: {}\n{}",
        first_difference(&expected, &done.stdout),
        done.describe()
    );
    assert_run_left_nothing(&program, &images);
    // Its images, restarted once it has ended, run the rest of the same computation again.
    let after = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    after.assert_success();
    assert!(
        after.stdout.lines().count() > 1 && expected.ends_with(&after.stdout),
        "the restarted run must print the end of the uninterrupted run:\n{}",
        first_difference(
            &expected[expected.len().saturating_sub(after.stdout.len())..],
            &after.stdout
        )
    );
    assert_run_left_nothing(&program, &images);
}
