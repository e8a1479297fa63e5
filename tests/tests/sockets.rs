//! Connections between the processes of one program across checkpoint and restart (issue 7, part
//! 2): TCP connections (IPv4, IPv6, loopback or not) and unix connections (stream, seqpacket,
//! datagram; over a path, an abstract name or a socket pair) whose two ends are held by different
//! processes of the program's tree, with data in flight both ways.
//!
//! Oracles: what the program prints before the checkpoint followed by what the restarted copy
//! prints is what an uninterrupted run prints (every message arrives once, in order; the
//! fixtures check payload sums, acknowledgments and that the names `getsockname`/`getpeername`
//! report never change), a program checkpointed without being killed runs to the same end, and
//! the images hold the connections with data in flight (decoded from them), so a test cannot pass
//! with a checkpoint that caught nothing. No process may be left behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

use nix::sched::{unshare, CloneFlags};
use rewind_ckpt::image::format::{FdKind, SocketState};
use rewind_ckpt::image::ImageReader;
use rewind_tests::*;

/// The TCP token ring: a parent and three members over TCP at `addr`.
fn ring(addr: &str, rounds: u32) -> Command {
    let mut cmd = fixture("tcp_ring");
    cmd.args([addr, &rounds.to_string()]);
    cmd
}

/// The unix client/server: `kind` (stream, seqpacket, dgram) over `name` (a path, @abstract,
/// pair) for `n` requests.
fn chat(kind: &str, name: &str, n: u32) -> Command {
    let mut cmd = fixture("unix_chat");
    cmd.args([kind, name, &n.to_string()]);
    cmd
}

/// The server and client of `chat(kind, name, 70)`: their uninterrupted run (the client's
/// output), then both launched as programs of the coordinator at `coordinator`, in `dir`, the
/// client's output to `client_out`. Returns (uninterrupted client, server, client).
fn coordinated_chat_pair(
    scratch: &Scratch,
    kind: &str,
    name: &str,
    coordinator: &str,
    dir: &Path,
    client_out: &str,
) -> (std::process::Output, Running, Running) {
    let role = |r: &str| {
        let mut cmd = chat(kind, name, 70);
        cmd.arg(r);
        cmd
    };
    let uninterrupted = thread::scope(|s| {
        let server = role("server");
        let srv = s.spawn(move || run_uninterrupted(&server));
        let client = run_uninterrupted(&role("client"));
        let server = srv.join().expect("the server");
        assert!(server.status.success(), "{server:?}");
        client
    });
    let flags = ["--coordinator", coordinator];
    let server = launch_with(
        &flags,
        &role("server"),
        dir,
        Redirect::to(scratch.join("server.out")),
    );
    let client = launch_with(
        &flags,
        &role("client"),
        dir,
        Redirect::to(scratch.join(client_out)),
    );
    (uninterrupted, server, client)
}

/// What the images of a checkpoint hold in their sockets (each socket counted once).
#[derive(Debug, Default)]
struct InFlight {
    tcp_ends: usize,
    tcp_bytes: usize,
    unix_sockets: usize,
    unix_messages: usize,
    udp_sockets: usize,
    udp_datagrams: usize,
}

fn in_flight(images: &[PathBuf]) -> InFlight {
    let mut seen = std::collections::HashSet::new();
    let mut f = InFlight::default();
    for image in images {
        let reader = ImageReader::open(image)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", image.display()));
        for fd in &reader.state.fds {
            let FdKind::Socket { id, socket } = &fd.kind else {
                continue;
            };
            if !seen.insert(*id) {
                continue;
            }
            match socket {
                SocketState::Tcp(c) => {
                    f.tcp_ends += 1;
                    f.tcp_bytes += c.sent.len() + c.unsent.len() + c.received.len();
                }
                SocketState::Udp(u) => {
                    f.udp_sockets += 1;
                    f.udp_datagrams += u.queued.len();
                }
                SocketState::Unix(_) | SocketState::UnixLinked { .. } => {
                    if let Some(u) = socket.unix() {
                        f.unix_sockets += 1;
                        f.unix_messages += u.queued.len();
                    }
                }
                _ => {}
            }
        }
    }
    f
}

