//! Checkpoint, kill and restart real programs (DESIGN §9, oracle (a)): what a program prints before
//! the checkpoint plus what its restarted copy prints is exactly what an uninterrupted run prints, and
//! both parts are non-empty. Each test names the behaviour it pins down; each fixture in
//! tests/targets/ exercises one thing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use rewind_tests::*;

#[test]
fn restart_continues_counting_loop_with_heap() {
    let scratch = Scratch::new("restart_continues_counting_loop_with_heap");
    let program = fixture("loop_heap");
    let uninterrupted = run_uninterrupted(&program);
    checkpoint_kill_restart(&scratch, &program, Wait::Lines(6)).assert_matches(&uninterrupted);
}

#[test]
fn restart_keeps_threads_mutexes_condvars() {
    let scratch = Scratch::new("restart_keeps_threads_mutexes_condvars");
    let program = fixture("threads_mutex");
    let uninterrupted = run_uninterrupted(&program);
    checkpoint_kill_restart(&scratch, &program, Wait::Lines(5)).assert_matches(&uninterrupted);
}

#[test]
fn restart_keeps_o_append_and_read_offset() {
    const EARLIER: &str = "an earlier line that must stay\n";
    let scratch = Scratch::new("restart_keeps_o_append_and_read_offset");
    let input: String = (1..=40)
        .map(|i| format!("line {i:02}: the quick brown fox jumps over the lazy dog\n"))
        .collect();
    // The same files twice: one pair for the uninterrupted run, one for the checkpointed run.
    let file_rw_in = |dir: &Path| {
        fs::write(dir.join("input.txt"), &input).unwrap();
        fs::write(dir.join("appended.txt"), EARLIER).unwrap();
        let mut program = fixture("file_rw");
        program
            .arg(dir.join("input.txt"))
            .arg(dir.join("appended.txt"));
        program
    };
    let native = scratch.dir("native");
    let rewound = scratch.dir("rewound");

    let uninterrupted = run_uninterrupted(&file_rw_in(&native));
    let run = checkpoint_kill_restart(&scratch, &file_rw_in(&rewound), Wait::Lines(8));
    // Every line shows the read offset and whether O_APPEND is still set, so the oracle checks both.
    run.assert_matches(&uninterrupted);

    let expected = fs::read_to_string(native.join("appended.txt")).unwrap();
    let got = fs::read_to_string(rewound.join("appended.txt")).unwrap();
    assert!(
        expected.starts_with(EARLIER) && expected.len() > EARLIER.len(),
        "fixture file_rw appended nothing"
    );
    assert!(
        got.starts_with(EARLIER),
        "the appended file lost its earlier content (overwritten):\n{got}"
    );
    assert_eq!(
        got,
        expected,
        "the appended file differs from the uninterrupted run's: {}",
        first_difference(&expected, &got)
    );
}

#[test]
fn restart_keeps_o_append_on_inherited_stdout() {
    // DESIGN §10 "Stdout flags": `rewind launch ... >> log` and `rewind restart ... >> log` keep the
    // logs' earlier content; the restarted program's stdout is restart's own, O_APPEND and all.
    const LAUNCH_LOG: &str = "launch log: an earlier line\n";
    const RESTART_LOG: &str = "restart log: one earlier line\nrestart log: and another\n";
    let scratch = Scratch::new("restart_keeps_o_append_on_inherited_stdout");
    let program = fixture("loop_heap");
    let uninterrupted = run_uninterrupted(&program);
    let launch_log = scratch.write("launch.log", LAUNCH_LOG);
    let restart_log = scratch.write("restart.log", RESTART_LOG);

    let mut launched = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::append_to(&launch_log),
    );
    launched.wait_for(Wait::Lines(6));
    let image = launched.checkpoint_and_kill();
    let before = launched.wait_timeout(KILL_TIMEOUT).stdout;
    let restarted = restart(
        &image,
        &scratch.dir("ckpt-1"),
        &[],
        Redirect::append_to(&restart_log),
    )
    .wait();

    let launch_log = read_lossy(&launch_log);
    let restart_log = read_lossy(&restart_log);
    assert!(
        launch_log.starts_with(LAUNCH_LOG),
        "launch overwrote its O_APPEND stdout:\n{launch_log}"
    );
    assert!(
        restart_log.starts_with(RESTART_LOG),
        "restart overwrote the earlier content of its O_APPEND stdout (was O_APPEND cleared, or an \
         offset from the image used?):\n{restart_log}\n{}",
        restarted.describe()
    );
    assert_pieces_match(&uninterrupted, &[&before, &restarted.stdout], &restarted);
    assert_eq!(launch_log, format!("{LAUNCH_LOG}{before}"));
    assert_eq!(restart_log, format!("{RESTART_LOG}{}", restarted.stdout));
}

