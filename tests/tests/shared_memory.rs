//! Shared memory and System V IPC across checkpoint and restart (issue 7, part 3). A producer and
//! a consumer (parent and forked child) pass items through a ring buffer in shared memory guarded by
//! semaphores that live in it (`shm_ring.c`: anonymous, memfd, POSIX shm linked or unlinked), or
//! through a System V segment, semaphore set and message queue (`sysv_ipc.c`). Oracle: the output
//! before the checkpoint followed by the output after the restart equals the uninterrupted run's. A
//! restart that gave each process a copy of its own would leave the consumer waiting forever (the
//! test times out), and a wrong copy of the contents changes the printed words and checksums. No
//! process, System V object or /dev/shm file may be left behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use rewind_tests::*;

fn argv_of(program: &Command) -> Vec<String> {
    std::iter::once(program.get_program())
        .chain(program.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// Processes whose command line is exactly the program's (each test runs its fixture with
/// arguments of its own, so parallel tests do not see each other's).
fn processes_running(program: &Command) -> Vec<String> {
    let argv = argv_of(program);
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args == argv {
            found.push(name);
        }
    }
    found
}

#[track_caller]
fn assert_nothing_left(program: &Command) {
    for _ in 0..100 {
        if processes_running(program).is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!(
        "processes left behind: {:?} running {:?}",
        processes_running(program),
        argv_of(program)
    );
}

/// A name of this test run's own (POSIX shm names, System V keys).
fn unique(n: u32) -> u32 {
    ((std::process::id() & 0xffff) << 8) | n
}

fn shm_ring(mode: &str, items: u32, block_mib: u32, name: &str) -> Command {
    let mut program = fixture("shm_ring");
    program.args([mode, &items.to_string(), &block_mib.to_string(), name, "20"]);
    program
}

fn image_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Launch, checkpoint the tree after `wait`, kill it; returns what it printed and the images.
fn checkpoint_tree_and_kill(
    scratch: &Scratch,
    program: &Command,
    wait: Wait,
) -> (String, Vec<PathBuf>) {
    let mut running = launch(
        program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    running.wait_for(wait);
    let images = running.checkpoint_tree_and_kill();
    let before = running.wait_timeout(KILL_TIMEOUT);
    assert!(!before.stderr.contains("panicked"), "{}", before.describe());
    assert_nothing_left(program);
    assert_eq!(images.len(), 2, "one image per process: {images:?}");
    (before.stdout, images)
}

#[test]
fn shared_anonymous_ring_is_one_object_after_restart() {
    let scratch = Scratch::new("shared_anonymous_ring_is_one_object_after_restart");
    // A 4 MiB block of random bytes rides along.
    let program = shm_ring("anon", 61, 4, "unused");
    let uninterrupted = run_uninterrupted(&program);
    let (before, images) =
        checkpoint_tree_and_kill(&scratch, &program, Wait::LineContaining("item 15 "));
    // Stored once, by the root's image; the child's holds its own memory only.
    assert!(
        image_size(&images[0]) > 7 << 19 && image_size(&images[1]) < 1 << 20,
        "the shared block must be stored once, in the root's image: {} bytes and {} bytes",
        image_size(&images[0]),
        image_size(&images[1])
    );
    let after = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    assert_pieces_match(&uninterrupted, &[&before, &after.stdout], &after);
    assert_nothing_left(&program);

    // The child's image alone lacks the memory its parent's stores.
    let alone = rewind_in(
        &scratch.dir("ckpt-2"),
        [
            std::ffi::OsString::from("restart"),
            images[1].clone().into_os_string(),
        ],
    );
    assert_fails_clearly(&alone, &["stored in the image of another process"]);
    assert_nothing_left(&program);
}

#[test]
fn shared_anonymous_ring_runs_on_after_a_checkpoint() {
    let scratch = Scratch::new("shared_anonymous_ring_runs_on_after_a_checkpoint");
    let program = shm_ring("anon", 62, 1, "unused");
    let uninterrupted = run_uninterrupted(&program);
    let expected = String::from_utf8_lossy(&uninterrupted.stdout).into_owned();
    let mut running = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("run.out")),
    );
    running.wait_for(Wait::LineContaining("item 10 "));
    let images = running.checkpoint_tree_with(&["--checkpoint"]);
    let done = running.wait();
    done.assert_success();
    assert_eq!(done.stdout, expected, "{}", done.describe());
    assert_nothing_left(&program);
    // The images of that checkpoint restart into the rest of the same run.
    let after = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    after.assert_success();
    assert!(
        !after.stdout.is_empty() && expected.ends_with(&after.stdout),
        "the restarted run must print the end of the uninterrupted run:\n{}",
        first_difference(
            &expected[expected.len().saturating_sub(after.stdout.len())..],
            &after.stdout
        )
    );
    assert_nothing_left(&program);
}

#[test]
fn memfd_ring_checkpointed_twice_in_a_chain() {
    let scratch = Scratch::new("memfd_ring_checkpointed_twice_in_a_chain");
    let program = shm_ring("memfd", 63, 1, "unused");
    let uninterrupted = run_uninterrupted(&program);
    let chain = checkpoint_chain(
        &scratch,
        &program,
        &[
            Wait::LineContaining("item 10 "),
            Wait::LineContaining("item 30 "),
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

fn dev_shm(name: &str) -> PathBuf {
    Path::new("/dev/shm").join(name)
}

/// Removes a /dev/shm file when dropped (a failing test leaves none).
struct ShmFile(PathBuf);

impl Drop for ShmFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn posix_shm_gets_the_checkpoint_contents_back() {
    let scratch = Scratch::new("posix_shm_gets_the_checkpoint_contents_back");
    let name = format!("rewind-test-ring-{}", unique(1));
    let _cleanup = ShmFile(dev_shm(&name));
    let program = shm_ring("posix", 64, 1, &name);
    let uninterrupted = run_uninterrupted(&program);
    assert!(
        !dev_shm(&name).exists(),
        "the program removes its shm object"
    );
    let (before, images) =
        checkpoint_tree_and_kill(&scratch, &program, Wait::LineContaining("item 15 "));
    // The object outlived the program; something else writes all over it.
    let path = dev_shm(&name);
    let len = std::fs::metadata(&path)
        .map(|m| m.len())
        .expect("the shm object is still there");
    std::fs::write(&path, vec![0xa5u8; len as usize]).expect("scribble over the shm object");
    let after = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    assert_pieces_match(&uninterrupted, &[&before, &after.stdout], &after);
    assert!(
        !path.exists(),
        "the restarted program removed its shm object"
    );
    assert_nothing_left(&program);
}

#[test]
fn posix_shm_removed_after_the_checkpoint_is_made_again() {
    let scratch = Scratch::new("posix_shm_removed_after_the_checkpoint_is_made_again");
    let name = format!("rewind-test-ring-{}", unique(2));
    let _cleanup = ShmFile(dev_shm(&name));
    let program = shm_ring("posix", 65, 1, &name);
    let uninterrupted = run_uninterrupted(&program);
    let (before, images) =
        checkpoint_tree_and_kill(&scratch, &program, Wait::LineContaining("item 15 "));
    std::fs::remove_file(dev_shm(&name)).expect("remove the shm object");
    let mut restarted = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    );
    restarted.wait_for(Wait::LineContaining("item 20 "));
    // Back at its path with its mode, while the program runs.
    let md = std::fs::metadata(dev_shm(&name)).expect("the shm object is back");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o7777,
        0o600
    );
    let after = restarted.wait();
    assert_pieces_match(&uninterrupted, &[&before, &after.stdout], &after);
    assert!(!dev_shm(&name).exists(), "the restarted program removed it");
    assert_nothing_left(&program);
}

#[test]
fn unlinked_posix_shm_ring_checkpoint_kill_restart() {
    let scratch = Scratch::new("unlinked_posix_shm_ring_checkpoint_kill_restart");
    let name = format!("rewind-test-ring-{}", unique(3));
    let _cleanup = ShmFile(dev_shm(&name));
    let program = shm_ring("posix-unlinked", 66, 2, &name);
    let uninterrupted = run_uninterrupted(&program);
    let (before, images) =
        checkpoint_tree_and_kill(&scratch, &program, Wait::LineContaining("item 15 "));
    let after = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    assert_pieces_match(&uninterrupted, &[&before, &after.stdout], &after);
    assert!(!dev_shm(&name).exists());
    assert_nothing_left(&program);
}

/// A descriptor of shared memory the program maps too, opened by children through
/// /proc/<parent>/fd after the restart (UCX's way): the children's writes must reach the parent's
/// mapping, so the descriptor and the mapping must come back as one object.
fn descriptor_and_mapping_are_one_object(test: &str, mode: &str, n: u32) {
    let scratch = Scratch::new(test);
    let name = format!("rewind-test-fdpeer-{}", unique(n));
    let _cleanup = ShmFile(dev_shm(&name));
    let mut program = fixture("shm_fd_peer");
    program.args([mode, &name, "40", "30000"]);
    let uninterrupted = run_uninterrupted(&program);
    // The parent alone, or with a child of a step.
    let mut running = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    running.wait_for(Wait::LineContaining("step 12:"));
    let images = running.checkpoint_tree_and_kill();
    let before = running.wait_timeout(KILL_TIMEOUT).stdout;
    assert_nothing_left(&program);
    let after = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    assert_pieces_match(&uninterrupted, &[&before, &after.stdout], &after);
    assert!(!dev_shm(&name).exists());
    assert_nothing_left(&program);
}

#[test]
fn unlinked_posix_shm_descriptor_opened_by_children_after_restart() {
    descriptor_and_mapping_are_one_object(
        "unlinked_posix_shm_descriptor_opened_by_children",
        "posix",
        6,
    );
}

#[test]
fn memfd_descriptor_opened_by_children_after_restart() {
    descriptor_and_mapping_are_one_object("memfd_descriptor_opened_by_children", "memfd", 7);
}

// ---------------------------------------------------------------------------------------------
// System V IPC
// ---------------------------------------------------------------------------------------------

/// The System V tests take turns: a restart that makes an object with its old id writes
/// `*_next_id` and then creates it, and an object another test made in between would take that id.
static SYSV_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sysv_turn() -> std::sync::MutexGuard<'static, ()> {
    SYSV_TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// One System V object as /proc/sysvipc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IpcObject {
    /// "m", "s" or "q", as ipcrm's options.
    kind: &'static str,
    key: i64,
    id: i64,
    /// Octal permission column, with SHM_DEST (01000) for a segment marked removed.
    perms: u32,
    /// Messages queued in a queue; attaches of a segment; semaphores of a set.
    count: u64,
}

fn ipc_objects() -> Vec<IpcObject> {
    let mut out = Vec::new();
    for (kind, file, count_col) in [("m", "shm", 6), ("s", "sem", 3), ("q", "msg", 4)] {
        let text = std::fs::read_to_string(format!("/proc/sysvipc/{file}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| cols.get(i).and_then(|c| c.parse::<i64>().ok());
            if let (Some(key), Some(id), Some(perms)) = (
                num(0),
                num(1),
                cols.get(2).and_then(|p| u32::from_str_radix(p, 8).ok()),
            ) {
                out.push(IpcObject {
                    kind,
                    key,
                    id,
                    perms,
                    count: num(count_col).unwrap_or(0) as u64,
                });
            }
        }
    }
    out
}

/// The objects of the fixture: with these ids or keys.
fn objects_of(keys: &[i64], ids: &[(&str, i64)]) -> Vec<IpcObject> {
    ipc_objects()
        .into_iter()
        .filter(|o| {
            (o.key != 0 && keys.contains(&o.key))
                || ids.iter().any(|&(k, id)| k == o.kind && id == o.id)
        })
        .collect()
}

/// Removes the System V objects with these keys or ids when dropped (a failing test leaves none).
struct IpcCleanup {
    keys: Vec<i64>,
    ids: Vec<(&'static str, i64)>,
}

impl Drop for IpcCleanup {
    fn drop(&mut self) {
        for o in objects_of(&self.keys, &self.ids) {
            let _ = Command::new("ipcrm")
                .arg(format!("-{}", o.kind))
                .arg(o.id.to_string())
                .output();
        }
    }
}

fn sysv_ipc(items: u32, key: i64, rmid: bool, pause_ms: u32) -> Command {
    let mut program = fixture("sysv_ipc");
    program.args([
        items.to_string(),
        format!("{key:#x}"),
        if rmid { "rmid" } else { "keep" }.to_string(),
        pause_ms.to_string(),
    ]);
    program
}

/// The ids the fixture printed on stderr: ("m" | "s" | "q", id): its segment, semaphore set,
/// queue and the segment of its note (detached while it runs).
fn fixture_ids(stderr: &str) -> Vec<(&'static str, i64)> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("ids: "))
        .unwrap_or_else(|| panic!("the fixture did not print its ids:\n{stderr}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let id = |name: &str| {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1))
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("no {name} id in {line:?}"))
    };
    vec![
        ("m", id("shm")),
        ("s", id("sem")),
        ("q", id("msg")),
        ("m", id("spare")),
    ]
}

/// Launch the fixture, checkpoint it after `wait` and kill it: (output, stderr, images).
fn sysv_checkpoint_and_kill(
    scratch: &Scratch,
    program: &Command,
    wait: Wait,
) -> (String, String, Vec<PathBuf>) {
    let mut running = launch(
        program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    running.wait_for(wait);
    let images = running.checkpoint_tree_and_kill();
    let before = running.wait_timeout(KILL_TIMEOUT);
    assert!(!before.stderr.contains("panicked"), "{}", before.describe());
    assert_nothing_left(program);
    assert_eq!(images.len(), 2, "one image per process: {images:?}");
    (before.stdout, before.stderr, images)
}

#[test]
fn sysv_ipc_ring_and_queue_checkpoint_kill_restart() {
    let _turn = sysv_turn();
    let scratch = Scratch::new("sysv_ipc_ring_and_queue_checkpoint_kill_restart");
    let key = 0x5200_0000 | i64::from(unique(0x10));
    let keys = [key, key + 1, key + 2, key + 3];
    let mut cleanup = IpcCleanup {
        keys: keys.to_vec(),
        ids: Vec::new(),
    };
    let program = sysv_ipc(60, key, false, 20);
    let uninterrupted = run_uninterrupted(&program);
    assert!(
        objects_of(&keys, &[]).is_empty(),
        "the program removes its objects"
    );
    let (before, stderr, images) =
        sysv_checkpoint_and_kill(&scratch, &program, Wait::LineContaining("item 15 "));
    let ids = fixture_ids(&stderr);
    cleanup.ids = ids.clone();
    // The objects outlived the program, messages queued.
    let left = objects_of(&keys, &[]);
    let queue = left
        .iter()
        .find(|o| o.kind == "q")
        .expect("the queue is still there");
    assert!(
        queue.count >= 4,
        "messages are queued at the checkpoint: {left:?}"
    );
    let mut restarted = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    );
    restarted.wait_for(Wait::LineContaining("item 20 "));
    let now: Vec<(&str, i64)> = objects_of(&keys, &[])
        .iter()
        .map(|o| (o.kind, o.id))
        .collect();
    for id in &ids {
        assert!(
            now.contains(id),
            "object {id:?} keeps its id and key: {now:?}"
        );
    }
    let after = restarted.wait();
    assert_pieces_match(&uninterrupted, &[&before, &after.stdout], &after);
    assert!(
        objects_of(&keys, &ids).is_empty(),
        "objects left: {:?}",
        objects_of(&keys, &ids)
    );
    assert_nothing_left(&program);
}

#[test]
fn sysv_objects_removed_after_the_checkpoint_come_back_with_their_ids() {
    let _turn = sysv_turn();
    let scratch = Scratch::new("sysv_removed_objects_come_back");
    // IPC_PRIVATE objects, the segment marked removed while attached.
    let program = sysv_ipc(67, 0, true, 25);
    let uninterrupted = run_uninterrupted(&program);
    let (before, stderr, images) =
        sysv_checkpoint_and_kill(&scratch, &program, Wait::LineContaining("item 15 "));
    let ids = fixture_ids(&stderr);
    let _cleanup = IpcCleanup {
        keys: Vec::new(),
        ids: ids.clone(),
    };
    // The ring's segment went with its last attach; remove the others too.
    for o in objects_of(&[], &ids) {
        let done = Command::new("ipcrm")
            .arg(format!("-{}", o.kind))
            .arg(o.id.to_string())
            .output()
            .expect("ipcrm");
        assert!(done.status.success(), "ipcrm: {done:?}");
    }
    assert!(objects_of(&[], &ids).is_empty());
    let mut restarted = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    );
    restarted.wait_for(Wait::LineContaining("item 20 "));
    let now = objects_of(&[], &ids);
    assert_eq!(
        now.len(),
        4,
        "all four are back with their ids: {now:?} (wanted {ids:?})"
    );
    let shm = now
        .iter()
        .find(|o| o.kind == "m" && o.id == ids[0].1)
        .expect("segment");
    assert!(
        shm.perms & 0o1000 != 0 && shm.count == 2,
        "the segment is attached by both processes and marked removed again: {shm:?}"
    );
    let after = restarted.wait();
    assert_pieces_match(&uninterrupted, &[&before, &after.stdout], &after);
    assert!(
        objects_of(&[], &ids).is_empty(),
        "objects left: {:?}",
        objects_of(&[], &ids)
    );
    assert_nothing_left(&program);
}

#[test]
fn sysv_segment_of_a_program_running_on_after_a_checkpoint() {
    // A forked checkpoint: the segment is read while the program is stopped, its copy lets go of it
    // (a segment marked removed goes with the program's last detach), and the images restart into
    // the rest of the run after the program removed its objects.
    let _turn = sysv_turn();
    let scratch = Scratch::new("sysv_segment_running_on");
    let program = sysv_ipc(69, 0, true, 20);
    let uninterrupted = run_uninterrupted(&program);
    let expected = String::from_utf8_lossy(&uninterrupted.stdout).into_owned();
    let mut running = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("run.out")),
    );
    running.wait_for(Wait::LineContaining("item 15 "));
    let images = running.checkpoint_tree_with(&["--checkpoint"]);
    assert_eq!(images.len(), 2, "one image per process: {images:?}");
    let done = running.wait();
    done.assert_success();
    assert_eq!(done.stdout, expected, "{}", done.describe());
    let ids = fixture_ids(&done.stderr);
    let _cleanup = IpcCleanup {
        keys: Vec::new(),
        ids: ids.clone(),
    };
    assert!(
        objects_of(&[], &ids).is_empty(),
        "the program removed its objects, and nothing keeps them: {:?}",
        objects_of(&[], &ids)
    );
    assert_nothing_left(&program);
    let after = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    after.assert_success();
    assert!(
        !after.stdout.is_empty() && expected.ends_with(&after.stdout),
        "the restarted run must print the end of the uninterrupted run:\n{}",
        first_difference(
            &expected[expected.len().saturating_sub(after.stdout.len())..],
            &after.stdout
        )
    );
    assert!(
        objects_of(&[], &ids).is_empty(),
        "objects left: {:?}",
        objects_of(&[], &ids)
    );
    assert_nothing_left(&program);
}

