//! `rewind coordinator` with real programs (DESIGN §3, last bullet): several sessions registered with
//! one coordinator are checkpointed together through barriers, killed, and restarted; each program's
//! output before the checkpoint plus its restarted copy's output is exactly its uninterrupted output
//! (DESIGN §9 (a)). Also: a session that fails or dies is named and the others run on, the token rule,
//! a coordinator that goes quiet or away, and bad input.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use rewind_ckpt::coordinator::{Action, Order, Reply, SessionMsg, Welcome};
use rewind_tests::*;
use serde_json::Value;

/// The fixtures run together, with how far each gets before the checkpoint (as in checkpoint_restart.rs).
const PROGRAMS: [(&str, Wait); 3] = [
    ("loop_heap", Wait::Lines(6)),
    ("threads_mutex", Wait::Lines(5)),
    ("pipe_threads", Wait::Lines(10)),
];

/// Barrier timeout given to the coordinators of these tests.
const BARRIER_TIMEOUT: &str = "20";

/// A `rewind coordinator` running in the background, killed when dropped.
struct Coord {
    running: Running,
    addr: String,
    token: String,
}

impl Coord {
    /// `rewind coordinator --listen LISTEN` (port 0: any free port); waits for its address and token.
    fn start(scratch: &Scratch, listen: &str) -> Coord {
        let mut running = rewind_background(
            [
                "coordinator",
                "--listen",
                listen,
                "--timeout",
                BARRIER_TIMEOUT,
            ],
            scratch.path(),
            Redirect::to(scratch.join("coordinator.out")),
        );
        running.wait_for(Wait::LineContaining("token: "));
        let out = running.output();
        let field = |prefix: &str| {
            out.lines()
                .find_map(|l| l.split_once(prefix).map(|(_, v)| v.trim().to_string()))
                .unwrap_or_else(|| panic!("no {prefix:?} in the coordinator's output:\n{out}"))
        };
        let (addr, token) = (field("listening on "), field("token: "));
        assert!(
            token.len() == 32 && token.chars().all(|c| c.is_ascii_hexdigit()),
            "the token is not 128 bits of hex: {token:?}"
        );
        Coord {
            running,
            addr,
            token,
        }
    }

    /// What the coordinator printed so far.
    fn log(&self) -> String {
        self.running.output()
    }