#[test]
fn restart_refills_pipe_data_in_flight() {
    let scratch = Scratch::new("restart_refills_pipe_data_in_flight");
    let program = fixture("pipe_threads");
    let uninterrupted = run_uninterrupted(&program);
    checkpoint_kill_restart(&scratch, &program, Wait::Lines(10)).assert_matches(&uninterrupted);
}

#[test]
fn restart_keeps_alarm_pending() {
    let scratch = Scratch::new("restart_keeps_alarm_pending");
    let program = fixture("alarm_signal");
    let uninterrupted = run_uninterrupted(&program);
    let run = checkpoint_kill_restart(
        &scratch,
        &program,
        Wait::LineContaining("round 1: alarm(1) armed"),
    );
    run.assert_matches(&uninterrupted);
    assert!(
        run.after.contains("tick received"),
        "no tick arrived after the restart, so the checkpoint did not catch an alarm pending (it took \
         over a second?):\n--- before:\n{}--- after:\n{}",
        run.before,
        run.after
    );
}

#[test]
fn restart_keeps_timerfd_and_epoll() {
    let scratch = Scratch::new("restart_keeps_timerfd_and_epoll");
    let program = fixture("timerfd_epoll");
    let uninterrupted = run_uninterrupted(&program);
    checkpoint_kill_restart(&scratch, &program, Wait::Lines(6)).assert_matches(&uninterrupted);
}

#[test]
fn restart_keeps_nested_epolls_and_watches_of_closed_descriptors() {
    let scratch = Scratch::new("restart_keeps_nested_epolls");
    let mut program = fixture("epoll_nested");
    program.args(["40", "50000"]);
    let uninterrupted = run_uninterrupted(&program);
    checkpoint_kill_restart(&scratch, &program, Wait::Lines(8)).assert_matches(&uninterrupted);
}

#[test]
fn restart_keeps_vector_registers() {
    let scratch = Scratch::new("restart_keeps_vector_registers");
    let program = fixture("simd_regs");
    let uninterrupted = run_uninterrupted(&program);
    // Nearly all of the run is spent in nanosleep inside an asm block holding the registers.
    checkpoint_kill_restart(&scratch, &program, Wait::Lines(4)).assert_matches(&uninterrupted);
}

#[test]
fn restart_static_binary() {
    let scratch = Scratch::new("restart_static_binary");
    let program = fixture("static_loop");
    let uninterrupted = run_uninterrupted(&program);
    checkpoint_kill_restart(&scratch, &program, Wait::Lines(6)).assert_matches(&uninterrupted);
}

#[test]
fn restart_python3_computation() {
    const SCRIPT: &str = r#"
import hashlib, time
h = hashlib.sha256()
total = 0
for step in range(25):
    h.update(str(step).encode())
    squares = {k: k * k for k in range(1000 * (step + 1))}
    total = (total * 31 + sum(squares.values())) % (1 << 61)
    print(f"step {step:2d}: {h.hexdigest()[:16]} {total}", flush=True)
    time.sleep(0.08)
print("done", flush=True)
"#;
    let scratch = Scratch::new("restart_python3_computation");
    let mut program = python3();
    program.arg("-c").arg(SCRIPT);
    let uninterrupted = run_uninterrupted(&program);
    checkpoint_kill_restart(&scratch, &program, Wait::Lines(5)).assert_matches(&uninterrupted);
}

#[test]
fn restart_1gib_heap_checksum() {
    let scratch = Scratch::new("restart_1gib_heap_checksum");
    let mut program = fixture("big_heap");
    program.arg("1024");
    let uninterrupted = run_uninterrupted(&program);
    // Checkpoint once the heap is full: "checksum again" after the restart must be "same".
    let run = checkpoint_kill_restart(&scratch, &program, Wait::LineContaining("checksum:"));
    run.assert_matches(&uninterrupted);
    assert!(
        run.after.contains("checksum again"),
        "the checkpoint landed after the heap was checked"
    );
}

