//! Sockets across a checkpoint and a restart (issue 7): connections between
//! processes of the program's tree (unix socket pairs, connections over
//! named unix sockets, TCP over any address), listeners and bound sockets,
//! with what is in flight in them.
//!
//! At a checkpoint the session takes a [`Census`] of every socket of every
//! process of the tree, through copies of their descriptors
//! (`pidfd_getfd`): which ones are connected to which, by inode (unix
//! sockets, from the kernel's socket diagnostics) or by address pair (TCP).
//! Then, in two phases, it reads what they hold without taking anything:
//! first every TCP send queue ([`Census::freeze`], which puts the TCP ends
//! in repair mode), then every receive queue and the rest
//! ([`Census::capture`]); see [`tcp`] for why that order loses no byte. The
//! file plugin records each descriptor of a socket as
//! [`FdKind::Socket`](crate::image::format::FdKind::Socket). After the
//! capture the sockets leave repair mode ([`Census::thaw`]) when the program
//! goes on, or are closed in repair mode (silently: no FIN, no reset) when
//! it is killed.
//!
//! At restart rewind rebuilds every socket of the images itself
//! ([`Rebuilt::make`]): listeners bound again, unix connections made again
//! (through the restored listener when there is one, so that names stay what
//! `getsockname`/`getpeername` said), their queues refilled, TCP ends made
//! in repair mode with their sequence numbers and queues. Each restored
//! process then takes its descriptors from rewind (an injected
//! `pidfd_getfd`, see `fds`), and once every process is restored the TCP
//! ends leave repair mode together ([`Rebuilt::release`]). TCP ends whose
//! other end belongs to another program of a coordinator wait for that
//! program's restart ([`Rebuilt::reconnect`], driven by the coordinator).
//! A connection whose other end is not part of the checkpoint comes back
//! closed, after delivering what had arrived, with a warning.

pub mod addresses;
pub mod tcp;
pub mod udp;
pub mod unix;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use libc::pid_t;
use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::image::format::{
    DgramLink, FdKind, PeerPlace, ProcessState, SockOpt, SocketState, TcpConnection, UnixEnd,
};
use crate::sys::net;
use crate::unix_sockets::UnixSocket;
use crate::Error;

const SO_PROTOCOL: i32 = 38;
const SO_DOMAIN: i32 = 39;

/// One end of a TCP connection, as the coordinator matches them: a
/// connection between two programs is two endpoints, each the other
/// reversed. `host` tells network namespaces apart, for loopback addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub host: String,
}

impl Endpoint {
    /// Whether `other` is the other end of this one's connection.
    pub fn pairs_with(&self, other: &Endpoint) -> bool {
        same(&self.local, &other.remote)
            && same(&self.remote, &other.local)
            && (!self.local.ip().to_canonical().is_loopback() || self.host == other.host)
    }
}

/// The same address and port, an IPv4-mapped IPv6 address being its IPv4
/// one (a dual-stack listener's connections from IPv4 clients).
fn same(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.ip().to_canonical() == b.ip().to_canonical() && a.port() == b.port()
}

/// A unix connection between two programs of a coordinator, seen from one
/// end: the two ends are each other's `end` and `peer` (inodes at the
/// checkpoint), on the same `host`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UnixLink {
    pub end: u64,
    pub peer: u64,
    pub host: String,
}

impl UnixLink {
    pub fn pairs_with(&self, other: &UnixLink) -> bool {
        self.end == other.peer && self.peer == other.end && self.host == other.host
    }
}

/// A unix datagram socket of a program of a coordinator, as its drain
/// reports it: the other programs find in these the sockets they
/// exchanged datagrams with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DgramSocket {
    pub ino: u64,
    /// Its name (empty if unnamed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name: Vec<u8>,
    pub host: String,
    /// The socket it is connected to (0: none).
    #[serde(default)]
    pub peer: u64,
    /// The names of the senders of the datagrams waiting at it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Vec<u8>>,
    /// A UDP socket rather than a unix one: its address and the senders'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpSeen>,
}

/// A UDP socket of a program of a coordinator, as its drain reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UdpSeen {
    /// The address it is bound to (None: no port yet).
    pub local: Option<SocketAddr>,
    /// The senders of the datagrams waiting at it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<SocketAddr>,
}

impl DgramSocket {
    /// Whether this socket takes `other` at restart (it has datagrams from
    /// it, or is connected to it), and whether it gives itself to it (the
    /// other way round): `a.roles(b)` is `b.roles(a)` swapped.
    pub fn roles(&self, other: &DgramSocket) -> (bool, bool) {
        let takes = (self.peer != 0 && self.peer == other.ino)
            || (!other.name.is_empty() && self.from.contains(&other.name));
        let gives = (other.peer != 0 && other.peer == self.ino)
            || (!self.name.is_empty() && other.from.contains(&self.name));
        (takes, gives)
    }
}

/// What the programs of a coordinator's computation reported at its drain:
/// the connections between them are kept, the others close; datagram
/// sockets that exchanged datagrams are linked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Computation {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<Endpoint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unix: Vec<UnixLink>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dgram: Vec<DgramSocket>,
}

/// This network namespace, as `hostname/inode of its netns`.
pub fn host_id() -> String {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0);
    format!("{}/{ns}", crate::coordinator::hostname())
}

/// Whether the images have TCP connections to other programs over
/// addresses that are not loopback ones: restarted on another host, those
/// addresses change, and the program's view of them needs translating
/// ([`addresses`]).
pub fn may_move(states: &[ProcessState]) -> bool {
    states.iter().flat_map(|s| &s.fds).any(|f| {
        matches!(&f.kind, FdKind::Socket { socket: SocketState::Tcp(c), .. }
            if matches!(c.peer, PeerPlace::Computation { .. })
                && !c.local.ip().to_canonical().is_loopback())
    })
}

/// For a program restarted on another host: each address its awaiting
/// TCP ends used locally that this host lacks, with the address of this
/// host that stands for it (the first one of the same family that is
/// neither loopback nor link-local).
pub fn moved_addresses(awaiting: &[Endpoint]) -> Vec<(IpAddr, IpAddr)> {
    let here: Vec<IpAddr> = net::interface_addresses()
        .unwrap_or_default()
        .iter()
        .filter_map(|a| socket_addr(a).map(|s| s.ip()))
        .collect();
    let usable = |a: &IpAddr| {
        !a.is_loopback()
            && match a {
                IpAddr::V4(v) => !v.is_link_local(),
                IpAddr::V6(v) => (v.segments()[0] & 0xffc0) != 0xfe80,
            }
    };
    let mut out: Vec<(IpAddr, IpAddr)> = Vec::new();
    for e in awaiting {
        let old = e.local.ip();
        if old.is_loopback() || old.is_unspecified() || here.contains(&old) {
            continue;
        }
        if out.iter().any(|(o, _)| *o == old) {
            continue;
        }
        if let Some(new) = here
            .iter()
            .find(|a| usable(a) && a.is_ipv4() == old.is_ipv4())
        {
            out.push((old, *new));
        }
    }
    out
}

/// A raw `sockaddr_in`/`sockaddr_in6` as an address (flow label dropped).
pub fn socket_addr(raw: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([*raw.first()?, *raw.get(1)?]);
    let port = u16::from_be_bytes([*raw.get(2)?, *raw.get(3)?]);
    match i32::from(family) {
        libc::AF_INET => {
            let a: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::from(a), port))
        }
        libc::AF_INET6 => {
            let a: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(raw.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                a.into(),
                port,
                0,
                scope,
            )))
        }
        _ => None,
    }
}

/// The raw `sockaddr` of an address.
pub fn sockaddr(addr: &SocketAddr) -> Vec<u8> {
    match addr {
        SocketAddr::V4(a) => {
            let mut s = (libc::AF_INET as u16).to_ne_bytes().to_vec();
            s.extend_from_slice(&a.port().to_be_bytes());
            s.extend_from_slice(&a.ip().octets());
            s.extend_from_slice(&[0; 8]);
            s
        }
        SocketAddr::V6(a) => {
            let mut s = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
            s.extend_from_slice(&a.port().to_be_bytes());
            s.extend_from_slice(&a.flowinfo().to_be_bytes());
            s.extend_from_slice(&a.ip().octets());
            s.extend_from_slice(&a.scope_id().to_ne_bytes());
            s
        }
    }
}

fn family(addr: &SocketAddr) -> i32 {
    match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    }
}

/// Socket options kept across a restart.
pub(crate) struct SockOpts;

/// (level, option, size of its value, set before bind).
pub(crate) type OptSpec = (i32, i32, usize, bool);

