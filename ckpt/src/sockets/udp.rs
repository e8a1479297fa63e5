//! UDP sockets (IPv4 and IPv6): what one is (its address, its peer, its
//! options) and the datagrams waiting at it, peeked one by one with their
//! senders' addresses through SO_PEEK_OFF, so that the program loses
//! nothing when it goes on after the checkpoint.
//!
//! At restart ([`super::Rebuilt`]) every UDP socket is made and bound again
//! first, then the datagrams are sent to it again, in order, each from a
//! socket bound to its sender's address: the sender's own rebuilt socket
//! when it is one of the restart's (or, between programs of a coordinator,
//! handed over by the other program's restart), else a short-lived socket
//! of rewind's bound to that address, closed before any process runs. Only
//! then are the sockets connected to their peers (a connected UDP socket
//! drops datagrams from any other address).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

use super::tcp::SO_PEEK_OFF;
use super::{sockaddr, socket_addr, OptSpec, Rebuilt, SockOpts, Wanted};
use crate::image::format::{Datagram, DgramLink, SocketState, UdpEnd};
use crate::sys::net;

/// Options kept for UDP sockets (with [`SockOpts`]' common ones).
pub(crate) const OPTIONS: &[OptSpec] = &[
    (libc::SOL_SOCKET, libc::SO_REUSEADDR, 4, true),
    (libc::SOL_SOCKET, libc::SO_REUSEPORT, 4, true),
    (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 4, true),
    (libc::SOL_SOCKET, libc::SO_BROADCAST, 4, false),
    (libc::SOL_SOCKET, libc::SO_TIMESTAMP, 4, false),
    (libc::IPPROTO_IP, libc::IP_TOS, 4, false),
    (libc::IPPROTO_IP, libc::IP_TTL, 4, false),
    (libc::IPPROTO_IP, libc::IP_PKTINFO, 4, false),
    (libc::IPPROTO_IP, libc::IP_RECVERR, 4, false),
    (libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, 4, false),
    (libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, 4, false),
    (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, 4, false),
    (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 4, false),
    (libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, 4, false),
    (libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, 4, false),
];

/// Whether a socket of this domain, type and protocol is a UDP one.
pub fn is_udp(domain: i32, ty: i32, protocol: i32) -> bool {
    matches!(domain, libc::AF_INET | libc::AF_INET6)
        && ty == libc::SOCK_DGRAM
        && protocol == libc::IPPROTO_UDP
}

/// Read the UDP socket `fd` (of family `family`) without taking anything
/// from it.
pub fn capture(fd: RawFd, family: i32) -> Result<UdpEnd, Errno> {
    let local = net::sockname(fd)
        .ok()
        .and_then(|a| socket_addr(&a))
        .filter(|a| a.port() != 0);
    let remote = net::peername(fd).ok().and_then(|a| socket_addr(&a));
    Ok(UdpEnd {
        family,
        local,
        remote,
        queued: peek_all(fd)?,
        options: SockOpts::read(fd, OPTIONS),
        links: Vec::new(),
    })
}

/// Every datagram waiting at `fd`, in order, with its sender, without
/// taking any: the peek offset steps over each one (an empty datagram is
/// returned once and then stepped over by the kernel too).
pub fn peek_all(fd: RawFd) -> Result<Vec<Datagram>, Errno> {
    let before = net::getsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF)?;
    net::setsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF, 0)?;
    // The largest UDP payload, and one byte to see truncation.
    let mut buf = vec![0u8; 65536 + 1];
    let mut out = Vec::new();
    let result = (|| {
        for _ in 0..1_000_000 {
            let got = match net::recvmsg(fd, &mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
                Ok(g) => g,
                Err(Errno::EAGAIN) => return Ok(()),
                // A pending ICMP error (IP_RECVERR off: ECONNREFUSED...)
                // is reported once; the queue is still there.
                Err(Errno::ECONNREFUSED | Errno::EHOSTUNREACH | Errno::ENETUNREACH) => continue,
                Err(e) => return Err(e),
            };
            if got.flags & libc::MSG_TRUNC != 0 {
                return Err(Errno::EMSGSIZE);
            }
            out.push(Datagram {
                from: socket_addr(&got.from),
                data: buf[..got.len].to_vec(),
            });
        }
        Ok(())
    })();
    let restored = net::setsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF, before);
    result?;
    restored?;
    Ok(out)
}

