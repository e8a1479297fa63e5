//! Checkpoint: what the program's tun descriptors are attached to, the
//! interfaces' configuration read live (in the program's network
//! namespace, by injected ioctls and rtnetlink dumps), and the packets
//! queued in them.

use std::collections::HashMap;

use rewind_ckpt::image::format::FdState;
use rewind_ckpt::Error;

use crate::consts::*;
use crate::netlink;
use crate::prog::{errno_name, ifreq_i32, ifreq_name, ifreq_u16, Prog};
use crate::queue;
use crate::state::{Device, Fd, Saved, Tracked, TunFile, VERSION};

/// The "iff:" line of a tun descriptor's fdinfo: the interface it is
/// attached to (empty: none).
pub fn fdinfo_iff(pid: i32, fd: i32) -> Option<String> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("iff:"))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Whether descriptors `a` and `b` of the program share one open file
/// description; None when kcmp is not available.
fn same_file(p: &Prog, a: i32, b: i32) -> Result<Option<bool>, Error> {
    let pid = p.tracee.pid as u64;
    let r = p.sys(libc::SYS_kcmp, &[pid, pid, KCMP_FILE, a as u64, b as u64])?;
    Ok((r >= 0).then_some(r == 0))
}

pub fn capture(
    p: &Prog,
    fds: &[&FdState],
    tracked: &HashMap<String, Tracked>,
    warnings: &mut Vec<String>,
) -> Result<Saved, Error> {
    let pid = p.tracee.pid;
    let mut sorted: Vec<&FdState> = fds.to_vec();
    sorted.sort_by_key(|f| f.fd);
    let mut files: Vec<TunFile> = Vec::new();
    for f in sorted {
        let iff = fdinfo_iff(pid, f.fd);
        let mut owner = None;
        for (i, file) in files.iter().enumerate() {
            let Some(rep) = file.fds.first() else {
                continue;
            };
            let same = match same_file(p, rep.fd, f.fd)? {
                Some(s) => s,
                // Without kcmp: one non-multi-queue device has one file.
                None => iff.is_some() && file.device == iff,
            };
            if same {
                owner = Some(i);
                break;
            }
        }
        let fd = Fd {
            fd: f.fd,
            cloexec: f.cloexec,
        };
        match owner {
            Some(i) => files[i].fds.push(fd),
            None => files.push(TunFile {
                fds: vec![fd],
                flags: f.flags,
                device: iff,
                queue: Vec::new(),
            }),
        }
    }
    let mut devices: Vec<Device> = Vec::new();
    for file in &mut files {
        let Some(rep) = file.fds.first().map(|f| f.fd) else {
            continue;
        };
        let Some(name) = file.device.clone() else {
            warnings.push(format!(
                "fd {rep} (/dev/net/tun) is attached to no interface (never set up, or a detached \
                 queue): it is restored as a fresh open of /dev/net/tun"
            ));
            continue;
        };
        let got = p.ioctl_ifreq(rep, TUNGETIFF, "", &[])?;
        let ifr = got.map_err(|e| {
            Error::Tracee(format!(
                "tun device {name} (fd {rep}): TUNGETIFF: {}",
                errno_name(e)
            ))
        })?;
        let name = ifreq_name(&ifr);
        let tun_flags = ifreq_u16(&ifr);
        file.device = Some(name.clone());
        if !devices.iter().any(|d| d.name == name) {
            let dev = device(p, rep, &name, tun_flags, tracked.get(&name))?;
            for u in &dev.tracked.unsupported {
                warnings.push(format!(
                    "tun device {name}: the program used {u}, whose effect is not restored"
                ));
            }
            devices.push(dev);
        }
    }
    let mut saved = Saved {
        version: VERSION,
        files,
        devices,
    };
    // Last, so that nothing fails once packets are out of the devices; if
    // a drain fails, what the others drained goes back.
    for i in 0..saved.files.len() {
        let file = &saved.files[i];
        let (Some(rep), Some(name)) = (file.fds.first().map(|f| f.fd), file.device.clone()) else {
            continue;
        };
        let cap = saved
            .device(&name)
            .map(|d| usize::try_from(d.txqlen).unwrap_or(0).max(1))
            .unwrap_or(1);
        match queue::drain(p, rep, cap, &name) {
            Ok(q) => {
                if !q.is_empty() {
                    tracing::info!("tun {name} (fd {rep}): drained {} queued packets", q.len());
                }
                saved.files[i].queue = q;
            }
            Err(e) => {
                if let Err(again) = crate::put_back(p, &saved) {
                    tracing::warn!("{again}");
                }
                return Err(e);
            }
        }
    }
    Ok(saved)
}

