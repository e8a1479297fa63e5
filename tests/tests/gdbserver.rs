//! `rewind gdbserver` end to end: the real gdb (batch mode) drives it over
//! `target remote | rewind gdbserver --stdio ...` or TCP. Oracles: gdb's own
//! `record full` on the same binary (every stop's `<symbol+offset>` and the
//! values `finish` returned), gdb's native hardware watchpoints, and the
//! forward stops for the backward ones. Every gdb run has a deadline.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rewind_tests::*;

/// glibc without AVX string functions: gdb's `record full` cannot record
/// AVX instructions. The recording gets the same environment.
const NO_AVX: &str =
    "glibc.cpu.hwcaps=-AVX2,-AVX,-AVX512F,-AVX512VL,-AVX512BW,-EVEX,-BMI2,-ERMS,-FSRM";

/// Longest a gdb session of these tests may take.
const GDB_TIMEOUT: Duration = Duration::from_secs(120);

struct GdbRun {
    stdout: String,
    stderr: String,
    success: bool,
    what: String,
}

impl GdbRun {
    fn describe(&self) -> String {
        format!(
            "{}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.what, self.stdout, self.stderr
        )
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn kill_group(child: &Child) {
    let _ = rewind_ckpt::sys::process::kill(-(child.id() as i32), libc::SIGKILL);
}

/// Wait for `child` (its own process group); kill the group and fail after
/// `timeout`.
fn finish(mut child: Child, what: String, timeout: Duration) -> GdbRun {
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() > deadline => {
                kill_group(&child);
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    };
    let run = GdbRun {
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        success: status.is_some_and(|s| s.success()),
        what,
    };
    assert!(
        status.is_some(),
        "did not finish within {timeout:?} (killed):\n{}",
        run.describe()
    );
    run
}

/// gdb -batch -nx with `cmds` (each an -ex), on `binary` if given.
///
/// A flake seen in earlier runs (issue 5): gdb stopping in the middle of a
/// `continue` as if it got SIGINT ("Cannot execute this command while the
/// target is running", Python's KeyboardInterrupt at exit). Its likely
/// cause, gdb giving up on its first packets while rewind loads, is fixed
/// (`gdb_waits_for_a_recording_longer_than_its_remote_timeout`); should it
/// happen again, the session is run once more, saying so on stderr, and a
/// second failure fails the test.
fn gdb(cmds: &[String], binary: Option<&Path>, env: &[(&str, &str)]) -> GdbRun {
    let run = gdb_once(cmds, binary, env);
    let flaked = |r: &GdbRun| {
        r.stderr
            .contains("Cannot execute this command while the target is running")
            || r.stderr.contains("KeyboardInterrupt")
    };
    if flaked(&run) {
        eprintln!(
            "gdb session interrupted on its own (known flake), once more:\n{}",
            run.describe()
        );
        return gdb_once(cmds, binary, env);
    }
    run
}

fn gdb_once(cmds: &[String], binary: Option<&Path>, env: &[(&str, &str)]) -> GdbRun {
    let mut cmd = system_program("gdb");
    cmd.args(["-batch", "-nx"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    for c in cmds {
        cmd.arg("-ex").arg(c);
    }
    if let Some(b) = binary {
        cmd.arg(b);
    }
    let what = format!("gdb {}", cmds.join(" ; "));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start gdb");
    finish(child, what, GDB_TIMEOUT)
}

/// gdb's command connecting to `rewind gdbserver --stdio --trace DIR`.
fn connect(dir: &Path) -> String {
    format!(
        "target remote | {} gdbserver --stdio --trace {}",
        rewind_bin().display(),
        dir.display()
    )
}

/// gdb on a recording: connect, then `cmds`.
fn gdb_on(dir: &Path, cmds: &[&str]) -> GdbRun {
    let mut all = vec![connect(dir)];
    all.extend(cmds.iter().map(|c| c.to_string()));
    gdb(&all, None, &[])
}

/// After every motion command, `p $pc`.
fn with_pcs(cmds: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for c in cmds {
        out.push(c.to_string());
        let motion = !["break", "delete", "watch", "p ", "info"]
            .iter()
            .any(|p| c.starts_with(p));
        if motion {
            out.push("p $pc".into());
        }
    }
    out
}

/// The `<symbol+offset>` of each `p $pc`.
fn pcs(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| l.starts_with('$') && l.contains(" = (void (*)()) "))
        .filter_map(|l| Some(l[l.rfind('<')?..].to_string()))
        .collect()
}

/// What each `print` (other than $pc) showed, after `$N = `.
fn values(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| l.starts_with('$') && !l.contains(" = (void (*)()) "))
        .filter_map(|l| Some(l.split_once(" = ")?.1.to_string()))
        .collect()
}

/// `Value returned is $N = V`: the V of each.
fn returned(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("Value returned is "))
        .filter_map(|l| Some(l.split_once(" = ")?.1.to_string()))
        .collect()
}

/// Record dbg_demo without AVX string functions.
fn demo_recording(scratch: &Scratch) -> Recorded {
    let mut prog = fixture("dbg_demo");
    prog.env("GLIBC_TUNABLES", NO_AVX);
    record(scratch, &prog, None)
}

/// `cmds` (starting with `break X`, `run`) under gdb's `record full` on the
/// binary and through rewind gdbserver on its recording (`run` becomes
/// `continue`): every stop and every printed value agree.
fn compare_with_record_full(test: &str, cmds: &[&str]) {
    let scratch = Scratch::new(test);
    let rec = demo_recording(&scratch);
    let cmds = with_pcs(cmds);
    let mut native = Vec::new();
    for c in &cmds {
        native.push(c.clone());
        if c == "run" {
            native.push("record full".into());
        }
    }
    let want = gdb(
        &native,
        Some(&target("dbg_demo")),
        &[("GLIBC_TUNABLES", NO_AVX)],
    );
    assert!(
        !want.stdout.contains("Process record: failed")
            && !want.stdout.contains("does not support instruction"),
        "gdb's record full could not follow the fixture:\n{}",
        want.describe()
    );
    // On the recording, and on the program run live (recorded as far as
    // gdb goes forward).
    let live = format!(
        "target remote | env GLIBC_TUNABLES={NO_AVX} {} gdbserver --stdio -o {} -- {}",
        rewind_bin().display(),
        scratch.join("live-trace").display(),
        target("dbg_demo").display()
    );
    for target_cmd in [connect(&rec.dir), live] {
        compare_remote(&cmds, &want, target_cmd);
    }
}

fn compare_remote(cmds: &[String], want: &GdbRun, target_cmd: String) {
    let mut remote = vec![target_cmd];
    remote.extend(cmds.iter().map(|c| {
        if c == "run" {
            "continue".to_string()
        } else {
            c.clone()
        }
    }));
    let got = gdb(&remote, None, &[]);
    let stops = cmds.iter().filter(|c| *c == "p $pc").count();
    let (w, g) = (pcs(&want.stdout), pcs(&got.stdout));
    assert_eq!(
        w.len(),
        stops,
        "gdb answered every p $pc:\n{}",
        want.describe()
    );
    for (i, (w, g)) in w.iter().zip(g.iter()).enumerate() {
        assert_eq!(
            g,
            w,
            "stop {} differs from record full's (after `{}`)\n{}",
            i + 1,
            cmds.iter()
                .filter(|c| *c != "p $pc")
                .nth(i)
                .map(|s| s.as_str())
                .unwrap_or("?"),
            got.describe()
        );
    }
    assert_eq!(g.len(), stops, "{}", got.describe());
    assert_eq!(
        values(&got.stdout),
        values(&want.stdout),
        "printed values: {}",
        got.describe()
    );
    assert_eq!(
        returned(&got.stdout),
        returned(&want.stdout),
        "values finish returned: {}",
        got.describe()
    );
    assert!(got.success, "{}", got.describe());
}

#[test]
fn forward_session_matches_gdb_record_full() {
    compare_with_record_full(
        "gds-forward",
        &[
            "break sum_to",
            "run",
            "p n",
            "bt",
            "finish",
            "next",
            "next",
            "p total",
            "step",
            "step",
            "next",
            "p s",
            "break fact",
            "continue",
            "continue",
            "p n",
            "finish",
            "until",
            "stepi",
            "nexti",
            "tbreak 50",
            "continue",
            "p origin",
            "p counter",
        ],
    );
}

#[test]
fn reverse_session_matches_gdb_record_full() {
    compare_with_record_full(
        "gds-reverse",
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
            "p total",
            "next",
            "break fact",
            "continue",
            "continue",
            "continue",
            "p n",
            "reverse-finish",
            "p n",
            "finish",
            "reverse-step",
            "reverse-next",
            "step",
            "next",
            "reverse-stepi",
            "reverse-nexti",
            "nexti",
            "stepi",
            "reverse-continue",
            "p n",
            "reverse-continue",
            "p n",
        ],
    );
}

