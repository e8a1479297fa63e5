//! `rewind debug` end to end, through its command line, against oracles:
//! gdb's own `record full` on the same binary (every stop compared to the
//! instruction), the forward run's values for a batch script, and forward
//! stops of a multithreaded program and of python3.

use std::process::Command;

use rewind_tests::*;

/// glibc without AVX string functions: gdb's `record full` cannot record
/// AVX instructions. The recording gets the same environment.
const NO_AVX: &str =
    "glibc.cpu.hwcaps=-AVX2,-AVX,-AVX512F,-AVX512VL,-AVX512BW,-EVEX,-BMI2,-ERMS,-FSRM";

/// After every motion command, `p $pc`; the `<symbol+offset>` of each.
fn with_pcs(cmds: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for c in cmds {
        out.push(c.to_string());
        if !c.starts_with("break") && !c.starts_with("delete") {
            out.push("p $pc".into());
        }
    }
    out
}

fn pcs(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| l.starts_with('$') && l.contains(" = (void (*)()) "))
        .filter_map(|l| {
            let at = l.rfind('<')?;
            Some(l[at..].to_string())
        })
        .collect()
}

/// `Value returned is $N = V` lines (finish).
fn returned(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| l.starts_with("Value returned is "))
        .map(str::to_string)
        .collect()
}

/// gdb -batch on the binary: break/run, then `record full`, then `cmds`;
/// the stops' `<symbol+offset>` and the values `finish` returned.
fn gdb_pcs(binary: &std::path::Path, cmds: &[String]) -> (Vec<String>, Vec<String>) {
    let mut gdb = system_program("gdb");
    gdb.env("GLIBC_TUNABLES", NO_AVX).args(["-batch", "-nx"]);
    for c in cmds {
        gdb.arg("-ex").arg(c);
        if c == "run" {
            gdb.arg("-ex").arg("record full");
        }
    }
    gdb.arg(binary);
    let out = gdb.output().expect("run gdb");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !text.contains("Process record: failed") && !text.contains("does not support instruction"),
        "gdb's record full could not follow the fixture:\n{text}"
    );
    (pcs(&text), returned(&text))
}

/// The same commands on a recording (`--trace`) and on the program run
/// live (`-- PROG`, recorded as far as the commands go).
fn both_modes(scratch: &Scratch, prog: &Command, cmds: &[&str]) -> Vec<(&'static str, Finished)> {
    let rec = record(scratch, prog, None);
    let traced = debug(&rec.dir, cmds);
    let live = debug_live(scratch, prog, &scratch.join("live-trace"), cmds);
    vec![("--trace", traced), ("live", live)]
}

fn compare_with_gdb(test: &str, cmds: &[&str]) {
    let scratch = Scratch::new(test);
    let mut prog = fixture("dbg_demo");
    prog.env("GLIBC_TUNABLES", NO_AVX);
    let cmds = with_pcs(cmds);
    let (want, want_values) = gdb_pcs(&target("dbg_demo"), &cmds);
    let refs: Vec<&str> = cmds.iter().map(|s| s.as_str()).collect();
    for (mode, done) in both_modes(&scratch, &prog, &refs) {
        compare_stops(mode, &cmds, &want, &want_values, &done);
    }
}

fn compare_stops(
    mode: &str,
    cmds: &[String],
    want: &[String],
    want_values: &[String],
    done: &Finished,
) {
    assert!(done.status.success(), "{mode}: {}", done.describe());
    let got = pcs(&done.stdout);
    assert_eq!(
        want.len(),
        cmds.iter().filter(|c| *c == "p $pc").count(),
        "gdb answered every p $pc"
    );
    for (i, (w, g)) in want.iter().zip(got.iter()).enumerate() {
        assert_eq!(
            g,
            w,
            "{mode}: stop {} differs from gdb's (after `{}`)\n--- rewind:\n{}",
            i + 1,
            cmds.iter()
                .filter(|c| *c != "p $pc")
                .nth(i)
                .map(|s| s.as_str())
                .unwrap_or("?"),
            done.describe()
        );
    }
    assert_eq!(got.len(), want.len(), "{mode}: {}", done.describe());
    if cmds.iter().any(|c| c == "finish") {
        assert!(
            !want_values.is_empty(),
            "gdb printed the values finish returned"
        );
    }
    assert_eq!(
        returned(&done.stdout),
        want_values,
        "{mode}: values finish returned: {}",
        done.describe()
    );
}

