//! Restart: recreate every tun file at its descriptor numbers, the
//! interfaces with their names, flags and configuration, and put the
//! drained packets back. Everything is done by the program itself
//! (injected), in its network namespace. Any failure is an error: the
//! engine then kills the half-made process, which closes the new tun files
//! and so removes the interfaces made here (they are made persistent last).

use std::collections::HashMap;

use rewind_ckpt::Error;

use crate::consts::*;
use crate::netlink;
use crate::prog::{errno_name, ifreq_i32, Prog};
use crate::queue;
use crate::state::{Device, Fd, Saved, TunFile};

/// An interface this restart attached to.
struct Attached {
    /// It existed already (a persistent device that outlived the program).
    existed: bool,
}

fn fail(name: &str, fd: i32, why: String) -> Error {
    Error::Restore(format!(
        "cannot recreate tun device {name} (fd {fd}): {why}"
    ))
}

pub fn restore(p: &Prog, saved: &Saved, warnings: &mut Vec<String>) -> Result<(), Error> {
    let mut files: Vec<&TunFile> = saved.files.iter().filter(|f| !f.fds.is_empty()).collect();
    files.sort_by_key(|f| f.fds.first().map(|d| d.fd));
    let mut attached: HashMap<&str, Attached> = HashMap::new();
    // Descriptors in ascending order of their lowest number: the number a
    // fresh open gets is never one a later file still needs.
    for file in &files {
        let Some(&first) = file.fds.first() else {
            continue;
        };
        let label = file.device.as_deref().unwrap_or("(none)");
        let tmp = open_tun(p, file, label, first.fd)?;
        if let Some(name) = file.device.as_deref() {
            let dev = saved.device(name).ok_or_else(|| {
                Error::Restore(format!(
                    "the image's tun plugin data names no device {name} for fd {}",
                    first.fd
                ))
            })?;
            let setiff = if attached.contains_key(name) {
                // Another queue of a multi-queue device.
                set_iff(p, tmp, dev, false, first.fd)
            } else {
                let existed = prepare(p, dev, first.fd)?;
                attached.insert(name, Attached { existed });
                set_iff(p, tmp, dev, !existed, first.fd)
            };
            if let Err(e) = setiff {
                p.close(tmp);
                return Err(e);
            }
        }
        place(p, tmp, file, first)?;
    }
    for dev in &saved.devices {
        let Some(state) = attached.get(dev.name.as_str()) else {
            continue;
        };
        let queues: Vec<(i32, &[Vec<u8>])> = files
            .iter()
            .filter(|f| f.device.as_deref() == Some(dev.name.as_str()))
            .filter_map(|f| Some((f.fds.first()?.fd, f.queue.as_slice())))
            .collect();
        let Some(&(fd, _)) = queues.first() else {
            continue;
        };
        configure(p, dev, fd, state, &queues, warnings)?;
    }
    Ok(())
}

/// A fresh open of /dev/net/tun (close-on-exec until placed).
fn open_tun(p: &Prog, file: &TunFile, label: &str, fd: i32) -> Result<u64, Error> {
    let path = p.put(0, b"/dev/net/tun\0")?;
    let flags = (file.flags as u64 & libc::O_ACCMODE as u64) | libc::O_CLOEXEC as u64;
    let ret = p.sys(libc::SYS_openat, &[libc::AT_FDCWD as u64, path, flags, 0])?;
    if ret < 0 {
        let hint = match -ret as i32 {
            libc::ENOENT => " (this system has no /dev/net/tun: no tun support in the kernel, or a container without the device)",
            libc::ENODEV | libc::ENXIO => " (the kernel has no tun driver: modprobe tun)",
            libc::EACCES | libc::EPERM => " (not allowed to open it)",
            _ => "",
        };
        return Err(fail(
            label,
            fd,
            format!("cannot open /dev/net/tun: {}{hint}", errno_name(ret)),
        ));
    }
    Ok(ret as u64)
}

/// Before the first TUNSETIFF of `dev`: whether an interface of that name
/// exists already, which is fine only for a persistent device (attached to
/// again). Returns whether it existed.
fn prepare(p: &Prog, dev: &Device, fd: i32) -> Result<bool, Error> {
    let sock = p.socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    let existing = p.ioctl_ifreq(sock, SIOCGIFINDEX, &dev.name, &[]);
    p.close(sock as u64);
    let Ok(ifr) = existing? else {
        return Ok(false);
    };
    if dev.tun_flags & IFF_PERSIST == 0 {
        return Err(fail(
            &dev.name,
            fd,
            format!(
                "an interface named {} already exists in the program's network namespace \
                 (index {}); remove it (ip link del {}) or restart in another namespace",
                dev.name,
                ifreq_i32(&ifr),
                dev.name
            ),
        ));
    }
    Ok(true)
}

