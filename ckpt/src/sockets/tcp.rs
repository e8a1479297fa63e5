//! One end of a TCP connection through the kernel's TCP_REPAIR (as root;
//! CRIU's way): at a checkpoint its queues and sequence numbers are read
//! without consuming anything, and at restart a fresh socket is given the
//! same addresses, sequence numbers, options and queues, without a
//! handshake. Each end is made on its own; the other end's rebuild makes
//! the pair whole again.
//!
//! A checkpoint reads every send queue first ([`freeze`]) and every receive
//! queue after ([`capture`]): whatever an end had sent and its peer had
//! acknowledged by the time the send queue was read is in the peer's
//! receive queue when that is read (the peer's program is stopped, it reads
//! nothing), so no byte falls between the two. Bytes both hold are sent
//! again after the restart and dropped by the receiving kernel as
//! duplicates: each is delivered once.

use std::net::SocketAddr;
use std::os::fd::RawFd;

use nix::errno::Errno;

use super::{sockaddr, socket_addr, SockOpts};
use crate::image::format::{PeerPlace, TcpConnection};
use crate::sys::net;

const TCP_REPAIR: i32 = 19;
const TCP_REPAIR_QUEUE: i32 = 20;
const TCP_QUEUE_SEQ: i32 = 21;
const TCP_REPAIR_OPTIONS: i32 = 22;
const TCP_TIMESTAMP: i32 = 24;
const TCP_REPAIR_WINDOW: i32 = 29;
const TCP_NO_QUEUE: i32 = 0;
const TCP_RECV_QUEUE: i32 = 1;
const TCP_SEND_QUEUE: i32 = 2;
/// Leave repair mode without sending a window probe.
const TCP_REPAIR_OFF_NO_WP: i32 = -1;
const SIOCINQ: u64 = 0x541B;
const SIOCOUTQ: u64 = 0x5411;
const SIOCOUTQNSD: u64 = 0x894B;
pub(super) const SO_PEEK_OFF: i32 = 42;
const SO_SNDBUFFORCE: i32 = 32;
const SO_RCVBUFFORCE: i32 = 33;
const SO_BUF_LOCK: i32 = 72;

const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;
const TCPOPT_MAXSEG: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;

/// TCP states (include/net/tcp_states.h).
pub const ESTABLISHED: u8 = 1;
pub const SYN_SENT: u8 = 2;
const FIN_WAIT1: u8 = 4;
const FIN_WAIT2: u8 = 5;
pub const CLOSE: u8 = 7;
const CLOSE_WAIT: u8 = 8;
const LAST_ACK: u8 = 9;
pub const LISTEN: u8 = 10;
const CLOSING: u8 = 11;

/// States a connection can be rebuilt in (data may still flow one way).
pub fn restorable(state: u8) -> bool {
    matches!(
        state,
        ESTABLISHED | FIN_WAIT1 | FIN_WAIT2 | CLOSE_WAIT | LAST_ACK | CLOSING
    )
}

fn fin_sent(state: u8) -> bool {
    matches!(state, FIN_WAIT1 | FIN_WAIT2 | CLOSING | LAST_ACK)
}

fn fin_received(state: u8) -> bool {
    matches!(state, CLOSE_WAIT | LAST_ACK | CLOSING)
}

/// What the first phase of a checkpoint read from one end: its send side.
/// The socket stays in repair mode until [`thaw`] (or until it is closed,
/// silently, when the program is killed).
#[derive(Debug)]
pub struct Frozen {
    write_seq: u32,
    send_queue: Vec<u8>,
    /// SIOCOUTQNSD: bytes (and FIN) not sent yet.
    not_sent: u32,
    /// SO_REUSEADDR before repair mode (leaving repair mode clears it).
    reuseaddr: i32,
}

/// The kernel's TCP state of a socket.
pub fn state(fd: RawFd) -> Result<u8, Errno> {
    let info = net::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, 8)?;
    info.first().copied().ok_or(Errno::EINVAL)
}