/// (Old value, New value) of each watchpoint report.
fn watch_reports(output: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = output.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let old = l.strip_prefix("Old value = ")?;
            let new = lines.get(i + 1)?.strip_prefix("New value = ")?;
            Some((old.to_string(), new.to_string()))
        })
        .collect()
}

#[test]
fn watchpoints_match_native_gdb_forward_and_retrace_changes_backward() {
    let scratch = Scratch::new("gds-watch");
    let rec = demo_recording(&scratch);
    let mut cmds = vec!["break main", "run", "watch total", "watch counter"];
    for _ in 0..6 {
        cmds.extend(["continue", "p $pc"]);
    }
    let native: Vec<String> = cmds.iter().map(|c| c.to_string()).collect();
    let want = gdb(
        &native,
        Some(&target("dbg_demo")),
        &[("GLIBC_TUNABLES", NO_AVX)],
    );
    let want_reports = watch_reports(&want.stdout);
    assert_eq!(want_reports.len(), 6, "{}", want.describe());
    for _ in 0..6 {
        cmds.extend(["reverse-continue", "p $pc"]);
    }
    // A read watchpoint too, and one more than the debug registers hold.
    cmds.extend([
        "delete",
        "rwatch counter",
        "reverse-continue",
        "p counter",
        "watch origin.x",
        "watch origin.y",
        "watch total",
        "watch counter",
        "continue",
    ]);
    let remote: Vec<&str> = cmds
        .iter()
        .map(|c| if *c == "run" { "continue" } else { c })
        .collect();
    let got = gdb_on(&rec.dir, &remote);
    let reports = watch_reports(&got.stdout);
    assert!(reports.len() >= 12, "{}", got.describe());
    assert_eq!(
        &reports[..6],
        &want_reports[..],
        "forward: {}",
        got.describe()
    );
    assert_eq!(
        pcs(&got.stdout)[..6],
        pcs(&want.stdout)[..],
        "forward stops: {}",
        got.describe()
    );
    for (i, (old, new)) in reports[6..12].iter().enumerate() {
        let (f_old, f_new) = &reports[5 - i];
        assert_eq!((old, new), (f_new, f_old), "reverse stop {}", i + 1);
    }
    assert!(
        got.stdout.contains("Hardware read watchpoint"),
        "{}",
        got.describe()
    );
    // Five debug-register slots asked for: gdb cannot insert them all.
    assert!(
        got.stdout.contains("Could not insert hardware watchpoint")
            || got.stderr.contains("Could not insert hardware watchpoint")
            || got.stderr.contains("Could not insert hardware breakpoints"),
        "{}",
        got.describe()
    );
}