fn set_iff(p: &Prog, tmp: u64, dev: &Device, create: bool, fd: i32) -> Result<(), Error> {
    let tmp = tmp as i32;
    if create && dev.ifindex > 0 {
        // Keep the interface index the program may have stored; refused
        // (EBUSY at TUNSETIFF) if another interface took it meanwhile.
        let sock = p.socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
        let free = p.ioctl_ifreq(sock, SIOCGIFNAME, "", &dev.ifindex.to_ne_bytes());
        p.close(sock as u64);
        if free?.is_err() {
            let _ = p.ioctl_int(tmp, TUNSETIFINDEX, dev.ifindex)?;
        }
    }
    let mut flags = dev.tun_flags & SETIFF_MASK;
    if create {
        flags |= IFF_TUN_EXCL;
    }
    match p.ioctl_ifreq(tmp, TUNSETIFF, &dev.name, &flags.to_ne_bytes())? {
        Ok(_) => Ok(()),
        Err(e) => {
            let hint = match -e as i32 {
                libc::EBUSY if create => format!(
                    " (an interface named {} or with index {} appeared meanwhile)",
                    dev.name, dev.ifindex
                ),
                libc::EBUSY => " (the device is busy: attached to another process?)".into(),
                libc::EINVAL => format!(
                    " (an interface named {} exists and is not a tun/tap device with flags {:#x})",
                    dev.name, flags
                ),
                libc::EPERM => " (needs CAP_NET_ADMIN in the program's network namespace, or the device's owner)".into(),
                _ => String::new(),
            };
            Err(fail(
                &dev.name,
                fd,
                format!("TUNSETIFF failed: {}{hint}", errno_name(e)),
            ))
        }
    }
}

/// Move the fresh file to its numbers, with its status flags.
fn place(p: &Prog, tmp: u64, file: &TunFile, first: Fd) -> Result<(), Error> {
    let dup3 = |from: u64, to: &Fd| -> Result<(), Error> {
        let fl = if to.cloexec {
            libc::O_CLOEXEC as u64
        } else {
            0
        };
        p.call("dup3", libc::SYS_dup3, &[from, to.fd as u64, fl])?;
        Ok(())
    };
    if tmp != first.fd as u64 {
        dup3(tmp, &first)?;
        p.close(tmp);
    } else if !first.cloexec {
        p.call(
            "fcntl(F_SETFD)",
            libc::SYS_fcntl,
            &[tmp, libc::F_SETFD as u64, 0],
        )?;
    }
    for other in file.fds.iter().skip(1) {
        dup3(first.fd as u64, other)?;
    }
    let status = file.flags as u64 & (libc::O_NONBLOCK | libc::O_ASYNC) as u64;
    if status != 0 {
        p.call(
            "fcntl(F_SETFL)",
            libc::SYS_fcntl,
            &[first.fd as u64, libc::F_SETFL as u64, status],
        )?;
    }
    Ok(())
}

