//! Numbers from linux/if_tun.h, linux/sockios.h, linux/if_packet.h and
//! linux/rtnetlink.h, as the u32/u64 the injector passes.

// tun ioctls (type 'T', numbers 200..=227).
pub const TUNSETIFF: u32 = 0x4004_54ca;
pub const TUNSETPERSIST: u32 = 0x4004_54cb;
pub const TUNSETOWNER: u32 = 0x4004_54cc;
pub const TUNSETLINK: u32 = 0x4004_54cd;
pub const TUNSETGROUP: u32 = 0x4004_54ce;
pub const TUNSETOFFLOAD: u32 = 0x4004_54d0;
pub const TUNSETTXFILTER: u32 = 0x4004_54d1;
pub const TUNGETIFF: u32 = 0x8004_54d2;
pub const TUNGETSNDBUF: u32 = 0x8004_54d3;
pub const TUNSETSNDBUF: u32 = 0x4004_54d4;
pub const TUNATTACHFILTER: u32 = 0x4010_54d5;
pub const TUNDETACHFILTER: u32 = 0x4010_54d6;
pub const TUNGETVNETHDRSZ: u32 = 0x8004_54d7;
pub const TUNSETVNETHDRSZ: u32 = 0x4004_54d8;
pub const TUNSETIFINDEX: u32 = 0x4004_54da;
pub const TUNSETVNETLE: u32 = 0x4004_54dc;
pub const TUNGETVNETLE: u32 = 0x8004_54dd;
pub const TUNSETVNETBE: u32 = 0x4004_54de;
pub const TUNGETVNETBE: u32 = 0x8004_54df;
pub const TUNSETSTEERINGEBPF: u32 = 0x8004_54e0;
pub const TUNSETFILTEREBPF: u32 = 0x8004_54e1;
pub const TUNSETCARRIER: u32 = 0x4004_54e2;

/// Terminal and generic ioctls that share type 'T' with tun's and are
/// frequent: the filter lets them run without a stop.
pub const TTY_HOT: &[u32] = &[
    0x5401, // TCGETS
    0x5402, // TCSETS
    0x5403, // TCSETSW
    0x5404, // TCSETSF
    0x540f, // TIOCGPGRP
    0x5410, // TIOCSPGRP
    0x5411, // TIOCOUTQ
    0x5413, // TIOCGWINSZ
    0x5414, // TIOCSWINSZ
    0x541b, // FIONREAD
    0x5421, // FIONBIO
    0x5450, // FIONCLEX
    0x5451, // FIOCLEX
    0x5452, // FIOASYNC
];

// TUNSETIFF flags.
pub const IFF_TUN: u16 = 0x0001;
pub const IFF_TAP: u16 = 0x0002;
pub const IFF_NO_CARRIER: u16 = 0x0040;
pub const IFF_NO_PI: u16 = 0x1000;
pub const IFF_VNET_HDR: u16 = 0x4000;
pub const IFF_MULTI_QUEUE: u16 = 0x0100;
pub const IFF_PERSIST: u16 = 0x0800;
pub const IFF_TUN_EXCL: u16 = 0x8000;
/// What TUNSETIFF takes back (TUNGETIFF also reports IFF_PERSIST, which
/// only TUNSETPERSIST sets).
pub const SETIFF_MASK: u16 = 0x0001 | 0x0002 | 0x1000 | 0x2000 | 0x4000 | 0x0100 | 0x0010 | 0x0020;

// Interface flags (SIOCGIFFLAGS).
pub const IFF_UP: u32 = 0x1;
/// Operationally up; with IFF_UP but without it, the carrier is off
/// (SIOCGIFFLAGS returns a short: IFF_LOWER_UP is cut off).
pub const IFF_RUNNING: u32 = 0x40;

// Socket ioctls on an interface by name (struct ifreq).
pub const SIOCGIFFLAGS: u32 = 0x8913;
pub const SIOCSIFFLAGS: u32 = 0x8914;
pub const SIOCGIFMTU: u32 = 0x8921;
pub const SIOCSIFMTU: u32 = 0x8922;
pub const SIOCGIFHWADDR: u32 = 0x8927;
pub const SIOCSIFHWADDR: u32 = 0x8924;
pub const SIOCGIFINDEX: u32 = 0x8933;
pub const SIOCGIFNAME: u32 = 0x8910;
pub const SIOCGIFTXQLEN: u32 = 0x8942;
pub const SIOCSIFTXQLEN: u32 = 0x8943;
pub const IFREQ_SIZE: usize = 40;
pub const IFNAMSIZ: usize = 16;

pub const ARPHRD_ETHER: u16 = 1;
pub const ARPHRD_NONE: u16 = 0xfffe;

// Packet sockets.
pub const SOL_PACKET: u64 = 263;
pub const PACKET_VNET_HDR: u64 = 15;
pub const PACKET_QDISC_BYPASS: u64 = 20;
/// struct sockaddr_ll.
pub const SOCKADDR_LL_SIZE: usize = 20;
/// struct virtio_net_hdr, what PACKET_VNET_HDR expects.
pub const VIRTIO_NET_HDR_SIZE: usize = 10;
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;

pub const KCMP_FILE: u64 = 0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_agree_with_libc() {
        assert_eq!(u64::from(TUNSETIFF), libc::TUNSETIFF);
        assert_eq!(u64::from(TUNGETIFF), libc::TUNGETIFF);
        assert_eq!(u64::from(TUNSETIFINDEX), libc::TUNSETIFINDEX);
        assert_eq!(u64::from(TUNGETVNETHDRSZ), libc::TUNGETVNETHDRSZ);
        assert_eq!(u64::from(TUNSETCARRIER), libc::TUNSETCARRIER);
        assert_eq!(u64::from(TUNSETPERSIST), libc::TUNSETPERSIST);
        assert_eq!(u64::from(TUNSETOFFLOAD), libc::TUNSETOFFLOAD);
        assert_eq!(u64::from(TUNSETSTEERINGEBPF), libc::TUNSETSTEERINGEBPF);
        assert_eq!(i32::from(IFF_TUN), libc::IFF_TUN);
        assert_eq!(i32::from(IFF_TUN_EXCL), libc::IFF_TUN_EXCL);
        assert_eq!(i32::from(IFF_NO_CARRIER), libc::IFF_NO_CARRIER);
        assert_eq!(u64::from(SIOCSIFTXQLEN), libc::SIOCSIFTXQLEN);
        assert_eq!(u64::from(SIOCGIFINDEX), libc::SIOCGIFINDEX);
        assert_eq!(std::mem::size_of::<libc::ifreq>(), IFREQ_SIZE);
        assert_eq!(std::mem::size_of::<libc::sockaddr_ll>(), SOCKADDR_LL_SIZE);
        // Every tun ioctl has type 'T' and a number tty ioctls never use.
        for req in [TUNSETIFF, TUNGETIFF, TUNSETCARRIER, TUNSETFILTEREBPF] {
            assert_eq!((req >> 8) & 0xff, u32::from(b'T'));
            assert!((200..=227).contains(&(req & 0xff)));
        }
        assert!(TTY_HOT.iter().all(|r| r & 0xff < 200));
    }
}