/// Every process whose command line is exactly the program's (none may be left after a test).
fn processes_running(program: &Command) -> Vec<String> {
    let argv: Vec<String> = std::iter::once(program.get_program())
        .chain(program.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
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
        thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!(
        "processes left behind: {:?} running {:?}",
        processes_running(program),
        program
    );
}

/// Launch, wait for `line`, checkpoint the whole tree and kill it, restart every image; the
/// output around the checkpoint must be the uninterrupted one. Returns what the images held.
#[track_caller]
fn checkpoint_kill_restart_tree(
    scratch: &Scratch,
    program: &Command,
    line: &'static str,
) -> InFlight {
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
    let held = in_flight(&images);
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

/// Launch, checkpoint twice without killing (waiting for `lines`), and let it finish: the output
/// is the uninterrupted one. Returns what the last images held.
#[track_caller]
fn checkpoints_leave_it_running(
    scratch: &Scratch,
    program: &Command,
    lines: &[&'static str],
) -> InFlight {
    let uninterrupted = run_uninterrupted(program);
    let mut running = launch(
        program,
        &scratch.dir("ckpt"),
        Redirect::to(scratch.join("live.out")),
    );
    let mut held = InFlight::default();
    for line in lines {
        running.wait_for(Wait::LineContaining(line));
        held = in_flight(&running.checkpoint_tree_with(&["--checkpoint"]));
    }
    let done = running.wait();
    done.assert_success();
    assert_eq!(
        done.stdout,
        String::from_utf8_lossy(&uninterrupted.stdout),
        "{}",
        done.describe()
    );
    assert_nothing_left(program);
    held
}

#[track_caller]
fn assert_tcp_in_flight(held: &InFlight, connections: usize) {
    assert_eq!(
        held.tcp_ends,
        2 * connections,
        "the images should hold both ends of {connections} TCP connections: {held:?}"
    );
    assert!(
        held.tcp_bytes > 0,
        "the checkpoint caught no byte in flight in the ring: {held:?}"
    );
}

#[track_caller]
fn assert_unix_in_flight(held: &InFlight) {
    assert!(
        held.unix_sockets >= 2 && held.unix_messages > 0,
        "the images should hold both ends of the connection and messages in flight: {held:?}"
    );
}

#[test]
fn tcp_ring_restarts_with_tokens_in_flight() {
    let scratch = Scratch::new("tcp_ring_restarts_with_tokens_in_flight");
    let program = ring("127.0.0.1", 45);
    let held = checkpoint_kill_restart_tree(&scratch, &program, "member 0 got token 8:");
    assert_tcp_in_flight(&held, 3);
}

#[test]
fn tcp_ring_over_ipv6_runs_on_after_checkpoints() {
    let scratch = Scratch::new("tcp_ring_over_ipv6_runs_on_after_checkpoints");
    let program = ring("::1", 40);
    let held = checkpoints_leave_it_running(
        &scratch,
        &program,
        &["member 0 got token 5:", "member 2 got token 15:"],
    );
    assert_tcp_in_flight(&held, 3);
}

#[test]
fn tcp_ring_over_ipv6_restarts_twice_in_a_chain() {
    let scratch = Scratch::new("tcp_ring_over_ipv6_restarts_twice_in_a_chain");
    let program = ring("::1", 42);
    let uninterrupted = run_uninterrupted(&program);
    let chain = checkpoint_chain(
        &scratch,
        &program,
        &[
            Wait::LineContaining("member 1 got token 6:"),
            Wait::LineContaining("member 2 got token 20:"),
        ],
    );
    chain.assert_matches(&uninterrupted);
    assert_tcp_in_flight(&in_flight(&chain.images[chain.images.len() - 4..]), 3);
    assert_nothing_left(&program);
}

/// The ring over the address of a veth interface in a network namespace of the test's own: not
/// loopback, as between hosts (the kernel still delivers it locally).
#[test]
fn tcp_ring_over_a_non_loopback_address() {
    thread::scope(|s| {
        s.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("unshare(CLONE_NEWNET): {e} (this test needs root)"));
            for args in [
                &["link", "set", "lo", "up"][..],
                &[
                    "link", "add", "rwveth0", "type", "veth", "peer", "name", "rwveth1",
                ],
                &["addr", "add", "10.77.3.1/24", "dev", "rwveth0"],
                &["link", "set", "rwveth0", "up"],
                &["link", "set", "rwveth1", "up"],
            ] {
                let done = run_command({
                    let mut c = Command::new("ip");
                    c.args(args);
                    c
                });
                assert!(done.status.success(), "ip {args:?}: {}", done.describe());
            }
            let scratch = Scratch::new("tcp_ring_over_a_non_loopback_address");
            let program = ring("10.77.3.1", 40);
            let held = checkpoint_kill_restart_tree(&scratch, &program, "member 2 got token 7:");
            assert_tcp_in_flight(&held, 3);
        })
        .join()
        .map_err(std::panic::resume_unwind)
        .ok();
    });
}

/// A unix socket name in the scratch directory (short enough for sun_path).
fn socket_path(scratch: &Scratch) -> String {
    let p = scratch.join("c.sock");
    assert!(p.as_os_str().len() < 100, "{} is too long", p.display());
    p.display().to_string()
}

#[test]
fn unix_stream_over_a_path_restarts_with_messages_in_flight() {
    let scratch = Scratch::new("unix_stream_path");
    let program = chat("stream", &socket_path(&scratch), 80);
    let held = checkpoint_kill_restart_tree(&scratch, &program, "reply 21 ");
    assert_unix_in_flight(&held);
    assert!(!Path::new(&socket_path(&scratch)).exists());
}

#[test]
fn unix_seqpacket_over_an_abstract_name_restarts_with_messages_in_flight() {
    let scratch = Scratch::new("unix_seqpacket_abstract");
    let name = format!("@rewind-test-seqpacket-{}", std::process::id());
    let program = chat("seqpacket", &name, 80);
    let held = checkpoint_kill_restart_tree(&scratch, &program, "reply 25 ");
    assert_unix_in_flight(&held);
}

#[test]
fn unix_datagrams_over_paths_restart_with_messages_in_flight() {
    let scratch = Scratch::new("unix_dgram_path");
    let program = chat("dgram", &socket_path(&scratch), 80);
    let held = checkpoint_kill_restart_tree(&scratch, &program, "reply 17 ");
    assert_unix_in_flight(&held);
}

#[test]
fn unix_socket_pairs_across_processes_restart_with_messages_in_flight() {
    for kind in ["stream", "dgram"] {
        let scratch = Scratch::new(&format!("unix_pair_{kind}"));
        let program = chat(kind, "pair", 60);
        let held = checkpoint_kill_restart_tree(&scratch, &program, "reply 13 ");
        assert_unix_in_flight(&held);
    }
}

#[test]
fn unix_chat_runs_on_after_checkpoints() {
    let scratch = Scratch::new("unix_chat_runs_on");
    let program = chat("stream", &socket_path(&scratch), 70);
    let held = checkpoints_leave_it_running(&scratch, &program, &["reply 9 ", "reply 30 "]);
    assert_unix_in_flight(&held);
}

/// The UDP client and server: over `addr` (127.0.0.1, ::1), `n` requests, with `extra`
/// arguments (`connected`).
fn pingpong(addr: &str, n: u32, extra: &[&str]) -> Command {
    let mut cmd = fixture("udp_pingpong");
    cmd.args([addr, &n.to_string()]);
    cmd.args(extra);
    cmd
}

#[track_caller]
fn assert_udp_in_flight(held: &InFlight, sockets: usize) {
    assert!(
        held.udp_sockets >= sockets && held.udp_datagrams > 0,
        "the images should hold {sockets} UDP sockets and datagrams waiting at them: {held:?}"
    );
}

#[test]
fn udp_datagrams_restart_with_datagrams_in_flight() {
    let scratch = Scratch::new("udp_pingpong_restart");
    let program = pingpong("127.0.0.1", 60, &[]);
    let held = checkpoint_kill_restart_tree(&scratch, &program, "reply 17:");
    assert_udp_in_flight(&held, 2);
}

#[test]
fn udp_connected_over_ipv6_restarts_with_datagrams_in_flight() {
    let scratch = Scratch::new("udp_pingpong_ipv6_connected");
    let program = pingpong("::1", 60, &["connected"]);
    let held = checkpoint_kill_restart_tree(&scratch, &program, "reply 23:");
    assert_udp_in_flight(&held, 2);
}

