//! The packets waiting in a tun device for the program to read them.
//!
//! Draining: nonblocking reads on the program's descriptor (injected) until
//! EAGAIN. Putting back: writing to a tun descriptor would send packets the
//! other way (to the kernel), so the packets are transmitted *on the
//! interface* instead, through a packet socket (AF_PACKET) in the program's
//! network namespace: the kernel hands them to the device's transmit
//! routine, which queues them for the reader exactly like packets routed
//! there (`tun_net_xmit`). The socket bypasses the queueing discipline
//! (PACKET_QDISC_BYPASS), so their order is kept. The device then holds
//! them as before the checkpoint: read, readv, poll, select, epoll and
//! SIGIO all see them with no emulation, and nothing needs trapping after
//! a restart.

use rewind_ckpt::Error;

use crate::consts::*;
use crate::prog::{errno_name, Prog, BUF_LEN};
use crate::state::Device;

/// Read every packet queued on `fd` (at most `cap`), leaving its file
/// status flags as they were.
pub fn drain(p: &Prog, fd: i32, cap: usize, name: &str) -> Result<Vec<Vec<u8>>, Error> {
    let fl = p.call(
        "fcntl(F_GETFL)",
        libc::SYS_fcntl,
        &[fd as u64, libc::F_GETFL as u64],
    )?;
    let nonblock = fl & libc::O_NONBLOCK as u64 != 0;
    if !nonblock {
        p.call(
            "fcntl(F_SETFL)",
            libc::SYS_fcntl,
            &[
                fd as u64,
                libc::F_SETFL as u64,
                fl | libc::O_NONBLOCK as u64,
            ],
        )?;
    }
    let mut packets = Vec::new();
    let result = (|| {
        while packets.len() < cap {
            let n = p.sys(libc::SYS_read, &[fd as u64, p.buf, BUF_LEN])?;
            if n == -i64::from(libc::EAGAIN) || n == 0 {
                return Ok(());
            }
            if n == -i64::from(libc::EINTR) {
                continue;
            }
            if n < 0 {
                return Err(Error::Tracee(format!(
                    "cannot drain the packets queued in tun device {name} (fd {fd}): read: {}",
                    errno_name(n)
                )));
            }
            packets.push(p.get(0, n as usize)?);
        }
        Ok(())
    })();
    if !nonblock {
        p.call(
            "fcntl(F_SETFL)",
            libc::SYS_fcntl,
            &[fd as u64, libc::F_SETFL as u64, fl],
        )?;
    }
    result.map(|()| packets)
}

/// What to transmit on the interface for a packet read from the device:
/// the frame without the packet-information header, preceded by the
/// virtio-net header a PACKET_VNET_HDR socket takes; and the protocol
/// (ethertype) to send it with.
pub fn frame(packet: &[u8], dev: &Device) -> Option<(Vec<u8>, u16)> {
    let mut at = 0;
    let mut proto = None;
    if dev.tun_flags & IFF_NO_PI == 0 {
        // struct tun_pi { u16 flags; be16 proto; }
        proto = Some(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
        at = 4;
    }
    let mut out = Vec::new();
    if dev.tun_flags & IFF_VNET_HDR != 0 {
        let size = usize::try_from(dev.vnet_hdr_sz)
            .ok()?
            .max(VIRTIO_NET_HDR_SIZE);
        let mut hdr = packet.get(at..at + VIRTIO_NET_HDR_SIZE)?.to_vec();
        // "checksum already checked" is receive-side only.
        hdr[0] &= !VIRTIO_NET_HDR_F_DATA_VALID;
        out.extend_from_slice(&hdr);
        at += size;
    }
    let body = packet.get(at..)?;
    let proto = proto.unwrap_or_else(|| {
        if dev.tun_flags & IFF_TAP != 0 {
            body.get(12..14)
                .map(|t| u16::from_be_bytes([t[0], t[1]]))
                .unwrap_or(0)
        } else {
            match body.first().map(|b| b >> 4) {
                Some(4) => 0x0800,
                Some(6) => 0x86dd,
                _ => 0,
            }
        }
    });
    out.extend_from_slice(body);
    Some((out, proto))
}

/// Transmit `packets` (as read from the device) on interface `index`, so
/// the device queues them again for its reader, in order.
pub fn inject(p: &Prog, dev: &Device, index: i32, packets: &[Vec<u8>]) -> Result<(), Error> {
    if packets.is_empty() {
        return Ok(());
    }
    let name = &dev.name;
    let what = |e: Error| {
        Error::Tracee(format!(
            "cannot put back the {} packets drained from tun device {name}: {e}",
            packets.len()
        ))
    };
    let tap = dev.tun_flags & IFF_TAP != 0;
    let sock = p
        .socket(
            libc::AF_PACKET,
            if tap {
                libc::SOCK_RAW
            } else {
                libc::SOCK_DGRAM
            },
            0,
        )
        .map_err(what)?;
    let result = (|| {
        let one = p.put(0, &1i32.to_ne_bytes())?;
        p.call(
            "setsockopt(PACKET_QDISC_BYPASS)",
            libc::SYS_setsockopt,
            &[sock as u64, SOL_PACKET, PACKET_QDISC_BYPASS, one, 4],
        )?;
        if dev.tun_flags & IFF_VNET_HDR != 0 {
            p.call(
                "setsockopt(PACKET_VNET_HDR)",
                libc::SYS_setsockopt,
                &[sock as u64, SOL_PACKET, PACKET_VNET_HDR, one, 4],
            )?;
        }
        for (i, packet) in packets.iter().enumerate() {
            let Some((data, proto)) = frame(packet, dev) else {
                return Err(Error::Tracee(format!(
                    "packet {} ({} bytes) is shorter than its headers",
                    i + 1,
                    packet.len()
                )));
            };
            let mut sll = [0u8; SOCKADDR_LL_SIZE];
            sll[0..2].copy_from_slice(&(libc::AF_PACKET as u16).to_ne_bytes());
            sll[2..4].copy_from_slice(&proto.to_be_bytes());
            sll[4..8].copy_from_slice(&index.to_ne_bytes());
            let addr = p.put(0, &sll)?;
            let at = p.put(64, &data)?;
            let sent = p.sys(
                libc::SYS_sendto,
                &[
                    sock as u64,
                    at,
                    data.len() as u64,
                    0,
                    addr,
                    SOCKADDR_LL_SIZE as u64,
                ],
            )?;
            if sent < 0 {
                return Err(Error::Tracee(format!(
                    "packet {} ({} bytes): sendto: {}",
                    i + 1,
                    packet.len(),
                    errno_name(sent)
                )));
            }
        }
        Ok(())
    })();
    p.close(sock as u64);
    result.map_err(what)
}

/// Set the interface flags (SIOCSIFFLAGS through socket `sock`).
pub fn set_link_flags(p: &Prog, sock: i32, name: &str, flags: u32) -> Result<(), Error> {
    match p.ioctl_ifreq(sock, SIOCSIFFLAGS, name, &(flags as u16).to_ne_bytes())? {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::Tracee(format!(
            "cannot set the flags of interface {name}: {}",
            errno_name(e)
        ))),
    }
}