#[test]
fn sysv_id_taken_by_another_object_is_refused_clearly() {
    let _turn = sysv_turn();
    let scratch = Scratch::new("sysv_id_taken_by_another_object_is_refused_clearly");
    let key = 0x5200_0000 | i64::from(unique(0x20));
    let keys = [key, key + 1, key + 2, key + 3];
    let mut cleanup = IpcCleanup {
        keys: keys.to_vec(),
        ids: Vec::new(),
    };
    let program = sysv_ipc(68, key, false, 20);
    let (_, stderr, images) =
        sysv_checkpoint_and_kill(&scratch, &program, Wait::LineContaining("item 5 "));
    let ids = fixture_ids(&stderr);
    let sem = ids
        .iter()
        .find(|i| i.0 == "s")
        .map(|i| i.1)
        .expect("set id");
    // Another semaphore set takes the program's set's id.
    let removed = Command::new("ipcrm")
        .args(["-s", &sem.to_string()])
        .output()
        .expect("ipcrm");
    assert!(removed.status.success(), "{removed:?}");
    std::fs::write("/proc/sys/kernel/sem_next_id", sem.to_string()).expect("sem_next_id");
    let made = Command::new("ipcmk")
        .args(["-S", "2"])
        .output()
        .expect("ipcmk");
    assert!(made.status.success(), "{made:?}");
    let other = objects_of(&[], &[("s", sem)]);
    cleanup.ids = vec![("s", sem)];
    assert!(
        other.len() == 1 && other[0].key != key + 1,
        "another set holds id {sem}: {other:?}"
    );
    let done = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    assert_fails_clearly(&done, &[&format!("id {sem} is taken")]);
    assert!(
        done.stderr.contains(&format!("ipcrm -s {sem}")),
        "{}",
        done.describe()
    );
    assert_nothing_left(&program);
}