impl SockOpts {
    const COMMON: &'static [OptSpec] = &[
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 4, false),
        (libc::SOL_SOCKET, libc::SO_LINGER, 8, false),
        (libc::SOL_SOCKET, libc::SO_RCVLOWAT, 4, false),
        (libc::SOL_SOCKET, libc::SO_RCVTIMEO, 16, false),
        (libc::SOL_SOCKET, libc::SO_SNDTIMEO, 16, false),
        (libc::SOL_SOCKET, libc::SO_PRIORITY, 4, false),
        (libc::SOL_SOCKET, tcp::SO_PEEK_OFF, 4, false),
    ];
    pub const TCP: &'static [OptSpec] = &[
        (libc::SOL_SOCKET, libc::SO_REUSEADDR, 4, true),
        (libc::SOL_SOCKET, libc::SO_REUSEPORT, 4, true),
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 4, true),
        (libc::SOL_SOCKET, libc::SO_OOBINLINE, 4, false),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY, 4, false),
        (libc::IPPROTO_TCP, libc::TCP_CORK, 4, false),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 4, false),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 4, false),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 4, false),
        (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 4, false),
        (libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, 4, false),
        (libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT, 4, false),
    ];
    pub const UNIX: &'static [OptSpec] = &[(libc::SOL_SOCKET, libc::SO_PASSCRED, 4, false)];

    /// The options of `list` (and the common ones) that `fd` has, with
    /// its buffer sizes when the program fixed them.
    pub fn read(fd: RawFd, list: &[OptSpec]) -> Vec<SockOpt> {
        let mut out: Vec<SockOpt> = list
            .iter()
            .chain(Self::COMMON)
            .filter_map(|&(level, name, size, _)| {
                let value = net::getsockopt(fd, level, name, size).ok()?;
                Some(SockOpt { level, name, value })
            })
            .collect();
        let lock = net::getsockopt_int(fd, libc::SOL_SOCKET, 72).unwrap_or(0);
        for (bit, get, force) in [(1, libc::SO_SNDBUF, 32), (2, libc::SO_RCVBUF, 33)] {
            if lock & bit != 0 {
                if let Ok(v) = net::getsockopt_int(fd, libc::SOL_SOCKET, get) {
                    out.push(SockOpt {
                        level: libc::SOL_SOCKET,
                        name: force,
                        value: (v / 2).to_ne_bytes().to_vec(),
                    });
                }
            }
        }
        out
    }

    fn before_bind(o: &SockOpt) -> bool {
        Self::TCP
            .iter()
            .any(|&(l, n, _, pre)| pre && l == o.level && n == o.name)
    }

    /// Set the options that go before bind (`pre`) or the others.
    pub fn apply(fd: RawFd, opts: &[SockOpt], pre: bool) {
        for o in opts.iter().filter(|o| Self::before_bind(o) == pre) {
            if let Err(e) = net::setsockopt(fd, o.level, o.name, &o.value) {
                tracing::debug!("setsockopt({}, {}): {e}", o.level, o.name);
            }
        }
    }
}

fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// One socket of the program, through rewind's copy of it.
struct Sock {
    fd: OwnedFd,
    /// The first descriptor that holds it: (pid, fd), for messages.
    first: (pid_t, i32),
    domain: i32,
    ty: i32,
    protocol: i32,
    tcp: Option<TcpEnd>,
    state: Option<SocketState>,
}

struct TcpEnd {
    local: SocketAddr,
    remote: Option<SocketAddr>,
    state: u8,
    frozen: Option<tcp::Frozen>,
}

impl Sock {
    fn is_tcp(&self) -> bool {
        matches!(self.domain, libc::AF_INET | libc::AF_INET6)
            && self.ty == libc::SOCK_STREAM
            && self.protocol == libc::IPPROTO_TCP
    }
}

/// Every socket of a program's processes, read for a checkpoint.
pub struct Census {
    socks: BTreeMap<u64, Sock>,
    /// Unix sockets of this network namespace, by inode.
    diag: HashMap<u64, UnixSocket>,
    host: String,
    /// Real addresses and the ones the program sees, for a program
    /// restarted on another host ([`addresses`]).
    shown: HashMap<IpAddr, IpAddr>,
    /// TCP client ends whose connection a listener of the census has not
    /// accepted yet, nothing sent on it: (listener, position in its queue).
    pending: HashMap<u64, (u64, u32)>,
    warnings: Vec<String>,
}

