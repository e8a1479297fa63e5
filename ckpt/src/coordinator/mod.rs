//! The coordinator of a computation spread over several sessions, possibly on
//! several hosts (DESIGN §3, last bullet; DMTCP's `dmtcp_coordinator`).
//!
//! `rewind coordinator` ([`server`]) listens on TCP. Sessions started with
//! `rewind launch --coordinator` or `rewind restart --coordinator` connect to
//! it ([`link`]), register, and obey its orders from their event loop;
//! `rewind command --coordinator` ([`client`]) asks it for a checkpoint of
//! every session, their status, a kill, or no-op barriers.
//!
//! The protocol is one JSON object per line, like the control socket's
//! ([`crate::control`]). Every connection starts with a [`Hello`] from the
//! peer and a [`Welcome`] from the coordinator. A peer connecting from a
//! non-loopback address must present the coordinator's token (printed when it
//! starts); a loopback peer may omit it, and a wrong token is always refused.
//! TCP_NODELAY is set on both ends of every connection: a barrier is a few
//! small messages each way, and Nagle's algorithm would hold each of them.
//!
//! A checkpoint is four barriers: `suspend` (each session stops every thread
//! of its program), `drain` (each reads the send queues of its program's TCP
//! connections, in repair mode, and reports the ends that leave its process
//! tree), `capture` (each writes its image, told every endpoint reported:
//! connections between the programs are kept, the others come back closed),
//! then `resume` or `kill`. A session that fails, disconnects or does not
//! answer within the timeout fails the checkpoint: the coordinator names it
//! and resumes all the others. A suspended session that hears nothing from
//! the coordinator for its lease, or loses the connection, resumes its program
//! by itself.
//!
//! Restarted sessions whose programs were connected to each other register
//! the TCP ends they wait for ([`SessionInfo::awaiting`]) and stay held; once
//! every end of a group has its other end registered, the coordinator sends
//! the group `reconnect` (each makes its ends, in repair mode, with the
//! addresses of hosts that changed, [`SessionInfo::moved`]) and then `resume`
//! (each lets its connections and program go).

pub mod client;
pub mod link;
pub mod server;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::control::Status;
pub use crate::sockets::{DgramSocket, Endpoint, UnixLink};
use crate::Error;

/// Version of the protocol, sent in every [`Hello`].
pub const PROTOCOL: u32 = 2;
/// Where `rewind coordinator` listens unless told otherwise (DMTCP's port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7779";
/// Environment variable holding the token, for peers given no `--token`.
pub const ENV_TOKEN: &str = "REWIND_TOKEN";
/// Default time a session has to answer one barrier.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest line either side accepts (a status with a long argv fits).
pub const MAX_LINE: u64 = 1 << 20;
/// How long a peer has to say hello, and the coordinator to welcome it.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to the coordinator may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A `launch`/`restart` session: it registers and obeys orders.
    Session,
    /// A `rewind command`: one request, one report.
    Client,
}

/// The first line of every connection, from the peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The coordinator's answer to a [`Hello`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The peer's number at this coordinator.
    #[serde(default)]
    pub id: u64,
    /// How long the coordinator waits for a session at each barrier.
    #[serde(default)]
    pub timeout_ms: u64,
}

/// What a session tells the coordinator about itself when it registers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The program's name (comm).
    pub program: String,
    pub argv: Vec<String>,
    /// The pid the program sees, and the kernel's.
    pub vpid: i32,
    pub real_pid: i32,
    pub hostname: String,
    /// Where its images go (absolute when it could be resolved).
    pub ckpt_dir: String,
    /// Its local control socket (`rewind command --ckpt-dir` still works).
    pub control_socket: String,
    pub restarted: bool,
    /// Restarted: the TCP ends of its program whose other ends belong to
    /// other programs of the computation; it is held until they are all
    /// back (see [`Action::Reconnect`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub awaiting: Vec<Endpoint>,
    /// Restarted: its program's unix connections to other programs of the
    /// computation (made with theirs; held like `awaiting`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub awaiting_links: Vec<UnixLink>,
    /// Restarted on another host: the addresses of the old host its
    /// connections used, and the ones of this host that stand for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<(IpAddr, IpAddr)>,
}

impl SessionInfo {
    /// `loop_heap (pid 1234) on host`, for messages.
    pub fn describe(&self) -> String {
        format!("{} (pid {}) on {}", self.program, self.vpid, self.hostname)
    }
}

