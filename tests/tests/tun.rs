//! The tun plugin end to end (`--plugin tun`), on `tun_echo`, a UDP echo server answering through
//! a tun device, in a network namespace of each test's own (the test's thread unshares one, so
//! rewind, the program and the test's UDP socket all live there and vanish with it).
//!
//! Oracles: every datagram the test sends is answered exactly once (the replies the test's
//! socket receives carry the sequence numbers sent, each once), what the program prints before
//! and after a checkpoint is what an uninterrupted run prints, and the image holds the packets
//! that were queued in the device at the checkpoint (decoded from the plugin's data). The
//! program sleeps after its third answer, so the packets sent then are waiting in the device
//! when the checkpoint is taken.
//!
//! Needs root (network namespaces, tun devices). Skipped, loudly, when /dev/net/tun is missing.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{unshare, CloneFlags};
use rewind_plugin_tun::state::Saved;
use rewind_tests::*;

/// The device name, the packets to answer, the pause (ms) after the third answer, and the mode:
/// "tun" (IFF_TUN | IFF_NO_PI) or "tap" (IFF_TAP with the packet-information header and a 12-byte
/// virtio-net header on every frame).
fn echo_args(mode: &str) -> [&str; 5] {
    ["rwtun0", "10", "3", "1500", mode]
}
const PLUGIN: [&str; 2] = ["--plugin", "tun"];
const FINISH: Duration = Duration::from_secs(60);

/// Runs `f` on a thread of its own in a fresh network namespace; None (and a loud message) when
/// this machine has no tun support.
fn in_new_netns<T: Send>(test: &str, f: impl FnOnce() -> T + Send) -> Option<T> {
    if !Path::new("/dev/net/tun").exists() {
        eprintln!(
            "\n*** SKIPPED {test}: /dev/net/tun does not exist here, the tun plugin cannot be tested ***\n"
        );
        return None;
    }
    thread::scope(|s| {
        s.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("unshare(CLONE_NEWNET): {e} (the tun tests need root)"));
            f()
        })
        .join()
        .map_err(std::panic::resume_unwind)
        .ok()
    })
}

fn echo_program(args: &[&str]) -> Command {
    let mut cmd = fixture("tun_echo");
    cmd.args(args);
    cmd
}

/// The test's side: a UDP socket sending "seq N" to the echo server behind the device.
struct Peer {
    sock: UdpSocket,
}

impl Peer {
    fn new() -> Peer {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind a UDP socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set a read timeout");
        Peer { sock }
    }

    fn send(&self, seqs: std::ops::RangeInclusive<u32>) {
        for n in seqs {
            self.sock
                .send_to(format!("seq {n}").as_bytes(), "10.77.0.2:7")
                .unwrap_or_else(|e| panic!("sending seq {n} to 10.77.0.2:7: {e}"));
        }
    }

    /// How many replies carried each sequence number, once `want` distinct ones came (or the
    /// deadline passed), plus a moment for duplicates.
    fn replies(&self, want: usize) -> BTreeMap<u32, usize> {
        let mut got = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut settle: Option<Instant> = None;
        loop {
            let mut buf = [0u8; 64];
            if let Ok((n, from)) = self.sock.recv_from(&mut buf) {
                assert_eq!(from.to_string(), "10.77.0.2:7", "a reply from elsewhere");
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let seq = text
                    .strip_prefix("seq ")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected reply {text:?}"));
                *got.entry(seq).or_insert(0) += 1;
            }
            if got.len() >= want && settle.is_none() {
                settle = Some(Instant::now() + Duration::from_millis(300));
            }
            let now = Instant::now();
            if settle.is_some_and(|t| now > t) || now > deadline {
                return got;
            }
        }
    }
}

/// Each of 1..=n answered exactly once.
#[track_caller]
fn assert_answered_once(got: &BTreeMap<u32, usize>, n: u32) {
    let expected: BTreeMap<u32, usize> = (1..=n).map(|s| (s, 1)).collect();
    assert_eq!(
        got, &expected,
        "replies received (sequence number: times) differ from every datagram answered once"
    );
}

