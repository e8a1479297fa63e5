//! Unix sockets: what one is (from the kernel's socket diagnostics), what
//! waits to be read at it (peeked through SO_PEEK_OFF, so the program
//! loses nothing when it goes on), and the names they are bound or
//! connected to.

use std::collections::HashMap;
use std::os::fd::RawFd;

use nix::errno::Errno;

use super::tcp::SO_PEEK_OFF;
use super::SockOpts;
use crate::image::format::{Message, UnixEnd, UnixPeer};
use crate::sys::net;
use crate::unix_sockets::{UnixSocket, LISTEN};

/// Everything waiting to be read at `fd`, without taking it: messages one
/// by one with their sender's name (a stream's bytes as one message), and
/// whether descriptors or credentials travelling with them were dropped.
pub fn peek_all(fd: RawFd, ty: i32) -> Result<(Vec<Message>, bool), Errno> {
    let before = net::getsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF)?;
    net::setsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF, 0)?;
    let rcvbuf = net::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap_or(0);
    let mut buf = vec![0u8; (rcvbuf.max(0) as usize).max(256 * 1024) + 1];
    let mut out: Vec<Message> = Vec::new();
    let mut lost_ancillary = false;
    let stream = ty == libc::SOCK_STREAM;
    let result = (|| {
        for _ in 0..1_000_000 {
            let got = match net::recvmsg(fd, &mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
                Ok(g) => g,
                Err(Errno::EAGAIN) => return Ok(()),
                Err(e) => return Err(e),
            };
            if got.flags & libc::MSG_CTRUNC != 0 {
                lost_ancillary = true;
            }
            if got.flags & libc::MSG_TRUNC != 0 {
                return Err(Errno::EMSGSIZE);
            }
            // An empty read: a stream's end, or an empty datagram (which a
            // peek offset cannot step over).
            if got.len == 0 {
                return Ok(());
            }
            let data = buf[..got.len].to_vec();
            match out.last_mut() {
                Some(m) if stream => m.data.extend_from_slice(&data),
                _ => out.push(Message {
                    from: if stream {
                        Vec::new()
                    } else {
                        name_of(&got.from)
                    },
                    data,
                }),
            }
        }
        Ok(())
    })();
    let restored = net::setsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF, before);
    result?;
    restored?;
    Ok((out, lost_ancillary))
}

/// The name in a raw unix `sockaddr` (after the family): a path without
/// its NUL, an abstract name with its leading NUL, empty when unnamed.
pub fn name_of(raw: &[u8]) -> Vec<u8> {
    let Some(name) = raw.get(2..) else {
        return Vec::new();
    };
    if name.first() == Some(&0) {
        return name.to_vec();
    }
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    name[..end].to_vec()
}

/// A raw unix `sockaddr` for `name`.
pub fn sockaddr_un(name: &[u8]) -> Vec<u8> {
    let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
    a.extend_from_slice(name);
    if name.first() != Some(&0) {
        a.push(0);
    }
    a
}

/// How a name reads in messages (`@` for the leading NUL of abstract
/// names).
pub fn show(name: &[u8]) -> String {
    if name.is_empty() {
        return "(unnamed)".into();
    }
    String::from_utf8_lossy(name).replace('\0', "@")
}

/// Run `f` with the `sockaddr` of `name`, from directory `cwd` when it is
/// a relative path (names are resolved, and kept, as the program gave
/// them).
pub fn at_name<T>(
    name: &[u8],
    cwd: &str,
    f: impl FnOnce(&[u8]) -> Result<T, Errno>,
) -> Result<T, Errno> {
    let addr = sockaddr_un(name);
    if addr.len() > 110 {
        return Err(Errno::ENAMETOOLONG);
    }
    let relative = !name.is_empty() && name[0] != 0 && name[0] != b'/';
    if !relative {
        return f(&addr);
    }
    let _guard = CWD.lock();
    let back = std::env::current_dir().map_err(|_| Errno::ENOENT)?;
    std::env::set_current_dir(cwd).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(2)))?;
    let r = f(&addr);
    let _ = std::env::set_current_dir(back);
    r
}

/// Serializes the short changes of directory of [`at_name`].
static CWD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Remove a socket file left at `name` (a path) by a socket that is gone,
/// so it can be bound again.
pub fn remove_stale(name: &[u8], cwd: &str) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::FileTypeExt;
    if name.first().is_none_or(|&b| b == 0) {
        return;
    }
    let given = std::path::Path::new(std::ffi::OsStr::from_bytes(name));
    let path = std::path::Path::new(cwd).join(given);
    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(&path);
    }
}

/// A unix socket as the checkpoint keeps it; `held` says which sockets are
/// part of the checkpoint. The flag is true when descriptors in flight
/// had to be dropped.
pub fn capture(
    fd: RawFd,
    diag: &UnixSocket,
    all: &HashMap<u64, UnixSocket>,
    held: impl Fn(u64) -> bool,
) -> Result<(UnixEnd, bool), Errno> {
    let listening = (diag.state == LISTEN).then_some(diag.backlog.max(1));
    let (queued, lost) = if listening.is_some() {
        (Vec::new(), false)
    } else {
        peek_all(fd, diag.ty)?
    };
    let peer = (diag.peer != 0).then(|| UnixPeer {
        id: diag.peer,
        name: all
            .get(&diag.peer)
            .and_then(|p| p.name.clone())
            .unwrap_or_default(),
        held: held(diag.peer),
        alive: all.contains_key(&diag.peer),
        elsewhere: None,
    });
    Ok((
        UnixEnd {
            sock_type: diag.ty,
            name: diag.name.clone().unwrap_or_default(),
            listening,
            peer,
            queued,
            shutdown: diag.shutdown,
            options: SockOpts::read(fd, SockOpts::UNIX),
        },
        lost,
    ))
}
