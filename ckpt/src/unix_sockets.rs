//! Unix sockets as the kernel's socket diagnostics (`NETLINK_SOCK_DIAG`)
//! describe them: type, state, peer, name, backlog, by inode. The socket
//! census (`crate::sockets`) uses it to pair the ends of connections and to
//! find listeners and bound sockets.

use std::collections::HashMap;
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};

use crate::Error;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const UDIAG_SHOW_NAME: u32 = 1;
const UDIAG_SHOW_PEER: u32 = 4;
const UDIAG_SHOW_ICONS: u32 = 8;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_ICONS: u16 = 3;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;
/// TCP_LISTEN, the state of a listening unix socket.
pub const LISTEN: u8 = 10;

/// One unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocket {
    /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
    pub ty: i32,
    /// TCP_* state numbers (LISTEN for a listener).
    pub state: u8,
    /// The peer's inode, 0 when not connected.
    pub peer: u64,
    /// The address it is bound to (a path, or an abstract name starting
    /// with a NUL byte), if any.
    pub name: Option<Vec<u8>>,
    /// A listener's backlog (the most connections it queues).
    pub backlog: u32,
    /// sk_shutdown: 1 no more reading, 2 no more writing.
    pub shutdown: u8,
    /// A listener's connections not accepted yet: their clients' inodes,
    /// in the order `accept` returns them (a client of such a connection
    /// has no peer here: the other end has no inode until accepted).
    pub pending: Vec<u64>,
    /// Bytes this socket sent that its peer has not read yet (not for a
    /// listener).
    pub unread_sent: u32,
}

/// Every unix socket of this network namespace, by inode.
pub fn all() -> Result<HashMap<u64, UnixSocket>, Error> {
    let io = |what: &str, e: nix::errno::Errno| Error::Tracee(format!("sock_diag {what}: {e}"));
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .map_err(|e| io("socket", e))?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| io("bind", e))?;
    send(fd.as_raw_fd(), &request(), MsgFlags::empty()).map_err(|e| io("send", e))?;
    let mut out = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(|e| io("recv", e))?;
        if n == 0 {
            return Ok(out);
        }
        if parse(&buf[..n], &mut out) {
            return Ok(out);
        }
    }
}