#[test]
fn steps_and_reverse_steps_match_gdb_record_full_in_loops_and_calls() {
    compare_with_gdb(
        "gdb-loops",
        &[
            "break sum_to",
            "run",
            "finish",
            "next",
            "next",
            "next",
            "step",
            "step",
            "next",
            "reverse-step",
            "reverse-next",
            "reverse-next",
            "reverse-finish",
            "reverse-next",
            "next",
            "break fact",
            "continue",
            "continue",
            "continue",
            "reverse-finish",
            "finish",
            "reverse-step",
            "reverse-next",
            "step",
            "next",
            "next",
            "reverse-stepi",
            "reverse-nexti",
            "nexti",
            "stepi",
        ],
    );
}

#[test]
fn counts_until_and_advance_match_gdb_record_full() {
    compare_with_gdb(
        "gdb-until",
        &[
            "break main",
            "run",
            "next 3",
            "step 4",
            "until",
            "until",
            "advance 46",
            "reverse-next 2",
            "next",
            "reverse-step",
        ],
    );
}

#[test]
fn steps_and_reverse_steps_match_gdb_record_full_with_recursion_and_a_signal_handler() {
    compare_with_gdb(
        "gdb-signal",
        &[
            "break main",
            "run",
            "break on_alarm",
            "break fact",
            "continue",
            "continue",
            "delete 3",
            "next",
            "next",
            "next",
            "reverse-next",
            "reverse-next",
            "reverse-next",
            "continue",
            "reverse-continue",
            "reverse-finish",
        ],
    );
}

/// (Old value, New value, `<symbol+offset>` of the stop) of each report.
fn watch_reports(output: &str) -> Vec<(String, String, String)> {
    let lines: Vec<&str> = output.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some(old) = l.strip_prefix("Old value = ") {
            let new = lines
                .get(i + 1)
                .and_then(|n| n.strip_prefix("New value = "));
            let pc = lines[i..]
                .iter()
                .find(|l| l.starts_with('$') && l.contains(" = (void (*)()) "))
                .and_then(|l| l.rfind('<').map(|at| l[at..].to_string()));
            out.push((
                old.to_string(),
                new.unwrap_or("?").to_string(),
                pc.unwrap_or_default(),
            ));
        }
    }
    out
}

#[test]
fn watchpoints_match_gdb_forward_and_retrace_every_change_backward() {
    let scratch = Scratch::new("debug-watch");
    let mut prog = fixture("dbg_demo");
    prog.env("GLIBC_TUNABLES", NO_AVX);
    let mut cmds = vec!["break main", "run", "watch total", "watch counter"];
    for _ in 0..6 {
        cmds.extend(["continue", "p $pc"]);
    }
    // gdb on the same binary, forward (hardware watchpoints, no recording).
    let mut gdb = system_program("gdb");
    gdb.env("GLIBC_TUNABLES", NO_AVX).args(["-batch", "-nx"]);
    for c in &cmds {
        gdb.arg("-ex").arg(c);
    }
    gdb.arg(target("dbg_demo"));
    let g = gdb.output().expect("run gdb");
    let want = watch_reports(&String::from_utf8_lossy(&g.stdout));
    assert_eq!(
        want.len(),
        6,
        "gdb stopped 6 times:\n{}",
        String::from_utf8_lossy(&g.stdout)
    );
    for _ in 0..6 {
        cmds.extend(["reverse-continue", "p $pc"]);
    }
    for (mode, done) in both_modes(&scratch, &prog, &cmds) {
        assert!(done.status.success(), "{mode}: {}", done.describe());
        let got = watch_reports(&done.stdout);
        assert_eq!(got.len(), 12, "{mode}: {}", done.describe());
        assert_eq!(
            &got[..6],
            &want[..],
            "{mode}: forward stops as gdb's: {}",
            done.describe()
        );
        // Backward: each change undone in turn, newest first.
        for (i, (old, new, _)) in got[6..].iter().enumerate() {
            let (f_old, f_new, _) = &got[5 - i];
            assert_eq!(
                (old, new),
                (f_new, f_old),
                "{mode}: reverse stop {}: {}",
                i + 1,
                done.describe()
            );
        }
    }
}