impl Census {
    /// Find every socket the processes `pids` hold.
    pub fn take(pids: &[pid_t]) -> Result<Census, Error> {
        let mut socks: BTreeMap<u64, Sock> = BTreeMap::new();
        let mut any_unix = false;
        for &pid in pids {
            let dir = format!("/proc/{pid}/fd");
            let mut fds: Vec<i32> = std::fs::read_dir(&dir)
                .map_err(|e| Error::io(&dir, e))?
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect();
            fds.sort_unstable();
            for fd in fds {
                let Some(ino) = std::fs::read_link(format!("{dir}/{fd}"))
                    .ok()
                    .and_then(|l| socket_inode(&l.to_string_lossy()))
                else {
                    continue;
                };
                if socks.contains_key(&ino) {
                    continue;
                }
                let copy = match crate::sys::process::pidfd_getfd(pid, fd) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!("pidfd_getfd({pid}, {fd}): {e}");
                        continue;
                    }
                };
                let raw = copy.as_raw_fd();
                let opt = |o| net::getsockopt_int(raw, libc::SOL_SOCKET, o).unwrap_or(-1);
                let mut sock = Sock {
                    domain: opt(SO_DOMAIN),
                    ty: opt(libc::SO_TYPE),
                    protocol: opt(SO_PROTOCOL),
                    fd: copy,
                    first: (pid, fd),
                    tcp: None,
                    state: None,
                };
                if sock.is_tcp() {
                    let local = net::sockname(raw).ok().and_then(|a| socket_addr(&a));
                    if let (Some(local), Ok(state)) = (local, tcp::state(raw)) {
                        sock.tcp = Some(TcpEnd {
                            local,
                            remote: net::peername(raw).ok().and_then(|a| socket_addr(&a)),
                            state,
                            frozen: None,
                        });
                    }
                }
                any_unix |= sock.domain == libc::AF_UNIX;
                socks.insert(ino, sock);
            }
        }
        let mut warnings = Vec::new();
        let diag = if any_unix {
            crate::unix_sockets::all().unwrap_or_else(|e| {
                // Without the diagnostics unix sockets come back closed.
                warnings.push(format!(
                    "cannot list unix sockets ({e}): they will be closed connections after restart"
                ));
                HashMap::new()
            })
        } else {
            HashMap::new()
        };
        Ok(Census {
            socks,
            diag,
            host: host_id(),
            shown: HashMap::new(),
            pending: HashMap::new(),
            warnings,
        })
    }

    /// Find the TCP client ends whose connection waits in the accept queue
    /// of a listener of the census (the kernel lists the other end with no
    /// inode: no process holds it), with nothing sent either way; ordered
    /// per listener by the time since their handshake (oldest first, to the
    /// millisecond), then by socket inode (creation order).
    fn find_pending(&mut self) {
        let listeners: Vec<(u64, SocketAddr)> = self
            .socks
            .iter()
            .filter_map(|(&ino, s)| {
                let t = s.tcp.as_ref()?;
                (t.state == tcp::LISTEN).then_some((ino, t.local))
            })
            .collect();
        let Some(pid) = self.socks.values().map(|s| s.first.0).next() else {
            return;
        };
        if listeners.is_empty() {
            return;
        }
        let listed = tcp::listed(pid);
        let mut found: Vec<(u64, u32, u64)> = Vec::new();
        for (&ino, s) in &self.socks {
            let Some(t) = s.tcp.as_ref() else { continue };
            let Some(remote) = t.remote else { continue };
            if t.state != tcp::ESTABLISHED || self.tcp_peer(t).is_some() {
                continue;
            }
            let Some(&(listener, _)) = listeners.iter().find(|(_, l)| {
                l.port() == remote.port()
                    && (l.ip().is_unspecified()
                        || l.ip().to_canonical() == remote.ip().to_canonical())
            }) else {
                continue;
            };
            let waiting = listed.iter().any(|e| {
                same(&e.local, &remote)
                    && same(&e.remote, &t.local)
                    && e.inode == 0
                    && e.state == tcp::ESTABLISHED
                    && e.rx_queue == 0
                    && e.tx_queue == 0
            });
            if waiting && tcp::quiet(s.fd.as_raw_fd()) {
                found.push((listener, tcp::last_ack_recv(s.fd.as_raw_fd()), ino));
            }
        }
        found.sort_by_key(|&(l, age, ino)| (l, std::cmp::Reverse(age), ino));
        let mut at: HashMap<u64, u32> = HashMap::new();
        for (listener, _, ino) in found {
            let n = at.entry(listener).or_insert(0);
            self.pending.insert(ino, (listener, *n));
            *n += 1;
        }
    }

    /// Record connections with the addresses the program sees (real ones
    /// mapped through `shown`), so that they survive the next restart too.
    pub fn show_addresses(&mut self, shown: HashMap<IpAddr, IpAddr>) {
        self.shown = shown;
    }

    /// The inode of the TCP end at the other side of `end`, if the census
    /// holds it.
    fn tcp_peer(&self, end: &TcpEnd) -> Option<u64> {
        let remote = end.remote?;
        self.socks.iter().find_map(|(&ino, s)| {
            let t = s.tcp.as_ref()?;
            (t.remote.is_some_and(|r| same(&r, &end.local))
                && same(&t.local, &remote)
                && tcp::restorable(t.state)
                && tcp::restorable(end.state))
            .then_some(ino)
        })
    }

    /// Phase 1: put the TCP ends whose other end is in the census (and,
    /// with `external`, every other connected one: a coordinator decides
    /// later which of those belong to its computation) in repair mode and
    /// read their send queues.
    pub fn freeze(&mut self, external: bool) {
        self.find_pending();
        let chosen: Vec<u64> = self
            .socks
            .iter()
            .filter_map(|(&ino, s)| {
                let t = s.tcp.as_ref()?;
                (tcp::restorable(t.state)
                    && t.remote.is_some()
                    && (external || self.tcp_peer(t).is_some() || self.pending.contains_key(&ino)))
                .then_some(ino)
            })
            .collect();
        for ino in chosen {
            let Some(s) = self.socks.get_mut(&ino) else {
                continue;
            };
            let raw = s.fd.as_raw_fd();
            let Some(t) = s.tcp.as_mut() else { continue };
            match tcp::freeze(raw) {
                Ok(f) => t.frozen = Some(f),
                Err(e) => self.warnings.push(format!(
                    "{} (fd {} of process {}): TCP_REPAIR failed ({e}); it will be a closed connection after restart",
                    tcp::describe(&t.local, &t.remote.unwrap_or(t.local)),
                    s.first.1,
                    s.first.0
                )),
            }
        }
    }

    /// The frozen TCP ends whose other end is not in the census, for a
    /// coordinator to match with other programs'.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.socks
            .iter()
            .filter_map(|(ino, s)| {
                let t = s.tcp.as_ref()?;
                (t.frozen.is_some()
                    && self.tcp_peer(t).is_none()
                    && !self.pending.contains_key(ino))
                .then(|| Endpoint {
                    local: t.local,
                    remote: t.remote.unwrap_or(t.local),
                    host: self.host.clone(),
                })
            })
            .collect()
    }

    /// The unix connections (stream, seqpacket) whose other end is alive
    /// outside the census, for a coordinator to match with other programs'.
    pub fn unix_links(&self) -> Vec<UnixLink> {
        self.socks
            .iter()
            .filter(|(_, s)| s.domain == libc::AF_UNIX && s.ty != libc::SOCK_DGRAM)
            .filter_map(|(&ino, _)| {
                let d = self.diag.get(&ino)?;
                (d.peer != 0
                    && !self.socks.contains_key(&d.peer)
                    && self.diag.contains_key(&d.peer))
                .then(|| UnixLink {
                    end: ino,
                    peer: d.peer,
                    host: self.host.clone(),
                })
            })
            .collect()
    }

    /// The unix datagram sockets (names, peers, the senders' names of the
    /// datagrams waiting at them), for a coordinator to tell the other
    /// programs.
    pub fn dgram_sockets(&self) -> Vec<DgramSocket> {
        self.socks
            .iter()
            .filter(|(_, s)| s.domain == libc::AF_UNIX && s.ty == libc::SOCK_DGRAM)
            .filter_map(|(&ino, s)| {
                let d = self.diag.get(&ino)?;
                let mut from: Vec<Vec<u8>> = Vec::new();
                if let Ok((queued, _)) = unix::peek_all(s.fd.as_raw_fd(), libc::SOCK_DGRAM) {
                    for m in queued {
                        if !m.from.is_empty() && !from.contains(&m.from) {
                            from.push(m.from);
                        }
                    }
                }
                Some(DgramSocket {
                    ino,
                    name: d.name.clone().unwrap_or_default(),
                    host: self.host.clone(),
                    peer: d.peer,
                    from,
                    udp: None,
                })
            })
            .chain(self.socks.iter().filter_map(|(&ino, s)| {
                if !udp::is_udp(s.domain, s.ty, s.protocol) {
                    return None;
                }
                let raw = s.fd.as_raw_fd();
                let mut from: Vec<SocketAddr> = Vec::new();
                for d in udp::peek_all(raw).unwrap_or_default() {
                    if let Some(f) = d.from.filter(|f| !from.contains(f)) {
                        from.push(f);
                    }
                }
                Some(DgramSocket {
                    ino,
                    name: Vec::new(),
                    host: self.host.clone(),
                    peer: 0,
                    from: Vec::new(),
                    udp: Some(UdpSeen {
                        local: udp::bound(raw),
                        from,
                    }),
                })
            }))
            .collect()
    }

    /// The datagram sockets of other programs of the computation that the
    /// datagram socket `ino` (`end`) exchanged datagrams with: it has
    /// datagrams from them or is connected to them (it takes them at
    /// restart), or they have datagrams from it or are connected to it (it
    /// gives itself); and those it could exchange datagrams with (one of
    /// the two is named), which are only held together at restart.
    fn dgram_links(&self, ino: u64, end: &UnixEnd, computation: &Computation) -> Vec<DgramLink> {
        let me = DgramSocket {
            ino,
            name: end.name.clone(),
            host: self.host.clone(),
            peer: end.peer.as_ref().map_or(0, |p| p.id),
            from: end.queued.iter().map(|m| m.from.clone()).collect(),
            udp: None,
        };
        let mut links: Vec<DgramLink> = Vec::new();
        for o in &computation.dgram {
            if o.host != self.host || self.socks.contains_key(&o.ino) || o.udp.is_some() {
                continue;
            }
            let (takes, gives) = me.roles(o);
            // Either could send to the other by name: neither program may
            // run again before the other is back (no handover needed).
            let reachable = !me.name.is_empty() || !o.name.is_empty();
            if (takes || gives || reachable) && !links.iter().any(|l| l.id == o.ino) {
                links.push(DgramLink {
                    id: o.ino,
                    name: o.name.clone(),
                    host: self.host.clone(),
                    takes,
                    gives,
                });
            }
        }
        links
    }

    /// Phase 2: everything else. `computation`: the endpoints of the other
    /// programs checkpointed with this one (a coordinator's); a TCP end
    /// whose other end is neither in the census nor among them leads
    /// outside and comes back closed.
    pub fn capture(&mut self, computation: &Computation) {
        let inodes: Vec<u64> = self.socks.keys().copied().collect();
        let held: HashSet<u64> = inodes.iter().copied().collect();
        for ino in inodes {
            let state = self.capture_one(ino, &held, computation);
            if let Some(s) = self.socks.get_mut(&ino) {
                s.state = state;
            }
        }
    }

    fn capture_one(
        &mut self,
        ino: u64,
        held: &HashSet<u64>,
        computation: &Computation,
    ) -> Option<SocketState> {
        let s = self.socks.get(&ino)?;
        let raw = s.fd.as_raw_fd();
        let (pid, fd) = s.first;
        if s.domain == libc::AF_UNIX {
            let diag = self.diag.get(&ino)?;
            return match unix::capture(raw, diag, &self.diag, |i| held.contains(&i)) {
                Ok((mut end, lost)) => {
                    // Another program of the computation holds the other end.
                    if let Some(p) = end.peer.as_mut() {
                        let me = UnixLink {
                            end: ino,
                            peer: p.id,
                            host: self.host.clone(),
                        };
                        if !p.held && computation.unix.iter().any(|l| me.pairs_with(l)) {
                            p.elsewhere = Some(self.host.clone());
                        }
                    }
                    if lost {
                        self.warnings.push(format!(
                            "fd {fd} of process {pid} (unix socket {}): descriptors or credentials sent with the messages waiting in it are not kept",
                            unix::show(&end.name)
                        ));
                    }
                    // A connection the listener has not accepted yet.
                    let pending = self.diag.iter().find_map(|(&l, d)| {
                        let at = d.pending.iter().position(|&c| c == ino)?;
                        Some((l, at, d.name.clone().unwrap_or_default()))
                    });
                    if let Some((listener, position, lname)) = pending {
                        let sent = self.diag.get(&ino).map_or(0, |d| d.unread_sent);
                        if held.contains(&listener) && sent == 0 {
                            return Some(SocketState::UnixPending {
                                end: Box::new(end),
                                listener,
                                position: position as u32,
                            });
                        }
                        let why = if sent == 0 {
                            "its listener is outside the checkpoint"
                        } else {
                            "what it sent cannot be read before the program accepts it"
                        };
                        self.warnings.push(format!(
                            "fd {fd} of process {pid} (unix socket connected to {}, not accepted yet): {why}; it will be a closed connection after restart",
                            unix::show(&lname)
                        ));
                        return Some(SocketState::Closed {
                            sock_type: end.sock_type,
                            queued: Vec::new(),
                            what: format!("unix connection to {}", unix::show(&lname)),
                            outside: false,
                        });
                    }
                    if let Some(p) = &end.peer {
                        if !p.held
                            && p.alive
                            && p.elsewhere.is_none()
                            && end.sock_type != libc::SOCK_DGRAM
                        {
                            self.warnings.push(format!(
                                "fd {fd} of process {pid} (unix socket connected to {}) leads outside the checkpoint: it will be a closed connection after restart",
                                unix::show(&p.name)
                            ));
                        }
                    }
                    let links = if end.sock_type == libc::SOCK_DGRAM {
                        self.dgram_links(ino, &end, computation)
                    } else {
                        Vec::new()
                    };
                    if links.is_empty() {
                        Some(SocketState::Unix(Box::new(end)))
                    } else {
                        Some(SocketState::UnixLinked {
                            end: Box::new(end),
                            links,
                        })
                    }
                }
                Err(e) => {
                    self.warnings.push(format!(
                        "fd {fd} of process {pid} (unix socket): cannot read it ({e}); it will be a closed connection after restart"
                    ));
                    None
                }
            };
        }
        if udp::is_udp(s.domain, s.ty, s.protocol) {
            return match udp::capture(raw, s.domain) {
                Ok(mut u) => {
                    u.links = udp::links(ino, &u, &self.host, computation, |i| held.contains(&i));
                    Some(SocketState::Udp(Box::new(u)))
                }
                Err(e) => {
                    self.warnings.push(format!(
                        "fd {fd} of process {pid} (UDP socket): cannot read it ({}); it will be a closed connection after restart",
                        e.desc()
                    ));
                    None
                }
            };
        }
        let t = s.tcp.as_ref()?;
        if t.state == tcp::LISTEN {
            return Some(SocketState::TcpListener {
                addr: t.local,
                backlog: tcp::backlog(raw),
                options: SockOpts::read(raw, SockOpts::TCP),
            });
        }
        if let (Some(&(listener, position)), Some(remote)) = (self.pending.get(&ino), t.remote) {
            return Some(SocketState::TcpPending {
                local: t.local,
                remote,
                listener,
                position,
                options: SockOpts::read(raw, SockOpts::TCP),
            });
        }
        let Some(remote) = t.remote else {
            // Not connected (made, maybe bound, connection not started):
            // made again as it was.
            return Some(SocketState::TcpBound {
                addr: t.local,
                options: SockOpts::read(raw, SockOpts::TCP),
            });
        };
        let what = tcp::describe(&t.local, &remote);
        if let Some(frozen) = &t.frozen {
            let me = Endpoint {
                local: t.local,
                remote,
                host: self.host.clone(),
            };
            let peer = if self.tcp_peer(t).is_some() {
                Some(PeerPlace::Tree)
            } else if computation.tcp.iter().any(|e| me.pairs_with(e)) {
                Some(PeerPlace::Computation {
                    host: self.host.clone(),
                })
            } else {
                None
            };
            if let Some(peer) = peer {
                match tcp::capture(raw, frozen, peer) {
                    Ok(mut c) => {
                        // A program moved here before keeps its old view.
                        for a in [&mut c.local, &mut c.remote] {
                            if let Some(v) = self.shown.get(&a.ip()) {
                                a.set_ip(*v);
                            }
                        }
                        return Some(SocketState::Tcp(Box::new(c)));
                    }
                    Err(e) => self.warnings.push(format!(
                        "fd {fd} of process {pid} ({what}): cannot read it ({e}); it will be a closed connection after restart"
                    )),
                }
            }
        }
        // Outside the checkpoint: the program's own view is kept as it was.
        let outside = t.state != tcp::CLOSE;
        if let Some(t) = self.socks.get_mut(&ino).and_then(|s| s.tcp.as_mut()) {
            if let Some(f) = t.frozen.take() {
                tcp::thaw(raw, &f);
            }
        }
        if outside {
            self.warnings.push(format!(
                "fd {fd} of process {pid} ({what}) leads outside the checkpoint: it will be a closed connection after restart"
            ));
        }
        let queued = unix::peek_all(raw, libc::SOCK_STREAM)
            .map(|(m, _)| m.into_iter().map(|m| m.data).collect())
            .unwrap_or_default();
        Some(SocketState::Closed {
            sock_type: libc::SOCK_STREAM,
            queued,
            what,
            outside,
        })
    }

    /// What the capture made of socket `ino`.
    pub fn state(&self, ino: u64) -> Option<&SocketState> {
        self.socks.get(&ino)?.state.as_ref()
    }

    /// Warnings of the capture, once.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// The program goes on: every TCP end leaves repair mode.
    pub fn thaw(&mut self) {
        for s in self.socks.values_mut() {
            let raw = s.fd.as_raw_fd();
            if let Some(f) = s.tcp.as_mut().and_then(|t| t.frozen.take()) {
                tcp::thaw(raw, &f);
            }
        }
    }

    /// Whether some TCP end is in repair mode.
    pub fn frozen(&self) -> bool {
        self.socks
            .values()
            .any(|s| s.tcp.as_ref().is_some_and(|t| t.frozen.is_some()))
    }
}

