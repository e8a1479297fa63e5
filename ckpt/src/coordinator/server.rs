//! `rewind coordinator`: accepts sessions and commands, drives barriers.
//!
//! One thread accepts connections; each connection gets a reader thread that
//! checks its hello (token rule in [`super::authorize`]), welcomes it, and
//! turns every line it sends into an [`Event`] on one channel. The main
//! thread owns all state and every writing end, and handles one client
//! request at a time: while a barrier waits for answers, sessions may still
//! join or leave (a session that joins mid-checkpoint is not part of it) and
//! other requests wait their turn.

use std::collections::{BTreeMap, VecDeque};
use std::io::BufReader;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::{
    authorize, read_line, send_line, Action, ClientRequest, DgramSocket, Endpoint, Hello, Order,
    Phase, PingStats, Reply, Report, Role, SessionInfo, SessionMsg, SessionReport, UnixLink,
    Welcome, HELLO_TIMEOUT, PROTOCOL,
};
use crate::Error;

/// A suspended session waits this much longer than the barrier timeout for
/// the coordinator's next order before it resumes its program by itself.
const LEASE_MARGIN: Duration = Duration::from_secs(15);

/// How a coordinator is set up.
#[derive(Debug, Clone)]
pub struct CoordinatorOptions {
    /// `ADDR:PORT` to listen on (port 0: any free port).
    pub listen: String,
    /// How long a session has to answer one barrier.
    pub timeout: Duration,
    /// The shared token; a fresh random one when `None`.
    pub token: Option<String>,
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        CoordinatorOptions {
            listen: super::DEFAULT_LISTEN.into(),
            timeout: super::DEFAULT_TIMEOUT,
            token: None,
        }
    }
}

/// A bound, not yet running coordinator.
pub struct Coordinator {
    listener: TcpListener,
    /// The address it listens on (the real port when 0 was asked).
    pub addr: SocketAddr,
    pub token: String,
    timeout: Duration,
}

enum Event {
    Joined {
        id: u64,
        role: Role,
        peer: SocketAddr,
        writer: TcpStream,
    },
    Refused {
        peer: SocketAddr,
        why: String,
    },
    Line {
        id: u64,
        line: String,
    },
    Closed {
        id: u64,
        why: Option<String>,
    },
}

struct Peer {
    role: Role,
    addr: SocketAddr,
    writer: TcpStream,
    /// Sessions: set when it registered.
    info: Option<SessionInfo>,
    /// Sessions: the exit code it reported.
    exited: Option<i32>,
    /// Restarted sessions whose connections waited for others: set once
    /// they were reconnected and resumed.
    reconnected: bool,
}

struct State {
    peers: BTreeMap<u64, Peer>,
    /// Client requests that arrived during a barrier.
    deferred: VecDeque<Event>,
    /// Sessions lost since the last request, for the next report.
    lost: Vec<String>,
    round: u64,
    timeout: Duration,
    log: Box<dyn FnMut(&str) + Send>,
}

/// The outcome of one barrier for one session.
type Answers = BTreeMap<u64, Result<Reply, String>>;

