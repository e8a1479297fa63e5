//! rtnetlink messages: the dump requests that read an interface's addresses
//! and routes, parsing their answers, and the requests that add them back.
//! Pure functions; the messages travel through a socket in the program.

use crate::state::NlObject;

pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_GETROUTE: u16 = 26;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_EXCL: u16 = 0x200;

/// struct ifaddrmsg: family, prefixlen, flags, scope, index (u32).
pub const IFADDRMSG_LEN: usize = 8;
/// struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope,
/// type, flags (u32).
pub const RTMSG_LEN: usize = 12;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_LABEL: u16 = 3;
const IFA_BROADCAST: u16 = 4;
const IFA_FLAGS: u16 = 8;
/// Address flags one may ask for (NODAD, HOMEADDRESS, MANAGETEMPADDR,
/// NOPREFIXROUTE, MCAUTOJOIN); the others are the kernel's to set.
const IFA_F_SETTABLE: u32 = 0x02 | 0x10 | 0x100 | 0x200 | 0x400;
const IFA_F_PERMANENT: u32 = 0x80;

const RTA_DST: u16 = 1;
const RTA_SRC: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_METRICS: u16 = 8;
const RTA_TABLE: u16 = 15;
const RTA_PREF: u16 = 20;
const RTPROT_KERNEL: u8 = 2;
const RTPROT_RA: u8 = 9;
const RTN_UNICAST: u8 = 1;
const RT_TABLE_LOCAL: u32 = 255;

const AF_INET6: u8 = 10;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A message: header (type, flags, sequence number) and payload.
pub fn message(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + payload.len();
    let mut m = Vec::with_capacity(align4(len));
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m.resize(align4(len), 0);
    m
}

/// A dump request for every address or route of every family.
pub fn dump_request(ty: u16, seq: u32) -> Vec<u8> {
    let body = vec![
        0u8;
        if ty == RTM_GETROUTE {
            RTMSG_LEN
        } else {
            IFADDRMSG_LEN
        }
    ];
    message(ty, NLM_F_DUMP, seq, &body)
}

/// One received message: type and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received<'a> {
    pub ty: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Split a datagram into its messages (a truncated tail is dropped).
pub fn split(datagram: &[u8]) -> Vec<Received<'_>> {
    let mut out = Vec::new();
    let mut at = 0;
    while let (Some(len), Some(ty), Some(seq)) = (
        u32_at(datagram, at),
        u16_at(datagram, at + 4),
        u32_at(datagram, at + 8),
    ) {
        let len = len as usize;
        if len < NLMSG_HDRLEN || at + len > datagram.len() {
            break;
        }
        out.push(Received {
            ty,
            seq,
            payload: &datagram[at + NLMSG_HDRLEN..at + len],
        });
        at += align4(len);
    }
    out
}

/// The errno of an NLMSG_ERROR payload (0: an acknowledgement).
pub fn error_of(payload: &[u8]) -> i32 {
    u32_at(payload, 0)
        .map(|e| e as i32)
        .unwrap_or(-libc::EPROTO)
}

fn attrs(b: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let (Some(len), Some(ty)) = (u16_at(b, at), u16_at(b, at + 2)) {
        let len = len as usize;
        if len < 4 || at + len > b.len() {
            break;
        }
        out.push((ty & 0x3fff, b[at + 4..at + len].to_vec()));
        at += align4(len);
    }
    out
}

fn put_attrs(out: &mut Vec<u8>, attrs: &[(u16, Vec<u8>)]) {
    for (ty, data) in attrs {
        let len = 4 + data.len();
        out.extend_from_slice(&(len as u16).to_ne_bytes());
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(data);
        out.resize(align4(out.len()), 0);
    }
}

fn attr(attrs: &[(u16, Vec<u8>)], ty: u16) -> Option<&[u8]> {
    attrs
        .iter()
        .find(|(t, _)| *t == ty)
        .map(|(_, d)| d.as_slice())
}

