//! The tun plugin (`--plugin tun`): checkpoint and restart programs that
//! use tun or tap devices (`/dev/net/tun`).
//!
//! # What it virtualizes
//!
//! - **The descriptors.** Every descriptor whose `/proc/PID/fd` link is
//!   `/dev/net/tun` is the plugin's. Descriptors sharing one open file
//!   (dup) are told apart with kcmp and come back sharing one again, at
//!   their numbers, with their close-on-exec flag, O_NONBLOCK and O_ASYNC.
//!   A descriptor never attached to an interface comes back as a fresh open.
//! - **The device.** Its name and TUNSETIFF flags (IFF_TUN/IFF_TAP,
//!   IFF_NO_PI, IFF_VNET_HDR, IFF_MULTI_QUEUE, persistence, owner and group
//!   from rtnetlink's link info, the way `ip -d link` shows them, since
//!   TUNGETIFF reports IFF_NO_PI wrongly on some kernels; IFF_NAPI... from
//!   TUNGETIFF); the virtio-net header size, socket send buffer and vnet
//!   endianness (read back with their TUNGET ioctls); the offloads and
//!   carrier the program set (no way to read them back: seen through the
//!   trapped tun ioctls, with their results); the link type. The interface
//!   index is asked for again (TUNSETIFINDEX) when it is free.
//! - **The interface configuration**, read live at the checkpoint in the
//!   program's network namespace (so whatever set it: the program's
//!   SIOCSIF* ioctls, `ip` run by the program, rtnetlink): flags (up,
//!   NOARP, multicast...), MTU, transmit queue length, MAC address (tap),
//!   IPv4 addresses (with peers, broadcasts, labels) and configured IPv6
//!   addresses, and the routes through the interface that were added (not
//!   the kernel's own).
//! - **The packets queued in the device** for the program to read: drained
//!   at the checkpoint (nonblocking reads until EAGAIN, at most the queue
//!   length), stored in the image, and put back into the device after a
//!   restart, and after the checkpoint itself when the program goes on. They
//!   are put back by transmitting them on the interface through a packet
//!   socket (see [`queue`]): the device queues them for its reader as when
//!   they first arrived, so the program's next reads return them, in order,
//!   and poll/select/epoll/SIGIO see the descriptor readable, with nothing
//!   emulated. Packets that arrive while this happens are read again and
//!   queued after them.
//!
//! Every syscall touching the device, the interface or the network is made
//! by the program itself (injected): its descriptors and network namespace
//! are used, not rewind's. At restart a device of that name must not exist
//! (unless it was persistent: then the program attaches to it again); the
//! interface comes up before its addresses are set, so nothing is routed
//! to it before the drained packets are back. A missing /dev/net/tun or a
//! failing TUNSETIFF is an error naming the device, its descriptor and the
//! cause, and nothing is left: the engine kills the half-restored process,
//! which removes the new interface (persistence is set last).
//!
//! # Limits
//!
//! - Multi-queue devices are restored queue by queue, but packets put back
//!   are spread over the queues by the kernel's queue selection, not
//!   necessarily to the queue they were drained from; a queue detached with
//!   TUNSETQUEUE is restored as a fresh open (with a warning).
//! - Socket filters, eBPF steering and filter programs and the tap
//!   transmit filter (TUNATTACHFILTER, TUNSETSTEERINGEBPF,
//!   TUNSETFILTEREBPF, TUNSETTXFILTER) are not restored (a warning at the
//!   checkpoint names them).
//! - Packets put back through a virtio-net header keep its offload fields
//!   but lose "checksum valid" (a receive-side flag).
//! - IPv6 link-local and autoconfigured addresses are the kernel's: it makes
//!   new ones when the interface comes up; address lifetimes are not kept
//!   (addresses come back permanent). Neighbour entries, qdiscs, firewall
//!   rules and other interfaces (bridges the tap was enslaved to) are not
//!   part of the image.
//! - The restarted program must be in a network namespace where it may
//!   create the interface (CAP_NET_ADMIN): the restart runs the program in
//!   rewind's own namespace, like the launch did. Restarting in another
//!   namespace works (`ip netns exec NS rewind restart ...`) and the
//!   configuration follows; what lay outside the interface (the peer the
//!   packets were meant for) does not.
//! - An interface renamed by the program after TUNSETIFF is recreated
//!   under its new name (TUNGETIFF reports it), with the ioctl-only
//!   settings seen under the old name lost.
//! - The ioctls of type 'T' (tun's, and terminal ioctls, which share the
//!   type) stop in the tracer, except the frequent terminal ones (TCGETS,
//!   TIOCGWINSZ, FIONREAD...): a few microseconds each.