/// A listener's backlog (TCP_INFO's `tcpi_sacked` holds it for listeners).
pub fn backlog(fd: RawFd) -> u32 {
    net::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, 40)
        .ok()
        .and_then(|i| {
            i.get(28..32)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        })
        .filter(|&b| b > 0)
        .unwrap_or(4096)
}

fn set(fd: RawFd, opt: i32, v: i32) -> Result<(), Errno> {
    net::setsockopt_int(fd, libc::IPPROTO_TCP, opt, v)
}

fn get_u32(fd: RawFd, opt: i32) -> Result<u32, Errno> {
    net::getsockopt_int(fd, libc::IPPROTO_TCP, opt).map(|v| v as u32)
}

/// Read `len` bytes (and check there are no more) of the queue the socket
/// is set to peek at.
fn peek_queue(fd: RawFd, len: usize) -> Result<Vec<u8>, Errno> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let mut buf = vec![0u8; len + 1];
    let got = net::recvmsg(fd, &mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT)?;
    if got.len != len {
        return Err(Errno::EAGAIN);
    }
    buf.truncate(len);
    Ok(buf)
}

/// Phase 1: repair mode on, read the send queue.
pub fn freeze(fd: RawFd) -> Result<Frozen, Errno> {
    let reuseaddr = net::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR).unwrap_or(0);
    set(fd, TCP_REPAIR, 1)?;
    let read = (|| {
        set(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)?;
        let mut tries = 0;
        loop {
            let write_seq = get_u32(fd, TCP_QUEUE_SEQ)?;
            let outq = net::ioctl_int(fd, SIOCOUTQ)?.max(0) as u32;
            let not_sent = net::ioctl_int(fd, SIOCOUTQNSD)?.max(0) as u32;
            // The queue holds the data; a FIN in it counts in SIOCOUTQ but
            // carries no byte.
            let data = peek_queue(fd, outq as usize)
                .or_else(|_| peek_queue(fd, outq.saturating_sub(1) as usize));
            match data {
                Ok(send_queue) => {
                    return Ok(Frozen {
                        write_seq,
                        send_queue,
                        not_sent,
                        reuseaddr,
                    })
                }
                // An acknowledgment shrank the queue meanwhile: again.
                Err(Errno::EAGAIN) if tries < 100 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    })();
    let _ = set(fd, TCP_REPAIR_QUEUE, TCP_NO_QUEUE);
    if read.is_err() {
        let _ = set(fd, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP);
    }
    read
}

/// Leave repair mode as if nothing happened (the program goes on).
pub fn thaw(fd: RawFd, frozen: &Frozen) {
    let _ = set(fd, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP);
    if frozen.reuseaddr != 0 {
        let _ = net::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, frozen.reuseaddr);
    }
}