#[test]
fn shared_library_breakpoints_threads_and_monitor_commands() {
    let scratch = Scratch::new("gds-threads");
    let rec = record(&scratch, &fixture("rr_threads_counters"), None);
    let got = gdb_on(
        &rec.dir,
        &[
            // libc is not loaded yet: a pending breakpoint, resolved when
            // gdb sees libc in the libraries-svr4 list.
            "set breakpoint pending on",
            "break nanosleep",
            "continue",
            "info sharedlibrary",
            "bt 2",
            "delete 1",
            "break say",
            "continue",
            "p text",
            "p $rsp",
            "continue",
            "p text",
            "p $rsp",
            "p $pc",
            "info threads",
            "monitor when",
            "monitor checkpoint",
            "stepi",
            "stepi",
            "stepi",
            "monitor goto #1",
            "maint flush register-cache",
            "p $pc",
            "reverse-continue",
            "p text",
            "p $rsp",
            "thread 1",
            "monitor checkpoints",
            "monitor help",
            "monitor nonsense",
            "set var *(int*)$rsp = 5",
            "set var $rax = 1",
            // gdb -batch exits with the last command's status.
            "echo END\\n",
        ],
    );
    let out = &got.stdout;
    assert!(out.contains("libc.so.6"), "{}", got.describe());
    assert!(
        out.contains("hit Breakpoint 1, ") && out.contains("nanosleep") && out.contains("usleep"),
        "a breakpoint in libc: {}",
        got.describe()
    );
    let v = values(out);
    assert_eq!(v.len(), 6, "{}", got.describe());
    // Back at the first say stop: the same text and stack pointer.
    assert_eq!(v[4..6], v[0..2], "{}", got.describe());
    assert_ne!(v[0], v[2], "two different stops: {}", got.describe());
    // monitor goto #1: back at the second say stop's instruction.
    let p = pcs(out);
    assert_eq!(p.len(), 2, "{}", got.describe());
    assert_eq!(p[0], p[1], "{}", got.describe());
    let threads = out
        .lines()
        .skip_while(|l| !l.contains("Target Id"))
        .skip(1)
        .take_while(|l| l.contains("Thread "))
        .count();
    assert!(threads >= 2, "info threads: {}", got.describe());
    assert!(
        out.contains("[Switching to thread 1 "),
        "{}",
        got.describe()
    );
    // gdb -batch prints monitor output on stderr.
    let all = format!("{}{}", got.stdout, got.stderr);
    assert!(all.contains("Current event: "), "{}", got.describe());
    assert!(all.contains("checkpoint 1: moment "), "{}", got.describe());
    assert!(all.contains("monitor goto MOMENT"), "{}", got.describe());
    assert!(
        all.contains("Unknown monitor command"),
        "{}",
        got.describe()
    );
    assert!(
        all.contains("maint flush register-cache"),
        "{}",
        got.describe()
    );
    assert!(
        got.stderr.contains("Cannot access memory at address")
            && got.stderr.contains("Could not write registers"),
        "writes are refused: {}",
        got.describe()
    );
    assert!(got.success, "{}", got.describe());
}