#[test]
fn restart_same_image_twice() {
    let scratch = Scratch::new("restart_same_image_twice");
    let program = fixture("loop_heap");
    let uninterrupted = run_uninterrupted(&program);

    let mut launched = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    launched.wait_for(Wait::Lines(6));
    let image = launched.checkpoint_and_kill();
    let before = launched.wait_timeout(KILL_TIMEOUT).stdout;
    let image_bytes = fs::read(&image).unwrap();

    let first = restart(
        &image,
        &scratch.dir("ckpt-1"),
        &[],
        Redirect::to(scratch.join("first.out")),
    )
    .wait();
    assert_pieces_match(&uninterrupted, &[&before, &first.stdout], &first);
    let second = restart(
        &image,
        &scratch.dir("ckpt-2"),
        &[],
        Redirect::to(scratch.join("second.out")),
    )
    .wait();
    assert_pieces_match(&uninterrupted, &[&before, &second.stdout], &second);
    assert!(
        fs::read(&image).unwrap() == image_bytes,
        "restarting changed the image {}",
        image.display()
    );
}

#[test]
fn checkpoint_restart_chain() {
    let scratch = Scratch::new("checkpoint_restart_chain");
    let program = fixture("loop_heap");
    let uninterrupted = run_uninterrupted(&program);
    // Launch → checkpoint after 5 lines → restart → checkpoint after 8 more → restart to the end.
    let chain = checkpoint_chain(&scratch, &program, &[Wait::Lines(5), Wait::Lines(8)]);
    chain.assert_matches(&uninterrupted);
    assert_eq!(chain.images.len(), 2);
}

#[test]
fn restart_env_change_visible() {
    let scratch = Scratch::new("restart_env_change_visible");
    let mut program = fixture("getenv_loop");
    program.env("REWIND_PROBE", "original");
    let uninterrupted = String::from_utf8(run_uninterrupted(&program).stdout).unwrap();

    let mut launched = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    launched.wait_for(Wait::Lines(5));
    let image = launched.checkpoint_and_kill();
    let before = launched.wait_timeout(KILL_TIMEOUT).stdout;
    let restarted = restart(
        &image,
        &scratch.dir("ckpt-1"),
        &[("REWIND_PROBE", "changed")],
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    restarted.assert_success();

    // Expected: the uninterrupted run, with the new value from the checkpoint on.
    let cut = before.lines().count();
    let expected_before: String = uninterrupted
        .lines()
        .take(cut)
        .map(|l| format!("{l}\n"))
        .collect();
    let expected_after: String = uninterrupted
        .lines()
        .skip(cut)
        .map(|l| format!("{}\n", l.replace("=original", "=changed")))
        .collect();
    assert_eq!(
        before,
        expected_before,
        "{}",
        first_difference(&expected_before, &before)
    );
    assert!(
        expected_after.contains("=changed"),
        "the checkpoint landed after the last getenv"
    );
    assert_eq!(
        restarted.stdout,
        expected_after,
        "{}",
        first_difference(&expected_after, &restarted.stdout)
    );
}

#[test]
fn launch_without_checkpoint_changes_nothing() {
    let scratch = Scratch::new("launch_without_checkpoint_changes_nothing");
    let program = fixture("threads_mutex");
    let uninterrupted = run_uninterrupted(&program);
    let launched = launch(
        &program,
        &scratch.dir("ckpt"),
        Redirect::to(scratch.join("launch.out")),
    )
    .wait();
    launched.assert_success();
    assert_eq!(
        launched.stdout.as_bytes(),
        uninterrupted.stdout,
        "{}",
        launched.describe()
    );
}

#[test]
fn checkpoint_without_kill_lets_program_finish() {
    let scratch = Scratch::new("checkpoint_without_kill_lets_program_finish");
    let program = fixture("loop_heap");
    let uninterrupted = String::from_utf8(run_uninterrupted(&program).stdout).unwrap();

    let mut launched = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("launch.out")),
    );
    launched.wait_for(Wait::Lines(6));
    let image = launched.checkpoint();
    let finished = launched.wait();
    finished.assert_success();
    assert_eq!(
        finished.stdout,
        uninterrupted,
        "{}",
        first_difference(&uninterrupted, &finished.stdout)
    );

    // The image resumes from the checkpoint: what it prints is a non-empty tail of the run.
    let restarted = restart(
        &image,
        &scratch.dir("ckpt-1"),
        &[],
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    restarted.assert_success();
    assert!(
        !restarted.stdout.is_empty() && uninterrupted.ends_with(&restarted.stdout),
        "the restart's output is not a tail of the uninterrupted run:\n--- uninterrupted:\n{uninterrupted}--- restart:\n{}",
        restarted.stdout
    );
}