pub mod capture;
mod consts;
mod netlink;
mod prog;
pub mod queue;
mod restore;
pub mod state;

use std::collections::HashMap;

use libc::pid_t;
use rewind_ckpt::image::format::{FdKind, FdState};
use rewind_ckpt::plugin::{
    CaptureCtx, IoctlTrap, Plugin, RestoreCtx, ResumeCtx, SyscallAction, SyscallCtx,
};
use rewind_ckpt::Error;

use consts::*;
use prog::Prog;
use state::{Saved, Tracked};

pub use state::VERSION;

pub const NAME: &str = "tun";

/// The `/proc/PID/fd` link of a tun descriptor.
pub const TUN_PATH: &str = "/dev/net/tun";

#[derive(Default)]
pub struct Tun {
    /// Settings seen through trapped ioctls, by interface name.
    tracked: HashMap<String, Tracked>,
    /// Threads inside a TUNSETIFF: whether it makes a new interface.
    creating: HashMap<pid_t, bool>,
    /// What the last checkpoint drained, put back when the program resumes.
    drained: Option<Saved>,
}

impl Tun {
    pub fn new() -> Tun {
        Tun::default()
    }
}

/// Make `--plugin tun` known.
pub fn register() {
    rewind_ckpt::plugin::register(NAME, || Box::new(Tun::new()));
}

/// The tun ioctls whose effect the plugin must see (all but the getters).
fn watched(req: u32) -> bool {
    matches!(
        req,
        TUNSETIFF
            | TUNSETOFFLOAD
            | TUNSETCARRIER
            | TUNATTACHFILTER
            | TUNDETACHFILTER
            | TUNSETTXFILTER
            | TUNSETSTEERINGEBPF
            | TUNSETFILTEREBPF
    )
}

fn is_mine(f: &FdState) -> bool {
    matches!(&f.kind, FdKind::Plugin { plugin, .. } if plugin == NAME)
}

/// Whether interface `name` exists in the network namespace of `pid`.
fn interface_exists(pid: pid_t, name: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .map(|dev| {
            dev.lines()
                .filter_map(|l| l.split_once(':'))
                .any(|(n, _)| n.trim() == name)
        })
        .unwrap_or(false)
}