/// What the coordinator asks of a session at one barrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Action {
    /// Stop every thread of the program and keep it stopped. Without news
    /// from the coordinator for `lease_ms`, the session resumes it.
    Suspend { lease_ms: u64 },
    /// Read the send queues of the program's TCP connections (repair
    /// mode) and say which connections lead out of its process tree
    /// ([`Reply::endpoints`]); every session does this before any reads a
    /// receive queue, so no byte in flight between programs is lost.
    Drain { lease_ms: u64 },
    /// Capture the (suspended) program; it stays suspended. Its images
    /// are written from copies of its processes once it is let go, and
    /// the answer to the `Resume` or `Kill` that follows names them once
    /// they are durable; with `kill` (a `Kill` follows: the program never
    /// runs on), they are written before this is answered, the program
    /// stopped. `computation`: every endpoint the sessions reported at the
    /// drain; a connection whose other end is among them is kept, any other
    /// comes back closed.
    Capture {
        lease_ms: u64,
        #[serde(default)]
        kill: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        computation: Vec<Endpoint>,
        /// Every unix connection the sessions reported at the drain.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        links: Vec<UnixLink>,
        /// Every unix datagram socket the sessions reported at the drain:
        /// the sockets of different programs that exchanged datagrams are
        /// linked, so that their restarts put the datagrams back.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        dgram: Vec<DgramSocket>,
    },
    /// Restarted sessions whose connections wait for each other, all
    /// registered now: make those connections (in repair mode), with the
    /// addresses `moved` (old host's, new host's). A `Resume` follows once
    /// every one of them has.
    Reconnect {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        moved: Vec<(IpAddr, IpAddr)>,
    },
    /// Let the program run on (answered once the images of the capture
    /// before, if any, are durable).
    Resume,
    /// Kill the program (the session then ends; answered as `Resume`).
    Kill,
    /// Describe the program.
    Status,
    /// A no-op barrier: answer at once.
    Ping,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Suspend { .. } => "suspend",
            Action::Drain { .. } => "drain",
            Action::Capture { .. } => "capture",
            Action::Reconnect { .. } => "reconnect",
            Action::Resume => "resume",
            Action::Kill => "kill",
            Action::Status => "status",
            Action::Ping => "ping",
        }
    }
}

/// One order, coordinator to session. `round` numbers barriers; answers to
/// an older round are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub round: u64,
    #[serde(flatten)]
    pub action: Action,
}

/// A session's answer to an [`Order`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub round: u64,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Time the session spent on the order.
    #[serde(default)]
    pub ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Bytes of all its images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_bytes: Option<u64>,
    /// The images of the other processes of its tree (the program forked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Whether the program is suspended after the order.
    #[serde(default)]
    pub suspended: bool,
    /// A checkpoint: how long its program was stopped (from the suspend to
    /// the resume or kill), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_ms: Option<f64>,
    /// A checkpoint: from the suspend until its images were durable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable_ms: Option<f64>,
    /// After a drain: the program's TCP ends whose other end is outside
    /// its process tree.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    /// After a drain: the program's unix connections whose other end is
    /// alive outside its process tree.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<UnixLink>,
    /// After a drain: the program's unix datagram sockets (named,
    /// connected or with datagrams waiting, and from whom).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dgram: Vec<DgramSocket>,
}

/// Messages from a session to the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
// One message at a time, serialized at once: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum SessionMsg {
    Register(SessionInfo),
    Reply(Reply),
    /// The program ended (exit code as a shell reports it); the session
    /// closes the connection next.
    Exited {
        code: i32,
    },
}

/// What `rewind command --coordinator` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum ClientRequest {
    /// Checkpoint every session (suspend, capture, then resume or kill).
    Checkpoint {
        kill: bool,
    },
    Status,
    Kill,
    /// `rounds` no-op barriers across every session, timed.
    Ping {
        rounds: u32,
    },
}

/// One barrier of a request, as the coordinator timed it: from sending the
/// first order to receiving the last answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub ms: f64,
}

/// How one session did in a request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionReport {
    pub id: u64,
    /// Its address as the coordinator sees it.
    pub peer: String,
    pub info: SessionInfo,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Time the session itself spent in each phase, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Bytes of all its images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_bytes: Option<u64>,
    /// The images of the other processes of its tree (the program forked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Whether its program was suspended after its last answer.
    #[serde(default)]
    pub suspended: bool,
    /// A checkpoint: how long its program was stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_ms: Option<f64>,
    /// A checkpoint: from the suspend until its images were durable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable_ms: Option<f64>,
}