/// Every socket of the images being restored, made by rewind, for the
/// restored processes to take.
#[derive(Default)]
pub struct Rebuilt {
    fds: HashMap<u64, OwnedFd>,
    /// TCP ends in repair mode, until [`Rebuilt::release`].
    repaired: Vec<(u64, Box<TcpConnection>)>,
    /// TCP ends whose other end another program's restart makes: bare
    /// sockets until [`Rebuilt::reconnect`].
    awaiting: Vec<(u64, Box<TcpConnection>)>,
    /// The other ends of the stand-ins of closed connections, held until
    /// what waited to be read is written back through them.
    stand_ins: HashMap<u64, OwnedFd>,
    /// What to write back through a stand-in's other end.
    stand_in_data: HashMap<u64, Vec<Vec<u8>>>,
    /// Unix connections to other programs of a coordinator, made with them,
    /// and datagram sockets linked to theirs: their programs must not run
    /// before every one is back.
    links: Vec<UnixLink>,
    /// Copies of other programs' datagram sockets, handed over by their
    /// restarts, by name: datagrams from them are sent again from them.
    taken: HashMap<Vec<u8>, OwnedFd>,
    /// Copies of other programs' UDP sockets, handed over by their
    /// restarts, by address, with their families: datagrams from them are
    /// sent again from them.
    udp_taken: HashMap<SocketAddr, (OwnedFd, i32)>,
    warnings: Vec<String>,
}

/// A socket of the images, with the directory its relative names are
/// resolved from.
struct Wanted<'a> {
    state: &'a SocketState,
    cwd: &'a str,
}

impl Rebuilt {
    /// Make every socket the images' descriptors name.
    pub fn make(states: &[&ProcessState]) -> Result<Rebuilt, Error> {
        let mut wanted: BTreeMap<u64, Wanted> = BTreeMap::new();
        for st in states {
            for f in &st.fds {
                if let FdKind::Socket { id, socket } = &f.kind {
                    wanted.entry(*id).or_insert(Wanted {
                        state: socket,
                        cwd: &st.cwd,
                    });
                }
            }
        }
        let mut r = Rebuilt::default();
        if wanted.is_empty() {
            return Ok(r);
        }
        r.listeners(&wanted)?;
        r.tcp_pending(&wanted);
        r.unix_pending(&wanted);
        r.unix_bound(&wanted);
        r.unix_connections(&wanted);
        r.unix_between_programs(&wanted);
        r.unix_unconnected(&wanted);
        r.dgram_between_programs(&wanted);
        r.tcp_connections(&wanted);
        r.closed(&wanted);
        r.unix_refill(&wanted);
        r.udp(&wanted);
        r.udp_taken.clear();
        // The other programs' sockets were needed only for the refill.
        r.taken.clear();
        Ok(r)
    }

    /// rewind's descriptor of socket `id`.
    pub fn fd(&self, id: u64) -> Option<RawFd> {
        self.fds.get(&id).map(|f| f.as_raw_fd())
    }

