//! The coordinator's barriers against scripted fake sessions on loopback: the
//! order of phases, what happens when a session fails, disconnects or says
//! nothing, and the token rule for a wrong token. (Real sessions running real
//! programs are tested end to end in tests/tests/coordinator.rs.)

use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rewind_ckpt::coordinator::server::{Coordinator, CoordinatorOptions};
use rewind_ckpt::coordinator::{
    self, client, read_line, send_line, Action, ClientRequest, Order, Reply, Role, SessionInfo,
    SessionMsg,
};

/// What a fake session does when it gets an order.
#[derive(Clone, Copy, PartialEq)]
enum Behave {
    Answer,
    Fail,
    Disconnect,
    Silent,
}

struct Fake {
    /// The actions it received, in order.
    got: Arc<Mutex<Vec<&'static str>>>,
}

fn start(timeout: Duration) -> (String, String) {
    let coord = Coordinator::bind(&CoordinatorOptions {
        listen: "127.0.0.1:0".into(),
        timeout,
        token: None,
    })
    .expect("bind");
    let (addr, token) = (coord.addr.to_string(), coord.token.clone());
    std::thread::spawn(move || coord.run(|_| {}));
    (addr, token)
}

/// A session named `name` that behaves as `behave` says for each action.
fn fake(addr: &str, name: &str, behave: impl Fn(&Action) -> Behave + Send + 'static) -> Fake {
    let (mut w, mut r, welcome) = coordinator::connect(addr, None, Role::Session).expect("connect");
    assert!(welcome.ok && welcome.id > 0);
    send_line(
        &mut w,
        &SessionMsg::Register(SessionInfo {
            program: name.into(),
            vpid: 100 + welcome.id as i32,
            hostname: "fakehost".into(),
            ..Default::default()
        }),
    )
    .unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        while let Ok(Some(line)) = read_line(&mut r) {
            let order: Order = serde_json::from_str(&line).unwrap();
            seen.lock().unwrap().push(order.action.name());
            match behave(&order.action) {
                Behave::Disconnect => {
                    let _ = w.shutdown(std::net::Shutdown::Both);
                    return;
                }
                Behave::Silent => continue,
                b => {
                    let ok = b == Behave::Answer;
                    let reply = Reply {
                        round: order.round,
                        ok,
                        error: (!ok).then(|| "disk full".to_string()),
                        image: matches!(order.action, Action::Capture { .. })
                            .then(|| format!("/img/{}.rwd", order.round)),
                        ..Default::default()
                    };
                    if send_line(&mut w, &SessionMsg::Reply(reply)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    Fake { got }
}

impl Fake {
    fn got(&self) -> Vec<&'static str> {
        self.got.lock().unwrap().clone()
    }
}

/// Waits until the coordinator lists `n` sessions.
fn wait_sessions(addr: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client::request(addr, None, &ClientRequest::Status).unwrap();
        if r.sessions.len() == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} sessions, not {n}",
            r.sessions.len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn always(b: Behave) -> impl Fn(&Action) -> Behave + Send + 'static {
    move |_| b
}

fn on(name: &'static str, b: Behave) -> impl Fn(&Action) -> Behave + Send + 'static {
    move |a| if a.name() == name { b } else { Behave::Answer }
}

/// Waits a little for the fakes' threads to record the last orders.
fn settle() {
    std::thread::sleep(Duration::from_millis(100));
}

#[test]
fn checkpoint_runs_four_barriers_in_order() {
    let (addr, _) = start(Duration::from_secs(5));
    let fakes: Vec<Fake> = (0..3)
        .map(|i| fake(&addr, &format!("p{i}"), always(Behave::Answer)))
        .collect();
    wait_sessions(&addr, 3);
    let r = client::request(&addr, None, &ClientRequest::Checkpoint { kill: false }).unwrap();
    assert!(r.ok, "{r:?}");
    let phases: Vec<&str> = r.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(phases, ["suspend", "drain", "capture", "resume"]);
    assert_eq!(r.sessions.len(), 3);
    assert!(
        r.sessions.iter().all(|s| s.ok && s.image.is_some()),
        "{r:?}"
    );
    settle();
    for f in &fakes {
        // The status polls of wait_sessions came before.
        let got: Vec<_> = f.got().into_iter().filter(|a| *a != "status").collect();
        assert_eq!(got, ["suspend", "drain", "capture", "resume"]);
    }
    let r = client::request(&addr, None, &ClientRequest::Checkpoint { kill: true }).unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(r.phases.last().unwrap().name, "kill");
}

#[test]
fn a_session_that_disconnects_mid_barrier_is_named_and_the_others_resume() {
    let (addr, _) = start(Duration::from_secs(5));
    let a = fake(&addr, "alpha", always(Behave::Answer));
    let b = fake(&addr, "bravo", on("suspend", Behave::Disconnect));
    let c = fake(&addr, "charlie", always(Behave::Answer));
    wait_sessions(&addr, 3);
    let r = client::request(&addr, None, &ClientRequest::Checkpoint { kill: true }).unwrap();
    assert!(!r.ok);
    let e = r.error.clone().unwrap();
    assert!(e.contains("bravo") && e.contains("disconnected"), "{e}");
    assert!(!e.contains("alpha") && !e.contains("charlie"), "{e}");
    assert!(e.contains("resumed (not killed)"), "{e}");
    settle();
    for f in [&a, &c] {
        let got: Vec<_> = f.got().into_iter().filter(|a| *a != "status").collect();
        assert_eq!(got, ["suspend", "resume"], "no capture, no kill");
    }
    let got: Vec<_> = b.got().into_iter().filter(|a| *a != "status").collect();
    assert_eq!(got, ["suspend"]);
    // The next request still works, without the lost one.
    let r = client::request(&addr, None, &ClientRequest::Status).unwrap();
    assert_eq!(r.sessions.len(), 2, "{r:?}");
}

#[test]
fn a_silent_session_times_out_and_the_others_resume() {
    let (addr, _) = start(Duration::from_millis(400));
    let a = fake(&addr, "alpha", always(Behave::Answer));
    let _b = fake(&addr, "bravo", on("capture", Behave::Silent));
    wait_sessions(&addr, 2);
    let t = Instant::now();
    let r = client::request(&addr, None, &ClientRequest::Checkpoint { kill: false }).unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(!r.ok);
    let e = r.error.unwrap();
    assert!(
        e.contains("bravo") && e.contains("no answer to capture within 0.4 s"),
        "{e}"
    );
    settle();
    let got: Vec<_> = a.got().into_iter().filter(|a| *a != "status").collect();
    assert_eq!(got, ["suspend", "drain", "capture", "resume"]);
}

#[test]
fn a_failed_capture_with_kill_kills_nobody() {
    let (addr, _) = start(Duration::from_secs(5));
    let a = fake(&addr, "alpha", always(Behave::Answer));
    let b = fake(&addr, "bravo", on("capture", Behave::Fail));
    wait_sessions(&addr, 2);
    let r = client::request(&addr, None, &ClientRequest::Checkpoint { kill: true }).unwrap();
    let e = r.error.unwrap();
    assert!(e.contains("bravo") && e.contains("disk full"), "{e}");
    settle();
    for f in [&a, &b] {
        let got: Vec<_> = f.got().into_iter().filter(|a| *a != "status").collect();
        assert_eq!(got, ["suspend", "drain", "capture", "resume"]);
    }
}

#[test]
fn ping_times_no_op_barriers() {
    let (addr, _) = start(Duration::from_secs(5));
    let _f: Vec<Fake> = (0..4)
        .map(|i| fake(&addr, &format!("p{i}"), always(Behave::Answer)))
        .collect();
    wait_sessions(&addr, 4);
    let r = client::request(&addr, None, &ClientRequest::Ping { rounds: 200 }).unwrap();
    let p = r.ping.expect("ping stats");
    assert_eq!((p.rounds, p.sessions), (200, 4));
    assert!(p.min_us > 0.0 && p.min_us <= p.median_us && p.median_us <= p.max_us);
}

#[test]
fn nothing_to_checkpoint_and_bad_tokens_are_errors() {
    let (addr, token) = start(Duration::from_secs(5));
    let r = client::request(&addr, None, &ClientRequest::Checkpoint { kill: false }).unwrap();
    assert!(!r.ok && r.error.unwrap().contains("no session is registered"));
    let e = client::request(&addr, Some("0123"), &ClientRequest::Status)
        .unwrap_err()
        .to_string();
    assert!(e.contains("refused") && e.contains("wrong token"), "{e}");
    assert!(
        client::request(&addr, Some(&token), &ClientRequest::Status)
            .unwrap()
            .ok
    );
    // A peer that does not speak the protocol is refused, and the coordinator goes on.
    let mut raw = TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(&mut raw, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut r = std::io::BufReader::new(raw);
    let line = read_line(&mut r).unwrap().unwrap();
    assert!(line.contains("bad hello"), "{line}");
    assert!(
        client::request(&addr, None, &ClientRequest::Status)
            .unwrap()
            .ok
    );
}