/// Phase 2: the receive side, options and addresses of a frozen end.
pub fn capture(fd: RawFd, frozen: &Frozen, peer: PeerPlace) -> Result<TcpConnection, Errno> {
    let info = net::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, 8)?;
    let (state, tcp_options, wscale) = match info.as_slice() {
        [s, _, _, _, _, o, w, ..] => (*s, *o, *w),
        _ => return Err(Errno::EINVAL),
    };
    set(fd, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)?;
    let peek_off = net::getsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF).unwrap_or(-1);
    let received = (|| {
        for _ in 0..100 {
            let rcv_nxt = get_u32(fd, TCP_QUEUE_SEQ)?;
            let inq = net::ioctl_int(fd, SIOCINQ)?.max(0) as usize;
            if peek_off >= 0 {
                net::setsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF, 0)?;
            }
            let data = peek_queue(fd, inq);
            if peek_off >= 0 {
                let _ = net::setsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF, peek_off);
            }
            // Still the same queue (nothing arrived while reading it)?
            if get_u32(fd, TCP_QUEUE_SEQ)? == rcv_nxt {
                match data {
                    Ok(d) => return Ok((rcv_nxt, d)),
                    Err(Errno::EAGAIN) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Err(Errno::EAGAIN)
    })();
    let _ = set(fd, TCP_REPAIR_QUEUE, TCP_NO_QUEUE);
    let (rcv_nxt, received) = received?;
    let mss = get_u32(fd, libc::TCP_MAXSEG)?;
    let timestamp = if tcp_options & TCPI_OPT_TIMESTAMPS != 0 {
        get_u32(fd, TCP_TIMESTAMP)?
    } else {
        0
    };
    let window = net::getsockopt(fd, libc::IPPROTO_TCP, TCP_REPAIR_WINDOW, 20)
        .ok()
        .filter(|w| w.len() == 20)
        .map(|w| {
            let mut out = [0u32; 5];
            for (i, v) in out.iter_mut().enumerate() {
                *v = u32::from_ne_bytes([w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]]);
            }
            out
        });
    let local = net::sockname(fd)
        .ok()
        .and_then(|a| socket_addr(&a))
        .ok_or(Errno::ENOTCONN)?;
    let remote = net::peername(fd)
        .ok()
        .and_then(|a| socket_addr(&a))
        .ok_or(Errno::ENOTCONN)?;
    let sol = |o| net::getsockopt_int(fd, libc::SOL_SOCKET, o).unwrap_or(0) as u32;
    let mut options = SockOpts::read(fd, SockOpts::TCP);
    options.retain(|o| !(o.level == libc::SOL_SOCKET && o.name == libc::SO_REUSEADDR));
    options.push(crate::image::format::SockOpt {
        level: libc::SOL_SOCKET,
        name: libc::SO_REUSEADDR,
        value: frozen.reuseaddr.to_ne_bytes().to_vec(),
    });
    // Sequence numbers without the FINs: each end sends its own FIN again.
    let fin_out = fin_sent(state);
    let fin_in = fin_received(state);
    let write_seq = frozen.write_seq.wrapping_sub(u32::from(fin_out));
    let queue = &frozen.send_queue;
    let not_sent = if fin_out {
        frozen.not_sent.saturating_sub(1)
    } else {
        frozen.not_sent
    };
    let split = queue.len().saturating_sub(not_sent as usize);
    Ok(TcpConnection {
        local,
        remote,
        state,
        peer,
        snd_una: write_seq.wrapping_sub(queue.len() as u32),
        sent: queue[..split].to_vec(),
        unsent: queue[split..].to_vec(),
        fin_sent: fin_out,
        copied_seq: rcv_nxt
            .wrapping_sub(u32::from(fin_in))
            .wrapping_sub(received.len() as u32),
        received,
        fin_received: fin_in,
        mss,
        tcp_options,
        snd_wscale: wscale & 0xf,
        rcv_wscale: wscale >> 4,
        timestamp,
        window,
        sndbuf: sol(libc::SO_SNDBUF),
        rcvbuf: sol(libc::SO_RCVBUF),
        buf_lock: sol(SO_BUF_LOCK),
        options,
    })
}