/// nlmsghdr + unix_diag_req asking for every socket with its peer.
fn request() -> Vec<u8> {
    let mut req = Vec::with_capacity(40);
    req.extend_from_slice(&40u32.to_ne_bytes()); // nlmsg_len
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
                                                // struct unix_diag_req { u8 family, protocol; u16 pad; u32 states, ino,
                                                // show, cookie[2]; }
    req.push(libc::AF_UNIX as u8);
    req.push(0);
    req.extend_from_slice(&0u16.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(
        &(UDIAG_SHOW_PEER | UDIAG_SHOW_NAME | UDIAG_SHOW_RQLEN | UDIAG_SHOW_ICONS).to_ne_bytes(),
    );
    req.extend_from_slice(&[0xff; 8]);
    req
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    b.get(o..o + 2)
        .map(|s| u16::from_ne_bytes([s[0], s[1]]))
        .unwrap_or(0)
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

/// Add the sockets of one datagram of replies; true at the end of the dump.
fn parse(mut b: &[u8], out: &mut HashMap<u64, UnixSocket>) -> bool {
    while b.len() >= 16 {
        let len = u32_at(b, 0) as usize;
        let ty = u16_at(b, 4);
        if len < 16 || len > b.len() {
            return true;
        }
        if ty == NLMSG_DONE || ty == NLMSG_ERROR {
            return true;
        }
        let msg = &b[16..len];
        // struct unix_diag_msg { u8 family, type, state, pad; u32 ino,
        // cookie[2]; } then attributes.
        if msg.len() >= 16 {
            let ino = u64::from(u32_at(msg, 4));
            let mut sock = UnixSocket {
                ty: i32::from(msg[1]),
                state: msg[2],
                peer: 0,
                name: None,
                backlog: 0,
                shutdown: 0,
                pending: Vec::new(),
                unread_sent: 0,
            };
            let mut attrs = &msg[16..];
            while attrs.len() >= 4 {
                let alen = usize::from(u16_at(attrs, 0));
                if alen < 4 || alen > attrs.len() {
                    break;
                }
                match u16_at(attrs, 2) {
                    UNIX_DIAG_PEER => sock.peer = u64::from(u32_at(attrs, 4)),
                    // struct unix_diag_rqlen { u32 rqueue, wqueue; }: for a
                    // listener, queued connections and the backlog.
                    UNIX_DIAG_RQLEN if sock.state == LISTEN => sock.backlog = u32_at(attrs, 8),
                    UNIX_DIAG_RQLEN => sock.unread_sent = u32_at(attrs, 8),
                    // An array of u32 inodes.
                    UNIX_DIAG_ICONS => {
                        sock.pending = (4..alen)
                            .step_by(4)
                            .map(|o| u64::from(u32_at(attrs, o)))
                            .filter(|&i| i != 0)
                            .collect();
                    }
                    UNIX_DIAG_SHUTDOWN => sock.shutdown = attrs.get(4).copied().unwrap_or(0),
                    UNIX_DIAG_NAME => {
                        let mut name = attrs[4..alen].to_vec();
                        // A path ends at its NUL; an abstract name (leading
                        // NUL) is exactly its length.
                        if name.first() != Some(&0) {
                            if let Some(end) = name.iter().position(|&b| b == 0) {
                                name.truncate(end);
                            }
                        }
                        sock.name = Some(name);
                    }
                    _ => {}
                }
                let step = ((alen + 3) & !3).min(attrs.len());
                attrs = &attrs[step..];
            }
            out.insert(ino, sock);
        }
        let next = (len + 3) & !3;
        b = &b[next.min(b.len())..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn finds_both_ends_of_a_socket_pair() {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let ino = |s: &std::os::unix::net::UnixStream| {
            std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd()))
                .map(|m| m.ino())
                .expect("fd metadata")
        };
        let all = all().expect("sock_diag");
        let (ia, ib) = (ino(&a), ino(&b));
        assert_eq!(all.get(&ia).map(|s| s.peer), Some(ib));
        assert_eq!(all.get(&ib).map(|s| s.peer), Some(ia));
        assert_eq!(all.get(&ia).map(|s| s.ty), Some(libc::SOCK_STREAM));
        let dir = std::env::temp_dir().join(format!("rewind-diag-{}", std::process::id()));
        let path = dir.with_extension("sock");
        let l = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let all = super::all().expect("sock_diag");
        let s = all
            .get(
                &std::fs::metadata(format!("/proc/self/fd/{}", l.as_raw_fd()))
                    .map(|m| m.ino())
                    .expect("fd metadata"),
            )
            .cloned()
            .expect("the listener");
        let _ = std::fs::remove_file(&path);
        assert_eq!(s.state, LISTEN);
        assert_eq!(s.name, Some(path.as_os_str().as_encoded_bytes().to_vec()));
    }

    #[test]
    fn lists_connections_not_accepted_yet() {
        use std::io::Write;
        let path =
            std::env::temp_dir().join(format!("rewind-diag-pending-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let l = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let c1 = std::os::unix::net::UnixStream::connect(&path).expect("connect");
        let mut c2 = std::os::unix::net::UnixStream::connect(&path).expect("connect");
        c2.write_all(b"hello").expect("write");
        let ino = |fd: i32| {
            std::fs::metadata(format!("/proc/self/fd/{fd}"))
                .map(|m| m.ino())
                .expect("fd metadata")
        };
        let all = all().expect("sock_diag");
        let _ = std::fs::remove_file(&path);
        let listener = all.get(&ino(l.as_raw_fd())).expect("the listener");
        let clients = [ino(c1.as_raw_fd()), ino(c2.as_raw_fd())];
        assert_eq!(listener.pending, clients, "{listener:?}");
        let sent = |i: u64| all.get(&i).map(|c| c.unread_sent > 0);
        assert_eq!(sent(clients[0]), Some(false));
        assert_eq!(sent(clients[1]), Some(true));
    }
}