/// Put the packets drained from the files of `dev` back, in order, ahead
/// of anything that arrived since (read again first and queued after
/// them). `queues` holds (fd, packets) for each file of the device. The
/// interface is brought up for the time it takes if it is down.
pub fn requeue(
    p: &Prog,
    dev: &Device,
    index: i32,
    queues: &[(i32, &[Vec<u8>])],
) -> Result<usize, Error> {
    if queues.iter().all(|(_, q)| q.is_empty()) {
        return Ok(0);
    }
    let up = dev.link_flags & IFF_UP != 0;
    let sock = if up {
        None
    } else {
        let s = p.socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
        if let Err(e) = set_link_flags(p, s, &dev.name, dev.link_flags | IFF_UP) {
            p.close(s as u64);
            return Err(e);
        }
        Some(s)
    };
    let result = (|| {
        let cap = usize::try_from(dev.txqlen).unwrap_or(0).max(1);
        let mut all: Vec<Vec<u8>> = queues.iter().flat_map(|(_, q)| q.iter().cloned()).collect();
        let stored = all.len();
        for (fd, _) in queues {
            all.extend(drain(p, *fd, cap, &dev.name)?);
        }
        if all.len() > stored {
            tracing::debug!(
                "tun {}: {} packets arrived meanwhile; queued after the drained ones",
                dev.name,
                all.len() - stored
            );
        }
        inject(p, dev, index, &all)?;
        Ok(stored)
    })();
    if let Some(s) = sock {
        let down = set_link_flags(p, s, &dev.name, dev.link_flags);
        p.close(s as u64);
        down?;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(flags: u16) -> Device {
        Device {
            name: "t".into(),
            tun_flags: flags,
            vnet_hdr_sz: 12,
            ..Default::default()
        }
    }

    #[test]
    fn frames_lose_the_packet_information_header() {
        let ip = [0x45u8, 0, 0, 20];
        let (f, proto) = frame(&ip, &dev(IFF_TUN | IFF_NO_PI)).unwrap();
        assert_eq!((f.as_slice(), proto), (&ip[..], 0x0800));
        let v6 = [0x60u8, 0, 0, 0];
        assert_eq!(frame(&v6, &dev(IFF_TUN | IFF_NO_PI)).unwrap().1, 0x86dd);
        let with_pi = [0, 0, 0x08, 0x06, 0x45, 1];
        let (f, proto) = frame(&with_pi, &dev(IFF_TUN)).unwrap();
        assert_eq!((f.as_slice(), proto), (&[0x45u8, 1][..], 0x0806));
        assert!(frame(&[0, 0], &dev(IFF_TUN)).is_none());
    }

    #[test]
    fn tap_frames_keep_ethernet_and_vnet_headers() {
        let mut eth = vec![0xffu8; 12];
        eth.extend_from_slice(&[0x08, 0x06, 1, 2]);
        assert_eq!(
            frame(&eth, &dev(IFF_TAP | IFF_NO_PI)).unwrap(),
            (eth.clone(), 0x0806)
        );
        // PI, then a 12-byte virtio-net header (10 used), then the frame.
        let mut read = vec![0, 0, 0x08, 0x00];
        read.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 9]);
        read.extend_from_slice(&eth);
        let (f, proto) = frame(&read, &dev(IFF_TAP | IFF_VNET_HDR)).unwrap();
        assert_eq!(proto, 0x0800);
        assert_eq!(
            &f[..10],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            "DATA_VALID cleared"
        );
        assert_eq!(&f[10..], &eth[..]);
    }
}