/// Round trips of no-op barriers, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PingStats {
    pub rounds: u32,
    pub sessions: usize,
    pub median_us: f64,
    pub p99_us: f64,
    pub min_us: f64,
    pub max_us: f64,
}

/// The coordinator's answer to a [`ClientRequest`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub ok: bool,
    /// One line naming every session that failed, and what happened next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub sessions: Vec<SessionReport>,
    /// Each barrier, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<PingStats>,
    /// Sessions that were lost since the last request (disconnected without
    /// saying their program ended), as `[id] program (pid) on host`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<String>,
    /// A checkpoint: the longest any program was stopped (each session's
    /// own measure, from its suspend to its resume or kill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_ms: Option<f64>,
    /// A checkpoint: from the first suspend order until every image was
    /// durable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable_ms: Option<f64>,
}

/// Whether a peer at `addr` may connect presenting `offered` to a
/// coordinator whose token is `token`: a loopback peer may omit the token, a
/// peer from anywhere else must present it, and a wrong token is refused from
/// anywhere. Returns why not.
pub fn authorize(addr: IpAddr, offered: Option<&str>, token: &str) -> Result<(), String> {
    match offered {
        Some(t) if same_secret(t, token) => Ok(()),
        Some(_) => Err("wrong token".into()),
        None if is_loopback(addr) => Ok(()),
        None => Err(format!(
            "a token is required from {addr} (not a loopback address): pass --token or set {ENV_TOKEN}"
        )),
    }
}