    /// Warnings so far, once.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    fn add(&mut self, id: u64, fd: OwnedFd) {
        self.fds.insert(id, fd);
    }

    /// For a replay or an inspection, where the program's socket calls are
    /// emulated and nothing outside may be touched: every socket of the
    /// images a stand-in (one end of a stream socket pair whose other end
    /// is closed), bound to no address, connected to nothing.
    pub fn stand_ins(states: &[&ProcessState]) -> Rebuilt {
        let mut r = Rebuilt::default();
        for st in states {
            for f in &st.fds {
                if let FdKind::Socket { id, .. } = &f.kind {
                    if !r.fds.contains_key(id) {
                        r.closed_stand_in(*id, libc::SOCK_STREAM);
                    }
                }
            }
        }
        r
    }

    /// TCP and unix listeners, bound and listening again (failing the
    /// restart when the address is taken, as it would fail the program).
    fn listeners(&mut self, wanted: &BTreeMap<u64, Wanted>) -> Result<(), Error> {
        for (&id, w) in wanted {
            match w.state {
                SocketState::TcpListener {
                    addr,
                    backlog,
                    options,
                } => {
                    let fail = |e: Errno| {
                        Error::Restore(format!("cannot listen on {addr} again: {}", e.desc()))
                    };
                    let s = net::socket(family(addr), libc::SOCK_STREAM, 0).map_err(fail)?;
                    let raw = s.as_raw_fd();
                    SockOpts::apply(raw, options, true);
                    // A listener just killed leaves connections behind in
                    // TIME_WAIT on its port.
                    tcp::bind_again(raw, addr).map_err(fail)?;
                    net::listen(raw, (*backlog).min(i32::MAX as u32) as i32).map_err(fail)?;
                    SockOpts::apply(raw, options, false);
                    self.add(id, s);
                }
                SocketState::TcpBound { addr, options } => {
                    let s = net::socket(family(addr), libc::SOCK_STREAM, 0).map_err(|e| {
                        Error::Restore(format!("cannot make a TCP socket: {}", e.desc()))
                    })?;
                    let raw = s.as_raw_fd();
                    SockOpts::apply(raw, options, true);
                    if addr.port() != 0 {
                        if let Err(e) = net::bind(raw, &sockaddr(addr)) {
                            self.warnings.push(format!(
                                "TCP socket bound to {addr}: cannot bind it again ({}); it is unbound now",
                                e.desc()
                            ));
                        }
                    }
                    SockOpts::apply(raw, options, false);
                    self.add(id, s);
                }
                SocketState::Unix(u) | SocketState::UnixLinked { end: u, .. }
                    if u.listening.is_some() =>
                {
                    let shown = unix::show(&u.name);
                    let fail = |e: Errno| {
                        Error::Restore(format!(
                            "cannot listen on unix socket {shown} again: {}",
                            e.desc()
                        ))
                    };
                    let s = net::socket(libc::AF_UNIX, u.sock_type, 0).map_err(fail)?;
                    unix::remove_stale(&u.name, w.cwd);
                    unix::at_name(&u.name, w.cwd, |a| net::bind(s.as_raw_fd(), a)).map_err(fail)?;
                    let backlog = u.listening.unwrap_or(1).min(i32::MAX as u32) as i32;
                    net::listen(s.as_raw_fd(), backlog).map_err(fail)?;
                    SockOpts::apply(s.as_raw_fd(), &u.options, false);
                    self.add(id, s);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// TCP connections the listeners had not accepted yet: each client end
    /// bound to its address again and connected to its rebuilt listener, in
    /// the order the listener had them, for the program to accept.
    fn tcp_pending(&mut self, wanted: &BTreeMap<u64, Wanted>) {
        let mut pending: Vec<_> = wanted
            .iter()
            .filter_map(|(&id, w)| match w.state {
                SocketState::TcpPending {
                    local,
                    remote,
                    listener,
                    position,
                    options,
                } => Some((*listener, *position, id, local, remote, options)),
                _ => None,
            })
            .collect();
        pending.sort_by_key(|&(l, at, ..)| (l, at));
        for (listener, _, id, local, remote, options) in pending {
            let made = (|| {
                if !self.fds.contains_key(&listener) {
                    return Err(Errno::ENOENT);
                }
                let s = net::socket(family(local), libc::SOCK_STREAM, libc::IPPROTO_TCP)?;
                let raw = s.as_raw_fd();
                SockOpts::apply(raw, options, true);
                tcp::bind_again(raw, local)?;
                net::connect(raw, &sockaddr(remote))?;
                SockOpts::apply(raw, options, false);
                Ok::<_, Errno>(s)
            })();
            match made {
                Ok(s) => self.add(id, s),
                Err(e) => {
                    self.warnings.push(format!(
                        "{} (not accepted yet): cannot connect it to its listener again ({}); it comes back closed",
                        tcp::describe(local, remote),
                        e.desc()
                    ));
                    self.closed_stand_in(id, libc::SOCK_STREAM);
                }
            }
        }
    }

    /// Unix sockets bound to a name and not connected through a listener:
    /// datagram receivers, sockets bound before anything else.
    fn unix_bound(&mut self, wanted: &BTreeMap<u64, Wanted>) {
        for (&id, w) in wanted {
            let Some(u) = w.state.unix() else {
                continue;
            };
            let stream_connected = u.peer.is_some() && u.sock_type != libc::SOCK_DGRAM;
            if u.name.is_empty()
                || u.listening.is_some()
                || stream_connected
                || self.fds.contains_key(&id)
            {
                continue;
            }
            match net::socket(libc::AF_UNIX, u.sock_type, 0) {
                Ok(s) => {
                    if !u.name.is_empty() {
                        unix::remove_stale(&u.name, w.cwd);
                        if let Err(e) =
                            unix::at_name(&u.name, w.cwd, |a| net::bind(s.as_raw_fd(), a))
                        {
                            self.warnings.push(format!(
                                "unix socket {}: cannot bind it again ({}); it is unnamed now",
                                unix::show(&u.name),
                                e.desc()
                            ));
                        }
                    }
                    self.add(id, s);
                }
                Err(e) => self
                    .warnings
                    .push(format!("cannot make a unix socket: {}", e.desc())),
            }
        }
    }

    /// Connections the listeners had not accepted yet: each client end
    /// connected to its rebuilt listener again (bound to its name first),
    /// in the order the listener had them, for the program to accept.
    fn unix_pending(&mut self, wanted: &BTreeMap<u64, Wanted>) {
        let mut pending: Vec<(u64, u32, u64, &UnixEnd, &str)> = wanted
            .iter()
            .filter_map(|(&id, w)| match w.state {
                SocketState::UnixPending {
                    end,
                    listener,
                    position,
                } => Some((*listener, *position, id, end.as_ref(), w.cwd)),
                _ => None,
            })
            .collect();
        pending.sort_by_key(|&(l, at, ..)| (l, at));
        for (listener, _, id, u, cwd) in pending {
            let target = wanted
                .get(&listener)
                .and_then(|lw| Some((lw.state.unix()?.name.clone(), lw.cwd)))
                .filter(|_| self.fds.contains_key(&listener));
            let made = (|| {
                let (name, lcwd) = target.ok_or(Errno::ENOENT)?;
                let s = net::socket(libc::AF_UNIX, u.sock_type, 0)?;
                if !u.name.is_empty() {
                    unix::remove_stale(&u.name, cwd);
                    unix::at_name(&u.name, cwd, |a| net::bind(s.as_raw_fd(), a))?;
                }
                unix::at_name(&name, lcwd, |a| net::connect(s.as_raw_fd(), a))?;
                Ok::<_, Errno>(s)
            })();
            match made {
                Ok(s) => self.add(id, s),
                Err(e) => {
                    self.warnings.push(format!(
                        "a unix connection not accepted yet: cannot connect it to its listener again ({}); it comes back closed",
                        e.desc()
                    ));
                    self.closed_stand_in(id, u.sock_type);
                }
            }
        }
    }

    /// Unix sockets neither bound, listening nor connected.
    fn unix_unconnected(&mut self, wanted: &BTreeMap<u64, Wanted>) {
        for (&id, w) in wanted {
            let Some(u) = w.state.unix() else {
                continue;
            };
            if self.fds.contains_key(&id) {
                continue;
            }
            match net::socket(libc::AF_UNIX, u.sock_type, 0) {
                Ok(s) => self.add(id, s),
                Err(e) => self
                    .warnings
                    .push(format!("cannot make a unix socket: {}", e.desc())),
            }
        }
    }

    /// The listener rebuilt for `name`, if any.
    fn listener_named(&self, wanted: &BTreeMap<u64, Wanted>, name: &[u8]) -> Option<RawFd> {
        wanted.iter().find_map(|(id, w)| match w.state.unix() {
            Some(u) if u.listening.is_some() && u.name == name => self.fd(*id),
            _ => None,
        })
    }

    /// Connected unix sockets: both ends of the connections whose two ends
    /// are in the images, one end (closed, or a datagram socket connected
    /// to a name) of the others.
    fn unix_connections(&mut self, wanted: &BTreeMap<u64, Wanted>) {
        for (&id, w) in wanted {
            let Some(u) = w.state.unix() else {
                continue;
            };
            let Some(p) = &u.peer else { continue };
            if u.listening.is_some() || p.elsewhere.is_some() && u.sock_type != libc::SOCK_DGRAM {
                continue;
            }
            let other = wanted.get(&p.id).and_then(|pw| match pw.state.unix() {
                Some(pu) if pu.sock_type == u.sock_type => Some((pu, pw.cwd)),
                _ => None,
            });
            if u.sock_type == libc::SOCK_DGRAM {
                // Connected to another program's socket: once that program's
                // restart has made it (`dgram_between_programs`).
                let later = w
                    .state
                    .dgram_links()
                    .iter()
                    .any(|l| l.id == p.id && l.takes);
                self.dgram_connect(id, u, w.cwd, other.map(|(pu, _)| (p.id, pu)), later);
                continue;
            }
            if self.fds.contains_key(&id) {
                continue;
            }
            match other {
                Some((pu, pcwd)) if p.held => {
                    let made = self.stream_pair(wanted, (id, u, w.cwd), (p.id, pu, pcwd));
                    if let Err(e) = made {
                        self.warnings.push(format!(
                            "unix connection to {}: {e}; it comes back closed",
                            unix::show(&p.name)
                        ));
                        self.closed_stand_in(id, u.sock_type);
                    }
                }
                _ => self.closed_stand_in(id, u.sock_type),
            }
        }
    }

    /// A connected pair, the ends keeping their names: made through the
    /// listener the accepted end's name is (rebuilt, or a temporary one)
    /// when there is such a name, else by socketpair.
    fn stream_pair(
        &mut self,
        wanted: &BTreeMap<u64, Wanted>,
        a: (u64, &UnixEnd, &str),
        b: (u64, &UnixEnd, &str),
    ) -> Result<(), String> {
        // The accepted end has the listener's name.
        let (server, client) = if !a.1.name.is_empty()
            && (self.listener_named(wanted, &a.1.name).is_some() || b.1.name.is_empty())
        {
            (a, b)
        } else {
            (b, a)
        };
        let (s, c) = self.connected_pair(
            wanted,
            a.1.sock_type,
            (&server.1.name, server.2),
            (&client.1.name, client.2),
        )?;
        self.add(server.0, s);
        self.add(client.0, c);
        Ok(())
    }

    /// A connected pair of unix sockets of type `ty`: (the accepted end,
    /// named `server`, the client end, bound to `client`), each name with
    /// the directory relative names are resolved from. Made through the
    /// listener rebuilt for that name, or a temporary one; by socketpair
    /// when there is no name (or it is taken, with a warning).
    fn connected_pair(
        &mut self,
        wanted: &BTreeMap<u64, Wanted>,
        ty: i32,
        server: (&[u8], &str),
        client: (&[u8], &str),
    ) -> Result<(OwnedFd, OwnedFd), String> {
        let pair = || net::socketpair(ty).map_err(|e| format!("socketpair: {}", e.desc()));
        let name = server.0;
        if name.is_empty() {
            return pair();
        }
        let mut temporary: Option<OwnedFd> = None;
        let listener = match self.listener_named(wanted, name) {
            Some(l) => l,
            None => {
                // A temporary listener gives the accepted end its name;
                // only where that name is free.
                let l = net::socket(libc::AF_UNIX, ty, 0).map_err(|e| e.desc().to_string())?;
                let bound = unix::at_name(name, server.1, |addr| net::bind(l.as_raw_fd(), addr))
                    .and_then(|()| net::listen(l.as_raw_fd(), 1));
                if let Err(e) = bound {
                    self.warnings.push(format!(
                        "unix socket {}: its name is taken ({}); getsockname and getpeername no longer report it on its connection",
                        unix::show(name),
                        e.desc()
                    ));
                    return pair();
                }
                let raw = l.as_raw_fd();
                temporary = Some(l);
                raw
            }
        };
        let made = (|| {
            let c = net::socket(libc::AF_UNIX, ty, 0).map_err(|e| e.desc().to_string())?;
            if !client.0.is_empty() {
                if let Err(e) =
                    unix::at_name(client.0, client.1, |addr| net::bind(c.as_raw_fd(), addr))
                {
                    self.warnings.push(format!(
                        "unix socket {}: cannot bind it again ({}); it is unnamed now",
                        unix::show(client.0),
                        e.desc()
                    ));
                }
            }
            unix::at_name(name, server.1, |addr| net::connect(c.as_raw_fd(), addr))
                .map_err(|e| format!("connect: {}", e.desc()))?;
            let mut accepted = net::accept_now(listener);
            for _ in 0..1000 {
                if !matches!(accepted, Err(Errno::EAGAIN)) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
                accepted = net::accept_now(listener);
            }
            let s = accepted.map_err(|e| format!("accept: {}", e.desc()))?;
            Ok::<_, String>((s, c))
        })();
        if temporary.take().is_some() && name.first() != Some(&0) {
            // The temporary listener's socket file goes with it.
            let path = std::path::Path::new(server.1)
                .join(std::path::Path::new(&*String::from_utf8_lossy(name)));
            let _ = std::fs::remove_file(path);
        }
        made
    }

    /// Unix connections to other programs of a coordinator: one end of
    /// each is made here, the other by the other program's restart, which
    /// takes its end from this one through a short-lived abstract socket
    /// (`@rewind-unix-A-B`, the two inodes). The end whose socket has a
    /// name (the accepted one) makes the pair, through its listener when it
    /// has one, else the end with the smaller inode. All handovers are
    /// offered before any is awaited, so two programs that each wait for
    /// the other cannot block each other.
    fn unix_between_programs(&mut self, wanted: &BTreeMap<u64, Wanted>) {
        let ends: Vec<(u64, &UnixEnd, &str)> = wanted
            .iter()
            .filter_map(|(&id, w)| match w.state.unix() {
                Some(u)
                    if u.sock_type != libc::SOCK_DGRAM
                        && u.peer.as_ref().is_some_and(|p| p.elsewhere.is_some()) =>
                {
                    Some((id, u, w.cwd))
                }
                _ => None,
            })
            .collect();
        let makes = |id: u64, u: &UnixEnd| match &u.peer {
            Some(p) if !u.name.is_empty() && p.name.is_empty() => true,
            Some(p) if u.name.is_empty() && !p.name.is_empty() => false,
            Some(p) => id < p.id,
            None => true,
        };
        let meeting = |id: u64, peer: u64| rendezvous("unix", id.min(peer), id.max(peer));
        for &(id, u, cwd) in &ends {
            let Some(p) = &u.peer else { continue };
            let made = if makes(id, u) {
                self.connected_pair(wanted, u.sock_type, (&u.name, cwd), (&p.name, cwd))
                    .and_then(|(mine, theirs)| {
                        // What waited at this end, written again by the other.
                        let msgs: Vec<Vec<u8>> = u.queued.iter().map(|m| m.data.clone()).collect();
                        Self::write_all(theirs.as_raw_fd(), &msgs, None)
                            .map_err(|e| format!("refill: {}", e.desc()))?;
                        let ours = mine.try_clone().map_err(|e| format!("dup: {e}"))?;
                        offer(&meeting(id, p.id), vec![theirs, ours])?;
                        Ok(mine)
                    })
            } else {
                continue;
            };
            self.linked(id, u, made);
        }
        for &(id, u, _) in ends.iter().filter(|(id, u, _)| !makes(*id, u)) {
            let Some(p) = &u.peer else { continue };
            let taken = take(&meeting(id, p.id)).and_then(|fds| {
                let mut fds = fds.into_iter();
                let (Some(mine), Some(theirs)) = (fds.next(), fds.next()) else {
                    return Err("the other program's restart handed over nothing".to_string());
                };
                let msgs: Vec<Vec<u8>> = u.queued.iter().map(|m| m.data.clone()).collect();
                Self::write_all(theirs.as_raw_fd(), &msgs, None)
                    .map_err(|e| format!("refill: {}", e.desc()))?;
                Ok(mine)
            });
            self.linked(id, u, taken);
        }
    }

    /// The end `id` of a unix connection to another program, made (or
    /// not: then closed, after what waited in it).
    fn linked(&mut self, id: u64, u: &UnixEnd, made: Result<OwnedFd, String>) {
        let Some(p) = &u.peer else { return };
        match made {
            Ok(mine) => {
                self.add(id, mine);
                self.links.push(UnixLink {
                    end: id,
                    peer: p.id,
                    host: p.elsewhere.clone().unwrap_or_default(),
                });
            }
            Err(e) => {
                self.warnings.push(format!(
                    "unix connection to another program: {e}; it comes back closed"
                ));
                self.closed_stand_in(id, u.sock_type);
                self.stand_in_data
                    .insert(id, u.queued.iter().map(|m| m.data.clone()).collect());
            }
        }
    }

    /// Datagram sockets linked to other programs' (`UnixLinked`): each one
    /// another program has datagrams from (or is connected to) is handed
    /// to that program's restart through a short-lived abstract socket
    /// (`@rewind-dgram-G-T`, the giver's and the taker's inodes), and each
    /// one of another program this one's sockets have datagrams from (or
    /// are connected to) is taken from it. All are offered before any is
    /// awaited. A socket connected to another program's is connected once
    /// that one is taken (it exists then); the datagrams are sent again
    /// from the taken sockets by [`Rebuilt::unix_refill`], so the receiver
    /// sees their senders' names. The programs are held until every one
    /// is back (the links go to the coordinator).
    fn dgram_between_programs(&mut self, wanted: &BTreeMap<u64, Wanted>) {
        let meeting = |giver: u64, taker: u64| rendezvous("dgram", giver, taker);
        let linked: Vec<(u64, &UnixEnd, &str, &[DgramLink])> = wanted
            .iter()
            .filter_map(|(&id, w)| {
                let links = w.state.dgram_links();
                let u = w.state.unix()?;
                (!links.is_empty()).then_some((id, u, w.cwd, links))
            })
            .collect();
        for &(id, u, _, links) in &linked {
            for l in links.iter().filter(|l| l.gives) {
                let offered = match self.fds.get(&id).map(|f| f.try_clone()) {
                    Some(Ok(copy)) => offer(&meeting(id, l.id), vec![copy]),
                    Some(Err(e)) => Err(format!("dup: {e}")),
                    None => Err("it was not made".to_string()),
                };
                if let Err(e) = offered {
                    self.warnings.push(format!(
                        "datagram socket {}: cannot hand it to the restart of the program of {}: {e}",
                        unix::show(&u.name),
                        unix::show(&l.name)
                    ));
                }
            }
        }
        for &(id, u, cwd, links) in &linked {
            for l in links {
                let link = UnixLink {
                    end: id,
                    peer: l.id,
                    host: l.host.clone(),
                };
                if !self.links.contains(&link) {
                    self.links.push(link);
                }
                if !l.takes {
                    continue;
                }
                match take(&meeting(l.id, id)).map(|fds| fds.into_iter().next()) {
                    Ok(Some(theirs)) => {
                        if !l.name.is_empty() {
                            self.taken.entry(l.name.clone()).or_insert(theirs);
                        }
                    }
                    Ok(None) => self.warnings.push(format!(
                        "datagram socket {}: the restart of the program of {} handed over nothing",
                        unix::show(&u.name),
                        unix::show(&l.name)
                    )),
                    Err(e) => self.warnings.push(format!(
                        "datagram socket {}: the socket {} of another program: {e}; datagrams from it are sent again from an unnamed socket",
                        unix::show(&u.name),
                        unix::show(&l.name)
                    )),
                }
            }
            // Connected to one of them: now that it exists.
            if let Some(p) = u
                .peer
                .as_ref()
                .filter(|p| links.iter().any(|l| l.id == p.id))
            {
                if p.held {
                    continue;
                }
                self.dgram_connect(id, u, cwd, None, false);
            }
        }
    }

    /// A datagram socket connected to `p`: a pair of unnamed sockets is
    /// made by socketpair; any other is connected to its peer's name
    /// (rebuilt here, or outside, like /dev/log), or only made when `later`
    /// (the peer is another program's, not made yet).
    fn dgram_connect(
        &mut self,
        id: u64,
        u: &UnixEnd,
        cwd: &str,
        other: Option<(u64, &UnixEnd)>,
        later: bool,
    ) {
        let Some(p) = &u.peer else { return };
        if let Some((pid, pu)) = other {
            let mutual = pu.peer.as_ref().is_some_and(|q| q.id == id);
            if mutual && u.name.is_empty() && pu.name.is_empty() {
                if !self.fds.contains_key(&id) {
                    match net::socketpair(libc::SOCK_DGRAM) {
                        Ok((x, y)) => {
                            self.add(id, x);
                            self.add(pid, y);
                        }
                        Err(e) => self.warnings.push(format!("socketpair: {}", e.desc())),
                    }
                }
                return;
            }
        }
        if !self.fds.contains_key(&id) {
            match net::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0) {
                Ok(s) => self.add(id, s),
                Err(e) => {
                    self.warnings
                        .push(format!("cannot make a unix socket: {}", e.desc()));
                    return;
                }
            }
        }
        let Some(fd) = self.fd(id) else { return };
        if later {
            return;
        }
        if p.name.is_empty() {
            self.warnings.push(
                "a datagram socket was connected to an unnamed socket outside the checkpoint: it is not connected now"
                    .to_string(),
            );
            return;
        }
        if let Err(e) = unix::at_name(&p.name, cwd, |a| net::connect(fd, a)) {
            self.warnings.push(format!(
                "datagram socket connected to {}: cannot connect it again ({}); it is not connected now",
                unix::show(&p.name),
                e.desc()
            ));
        }
    }

    /// One end of a connection whose other end is gone (or outside): a
    /// socket pair whose other end is closed after the queue is refilled.
    fn closed_stand_in(&mut self, id: u64, ty: i32) {
        match net::socketpair(ty) {
            Ok((x, other)) => {
                self.add(id, x);
                self.stand_ins.insert(id, other);
            }
            Err(e) => self.warnings.push(format!("socketpair: {}", e.desc())),
        }
    }

    /// TCP ends: made in repair mode when their other end is made by this
    /// same restart; left bare (for [`Rebuilt::reconnect`]) when another
    /// program's restart makes it.
    fn tcp_connections(&mut self, wanted: &BTreeMap<u64, Wanted>) {
        let ends: Vec<(u64, &TcpConnection)> = wanted
            .iter()
            .filter_map(|(&id, w)| match w.state {
                SocketState::Tcp(c) => Some((id, c.as_ref())),
                _ => None,
            })
            .collect();
        for &(id, c) in &ends {
            let what = tcp::describe(&c.local, &c.remote);
            let s = match net::socket(family(&c.local), libc::SOCK_STREAM, libc::IPPROTO_TCP) {
                Ok(s) => s,
                Err(e) => {
                    self.warnings.push(format!(
                        "{what}: socket: {}; it comes back closed",
                        e.desc()
                    ));
                    self.closed_tcp(id, c);
                    continue;
                }
            };
            match &c.peer {
                PeerPlace::Computation { .. } => {
                    self.add(id, s);
                    self.awaiting.push((id, Box::new(c.clone())));
                }
                PeerPlace::Tree => {
                    let partner = ends
                        .iter()
                        .any(|(_, o)| same(&o.local, &c.remote) && same(&o.remote, &c.local));
                    if !partner {
                        self.warnings.push(format!(
                            "{what}: the process holding its other end is not among the images; it comes back closed"
                        ));
                        self.closed_tcp(id, c);
                        continue;
                    }
                    match tcp::build(s.as_raw_fd(), c, c.local, c.remote) {
                        Ok(()) => {
                            self.add(id, s);
                            self.repaired.push((id, Box::new(c.clone())));
                        }
                        Err(e) => {
                            self.warnings
                                .push(format!("{what}: {e}; it comes back closed"));
                            self.closed_tcp(id, c);
                        }
                    }
                }
            }
        }
    }

    /// A TCP end that cannot be rebuilt: closed, after what had arrived.
    fn closed_tcp(&mut self, id: u64, c: &TcpConnection) {
        self.closed_stand_in(id, libc::SOCK_STREAM);
        if !c.received.is_empty() {
            self.stand_in_data.insert(id, vec![c.received.clone()]);
        }
    }

    /// Connections that led outside the checkpoint (or were closed).
    fn closed(&mut self, wanted: &BTreeMap<u64, Wanted>) {
        for (&id, w) in wanted {
            if let SocketState::Closed {
                sock_type, queued, ..
            } = w.state
            {
                self.closed_stand_in(id, *sock_type);
                if !queued.is_empty() {
                    self.stand_in_data.insert(id, queued.clone());
                }
            }
        }
    }

    /// Write everything through `fd`, message by message.
    fn write_all(fd: RawFd, messages: &[Vec<u8>], to: Option<(&[u8], &str)>) -> Result<(), Errno> {
        for m in messages {
            let mut off = 0;
            loop {
                let n = match to {
                    Some((name, cwd)) => unix::at_name(name, cwd, |a| {
                        net::sendto(fd, &m[off..], libc::MSG_DONTWAIT, a)
                    })?,
                    None => net::sendto(fd, &m[off..], libc::MSG_DONTWAIT, &[])?,
                };
                off += n;
                if off >= m.len() || n == 0 {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Put back what waited to be read at each unix socket (and at the
    /// stand-ins of closed connections), then the shutdowns and options.
    fn unix_refill(&mut self, wanted: &BTreeMap<u64, Wanted>) {
        let data = std::mem::take(&mut self.stand_in_data);
        for (id, queued) in data {
            if let Some(other) = self.stand_ins.get(&id) {
                if let Err(e) = Self::write_all(other.as_raw_fd(), &queued, None) {
                    self.warnings.push(format!(
                        "a closed connection: cannot put back what waited in it: {}",
                        e.desc()
                    ));
                }
            }
        }
        for (&id, w) in wanted {
            let Some(u) = w.state.unix() else {
                continue;
            };
            let elsewhere = u.peer.as_ref().is_some_and(|p| p.elsewhere.is_some())
                && u.sock_type != libc::SOCK_DGRAM;
            if u.queued.is_empty()
                || elsewhere
                || self.stand_ins.contains_key(&id) && u.sock_type == libc::SOCK_DGRAM
            {
                continue;
            }
            let result = if let Some(other) = self.stand_ins.get(&id) {
                let msgs: Vec<Vec<u8>> = u.queued.iter().map(|m| m.data.clone()).collect();
                Self::write_all(other.as_raw_fd(), &msgs, None)
            } else if u.sock_type == libc::SOCK_DGRAM {
                self.refill_datagrams(wanted, id, u, w.cwd)
            } else {
                // The other end of the connection writes it again.
                match u.peer.as_ref().and_then(|p| self.fd(p.id)) {
                    Some(peer) => {
                        let msgs: Vec<Vec<u8>> = u.queued.iter().map(|m| m.data.clone()).collect();
                        Self::write_all(peer, &msgs, None)
                    }
                    None => Ok(()),
                }
            };
            if let Err(e) = result {
                self.warnings.push(format!(
                    "unix socket {}: cannot put back the {} message(s) waiting in it: {}",
                    unix::show(&u.name),
                    u.queued.len(),
                    e.desc()
                ));
            }
        }
        for (&id, w) in wanted {
            let (Some(u), Some(fd)) = (w.state.unix(), self.fd(id)) else {
                continue;
            };
            if u.peer.is_some()
                && u.sock_type != libc::SOCK_DGRAM
                && !self.stand_ins.contains_key(&id)
            {
                if u.shutdown & 2 != 0 {
                    let _ = net::shutdown(fd, libc::SHUT_WR);
                }
                if u.shutdown & 1 != 0 {
                    let _ = net::shutdown(fd, libc::SHUT_RD);
                }
            }
            SockOpts::apply(fd, &u.options, false);
        }
        // The stand-ins' other ends go: their connections read as closed.
        self.stand_ins.clear();
    }

    /// Datagrams waiting at `id`, each sent again from its sender's socket
    /// when it is rebuilt here (or from the same name when that is free),
    /// else from an unnamed socket.
    fn refill_datagrams(
        &self,
        wanted: &BTreeMap<u64, Wanted>,
        id: u64,
        u: &UnixEnd,
        cwd: &str,
    ) -> Result<(), Errno> {
        let named = |name: &[u8]| {
            wanted.iter().find_map(|(oid, ow)| match ow.state.unix() {
                Some(o) if *oid != id && o.sock_type == libc::SOCK_DGRAM && o.name == name => {
                    self.fd(*oid).map(|fd| (fd, o))
                }
                _ => None,
            })
        };
        let partner = u.peer.as_ref().and_then(|p| {
            let pw = wanted.get(&p.id)?;
            match pw.state.unix() {
                Some(o) if o.peer.as_ref().is_some_and(|q| q.id == id) => {
                    self.fd(p.id).map(|fd| (fd, o))
                }
                _ => None,
            }
        });
        for m in &u.queued {
            let one = std::slice::from_ref(&m.data);
            match partner {
                // The connected partner sends it (no address needed).
                Some((fd, o)) if o.name == m.from => Self::write_all(fd, one, None)?,
                _ if u.name.is_empty() => return Err(Errno::EDESTADDRREQ),
                _ => match named(&m.from)
                    .map(|(fd, _)| fd)
                    .or_else(|| self.taken.get(&m.from).map(|f| f.as_raw_fd()))
                    .filter(|_| !m.from.is_empty())
                {
                    Some(fd) => Self::write_all(fd, one, Some((&u.name, cwd)))?,
                    None => {
                        let t = net::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0)?;
                        if m.from.first() == Some(&0) {
                            let _ = net::bind(t.as_raw_fd(), &unix::sockaddr_un(&m.from));
                        }
                        Self::write_all(t.as_raw_fd(), one, Some((&u.name, cwd)))?
                    }
                },
            }
        }
        Ok(())
    }

    /// Every TCP end made in repair mode leaves it: connections run again.
    /// Call once every process holding them is restored.
    pub fn release(&mut self) -> Vec<String> {
        for (id, c) in std::mem::take(&mut self.repaired) {
            if let Some(fd) = self.fd(id) {
                if let Err(e) = tcp::release(fd, &c) {
                    self.warnings
                        .push(format!("{}: {e}", tcp::describe(&c.local, &c.remote)));
                }
            }
        }
        self.take_warnings()
    }

    /// The TCP ends waiting for another program's restart, as endpoints.
    pub fn awaiting(&self) -> Vec<Endpoint> {
        self.awaiting
            .iter()
            .map(|(_, c)| Endpoint {
                local: c.local,
                remote: c.remote,
                host: match &c.peer {
                    PeerPlace::Computation { host } => host.clone(),
                    PeerPlace::Tree => String::new(),
                },
            })
            .collect()
    }

    /// Make the waiting TCP ends (in repair mode), with addresses moved as
    /// `moved` says (a program restarted on another host).
    pub fn reconnect(&mut self, moved: &HashMap<IpAddr, IpAddr>) {
        let map = |a: &SocketAddr| {
            let mut a = *a;
            if let Some(to) = moved.get(&a.ip()) {
                a.set_ip(*to);
            }
            a
        };
        for (id, c) in std::mem::take(&mut self.awaiting) {
            let (local, remote) = (map(&c.local), map(&c.remote));
            let Some(fd) = self.fd(id) else { continue };
            match tcp::build(fd, &c, local, remote) {
                Ok(()) => self.repaired.push((id, c)),
                Err(e) => self.warnings.push(format!(
                    "{}: {e}; it is not connected now",
                    tcp::describe(&local, &remote)
                )),
            }
        }
    }

    /// The unix connections made with other programs' restarts.
    pub fn links(&self) -> Vec<UnixLink> {
        self.links.clone()
    }

    /// Whether connections wait for other programs' restarts.
    pub fn is_awaiting(&self) -> bool {
        !self.awaiting.is_empty() || !self.links.is_empty()
    }
}

/// How long a unix connection's end waits for the other program's restart
/// to hand it over.
const HANDOVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The abstract name (`@rewind-KIND-A-B`) under which two programs'
/// restarts hand sockets over, for sockets `a` and `b` (their inodes).
fn rendezvous(kind: &str, a: u64, b: u64) -> Vec<u8> {
    let mut name = vec![0u8];
    name.extend_from_slice(format!("rewind-{kind}-{a}-{b}").as_bytes());
    name
}

/// Offer `fds` (for a unix connection: the other program's end and a copy
/// of this end, for the other to write back what waited at its end; for a
/// datagram socket: a copy of it) at the abstract name `name`, on a thread
/// of its own, until taken or twice the timeout.
fn offer(name: &[u8], offered: Vec<OwnedFd>) -> Result<(), String> {
    let l = net::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0).map_err(|e| e.desc().to_string())?;
    net::bind(l.as_raw_fd(), &unix::sockaddr_un(name))
        .and_then(|()| net::listen(l.as_raw_fd(), 1))
        .map_err(|e| format!("handover socket {}: {}", unix::show(name), e.desc()))?;
    std::thread::Builder::new()
        .name("unix-handover".into())
        .spawn(move || {
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            use std::os::fd::AsFd;
            let deadline = std::time::Instant::now() + 2 * HANDOVER_TIMEOUT;
            while std::time::Instant::now() < deadline {
                let mut fds = [PollFd::new(l.as_fd(), PollFlags::POLLIN)];
                if !matches!(poll(&mut fds, PollTimeout::from(1000u16)), Ok(n) if n > 0) {
                    continue;
                }
                if let Ok(c) = net::accept_now(l.as_raw_fd()) {
                    let raw: Vec<RawFd> = offered.iter().map(|f| f.as_raw_fd()).collect();
                    if net::send_fds(c.as_raw_fd(), &raw).is_ok() {
                        return;
                    }
                }
            }
        })
        .map(drop)
        .map_err(|e| format!("cannot start a thread: {e}"))
}

/// Take what the other program's restart offers at `name` ([`offer`]),
/// waiting for it at most [`HANDOVER_TIMEOUT`].
fn take(name: &[u8]) -> Result<Vec<OwnedFd>, String> {
    let deadline = std::time::Instant::now() + HANDOVER_TIMEOUT;
    loop {
        let s =
            net::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0).map_err(|e| e.desc().to_string())?;
        if net::connect(s.as_raw_fd(), &unix::sockaddr_un(name)).is_ok() {
            return net::recv_fds(s.as_raw_fd())
                .map_err(|e| format!("receiving it from the other program: {}", e.desc()));
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "the other program was not restarted within {} s",
                HANDOVER_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dgram(ino: u64, name: &str, peer: u64, from: &[&str]) -> DgramSocket {
        DgramSocket {
            ino,
            name: name.as_bytes().to_vec(),
            host: "h/1".into(),
            peer,
            from: from.iter().map(|f| f.as_bytes().to_vec()).collect(),
            udp: None,
        }
    }

    #[test]
    fn datagram_roles_are_symmetric() {
        // A server with requests from a client, which is connected to it and
        // has replies from it; a hub with datagrams from one sender only; a
        // stranger; an unnamed socket connected to the hub.
        let server = dgram(1, "/s", 0, &["/s.c"]);
        let client = dgram(2, "/s.c", 1, &["/s"]);
        let hub = dgram(3, "@hub", 0, &["@hub.1", ""]);
        let sender = dgram(4, "@hub.1", 0, &[]);
        let stranger = dgram(5, "/x", 0, &[]);
        let unnamed = dgram(6, "", 3, &[]);
        assert_eq!(server.roles(&client), (true, true));
        assert_eq!(client.roles(&server), (true, true));
        assert_eq!(hub.roles(&sender), (true, false));
        assert_eq!(sender.roles(&hub), (false, true));
        assert_eq!(unnamed.roles(&hub), (true, false));
        assert_eq!(hub.roles(&unnamed), (false, true));
        let all = [server, client, hub, sender, stranger, unnamed];
        for a in &all {
            for b in &all {
                let (t, g) = a.roles(b);
                assert_eq!(b.roles(a), (g, t), "{a:?} / {b:?}");
            }
        }
        assert_eq!(all[4].roles(&all[0]), (false, false));
    }
}