/// The sequence numbers of the UDP datagrams queued in the image's tun files, in order.
fn queued_seqs(image: &Path) -> Vec<u32> {
    let reader = rewind_ckpt::image::ImageReader::open(image)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", image.display()));
    let saved = Saved::from_state(&reader.state)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("{} holds no tun plugin data", image.display()));
    let mut seqs = Vec::new();
    for file in &saved.files {
        let dev = saved
            .devices
            .iter()
            .find(|d| Some(&d.name) == file.device.as_ref())
            .expect("the file's device is in the image");
        // struct tun_pi unless IFF_NO_PI, the virtio-net header with IFF_VNET_HDR, Ethernet for
        // IFF_TAP (IPv4 only), then IPv4 + UDP whose payload is "seq N".
        let mut skip = 0;
        if dev.tun_flags & 0x1000 == 0 {
            skip += 4;
        }
        if dev.tun_flags & 0x4000 != 0 {
            skip += dev.vnet_hdr_sz as usize;
        }
        let tap = dev.tun_flags & 0x0002 != 0;
        seqs.extend(file.queue.iter().filter_map(|packet| {
            let mut p = packet.get(skip..)?;
            if tap {
                if p.get(12..14)? != [0x08, 0x00] {
                    return None;
                }
                p = p.get(14..)?;
            }
            let ihl = usize::from(*p.first()? & 15) * 4;
            if p.first()? >> 4 != 4 || *p.get(9)? != 17 {
                return None;
            }
            let payload = String::from_utf8_lossy(p.get(ihl + 8..)?).into_owned();
            payload.strip_prefix("seq ")?.parse::<u32>().ok()
        }));
    }
    seqs
}

/// `ip -j ARGS`, parsed.
fn ip_json(args: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new("ip");
    cmd.arg("-j").args(args);
    let done = run_command(cmd);
    done.assert_success();
    serde_json::from_str(&done.stdout).unwrap_or_else(|e| panic!("{e}: {}", done.describe()))
}

/// What rwtun0 looks like: link details (kind, flags, MTU, queue length, MAC, index...),
/// addresses and routes of every table, without what the kernel picks anew each time (IPv6
/// link-local addresses and routes, lifetimes, DAD state).
fn link_state() -> String {
    let mut links = ip_json(&["-d", "addr", "show", "dev", "rwtun0"]);
    for link in links.as_array_mut().into_iter().flatten() {
        if let Some(addrs) = link.get_mut("addr_info").and_then(|a| a.as_array_mut()) {
            addrs.retain(|a| a["scope"] != "link");
            for a in addrs.iter_mut().filter_map(|a| a.as_object_mut()) {
                a.retain(|k, _| {
                    [
                        "family",
                        "local",
                        "address",
                        "prefixlen",
                        "broadcast",
                        "label",
                    ]
                    .contains(&k.as_str())
                });
            }
        }
    }
    let mut routes = ip_json(&["route", "show", "table", "all", "dev", "rwtun0"]);
    let mut routes6 = ip_json(&["-6", "route", "show", "table", "all", "dev", "rwtun0"]);
    for r in [&mut routes, &mut routes6] {
        if let Some(list) = r.as_array_mut() {
            list.retain(|r| !r["dst"].as_str().unwrap_or("").starts_with("fe80"));
            for r in list.iter_mut().filter_map(|r| r.as_object_mut()) {
                r.remove("expires");
                r.remove("pref");
            }
        }
    }
    format!("{links:#}\n{routes:#}\n{routes6:#}")
}

/// Configuration added from outside while the program runs: the plugin reads the interface's
/// live state, so it comes back too.
fn configure_more() {
    for args in [
        &["link", "set", "rwtun0", "mtu", "1400", "txqueuelen", "321"][..],
        &[
            "addr",
            "add",
            "10.88.0.1",
            "peer",
            "10.88.0.2/32",
            "dev",
            "rwtun0",
        ],
        &["addr", "add", "10.77.0.100/24", "dev", "rwtun0"],
        &[
            "-6",
            "addr",
            "add",
            "fd00:77::1/64",
            "dev",
            "rwtun0",
            "nodad",
        ],
        &[
            "route",
            "add",
            "10.99.0.0/16",
            "via",
            "10.77.0.9",
            "dev",
            "rwtun0",
            "metric",
            "7",
        ],
        &["-6", "route", "add", "fd00:99::/48", "dev", "rwtun0"],
    ] {
        let mut cmd = Command::new("ip");
        cmd.args(args);
        run_command(cmd).assert_success();
    }
}

fn interfaces() -> Vec<String> {
    read_lossy(Path::new("/proc/thread-self/net/dev"))
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .collect()
}

/// Processes living in this thread's network namespace (this test process excepted).
fn processes_here() -> Vec<String> {
    let ours = std::fs::read_link("/proc/thread-self/ns/net").expect("our network namespace");
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .expect("list /proc")
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().into_owned();
            (pid.parse::<u32>().is_ok() && pid != me).then_some(pid)
        })
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .ok()
                .as_ref()
                == Some(&ours)
        })
        .map(|pid| {
            format!(
                "{pid} ({})",
                read_lossy(Path::new(&format!("/proc/{pid}/cmdline"))).replace('\0', " ")
            )
        })
        .collect()
}