#[test]
fn checkpoint_writes_private_image_named_after_program() {
    let scratch = Scratch::new("checkpoint_writes_private_image_named_after_program");
    let mut launched = launch(
        &fixture("loop_heap"),
        &scratch.dir("ckpt"),
        Redirect::to(scratch.join("launch.out")),
    );
    launched.wait_for(Wait::Lines(3));
    let image = launched.checkpoint();

    let name = image.file_name().unwrap().to_string_lossy().into_owned();
    let vpid = name
        .strip_prefix("ckpt_loop_heap_")
        .and_then(|rest| rest.strip_suffix(".rwd"));
    assert!(
        vpid.is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())),
        "image name {name} is not ckpt_<prog>_<vpid>.rwd"
    );
    let mode = fs::metadata(&image).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "the image holds process memory: its mode must be 0600, not {mode:o}"
    );
    let leftovers: Vec<String> = fs::read_dir(launched.ckpt_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || n.contains(".rwd.tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left after a complete image: {leftovers:?}"
    );

    // `--kill` alone ends the program.
    launched.command(&["--kill"]).assert_success();
    let killed = launched.wait_timeout(KILL_TIMEOUT);
    assert!(
        !killed.status.success(),
        "the program ran to its end despite --kill:\n{}",
        killed.describe()
    );
}

#[test]
fn status_prints_json_while_running() {
    let scratch = Scratch::new("status_prints_json_while_running");
    let mut launched = launch(
        &fixture("loop_heap"),
        &scratch.dir("ckpt"),
        Redirect::to(scratch.join("launch.out")),
    );
    launched.wait_for(Wait::Lines(2));
    let status = launched.status_json();
    let json: serde_json::Value = serde_json::from_str(status.trim()).unwrap_or_else(|e| {
        panic!("`rewind command --status --json` printed no JSON ({e}):\n{status}")
    });
    assert!(json.is_object(), "expected a JSON object, got {json}");
    launched.wait().assert_success();
}

#[test]
fn restart_while_original_runs_translates_ids() {
    // The original keeps its pid, so the restarted copy cannot have it back:
    // it must still see its old pid, open /proc/<that pid>/..., and fork
    // children whose syscalls work.
    let scratch = Scratch::new("restart_while_original_runs_translates_ids");
    let program = fixture("proc_pid_fork");
    let uninterrupted = String::from_utf8(run_uninterrupted(&program).stdout).unwrap();
    let mut launched = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("original.out")),
    );
    launched.wait_for(Wait::Lines(4));
    let image = launched.checkpoint();
    let restarted = restart(
        &image,
        &scratch.dir("ckpt-1"),
        &[],
        Redirect::to(scratch.join("copy.out")),
    )
    .wait();
    restarted.assert_success();
    let original = launched.wait();
    original.assert_success();
    assert_eq!(
        original.stdout, uninterrupted,
        "the original must be unaffected"
    );
    let copy = restarted.stdout;
    let n = copy.lines().count();
    assert!(
        n > 0 && n < uninterrupted.lines().count(),
        "copy printed {n} lines:\n{copy}"
    );
    let expected: String = uninterrupted
        .lines()
        .skip(uninterrupted.lines().count() - n)
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(copy, expected, "{}", first_difference(&expected, &copy));
}