impl Plugin for Tun {
    fn name(&self) -> &'static str {
        NAME
    }

    fn ioctls(&self) -> &'static [IoctlTrap] {
        &[IoctlTrap {
            ty: b'T',
            except: TTY_HOT,
        }]
    }

    fn fd_prefixes(&self) -> &'static [&'static str] {
        &[TUN_PATH]
    }

    fn on_syscall(&mut self, ctx: &mut SyscallCtx) -> Result<SyscallAction, Error> {
        let req = ctx.regs.rsi as u32;
        if ctx.regs.orig_rax as i64 != libc::SYS_ioctl || !watched(req) {
            // Terminal ioctls share the type byte: untouched.
            return Ok(SyscallAction::Run);
        }
        if req == TUNSETIFF {
            // A name with a pattern ("tun%d") or unknown yet makes a new
            // interface; settings seen under an old one of that name go.
            let name = ctx
                .tracee
                .read_cstr(ctx.regs.rdx, IFNAMSIZ)
                .map(|n| String::from_utf8_lossy(&n).into_owned())
                .unwrap_or_default();
            let new =
                name.is_empty() || name.contains('%') || !interface_exists(ctx.tracee.pid, &name);
            self.creating.insert(ctx.tid, new);
        }
        Ok(SyscallAction::RunWatchExit)
    }

    fn on_syscall_exit(&mut self, ctx: &mut SyscallCtx, result: i64) -> Result<(), Error> {
        let req = ctx.regs.rsi as u32;
        let created = self.creating.remove(&ctx.tid);
        if result != 0 {
            return Ok(());
        }
        let fd = ctx.regs.rdi as i32;
        let arg = ctx.regs.rdx;
        let Some(name) = capture::fdinfo_iff(ctx.tracee.pid, fd) else {
            return Ok(());
        };
        if created == Some(true) {
            self.tracked.remove(&name);
        }
        let int_at = |addr: u64| -> Option<i32> {
            let mut b = [0u8; 4];
            ctx.tracee.read_mem(addr, &mut b).ok()?;
            Some(i32::from_ne_bytes(b))
        };
        let t = self.tracked.entry(name).or_default();
        let mut note = |what: &str| {
            if !t.unsupported.iter().any(|u| u == what) {
                t.unsupported.push(what.to_string());
            }
        };
        match req {
            TUNSETIFF => {
                let mut b = [0u8; 2];
                if ctx.tracee.read_mem(arg + IFNAMSIZ as u64, &mut b).is_ok()
                    && u16::from_ne_bytes(b) & IFF_NO_CARRIER != 0
                {
                    t.carrier = Some(false);
                }
            }
            TUNSETOFFLOAD => t.offload = Some(arg as u32),
            TUNSETCARRIER => t.carrier = int_at(arg).map(|v| v != 0),
            TUNATTACHFILTER => note("TUNATTACHFILTER"),
            TUNDETACHFILTER => t.unsupported.retain(|u| u != "TUNATTACHFILTER"),
            TUNSETTXFILTER => note("TUNSETTXFILTER"),
            TUNSETSTEERINGEBPF => note("TUNSETSTEERINGEBPF"),
            TUNSETFILTEREBPF => note("TUNSETFILTEREBPF"),
            _ => {}
        }
        Ok(())
    }

    fn pre_checkpoint(&mut self, ctx: &mut CaptureCtx) -> Result<(), Error> {
        self.drained = None;
        ctx.state.plugin_data.retain(|(n, _)| n != NAME);
        let mine: Vec<&FdState> = ctx.state.fds.iter().filter(|f| is_mine(f)).collect();
        if mine.is_empty() {
            return Ok(());
        }
        let tracked = &self.tracked;
        let warnings = &mut *ctx.warnings;
        let saved = Prog::with(ctx.tracee, ctx.injector, |p| {
            capture::capture(p, &mine, tracked, warnings)
        })?;
        let bytes = saved.encode();
        if saved.files.iter().any(|f| !f.queue.is_empty()) {
            self.drained = Some(saved);
        }
        ctx.state.plugin_data.push((NAME.to_string(), bytes?));
        Ok(())
    }

    fn resume(&mut self, ctx: &mut ResumeCtx) -> Result<(), Error> {
        let Some(saved) = self.drained.take() else {
            return Ok(());
        };
        Prog::with(ctx.tracee, ctx.injector, |p| put_back(p, &saved))
    }

    fn restart(&mut self, ctx: &mut RestoreCtx) -> Result<(), Error> {
        let Some(saved) = Saved::from_state(ctx.state)? else {
            return Ok(());
        };
        let warnings = &mut *ctx.warnings;
        Prog::with(ctx.tracee, ctx.injector, |p| {
            restore::restore(p, &saved, warnings)
        })?;
        self.tracked = saved
            .devices
            .iter()
            .map(|d| (d.name.clone(), d.tracked.clone()))
            .collect();
        Ok(())
    }
}

/// Put every drained packet back into its device (the program goes on
/// after a checkpoint).
pub(crate) fn put_back(p: &Prog, saved: &Saved) -> Result<(), Error> {
    for dev in &saved.devices {
        let queues: Vec<(i32, &[Vec<u8>])> = saved
            .files
            .iter()
            .filter(|f| f.device.as_deref() == Some(dev.name.as_str()))
            .filter_map(|f| Some((f.fds.first()?.fd, f.queue.as_slice())))
            .collect();
        queue::requeue(p, dev, dev.ifindex, &queues)?;
    }
    Ok(())
}
