//! Syscalls made by the program itself (injected), with a buffer mapped in
//! it for their arguments: the tun descriptors, the interface and its
//! network namespace are the program's, not rewind's.

use libc::pid_t;
use rewind_ckpt::tracee::{errno_text, Injector, Tracee};
use rewind_ckpt::Error;

use crate::consts::*;
use crate::netlink;

/// Size of the buffer: any packet (64 KiB plus headers) or a netlink
/// datagram fits.
pub const BUF_LEN: u64 = 1 << 17;

pub struct Prog<'a> {
    pub tracee: &'a Tracee,
    inj: &'a Injector,
    tid: pid_t,
    /// The buffer mapped in the program for the time of the operation.
    pub buf: u64,
}

/// An errno, for messages.
pub fn errno_name(ret: i64) -> String {
    errno_text(ret)
}

impl<'a> Prog<'a> {
    /// Run `f` with a buffer mapped in the program; it is unmapped after,
    /// whatever `f` returns.
    pub fn with<T>(
        tracee: &'a Tracee,
        inj: &'a Injector,
        f: impl FnOnce(&Prog) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let tid = tracee.pid;
        inj.with_buffer(tid, "tun plugin buffer", BUF_LEN, |buf| {
            f(&Prog {
                tracee,
                inj,
                tid,
                buf,
            })
        })
    }

    /// The raw result (negative errno on failure); Err only when the
    /// injection itself failed.
    pub fn sys(&self, nr: i64, args: &[u64]) -> Result<i64, Error> {
        self.inj.syscall(self.tid, nr, args)
    }

    /// Fails with the syscall's name on a negative result.
    pub fn call(&self, what: &str, nr: i64, args: &[u64]) -> Result<u64, Error> {
        self.inj.call(self.tid, what, nr, args)
    }

    pub fn put(&self, off: u64, bytes: &[u8]) -> Result<u64, Error> {
        if off + bytes.len() as u64 > BUF_LEN {
            return Err(Error::Tracee(format!(
                "tun plugin: {} bytes do not fit its buffer",
                bytes.len()
            )));
        }
        self.tracee.write_mem(self.buf + off, bytes)?;
        Ok(self.buf + off)
    }

    pub fn get(&self, off: u64, len: usize) -> Result<Vec<u8>, Error> {
        let mut b = vec![0u8; len.min(BUF_LEN as usize)];
        self.tracee.read_mem(self.buf + off, &mut b)?;
        Ok(b)
    }

    pub fn close(&self, fd: u64) {
        let _ = self.sys(libc::SYS_close, &[fd]);
    }

    /// ioctl with an int-sized argument in the buffer; the value it leaves
    /// there, or the negative errno.
    pub fn ioctl_int(&self, fd: i32, req: u32, value: i32) -> Result<Result<i32, i64>, Error> {
        let at = self.put(0, &value.to_ne_bytes())?;
        let ret = self.sys(libc::SYS_ioctl, &[fd as u64, u64::from(req), at])?;
        if ret < 0 {
            return Ok(Err(ret));
        }
        let b = self.get(0, 4)?;
        Ok(Ok(i32::from_ne_bytes([b[0], b[1], b[2], b[3]])))
    }

    /// ioctl with a struct ifreq (name + `data`) in the buffer; the ifreq
    /// the kernel leaves, or the negative errno.
    pub fn ioctl_ifreq(
        &self,
        fd: i32,
        req: u32,
        name: &str,
        data: &[u8],
    ) -> Result<Result<Vec<u8>, i64>, Error> {
        let at = self.put(0, &ifreq(name, data))?;
        let ret = self.sys(libc::SYS_ioctl, &[fd as u64, u64::from(req), at])?;
        if ret < 0 {
            return Ok(Err(ret));
        }
        Ok(Ok(self.get(0, IFREQ_SIZE)?))
    }

    /// A socket in the program (closed by the caller).
    pub fn socket(&self, domain: i32, ty: i32, proto: i32) -> Result<i32, Error> {
        Ok(self.call(
            "socket",
            libc::SYS_socket,
            &[
                domain as u64,
                (ty | libc::SOCK_CLOEXEC) as u64,
                proto as u64,
            ],
        )? as i32)
    }

    /// Send `req` on rtnetlink socket `sock` and collect the answer's
    /// messages (type, payload) up to NLMSG_DONE or the acknowledgement.
    pub fn netlink(&self, sock: i32, req: &[u8], seq: u32) -> Result<Vec<(u16, Vec<u8>)>, Error> {
        let at = self.put(0, req)?;
        self.call(
            "send (rtnetlink)",
            libc::SYS_sendto,
            &[sock as u64, at, req.len() as u64, 0, 0, 0],
        )?;
        let mut out = Vec::new();
        loop {
            let n = self.call(
                "recv (rtnetlink)",
                libc::SYS_recvfrom,
                &[sock as u64, self.buf, BUF_LEN, 0, 0, 0],
            )?;
            let datagram = self.get(0, n as usize)?;
            let msgs = netlink::split(&datagram);
            if msgs.is_empty() {
                return Err(Error::Tracee(
                    "rtnetlink: an empty or malformed answer".into(),
                ));
            }
            for m in msgs.into_iter().filter(|m| m.seq == seq) {
                match m.ty {
                    netlink::NLMSG_DONE => return Ok(out),
                    netlink::NLMSG_ERROR => {
                        out.push((m.ty, m.payload.to_vec()));
                        return Ok(out);
                    }
                    _ => out.push((m.ty, m.payload.to_vec())),
                }
            }
        }
    }
}

/// A struct ifreq: the name, then `data` (the union: flags, mtu, address).
pub fn ifreq(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; IFREQ_SIZE];
    let n = name.len().min(IFNAMSIZ - 1);
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
    let d = data.len().min(IFREQ_SIZE - IFNAMSIZ);
    b[IFNAMSIZ..IFNAMSIZ + d].copy_from_slice(&data[..d]);
    b
}

/// The name in an ifreq.
pub fn ifreq_name(b: &[u8]) -> String {
    let name = &b[..IFNAMSIZ.min(b.len())];
    let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    String::from_utf8_lossy(&name[..end]).into_owned()
}

pub fn ifreq_u16(b: &[u8]) -> u16 {
    u16::from_ne_bytes([b[IFNAMSIZ], b[IFNAMSIZ + 1]])
}

pub fn ifreq_i32(b: &[u8]) -> i32 {
    i32::from_ne_bytes([
        b[IFNAMSIZ],
        b[IFNAMSIZ + 1],
        b[IFNAMSIZ + 2],
        b[IFNAMSIZ + 3],
    ])
}
