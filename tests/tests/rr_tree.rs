//! Record and replay of process trees (issue 7, item 4): `rewind record` follows every process the
//! program makes (fork, vfork, posix_spawn, clone), each into its own log in the trace
//! (`proc-PID/`), with the order across processes in `schedule`; `rewind replay` makes the
//! processes again where they were made and replays them all in that order. The oracle is the
//! recorded run's output (DESIGN §9 (b)): what every process printed, including values a second
//! run would not reproduce (pids, time, random bytes, which worker took a shared lock first), and
//! the exit status, with `--verify` register checks at every event of every process.

use std::fs;
use std::path::Path;

use rewind_tests::*;

/// `rewind COMMAND... --trace DIR ARGS...` on `recorded`, run in the scratch directory.
fn on_trace(
    scratch: &Scratch,
    recorded: &Recorded,
    command: &[&str],
    args: &[&std::ffi::OsStr],
) -> Finished {
    let mut all: Vec<&std::ffi::OsStr> = command.iter().map(|c| c.as_ref()).collect();
    all.extend(args);
    all.push("--trace".as_ref());
    all.push(recorded.dir.as_os_str());
    rewind_in(scratch.path(), all)
}

/// The `proc-*` directories of a trace: one per process the program made.
fn process_logs(trace: &Path) -> Vec<String> {
    let mut dirs: Vec<String> = fs::read_dir(trace)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", trace.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("proc-"))
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn replay_reproduces_a_tree_with_shared_memory_spawn_and_exec() {
    let scratch = Scratch::new("replay_reproduces_a_tree_with_shared_memory_spawn_and_exec");
    let mut program = fixture("rr_tree");
    program.args(["3", "20000"]);
    let recorded = record(&scratch, &program, None);
    for line in [
        "spawned echo",
        "forked shell 42",
        "worker 0 exit 10",
        "worker 2 exit 12",
        "total 121000",
    ] {
        assert!(
            recorded.stdout.contains(line),
            "the recorded run did not print {line:?}:\n{}",
            recorded.describe()
        );
    }
    // Three workers, a grandchild, the posix_spawn child and the forked shell.
    let logs = process_logs(&recorded.dir);
    assert_eq!(
        logs.len(),
        6,
        "expected a log for each of the 6 processes the program made, found {logs:?}"
    );
    assert!(
        recorded.dir.join("schedule").is_file(),
        "a trace of a process tree has no schedule"
    );
    // The workers' pids, random bytes and clock, and the order they took the lock in, come back.
    recorded.assert_replays_as_recorded(&[]);
    recorded.assert_replays_as_recorded(&["--verify"]);
}

#[test]
fn replay_of_a_tree_checks_every_process_memory() {
    let scratch = Scratch::new("replay_of_a_tree_checks_every_process_memory");
    let mut program = fixture("rr_tree");
    program.args(["2", "3000"]);
    let recorded = record_with(&scratch, &program, &["--verify=memory"], None);
    recorded.assert_replays_as_recorded(&["--verify=memory"]);
}

#[test]
fn replay_reproduces_a_shell_pipeline() {
    let scratch = Scratch::new("replay_reproduces_a_shell_pipeline");
    let mut program = system_program("bash");
    program.arg("-c").arg(
        "for i in 1 2 3; do echo $i | sed s/1/one/; done | sort -r; \
         (date +%N; echo sub $BASHPID) | cat; head -c 8 /dev/urandom | od -An -tx1; \
         timeout 0.2 sleep 5; echo timeout $?; exit 5",
    );
    let recorded = record(&scratch, &program, None);
    assert_eq!(
        recorded.status.code(),
        Some(5),
        "bash did not exit with 5 while recorded:\n{}",
        recorded.describe()
    );
    assert!(
        recorded.stdout.starts_with("one\n3\n2\n")
            && recorded.stdout.contains("sub ")
            && recorded.stdout.contains("timeout 124"),
        "the pipeline printed something else:\n{}",
        recorded.describe()
    );
    assert!(
        process_logs(&recorded.dir).len() >= 8,
        "bash's subshells and commands were not recorded: {:?}",
        process_logs(&recorded.dir)
    );
    // The nanoseconds, the subshell's pid and the random bytes come back; timeout's SIGTERM and
    // SIGCONT to its child are delivered again (a SIGCONT first makes every thread of a traced
    // process report a PTRACE_EVENT_STOP).
    recorded.assert_replays_as_recorded(&["--verify"]);
}

#[test]
fn replay_reproduces_python_multiprocessing() {
    const SCRIPT: &str = r#"
import multiprocessing as mp, os, random
def work(x):
    return (os.getpid() % 7, sum(i * i for i in range(x)) % 1000003, random.random())
def bump(v):
    with v.get_lock():
        v.value += 5
if __name__ == "__main__":
    mp.set_start_method("fork")
    with mp.Pool(2) as pool:
        print(pool.map(work, [20000, 30000, 40000]))
    v = mp.Value("i", 0)
    ps = [mp.Process(target=bump, args=(v,)) for _ in range(2)]
    for p in ps: p.start()
    for p in ps: p.join()
    print("value", v.value, [p.exitcode for p in ps])
"#;
    let scratch = Scratch::new("replay_reproduces_python_multiprocessing");
    let mut program = python3();
    program.arg("-c").arg(SCRIPT);
    let recorded = record(&scratch, &program, None);
    assert!(
        recorded.stdout.contains("value 10 [0, 0]"),
        "the recorded run did not print the shared value:\n{}",
        recorded.describe()
    );
    recorded.assert_replays_as_recorded(&["--verify"]);
}

#[test]
fn the_debugger_replays_the_root_of_a_tree() {
    // `rewind debug --trace` follows the program's own process; what its children send it through
    // pipes is in its log.
    let scratch = Scratch::new("the_debugger_replays_the_root_of_a_tree");
    let mut program = system_program("bash");
    program
        .arg("-c")
        .arg("x=$(date +%N | tr 0-9 a-j); echo got $x; ls / | wc -l >/dev/null; echo done");
    let recorded = record(&scratch, &program, None);
    assert!(
        recorded.stdout.starts_with("got ") && process_logs(&recorded.dir).len() >= 3,
        "bash did not run its pipeline while recorded:\n{}",
        recorded.describe()
    );
    let script = scratch.write(
        "cmds",
        "break read\ncontinue\ncontinue\nreverse-continue\ndelete\ncontinue\n",
    );
    let done = on_trace(
        &scratch,
        &recorded,
        &["debug", "--batch", "-x"],
        &[script.as_os_str()],
    );
    assert!(
        done.stdout.matches("Breakpoint 1,").count() >= 3
            && done.stdout.contains(recorded.stdout.lines().next().unwrap_or("got"))
            && done.stdout.contains("done\n")
            && done.stdout.contains("No more reverse-execution history"),
        "the debugger did not stop at read, show the recorded output and replay bash to the end of \
         its history:\n{}",
        done.describe()
    );
    assert!(!done.stderr.contains("divergence"), "{}", done.describe());
}

#[test]
fn a_tree_with_a_missing_process_log_fails_clearly() {
    let scratch = Scratch::new("a_tree_with_a_missing_process_log_fails_clearly");
    let mut program = fixture("rr_tree");
    program.args(["1", "100"]);
    let recorded = record(&scratch, &program, None);
    let logs = process_logs(&recorded.dir);
    let victim = recorded.dir.join(&logs[0]);
    fs::remove_dir_all(&victim).unwrap();
    let done = recorded.replay(&[]);
    assert_fails_clearly(&done, &[logs[0].as_str()]);

    let from = recorded.replay(&["--from", "10"]);
    assert_fails_clearly(&from, &["process tree"]);
}

#[test]
fn replay_delivers_a_signal_under_the_mask_of_ppoll_pselect_and_sigsuspend() {
    // SIGCHLD is blocked except while the program waits in ppoll, pselect or sigsuspend (make's job
    // loop does this): replay, which does not make those calls, must deliver the recorded signal
    // under the call's mask and restore the program's own after the handler.
    let scratch =
        Scratch::new("replay_delivers_a_signal_under_the_mask_of_ppoll_pselect_and_sigsuspend");
    let recorded = record(&scratch, &fixture("rr_sigmask"), None);
    for call in ["ppoll", "pselect", "sigsuspend"] {
        assert!(
            recorded.stdout.lines().any(|l| l.starts_with(call)
                && l.contains("usr1 blocked in handler 1, chld blocked after 1")),
            "no round of {call} ran as expected while recorded:\n{}",
            recorded.describe()
        );
    }
    recorded.assert_replays_as_recorded(&["--verify"]);
    let checked = record_with(&scratch, &fixture("rr_sigmask"), &["--verify=memory"], None);
    checked.assert_replays_as_recorded(&["--verify=memory"]);
}

#[test]
fn replay_reproduces_make_running_gcc_in_parallel() {
    let scratch = Scratch::new("replay_reproduces_make_running_gcc_in_parallel");
    for i in 0..3 {
        scratch.write(
            &format!("f{i}.c"),
            format!("int f{i}(int n) {{ return n < 2 ? n : f{i}(n - 1) + f{i}(n - 2); }}\n"),
        );
    }
    scratch.write(
        "main.c",
        "#include <stdio.h>\nint f0(int); int f1(int); int f2(int);\n\
         int main(void) { printf(\"%d\\n\", f0(15) + f1(14) + f2(13)); return 0; }\n",
    );
    scratch.write(
        "Makefile",
        "objs = main.o f0.o f1.o f2.o\nall: prog\n\t./prog\nprog: $(objs)\n\tgcc -o prog $(objs)\n\
         %.o: %.c\n\tgcc -O2 -c $<\n",
    );
    let mut program = system_program("make");
    program.args(["-j2", "-C"]).arg(scratch.path());
    let recorded = record(&scratch, &program, None);
    assert!(
        recorded.stdout.contains("1220\n"),
        "make did not build and run the program while recorded:\n{}",
        recorded.describe()
    );
    recorded.assert_replays_as_recorded(&["--verify"]);
}

#[test]
fn the_debugger_replays_a_child_from_its_exec_or_its_fork() {
    // `rewind debug --trace DIR --process PID`: a process the program made and that exec'd is
    // debugged from its exec image with its own log; one that never exec'd from an image of it
    // where it was made, written by a replay of the tree up to there.
    let scratch = Scratch::new("the_debugger_replays_a_child_from_its_exec");
    let mut program = fixture("rr_tree");
    program.args(["1", "100"]);
    let recorded = record(&scratch, &program, None);
    let script = scratch.write(
        "cmds",
        "continue\nbt\nreverse-stepi\nstepi\nreverse-continue\ncontinue\n",
    );
    let mut shown = String::new();
    let mut forked = 0;
    for dir in process_logs(&recorded.dir) {
        let pid = dir.trim_start_matches("proc-");
        let exec_d = recorded.dir.join(&dir).join("exec-1.rwd").exists();
        let done = on_trace(
            &scratch,
            &recorded,
            &["debug", "--batch", "-x"],
            &[script.as_os_str(), "--process".as_ref(), pid.as_ref()],
        );
        assert!(
            done.status.success()
                && done
                    .stdout
                    .matches("No more reverse-execution history")
                    .count()
                    >= 3
                && done.stdout.contains("in _exit ()")
                && !done.stderr.contains("divergence"),
            "debugging process {pid} (exec'd: {exec_d}) did not run to its end (_exit), back to \
             its start and to its end again:\n{}",
            done.describe()
        );
        if !exec_d {
            assert!(
                recorded.dir.join(&dir).join("forked.rwd").is_file(),
                "no image of process {pid} where it was made was kept"
            );
            forked += 1;
        }
        shown.push_str(&done.stdout);
        if done.stdout.contains("forked shell 42") {
            // bisect finds the write that printed it, in that process's history.
            let found = on_trace(
                &scratch,
                &recorded,
                &["bisect"],
                &[
                    "--process".as_ref(),
                    pid.as_ref(),
                    "--output".as_ref(),
                    "forked shell 42".as_ref(),
                ],
            );
            assert!(
                found.status.success() && found.stdout.contains("write"),
                "bisect --process {pid} did not find the shell's write:\n{}",
                found.describe()
            );
        }
    }
    assert!(
        shown.contains("spawned echo") && shown.contains("forked shell 42"),
        "the posix_spawn'd echo and the forked shell did not print while debugged:\n{shown}"
    );
    assert!(
        forked >= 2,
        "the worker and grandchild (never exec'd) were not both debugged"
    );
}
