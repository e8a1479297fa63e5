//! Socket calls the `nix` crate does not cover the way the socket code
//! needs them: socket options as raw bytes (TCP_REPAIR and its friends),
//! addresses as raw `sockaddr` bytes, the queue-size ioctls, and peeking
//! with the sender's address.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

/// Largest `sockaddr` any family uses (`sockaddr_storage`).
const SOCKADDR_MAX: usize = 128;

/// A `sockaddr` with `sockaddr_storage`'s alignment.
#[repr(C, align(8))]
struct Sockaddr([u8; SOCKADDR_MAX]);

impl Sockaddr {
    fn of(addr: &[u8]) -> Result<Sockaddr, Errno> {
        let mut s = Sockaddr([0; SOCKADDR_MAX]);
        s.0.get_mut(..addr.len())
            .ok_or(Errno::EINVAL)?
            .copy_from_slice(addr);
        Ok(s)
    }
}

/// `socket(domain, ty, protocol)`, close-on-exec.
pub fn socket(domain: i32, ty: i32, protocol: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: socket takes plain integers and returns a new descriptor or -1.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `socketpair(AF_UNIX, ty)`, close-on-exec.
pub fn socketpair(ty: i32) -> Result<(OwnedFd, OwnedFd), Errno> {
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: socketpair writes two ints into `fds`, which has room for them.
    let r =
        unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    if r != 0 {
        return Err(Errno::last());
    }
    // SAFETY: both descriptors were just returned by the kernel, owned by
    // nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The value of a socket option, at most `len` bytes of it.
pub fn getsockopt(fd: RawFd, level: i32, name: i32, len: usize) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; len];
    let mut got = len as libc::socklen_t;
    // SAFETY: the kernel writes at most `got` bytes into `buf` (which holds
    // `len`) and the length it wrote into `got`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            buf.as_mut_ptr().cast(),
            &mut got as *mut libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(Errno::last());
    }
    buf.truncate((got as usize).min(len));
    Ok(buf)
}