/// Send all of `data` in repair mode into the queue selected, in pieces
/// the kernel accepts (a repaired receive queue takes linear buffers: big
/// ones may not be allocatable).
fn fill(fd: RawFd, data: &[u8]) -> Result<(), Errno> {
    let mut chunk = data.len().max(1);
    let mut off = 0;
    while off < data.len() {
        let end = (off + chunk).min(data.len());
        match net::sendto(fd, &data[off..end], libc::MSG_DONTWAIT, &[]) {
            Ok(0) => return Err(Errno::EIO),
            Ok(n) => off += n,
            Err(Errno::ENOMEM | Errno::EAGAIN) if chunk > 1024 => chunk /= 2,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Make `fd` (a fresh socket of the right family) the end `c` describes,
/// between `local` and `remote`, in repair mode: nothing is sent until
/// [`release`].
pub fn build(
    fd: RawFd,
    c: &TcpConnection,
    local: SocketAddr,
    remote: SocketAddr,
) -> Result<(), String> {
    let step = |what: &str, r: Result<(), Errno>| r.map_err(|e| format!("{what}: {}", e.desc()));
    // Options that matter for bind first: repair mode then forces the
    // address to be reusable.
    SockOpts::apply(fd, &c.options, true);
    step("TCP_REPAIR", set(fd, TCP_REPAIR, 1))?;
    // Room for the queues: the new socket's buffers start small.
    let room =
        |have: u32, need: usize| (have as usize).max(need * 2 + 65536).min(i32::MAX as usize);
    let _ = net::setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        SO_SNDBUFFORCE,
        (room(c.sndbuf, c.sent.len() + c.unsent.len()) / 2) as i32,
    );
    let _ = net::setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        SO_RCVBUFFORCE,
        (room(c.rcvbuf, c.received.len()) / 2) as i32,
    );
    step("bind", net::bind(fd, &sockaddr(&local)))?;
    step("receive queue", set(fd, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE))?;
    step(
        "receive sequence",
        set(fd, TCP_QUEUE_SEQ, c.copied_seq as i32),
    )?;
    step("send queue", set(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE))?;
    step("send sequence", set(fd, TCP_QUEUE_SEQ, c.snd_una as i32))?;
    step("connect", net::connect(fd, &sockaddr(&remote)))?;
    let mut opts: Vec<u8> = Vec::new();
    let mut opt = |code: u32, val: u32| {
        opts.extend_from_slice(&code.to_ne_bytes());
        opts.extend_from_slice(&val.to_ne_bytes());
    };
    if c.tcp_options & TCPI_OPT_SACK != 0 {
        opt(TCPOPT_SACK_PERM, 0);
    }
    if c.tcp_options & TCPI_OPT_WSCALE != 0 {
        opt(
            TCPOPT_WINDOW,
            u32::from(c.snd_wscale) | (u32::from(c.rcv_wscale) << 16),
        );
    }
    if c.tcp_options & TCPI_OPT_TIMESTAMPS != 0 {
        opt(TCPOPT_TIMESTAMP, 0);
    }
    opt(TCPOPT_MAXSEG, c.mss);
    step(
        "TCP_REPAIR_OPTIONS",
        net::setsockopt(fd, libc::IPPROTO_TCP, TCP_REPAIR_OPTIONS, &opts),
    )?;
    if c.tcp_options & TCPI_OPT_TIMESTAMPS != 0 {
        step("TCP_TIMESTAMP", set(fd, TCP_TIMESTAMP, c.timestamp as i32))?;
    }
    if !c.received.is_empty() {
        step("receive queue", set(fd, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE))?;
        step("refill the receive queue", fill(fd, &c.received))?;
    }
    if !c.sent.is_empty() {
        step("send queue", set(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE))?;
        step("refill the send queue", fill(fd, &c.sent))?;
    }
    let _ = set(fd, TCP_REPAIR_QUEUE, TCP_NO_QUEUE);
    if let Some(w) = c.window {
        let mut bytes = Vec::with_capacity(20);
        // The receive window's left edge cannot lie past what was received.
        let rcv_nxt = c.copied_seq.wrapping_add(c.received.len() as u32);
        let rcv_wup = if (rcv_nxt.wrapping_sub(w[4]) as i32) < 0 {
            rcv_nxt
        } else {
            w[4]
        };
        for v in [w[0], w[1], w[2], w[3], rcv_wup] {
            bytes.extend_from_slice(&v.to_ne_bytes());
        }
        // Not fatal: the first acknowledgment sets the window anyway.
        if let Err(e) = net::setsockopt(fd, libc::IPPROTO_TCP, TCP_REPAIR_WINDOW, &bytes) {
            tracing::debug!("TCP_REPAIR_WINDOW: {e}");
        }
    }
    Ok(())
}

/// Leave repair mode: the end talks to its peer again. What had not been
/// sent is sent, then the FIN if the program had shut its side down; the
/// socket options that repair mode hid are put back.
pub fn release(fd: RawFd, c: &TcpConnection) -> Result<(), String> {
    set(fd, TCP_REPAIR, 0).map_err(|e| format!("leaving repair mode: {}", e.desc()))?;
    let mut off = 0;
    let mut waited = 0;
    while off < c.unsent.len() {
        match net::sendto(fd, &c.unsent[off..], libc::MSG_DONTWAIT, &[]) {
            Ok(n) => off += n,
            Err(Errno::EAGAIN) if waited < 10_000 => {
                waited += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => return Err(format!("sending what was not sent yet: {}", e.desc())),
        }
    }
    if c.fin_sent {
        net::shutdown(fd, libc::SHUT_WR).map_err(|e| format!("shutdown: {}", e.desc()))?;
    }
    SockOpts::apply(fd, &c.options, false);
    let reuse = c
        .options
        .iter()
        .any(|o| o.level == libc::SOL_SOCKET && o.name == libc::SO_REUSEADDR && o.value != [0; 4]);
    let _ = net::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, i32::from(reuse));
    // The buffers grow by themselves again unless the program fixed them.
    if c.buf_lock & 1 != 0 {
        let _ = net::setsockopt_int(fd, libc::SOL_SOCKET, SO_SNDBUFFORCE, (c.sndbuf / 2) as i32);
    }
    if c.buf_lock & 2 != 0 {
        let _ = net::setsockopt_int(fd, libc::SOL_SOCKET, SO_RCVBUFFORCE, (c.rcvbuf / 2) as i32);
    }
    let _ = net::setsockopt_int(fd, libc::SOL_SOCKET, SO_BUF_LOCK, c.buf_lock as i32);
    Ok(())
}

/// A one-line description: `127.0.0.1:5000 -> 127.0.0.1:41234`.
pub fn describe(local: &SocketAddr, remote: &SocketAddr) -> String {
    format!("TCP {local} -> {remote}")
}

/// One line of `/proc/PID/net/tcp` or `tcp6`: a TCP socket of the
/// process's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    /// Bytes not acknowledged yet (sending), not read yet (receiving).
    pub tx_queue: u32,
    pub rx_queue: u32,
    /// 0 for a connection in a listener's accept queue (no file yet).
    pub inode: u64,
}