/// Whether a datagram from `from` may have come from a socket bound to
/// `local` (a socket bound to the unspecified address sends from any of the
/// host's; an IPv4 sender reaches an IPv6 socket as a mapped address).
pub fn sent_by(local: &SocketAddr, from: &SocketAddr) -> bool {
    local.port() == from.port()
        && (local.ip().is_unspecified() || local.ip().to_canonical() == from.ip().to_canonical())
}

/// Where a socket of family `sender` (AF_INET, AF_INET6) sends a datagram
/// for the socket bound to `local` on this host: the loopback address of
/// its family when `local` is the unspecified one.
pub fn destination(local: &SocketAddr, sender: i32) -> Option<SocketAddr> {
    let ip = match (local.ip(), sender) {
        (IpAddr::V4(a), libc::AF_INET) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (IpAddr::V4(a), libc::AF_INET) => IpAddr::V4(a),
        (IpAddr::V6(a), libc::AF_INET6) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (IpAddr::V6(a), libc::AF_INET6) => IpAddr::V6(a),
        (IpAddr::V6(a), libc::AF_INET) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (IpAddr::V6(a), libc::AF_INET) => IpAddr::V4(a.to_ipv4_mapped()?),
        (IpAddr::V4(a), _) if a.is_unspecified() => {
            IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped())
        }
        (IpAddr::V4(a), _) => IpAddr::V6(a.to_ipv6_mapped()),
        _ => return None,
    };
    Some(SocketAddr::new(ip, local.port()))
}

/// The family of a socket that sends from `from` (an IPv4-mapped IPv6
/// sender was an IPv4 socket, reaching a dual-stack one).
pub fn sender_family(from: &SocketAddr) -> i32 {
    match from.ip() {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    }
}

/// `from` as a socket of [`sender_family`] binds it.
pub fn sender_address(from: &SocketAddr) -> SocketAddr {
    match from.ip() {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), from.port()),
            None => *from,
        },
        IpAddr::V4(_) => *from,
    }
}

/// How a UDP socket reads in messages.
pub fn describe(local: Option<&SocketAddr>) -> String {
    match local {
        Some(a) => format!("UDP socket {a}"),
        None => "UDP socket (unbound)".to_string(),
    }
}

/// The UDP sockets of other programs of the coordinator's computation
/// (`computation`, on this `host`) that UDP socket `ino` (`end`) has
/// datagrams from (it takes them at restart), that have datagrams from it
/// (it gives itself), or that could exchange datagrams with it (one of the
/// two has a port): their programs are held together at restart.
pub fn links(
    ino: u64,
    end: &UdpEnd,
    host: &str,
    computation: &super::Computation,
    held: impl Fn(u64) -> bool,
) -> Vec<DgramLink> {
    let mut links: Vec<DgramLink> = Vec::new();
    for o in &computation.dgram {
        let Some(theirs) = &o.udp else { continue };
        if o.host != host || o.ino == ino || held(o.ino) || links.iter().any(|l| l.id == o.ino) {
            continue;
        }
        let takes = theirs.local.is_some_and(|l| {
            end.queued
                .iter()
                .any(|d| d.from.is_some_and(|f| sent_by(&l, &f)))
        });
        let gives = end
            .local
            .is_some_and(|l| theirs.from.iter().any(|f| sent_by(&l, f)));
        if takes || gives || end.local.is_some() || theirs.local.is_some() {
            links.push(DgramLink {
                id: o.ino,
                name: theirs.local.as_ref().map(sockaddr).unwrap_or_default(),
                host: host.to_string(),
                takes,
                gives,
            });
        }
    }
    links
}

/// The address a socket is bound to, if it has a port.
pub(super) fn bound(fd: RawFd) -> Option<SocketAddr> {
    net::sockname(fd)
        .ok()
        .and_then(|a| socket_addr(&a))
        .filter(|a| a.port() != 0)
}

/// A UDP socket of `family`, with the options that go before bind, bound
/// to `local` when given.
fn make(
    family: i32,
    local: Option<&SocketAddr>,
    options: &[crate::image::format::SockOpt],
) -> Result<OwnedFd, Errno> {
    let s = net::socket(family, libc::SOCK_DGRAM, libc::IPPROTO_UDP)?;
    SockOpts::apply(s.as_raw_fd(), options, true);
    if let Some(a) = local {
        net::bind(s.as_raw_fd(), &sockaddr(a))?;
    }
    Ok(s)
}