/// The fixture without rewind, with the traffic of every scenario: the reference output.
fn uninterrupted(scratch: &Scratch, mode: &str) -> Output {
    let peer = Peer::new();
    let mut run = background(
        echo_program(&echo_args(mode)),
        &scratch.dir("native"),
        Redirect::to(scratch.join("native.out")),
    );
    run.wait_for(Wait::LineContaining("ready"));
    peer.send(1..=3);
    run.wait_for(Wait::LineContaining("udp 3"));
    peer.send(4..=7);
    run.wait_for(Wait::LineContaining("udp 7"));
    peer.send(8..=10);
    let done = run.wait_timeout(FINISH);
    done.assert_success();
    assert_answered_once(&peer.replies(10), 10);
    Output {
        status: done.status,
        stdout: done.stdout.into_bytes(),
        stderr: done.stderr.into_bytes(),
    }
}

/// Launch under the plugin, answer 1..=3, then `meanwhile()`, then send 4..=7 while the program
/// sleeps: they queue.
fn launch_and_queue(
    scratch: &Scratch,
    peer: &Peer,
    mode: &str,
    meanwhile: impl FnOnce(),
) -> Running {
    let mut launched = launch_with(
        &PLUGIN,
        &echo_program(&echo_args(mode)),
        &scratch.dir("ckpt-0"),
        Redirect::to(scratch.join("stage-0.out")),
    );
    launched.wait_for(Wait::LineContaining("ready"));
    peer.send(1..=3);
    launched.wait_for(Wait::LineContaining("udp 3"));
    meanwhile();
    peer.send(4..=7);
    launched
}

/// Checkpoint with packets queued, kill, restart: the interface comes back as it was, every
/// packet is answered once, the output is the uninterrupted one.
fn checkpoint_kill_restart(test: &str, mode: &str) {
    let scratch = Scratch::new(test);
    in_new_netns(test, || {
        let expected = uninterrupted(&scratch, mode);
        let peer = Peer::new();
        let mut state = String::new();
        let launched = launch_and_queue(&scratch, &peer, mode, || {
            configure_more();
            state = link_state();
        });
        let image = launched.checkpoint_and_kill();
        let killed = launched.wait_timeout(KILL_TIMEOUT);
        assert_eq!(
            queued_seqs(&image),
            [4, 5, 6, 7],
            "the image must hold the four datagrams queued in the device at the checkpoint"
        );
        assert!(
            !interfaces().contains(&"rwtun0".to_string()),
            "the device should have gone with the killed program: {:?}",
            interfaces()
        );
        let mut restarted = restart_with(
            &image,
            &scratch.dir("ckpt-1"),
            &PLUGIN,
            Redirect::to(scratch.join("stage-1.out")),
        );
        restarted.wait_for(Wait::LineContaining("udp 7"));
        let restored = link_state();
        assert!(
            restored == state,
            "the interface differs after the restart\n--- at the checkpoint:\n{state}\n--- after the restart:\n{restored}\n--- first difference: {}",
            first_difference(&state, &restored)
        );
        peer.send(8..=10);
        let last = restarted.wait_timeout(FINISH);
        assert_pieces_match(&expected, &[&killed.stdout, &last.stdout], &last);
        assert_answered_once(&peer.replies(10), 10);
    });
}

#[test]
fn tun_queued_packets_are_answered_once_after_checkpoint_kill_restart() {
    checkpoint_kill_restart("tun_restart", "tun");
}

#[test]
fn tap_queued_frames_are_answered_once_after_checkpoint_kill_restart() {
    checkpoint_kill_restart("tap_restart", "tap");
}

#[test]
fn queued_packets_are_answered_once_when_the_program_goes_on_after_a_checkpoint() {
    let scratch = Scratch::new("tun_resume");
    in_new_netns("tun resume", || {
        let expected = uninterrupted(&scratch, "tun");
        let peer = Peer::new();
        let mut launched = launch_and_queue(&scratch, &peer, "tun", || {});
        let image = launched.checkpoint();
        assert_eq!(
            queued_seqs(&image),
            [4, 5, 6, 7],
            "queued at the checkpoint"
        );
        launched.wait_for(Wait::LineContaining("udp 7"));
        peer.send(8..=10);
        let done = launched.wait_timeout(FINISH);
        done.assert_success();
        assert_eq!(
            done.stdout,
            String::from_utf8_lossy(&expected.stdout),
            "output differs from the uninterrupted run: {}",
            first_difference(&String::from_utf8_lossy(&expected.stdout), &done.stdout)
        );
        assert_answered_once(&peer.replies(10), 10);
    });
}