/// Loopback, including IPv4 loopback mapped into IPv6.
pub fn is_loopback(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random token: 128 bits from /dev/urandom, in hex.
pub fn new_token() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::io("/dev/urandom", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Resolves `HOST:PORT` (`[::1]:7779` for IPv6), with an error a user can act
/// on; `what` names the option for messages.
pub fn resolve(addr: &str, what: &str) -> Result<Vec<SocketAddr>, Error> {
    let bad = || {
        Error::Usage(format!(
            "bad {what} address {addr:?}: expected HOST:PORT, like 127.0.0.1:7779"
        ))
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| Error::Usage(format!("cannot resolve the {what} address {addr:?}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(Error::Usage(format!(
            "cannot resolve the {what} address {addr:?}: no address found"
        )));
    }
    Ok(addrs)
}

/// Connects to the coordinator at `addr` as `role`, says hello and reads the
/// welcome. The stream has TCP_NODELAY and no timeouts left set.
pub fn connect(
    addr: &str,
    token: Option<&str>,
    role: Role,
) -> Result<(TcpStream, BufReader<TcpStream>, Welcome), Error> {
    let mut last = None;
    let mut stream = None;
    for a in resolve(addr, "coordinator")? {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let unreachable = |e: &dyn std::fmt::Display| {
        Error::Usage(format!("cannot reach the coordinator at {addr}: {e}"))
    };
    let stream = match (stream, last) {
        (Some(s), _) => s,
        (None, Some(e)) => return Err(unreachable(&e)),
        (None, None) => return Err(unreachable(&"no address")),
    };
    let io = |e: std::io::Error| unreachable(&e);
    stream.set_nodelay(true).map_err(io)?;
    stream.set_read_timeout(Some(HELLO_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(HELLO_TIMEOUT)).map_err(io)?;
    let mut writer = stream.try_clone().map_err(io)?;
    send_line(
        &mut writer,
        &Hello {
            protocol: PROTOCOL,
            role,
            token: token.map(str::to_string),
        },
    )
    .map_err(io)?;
    let mut reader = BufReader::new(stream);
    let line = match read_line(&mut reader) {
        Ok(Some(line)) => line,
        Ok(None) => {
            return Err(Error::Usage(format!(
                "the coordinator at {addr} closed the connection without welcoming us (is it a rewind coordinator?)"
            )))
        }
        Err(e) => return Err(unreachable(&e)),
    };
    let welcome: Welcome = serde_json::from_str(&line).map_err(|e| {
        Error::Usage(format!(
            "{addr} does not speak the coordinator protocol (is it a rewind coordinator?): {e}"
        ))
    })?;
    if !welcome.ok {
        return Err(Error::Usage(format!(
            "the coordinator at {addr} refused us: {}",
            welcome.error.as_deref().unwrap_or("no reason given")
        )));
    }
    writer.set_read_timeout(None).map_err(io)?;
    writer.set_write_timeout(None).map_err(io)?;
    Ok((writer, reader, welcome))
}

/// Writes `msg` as one JSON line.
pub fn send_line<T: Serialize>(w: &mut impl Write, msg: &T) -> std::io::Result<()> {
    let mut text = serde_json::to_string(msg).map_err(std::io::Error::other)?;
    text.push('\n');
    w.write_all(text.as_bytes())
}

/// Reads one line of at most [`MAX_LINE`] bytes, without its newline; `None`
/// at the end of the stream.
pub fn read_line(r: &mut impl BufRead) -> std::io::Result<Option<String>> {
    let mut line = String::new();
    let n = r.by_ref().take(MAX_LINE).read_line(&mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with('\n') {
        if n as u64 >= MAX_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "line too long",
            ));
        }
        // The peer closed the connection in the middle of a line.
        return Ok(None);
    }
    line.pop();
    Ok(Some(line))
}

/// The token a command should present: `--token`, else `$REWIND_TOKEN`.
pub fn token_from(arg: Option<String>) -> Option<String> {
    arg.or_else(|| std::env::var(ENV_TOKEN).ok().filter(|t| !t.is_empty()))
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const TOKEN: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn loopback_peers_may_omit_the_token() {
        for a in [
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(127, 3, 2, 1)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped()),
        ] {
            assert_eq!(authorize(a, None, TOKEN), Ok(()), "{a}");
            assert_eq!(authorize(a, Some(TOKEN), TOKEN), Ok(()), "{a}");
            assert!(authorize(a, Some("bad"), TOKEN).is_err(), "{a}");
        }
    }

    #[test]
    fn other_peers_need_the_right_token() {
        for a in [
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6("fd00::2".parse().unwrap()),
            IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()),
        ] {
            let missing = authorize(a, None, TOKEN).unwrap_err();
            assert!(missing.contains("token is required"), "{a}: {missing}");
            assert_eq!(
                authorize(a, Some(&TOKEN[1..]), TOKEN),
                Err("wrong token".into())
            );
            assert_eq!(
                authorize(a, Some(&TOKEN.replace('f', "e")), TOKEN),
                Err("wrong token".into())
            );
            assert_eq!(authorize(a, Some(""), TOKEN), Err("wrong token".into()));
            assert_eq!(authorize(a, Some(TOKEN), TOKEN), Ok(()));
        }
    }

    #[test]
    fn tokens_are_128_bit_hex_and_differ() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn addresses_are_checked() {
        for bad in ["", "nonsense", "host:", ":7779", "1.2.3.4:99999", "h:port"] {
            let e = resolve(bad, "coordinator").unwrap_err().to_string();
            assert!(e.contains("expected HOST:PORT"), "{bad}: {e}");
        }
        assert_eq!(resolve("127.0.0.1:7779", "x").unwrap().len(), 1);
        assert!(resolve("[::1]:7779", "x").is_ok());
    }

    #[test]
    fn messages_round_trip() {
        let o = Order {
            round: 3,
            action: Action::Suspend { lease_ms: 5 },
        };
        let text = serde_json::to_string(&o).unwrap();
        assert_eq!(text, r#"{"round":3,"do":"suspend","lease_ms":5}"#);
        assert_eq!(serde_json::from_str::<Order>(&text).unwrap(), o);
        let m = SessionMsg::Register(SessionInfo {
            program: "p".into(),
            vpid: 5,
            ..Default::default()
        });
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<SessionMsg>(&text).unwrap(), m);
        let r = ClientRequest::Checkpoint { kill: true };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<ClientRequest>(&text).unwrap(), r);
    }

    #[test]
    fn long_lines_are_refused() {
        let long = vec![b'x'; MAX_LINE as usize + 10];
        let mut r = std::io::Cursor::new(long);
        assert!(read_line(&mut r).is_err());
        let mut r = std::io::Cursor::new(b"ab\ncd".to_vec());
        assert_eq!(read_line(&mut r).unwrap().as_deref(), Some("ab"));
        assert_eq!(read_line(&mut r).unwrap(), None);
    }
}