/// Set a socket option to raw bytes.
pub fn setsockopt(fd: RawFd, level: i32, name: i32, value: &[u8]) -> Result<(), Errno> {
    // SAFETY: the kernel reads `value.len()` bytes from `value`.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// An int-valued socket option.
pub fn getsockopt_int(fd: RawFd, level: i32, name: i32) -> Result<i32, Errno> {
    let b = getsockopt(fd, level, name, 4)?;
    let b: [u8; 4] = b.get(..4).and_then(|s| s.try_into().ok()).unwrap_or([0; 4]);
    Ok(i32::from_ne_bytes(b))
}

/// Set an int-valued socket option.
pub fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> Result<(), Errno> {
    setsockopt(fd, level, name, &value.to_ne_bytes())
}

/// An ioctl that writes one int (SIOCINQ, SIOCOUTQ, SIOCOUTQNSD).
pub fn ioctl_int(fd: RawFd, request: u64) -> Result<i32, Errno> {
    let mut n: libc::c_int = 0;
    // SAFETY: the requests callers pass write one int to the pointer.
    if unsafe { libc::ioctl(fd, request as _, &mut n as *mut libc::c_int) } != 0 {
        return Err(Errno::last());
    }
    Ok(n)
}

fn name_call(
    fd: RawFd,
    call: unsafe extern "C" fn(
        libc::c_int,
        *mut libc::sockaddr,
        *mut libc::socklen_t,
    ) -> libc::c_int,
) -> Result<Vec<u8>, Errno> {
    let mut buf = [0u8; SOCKADDR_MAX];
    let mut len = SOCKADDR_MAX as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `buf` and the
    // address's length into `len`.
    let r = unsafe { call(fd, buf.as_mut_ptr().cast(), &mut len) };
    if r != 0 {
        return Err(Errno::last());
    }
    Ok(buf[..(len as usize).min(SOCKADDR_MAX)].to_vec())
}

/// The socket's own address, as raw `sockaddr` bytes.
pub fn sockname(fd: RawFd) -> Result<Vec<u8>, Errno> {
    name_call(fd, libc::getsockname)
}

/// The connected peer's address, as raw `sockaddr` bytes.
pub fn peername(fd: RawFd) -> Result<Vec<u8>, Errno> {
    name_call(fd, libc::getpeername)
}

fn addr_call(
    fd: RawFd,
    addr: &[u8],
    call: unsafe extern "C" fn(libc::c_int, *const libc::sockaddr, libc::socklen_t) -> libc::c_int,
) -> Result<(), Errno> {
    let storage = Sockaddr::of(addr)?;
    // SAFETY: the kernel reads `addr.len()` bytes of the aligned copy.
    let r = unsafe { call(fd, storage.0.as_ptr().cast(), addr.len() as libc::socklen_t) };
    if r != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `bind` to a raw `sockaddr`.
pub fn bind(fd: RawFd, addr: &[u8]) -> Result<(), Errno> {
    addr_call(fd, addr, libc::bind)
}

/// `connect` to a raw `sockaddr`.
pub fn connect(fd: RawFd, addr: &[u8]) -> Result<(), Errno> {
    addr_call(fd, addr, libc::connect)
}

/// `listen`.
pub fn listen(fd: RawFd, backlog: i32) -> Result<(), Errno> {
    // SAFETY: listen takes plain integers.
    if unsafe { libc::listen(fd, backlog) } != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `accept4` without waiting (EAGAIN when nobody is queued), close-on-exec.
pub fn accept_now(fd: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: null address pointers ask for no peer address.
    let r = unsafe {
        libc::accept4(
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: r was just returned by the kernel, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(r) };
    // The accepted socket's file is blocking, as an accept would give it.
    set_nonblocking(std::os::fd::AsRawFd::as_raw_fd(&fd), false)?;
    Ok(fd)
}

/// Set or clear O_NONBLOCK on `fd`.
pub fn set_nonblocking(fd: RawFd, on: bool) -> Result<(), Errno> {
    // SAFETY: F_GETFL takes no pointer.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        return Err(Errno::last());
    }
    let fl = if on {
        fl | libc::O_NONBLOCK
    } else {
        fl & !libc::O_NONBLOCK
    };
    // SAFETY: F_SETFL takes a plain int.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, fl) } != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// What one `recvmsg` gave.
pub struct Received {
    pub len: usize,
    /// The sender's address (raw `sockaddr`; empty when it has none).
    pub from: Vec<u8>,
    /// MSG_TRUNC, MSG_CTRUNC...
    pub flags: i32,
}

/// `recvmsg` into `buf` with the sender's address and no control buffer
/// (descriptors in flight are never installed here).
pub fn recvmsg(fd: RawFd, buf: &mut [u8], flags: i32) -> Result<Received, Errno> {
    let mut name = [0u8; SOCKADDR_MAX];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = name.as_mut_ptr().cast();
    msg.msg_namelen = SOCKADDR_MAX as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: every pointer in `msg` points to a live buffer of the length
    // given with it.
    let r = unsafe { libc::recvmsg(fd, &mut msg, flags) };
    if r < 0 {
        return Err(Errno::last());
    }
    let namelen = (msg.msg_namelen as usize).min(SOCKADDR_MAX);
    Ok(Received {
        len: r as usize,
        from: name[..namelen].to_vec(),
        flags: msg.msg_flags,
    })
}

/// `sendto` (`to` empty: `send`).
pub fn sendto(fd: RawFd, data: &[u8], flags: i32, to: &[u8]) -> Result<usize, Errno> {
    let storage = Sockaddr::of(to)?;
    let (addr, len) = if to.is_empty() {
        (std::ptr::null(), 0)
    } else {
        (
            storage.0.as_ptr().cast::<libc::sockaddr>(),
            to.len() as libc::socklen_t,
        )
    };
    // SAFETY: the kernel reads `data.len()` bytes of `data` and `len` bytes
    // of the aligned address copy (or no address).
    let r = unsafe { libc::sendto(fd, data.as_ptr().cast(), data.len(), flags, addr, len) };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(r as usize)
}

/// `shutdown(fd, how)`.
pub fn shutdown(fd: RawFd, how: i32) -> Result<(), Errno> {
    // SAFETY: shutdown takes plain integers.
    if unsafe { libc::shutdown(fd, how) } != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// The addresses of this network namespace's interfaces (getifaddrs), as
/// raw `sockaddr` bytes of their family's size.
pub fn interface_addresses() -> Result<Vec<Vec<u8>>, Errno> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `list` that we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(Errno::last());
    }
    let mut out = Vec::new();
    let mut at = list;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getifaddrs returned, not yet
        // freed.
        let node = unsafe { &*at };
        if !node.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says its
            // size; sa_family is readable in every one.
            let family = i32::from(unsafe { (*node.ifa_addr).sa_family });
            let size = match family {
                libc::AF_INET => std::mem::size_of::<libc::sockaddr_in>(),
                libc::AF_INET6 => std::mem::size_of::<libc::sockaddr_in6>(),
                _ => 0,
            };
            if size > 0 {
                // SAFETY: the kernel's sockaddr of that family is `size`
                // bytes long.
                let bytes = unsafe { std::slice::from_raw_parts(node.ifa_addr.cast::<u8>(), size) };
                out.push(bytes.to_vec());
            }
        }
        at = node.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(out)
}

/// Send descriptors over a connected unix socket (SCM_RIGHTS), with one
/// byte of data.
pub fn send_fds(fd: RawFd, fds: &[RawFd]) -> Result<(), Errno> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    let iov = [std::io::IoSlice::new(b"F")];
    sendmsg::<UnixAddr>(
        fd,
        &iov,
        &[ControlMessage::ScmRights(fds)],
        MsgFlags::empty(),
        None,
    )
    .map(drop)
}

/// Receive the descriptors (up to 4) sent by [`send_fds`] (close-on-exec).
pub fn recv_fds(fd: RawFd) -> Result<Vec<OwnedFd>, Errno> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<UnixAddr>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut out = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: SCM_RIGHTS installed `raw` in this process just
                // now; nothing else owns it.
                out.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
    }
    Ok(out)
}