#[test]
fn restart_failures_name_the_device_and_leave_nothing_behind() {
    let scratch = Scratch::new("tun_errors");
    in_new_netns("tun restart errors", || {
        let dir = scratch.dir("ckpt-0");
        let mut launched = launch_with(
            &PLUGIN,
            &echo_program(&["rwtun0", "1"]),
            &dir,
            Redirect::to(scratch.join("stage-0.out")),
        );
        launched.wait_for(Wait::LineContaining("ready"));
        let image = launched.checkpoint_and_kill();
        launched.wait_timeout(KILL_TIMEOUT);
        let before = interfaces();
        let restart = |flags: &[&str]| {
            let mut cmd = restart_command(&dir, flags);
            cmd.arg(&image);
            run_command(cmd)
        };
        let nothing_left = |what: &str| {
            assert_eq!(
                processes_here(),
                Vec::<String>::new(),
                "{what}: processes left"
            );
            assert_eq!(interfaces(), before, "{what}: interfaces changed");
        };

        // The name is taken by another interface (a persistent tap device).
        let ip = |args: &[&str]| {
            let mut cmd = Command::new("ip");
            cmd.args(args);
            run_command(cmd).assert_success();
        };
        ip(&["tuntap", "add", "dev", "rwtun0", "mode", "tap"]);
        let with_intruder = interfaces();
        let done = restart(&PLUGIN);
        assert_fails_clearly(&done, &["already exists"]);
        assert!(done.stderr.contains("rwtun0"), "{}", done.describe());
        assert_eq!(
            processes_here(),
            Vec::<String>::new(),
            "name taken: processes left"
        );
        assert_eq!(
            interfaces(),
            with_intruder,
            "name taken: interfaces changed"
        );
        ip(&["link", "del", "rwtun0"]);

        // No /dev/net/tun (an empty /dev/net in a mount namespace of the restart's own).
        let mut cmd = Command::new("unshare");
        cmd.args([
            "-m",
            "sh",
            "-c",
            "mount -t tmpfs none /dev/net && exec \"$0\" \"$@\"",
        ])
        .arg(rewind_bin())
        .args(["restart", "--ckpt-dir"])
        .arg(&dir)
        .args(PLUGIN)
        .arg(&image);
        let done = run_command(cmd);
        assert_fails_clearly(&done, &["/dev/net/tun"]);
        assert!(done.stderr.contains("rwtun0"), "{}", done.describe());
        nothing_left("restart without /dev/net/tun");

        // The image itself was fine all along.
        let peer = Peer::new();
        let restarted = restart_with(
            &image,
            &scratch.dir("ckpt-1"),
            &PLUGIN,
            Redirect::to(scratch.join("stage-1.out")),
        );
        // Addresses come last in a restore: wait for the route to 10.77.0.0/24 through rwtun0.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !read_lossy(Path::new("/proc/thread-self/net/route"))
            .lines()
            .any(|l| l.starts_with("rwtun0\t00004D0A"))
        {
            assert!(
                Instant::now() < deadline,
                "the restart routed nothing to rwtun0"
            );
            thread::sleep(Duration::from_millis(5));
        }
        peer.send(1..=1);
        let last = restarted.wait_timeout(FINISH);
        last.assert_success();
        assert_eq!(last.stdout, "udp 1\n");
        assert_answered_once(&peer.replies(1), 1);
    });
}

#[test]
fn recorded_tun_echo_replays_without_the_device() {
    let scratch = Scratch::new("tun_record");
    in_new_netns("tun record/replay", || {
        let trace = scratch.join("trace");
        let mut cmd = Command::new(rewind_bin());
        // A name pattern: the kernel writes the real name back into the TUNSETIFF ifreq.
        cmd.arg("record")
            .arg("-o")
            .arg(&trace)
            .arg("--")
            .arg(target("tun_echo"))
            .args(["rwtun%d", "6"]);
        let peer = Peer::new();
        let mut recording = background(
            cmd,
            scratch.path(),
            Redirect::to(scratch.join("record.out")),
        );
        recording.wait_for(Wait::LineContaining("ready rwtun0"));
        peer.send(1..=3);
        recording.wait_for(Wait::LineContaining("udp 3"));
        peer.send(4..=6);
        let done = recording.wait_timeout(FINISH);
        assert!(
            done.status.success() && done.stderr.contains("rewind: recorded "),
            "{}",
            done.describe()
        );
        assert_answered_once(&peer.replies(6), 6);
        let recorded = Recorded {
            dir: trace.clone(),
            stdout: done.stdout.clone(),
            stderr: done.stderr.clone(),
            status: done.status,
            what: done.what.clone(),
        };
        // Replayed where /dev/net/tun does not exist: it never touches the device.
        let mut cmd = Command::new("unshare");
        cmd.args([
            "-m",
            "sh",
            "-c",
            "mount -t tmpfs none /dev/net && exec \"$0\" \"$@\"",
        ])
        .arg(rewind_bin())
        .arg("replay")
        .arg(&trace)
        .current_dir(scratch.path());
        let replayed = run_command(cmd);
        recorded.assert_replay_matches(&replayed);
        assert!(
            !interfaces().contains(&"rwtun0".to_string()),
            "the replay made an interface: {:?}",
            interfaces()
        );
    });
}