#[test]
fn both_ends_of_history_say_no_more_reverse_execution_history() {
    let scratch = Scratch::new("gds-ends");
    let rec = demo_recording(&scratch);
    let got = gdb_on(
        &rec.dir,
        &[
            "reverse-stepi",
            "p $pc",
            "continue",
            "bt 1",
            "reverse-continue",
            "p $pc",
        ],
    );
    let n = got
        .stdout
        .matches("No more reverse-execution history.")
        .count();
    assert_eq!(n, 3, "{}", got.describe());
    let p = pcs(&got.stdout);
    assert_eq!(p.len(), 2, "{}", got.describe());
    assert_eq!(
        p[0],
        p[1],
        "back at the first instruction: {}",
        got.describe()
    );
    assert!(got.stdout.contains("exit"), "{}", got.describe());
    // The program's output, replayed, went to stderr (stdout is gdb's).
    assert!(
        got.stderr.contains("fact 720 signal 14 counter 5"),
        "{}",
        got.describe()
    );
}

#[test]
fn ctrl_c_in_gdb_stops_a_long_continue() {
    let scratch = Scratch::new("gds-ctrl-c");
    let mut prog = fixture("dbg_spin");
    prog.arg("3000");
    let rec = record(&scratch, &prog, None);
    let log = scratch.join("gdb.out");
    let file = std::fs::File::create(&log).expect("gdb log");
    let mut cmd = system_program("gdb");
    cmd.args(["-batch", "-nx", "-ex"])
        .arg(connect(&rec.dir))
        .args([
            "-ex",
            "break mark",
            "-ex",
            "continue",
            "-ex",
            "monitor when",
            "-ex",
            "continue",
            "-ex",
            "monitor when",
            "-ex",
            "echo DONE\\n",
        ])
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .process_group(0);
    let mut child = cmd.spawn().expect("start gdb");
    let deadline = Instant::now() + GDB_TIMEOUT;
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    while !read().contains("mark (i=0)") {
        assert!(Instant::now() < deadline, "no first stop:\n{}", read());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(800));
    let sent = Instant::now();
    rewind_ckpt::sys::process::kill(child.id() as i32, libc::SIGINT).expect("SIGINT to gdb");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            kill_group(&child);
            panic!("gdb did not finish:\n{}", read());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = read();
    assert!(status.success(), "{out}");
    assert!(
        out.contains("Program received signal SIGINT"),
        "interrupted: {out}"
    );
    assert!(out.contains("DONE"), "{out}");
    // Stopped where the continue began, well before the loop's end.
    let whens: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("Current event:"))
        .collect();
    assert_eq!(whens.len(), 2, "{out}");
    assert!(!out.contains("mark (i=1)"), "{out}");
    assert!(sent.elapsed() < Duration::from_secs(30), "{out}");
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn spawn_server(args: &[String]) -> Child {
    Command::new(rewind_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start rewind gdbserver")
}

/// Wait until something listens on `port`.
fn wait_listening(port: u16, server: &mut Child) {
    let deadline = Instant::now() + GDB_TIMEOUT;
    loop {
        // The probe itself is a connection: the server takes only one, so
        // check readiness with the listener's address instead.
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            return;
        }
        if let Ok(Some(s)) = server.try_wait() {
            panic!("rewind gdbserver exited early: {s}");
        }
        assert!(Instant::now() < deadline, "nobody listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn live_program_over_tcp_and_a_dropped_connection() {
    let scratch = Scratch::new("gds-tcp");
    // Live: rewind records the program first, then serves it.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = spawn_server(&[
        "gdbserver".into(),
        "--listen".into(),
        addr.clone(),
        "--".into(),
        target("dbg_demo").display().to_string(),
    ]);
    wait_listening(port, &mut server);
    let got = gdb(
        &[
            format!("target remote {addr}"),
            "break fact".into(),
            "continue".into(),
            "p n".into(),
            "reverse-stepi".into(),
            "stepi".into(),
            "p n".into(),
            "kill".into(),
        ],
        None,
        &[],
    );
    assert_eq!(values(&got.stdout), ["6", "6"], "{}", got.describe());
    let done = finish(server, "rewind gdbserver --listen".into(), GDB_TIMEOUT);
    assert!(done.success, "{}", done.describe());
    assert!(
        done.stderr.contains("Listening on 127.0.0.1:"),
        "{}",
        done.describe()
    );

    // A client that sends garbage and hangs up: the server ends, no hang.
    let rec = demo_recording(&scratch);
    let port = free_port();
    let mut server = spawn_server(&[
        "gdbserver".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--trace".into(),
        rec.dir.display().to_string(),
    ]);
    wait_listening(port, &mut server);
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let _ = s.write_all(b"$qSupported#37garbage$zz#00\x03");
        std::thread::sleep(Duration::from_millis(200));
    }
    let done = finish(server, "rewind gdbserver (dropped)".into(), GDB_TIMEOUT);
    assert!(!done.stderr.contains("panicked"), "{}", done.describe());
}