/// The configuration of interface `name`, whose tun file is `fd`.
fn device(
    p: &Prog,
    fd: i32,
    name: &str,
    tun_flags: u16,
    tracked: Option<&Tracked>,
) -> Result<Device, Error> {
    let mut dev = Device {
        name: name.to_string(),
        tun_flags,
        tracked: tracked.cloned().unwrap_or_default(),
        ..Default::default()
    };
    let sock = p.socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    let link = (|| -> Result<_, Error> {
        let get = |req: u32, what: &str| -> Result<Vec<u8>, Error> {
            p.ioctl_ifreq(sock, req, name, &[])?
                .map_err(|e| Error::Tracee(format!("interface {name}: {what}: {}", errno_name(e))))
        };
        dev.ifindex = ifreq_i32(&get(SIOCGIFINDEX, "SIOCGIFINDEX")?);
        dev.link_flags = u32::from(ifreq_u16(&get(SIOCGIFFLAGS, "SIOCGIFFLAGS")?));
        dev.mtu = ifreq_i32(&get(SIOCGIFMTU, "SIOCGIFMTU")?);
        dev.txqlen = ifreq_i32(&get(SIOCGIFTXQLEN, "SIOCGIFTXQLEN")?);
        let hw = get(SIOCGIFHWADDR, "SIOCGIFHWADDR")?;
        dev.hw_type = u16::from_ne_bytes([hw[IFNAMSIZ], hw[IFNAMSIZ + 1]]);
        if dev.hw_type == ARPHRD_ETHER {
            dev.hwaddr = hw[IFNAMSIZ + 2..IFNAMSIZ + 8].to_vec();
        }
        Ok(())
    })();
    p.close(sock as u64);
    link?;
    let int = |req: u32| -> Result<Option<i32>, Error> { Ok(p.ioctl_int(fd, req, 0)?.ok()) };
    dev.vnet_hdr_sz = int(TUNGETVNETHDRSZ)?.unwrap_or(VIRTIO_NET_HDR_SIZE as i32);
    dev.sndbuf = int(TUNGETSNDBUF)?.unwrap_or(i32::MAX);
    dev.vnet_le = int(TUNGETVNETLE)?.map(|v| v != 0);
    dev.vnet_be = int(TUNGETVNETBE)?.map(|v| v != 0);
    if dev.link_flags & IFF_UP != 0 {
        // Up without running: the carrier is off.
        dev.tracked.carrier = Some(dev.link_flags & IFF_RUNNING != 0);
    }
    let (info, addresses, routes) = rtnetlink(p, dev.ifindex)?;
    let info = info.ok_or_else(|| {
        Error::Tracee(format!(
            "interface {name}: rtnetlink does not describe it as a tun device"
        ))
    })?;
    // The kind, headers, queues and persistence as rtnetlink has them (see
    // netlink::TunInfo); TUNGETIFF's flags for the rest (IFF_NAPI...).
    let from_info = IFF_TUN | IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE | IFF_PERSIST;
    dev.tun_flags = (tun_flags & !from_info)
        | u16::from(info.kind) & (IFF_TUN | IFF_TAP)
        | if info.pi { 0 } else { IFF_NO_PI }
        | if info.vnet_hdr { IFF_VNET_HDR } else { 0 }
        | if info.multi_queue { IFF_MULTI_QUEUE } else { 0 }
        | if info.persist { IFF_PERSIST } else { 0 };
    dev.tracked.owner = info.owner;
    dev.tracked.group = info.group;
    dev.addresses = addresses;
    dev.routes = routes;
    Ok(dev)
}

type NlObjects = Vec<crate::state::NlObject>;

/// The device's tun description, addresses and routes.
fn rtnetlink(
    p: &Prog,
    index: i32,
) -> Result<(Option<netlink::TunInfo>, NlObjects, NlObjects), Error> {
    let sock = p.socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
    let result = (|| {
        let mut info = None;
        for (ty, payload) in p.netlink(sock, &netlink::get_link_request(index, 1), 1)? {
            if ty == netlink::RTM_NEWLINK {
                info = netlink::parse_tun_info(&payload);
            }
        }
        let mut addresses = Vec::new();
        for (ty, payload) in p.netlink(sock, &netlink::dump_request(netlink::RTM_GETADDR, 2), 2)? {
            if ty == netlink::RTM_NEWADDR {
                addresses.extend(netlink::parse_address(&payload, index));
            }
        }
        let mut routes = Vec::new();
        for (ty, payload) in p.netlink(sock, &netlink::dump_request(netlink::RTM_GETROUTE, 3), 3)? {
            if ty == netlink::RTM_NEWROUTE {
                routes.extend(netlink::parse_route(&payload, index));
            }
        }
        Ok((info, addresses, routes))
    })();
    p.close(sock as u64);
    result
}