/// An RTM_NEWADDR payload, if it is an address of interface `index` worth
/// restoring: IPv4, or IPv6 configured (permanent) and not link-local
/// (the kernel makes those itself when the interface comes up).
pub fn parse_address(payload: &[u8], index: i32) -> Option<NlObject> {
    let header = payload.get(..IFADDRMSG_LEN)?;
    if u32_at(header, 4)? as i32 != index {
        return None;
    }
    let attrs = attrs(payload.get(IFADDRMSG_LEN..)?);
    let flags = attr(&attrs, IFA_FLAGS)
        .and_then(|f| u32_at(f, 0))
        .unwrap_or(u32::from(header[2]));
    if header[0] == AF_INET6 {
        let addr = attr(&attrs, IFA_ADDRESS).or_else(|| attr(&attrs, IFA_LOCAL))?;
        let link_local =
            addr.first() == Some(&0xfe) && addr.get(1).is_some_and(|b| b & 0xc0 == 0x80);
        if link_local || flags & IFA_F_PERMANENT == 0 {
            return None;
        }
    }
    let keep = [IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST, IFA_LABEL];
    let mut kept: Vec<(u16, Vec<u8>)> = attrs
        .into_iter()
        .filter(|(t, _)| keep.contains(t))
        .collect();
    let settable = flags & IFA_F_SETTABLE;
    if settable != 0 {
        kept.push((IFA_FLAGS, settable.to_ne_bytes().to_vec()));
    }
    let mut header = header.to_vec();
    header[2] = 0;
    header[4..8].copy_from_slice(&0u32.to_ne_bytes());
    Some(NlObject {
        header,
        attrs: kept,
    })
}

/// An RTM_NEWROUTE payload, if it is a route through interface `index`
/// that someone added (not the kernel's prefix and local routes, nor
/// routes learnt from router advertisements).
pub fn parse_route(payload: &[u8], index: i32) -> Option<NlObject> {
    let header = payload.get(..RTMSG_LEN)?;
    let attrs = attrs(payload.get(RTMSG_LEN..)?);
    let oif = attr(&attrs, RTA_OIF).and_then(|o| u32_at(o, 0))?;
    let table = attr(&attrs, RTA_TABLE)
        .and_then(|t| u32_at(t, 0))
        .unwrap_or(u32::from(header[4]));
    if oif as i32 != index
        || header[5] == RTPROT_KERNEL
        || header[5] == RTPROT_RA
        || header[7] != RTN_UNICAST
        || table == RT_TABLE_LOCAL
    {
        return None;
    }
    let keep = [
        RTA_DST,
        RTA_SRC,
        RTA_GATEWAY,
        RTA_PRIORITY,
        RTA_PREFSRC,
        RTA_METRICS,
        RTA_TABLE,
        RTA_PREF,
    ];
    let mut header = header.to_vec();
    // rtm_flags: RTM_F_CLONED and friends are the kernel's.
    header[8..12].copy_from_slice(&0u32.to_ne_bytes());
    Some(NlObject {
        header,
        attrs: attrs
            .into_iter()
            .filter(|(t, _)| keep.contains(t))
            .collect(),
    })
}

/// struct ifinfomsg: family, pad, type (u16), index (i32), flags, change.
const IFINFOMSG_LEN: usize = 16;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;

/// The request for interface `index`'s link message, acknowledged.
pub fn get_link_request(index: i32, seq: u32) -> Vec<u8> {
    let mut body = vec![0u8; IFINFOMSG_LEN];
    body[4..8].copy_from_slice(&index.to_ne_bytes());
    message(RTM_GETLINK, NLM_F_ACK, seq, &body)
}

/// A tun device as rtnetlink describes it (IFLA_INFO_DATA of kind "tun";
/// what `ip -d link` shows). More reliable than TUNGETIFF, whose flags
/// report IFF_NO_PI for devices that have the packet-information header
/// on some kernels (6.18).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunInfo {
    /// IFF_TUN or IFF_TAP.
    pub kind: u8,
    pub pi: bool,
    pub vnet_hdr: bool,
    pub persist: bool,
    pub multi_queue: bool,
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