    /// Waits until `count` lines of the log contain every one of `words`.
    #[track_caller]
    fn wait_log(&self, words: &[&str], count: usize) {
        let deadline = Instant::now() + OUTPUT_TIMEOUT;
        loop {
            let log = self.log();
            let n = log
                .lines()
                .filter(|l| words.iter().all(|w| l.contains(w)))
                .count();
            if n >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the coordinator's log has {n} line(s) with {words:?}, not {count}:\n{log}\n--- its stderr:\n{}",
                self.running.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// `rewind command --coordinator ADDR FLAGS...` from `dir`.
    fn command(&self, dir: &Path, flags: &[&str]) -> Finished {
        let mut args = vec!["command", "--coordinator", &self.addr];
        args.extend_from_slice(flags);
        rewind_in(dir, args)
    }

    /// The same with `--json`; it must succeed.
    #[track_caller]
    fn command_json(&self, dir: &Path, flags: &[&str]) -> Value {
        let mut all = flags.to_vec();
        all.push("--json");
        let done = self.command(dir, &all);
        done.assert_success();
        serde_json::from_str(&done.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", done.describe()))
    }
}

/// Each program's uninterrupted run, made in the background while the test goes on.
fn uninterrupted_runs(names: &[&'static str]) -> Vec<thread::JoinHandle<Output>> {
    names
        .iter()
        .map(|&name| thread::spawn(move || run_uninterrupted(&fixture(name))))
        .collect()
}

/// Launches every program of [`PROGRAMS`] under the coordinator, with checkpoint directory
/// `dirs(name)`, and waits until each is registered and far enough.
fn launch_all(
    scratch: &Scratch,
    coord: &Coord,
    dirs: impl Fn(&str) -> PathBuf,
) -> BTreeMap<&'static str, Running> {
    let mut launched = BTreeMap::new();
    for (name, _) in PROGRAMS {
        let running = launch_with(
            &["--coordinator", &coord.addr],
            &fixture(name),
            &dirs(name),
            Redirect::to(scratch.join(format!("{name}.before"))),
        );
        launched.insert(name, running);
    }
    for (name, wait) in PROGRAMS {
        launched.get_mut(name).expect("launched").wait_for(wait);
    }
    coord.wait_log(&["joined"], PROGRAMS.len());
    launched
}

/// The image of `program` in a checkpoint report.
#[track_caller]
fn image_of(report: &Value, program: &str) -> PathBuf {
    let sessions = report["sessions"].as_array().expect("sessions");
    let s = sessions
        .iter()
        .find(|s| s["info"]["program"] == program)
        .unwrap_or_else(|| panic!("no session of {program} in {report:#}"));
    let image = PathBuf::from(s["image"].as_str().unwrap_or_default());
    assert!(
        image.is_file(),
        "{program}'s image {image:?} is not a file: {report:#}"
    );
    image
}

fn phase_names(report: &Value) -> Vec<String> {
    report["phases"]
        .as_array()
        .map(|p| {
            p.iter()
                .map(|p| p["name"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn three_programs_checkpointed_together_and_restarted() {
    let scratch = Scratch::new("coord_three");
    let names: Vec<_> = PROGRAMS.iter().map(|(n, _)| *n).collect();
    let natives = uninterrupted_runs(&names);
    let coord = Coord::start(&scratch, "127.0.0.1:0");
    // One checkpoint directory for all: each session has its own control socket there.
    let ckpt0 = scratch.dir("ckpt-0");
    let mut launched = launch_all(&scratch, &coord, |_| ckpt0.clone());

    let report = coord.command_json(scratch.path(), &["--checkpoint", "--kill"]);
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(
        phase_names(&report),
        ["suspend", "drain", "capture", "kill"],
        "{report:#}"
    );
    for p in report["phases"].as_array().into_iter().flatten() {
        assert!(
            p["ms"].as_f64().is_some_and(|ms| ms > 0.0),
            "no timing: {report:#}"
        );
    }
    let images: Vec<PathBuf> = names.iter().map(|n| image_of(&report, n)).collect();

    let mut before = Vec::new();
    for name in &names {
        let killed = launched
            .remove(name)
            .expect("launched")
            .wait_timeout(KILL_TIMEOUT);
        assert!(!killed.stderr.contains("panicked"), "{}", killed.describe());
        before.push(killed.stdout);
    }

    // Each image restarted on its own, registering again.
    let ckpt1 = scratch.dir("ckpt-1");
    let restarts: Vec<Running> = names
        .iter()
        .zip(&images)
        .map(|(name, image)| {
            rewind_background(
                [
                    "restart".as_ref(),
                    "--ckpt-dir".as_ref(),
                    ckpt1.as_os_str(),
                    "--coordinator".as_ref(),
                    coord.addr.as_ref(),
                    image.as_os_str(),
                ],
                &ckpt1,
                Redirect::to(scratch.join(format!("{name}.after"))),
            )
        })
        .collect();
    coord.wait_log(&["joined", "restarted"], names.len());
    for (((name, restarted), native), before) in
        names.iter().zip(restarts).zip(natives).zip(&before)
    {
        let after = restarted.wait();
        let native = native.join().expect("uninterrupted run");
        assert_pieces_match(&native, &[before, &after.stdout], &after);
        coord.wait_log(&[name, "left: its program ended with status 0"], 1);
    }
}

/// Whether `combined` interleaves `parts` line by line, each in its own order; says where not.
fn check_interleaving(parts: &[(&str, String)], combined: &str) -> Result<(), String> {
    let mut next: Vec<std::iter::Peekable<std::str::Lines>> =
        parts.iter().map(|(_, p)| p.lines().peekable()).collect();
    for (i, line) in combined.lines().enumerate() {
        match next.iter_mut().position(|n| n.peek() == Some(&line)) {
            Some(k) => {
                next[k].next();
            }
            None => return Err(format!("line {} {line:?} is no program's next line", i + 1)),
        }
    }
    for ((name, _), mut rest) in parts.iter().zip(next) {
        if let Some(line) = rest.next() {
            return Err(format!(
                "{name}'s line {line:?} and what follows never came"
            ));
        }
    }
    Ok(())
}

#[test]
fn the_printed_restart_command_restarts_every_image() {
    let scratch = Scratch::new("coord_restart_all");
    let names: Vec<_> = PROGRAMS.iter().map(|(n, _)| *n).collect();
    let natives = uninterrupted_runs(&names);
    let coord = Coord::start(&scratch, "127.0.0.1:0");
    let mut launched = launch_all(&scratch, &coord, |name| {
        scratch.dir(&format!("ckpt-{name}"))
    });

    let done = coord.command(scratch.path(), &["--checkpoint", "--kill"]);
    done.assert_success();
    assert!(
        done.stdout.lines().next().is_some_and(|l| l
            .starts_with("checkpoint of 3 session(s): programs stopped up to ")
            && l.contains(", images durable after ")
            && l.contains("(suspend ")),
        "{}",
        done.describe()
    );
    let restart_line = done
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("restart: "))
        .unwrap_or_else(|| panic!("no restart command printed:\n{}", done.describe()));
    let words: Vec<&str> = restart_line.split_whitespace().collect();
    assert!(
        words.len() == 4 + PROGRAMS.len()
            && words[..4] == ["rewind", "restart", "--coordinator", coord.addr.as_str()],
        "unexpected restart command: {restart_line}"
    );
    let before: Vec<String> = names
        .iter()
        .map(|n| {
            launched
                .remove(n)
                .expect("launched")
                .wait_timeout(KILL_TIMEOUT)
                .stdout
        })
        .collect();

    // The printed command, run from a new directory (its default --ckpt-dir): one terminal (stdout
    // file) for all three.
    let ckpt1 = scratch.dir("ckpt-1");
    let restarted = rewind_background(&words[1..], &ckpt1, Redirect::to(scratch.join("all.after")));
    coord.wait_log(&["joined", "restarted"], names.len());
    let restarted = restarted.wait();
    restarted.assert_success();

    let mut parts = Vec::new();
    for ((name, native), before) in names.iter().zip(natives).zip(&before) {
        let native = native.join().expect("uninterrupted run");
        let expected = String::from_utf8_lossy(&native.stdout).into_owned();
        assert!(
            !before.is_empty() && expected.starts_with(before.as_str()) && expected.len() > before.len(),
            "{name} printed {before:?} before the checkpoint, which does not begin its uninterrupted output \
             (or is all of it):\n{expected}"
        );
        parts.push((*name, expected[before.len()..].to_string()));
    }
    if let Err(e) = check_interleaving(&parts, &restarted.stdout) {
        panic!(
            "the restarted programs' shared output is not their remaining outputs interleaved: {e}\n{}",
            restarted.describe()
        );
    }
}

#[test]
fn a_program_that_forked_is_checkpointed_and_restarted_as_its_whole_tree() {
    let scratch = Scratch::new("coord_tree");
    let mut tree = fixture("tree_pipe");
    tree.arg("44");
    let heap = fixture("loop_heap");
    let tree_native = thread::spawn(|| {
        let mut t = fixture("tree_pipe");
        t.arg("44");
        run_uninterrupted(&t)
    });
    let heap_native = thread::spawn(|| run_uninterrupted(&fixture("loop_heap")));
    let coord = Coord::start(&scratch, "127.0.0.1:0");
    let flags = ["--coordinator", coord.addr.as_str()];
    let mut tree_run = launch_with(
        &flags,
        &tree,
        &scratch.dir("ckpt-tree"),
        Redirect::to(scratch.join("tree.before")),
    );
    let mut heap_run = launch_with(
        &flags,
        &heap,
        &scratch.dir("ckpt-heap"),
        Redirect::to(scratch.join("heap.before")),
    );
    tree_run.wait_for(Wait::LineContaining("parent 10: got"));
    heap_run.wait_for(Wait::Lines(6));
    coord.wait_log(&["joined"], 2);

    let done = coord.command(scratch.path(), &["--checkpoint", "--kill"]);
    done.assert_success();
    // The forked child's image is listed under its session and is part of the restart command.
    let restart_line = done
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("restart: "))
        .unwrap_or_else(|| panic!("no restart command printed:\n{}", done.describe()));
    let words: Vec<&str> = restart_line.split_whitespace().collect();
    assert_eq!(
        words.len(),
        4 + 3,
        "two images of tree_pipe and one of loop_heap: {}",
        done.describe()
    );
    let before_tree = tree_run.wait_timeout(KILL_TIMEOUT).stdout;
    let before_heap = heap_run.wait_timeout(KILL_TIMEOUT).stdout;
    assert_nothing_left(&tree);

    let restarted = rewind_background(
        &words[1..],
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("all.after")),
    );
    coord.wait_log(&["joined", "restarted"], 2);
    let restarted = restarted.wait();
    restarted.assert_success();
    let remainder = |native: thread::JoinHandle<Output>, before: &str, name: &str| {
        let native = native.join().expect("uninterrupted run");
        let expected = String::from_utf8_lossy(&native.stdout).into_owned();
        assert!(
            !before.is_empty() && expected.starts_with(before) && expected.len() > before.len(),
            "{name} printed {before:?} before the checkpoint, which does not begin its \
             uninterrupted output (or is all of it):\n{expected}"
        );
        expected[before.len()..].to_string()
    };
    let parts = [
        (
            "tree_pipe",
            remainder(tree_native, &before_tree, "tree_pipe"),
        ),
        (
            "loop_heap",
            remainder(heap_native, &before_heap, "loop_heap"),
        ),
    ];
    if let Err(e) = check_interleaving(&parts, &restarted.stdout) {
        panic!(
            "the restarted programs' shared output is not their remaining outputs interleaved: {e}\n{}",
            restarted.describe()
        );
    }
    // The child was restored as the parent's own child (one session, one tree).
    assert!(
        restarted.stdout.contains("parent is mine")
            && restarted.stdout.contains("waitpid: my child"),
        "{}",
        restarted.describe()
    );
    assert_nothing_left(&tree);
}

#[test]
fn a_session_failing_mid_checkpoint_is_named_and_nobody_is_killed() {
    let scratch = Scratch::new("coord_fail");
    let names: Vec<_> = PROGRAMS.iter().map(|(n, _)| *n).collect();
    let natives = uninterrupted_runs(&names);
    let coord = Coord::start(&scratch, "127.0.0.1:0");
    let mut launched = launch_all(&scratch, &coord, |name| {
        scratch.dir(&format!("ckpt-{name}"))
    });
    // pipe_threads cannot write its image: its checkpoint directory is gone.
    std::fs::remove_dir_all(scratch.join("ckpt-pipe_threads")).expect("remove the directory");

    let done = coord.command(scratch.path(), &["--checkpoint", "--kill"]);
    assert_fails_clearly(&done, &["pipe_threads"]);
    assert!(
        done.stderr.contains("capture") && done.stderr.contains("resumed (not killed)"),
        "{}",
        done.describe()
    );
    assert!(
        !done.stderr.contains("loop_heap") && !done.stderr.contains("threads_mutex"),
        "only the failed session is named:\n{}",
        done.describe()
    );
    // Every program, the failed one too, was resumed (now, not when its suspension expires) and runs
    // to its end as if nothing happened.
    let status = coord.command_json(scratch.path(), &["--status"]);
    let sessions = status["sessions"].as_array().cloned().unwrap_or_default();
    assert!(
        sessions.len() == 3
            && sessions
                .iter()
                .all(|s| s["ok"] == true && s["suspended"] == false),
        "a session is still suspended: {status:#}"
    );
    for (name, native) in names.iter().zip(natives) {
        let finished = launched.remove(name).expect("launched").wait();
        let native = native.join().expect("uninterrupted run");
        assert_pieces_match(&native, &[&finished.stdout], &finished);
    }
}

#[test]
fn a_killed_session_is_reported_and_the_others_run_on() {
    let scratch = Scratch::new("coord_killed");
    let names = ["loop_heap", "pipe_threads"];
    let natives = uninterrupted_runs(&names);
    let coord = Coord::start(&scratch, "127.0.0.1:0");
    let mut launched = launch_all(&scratch, &coord, |name| {
        scratch.dir(&format!("ckpt-{name}"))
    });
    // threads_mutex's rewind dies (SIGKILL to its process group).
    drop(launched.remove("threads_mutex"));
    coord.wait_log(&["threads_mutex", "lost"], 1);

    let report = coord.command_json(scratch.path(), &["--checkpoint"]);
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(
        report["sessions"].as_array().map(Vec::len),
        Some(2),
        "{report:#}"
    );
    let lost = report["lost"].to_string();
    assert!(
        lost.contains("threads_mutex"),
        "the lost session is not reported: {report:#}"
    );
    for name in names {
        image_of(&report, name);
    }
    for (name, native) in names.iter().zip(natives) {
        let finished = launched.remove(name).expect("launched").wait();
        let native = native.join().expect("uninterrupted run");
        assert_pieces_match(&native, &[&finished.stdout], &finished);
    }
}

/// A local IPv4 address that is not loopback, if this machine has one.
fn non_loopback_address() -> Option<String> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(3)?
                .split('/')
                .next()
                .map(str::to_string)
        })
        .find(|a| !a.starts_with("127."))
}

#[test]
fn peers_from_other_addresses_need_the_token() {
    let Some(ip) = non_loopback_address() else {
        eprintln!("skipped: this machine has no non-loopback IPv4 address (the token rule is also unit-tested)");
        return;
    };
    let scratch = Scratch::new("coord_token");
    // Listening on a non-loopback address and connecting to it, the peer's address is not loopback.
    let coord = Coord::start(&scratch, &format!("{ip}:0"));
    assert!(coord.addr.starts_with(&ip), "{}", coord.addr);
    let no_token = coord.command(scratch.path(), &["--status"]);
    assert_fails_clearly(&no_token, &["token is required"]);
    let wrong = coord.command(
        scratch.path(),
        &["--status", "--token", "0123456789abcdef0123456789abcdef"],
    );
    assert_fails_clearly(&wrong, &["wrong token"]);
    coord.wait_log(&["refused", &ip, "wrong token"], 1);
    coord
        .command(scratch.path(), &["--status", "--token", &coord.token])
        .assert_success();

    // A launch without the token is refused before the program starts.
    let refused = launch_with(
        &["--coordinator", &coord.addr],
        &fixture("loop_heap"),
        &scratch.dir("ckpt-refused"),
        Redirect::to(scratch.join("refused.out")),
    )
    .wait_timeout(KILL_TIMEOUT);
    assert_fails_clearly(&refused, &["token is required"]);
    assert!(
        refused.stdout.is_empty(),
        "the program ran:\n{}",
        refused.describe()
    );

    // With the token in the environment it registers.
    let mut program = fixture("loop_heap");
    program.env("REWIND_TOKEN", &coord.token);
    let mut ok = launch_with(
        &["--coordinator", &coord.addr],
        &program,
        &scratch.dir("ckpt-ok"),
        Redirect::to(scratch.join("ok.out")),
    );
    ok.wait_for(Wait::Lines(2));
    coord.wait_log(&["joined", "loop_heap"], 1);
}

/// A stand-in coordinator: welcomes one session, takes its registration, orders it to suspend with
/// `lease_ms`, reads its answer, then either keeps the connection open and says nothing more, or
/// closes it. Returns the address and a handle giving the session's answer.
fn fake_coordinator(lease_ms: u64, close: bool) -> (String, thread::JoinHandle<Reply>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut w = stream.try_clone().expect("clone");
        let mut r = BufReader::new(stream);
        let mut line = String::new();
        r.read_line(&mut line).expect("hello");
        let welcome = Welcome {
            ok: true,
            id: 1,
            timeout_ms: 1000,
            ..Default::default()
        };
        writeln!(w, "{}", serde_json::to_string(&welcome).unwrap()).expect("welcome");
        line.clear();
        r.read_line(&mut line).expect("registration");
        let order = Order {
            round: 1,
            action: Action::Suspend { lease_ms },
        };
        writeln!(w, "{}", serde_json::to_string(&order).unwrap()).expect("order");
        line.clear();
        r.read_line(&mut line).expect("answer");
        let reply = match serde_json::from_str(line.trim()) {
            Ok(SessionMsg::Reply(reply)) => reply,
            other => panic!("not a reply: {line:?} ({other:?})"),
        };
        if !close {
            // Silent, but there: the session must not wait forever.
            thread::sleep(Duration::from_secs(8));
        }
        reply
    });
    (addr, handle)
}