/// Short-lived sockets of rewind's bound to senders' addresses (None: that
/// address could not be bound), closed once the datagrams are sent.
type Stand = HashMap<SocketAddr, Option<OwnedFd>>;

impl Rebuilt {
    /// Every UDP socket of the images: made and bound again, the datagrams
    /// that waited at each sent to it again from their senders' addresses,
    /// then connected to its peer.
    pub(super) fn udp(&mut self, wanted: &BTreeMap<u64, Wanted>) {
        let ends: Vec<(u64, &UdpEnd)> = wanted
            .iter()
            .filter_map(|(&id, w)| match w.state {
                SocketState::Udp(u) => Some((id, u.as_ref())),
                _ => None,
            })
            .collect();
        for &(id, u) in &ends {
            if self.fds.contains_key(&id) {
                continue;
            }
            let made = make(u.family, u.local.as_ref(), &u.options).or_else(|e| {
                let what = describe(u.local.as_ref());
                self.warnings.push(format!(
                    "{what}: cannot bind it again ({}); it is unbound now",
                    e.desc()
                ));
                make(u.family, None, &u.options)
            });
            match made {
                Ok(s) => self.add(id, s),
                Err(e) => self
                    .warnings
                    .push(format!("cannot make a UDP socket: {}", e.desc())),
            }
        }
        self.udp_between_programs(&ends);
        let mut stand: Stand = HashMap::new();
        for &(id, u) in &ends {
            self.udp_refill(id, u, &ends, &mut stand);
        }
        // rewind's own senders go before any process runs.
        drop(stand);
        for &(id, u) in &ends {
            let Some(fd) = self.fd(id) else { continue };
            if let Some(r) = &u.remote {
                if let Err(e) = net::connect(fd, &sockaddr(r)) {
                    self.warnings.push(format!(
                        "{} connected to {r}: cannot connect it again ({}); it is not connected now",
                        describe(u.local.as_ref()),
                        e.desc()
                    ));
                }
            }
            SockOpts::apply(fd, &u.options, false);
        }
    }