#[test]
fn watchpoints_stop_steps_and_take_conditions_as_gdb_does() {
    let scratch = Scratch::new("debug-watch-steps");
    let mut prog = fixture("dbg_demo");
    prog.env("GLIBC_TUNABLES", NO_AVX);
    // `next` stops where `counter` changes; a conditional watchpoint stops
    // only where its condition holds (and reports the value before the
    // change that made it stop).
    let mut cmds = vec!["break main", "run", "watch counter"];
    for _ in 0..12 {
        cmds.extend(["next", "p $pc"]);
    }
    cmds.extend(["stepi", "p $pc", "delete 2", "watch total if total > 30000"]);
    cmds.extend(["continue", "p $pc", "condition 3 total > 200000"]);
    cmds.extend(["continue", "p $pc", "info breakpoints"]);
    // Oracle: gdb on the same binary (hardware watchpoints, forward).
    let mut gdb = system_program("gdb");
    gdb.env("GLIBC_TUNABLES", NO_AVX).args(["-batch", "-nx"]);
    for c in &cmds {
        gdb.arg("-ex").arg(c);
    }
    gdb.arg(target("dbg_demo"));
    let g = gdb.output().expect("run gdb");
    let gdb_out = String::from_utf8_lossy(&g.stdout);
    let want = (watch_reports(&gdb_out), pcs(&gdb_out));
    assert_eq!(want.0.len(), 4, "gdb's watchpoint stops:\n{gdb_out}");
    for (mode, done) in both_modes(&scratch, &prog, &cmds) {
        assert!(done.status.success(), "{mode}: {}", done.describe());
        let got = (watch_reports(&done.stdout), pcs(&done.stdout));
        assert_eq!(
            got,
            want,
            "{mode}: {}\n--- gdb:\n{gdb_out}",
            done.describe()
        );
        assert!(
            done.stdout.contains("\tstop only if total > 200000"),
            "{mode}: {}",
            done.describe()
        );
    }
}

#[test]
fn finish_shows_floating_point_and_struct_values_as_gdb_does() {
    let scratch = Scratch::new("debug-returns");
    let functions = [
        "half",
        "scale",
        "make_pair",
        "make_two",
        "make_mixed",
        "make_floats",
        "make_big",
        "make_num",
        "make_small",
    ];
    let breaks: Vec<String> = functions.iter().map(|f| format!("break {f}")).collect();
    let mut cmds: Vec<&str> = breaks.iter().map(|s| s.as_str()).collect();
    cmds.extend(["run", "finish"]);
    for _ in 1..functions.len() {
        cmds.extend(["continue", "finish"]);
    }
    // Oracle: gdb's own finish on the same binary (float, double, structs
    // in rax/rdx, xmm0/xmm1, both, in memory; a union).
    let mut gdb = system_program("gdb");
    gdb.args(["-batch", "-nx"]);
    for c in &cmds {
        gdb.arg("-ex").arg(c);
    }
    gdb.arg(target("dbg_returns"));
    let g = gdb.output().expect("run gdb");
    let gdb_out = String::from_utf8_lossy(&g.stdout);
    let want = returned(&gdb_out);
    assert_eq!(want.len(), functions.len(), "gdb's values:\n{gdb_out}");
    for (mode, done) in both_modes(&scratch, &fixture("dbg_returns"), &cmds) {
        assert!(done.status.success(), "{mode}: {}", done.describe());
        assert_eq!(
            returned(&done.stdout),
            want,
            "{mode}: {}\n--- gdb:\n{gdb_out}",
            done.describe()
        );
    }
}