#[test]
fn udp_pingpong_runs_on_after_checkpoints() {
    let scratch = Scratch::new("udp_pingpong_runs_on");
    let program = pingpong("127.0.0.1", 60, &[]);
    let held = checkpoints_leave_it_running(&scratch, &program, &["reply 9:", "reply 31:"]);
    assert_udp_in_flight(&held, 2);
}

/// Restarts every image (`rewind restart FLAGS`, output in `after-<i>.out`) and waits for each:
/// none warns; the client (its image's command line says so) goes on as the uninterrupted run did
/// after `before`, the others end well.
#[track_caller]
fn restart_each(
    scratch: &Scratch,
    images: &[PathBuf],
    restart_dir: &Path,
    flags: &[&str],
    uninterrupted: &std::process::Output,
    before: &Finished,
    is_client: impl Fn(&[String]) -> bool,
) {
    let restarted: Vec<(bool, Running)> = images
        .iter()
        .enumerate()
        .map(|(i, image)| {
            let state = ImageReader::open(image)
                .unwrap_or_else(|e| panic!("{}: {e}", image.display()))
                .state;
            let out = scratch.join(format!("after-{i}.out"));
            (
                is_client(&state.cmdline),
                restart_with(image, restart_dir, flags, Redirect::to(out)),
            )
        })
        .collect();
    for (client, running) in restarted {
        let after = running.wait();
        assert!(!after.stderr.contains("warning"), "{}", after.describe());
        if client {
            assert_pieces_match(uninterrupted, &[&before.stdout, &after.stdout], &after);
        } else {
            after.assert_success();
        }
    }
}

/// A `rewind coordinator` on a free loopback port, killed when dropped.
struct Coordinator {
    running: Running,
    addr: String,
}

impl Coordinator {
    fn start(scratch: &Scratch) -> Coordinator {
        let mut running = rewind_background(
            ["coordinator", "--listen", "127.0.0.1:0", "--timeout", "30"],
            scratch.path(),
            Redirect::to(scratch.join("coordinator.out")),
        );
        running.wait_for(Wait::LineContaining("token: "));
        let addr = running
            .output()
            .lines()
            .find_map(|l| l.strip_prefix("rewind coordinator listening on "))
            .map(|a| a.trim().to_string())
            .unwrap_or_else(|| panic!("no address in {}", running.output()));
        Coordinator { running, addr }
    }

    /// `rewind command --coordinator ... --checkpoint` (then `extra`, e.g. `--kill`) run in
    /// `dir`: it must succeed with `n` images, which are returned.
    #[track_caller]
    fn checkpoint(&self, dir: &Path, extra: &[&str], n: usize) -> Vec<PathBuf> {
        let mut args = vec!["command", "--coordinator", &self.addr, "--checkpoint"];
        args.extend_from_slice(extra);
        let done = rewind_in(dir, args);
        done.assert_success();
        let images: Vec<PathBuf> = done
            .stdout
            .lines()
            .filter(|l| l.starts_with('['))
            .filter_map(|l| l.split(": ").nth(1)?.split(" (").next().map(PathBuf::from))
            .collect();
        assert_eq!(images.len(), n, "{}", done.describe());
        images
    }
}

/// Ports nobody listens on now.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("its address").port())
        .collect()
}

