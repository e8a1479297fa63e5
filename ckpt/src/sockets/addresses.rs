//! Host addresses, virtualized: a program restarted on another host (its
//! connections made again from this host's address, see
//! [`super::Rebuilt::reconnect`]) still sees its old addresses. The plugin
//! traps the syscalls that report or take socket addresses
//! (`getsockname`, `getpeername`, `accept`, `accept4` report; `connect`,
//! `bind` take) and rewrites IPv4 and IPv6 addresses (ports are kept)
//! between what the program knows and what the kernel uses.
//!
//! Not virtualized: addresses in `/proc/net`, netlink and `getifaddrs`
//! (the program sees the interfaces of the host it runs on), datagram
//! senders (`recvfrom`, `recvmsg`), and the host name.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use libc::pid_t;

use crate::plugin::{Plugin, SyscallAction, SyscallCtx};
use crate::Error;

/// Addresses the program knows (old host's) and the kernel's (this host's).
#[derive(Debug, Default)]
pub struct AddressMap {
    to_real: HashMap<IpAddr, IpAddr>,
    to_virtual: HashMap<IpAddr, IpAddr>,
}

impl AddressMap {
    /// `moved`: (old address, new address) pairs.
    pub fn set(&mut self, moved: &HashMap<IpAddr, IpAddr>) {
        self.to_real = moved.clone();
        self.to_virtual = moved.iter().map(|(o, n)| (*n, *o)).collect();
    }

    /// Real addresses and the ones the program sees.
    pub fn shown(&self) -> HashMap<IpAddr, IpAddr> {
        self.to_virtual.clone()
    }

    fn is_empty(&self) -> bool {
        self.to_real.is_empty()
    }
}

/// The address plugin of a restarted program whose connections may move to
/// another host's addresses; see the module's documentation.
pub struct Addresses {
    map: Arc<Mutex<AddressMap>>,
    /// `connect`/`bind` arguments rewritten at entry, put back at exit:
    /// (address, original bytes) by thread.
    saved: HashMap<pid_t, (u64, Vec<u8>)>,
}

pub const PLUGIN_NAME: &str = "addresses";

const TRAPPED: &[i64] = &[
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_bind,
];

impl Addresses {
    pub fn new(map: Arc<Mutex<AddressMap>>) -> Addresses {
        Addresses {
            map,
            saved: HashMap::new(),
        }
    }
}

/// Where the IP address lies in a raw `sockaddr` of `len` bytes, and the
/// address, if it is an IPv4 or IPv6 one.
fn ip_in(raw: &[u8]) -> Option<(std::ops::Range<usize>, IpAddr)> {
    let family = i32::from(u16::from_ne_bytes([*raw.first()?, *raw.get(1)?]));
    match family {
        libc::AF_INET => {
            let b: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
            Some((4..8, IpAddr::from(b)))
        }
        libc::AF_INET6 => {
            let b: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
            Some((8..24, IpAddr::from(b)))
        }
        _ => None,
    }
}

/// `raw` with its address replaced through `map` (IPv4-mapped IPv6
/// addresses through their IPv4 one); None when nothing changes.
fn rewrite(raw: &[u8], map: &HashMap<IpAddr, IpAddr>) -> Option<Vec<u8>> {
    let (at, ip) = ip_in(raw)?;
    let to = match map.get(&ip) {
        Some(to) => *to,
        None => match (ip, map.get(&ip.to_canonical())) {
            (IpAddr::V6(_), Some(IpAddr::V4(v4))) => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => return None,
        },
    };
    let bytes = match (ip, to) {
        (IpAddr::V4(_), IpAddr::V4(t)) => t.octets().to_vec(),
        (IpAddr::V6(_), IpAddr::V6(t)) => t.octets().to_vec(),
        _ => return None,
    };
    let mut out = raw.to_vec();
    out[at].copy_from_slice(&bytes);
    Some(out)
}

impl Plugin for Addresses {
    fn name(&self) -> &'static str {
        PLUGIN_NAME
    }

    fn syscalls(&self) -> &'static [i64] {
        TRAPPED
    }

    fn on_syscall(&mut self, ctx: &mut SyscallCtx) -> Result<SyscallAction, Error> {
        let map = self
            .map
            .lock()
            .map_err(|_| Error::Tracee("address map poisoned".into()))?;
        if map.is_empty() {
            return Ok(SyscallAction::Run);
        }
        let r = &*ctx.regs;
        Ok(match r.orig_rax as i64 {
            libc::SYS_getsockname | libc::SYS_getpeername => SyscallAction::RunWatchExit,
            libc::SYS_accept | libc::SYS_accept4 if r.rsi != 0 => SyscallAction::RunWatchExit,
            libc::SYS_connect | libc::SYS_bind => {
                let len = (r.rdx as usize).min(128);
                let mut raw = vec![0u8; len];
                if len == 0 || ctx.tracee.read_mem(r.rsi, &mut raw).is_err() {
                    return Ok(SyscallAction::Run);
                }
                match rewrite(&raw, &map.to_real) {
                    Some(real) => {
                        ctx.tracee.write_mem(r.rsi, &real)?;
                        self.saved.insert(ctx.tid, (r.rsi, raw));
                        SyscallAction::RunWatchExit
                    }
                    None => SyscallAction::Run,
                }
            }
            _ => SyscallAction::Run,
        })
    }

    fn on_syscall_exit(&mut self, ctx: &mut SyscallCtx, result: i64) -> Result<(), Error> {
        let nr = ctx.regs.orig_rax as i64;
        if nr == libc::SYS_connect || nr == libc::SYS_bind {
            // The program's own bytes again.
            if let Some((addr, raw)) = self.saved.remove(&ctx.tid) {
                ctx.tracee.write_mem(addr, &raw)?;
            }
            return Ok(());
        }
        if result < 0 {
            return Ok(());
        }
        let map = self
            .map
            .lock()
            .map_err(|_| Error::Tracee("address map poisoned".into()))?;
        let (addr, lenp) = (ctx.regs.rsi, ctx.regs.rdx);
        if addr == 0 || lenp == 0 {
            return Ok(());
        }
        let mut len = [0u8; 4];
        ctx.tracee.read_mem(lenp, &mut len)?;
        let len = (u32::from_ne_bytes(len) as usize).min(128);
        let mut raw = vec![0u8; len];
        ctx.tracee.read_mem(addr, &mut raw)?;
        if let Some(shown) = rewrite(&raw, &map.to_virtual) {
            ctx.tracee.write_mem(addr, &shown)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_rewritten_both_ways_and_ports_kept() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut m = AddressMap::default();
        m.set(&[(a, b), (b, a)].into_iter().collect());
        let v4 = super::super::sockaddr(&"10.0.0.1:5000".parse().unwrap());
        let real = rewrite(&v4, &m.to_real).unwrap();
        assert_eq!(
            super::super::socket_addr(&real),
            Some("10.0.0.2:5000".parse().unwrap())
        );
        let mapped = super::super::sockaddr(&"[::ffff:10.0.0.2]:7".parse().unwrap());
        let shown = rewrite(&mapped, &m.to_virtual).unwrap();
        assert_eq!(
            super::super::socket_addr(&shown),
            Some("[::ffff:10.0.0.1]:7".parse().unwrap())
        );
        let other = super::super::sockaddr(&"127.0.0.1:1".parse().unwrap());
        assert_eq!(rewrite(&other, &m.to_real), None);
    }
}