/// The device's settings, in an order the kernel accepts: tun settings and
/// link type while down, then MTU, queue length, MAC, flags (up), the
/// drained packets (before any address routes traffic here), addresses,
/// routes, carrier, persistence.
fn configure(
    p: &Prog,
    dev: &Device,
    fd: i32,
    state: &Attached,
    queues: &[(i32, &[Vec<u8>])],
    warnings: &mut Vec<String>,
) -> Result<(), Error> {
    let name = dev.name.as_str();
    let err = |what: &str, e: i64| fail(name, fd, format!("{what}: {}", errno_name(e)));
    let tun_int = |req: u32, v: i32, what: &str| -> Result<(), Error> {
        p.ioctl_int(fd, req, v)?.map(drop).map_err(|e| err(what, e))
    };
    let tun_val = |req: u32, v: u32, what: &str| -> Result<(), Error> {
        let r = p.sys(libc::SYS_ioctl, &[fd as u64, u64::from(req), u64::from(v)])?;
        if r < 0 {
            return Err(err(what, r));
        }
        Ok(())
    };
    if dev.tun_flags & IFF_VNET_HDR != 0 && dev.vnet_hdr_sz != VIRTIO_NET_HDR_SIZE as i32 {
        tun_int(TUNSETVNETHDRSZ, dev.vnet_hdr_sz, "TUNSETVNETHDRSZ")?;
    }
    if dev.sndbuf != i32::MAX && dev.sndbuf > 0 {
        tun_int(TUNSETSNDBUF, dev.sndbuf, "TUNSETSNDBUF")?;
    }
    if dev.vnet_le == Some(true) {
        tun_int(TUNSETVNETLE, 1, "TUNSETVNETLE")?;
    }
    if dev.vnet_be == Some(true) {
        tun_int(TUNSETVNETBE, 1, "TUNSETVNETBE")?;
    }
    let t = &dev.tracked;
    if let Some(v) = t.offload {
        tun_val(TUNSETOFFLOAD, v, "TUNSETOFFLOAD")?;
    }
    if let Some(v) = t.owner {
        tun_val(TUNSETOWNER, v, "TUNSETOWNER")?;
    }
    if let Some(v) = t.group {
        tun_val(TUNSETGROUP, v, "TUNSETGROUP")?;
    }
    let default_type = if dev.tun_flags & IFF_TAP != 0 {
        ARPHRD_ETHER
    } else {
        ARPHRD_NONE
    };
    if !state.existed && dev.hw_type != default_type {
        tun_val(TUNSETLINK, u32::from(dev.hw_type), "TUNSETLINK")?;
    }

    let sock = p.socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    let link = (|| -> Result<_, Error> {
        // Only what differs: a persistent device attached to again may be
        // up already, and a MAC cannot always change on a running device.
        let set = |get: u32, req: u32, data: &[u8], what: &str| -> Result<(), Error> {
            if let Ok(now) = p.ioctl_ifreq(sock, get, name, &[])? {
                if now.get(IFNAMSIZ..IFNAMSIZ + data.len()) == Some(data) {
                    return Ok(());
                }
            }
            p.ioctl_ifreq(sock, req, name, data)?
                .map(drop)
                .map_err(|e| err(what, e))
        };
        let index = p
            .ioctl_ifreq(sock, SIOCGIFINDEX, name, &[])?
            .map(|ifr| ifreq_i32(&ifr))
            .map_err(|e| err("SIOCGIFINDEX", e))?;
        if index != dev.ifindex {
            warnings.push(format!(
                "tun device {name} has interface index {index} now (it was {}: taken)",
                dev.ifindex
            ));
        }
        if dev.txqlen > 0 {
            let q = dev.txqlen.to_ne_bytes();
            set(SIOCGIFTXQLEN, SIOCSIFTXQLEN, &q, "SIOCSIFTXQLEN")?;
        }
        if dev.mtu > 0 {
            set(SIOCGIFMTU, SIOCSIFMTU, &dev.mtu.to_ne_bytes(), "SIOCSIFMTU")?;
        }
        if dev.hwaddr.len() == 6 {
            let mut sa = dev.hw_type.to_ne_bytes().to_vec();
            sa.extend_from_slice(&dev.hwaddr);
            set(SIOCGIFHWADDR, SIOCSIFHWADDR, &sa, "SIOCSIFHWADDR")?;
        }
        let flags = (dev.link_flags as u16).to_ne_bytes();
        set(SIOCGIFFLAGS, SIOCSIFFLAGS, &flags, "SIOCSIFFLAGS")?;
        Ok(index)
    })();
    p.close(sock as u64);
    let index = link?;

    let n = queue::requeue(p, dev, index, queues).map_err(|e| fail(name, fd, e.to_string()))?;
    if n > 0 {
        tracing::info!("tun {name}: {n} drained packets queued again");
    }

    let nl = p.socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
    let configured = (|| {
        let mut seq = 10;
        for (what, objects) in [("address", &dev.addresses), ("route", &dev.routes)] {
            for o in objects.iter() {
                seq += 1;
                let req = if what == "address" {
                    netlink::add_address(o, index, seq)
                } else {
                    netlink::add_route(o, index, seq)
                };
                let answer = p.netlink(nl, &req, seq)?;
                let errno = answer
                    .iter()
                    .find(|(ty, _)| *ty == netlink::NLMSG_ERROR)
                    .map(|(_, payload)| netlink::error_of(payload))
                    .unwrap_or(0);
                if errno != 0 && errno != -libc::EEXIST {
                    return Err(fail(
                        name,
                        fd,
                        format!(
                            "cannot add {what} {}: {}",
                            netlink::describe(o),
                            errno_name(i64::from(errno))
                        ),
                    ));
                }
            }
        }
        Ok(())
    })();
    p.close(nl as u64);
    configured?;

    if t.carrier == Some(false) {
        tun_int(TUNSETCARRIER, 0, "TUNSETCARRIER")?;
    }
    if dev.tun_flags & IFF_PERSIST != 0 && !state.existed {
        tun_val(TUNSETPERSIST, 1, "TUNSETPERSIST")?;
    }
    Ok(())
}