/// An address of `/proc/net/tcp*`: the address's bytes as host-order
/// 32-bit words in hex, then the port in hex.
fn listed_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes: Vec<u8> = Vec::with_capacity(16);
    for i in (0..ip.len()).step_by(8) {
        let word = u32::from_str_radix(ip.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes.as_slice()).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes.as_slice()).ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Every TCP socket of the network namespace of process `pid`.
pub fn listed(pid: libc::pid_t) -> Vec<Listed> {
    let mut out = Vec::new();
    for file in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let parsed = (|| {
                let (tx, rx) = f.get(4)?.split_once(':')?;
                Some(Listed {
                    local: listed_addr(f.get(1)?)?,
                    remote: listed_addr(f.get(2)?)?,
                    state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                    tx_queue: u32::from_str_radix(tx, 16).ok()?,
                    rx_queue: u32::from_str_radix(rx, 16).ok()?,
                    inode: f.get(9)?.parse().ok()?,
                })
            })();
            out.extend(parsed);
        }
    }
    out
}

/// Whether nothing waits in either queue of the TCP socket `fd`.
pub fn quiet(fd: RawFd) -> bool {
    matches!(net::ioctl_int(fd, SIOCINQ), Ok(0)) && matches!(net::ioctl_int(fd, SIOCOUTQ), Ok(0))
}

/// TCP_INFO's `tcpi_last_ack_recv`: milliseconds since the socket last
/// received an acknowledgment (for a connection that exchanged nothing,
/// since its handshake).
pub fn last_ack_recv(fd: RawFd) -> u32 {
    net::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, 60)
        .ok()
        .and_then(|i| {
            i.get(56..60)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        })
        .unwrap_or(0)
}