    /// UDP sockets linked to other programs' (a coordinator's): each one
    /// another program has datagrams from is handed to that program's
    /// restart through a short-lived abstract socket (`@rewind-udp-G-T`,
    /// the giver's and the taker's inodes), and each one of another program
    /// this one's sockets have datagrams from is taken from it, for
    /// [`Rebuilt::udp_refill`] to send them again from it. All are offered
    /// before any is awaited. The links go to the coordinator, which holds
    /// the programs until every one is back.
    fn udp_between_programs(&mut self, ends: &[(u64, &UdpEnd)]) {
        let meeting = |giver: u64, taker: u64| super::rendezvous("udp", giver, taker);
        for &(id, u) in ends {
            for l in u.links.iter().filter(|l| l.gives) {
                let offered = match self.fds.get(&id).map(|f| f.try_clone()) {
                    Some(Ok(copy)) => super::offer(&meeting(id, l.id), vec![copy]),
                    Some(Err(e)) => Err(format!("dup: {e}")),
                    None => Err("it was not made".to_string()),
                };
                if let Err(e) = offered {
                    self.warnings.push(format!(
                        "{}: cannot hand it to the restart of another program: {e}",
                        describe(u.local.as_ref())
                    ));
                }
            }
        }
        for &(id, u) in ends {
            for l in &u.links {
                let link = super::UnixLink {
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
                let theirs = socket_addr(&l.name);
                match super::take(&meeting(l.id, id)).map(|fds| fds.into_iter().next()) {
                    Ok(Some(fd)) => match theirs {
                        Some(a) => {
                            let family = match a {
                                SocketAddr::V4(_) => libc::AF_INET,
                                SocketAddr::V6(_) => libc::AF_INET6,
                            };
                            self.udp_taken.entry(a).or_insert((fd, family));
                        }
                        None => tracing::debug!("a UDP link without an address"),
                    },
                    Ok(None) => self.warnings.push(format!(
                        "{}: the restart of the program of {} handed over nothing",
                        describe(u.local.as_ref()),
                        describe(theirs.as_ref())
                    )),
                    Err(e) => self.warnings.push(format!(
                        "{}: the socket {} of another program: {e}; datagrams from it are sent again from a socket of rewind's bound to its address",
                        describe(u.local.as_ref()),
                        describe(theirs.as_ref())
                    )),
                }
            }
        }
    }

    /// The socket a datagram from `from` is sent again from, with its
    /// family: the rebuilt socket of the images bound to that address, one
    /// handed over by another program's restart, else a short-lived one
    /// bound to it (None: that address cannot be bound here).
    fn udp_sender(
        &mut self,
        from: &SocketAddr,
        ends: &[(u64, &UdpEnd)],
        stand: &mut Stand,
    ) -> Option<(RawFd, i32)> {
        for &(id, u) in ends {
            let Some(fd) = self.fd(id) else { continue };
            if u.local.is_some_and(|l| sent_by(&l, from))
                && bound(fd).is_some_and(|b| sent_by(&b, from))
            {
                return Some((fd, u.family));
            }
        }
        if let Some((fd, family)) = self
            .udp_taken
            .iter()
            .find_map(|(l, (f, fam))| sent_by(l, from).then(|| (f.as_raw_fd(), *fam)))
        {
            return Some((fd, family));
        }
        let addr = sender_address(from);
        let family = sender_family(from);
        let entry = stand.entry(addr).or_insert_with(|| {
            make(family, Some(&addr), &[])
                .map_err(|e| {
                    self.warnings.push(format!(
                        "UDP: cannot bind a socket to {addr} to send again the datagrams from it ({}): they are dropped",
                        e.desc()
                    ))
                })
                .ok()
        });
        entry.as_ref().map(|f| (f.as_raw_fd(), family))
    }

    /// Send the datagrams that waited at UDP socket `id` to it again, in
    /// order, each from its sender's address; every one that cannot be put
    /// back is counted in a warning.
    fn udp_refill(&mut self, id: u64, u: &UdpEnd, ends: &[(u64, &UdpEnd)], stand: &mut Stand) {
        if u.queued.is_empty() {
            return;
        }
        let what = describe(u.local.as_ref());
        let Some(here) = self.fd(id).and_then(bound) else {
            self.warnings.push(format!(
                "{what}: it is not bound again, so the {} datagram(s) waiting at it are dropped",
                u.queued.len()
            ));
            return;
        };
        let Some(fd) = self.fd(id) else { return };
        let mut sent = 0usize;
        for d in &u.queued {
            let sender = match &d.from {
                Some(f) => self.udp_sender(f, ends, stand),
                None => stand
                    .entry(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0))
                    .or_insert_with(|| make(u.family, None, &[]).ok())
                    .as_ref()
                    .map(|f| (f.as_raw_fd(), u.family)),
            };
            let Some((from_fd, family)) = sender else {
                continue;
            };
            let Some(to) = destination(&here, family) else {
                continue;
            };
            match net::sendto(from_fd, &d.data, libc::MSG_DONTWAIT, &sockaddr(&to)) {
                Ok(_) => sent += 1,
                Err(e) => tracing::debug!("{what}: sendto {to}: {}", e.desc()),
            }
        }
        // Loopback delivers at once, but give the kernel a moment before
        // counting what arrived.
        let mut arrived = 0;
        for _ in 0..50 {
            arrived = peek_all(fd).map_or(0, |q| q.len());
            if arrived >= sent {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        if arrived < u.queued.len() {
            self.warnings.push(format!(
                "{what}: {} of the {} datagram(s) waiting at it could not be put back (dropped)",
                u.queued.len() - arrived.min(u.queued.len()),
                u.queued.len()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_and_destinations() {
        let any4: SocketAddr = "0.0.0.0:5000".parse().unwrap();
        let lo4: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let any6: SocketAddr = "[::]:5000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        assert!(sent_by(&any4, &lo4));
        assert!(sent_by(&lo4, &lo4));
        assert!(sent_by(&lo4, &mapped));
        assert!(!sent_by(&lo4, &"127.0.0.1:5001".parse().unwrap()));
        assert!(!sent_by(&lo4, &"127.0.0.2:5000".parse().unwrap()));
        assert_eq!(destination(&any4, libc::AF_INET), Some(lo4));
        assert_eq!(destination(&any6, libc::AF_INET), Some(lo4));
        assert_eq!(
            destination(&any6, libc::AF_INET6),
            Some("[::1]:5000".parse().unwrap())
        );
        assert_eq!(destination(&mapped, libc::AF_INET), Some(lo4));
        assert_eq!(destination(&lo4, libc::AF_INET6), Some(mapped));
        assert_eq!(sender_family(&mapped), libc::AF_INET);
        assert_eq!(sender_address(&mapped), lo4);
    }
}