#[test]
fn a_suspended_program_resumes_when_its_coordinator_goes_quiet_or_away() {
    let scratch = Scratch::new("coord_lease");
    let natives = uninterrupted_runs(&["loop_heap", "loop_heap"]);
    let mut runs = Vec::new();
    for (i, close) in [false, true].into_iter().enumerate() {
        let (addr, fake) = fake_coordinator(800, close);
        let mut running = launch_with(
            &["--coordinator", &addr],
            &fixture("loop_heap"),
            &scratch.dir(&format!("ckpt-{i}")),
            Redirect::to(scratch.join(format!("lease-{i}.out"))),
        );
        running.wait_for(Wait::Lines(1));
        runs.push((running, fake, close));
    }
    for ((running, fake, close), native) in runs.into_iter().zip(natives) {
        let reply = fake.join().expect("fake coordinator");
        assert!(
            reply.ok && reply.round == 1,
            "the suspend failed: {reply:?}"
        );
        let finished = running.wait();
        let native = native.join().expect("uninterrupted run");
        assert_pieces_match(&native, &[&finished.stdout], &finished);
        let why = if close {
            "lost the coordinator"
        } else {
            "said nothing for too long"
        };
        assert!(
            finished.stderr.contains(why),
            "no warning {why:?}:\n{}",
            finished.describe()
        );
    }
}