#[test]
fn a_batch_script_reverse_continues_to_the_values_the_forward_run_printed() {
    let scratch = Scratch::new("debug-batch");
    let rec = record(&scratch, &fixture("dbg_demo"), None);
    let script = scratch.write(
        "cmds.gdb",
        "break sum_to\nrun\nprint n\ncontinue\nprint n\ncontinue\nprint n\ncontinue\nprint n\n\
         continue\nprint n\nprint total\nreverse-continue\nprint n\nprint total\nreverse-continue\n\
         print n\nreverse-continue\nprint n\nreverse-continue\nprint n\nreverse-continue\nwhen\n",
    );
    let traced = rewind_in(
        scratch.path(),
        [
            "debug",
            "--trace",
            &rec.dir.display().to_string(),
            "--batch",
            "-x",
            &script.display().to_string(),
        ],
    );
    // The same script with the program run live.
    let live = rewind_in(
        scratch.path(),
        [
            "debug",
            "-o",
            &scratch.join("live-trace").display().to_string(),
            "--batch",
            "-x",
            &script.display().to_string(),
            "--",
            &target("dbg_demo").display().to_string(),
        ],
    );
    for done in [traced, live] {
        check_batch_script(&rec, &done);
    }
}

fn check_batch_script(rec: &Recorded, done: &Finished) {
    assert!(done.status.success(), "{}", done.describe());
    let values = printed_values(&done.stdout);
    // Oracle: forward, n and total at each hit; backward, the same n in
    // reverse order, and `total` as it was at the earlier hit.
    let forward = &values[..5];
    let total_at_5th = &values[5];
    let backward = &values[6..];
    assert_eq!(
        forward,
        &["100", "200", "300", "400", "500"],
        "{}",
        done.describe()
    );
    assert_eq!(total_at_5th, &(5050 + 20100 + 45150 + 80200).to_string());
    assert_eq!(backward[0], "400");
    assert_eq!(
        backward[1],
        (5050 + 20100 + 45150).to_string(),
        "total one hit earlier"
    );
    assert_eq!(
        &backward[2..],
        &["300", "200", "100"],
        "{}",
        done.describe()
    );
    assert!(
        done.stdout.contains("No more reverse-execution history."),
        "{}",
        done.describe()
    );
    // The program's output is shown once, as recorded, while going forward.
    let shown: String = done
        .stdout
        .lines()
        .filter(|l| l.starts_with("round "))
        .map(|l| format!("{l}\n"))
        .collect();
    let recorded: String = rec
        .stdout
        .lines()
        .filter(|l| l.starts_with("round ") && !l.starts_with("round 4"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(shown, recorded, "{}", done.describe());
}

#[test]
fn a_multithreaded_recording_goes_back_to_each_earlier_stop() {
    let scratch = Scratch::new("debug-threads");
    let cmds = [
        "break say",
        "run",
        "p text",
        "p $rsp",
        "continue",
        "p text",
        "p $rsp",
        "continue",
        "p text",
        "p $rsp",
        "info threads",
        "reverse-continue",
        "p text",
        "p $rsp",
        "reverse-continue",
        "p text",
        "p $rsp",
    ];
    for (mode, done) in both_modes(&scratch, &fixture("rr_threads_counters"), &cmds) {
        assert!(done.status.success(), "{mode}: {}", done.describe());
        let values = printed_values(&done.stdout);
        assert_eq!(values.len(), 10, "{mode}: {}", done.describe());
        // Back at the 2nd and 1st stops: the same string and stack pointer.
        assert_eq!(values[6..8], values[2..4], "{mode}: {}", done.describe());
        assert_eq!(values[8..10], values[0..2], "{mode}: {}", done.describe());
        assert!(
            done.stdout.contains("Thread "),
            "{mode}: {}",
            done.describe()
        );
    }
}

#[test]
fn python3_recording_steps_back_and_forth_to_the_same_instructions() {
    let scratch = Scratch::new("debug-python");
    let mut py = python3_interpreter();
    py.args([
        "-c",
        "import sys\nfor i in range(3): sys.stdout.write(str(i * 7) + '\\n')",
    ]);
    let rec = record(&scratch, &py, None);
    let mut cmds = vec!["break write", "run", "p $pc", "bt 3"];
    cmds.extend(std::iter::repeat_n("stepi", 30));
    cmds.push("p $pc");
    cmds.push("p $rsp");
    cmds.extend(std::iter::repeat_n("reverse-stepi", 30));
    cmds.push("p $pc");
    cmds.extend(std::iter::repeat_n("stepi", 30));
    cmds.push("p $pc");
    cmds.push("p $rsp");
    cmds.push("continue");
    cmds.push("reverse-continue");
    cmds.push("p $pc");
    let done = debug(&rec.dir, &cmds);
    assert!(done.status.success(), "{}", done.describe());
    let values = printed_values(&done.stdout);
    assert_eq!(values.len(), 7, "{}", done.describe());
    assert!(
        values[0].contains("<write"),
        "stopped in write: {}",
        done.describe()
    );
    assert_eq!(
        values[3],
        values[0],
        "30 steps back = the breakpoint: {}",
        done.describe()
    );
    assert_eq!(
        values[4..6],
        values[1..3],
        "30 steps forward again: {}",
        done.describe()
    );
    assert_eq!(
        values[6],
        values[0],
        "back at the first write: {}",
        done.describe()
    );
    assert!(
        done.stdout.contains("#1 "),
        "a backtrace: {}",
        done.describe()
    );
}

#[test]
fn bad_input_gets_clear_messages_and_no_panic() {
    let scratch = Scratch::new("debug-bad");
    let rec = record(&scratch, &fixture("dbg_demo"), None);
    let done = debug(
        &rec.dir,
        &[
            "frobnicate",
            "break nosuch",
            "break dbg_demo.c:9999",
            "print nosuch + 1",
            "print (1 + 2",
            "print 2 $$ 3",
            "x/4x 0",
            "goto 999999",
            "goto banana",
            "restart 7",
            "thread 99",
            "watch 1 + 2",
            "stepi",
            "p $pc",
        ],
    );
    assert!(done.status.success(), "{}", done.describe());
    let err = &format!("{}{}", done.stdout, done.stderr);
    for want in [
        "Undefined command: \"frobnicate\"",
        "Function \"nosuch\" not defined.",
        "No line 9999",
        "No symbol \"nosuch\" in current context.",
        "A syntax error in expression",
        "^ (column 7)",
        "Cannot access memory at address 0x0",
        "past the end of the trace",
        "bad moment",
        "No checkpoint number 7.",
        "Invalid thread ID: 99",
        "Cannot watch constant value `1 + 2'.",
    ] {
        assert!(
            err.contains(want),
            "missing {want:?} in:\n{}",
            done.describe()
        );
    }
    assert!(!err.contains("panicked"), "{}", done.describe());
    assert!(
        done.stdout.contains("$1 = (void (*)()) "),
        "{}",
        done.describe()
    );
    // No-argument and conflicting command lines are usage errors.
    let none = rewind_in(scratch.path(), ["debug", "--batch"]);
    assert_eq!(none.status.code(), Some(2), "{}", none.describe());
    let _ = Command::new("true");
}

#[test]
fn a_checkpoint_image_can_be_looked_at() {
    let scratch = Scratch::new("debug-image");
    let ckpt = scratch.dir("ckpt");
    let mut running = launch(
        &fixture("loop_heap"),
        &ckpt,
        Redirect::to(scratch.join("out")),
    );
    running.wait_for(Wait::Lines(3));
    let image = running.checkpoint_and_kill();
    let _ = running.wait();
    let done = rewind_in(
        scratch.path(),
        [
            "debug",
            "--image",
            &image.display().to_string(),
            "--batch",
            "--ex",
            "bt",
            "--ex",
            "info threads",
            "--ex",
            "stepi",
        ],
    );
    assert!(done.status.success(), "{}", done.describe());
    // Oracle: the fixture sleeps between lines in sleep_ms, called by main.
    assert!(done.stdout.contains("main () at "), "{}", done.describe());
    assert!(done.stdout.contains("sleep_ms"), "{}", done.describe());
    assert!(
        done.stdout.contains("No more reverse-execution history."),
        "{}",
        done.describe()
    );
}

#[test]
fn ctrl_c_stops_a_long_continue_and_comes_back() {
    use std::io::Write;
    use std::process::Stdio;
    let scratch = Scratch::new("debug-ctrl-c");
    // About 2 s of syscall-free computing between the two marks.
    let mut prog = fixture("dbg_spin");
    prog.arg("1500");
    let rec = record(&scratch, &prog, None);
    let mut child = Command::new(rewind_bin())
        .args(["debug", "--trace"])
        .arg(&rec.dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rewind debug");
    let mut stdin = child.stdin.take().expect("stdin");
    // What rewind prints, read as it comes: the interrupt is sent once the first stop is shown
    // (the continue after it then runs), however slow the machine.
    let shown = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let shown = shown.clone();
        let mut out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            use std::io::Read;
            let mut chunk = [0u8; 4096];
            while let Ok(n) = out.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&chunk[..n]).into_owned();
                shown.lock().expect("output").push_str(&text);
            }
        })
    };
    stdin
        .write_all(b"break mark\nrun\nwhen\ncontinue\n")
        .expect("commands");
    stdin.flush().expect("flush");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !shown.lock().expect("output").contains("Current event:") {
        assert!(
            std::time::Instant::now() < deadline,
            "no first stop: {}",
            shown.lock().expect("output")
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(800));
    let started = std::time::Instant::now();
    rewind_ckpt::sys::process::kill(child.id() as i32, libc::SIGINT).expect("send SIGINT");
    stdin
        .write_all(b"when\ncontinue\np i\nquit\n")
        .expect("commands");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    reader.join().expect("reader");
    let stdout = shown.lock().expect("output").clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("Quit (interrupted)"), "{stdout}\n{stderr}");
    // Back where the interrupted continue began, then on to mark(1).
    let whens: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("Current event:"))
        .collect();
    assert_eq!(whens.len(), 2, "{stdout}\n{stderr}");
    assert_eq!(whens[0], whens[1], "{stdout}\n{stderr}");
    assert!(stdout.contains("mark (i=1)"), "{stdout}\n{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

#[test]
fn a_syscall_heavy_recording_goes_back_across_thousands_of_events() {
    let scratch = Scratch::new("debug-syscalls");
    // One event per syscall (no in-process buffer): thousands of them.
    let rec = record_with(
        &scratch,
        &fixture("dbg_syscalls"),
        &["--no-syscallbuf"],
        None,
    );
    let mut cmds = vec!["break hit", "run", "p i"];
    for _ in 0..5 {
        cmds.extend(["continue", "p i", "p total"]);
    }
    cmds.push("when");
    for _ in 0..5 {
        cmds.extend(["reverse-continue", "p i", "p total"]);
    }
    cmds.extend([
        "delete",
        "watch last_hit",
        "reverse-continue",
        "p last_hit",
        "when",
    ]);
    let done = debug(&rec.dir, &cmds);
    assert!(done.status.success(), "{}", done.describe());
    let values = printed_values(&done.stdout);
    assert_eq!(values.len(), 1 + 10 + 10 + 1, "{}", done.describe());
    // Forward: i = 500, 1000, ... 3000 with the totals at each.
    let forward: Vec<(String, String)> = (0..5)
        .map(|k| (values[1 + 2 * k].clone(), values[2 + 2 * k].clone()))
        .collect();
    assert_eq!(values[0], "500");
    assert_eq!(forward.last().map(|f| f.0.as_str()), Some("3000"));
    // Backward: the same stops in reverse order, same totals (the first
    // reverse-continue goes from 3000 back to 2500, and so on; the last
    // one back to 500).
    let back: Vec<(String, String)> = (0..5)
        .map(|k| (values[11 + 2 * k].clone(), values[12 + 2 * k].clone()))
        .collect();
    let mut expected: Vec<(String, String)> = vec![(values[0].clone(), String::new())];
    expected.extend(forward.iter().cloned());
    for (k, (i, total)) in back.iter().enumerate() {
        let (want_i, want_total) = &expected[4 - k];
        assert_eq!(i, want_i, "{}", done.describe());
        if !want_total.is_empty() {
            assert_eq!(total, want_total, "{}", done.describe());
        }
    }
    // A reverse watchpoint from i = 500: last_hit was last changed... never
    // before (it was 0): back to the beginning of history.
    assert!(
        done.stdout.contains("No more reverse-execution history."),
        "{}",
        done.describe()
    );
    let events: Vec<&str> = done
        .stdout
        .lines()
        .filter(|l| l.starts_with("Current event:"))
        .collect();
    assert_eq!(events.len(), 2, "{}", done.describe());
    let n: u64 = events[0]
        .split_whitespace()
        .nth(2)
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    assert!(n > 6000, "thousands of events crossed: {}", events[0]);
}