/// The values `{0x.., 0x..}` of a `print/x` of 128-bit lanes, as bytes
/// (lane 0 first, little-endian).
fn lanes(line: &str) -> Option<Vec<u8>> {
    let inner = line.split_once(" = {")?.1.strip_suffix('}')?;
    let mut bytes = Vec::new();
    for v in inner.split(", ") {
        let v = u128::from_str_radix(v.strip_prefix("0x")?, 16).ok()?;
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    Some(bytes)
}

#[test]
fn vector_registers_match_what_the_program_loaded() {
    // simd_regs holds, in a loop of raw nanosleep syscalls, zmm0-31 (with AVX-512) or ymm0-15, byte
    // b of register r being block * 97 + r * 31 + b * 7 + 1 (mod 256). Whatever the CPU's XSAVE
    // layout (AMD and Intel place AVX-512 state differently), gdb must see exactly that.
    let scratch = Scratch::new("gds-simd");
    let mut prog = fixture("simd_regs");
    // Without cargo's long library path, ld.so's start-up is a few dozen events, not hundreds.
    prog.env_remove("LD_LIBRARY_PATH");
    let rec = record(&scratch, &prog, None);
    assert!(rec.status.success(), "{}", rec.stderr);
    let (regs, width, view) = if std::arch::is_x86_feature_detected!("avx512f") {
        (32, 64, "zmm")
    } else {
        (16, 32, "ymm")
    };
    let lanes_of = if view == "zmm" {
        "v4_int128"
    } else {
        "v2_int128"
    };
    // Moments in the middle of the run (about 30 events of start-up, then 16 blocks of 5
    // nanosleeps and a write).
    let events = [50, 75, 100];
    let mut cmds = vec![connect(&rec.dir)];
    for event in events {
        cmds.push(format!("monitor goto {event}"));
        cmds.push("maint flush register-cache".into());
        cmds.push("p $orig_rax".into());
        for r in 0..regs {
            cmds.push(format!("p/x ${view}{r}.{lanes_of}"));
        }
    }
    let got = gdb(&cmds, None, &[]);
    let shown: Vec<&str> = got.stdout.lines().filter(|l| l.starts_with('$')).collect();
    assert_eq!(shown.len(), events.len() * (1 + regs), "{}", got.describe());
    let mut checked = 0;
    for moment in shown.chunks(1 + regs) {
        // Inside the asm loop only when the event is one of its nanosleeps.
        if !moment[0].ends_with(" = 35") {
            continue;
        }
        let bytes: Vec<Vec<u8>> = moment[1..]
            .iter()
            .map(|l| lanes(l).unwrap_or_else(|| panic!("not lanes: {l}\n{}", got.describe())))
            .collect();
        // The block, from zmm0/ymm0's first byte: block * 97 + 1 (97 is odd: invertible mod 256).
        let inverse = (1..=255u32)
            .find(|i| (97 * i) % 256 == 1)
            .expect("97 is invertible");
        let block = (u32::from(bytes[0][0]).wrapping_sub(1) % 256 * inverse) % 256;
        for (r, reg) in bytes.iter().enumerate() {
            assert_eq!(reg.len(), width, "{view}{r}: {}", got.describe());
            for (b, &v) in reg.iter().enumerate() {
                let want = (block as usize * 97 + r * 31 + b * 7 + 1) % 256;
                assert_eq!(
                    v as usize,
                    want,
                    "{view}{r} byte {b} (block {block}):\n{}",
                    got.describe()
                );
            }
        }
        checked += 1;
    }
    assert!(
        checked > 0,
        "no moment inside the loop:\n{}",
        got.describe()
    );
}

#[test]
fn gdb_waits_for_a_start_longer_than_its_remote_timeout() {
    // gdb gives a stub `remotetimeout` seconds (three tries) to answer its first packet; here
    // rewind's start takes longer than that (6 s, as on a loaded machine), and gdb must still get
    // the right answers.
    let scratch = Scratch::new("gds-slow-start");
    let rec = demo_recording(&scratch);
    let got = gdb(
        &[
            "set remotetimeout 1".into(),
            connect(&rec.dir),
            "p $pc".into(),
            "info threads".into(),
        ],
        None,
        &[("REWIND_TEST_SLOW_START_MS", "6000")],
    );
    assert!(
        !got.stderr.contains("Remote replied unexpectedly") && pcs(&got.stdout).len() == 1,
        "{}",
        got.describe()
    );
    assert!(got.stdout.contains("* 1"), "{}", got.describe());
}

#[test]
fn bad_usage_exits_with_2() {
    let scratch = Scratch::new("gds-usage");
    let done = rewind_in(scratch.path(), ["gdbserver"]);
    assert_eq!(done.status.code(), Some(2), "{}", done.describe());
    let done = rewind_in(
        scratch.path(),
        [
            "gdbserver",
            "--stdio",
            "--listen",
            "127.0.0.1:1",
            "--trace",
            "x",
        ],
    );
    assert_eq!(done.status.code(), Some(2), "{}", done.describe());
    let done = rewind_in(
        scratch.path(),
        ["gdbserver", "--stdio", "--trace", "/nonexistent-trace"],
    );
    assert_eq!(done.status.code(), Some(1), "{}", done.describe());
    let _ = PathBuf::new();
}

/// gdb knows the program by its own pid (what `getpid()` returned while it
/// was recorded) and reads its files and its `/proc` entries through the
/// remote target: those of the replayed process at the moment it looks at.
#[test]
fn gdb_sees_the_recorded_pid_and_reads_files_through_the_target() {
    let scratch = Scratch::new("gds-pid");
    let prog = fixture("rr_time_random");
    let rec = record(&scratch, &prog, None);
    let pid: u32 = rec
        .stdout
        .lines()
        .find_map(|l| l.split_once(" getpid: ")?.1.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid printed: {}", rec.what));
    let got = gdb_on(
        &rec.dir,
        &[
            "break usleep",
            "continue",
            "info inferiors",
            "info proc",
            "info proc mappings",
            "info sharedlibrary",
            "echo END\\n",
        ],
    );
    let out = &got.stdout;
    let all = format!("{}{}", got.stdout, got.stderr);
    assert!(out.contains("END"), "{}", got.describe());
    assert!(
        out.contains(&format!("process {pid} ")),
        "gdb should know pid {pid}: {}",
        got.describe()
    );
    for warning in [
        "does not support file transfer",
        "unable to open /proc file",
        "process 1 ",
    ] {
        assert!(!all.contains(warning), "{warning}: {}", got.describe());
    }
    // /proc/PID/{cmdline,exe} and maps came from the replayed process.
    let exe = prog.get_program().to_string_lossy().into_owned();
    assert!(
        out.lines()
            .any(|l| l.starts_with("cmdline = ") && l.contains(&exe)),
        "{}",
        got.describe()
    );
    assert!(
        out.lines()
            .any(|l| l.contains(" r-xp ") && l.trim_end().ends_with(&exe)),
        "the executable's text in info proc mappings: {}",
        got.describe()
    );
    assert!(
        out.lines()
            .any(|l| l.contains("Yes") && l.contains("target:") && l.contains("libc.so.6")),
        "libc read through the target: {}",
        got.describe()
    );
}