/// A connection to a server outside the checkpoint cannot come back: after the restart it is a
/// closed connection (sends fail with EPIPE), with a warning, and the server gets nothing more.
#[test]
fn connection_to_the_outside_comes_back_closed() {
    use std::io::Read;
    let scratch = Scratch::new("connection_to_the_outside_comes_back_closed");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = String::new();
        let _ = conn.read_to_string(&mut got);
        got
    });
    let mut program = fixture("tcp_outside");
    program.args([port.as_str(), "30"]);
    let mut running = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    running.wait_for(Wait::LineContaining("sent 5"));
    let image = running.checkpoint_and_kill();
    let before = running.wait_timeout(KILL_TIMEOUT);
    let after = rewind_in(
        &scratch.dir("ckpt-1"),
        ["restart".as_ref(), image.as_os_str()],
    );
    after.assert_success();
    // The server saw exactly what was sent (a send the checkpoint caught before its "sent" line
    // is printed after the restart).
    let received = server.join().unwrap();
    let sent = |out: &str| out.lines().filter(|l| l.starts_with("sent ")).count();
    assert_eq!(
        received.lines().count(),
        sent(&before.stdout) + sent(&after.stdout),
        "server got {received:?}\n--- before:\n{}\n--- after:\n{}",
        before.stdout,
        after.stdout
    );
    // After the restart every send fails with EPIPE.
    let lines: Vec<&str> = after.stdout.lines().collect();
    let failures = &lines[sent(&after.stdout).min(1)..];
    assert!(
        sent(&after.stdout) <= 1
            && !failures.is_empty()
            && failures.iter().all(|l| l.ends_with("failed: Broken pipe")),
        "sends after the restart should fail with EPIPE:\n{}",
        after.describe()
    );
    assert!(
        after.stderr.contains("closed connection"),
        "no warning about the closed connection:\n{}",
        after.describe()
    );
}

/// Socket pairs whose two ends are the program's own come back connected, with what was queued
/// in them at the checkpoint delivered once, in order (datagram boundaries kept).
#[test]
fn restart_keeps_socket_pairs_and_their_queued_messages() {
    let scratch = Scratch::new("restart_keeps_socket_pairs_and_their_queued_messages");
    let program = fixture("socketpair_queue");
    let uninterrupted = run_uninterrupted(&program);
    checkpoint_kill_restart(&scratch, &program, Wait::LineContaining("got line 10"))
        .assert_matches(&uninterrupted);
}

/// The same, checkpointed twice without being killed: draining the pairs for the image must not
/// take anything from the running program.
#[test]
fn checkpoints_leave_socket_pairs_untouched() {
    let scratch = Scratch::new("checkpoints_leave_socket_pairs_untouched");
    let program = fixture("socketpair_queue");
    let uninterrupted = run_uninterrupted(&program);
    let mut running = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("live.out")),
    );
    running.wait_for(Wait::LineContaining("got line 5"));
    running.checkpoint();
    running.wait_for(Wait::LineContaining("got line 12"));
    running.checkpoint();
    let done = running.wait();
    done.assert_success();
    assert_eq!(
        done.stdout,
        String::from_utf8_lossy(&uninterrupted.stdout),
        "{}",
        done.describe()
    );
}

/// One client of tcp_server: sends `line`, returns the answer.
fn tcp_client(port: u16, line: &str) -> String {
    talk(|| std::net::TcpStream::connect(("127.0.0.1", port)), line)
}