impl Coordinator {
    pub fn bind(opts: &CoordinatorOptions) -> Result<Coordinator, Error> {
        let addrs = super::resolve(&opts.listen, "listen")?;
        let listener = TcpListener::bind(&addrs[..])
            .map_err(|e| Error::Usage(format!("cannot listen on {}: {e}", opts.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io(opts.listen.clone(), e))?;
        let token = match &opts.token {
            Some(t) if !t.is_empty() => t.clone(),
            _ => super::new_token()?,
        };
        if opts.timeout.is_zero() {
            return Err(Error::Usage("the barrier timeout must not be zero".into()));
        }
        Ok(Coordinator {
            listener,
            addr,
            token,
            timeout: opts.timeout,
        })
    }

    /// Serve forever; `log` gets one line per event worth telling (sessions
    /// joining and leaving, requests and their outcome, refused peers).
    pub fn run(self, log: impl FnMut(&str) + Send + 'static) -> Result<(), Error> {
        let (tx, rx) = mpsc::channel();
        let token = self.token.clone();
        let timeout_ms = self.timeout.as_millis() as u64;
        let listener = self.listener;
        std::thread::Builder::new()
            .name("coord-accept".into())
            .spawn(move || accept_loop(listener, token, timeout_ms, tx))
            .map_err(|e| Error::Tracee(format!("cannot start a thread: {e}")))?;
        let mut state = State {
            peers: BTreeMap::new(),
            deferred: VecDeque::new(),
            lost: Vec::new(),
            round: 0,
            timeout: self.timeout,
            log: Box::new(log),
        };
        loop {
            let event = match state.deferred.pop_front() {
                Some(e) => e,
                None => match rx.recv() {
                    Ok(e) => e,
                    Err(_) => {
                        return Err(Error::Tracee("the coordinator stopped accepting".into()))
                    }
                },
            };
            state.handle(event, &rx);
        }
    }
}

fn accept_loop(listener: TcpListener, token: String, timeout_ms: u64, tx: Sender<Event>) {
    let mut next_id = 1u64;
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let id = next_id;
        next_id += 1;
        let (token, tx) = (token.clone(), tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("coord-peer-{id}"))
            .spawn(move || serve_peer(id, stream, peer, &token, timeout_ms, tx));
        if let Err(e) = spawned {
            tracing::warn!("cannot start a thread for {peer}: {e}");
        }
    }
}

/// One peer: hello, welcome, then every line it sends becomes an event.
fn serve_peer(
    id: u64,
    stream: TcpStream,
    peer: SocketAddr,
    token: &str,
    timeout_ms: u64,
    tx: Sender<Event>,
) {
    let refuse = |mut w: &TcpStream, why: String| {
        let _ = send_line(
            &mut w,
            &Welcome {
                ok: false,
                error: Some(why.clone()),
                ..Default::default()
            },
        );
        let _ = tx.send(Event::Refused { peer, why });
    };
    let setup = stream
        .set_nodelay(true)
        .and_then(|()| stream.set_read_timeout(Some(HELLO_TIMEOUT)))
        .and_then(|()| stream.set_write_timeout(Some(HELLO_TIMEOUT)))
        .and_then(|()| stream.try_clone());
    let mut writer = match setup {
        Ok(w) => w,
        Err(e) => return tracing::warn!("{peer}: {e}"),
    };
    let mut reader = BufReader::new(stream);
    let hello: Hello = match read_line(&mut reader) {
        Ok(Some(line)) => match serde_json::from_str(&line) {
            Ok(h) => h,
            Err(e) => return refuse(&writer, format!("bad hello: {e}")),
        },
        Ok(None) => return,
        Err(e) => return refuse(&writer, format!("no hello: {e}")),
    };
    if hello.protocol != PROTOCOL {
        return refuse(
            &writer,
            format!(
                "protocol version {} (this coordinator speaks {PROTOCOL}): use the same rewind everywhere",
                hello.protocol
            ),
        );
    }
    if let Err(why) = authorize(peer.ip(), hello.token.as_deref(), token) {
        return refuse(&writer, why);
    }
    let welcome = Welcome {
        ok: true,
        error: None,
        id,
        timeout_ms,
    };
    if send_line(&mut writer, &welcome).is_err() {
        return;
    }
    // Past the hello, a session may stay quiet for days.
    let _ = reader.get_ref().set_read_timeout(None);
    let joined = Event::Joined {
        id,
        role: hello.role,
        peer,
        writer,
    };
    if tx.send(joined).is_err() {
        return;
    }
    let why = loop {
        match read_line(&mut reader) {
            Ok(Some(line)) => {
                if tx.send(Event::Line { id, line }).is_err() {
                    return;
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(e.to_string()),
        }
    };
    let _ = tx.send(Event::Closed { id, why });
}

impl State {
    fn log(&mut self, line: String) {
        (self.log)(&line);
    }

    fn describe(&self, id: u64) -> String {
        match self.peers.get(&id).and_then(|p| p.info.as_ref()) {
            Some(info) => format!("session {id}: {}", info.describe()),
            None => format!("session {id}"),
        }
    }

    /// Handle any event; a client's request runs its barriers here.
    fn handle(&mut self, event: Event, rx: &Receiver<Event>) {
        match event {
            Event::Line { id, line } if self.role(id) == Some(Role::Client) => {
                let report = match serde_json::from_str::<ClientRequest>(&line) {
                    Ok(req) => self.execute(req, rx),
                    Err(e) => Report {
                        error: Some(format!("bad request: {e}")),
                        ..Default::default()
                    },
                };
                // One request per client connection.
                if let Some(mut client) = self.peers.remove(&id) {
                    let _ = send_line(&mut client.writer, &report);
                    let _ = client.writer.shutdown(std::net::Shutdown::Both);
                }
            }
            other => {
                self.note(other);
            }
        }
        self.reconnect_ready(rx);
    }

    /// Restarted sessions waiting for each other's connections: the
    /// registered, unreleased ones, with their endpoints.
    fn waiting(&self) -> Vec<Waiting> {
        self.peers
            .iter()
            .filter_map(|(&id, p)| {
                let info = p.info.as_ref()?;
                (p.role == Role::Session
                    && p.exited.is_none()
                    && !p.reconnected
                    && !(info.awaiting.is_empty() && info.awaiting_links.is_empty()))
                .then(|| Waiting {
                    id,
                    ends: info.awaiting.clone(),
                    links: info.awaiting_links.clone(),
                })
            })
            .collect()
    }

    /// Once every session a group of restarted sessions' connections lead
    /// to has registered: `reconnect` (each makes its ends, in repair
    /// mode), then `resume` (each lets its ends and its program go), so no
    /// end talks before its peer exists.
    fn reconnect_ready(&mut self, rx: &Receiver<Event>) {
        loop {
            let waiting = self.waiting();
            if waiting.is_empty() {
                return;
            }
            let Some(group) = complete_group(&waiting) else {
                return;
            };
            let mut moved: Vec<(std::net::IpAddr, std::net::IpAddr)> = Vec::new();
            for id in &group {
                if let Some(info) = self.peers.get(id).and_then(|p| p.info.as_ref()) {
                    for m in &info.moved {
                        if !moved.iter().any(|(from, _)| *from == m.0) {
                            moved.push(*m);
                        }
                    }
                }
            }
            for id in &group {
                if let Some(p) = self.peers.get_mut(id) {
                    p.reconnected = true;
                }
            }
            let (made, t1) = self.barrier(&group, Action::Reconnect { moved }, rx);
            let (resumed, t2) = self.barrier(&group, Action::Resume, rx);
            let failed: Vec<String> = made
                .iter()
                .chain(resumed.iter())
                .filter_map(|(id, a)| match a {
                    Ok(r) if r.ok => None,
                    Ok(r) => Some(format!(
                        "{}: {}",
                        self.describe(*id),
                        r.error.as_deref().unwrap_or("failed")
                    )),
                    Err(e) => Some(format!("{}: {e}", self.describe(*id))),
                })
                .collect();
            let names: Vec<String> = group.iter().map(|id| format!("session {id}")).collect();
            self.log(format!(
                "connections between {} made again [reconnect {:.1} ms, resume {:.1} ms]{}",
                names.join(", "),
                t1.as_secs_f64() * 1e3,
                t2.as_secs_f64() * 1e3,
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(": failed for {}", failed.join("; "))
                }
            ));
        }
    }

    fn role(&self, id: u64) -> Option<Role> {
        self.peers.get(&id).map(|p| p.role)
    }

    /// Everything but a client's request: joins, registrations, departures.
    /// Returns the reply if the event was a session's reply.
    fn note(&mut self, event: Event) -> Option<(u64, Reply)> {
        match event {
            Event::Joined {
                id,
                role,
                peer,
                writer,
            } => {
                if role == Role::Session {
                    // A session whose orders cannot be written within a
                    // barrier timeout counts as failed.
                    let _ = writer.set_write_timeout(Some(self.timeout));
                }
                self.peers.insert(
                    id,
                    Peer {
                        role,
                        addr: peer,
                        writer,
                        info: None,
                        exited: None,
                        reconnected: false,
                    },
                );
            }
            Event::Refused { peer, why } => self.log(format!("refused {peer}: {why}")),
            Event::Line { id, line } => match self.role(id) {
                Some(Role::Session) => match serde_json::from_str::<SessionMsg>(&line) {
                    Ok(SessionMsg::Register(info)) => {
                        let peer = self.peers.get(&id).map(|p| p.addr.to_string());
                        self.log(format!(
                            "session {id} joined: {}{} from {}",
                            info.describe(),
                            if info.restarted { ", restarted" } else { "" },
                            peer.unwrap_or_default()
                        ));
                        if let Some(p) = self.peers.get_mut(&id) {
                            p.info = Some(info);
                        }
                    }
                    Ok(SessionMsg::Reply(r)) => return Some((id, r)),
                    Ok(SessionMsg::Exited { code }) => {
                        if let Some(p) = self.peers.get_mut(&id) {
                            p.exited = Some(code);
                        }
                    }
                    Err(e) => {
                        let who = self.describe(id);
                        self.log(format!("{who} sent a bad message ({e}); dropping it"));
                        self.drop_peer(id, Some("sent a bad message".into()));
                    }
                },
                // A client's request during a barrier waits for it to end.
                Some(Role::Client) => self.deferred.push_back(Event::Line { id, line }),
                None => {}
            },
            Event::Closed { id, why } => self.drop_peer(id, why),
        }
        None
    }

    fn drop_peer(&mut self, id: u64, why: Option<String>) {
        let who = self.describe(id);
        let Some(peer) = self.peers.remove(&id) else {
            return;
        };
        let _ = peer.writer.shutdown(std::net::Shutdown::Both);
        if peer.role != Role::Session || peer.info.is_none() {
            return;
        }
        match peer.exited {
            Some(code) => self.log(format!("{who} left: its program ended with status {code}")),
            None => {
                let why = why.map(|w| format!(" ({w})")).unwrap_or_default();
                self.log(format!(
                    "{who} lost: the connection closed before its program ended{why}; its rewind or its host died?"
                ));
                self.lost.push(who);
            }
        }
    }

    /// Registered sessions whose program still runs.
    fn sessions(&self) -> Vec<u64> {
        self.peers
            .iter()
            .filter(|(_, p)| p.role == Role::Session && p.info.is_some() && p.exited.is_none())
            .map(|(&id, _)| id)
            .collect()
    }

    /// One barrier: send `action` to `targets`, wait for every answer or the
    /// timeout. Returns every target's outcome and the barrier's duration.
    fn barrier(
        &mut self,
        targets: &[u64],
        action: Action,
        rx: &Receiver<Event>,
    ) -> (Answers, Duration) {
        self.round += 1;
        let round = self.round;
        let name = action.name();
        let order = Order { round, action };
        let start = Instant::now();
        let mut answers = Answers::new();
        for &id in targets {
            let sent = match self.peers.get_mut(&id) {
                Some(p) => send_line(&mut p.writer, &order)
                    .map_err(|e| format!("cannot send the order: {e}")),
                None => Err("disconnected".into()),
            };
            if let Err(e) = sent {
                answers.insert(id, Err(e));
            }
        }
        let deadline = start + self.timeout;
        while answers.len() < targets.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = match rx.recv_timeout(left) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let closed = match &event {
                Event::Closed { id, why } if targets.contains(id) => Some((*id, why.clone())),
                _ => None,
            };
            let exited_before = closed
                .as_ref()
                .and_then(|(id, _)| self.peers.get(id)?.exited);
            if let Some((id, reply)) = self.note(event) {
                if reply.round == round && targets.contains(&id) {
                    answers.entry(id).or_insert(Ok(reply));
                }
            }
            if let Some((id, why)) = closed {
                let why = match (exited_before, why) {
                    (Some(code), _) => format!("its program ended (status {code})"),
                    (None, Some(w)) => format!("disconnected ({w})"),
                    (None, None) => "disconnected".into(),
                };
                answers.entry(id).or_insert(Err(why));
            }
        }
        let elapsed = start.elapsed();
        for &id in targets {
            answers.entry(id).or_insert_with(|| {
                Err(format!(
                    "no answer to {name} within {:.1} s",
                    self.timeout.as_secs_f64()
                ))
            });
        }
        (answers, elapsed)
    }

    fn lease_ms(&self) -> u64 {
        (self.timeout + LEASE_MARGIN).as_millis() as u64
    }

    fn execute(&mut self, req: ClientRequest, rx: &Receiver<Event>) -> Report {
        let targets = self.sessions();
        let mut report = Report {
            sessions: targets.iter().map(|&id| self.session_report(id)).collect(),
            ..Default::default()
        };
        if targets.is_empty() && !matches!(req, ClientRequest::Status) {
            report.error = Some("no session is registered with this coordinator".into());
            report.lost = std::mem::take(&mut self.lost);
            return report;
        }
        match req {
            ClientRequest::Status => {
                let (answers, elapsed) = self.barrier(&targets, Action::Status, rx);
                self.record(&mut report, "status", &answers, elapsed);
                self.finish(&mut report, "status", &answers, "");
            }
            ClientRequest::Kill => {
                let (answers, elapsed) = self.barrier(&targets, Action::Kill, rx);
                self.record(&mut report, "kill", &answers, elapsed);
                self.finish(&mut report, "kill", &answers, "");
            }
            ClientRequest::Ping { rounds } => self.ping(&targets, rounds, &mut report, rx),
            ClientRequest::Checkpoint { kill } => self.checkpoint(&targets, kill, &mut report, rx),
        }
        let outcome = match &report.error {
            None => "done".to_string(),
            Some(e) => format!("failed: {e}"),
        };
        let what = match req {
            ClientRequest::Checkpoint { kill: true } => "checkpoint --kill".into(),
            ClientRequest::Checkpoint { kill: false } => "checkpoint".into(),
            ClientRequest::Status => "status".into(),
            ClientRequest::Kill => "kill".into(),
            ClientRequest::Ping { rounds } => format!("ping ({rounds} rounds)"),
        };
        let phases: Vec<String> = report
            .phases
            .iter()
            .map(|p| format!("{} {:.1} ms", p.name, p.ms))
            .collect();
        let phases = if phases.is_empty() {
            String::new()
        } else {
            format!(" [{}]", phases.join(", "))
        };
        let times = match (report.paused_ms, report.durable_ms) {
            (Some(p), Some(d)) => {
                format!(" (programs stopped up to {p:.1} ms, images durable after {d:.1} ms)")
            }
            _ => String::new(),
        };
        self.log(format!(
            "{what} of {} session(s){phases}: {outcome}{times}",
            targets.len()
        ));
        report.ok = report.error.is_none();
        report.lost = std::mem::take(&mut self.lost);
        report
    }

    fn session_report(&self, id: u64) -> SessionReport {
        let peer = self.peers.get(&id);
        SessionReport {
            id,
            peer: peer.map(|p| p.addr.to_string()).unwrap_or_default(),
            info: peer.and_then(|p| p.info.clone()).unwrap_or_default(),
            ok: true,
            ..Default::default()
        }
    }

    /// Adds a barrier's timings and answers to the report.
    fn record(&self, report: &mut Report, name: &str, answers: &Answers, elapsed: Duration) {
        report.phases.push(Phase {
            name: name.into(),
            ms: elapsed.as_secs_f64() * 1e3,
        });
        for s in &mut report.sessions {
            match answers.get(&s.id) {
                Some(Ok(r)) if r.ok => {
                    s.suspended = r.suspended;
                    s.phases.push(Phase {
                        name: name.into(),
                        ms: r.ms,
                    });
                    if r.image.is_some() {
                        s.image = r.image.clone();
                        s.image_bytes = r.image_bytes.or(s.image_bytes);
                        s.also = r.also.clone();
                    }
                    if r.paused_ms.is_some() {
                        s.paused_ms = r.paused_ms;
                        s.durable_ms = r.durable_ms;
                    }
                    s.warnings.extend(r.warnings.iter().cloned());
                    if r.status.is_some() {
                        s.status = r.status.clone();
                    }
                }
                Some(Ok(r)) => {
                    s.suspended = r.suspended;
                    s.ok = false;
                    s.error.get_or_insert_with(|| {
                        format!(
                            "{name} failed: {}",
                            r.error.as_deref().unwrap_or("no reason given")
                        )
                    });
                }
                Some(Err(e)) => {
                    s.ok = false;
                    s.error.get_or_insert_with(|| format!("{name}: {e}"));
                }
                None => {}
            }
        }
    }

    /// The names of the sessions that failed at a barrier, for one line.
    fn failures(&self, answers: &Answers, report: &Report) -> Vec<String> {
        answers
            .iter()
            .filter_map(|(id, a)| {
                let why = match a {
                    Ok(r) if r.ok => return None,
                    Ok(r) => r.error.clone().unwrap_or_else(|| "failed".into()),
                    Err(e) => e.clone(),
                };
                let who = report
                    .sessions
                    .iter()
                    .find(|s| s.id == *id)
                    .map(|s| format!("session {id}: {}", s.info.describe()))
                    .unwrap_or_else(|| format!("session {id}"));
                Some(format!("{who}: {why}"))
            })
            .collect()
    }

    /// Sets the report's error if any session failed at this barrier.
    fn finish(&self, report: &mut Report, name: &str, answers: &Answers, then: &str) -> bool {
        let failed = self.failures(answers, report);
        if failed.is_empty() {
            return true;
        }
        report
            .error
            .get_or_insert_with(|| format!("{name} failed for {}{then}", failed.join("; ")));
        false
    }

    fn checkpoint(
        &mut self,
        targets: &[u64],
        kill: bool,
        report: &mut Report,
        rx: &Receiver<Event>,
    ) {
        let lease_ms = self.lease_ms();
        let start = Instant::now();
        // Every endpoint the drain reports goes to every capture: the
        // connections between the programs are kept, the others close.
        let mut computation: Vec<Endpoint> = Vec::new();
        let mut links: Vec<UnixLink> = Vec::new();
        let mut dgram: Vec<DgramSocket> = Vec::new();
        for name in ["suspend", "drain", "capture"] {
            let action = match name {
                "suspend" => Action::Suspend { lease_ms },
                "drain" => Action::Drain { lease_ms },
                _ => Action::Capture {
                    lease_ms,
                    kill,
                    computation: std::mem::take(&mut computation),
                    links: std::mem::take(&mut links),
                    dgram: std::mem::take(&mut dgram),
                },
            };
            let (answers, elapsed) = self.barrier(targets, action, rx);
            self.record(report, name, &answers, elapsed);
            for a in answers.values().flatten() {
                computation.extend(a.endpoints.iter().cloned());
                links.extend(a.links.iter().cloned());
                dgram.extend(a.dgram.iter().cloned());
            }
            let all_ok = answers.values().all(|a| matches!(a, Ok(r) if r.ok));
            if !all_ok {
                // The checkpoint is off: nobody may stay stopped, and nobody
                // is killed even if --kill was asked.
                let (resumed, elapsed) = self.barrier(targets, Action::Resume, rx);
                self.record(report, "resume", &resumed, elapsed);
                let then = if kill {
                    "; no image set was completed, the other sessions were resumed (not killed)"
                } else {
                    "; no image set was completed, the other sessions were resumed"
                };
                self.finish(report, name, &answers, then);
                return;
            }
        }
        let (name, action) = if kill {
            ("kill", Action::Kill)
        } else {
            ("resume", Action::Resume)
        };
        // Answered once each session's images are durable.
        let (answers, elapsed) = self.barrier(targets, action, rx);
        self.record(report, name, &answers, elapsed);
        report.durable_ms = Some(start.elapsed().as_secs_f64() * 1e3);
        report.paused_ms = report
            .sessions
            .iter()
            .filter_map(|s| s.paused_ms)
            .reduce(f64::max);
        let then = if kill {
            "; the programs were killed"
        } else {
            "; the programs run on"
        };
        self.finish(report, name, &answers, then);
    }

    fn ping(&mut self, targets: &[u64], rounds: u32, report: &mut Report, rx: &Receiver<Event>) {
        let mut times = Vec::with_capacity(rounds as usize);
        for _ in 0..rounds.max(1) {
            let (answers, elapsed) = self.barrier(targets, Action::Ping, rx);
            if !self.finish(report, "ping", &answers, "") {
                self.record(report, "ping", &answers, elapsed);
                return;
            }
            times.push(elapsed.as_secs_f64() * 1e6);
        }
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        report.phases.push(Phase {
            name: "ping".into(),
            ms: times.iter().sum::<f64>() / 1e3,
        });
        report.ping = Some(PingStats {
            rounds: times.len() as u32,
            sessions: targets.len(),
            median_us: at(0.5),
            p99_us: at(0.99),
            min_us: at(0.0),
            max_us: at(1.0),
        });
    }
}

/// A restarted session waiting for other programs' restarts: its TCP ends
/// and unix connections.
#[derive(Debug, Clone)]
struct Waiting {
    id: u64,
    ends: Vec<Endpoint>,
    links: Vec<UnixLink>,
}

/// A group of waiting sessions whose connections all lead to each other
/// (the smallest such set that holds the first complete session), if any.
fn complete_group(waiting: &[Waiting]) -> Option<Vec<u64>> {
    // The session holding the other end of each connection of `w`.
    let partners = |w: &Waiting| -> Vec<Option<u64>> {
        let tcp = w.ends.iter().map(|e| {
            waiting
                .iter()
                .find(|o| o.ends.iter().any(|x| x.pairs_with(e)))
                .map(|o| o.id)
        });
        let unix = w.links.iter().map(|l| {
            waiting
                .iter()
                .find(|o| o.links.iter().any(|x| x.pairs_with(l)))
                .map(|o| o.id)
        });
        tcp.chain(unix).collect()
    };
    for start in waiting {
        // Follow the connections from `start`; the group is complete when
        // every end met has its partner among the waiting sessions.
        let mut group = vec![start.id];
        let mut k = 0;
        let mut complete = true;
        while k < group.len() {
            let id = group[k];
            k += 1;
            let Some(w) = waiting.iter().find(|w| w.id == id) else {
                continue;
            };
            for p in partners(w) {
                match p {
                    Some(p) if !group.contains(&p) => group.push(p),
                    Some(_) => {}
                    None => complete = false,
                }
            }
        }
        if complete {
            group.sort_unstable();
            return Some(group);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(local: &str, remote: &str) -> Endpoint {
        Endpoint {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            host: "h/1".into(),
        }
    }

    fn tcp(id: u64, ends: Vec<Endpoint>) -> Waiting {
        Waiting {
            id,
            ends,
            links: Vec::new(),
        }
    }

    #[test]
    fn groups_wait_for_every_peer() {
        let a = tcp(1, vec![end("127.0.0.1:1000", "127.0.0.1:2000")]);
        let b = tcp(
            2,
            vec![
                end("127.0.0.1:2000", "127.0.0.1:1000"),
                end("127.0.0.1:2001", "127.0.0.1:3000"),
            ],
        );
        let c = tcp(3, vec![end("127.0.0.1:3000", "127.0.0.1:2001")]);
        assert_eq!(complete_group(&[a.clone(), b.clone()]), None);
        assert_eq!(
            complete_group(&[a.clone(), b.clone(), c.clone()]),
            Some(vec![1, 2, 3])
        );
        let lone = tcp(4, vec![end("127.0.0.1:4000", "127.0.0.1:4001")]);
        assert_eq!(complete_group(&[lone, a.clone(), b.clone()]), None);
        // A unix connection joins the groups too.
        let link = |end, peer| UnixLink {
            end,
            peer,
            host: "h/1".into(),
        };
        let mut c2 = c.clone();
        c2.links.push(link(10, 11));
        let d = Waiting {
            id: 5,
            ends: Vec::new(),
            links: vec![link(11, 10)],
        };
        assert_eq!(complete_group(&[a.clone(), b.clone(), c2.clone()]), None);
        assert_eq!(complete_group(&[a, b, c2, d]), Some(vec![1, 2, 3, 5]));
    }
}