/// Bind the fresh TCP socket `fd` to `addr` even where connections of
/// the killed program linger on that port in TIME_WAIT (a listener that
/// closed connections itself): SO_REUSEADDR does not pass those when the
/// program's sockets lacked it, so they are dropped first (socket
/// diagnostics' SOCK_DESTROY, as root; `ss -K` does the same). The
/// program's SO_REUSEADDR is put back.
pub fn bind_again(fd: RawFd, addr: &SocketAddr) -> Result<(), Errno> {
    let reuse = net::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR).unwrap_or(0);
    let _ = net::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
    let mut bound = net::bind(fd, &sockaddr(addr));
    if bound == Err(Errno::EADDRINUSE) && forget_time_wait(addr).unwrap_or(0) > 0 {
        bound = net::bind(fd, &sockaddr(addr));
    }
    let _ = net::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, reuse);
    bound
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TIME_WAIT: u32 = 6;

/// nlmsghdr + inet_diag_req_v2 for TCP sockets of `family` in TIME_WAIT,
/// `id` (struct inet_diag_sockid, 48 bytes) naming one socket or zeros.
fn diag_request(ty: u16, flags: u16, family: i32, id: &[u8]) -> Vec<u8> {
    let mut req = Vec::with_capacity(72);
    req.extend_from_slice(&72u32.to_ne_bytes());
    req.extend_from_slice(&ty.to_ne_bytes());
    req.extend_from_slice(&flags.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.push(family as u8);
    req.push(libc::IPPROTO_TCP as u8);
    req.push(0);
    req.push(0);
    req.extend_from_slice(&(1u32 << TIME_WAIT).to_ne_bytes());
    let mut sockid = id.to_vec();
    sockid.resize(48, 0);
    req.extend_from_slice(&sockid);
    req
}

/// Drop the TCP connections in TIME_WAIT whose local address is `addr`
/// (any address of the port when it is unspecified); how many went.
pub fn forget_time_wait(addr: &SocketAddr) -> Result<usize, Errno> {
    use nix::sys::socket::{
        bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
        SockType,
    };
    use std::os::fd::AsRawFd;
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let nl = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    bind(nl.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
    send(
        nl.as_raw_fd(),
        &diag_request(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, family, &[]),
        MsgFlags::empty(),
    )?;
    let port = addr.port().to_be_bytes();
    let ip: Vec<u8> = match addr.ip() {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    let mut ids: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    'dump: loop {
        let n = recv(nl.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        let mut b = &buf[..n];
        if n == 0 {
            break;
        }
        while b.len() >= 16 {
            let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
            let ty = u16::from_ne_bytes([b[4], b[5]]);
            if len < 16 || len > b.len() || ty == NLMSG_DONE || ty == NLMSG_ERROR {
                break 'dump;
            }
            // struct inet_diag_msg: family, state, timer, retrans, then the
            // sockid: sport, dport, src[16], dst[16], if, cookie[2].
            if let Some(id) = b.get(20..68) {
                let src = &id[4..4 + ip.len()];
                if id[0..2] == port && (addr.ip().is_unspecified() || src == ip.as_slice()) {
                    ids.push(id.to_vec());
                }
            }
            b = &b[len..];
        }
    }
    let mut gone = 0;
    for id in ids {
        let req = diag_request(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, family, &id);
        if send(nl.as_raw_fd(), &req, MsgFlags::empty()).is_err() {
            continue;
        }
        let n = recv(nl.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        // An NLMSG_ERROR whose error is 0 acknowledges it.
        if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR && buf[16..20] == [0; 4] {
            gone += 1;
        }
    }
    Ok(gone)
}

#[cfg(test)]
mod listed_tests {
    use super::*;

    #[test]
    fn proc_net_tcp_addresses() {
        assert_eq!(
            listed_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            listed_addr("00000000000000000000000001000000:0016"),
            Some("[::1]:22".parse().unwrap())
        );
        assert_eq!(
            listed_addr("0000000000000000FFFF00000100007F:0050"),
            Some("[::ffff:127.0.0.1]:80".parse().unwrap())
        );
        assert_eq!(listed_addr("zz:1"), None);
    }
}