// ---------------------------------------------------------------------------------------------
// In-memory snapshots of the debugger (DESIGN §3: MAP_SHARED memory is copied explicitly)
// ---------------------------------------------------------------------------------------------

#[test]
fn debugger_snapshots_keep_their_own_shared_memory() {
    let scratch = Scratch::new("debugger_snapshots_keep_their_own_shared_memory");
    let rec = record(&scratch, &fixture("shm_snapshot"), None);
    // Forward to step 200 (the shared flag was set at step 120), then back to step 40: the
    // snapshots taken on the way forward must not have seen the later writes.
    let done = debug(
        &rec.dir,
        &[
            "break mark if step == 200",
            "run",
            "print sh->flag",
            "print sh->counter",
            "delete",
            "break mark if step == 40",
            "reverse-continue",
            "print current_step",
            "print sh->counter",
            "print priv_counter",
            "print sh->flag",
            "info checkpoints",
        ],
    );
    done.assert_success();
    assert_eq!(
        printed_values(&done.stdout),
        ["777", "200", "40", "40", "40", "0"],
        "{}",
        done.describe()
    );
    // The way back went through in-memory snapshots, not only the trace's images.
    assert!(
        done.stdout.to_lowercase().contains("snapshot"),
        "{}",
        done.describe()
    );
}