#[test]
fn bad_coordinator_input_fails_clearly() {
    let scratch = Scratch::new("coord_bad_input");
    let dir = scratch.dir("ckpt");
    // Nothing listens on port 1; the program must not start.
    for (addr, words) in [
        ("127.0.0.1:1", &["cannot reach", "refused"][..]),
        ("nonsense", &["expected HOST:PORT"][..]),
        ("localhost:99999", &["expected HOST:PORT"][..]),
        ("no-such-host.invalid:7779", &["cannot resolve"][..]),
    ] {
        let done = launch_with(
            &["--coordinator", addr],
            &fixture("loop_heap"),
            &dir,
            Redirect::to(scratch.join("launch.out")),
        )
        .wait_timeout(KILL_TIMEOUT);
        assert_fails_clearly(&done, words);
        assert!(
            done.stdout.is_empty(),
            "the program ran:\n{}",
            done.describe()
        );
        let done = rewind_in(&dir, ["command", "--coordinator", addr, "--status"]);
        assert_fails_clearly(&done, words);
        let done = rewind_in(&dir, ["restart", "--coordinator", addr, "a.rwd", "b.rwd"]);
        assert_fails_clearly(&done, &["no such image"]);
    }
    let done = rewind_in(&dir, ["coordinator", "--listen", "nonsense"]);
    assert_fails_clearly(&done, &["expected HOST:PORT"]);
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let done = rewind_in(
        &dir,
        ["coordinator", "--listen", &format!("127.0.0.1:{port}")],
    );
    assert_fails_clearly(&done, &["cannot listen"]);
    // Without a coordinator, several images are one process tree (process_tree.rs).
    let done = rewind_in(&dir, ["restart", "x.rwd", "y.rwd"]);
    assert_fails_clearly(&done, &["no such image"]);

    let coord = Coord::start(&scratch, "127.0.0.1:0");
    let done = coord.command(&dir, &["--checkpoint"]);
    assert_fails_clearly(&done, &["no session is registered"]);
    // Usage errors exit 2.
    let done = coord.command(&dir, &["--quit"]);
    assert_eq!(done.status.code(), Some(2), "{}", done.describe());
    let done = rewind_in(&dir, ["command", "--status", "--token", "t"]);
    assert_eq!(done.status.code(), Some(2), "{}", done.describe());
    let done = rewind_in(
        &dir,
        ["command", "--coordinator", &coord.addr, "--ping", "0"],
    );
    assert_eq!(done.status.code(), Some(2), "{}", done.describe());
}