/// The tun description in an RTM_NEWLINK payload.
pub fn parse_tun_info(payload: &[u8]) -> Option<TunInfo> {
    let linkinfo = attrs(payload.get(IFINFOMSG_LEN..)?);
    let nested = attrs(attr(&linkinfo, IFLA_LINKINFO)?);
    if attr(&nested, IFLA_INFO_KIND)?.split(|&b| b == 0).next()? != b"tun" {
        return None;
    }
    let data = attrs(attr(&nested, IFLA_INFO_DATA)?);
    let byte = |ty: u16| attr(&data, ty).and_then(|d| d.first().copied());
    let word = |ty: u16| attr(&data, ty).and_then(|d| u32_at(d, 0));
    // IFLA_TUN_OWNER 1, _GROUP 2, _TYPE 3, _PI 4, _VNET_HDR 5, _PERSIST 6,
    // _MULTI_QUEUE 7.
    Some(TunInfo {
        kind: byte(3)?,
        pi: byte(4)? != 0,
        vnet_hdr: byte(5)? != 0,
        persist: byte(6)? != 0,
        multi_queue: byte(7)? != 0,
        owner: word(1),
        group: word(2),
    })
}

/// The request adding address `a` to interface `index`, acknowledged.
pub fn add_address(a: &NlObject, index: i32, seq: u32) -> Vec<u8> {
    let mut body = a.header.clone();
    body.resize(IFADDRMSG_LEN, 0);
    body[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
    put_attrs(&mut body, &a.attrs);
    message(
        RTM_NEWADDR,
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        seq,
        &body,
    )
}

/// The request adding route `r` through interface `index`, acknowledged.
pub fn add_route(r: &NlObject, index: i32, seq: u32) -> Vec<u8> {
    let mut body = r.header.clone();
    body.resize(RTMSG_LEN, 0);
    put_attrs(&mut body, &r.attrs);
    put_attrs(
        &mut body,
        &[(RTA_OIF, (index as u32).to_ne_bytes().to_vec())],
    );
    message(
        RTM_NEWROUTE,
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        seq,
        &body,
    )
}

/// "10.77.0.1/24" or "fd00::1/64", for messages.
pub fn describe(o: &NlObject) -> String {
    let family = o.header.first().copied().unwrap_or(0);
    let (prefix, addr) = if o.header.len() == IFADDRMSG_LEN {
        (
            o.header[1],
            attr(&o.attrs, IFA_LOCAL).or_else(|| attr(&o.attrs, IFA_ADDRESS)),
        )
    } else {
        (
            o.header.get(1).copied().unwrap_or(0),
            attr(&o.attrs, RTA_DST),
        )
    };
    let addr = match (family, addr) {
        (2, Some(a)) if a.len() == 4 => std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string(),
        (10, Some(a)) if a.len() == 16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(a);
            std::net::Ipv6Addr::from(b).to_string()
        }
        (2, None) => "0.0.0.0".into(),
        (10, None) => "::".into(),
        _ => "?".into(),
    };
    format!("{addr}/{prefix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifaddr(family: u8, prefix: u8, flags: u8, index: u32, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut b = vec![family, prefix, flags, 0];
        b.extend_from_slice(&index.to_ne_bytes());
        put_attrs(&mut b, attrs);
        b
    }

    #[test]
    fn messages_split_back() {
        let a = message(RTM_GETADDR, NLM_F_DUMP, 7, &[1, 2, 3]);
        assert_eq!(a.len(), 20);
        let mut two = a.clone();
        two.extend(message(NLMSG_DONE, 0, 8, &[0; 4]));
        let got = split(&two);
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].ty, got[0].seq, got[0].payload),
            (RTM_GETADDR, 7, &[1u8, 2, 3][..])
        );
        assert_eq!(got[1].ty, NLMSG_DONE);
        // A truncated message is dropped, not read past.
        assert_eq!(split(&two[..30]).len(), 1);
        assert!(split(&[0xff; 7]).is_empty());
    }

    #[test]
    fn addresses_of_the_interface_are_kept_without_kernel_ones() {
        let v4 = ifaddr(
            2,
            24,
            0x80,
            5,
            &[
                (IFA_ADDRESS, vec![10, 77, 0, 1]),
                (IFA_LOCAL, vec![10, 77, 0, 1]),
                (IFA_LABEL, b"rwtun0\0".to_vec()),
                (6, vec![0; 16]), // IFA_CACHEINFO: dropped
            ],
        );
        let o = parse_address(&v4, 5).expect("kept");
        assert_eq!(o.header, vec![2, 24, 0, 0, 0, 0, 0, 0]);
        assert_eq!(o.attrs.len(), 3);
        assert_eq!(describe(&o), "10.77.0.1/24");
        assert!(parse_address(&v4, 6).is_none(), "another interface");
        let mut ll = vec![0xfe, 0x80];
        ll.resize(16, 1);
        assert!(parse_address(&ifaddr(10, 64, 0x80, 5, &[(IFA_ADDRESS, ll)]), 5).is_none());
        let mut global = vec![0xfd, 0];
        global.resize(16, 1);
        let dynamic = ifaddr(10, 64, 0, 5, &[(IFA_ADDRESS, global.clone())]);
        assert!(parse_address(&dynamic, 5).is_none(), "autoconfigured");
        let fixed = ifaddr(
            10,
            64,
            0x80,
            5,
            &[
                (IFA_ADDRESS, global),
                (IFA_FLAGS, 0x82u32.to_ne_bytes().to_vec()),
            ],
        );
        let o = parse_address(&fixed, 5).expect("kept");
        assert_eq!(attr(&o.attrs, IFA_FLAGS), Some(&0x02u32.to_ne_bytes()[..]));
        let req = add_address(&o, 9, 3);
        let m = split(&req);
        assert_eq!(m[0].ty, RTM_NEWADDR);
        assert_eq!(u32_at(m[0].payload, 4), Some(9));
        assert_eq!(attrs(&m[0].payload[IFADDRMSG_LEN..]), o.attrs);
    }

    #[test]
    fn tun_link_info() {
        let mut data = Vec::new();
        put_attrs(
            &mut data,
            &[
                (2, 1000u32.to_ne_bytes().to_vec()),
                (3, vec![2]),
                (4, vec![1]),
                (5, vec![1]),
                (6, vec![0]),
                (7, vec![0]),
            ],
        );
        let mut info = Vec::new();
        put_attrs(
            &mut info,
            &[(IFLA_INFO_KIND, b"tun\0".to_vec()), (IFLA_INFO_DATA, data)],
        );
        let mut payload = vec![0u8; IFINFOMSG_LEN];
        put_attrs(
            &mut payload,
            &[(3, b"tap0\0".to_vec()), (IFLA_LINKINFO, info)],
        );
        let t = parse_tun_info(&payload).expect("a tun device");
        assert_eq!(
            t,
            TunInfo {
                kind: 2,
                pi: true,
                vnet_hdr: true,
                persist: false,
                multi_queue: false,
                owner: None,
                group: Some(1000)
            }
        );
        let req = get_link_request(7, 4);
        assert_eq!(u32_at(split(&req)[0].payload, 4), Some(7));
        assert!(parse_tun_info(&payload[..20]).is_none());
    }

    #[test]
    fn only_added_unicast_routes_through_the_interface() {
        let route = |proto: u8, ty: u8, oif: u32| {
            let mut b = vec![2, 8, 0, 0, 254, proto, 0, ty, 0, 0, 0, 0];
            put_attrs(
                &mut b,
                &[
                    (RTA_TABLE, 254u32.to_ne_bytes().to_vec()),
                    (RTA_DST, vec![10, 0, 0, 0]),
                    (RTA_OIF, oif.to_ne_bytes().to_vec()),
                    (12, vec![0; 8]),
                ],
            );
            b
        };
        let o = parse_route(&route(4, RTN_UNICAST, 5), 5).expect("static route kept");
        assert_eq!(describe(&o), "10.0.0.0/8");
        assert_eq!(o.attrs.len(), 2);
        assert!(parse_route(&route(RTPROT_KERNEL, RTN_UNICAST, 5), 5).is_none());
        assert!(parse_route(&route(4, 2, 5), 5).is_none());
        assert!(parse_route(&route(4, RTN_UNICAST, 6), 5).is_none());
        let m = split(&add_route(&o, 11, 1))[0].payload.to_vec();
        let a = attrs(&m[RTMSG_LEN..]);
        assert_eq!(attr(&a, RTA_OIF), Some(&11u32.to_ne_bytes()[..]));
    }
}