/// Connect (retrying while the server is not listening yet), send `line`, read the answer.
fn talk<S: std::io::Read + std::io::Write>(
    connect: impl Fn() -> std::io::Result<S>,
    line: &str,
) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match connect() {
            Ok(mut s) => {
                s.write_all(format!("{line}\n").as_bytes()).unwrap();
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                return answer;
            }
            Err(e) if std::time::Instant::now() > deadline => panic!("connect: {e}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

/// A listening socket is bound again at restart: clients after the restart reach the same
/// server, which goes on numbering them (`address` as tcp_server takes it; `client` talks to it).
fn listener_survives_restart(test: &str, address: &str, client: &dyn Fn(&str) -> String) {
    let scratch = Scratch::new(test);
    let mut program = fixture("tcp_server");
    program.args([address, "3"]);
    // Uninterrupted, with the same three clients.
    let native = {
        let mut cmd = std::process::Command::new(program.get_program());
        cmd.args(program.get_args())
            .stdout(std::process::Stdio::piped());
        let child = cmd.spawn().unwrap();
        let answers: Vec<String> = ["one", "two", "three"].iter().map(|l| client(l)).collect();
        let out = child.wait_with_output().unwrap();
        (String::from_utf8_lossy(&out.stdout).into_owned(), answers)
    };
    let mut running = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    running.wait_for(Wait::LineContaining("listening"));
    let first = client("one");
    running.wait_for(Wait::LineContaining("client 1"));
    let image = running.checkpoint_and_kill();
    let before = running.wait_timeout(KILL_TIMEOUT);
    let mut restarted = restart(
        &image,
        &scratch.dir("ckpt-1"),
        &[],
        Redirect::to(scratch.join("after.out")),
    );
    let rest: Vec<String> = ["two", "three"].iter().map(|l| client(l)).collect();
    restarted.wait_for(Wait::LineContaining("done"));
    let after = restarted.wait();
    after.assert_success();
    assert_eq!(
        [vec![first], rest].concat(),
        native.1,
        "answers differ\n{}",
        after.describe()
    );
    assert_eq!(
        format!("{}{}", before.stdout, after.stdout),
        native.0,
        "{}",
        after.describe()
    );
}

#[test]
fn restart_listens_again_on_the_same_port() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    listener_survives_restart(
        "restart_listens_again_on_the_same_port",
        &port.to_string(),
        &|l| tcp_client(port, l),
    );
}

#[test]
fn restart_listens_again_on_the_same_unix_path() {
    let dir = Scratch::new("unix-listener-path");
    let path = dir.join("server.sock");
    let p = path.clone();
    listener_survives_restart(
        "restart_listens_again_on_the_same_unix_path",
        &path.display().to_string(),
        &move |l| talk(|| std::os::unix::net::UnixStream::connect(&p), l),
    );
}

#[test]
fn restart_listens_again_on_the_same_abstract_unix_name() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("rewind-test-{}", std::process::id());
    let n = name.clone();
    listener_survives_restart(
        "restart_listens_again_on_the_same_abstract_unix_name",
        &format!("@{name}"),
        &move |l| {
            talk(
                || {
                    let addr = std::os::unix::net::SocketAddr::from_abstract_name(n.as_bytes())?;
                    std::os::unix::net::UnixStream::connect_addr(&addr)
                },
                l,
            )
        },
    );
}

/// Handlers of SIGSEGV, SIGTRAP and SIGILL survive a checkpoint, in the program that runs on and in
/// its restarted copies: the engine's injected syscalls (each ends on an `int3`) and the removal of
/// its trampoline must not raise a fault while the program's signals are blocked, which makes the
/// kernel reset the handler (a JVM then dies at its next safepoint, a SIGSEGV).
#[test]
fn restart_keeps_fault_handlers() {
    let scratch = Scratch::new("restart_keeps_fault_handlers");
    let program = fixture("fault_handlers");
    let uninterrupted = run_uninterrupted(&program);
    checkpoint_chain(
        &scratch,
        &program,
        &[Wait::Lines(5), Wait::LineContaining("round 12")],
    )
    .assert_matches(&uninterrupted);
    let scratch = Scratch::new("restart_keeps_fault_handlers_run_on");
    checkpoint_run_on(&scratch, &program, Wait::Lines(5)).assert_matches(&uninterrupted);
}

/// A program running under ids of its own (here set by `setpriv`, as `runuser` or a server
/// dropping root would) gets them back at restart, with its supplementary groups; it used to come
/// back as root, rewind's own user (a restarted PostgreSQL then wrote its files as root).
#[test]
fn restart_keeps_user_and_group_ids() {
    let scratch = Scratch::new("restart_keeps_user_and_group_ids");
    let mut program = Command::new("/usr/bin/setpriv");
    program
        .args(["--reuid=65534", "--regid=65533", "--groups=65532,100", "--"])
        .arg(target("ids_loop"));
    let uninterrupted = run_uninterrupted(&program);
    assert!(
        String::from_utf8_lossy(&uninterrupted.stdout)
            .contains("uids 65534 65534 65534 gids 65533 65533 65533 dumpable 1 groups 100 65532"),
        "setpriv did not set the ids: {uninterrupted:?}"
    );
    checkpoint_chain(&scratch, &program, &[Wait::Lines(4), Wait::Lines(4)])
        .assert_matches(&uninterrupted);
}