/// The ring as three programs of their own, each under its own `rewind launch --coordinator`:
/// checkpointed and killed together, each image restarted by its own `rewind restart
/// --coordinator`, which holds its program until the three are back and their connections made.
#[test]
fn coordinated_tcp_ring_of_three_programs_restarts_together() {
    let scratch = Scratch::new("coordinated_tcp_ring");
    let coordinator = Coordinator::start(&scratch);
    let ports = free_ports(3);
    let member = |i: usize| {
        let mut cmd = fixture("tcp_ring");
        cmd.args([
            "member".to_string(),
            i.to_string(),
            "127.0.0.1".into(),
            ports[i].to_string(),
            "127.0.0.1".into(),
            ports[(i + 1) % 3].to_string(),
            "40".into(),
        ]);
        cmd
    };
    let uninterrupted: Vec<_> = thread::scope(|s| {
        let runs: Vec<_> = (0..3)
            .map(|i| {
                let cmd = member(i);
                s.spawn(move || run_uninterrupted(&cmd))
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("an uninterrupted member"))
            .collect()
    });
    let flags = ["--coordinator", coordinator.addr.as_str()];
    let dir = scratch.dir("ckpt-0");
    let mut launched: Vec<Running> = (0..3)
        .map(|i| {
            launch_with(
                &flags,
                &member(i),
                &dir,
                Redirect::to(scratch.join(format!("before-{i}.out"))),
            )
        })
        .collect();
    launched[0].wait_for(Wait::LineContaining("member 0 got token 8:"));
    let done = rewind_in(
        &dir,
        [
            "command",
            "--coordinator",
            &coordinator.addr,
            "--checkpoint",
            "--kill",
        ],
    );
    done.assert_success();
    assert!(done.stdout.contains("drain"), "{}", done.describe());
    // Each image, by the member its program is.
    let mut images: Vec<Option<PathBuf>> = vec![None; 3];
    for line in done.stdout.lines().filter(|l| l.starts_with('[')) {
        let path = line
            .split(": ")
            .nth(1)
            .and_then(|rest| rest.split(" (").next())
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("no image in {line:?}"));
        let state = ImageReader::open(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .state;
        let i: usize = state.cmdline[2].parse().expect("the member's number");
        let held = in_flight(std::slice::from_ref(&path));
        assert_eq!(
            held.tcp_ends, 2,
            "member {i}'s image should hold both its connections: {held:?}"
        );
        images[i] = Some(path);
    }
    let images: Vec<PathBuf> = images
        .into_iter()
        .map(|i| i.expect("an image per member"))
        .collect();
    assert!(
        in_flight(&images).tcp_bytes > 0,
        "nothing was in flight between the programs"
    );
    let before: Vec<Finished> = launched
        .drain(..)
        .map(|r| r.wait_timeout(KILL_TIMEOUT))
        .collect();
    let restart_dir = scratch.dir("ckpt-1");
    let restarted: Vec<Running> = images
        .iter()
        .enumerate()
        .map(|(i, image)| {
            restart_with(
                image,
                &restart_dir,
                &flags,
                Redirect::to(scratch.join(format!("after-{i}.out"))),
            )
        })
        .collect();
    for (i, running) in restarted.into_iter().enumerate() {
        let after = running.wait();
        assert_pieces_match(
            &uninterrupted[i],
            &[&before[i].stdout, &after.stdout],
            &after,
        );
        assert!(!after.stderr.contains("warning"), "{}", after.describe());
    }
    assert!(
        coordinator.running.output().contains("made again"),
        "the coordinator did not reconnect the programs:\n{}",
        coordinator.running.output()
    );
    for i in 0..3 {
        assert_nothing_left(&member(i));
    }
}

/// A network namespace of the test's own: a thread that unshared one and runs, inside it, the
/// jobs it is given (processes it starts live in the namespace). It goes away with the thread.
struct Netns {
    jobs: Option<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
    thread: Option<thread::JoinHandle<()>>,
    /// The thread's id (`ip ... netns TID` names its namespace).
    tid: i32,
}

impl Netns {
    fn new() -> Netns {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let thread = thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("unshare(CLONE_NEWNET): {e} (this test needs root)"));
            let _ = tid_tx.send(nix::unistd::gettid().as_raw());
            for job in queue {
                job();
            }
        });
        let tid = tid_rx.recv().expect("the namespace's thread started");
        Netns {
            jobs: Some(jobs),
            thread: Some(thread),
            tid,
        }
    }

    /// Runs `f` in the namespace and returns what it returns.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        self.jobs
            .as_ref()
            .expect("the namespace's thread")
            .send(Box::new(move || {
                let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
            }))
            .expect("the namespace's thread is alive");
        match rx.recv().expect("an answer from the namespace's thread") {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// `ip ARGS...` in the namespace; it must succeed.
    fn ip(&self, args: &[&str]) {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.run(move || {
            let mut cmd = Command::new("ip");
            cmd.args(&args);
            let done = run_command(cmd);
            assert!(done.status.success(), "ip {args:?}: {}", done.describe());
        });
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Two hosts (network namespaces joined by veth, 10.77.5.1 and 10.77.5.2) each run one member of
/// a two-member ring, connected to each other over TCP, under one coordinator. Checkpointed and
/// killed, each image is restarted on the *other* host: the connections are made again between
/// the new addresses, and the programs, which check getsockname/getpeername every 8 tokens, still
/// see their old ones. Checkpointed and killed again there, each goes back to its own host.
#[test]
fn two_hosts_swapped_keep_their_connection_and_addresses() {
    let a = Netns::new();
    let b = Netns::new();
    a.ip(&[
        "link",
        "add",
        "rwhosta",
        "type",
        "veth",
        "peer",
        "name",
        "rwhostb",
        "netns",
        &b.tid.to_string(),
    ]);
    for (ns, dev, addr) in [
        (&a, "rwhosta", "10.77.5.1/24"),
        (&b, "rwhostb", "10.77.5.2/24"),
    ] {
        ns.ip(&["addr", "add", addr, "dev", dev]);
        ns.ip(&["link", "set", dev, "up"]);
        ns.ip(&["link", "set", "lo", "up"]);
    }
    let scratch = Scratch::new("two_hosts_swapped");
    let root = scratch.path().to_path_buf();
    let coordinator = a.run(move || {
        let mut running = rewind_background(
            ["coordinator", "--listen", "10.77.5.1:0", "--timeout", "30"],
            &root,
            Redirect::to(root.join("coordinator.out")),
        );
        running.wait_for(Wait::LineContaining("token: "));
        running
    });
    let log = coordinator.output();
    let field = |prefix: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {prefix:?} in {log}"))
    };
    let (addr, token) = (field("rewind coordinator listening on "), field("token: "));
    let member = |i: usize| {
        let (me, next) = if i == 0 {
            ("10.77.5.1", "10.77.5.2")
        } else {
            ("10.77.5.2", "10.77.5.1")
        };
        let mut cmd = fixture("tcp_ring");
        cmd.args(["member", &i.to_string(), me, "7501", next, "7501", "40"]);
        cmd
    };
    let hosts = [&a, &b];
    // Uninterrupted, each on its own host.
    let natives: Vec<thread::JoinHandle<std::process::Output>> = (0..2)
        .map(|i| {
            let cmd = member(i);
            let tid = hosts[i].tid;
            thread::spawn(move || {
                // Join host i's namespace for this run.
                let ns = std::fs::File::open(format!("/proc/{tid}/ns/net")).expect("its netns");
                nix::sched::setns(ns, CloneFlags::CLONE_NEWNET).expect("setns");
                run_uninterrupted(&cmd)
            })
        })
        .collect();
    let uninterrupted: Vec<std::process::Output> = natives
        .into_iter()
        .map(|t| t.join().expect("an uninterrupted member"))
        .collect();
    let flags = vec![
        "--coordinator".to_string(),
        addr.clone(),
        "--token".to_string(),
        token.clone(),
    ];
    let dir = scratch.dir("ckpt-0");
    let mut launched: Vec<Running> = (0..2)
        .map(|i| {
            let (cmd, flags, dir) = (member(i), flags.clone(), dir.clone());
            let out = scratch.join(format!("before-{i}.out"));
            hosts[i].run(move || {
                let f: Vec<&str> = flags.iter().map(String::as_str).collect();
                launch_with(&f, &cmd, &dir, Redirect::to(out))
            })
        })
        .collect();
    // Twice: each image restarts on the other host, then back on its own.
    let mut pieces: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
    let mut last: Vec<Option<Finished>> = vec![None, None];
    for (stage, line) in [
        (0usize, "member 0 got token 9:"),
        (1, "member 0 got token 22:"),
    ] {
        launched[0].wait_for(Wait::LineContaining(line));
        let (d, f) = (scratch.dir(&format!("ckpt-{stage}")), flags.clone());
        let done = a.run(move || {
            let mut args = vec!["command".to_string()];
            args.extend(f);
            args.extend(["--checkpoint".to_string(), "--kill".to_string()]);
            rewind_in(&d, args)
        });
        done.assert_success();
        let mut images: Vec<Option<PathBuf>> = vec![None; 2];
        for line in done.stdout.lines().filter(|l| l.starts_with('[')) {
            let path = line
                .split(": ")
                .nth(1)
                .and_then(|rest| rest.split(" (").next())
                .map(PathBuf::from)
                .unwrap_or_else(|| panic!("no image in {line:?}"));
            let state = ImageReader::open(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .state;
            let i: usize = state.cmdline[2].parse().expect("the member's number");
            images[i] = Some(path);
        }
        let images: Vec<PathBuf> = images
            .into_iter()
            .map(|i| i.expect("an image per member"))
            .collect();
        assert_eq!(
            in_flight(&images).tcp_ends,
            4,
            "both ends of both connections"
        );
        for (i, r) in launched.drain(..).enumerate() {
            pieces[i].push(r.wait_timeout(KILL_TIMEOUT).stdout);
        }
        let restart_dir = scratch.dir(&format!("ckpt-{}", stage + 1));
        // First member i restarts on the other host, then back on its own.
        launched = (0..2)
            .map(|i| {
                let (image, flags, dir) = (images[i].clone(), flags.clone(), restart_dir.clone());
                let out = scratch.join(format!("after-{stage}-{i}.out"));
                let host = if stage == 0 { 1 - i } else { i };
                hosts[host].run(move || {
                    let f: Vec<&str> = flags.iter().map(String::as_str).collect();
                    restart_with(&image, &dir, &f, Redirect::to(out))
                })
            })
            .collect();
    }
    for (i, running) in launched.drain(..).enumerate() {
        let after = running.wait();
        pieces[i].push(after.stdout.clone());
        last[i] = Some(after);
    }
    for i in 0..2 {
        let after = last[i].as_ref().expect("the last stage");
        let p: Vec<&str> = pieces[i].iter().map(String::as_str).collect();
        assert_pieces_match(&uninterrupted[i], &p, after);
        assert!(!after.stderr.contains("warning"), "{}", after.describe());
    }
    let log = coordinator.output();
    assert!(
        log.contains("made again") && log.contains("restarted from 10.77.5.2"),
        "{log}"
    );
    drop(coordinator);
    for i in 0..2 {
        assert_nothing_left(&member(i));
    }
}

/// A unix client and server as two programs of one coordinator (stream over a path, seqpacket
/// over an abstract name), requests and replies in flight: checkpointed and killed together,
/// each restarted by its own `rewind restart --coordinator`; the connection is made again by the
/// server's restart (through its listener, so names stay) and handed to the client's, and the
/// client's output is the uninterrupted one.
#[test]
fn unix_connection_between_two_coordinated_programs_restarts() {
    for (kind, name) in [
        ("stream", None),
        ("seqpacket", Some("@rewind-test-coord-chat")),
    ] {
        coordinated_chat_restarts(kind, name);
    }
}

/// Datagrams between two programs of one coordinator (issue 7): the unix client and server over
/// datagram sockets (over a path, then an abstract name), the server bound to the name and
/// answering each request with `sendto` to the client's name (`NAME.c`, the client connected to
/// the server's), requests queued at the server and replies queued at the client when the
/// checkpoint is taken. Checkpointed and killed together, each restarted by its own `rewind
/// restart --coordinator`: every datagram arrives once, in order, from the same sender name (the
/// server prints the name each request came from, the client its socket's names), so the
/// client's output is the uninterrupted one; the images hold the datagrams that were queued.
#[test]
fn unix_datagrams_between_two_coordinated_programs_restart() {
    for name in [None, Some("@rewind-test-coord-dgram")] {
        coordinated_chat_restarts("dgram", name);
    }
}

/// The same two programs over datagrams checkpointed twice, left running: nothing is lost or
/// received twice (the client's output is the uninterrupted one) and the images of both
/// checkpoints hold datagrams in flight.
#[test]
fn unix_datagrams_between_two_coordinated_programs_run_on_after_checkpoints() {
    let scratch = Scratch::new("unix_coordinated_dgram_run_on");
    let name = socket_path(&scratch);
    let coordinator = Coordinator::start(&scratch);
    let role = |r: &str| {
        let mut cmd = chat("dgram", &name, 70);
        cmd.arg(r);
        cmd
    };
    let dir = scratch.dir("ckpt");
    let (uninterrupted, server, mut client) = coordinated_chat_pair(
        &scratch,
        "dgram",
        &name,
        &coordinator.addr,
        &dir,
        "client.out",
    );
    for line in ["reply 13 ", "reply 37 "] {
        client.wait_for(Wait::LineContaining(line));
        let images = coordinator.checkpoint(&dir, &[], 2);
        let held = in_flight(&images);
        assert!(
            held.unix_messages > 0,
            "no datagram in flight between the programs: {held:?}"
        );
    }
    let done = client.wait();
    done.assert_success();
    assert_eq!(
        done.stdout,
        String::from_utf8_lossy(&uninterrupted.stdout),
        "{}",
        done.describe()
    );
    assert!(!done.stderr.contains("warning"), "{}", done.describe());
    let served = server.wait();
    served.assert_success();
    assert!(!served.stderr.contains("warning"), "{}", served.describe());
    assert_nothing_left(&role("client"));
    assert_nothing_left(&role("server"));
}

/// A unix client and server of `kind` over `name` (a path in the scratch directory when None)
/// as two programs of one coordinator, requests and replies in flight: checkpointed and killed
/// together, each restarted by its own `rewind restart --coordinator`; the client's output is
/// the uninterrupted one.
fn coordinated_chat_restarts(kind: &str, name: Option<&str>) {
    {
        let scratch = Scratch::new(&format!(
            "unix_coordinated_{kind}_{}",
            if name.is_some() { "abstract" } else { "path" }
        ));
        let name = name
            .map(|n| format!("{n}-{}", std::process::id()))
            .unwrap_or_else(|| socket_path(&scratch));
        let coordinator = Coordinator::start(&scratch);
        let role = |r: &str| {
            let mut cmd = chat(kind, &name, 70);
            cmd.arg(r);
            cmd
        };
        let dir = scratch.dir("ckpt-0");
        let (uninterrupted, server, mut client) =
            coordinated_chat_pair(&scratch, kind, &name, &coordinator.addr, &dir, "before.out");
        let flags = ["--coordinator", coordinator.addr.as_str()];
        client.wait_for(Wait::LineContaining("reply 23 "));
        let images = coordinator.checkpoint(&dir, &["--kill"], 2);
        let held = in_flight(&images);
        assert!(
            held.unix_messages > 0,
            "no message in flight between the programs: {held:?}"
        );
        if kind == "dgram" {
            // Each program's socket is linked to the other's: the client, connected to the
            // server's socket, takes it at restart; the server gives it (and takes the client's
            // when requests wait at the server).
            for image in &images {
                let state = ImageReader::open(image)
                    .unwrap_or_else(|e| panic!("{}: {e}", image.display()))
                    .state;
                let links: Vec<_> = state
                    .fds
                    .iter()
                    .filter_map(|f| match &f.kind {
                        FdKind::Socket { socket, .. } => Some(socket.dgram_links()),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                let is_client = state.cmdline.last().map(String::as_str) == Some("client");
                assert!(
                    links.len() == 1
                        && (if is_client {
                            links[0].takes
                        } else {
                            links[0].gives
                        }),
                    "{}: {links:?}",
                    image.display()
                );
            }
        }
        let before = client.wait_timeout(KILL_TIMEOUT);
        drop(server.wait_timeout(KILL_TIMEOUT));
        let restart_dir = scratch.dir("ckpt-1");
        restart_each(
            &scratch,
            &images,
            &restart_dir,
            &flags,
            &uninterrupted,
            &before,
            |cmdline| cmdline.last().map(String::as_str) == Some("client"),
        );
        assert!(
            coordinator.running.output().contains("made again"),
            "{}",
            coordinator.running.output()
        );
        assert_nothing_left(&role("client"));
        assert_nothing_left(&role("server"));
    }
}

/// Three programs of one coordinator over unix datagram sockets (issue 7): two senders, each bound
/// to a name of its own, send windows of datagrams to a hub (`sendto`, not connected) that reads
/// slowly and acknowledges each to its sender's name, so datagrams from both senders wait,
/// interleaved, at the hub, and acknowledgments at the senders. Checkpointed and killed together,
/// each restarted by its own `rewind restart --coordinator`: each sender's output is the
/// uninterrupted one (every acknowledgment once, in order, from the hub's name), and the hub
/// prints, for each sender, the same datagrams in the same order from the same sender name as
/// in the uninterrupted run (the order between the two senders depends on scheduling). The
/// images link the hub's socket to both senders'.
#[test]
fn datagrams_from_two_coordinated_programs_to_a_hub_restart() {
    let scratch = Scratch::new("dgram_fanin_coordinated");
    let name = socket_path(&scratch);
    let coordinator = Coordinator::start(&scratch);
    let hub = || {
        let mut cmd = fixture("dgram_fanin");
        cmd.args(["hub", &name, "2"]);
        cmd
    };
    let sender = |i: usize| {
        let mut cmd = fixture("dgram_fanin");
        cmd.args(["sender", &name, &i.to_string(), "60"]);
        cmd
    };
    let (hub_alone, senders_alone) = thread::scope(|s| {
        let h = hub();
        let h = s.spawn(move || run_uninterrupted(&h));
        let runs: Vec<_> = (1..=2)
            .map(|i| {
                let cmd = sender(i);
                s.spawn(move || run_uninterrupted(&cmd))
            })
            .collect();
        let senders: Vec<_> = runs
            .into_iter()
            .map(|r| r.join().expect("an uninterrupted sender"))
            .collect();
        (h.join().expect("the uninterrupted hub"), senders)
    });
    let flags = ["--coordinator", coordinator.addr.as_str()];
    let dir = scratch.dir("ckpt-0");
    let hub_run = launch_with(
        &flags,
        &hub(),
        &dir,
        Redirect::to(scratch.join("hub-before.out")),
    );
    let mut launched: Vec<Running> = (1..=2)
        .map(|i| {
            launch_with(
                &flags,
                &sender(i),
                &dir,
                Redirect::to(scratch.join(format!("sender-{i}-before.out"))),
            )
        })
        .collect();
    launched[0].wait_for(Wait::LineContaining("sender 1: ack 22 "));
    let images = coordinator.checkpoint(&dir, &["--kill"], 3);
    let held = in_flight(&images);
    assert!(
        held.unix_messages > 0,
        "no datagram in flight between the programs: {held:?}"
    );
    // Which image is whose, and the hub's links to the senders' sockets.
    let mut hub_image = None;
    let mut sender_images: Vec<Option<PathBuf>> = vec![None, None];
    for image in &images {
        let state = ImageReader::open(image)
            .unwrap_or_else(|e| panic!("{}: {e}", image.display()))
            .state;
        if state.cmdline[1] == "hub" {
            let links: usize = state
                .fds
                .iter()
                .filter_map(|f| match &f.kind {
                    FdKind::Socket { socket, .. } => Some(socket.dgram_links().len()),
                    _ => None,
                })
                .sum();
            assert_eq!(
                links, 2,
                "the hub's socket should be linked to both senders'"
            );
            hub_image = Some(image.clone());
        } else {
            let i: usize = state.cmdline[3].parse().expect("the sender's number");
            sender_images[i - 1] = Some(image.clone());
        }
    }
    let hub_before = hub_run.wait_timeout(KILL_TIMEOUT);
    let senders_before: Vec<Finished> = launched
        .drain(..)
        .map(|r| r.wait_timeout(KILL_TIMEOUT))
        .collect();
    let restart_dir = scratch.dir("ckpt-1");
    let hub_after = restart_with(
        &hub_image.expect("the hub's image"),
        &restart_dir,
        &flags,
        Redirect::to(scratch.join("hub-after.out")),
    );
    let senders_after: Vec<Running> = sender_images
        .into_iter()
        .enumerate()
        .map(|(i, image)| {
            restart_with(
                &image.expect("an image per sender"),
                &restart_dir,
                &flags,
                Redirect::to(scratch.join(format!("sender-{}-after.out", i + 1))),
            )
        })
        .collect();
    for (i, running) in senders_after.into_iter().enumerate() {
        let after = running.wait();
        assert!(!after.stderr.contains("warning"), "{}", after.describe());
        assert_pieces_match(
            &senders_alone[i],
            &[&senders_before[i].stdout, &after.stdout],
            &after,
        );
    }
    let hub_after = hub_after.wait();
    hub_after.assert_success();
    assert!(
        !hub_after.stderr.contains("warning"),
        "{}",
        hub_after.describe()
    );
    let expected = String::from_utf8_lossy(&hub_alone.stdout).into_owned();
    let got = format!("{}{}", hub_before.stdout, hub_after.stdout);
    for i in 1..=2 {
        let of = |text: &str| -> Vec<String> {
            let prefix = format!("from {name}.{i}: ");
            text.lines()
                .filter(|l| l.starts_with(&prefix))
                .map(str::to_string)
                .collect()
        };
        assert!(!of(&expected).is_empty(), "{expected}");
        assert_eq!(
            of(&got),
            of(&expected),
            "what the hub received from sender {i}:\n--- uninterrupted:\n{expected}\n--- before and after the restart:\n{got}"
        );
    }
    assert_eq!(got.lines().count(), expected.lines().count(), "{got}");
    assert!(got.ends_with("hub done\n"), "{got}");
    assert!(
        coordinator.running.output().contains("made again"),
        "{}",
        coordinator.running.output()
    );
    assert_nothing_left(&hub());
    for i in 1..=2 {
        assert_nothing_left(&sender(i));
    }
}

/// How many unix and TCP connections not accepted yet the images hold.
fn pending_connections(images: &[PathBuf]) -> usize {
    images
        .iter()
        .map(|image| {
            ImageReader::open(image)
                .unwrap_or_else(|e| panic!("{}: {e}", image.display()))
                .state
                .fds
                .iter()
                .filter(|f| {
                    matches!(
                        &f.kind,
                        FdKind::Socket {
                            socket: SocketState::UnixPending { .. }
                                | SocketState::TcpPending { .. },
                            ..
                        }
                    )
                })
                .count()
        })
        .sum()
}

/// Connections a unix listener had not accepted yet (the client connected 4 times and sent
/// nothing on the last 3, the server accepting one every 250 ms): killed and restarted, they are
/// still waiting at the listener, in order, and the client's output (greetings with both ends'
/// names) is the uninterrupted one.
#[test]
fn unix_connections_not_yet_accepted_restart() {
    let scratch = Scratch::new("unix_backlog");
    let path = socket_path(&scratch);
    backlog_restarts(&scratch, "unix_backlog", &[path.as_str(), "4"]);
}

/// TCP connections a listener had not accepted yet (`tcp_backlog.c`: the client connected 4
/// times and sent nothing on the last 3, the server accepting one every 250 ms), over 127.0.0.1
/// and `::1`: killed and restarted, they are still waiting at the listener, in order, from the
/// same client addresses (the client checks what accept() reported and its peer), and the
/// client's output is the uninterrupted one.
#[test]
fn tcp_connections_not_yet_accepted_restart() {
    for addr in ["127.0.0.1", "::1"] {
        let scratch = Scratch::new(&format!("tcp_backlog_{}", addr.replace(':', "")));
        backlog_restarts(&scratch, "tcp_backlog", &[addr, "4"]);
    }
}

/// `fixture` with `args` (a client that connected 4 times and sent nothing on the last 3, a
/// server accepting one at a time), checkpointed after the first connection ended and killed:
/// the images hold the 3 connections not accepted yet, and the restart goes on as the
/// uninterrupted run does, without a warning.
#[track_caller]
fn backlog_restarts(scratch: &Scratch, fixture_name: &str, args: &[&str]) {
    let mut program = fixture(fixture_name);
    program.args(args);
    let uninterrupted = run_uninterrupted(&program);
    let mut running = launch(
        &program,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    running.wait_for(Wait::LineContaining("connection 0: bye"));
    let images = running.checkpoint_tree_and_kill();
    let before = running.wait_timeout(KILL_TIMEOUT);
    assert_nothing_left(&program);
    assert_eq!(
        pending_connections(&images),
        3,
        "the images should hold the 3 connections not accepted yet"
    );
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

/// The same client and listener checkpointed twice while connections wait to be accepted, and
/// left running: the connections frozen for the checkpoint go on as if nothing happened.
#[test]
fn tcp_connections_not_yet_accepted_run_on_after_checkpoints() {
    let scratch = Scratch::new("tcp_backlog_runs_on");
    let mut program = fixture("tcp_backlog");
    program.args(["127.0.0.1", "5"]);
    checkpoints_leave_it_running(
        &scratch,
        &program,
        &["connection 0: bye", "connection 2: bye"],
    );
}

/// Two UDP ports nobody is bound to now.
fn free_udp_ports() -> (u16, u16) {
    let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a free UDP port");
    let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a free UDP port");
    let port = |s: &std::net::UdpSocket| s.local_addr().expect("its address").port();
    (port(&a), port(&b))
}

/// The UDP client and server as two programs of one coordinator over 127.0.0.1 (issue 7), with
/// requests waiting at the server and replies at the client: checkpointed and killed together,
/// each restarted by its own `rewind restart --coordinator`. The client's output is the
/// uninterrupted one (every reply once, in order, from the server's address, and the server saw
/// every request once, in order, from the client's address); the images link each program's
/// socket to the other's, and the datagrams waiting at one are sent again from the other's
/// restarted socket.
#[test]
fn udp_between_two_coordinated_programs_restarts() {
    let scratch = Scratch::new("udp_coordinated");
    let coordinator = Coordinator::start(&scratch);
    let (sport, cport) = free_udp_ports();
    let (sport, cport) = (sport.to_string(), cport.to_string());
    let role = |r: &str| pingpong("127.0.0.1", 70, &[r, &sport, &cport]);
    let uninterrupted = thread::scope(|s| {
        let server = role("server");
        let srv = s.spawn(move || run_uninterrupted(&server));
        let client = run_uninterrupted(&role("client"));
        let server = srv.join().expect("the server");
        assert!(server.status.success(), "{server:?}");
        client
    });
    let flags = ["--coordinator", coordinator.addr.as_str()];
    let dir = scratch.dir("ckpt-0");
    let server = launch_with(
        &flags,
        &role("server"),
        &dir,
        Redirect::to(scratch.join("server.out")),
    );
    let mut client = launch_with(
        &flags,
        &role("client"),
        &dir,
        Redirect::to(scratch.join("before.out")),
    );
    client.wait_for(Wait::LineContaining("reply 23:"));
    let images = coordinator.checkpoint(&dir, &["--kill"], 2);
    let held = in_flight(&images);
    assert_udp_in_flight(&held, 2);
    let mut takes = 0;
    for image in &images {
        let state = ImageReader::open(image)
            .unwrap_or_else(|e| panic!("{}: {e}", image.display()))
            .state;
        let links: Vec<_> = state
            .fds
            .iter()
            .filter_map(|f| match &f.kind {
                FdKind::Socket { socket, .. } => Some(socket.dgram_links()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(links.len(), 1, "{}: {links:?}", image.display());
        takes += usize::from(links[0].takes);
    }
    assert!(takes > 0, "no image takes the other program's socket");
    let before = client.wait_timeout(KILL_TIMEOUT);
    drop(server.wait_timeout(KILL_TIMEOUT));
    assert_nothing_left(&role("client"));
    let restart_dir = scratch.dir("ckpt-1");
    restart_each(
        &scratch,
        &images,
        &restart_dir,
        &flags,
        &uninterrupted,
        &before,
        |cmdline| cmdline.iter().any(|a| a == "client"),
    );
    assert_nothing_left(&role("client"));
    assert_nothing_left(&role("server"));
}

/// A UDP client connected to a server outside the checkpoint (a plain process the test runs):
/// checkpointed and killed while nothing is in flight, restarted, it is connected to the same
/// server from the same address (UDP has no connection state to lose), with no warning; the
/// server, which checks every request's sender and sequence, sees no change, and the client's
/// output is the uninterrupted one.
#[test]
fn udp_connected_to_a_server_outside_restarts_connected() {
    let scratch = Scratch::new("udp_outside");
    let (sport, cport) = free_udp_ports();
    let (sport, cport) = (sport.to_string(), cport.to_string());
    let server = || pingpong("127.0.0.1", 50, &["server", &sport, &cport]);
    let client = pingpong(
        "127.0.0.1",
        50,
        &["client", &sport, &cport, "connected", "pause"],
    );
    let uninterrupted = thread::scope(|s| {
        let srv = s.spawn(|| run_uninterrupted(&server()));
        let client = run_uninterrupted(&client);
        let server = srv.join().expect("the server");
        assert!(server.status.success(), "{server:?}");
        client
    });
    /// The server outside, killed if the test fails before it ends.
    struct Outside(std::process::Child);
    impl Drop for Outside {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut outside = Outside(
        server()
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the server outside the checkpoint"),
    );
    let mut running = launch(
        &client,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    running.wait_for(Wait::LineContaining("client pauses"));
    let images = running.checkpoint_tree_and_kill();
    let before = running.wait_timeout(KILL_TIMEOUT);
    assert!(
        !before.stderr.contains("outside the checkpoint"),
        "{}",
        before.describe()
    );
    let state = ImageReader::open(&images[0])
        .unwrap_or_else(|e| panic!("{}: {e}", images[0].display()))
        .state;
    let peers: Vec<_> = state
        .fds
        .iter()
        .filter_map(|f| match &f.kind {
            FdKind::Socket {
                socket: SocketState::Udp(u),
                ..
            } => Some(u.remote),
            _ => None,
        })
        .collect();
    assert_eq!(
        peers,
        [Some(
            format!("127.0.0.1:{sport}").parse().expect("an address")
        )],
        "the client's socket should be held connected to the server"
    );
    let after = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    )
    .wait();
    assert_pieces_match(&uninterrupted, &[&before.stdout, &after.stdout], &after);
    assert!(!after.stderr.contains("warning"), "{}", after.describe());
    let served = outside.0.wait().expect("the server outside");
    assert!(served.success(), "the server outside failed: {served:?}");
    assert_nothing_left(&client);
}

/// A request of `udp_pingpong`'s, as its client makes it.
fn pingpong_request(seq: usize) -> Vec<u8> {
    let mut d = format!("req {seq} c|").into_bytes();
    d.extend((0..(seq * 37) % 900).map(|i| b'a' + ((seq + i) % 26) as u8));
    d
}

/// Datagrams from a sender outside the checkpoint (the test) wait at the UDP server when it is
/// checkpointed and killed; the sender's socket is closed by then, so at restart rewind sends
/// them again from a short-lived socket of its own bound to the sender's address. The server,
/// which checks every request's sequence number, payload and sender, answers the next request
/// (from the same address, bound again) with "ok": it got every one once, in order, from that
/// address.
#[test]
fn udp_datagrams_from_a_sender_outside_restart() {
    let scratch = Scratch::new("udp_sender_outside");
    let (sport, cport) = free_udp_ports();
    let server = pingpong(
        "127.0.0.1",
        50,
        &["server", &sport.to_string(), &cport.to_string()],
    );
    let to = format!("127.0.0.1:{sport}");
    let me = format!("127.0.0.1:{cport}");
    let running = launch(
        &server,
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("before.out")),
    );
    let sock = std::net::UdpSocket::bind(&me).expect("bind the client's port");
    sock.set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .expect("a timeout");
    let mut buf = vec![0u8; 2048];
    loop {
        sock.send_to(b"hello", &to).expect("send hello");
        if matches!(sock.recv_from(&mut buf), Ok((2, _))) {
            break;
        }
    }
    const QUEUED: usize = 40;
    for seq in 0..QUEUED {
        sock.send_to(&pingpong_request(seq), &to).expect("send");
    }
    let images = running.checkpoint_tree_and_kill();
    drop(running.wait_timeout(KILL_TIMEOUT));
    drop(sock);
    assert_nothing_left(&server);
    let held = in_flight(&images);
    assert!(
        held.udp_datagrams > 0,
        "no request waited at the server: {held:?}"
    );
    let restarted = restart_tree(
        &images,
        &scratch.dir("ckpt-1"),
        Redirect::to(scratch.join("after.out")),
    );
    // The client's address again, once the server runs (rewind's short-lived socket is gone
    // by then).
    for _ in 0..1000 {
        if !processes_running(&server).is_empty() {
            break;
        }
        thread::sleep(std::time::Duration::from_millis(10));
    }
    let sock = (0..500)
        .find_map(|_| {
            std::net::UdpSocket::bind(&me).ok().or_else(|| {
                thread::sleep(std::time::Duration::from_millis(10));
                None
            })
        })
        .expect("bind the client's port again");
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("a timeout");
    sock.send_to(&pingpong_request(QUEUED), &to).expect("send");
    let want = format!("rep {QUEUED} ");
    let verdict = loop {
        let (n, from) = sock
            .recv_from(&mut buf)
            .expect("a reply to the request sent after the restart");
        assert_eq!(from.to_string(), to, "a reply from elsewhere");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if let Some(rest) = text.strip_prefix(&want) {
            break rest.split('|').next().unwrap_or_default().to_string();
        }
    };
    assert_eq!(
        verdict, "ok",
        "the server did not get every request once, in order, from the client's address"
    );
    sock.send_to(b"bye", &to).expect("send bye");
    let after = restarted.wait();
    after.assert_success();
    assert!(!after.stderr.contains("warning"), "{}", after.describe());
    assert_nothing_left(&server);
}
