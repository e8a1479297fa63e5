//! The built-in Files plugin: file descriptors, captured from
//! /proc/pid/fd and fdinfo, recreated at their numbers by injected syscalls.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use libc::pid_t;

use crate::image::format::{EpollWatch, FdKind, FdState, SharedObject, SocketState};
use crate::plugin::{CaptureCtx, Plugin, RestoreCtx, StdioIds};
use crate::sockets::{Census, Rebuilt};
use crate::tracee::{Injector, Tracee};
use crate::Error;

pub struct Files;

impl Plugin for Files {
    fn name(&self) -> &'static str {
        "files"
    }

    fn pre_checkpoint(&mut self, ctx: &mut CaptureCtx) -> Result<(), Error> {
        ctx.state.fds = capture(
            ctx.tracee.pid,
            ctx.stdio,
            ctx.claimed_fds,
            (ctx.sockets, ctx.terminals),
            ctx.vids,
            ctx.warnings,
        )?;
        Ok(())
    }

    fn restart(&mut self, ctx: &mut RestoreCtx) -> Result<(), Error> {
        // Restored alone, the process's sockets and ptys are made for it
        // here, and its TCP connections (to itself) run again at once.
        let mut local_ptys = None;
        let terminals = match ctx.terminals {
            Some(t) => t,
            None => {
                let mut t = crate::pty::Rebuilt::make(&[ctx.state])?;
                ctx.warnings.extend(t.take_warnings());
                &*local_ptys.insert(t)
            }
        };
        let mut local = None;
        let sockets = match ctx.sockets {
            Some(s) => s,
            None => {
                let mut r = Rebuilt::make(&[ctx.state])?;
                ctx.warnings.extend(r.take_warnings());
                &*local.insert(r)
            }
        };
        restore(
            ctx.tracee,
            ctx.injector,
            &ctx.state.fds,
            ctx.warnings,
            Remade {
                pipes: ctx.shared_pipes,
                sockets,
                memory: ctx.shared_memory,
                terminals,
                vsid: ctx.state.vsid,
            },
        )?;
        if let Some(mut r) = local {
            r.reconnect(&HashMap::new());
            ctx.warnings.extend(r.release());
        }
        Ok(())
    }
}

/// Identity of this process's own descriptors 0, 1, 2.
pub fn own_stdio() -> StdioIds {
    let mut ids = [None; 3];
    for (fd, id) in ids.iter_mut().enumerate() {
        *id = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .ok()
            .map(|m| (m.dev(), m.ino()));
    }
    ids
}

fn fdinfo_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

fn parse_pair(s: &str) -> (u64, u64) {
    // "(sec, nsec)"
    let inner = s.trim().trim_start_matches('(').trim_end_matches(')');
    let mut it = inner
        .split(',')
        .map(|x| x.trim().parse::<u64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Capture every descriptor of `pid`, with the sockets and ptys of its
/// program read for this checkpoint (read here when None: the process is
/// captured alone).
pub fn capture(
    pid: pid_t,
    stdio: &StdioIds,
    claimed: &[(&'static str, &'static str)],
    (sockets, terminals): (Option<&Census>, Option<&crate::pty::Census>),
    vids: &crate::vids::VirtualIds,
    warnings: &mut Vec<String>,
) -> Result<Vec<FdState>, Error> {
    let mut local_ptys = None;
    let terminals = match terminals {
        Some(t) => t,
        None => {
            let mut t = crate::pty::Census::take(&[pid], vids)?;
            warnings.extend(t.take_warnings());
            &*local_ptys.insert(t)
        }
    };
    // Captured alone, the process's sockets are read here (its TCP
    // connections to itself frozen only while they are).
    let mut local = None;
    let census = match sockets {
        Some(c) => c,
        None => {
            let mut c = Census::take(&[pid])?;
            c.freeze(false);
            c.capture(&Default::default());
            warnings.extend(c.take_warnings());
            &*local.insert(c)
        }
    };
    let fds = capture_with(pid, stdio, claimed, (census, terminals), warnings);
    if let Some(mut c) = local {
        c.thaw();
    }
    fds
}

fn capture_with(
    pid: pid_t,
    stdio: &StdioIds,
    claimed: &[(&'static str, &'static str)],
    (census, terminals): (&Census, &crate::pty::Census),
    warnings: &mut Vec<String>,
) -> Result<Vec<FdState>, Error> {
    let dir = format!("/proc/{pid}/fd");
    let mut fds: Vec<i32> = std::fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    let mut pipes_seen: HashMap<u64, ()> = HashMap::new();
    // The shared memory objects the process maps, with the parts each
    // mapping covers, read once if needed.
    let mut mapped: Option<Vec<(SharedObject, u64, u64)>> = None;
    let mut out = Vec::new();
    for &fd in &fds {
        let link_path = format!("/proc/{pid}/fd/{fd}");
        let Ok(link) = std::fs::read_link(&link_path) else {
            continue;
        };
        let link = link.to_string_lossy().into_owned();
        let info_path = format!("/proc/{pid}/fdinfo/{fd}");
        let info = std::fs::read_to_string(&info_path).map_err(|e| Error::io(&info_path, e))?;
        let flags = fdinfo_field(&info, "flags:")
            .and_then(|v| u32::from_str_radix(v, 8).ok())
            .unwrap_or(0);
        let pos = fdinfo_field(&info, "pos:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let cloexec = flags & libc::O_CLOEXEC as u32 != 0;
        let flags = flags & !(libc::O_CLOEXEC as u32);
        let ident = std::fs::metadata(&link_path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let inherited = ident.and_then(|id| stdio.iter().position(|s| *s == Some(id)));
        let owner = claimed.iter().find(|(pre, _)| link.starts_with(pre));
        let kind = if let Some((_, plugin)) = owner {
            FdKind::Plugin {
                plugin: plugin.to_string(),
                what: link.clone(),
            }
        } else if let Some(from) = inherited {
            FdKind::Inherited { from: from as i32 }
        } else if let Some((master, file, pty)) = terminals.end(pid, fd) {
            FdKind::Pty {
                master,
                file,
                pty: Box::new(pty.clone()),
            }
        } else if let Some(rest) = link.strip_prefix("pipe:[") {
            let id: u64 = rest.trim_end_matches(']').parse().unwrap_or(0);
            let buffered = if pipes_seen.insert(id, ()).is_none() {
                drain_and_refill(&link_path)?
            } else {
                Vec::new()
            };
            FdKind::Pipe {
                id,
                write_end: flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32,
                buffered,
            }
        } else if let Some((id, socket)) =
            socket_inode(&link).and_then(|i| Some((i, census.state(i)?.clone())))
        {
            FdKind::Socket { id, socket }
        } else if link == "anon_inode:[eventfd]" {
            FdKind::EventFd {
                count: fdinfo_field(&info, "eventfd-count:")
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
                    .unwrap_or(0),
                semaphore: fdinfo_field(&info, "eventfd-semaphore:") == Some("1"),
            }
        } else if link == "anon_inode:[timerfd]" {
            let (vs, vn) = parse_pair(fdinfo_field(&info, "it_value:").unwrap_or(""));
            let (is, inn) = parse_pair(fdinfo_field(&info, "it_interval:").unwrap_or(""));
            FdKind::TimerFd {
                clockid: fdinfo_field(&info, "clockid:")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                interval_ns: is * 1_000_000_000 + inn,
                value_ns: vs * 1_000_000_000 + vn,
                ticks: fdinfo_field(&info, "ticks:")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            }
        } else if link == "anon_inode:[signalfd]" {
            FdKind::SignalFd {
                mask: fdinfo_field(&info, "sigmask:")
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
                    .unwrap_or(0),
            }
        } else if link == "anon_inode:[eventpoll]" {
            FdKind::Epoll {
                watches: held_watches(pid, fd, epoll_watches(&info), &fds, warnings),
            }
        } else if link.starts_with("/dev/pts/")
            || link.starts_with("/dev/tty")
            || link == "/dev/console"
        {
            FdKind::Tty { path: link.clone() }
        } else if let Some((object, covered)) = ident
            .filter(|_| link.ends_with(" (deleted)"))
            .and_then(|id| mapped_object(pid, id, &mut mapped))
        {
            // Mapped too: the same object as the mappings again, whose
            // contents the regions store (the rest is stored here).
            let unmapped = unmapped_data(&link_path, object.size, &covered)?;
            FdKind::SharedMemory {
                object,
                pos,
                unmapped,
            }
        } else if let Some(path) = link.strip_suffix(" (deleted)") {
            let mut contents = Vec::new();
            std::fs::File::open(&link_path)
                .and_then(|mut f| f.read_to_end(&mut contents))
                .map_err(|e| Error::io(&link_path, e))?;
            FdKind::DeletedFile {
                path: path.to_string(),
                pos,
                contents,
            }
        } else if link.starts_with('/') {
            FdKind::Path {
                path: link.clone(),
                pos,
            }
        } else {
            let hint = crate::plugin::registered_owner(&link)
                .map(|p| format!(" (launch the program with --plugin {p} to keep it)"))
                .unwrap_or_default();
            let becomes = if link.starts_with("socket:") {
                "a closed connection"
            } else {
                "/dev/null"
            };
            warnings.push(format!(
                "fd {fd} ({link}) cannot be checkpointed yet; it will be {becomes} after restart{hint}"
            ));
            FdKind::Unsupported { what: link.clone() }
        };
        out.push(FdState {
            fd,
            flags,
            cloexec,
            kind,
        });
    }
    Ok(out)
}

fn epoll_watches(info: &str) -> Vec<EpollWatch> {
    // "tfd:        5 events:       19 data:                5  pos:0 ino:... sdev:..."
    info.lines()
        .filter(|l| l.starts_with("tfd:"))
        .filter_map(|l| {
            let toks: Vec<&str> = l.split_whitespace().collect();
            let after = |key: &str| {
                toks.iter()
                    .position(|t| *t == key)
                    .and_then(|i| toks.get(i + 1))
            };
            Some(EpollWatch {
                fd: after("tfd:")?.parse().ok()?,
                events: u32::from_str_radix(after("events:")?, 16).ok()?,
                data: u64::from_str_radix(after("data:")?, 16).ok()?,
            })
        })
        .collect()
}

/// The shared memory object with identity `ident` (device, inode) that
/// `pid` maps, if it maps it, and the parts of it its mappings cover, as
/// (offset, end) (`mapped` caches the process's objects).
fn mapped_object(
    pid: pid_t,
    ident: (u64, u64),
    mapped: &mut Option<Vec<(SharedObject, u64, u64)>>,
) -> Option<(SharedObject, Vec<(u64, u64)>)> {
    let objects = mapped.get_or_insert_with(|| {
        crate::maps::read(pid)
            .map(|maps| {
                maps.iter()
                    .filter_map(|m| {
                        let object = crate::shm::object_of(pid, m)?;
                        Some((object, m.offset, m.offset + m.len()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    let mut found = None;
    let mut covered = Vec::new();
    for (o, start, end) in objects.iter() {
        if (o.dev, o.ino) == ident {
            found.get_or_insert_with(|| o.clone());
            covered.push((*start, *end));
        }
    }
    found.map(|o| (o, covered))
}

/// The data (not holes) of the file at `path` (of `size` bytes) outside
/// the `covered` (offset, end) ranges, as (offset, bytes).
fn unmapped_data(
    path: &str,
    size: u64,
    covered: &[(u64, u64)],
) -> Result<Vec<(u64, Vec<u8>)>, Error> {
    use std::os::unix::fs::FileExt;
    let mut covered = covered.to_vec();
    covered.sort_unstable();
    let mut gaps = Vec::new();
    let mut at = 0;
    for (s, e) in covered {
        if s > at {
            gaps.push((at, s.min(size)));
        }
        at = at.max(e);
    }
    if at < size {
        gaps.push((at, size));
    }
    gaps.retain(|(s, e)| s < e);
    if gaps.is_empty() {
        return Ok(Vec::new());
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (start, end) in gaps {
        for (s, e) in crate::shm::data_ranges(&file, start, end) {
            let mut bytes = vec![0u8; (e - s) as usize];
            file.read_exact_at(&mut bytes, s)
                .map_err(|e| Error::io(path, e))?;
            out.push((s, bytes));
        }
    }
    Ok(out)
}

/// The watches of epoll `epfd` of `pid`, each under a descriptor that
/// holds its file now. A watch outlives the descriptor it was added through
/// while another descriptor holds the same file (the program dup'ed it, or
/// another process shares it): its number may be closed, or name another
/// file, by now. Such a watch is kept under a descriptor of this process
/// that holds its file (`kcmp`), or dropped with a warning when none does.
fn held_watches(
    pid: pid_t,
    epfd: i32,
    watches: Vec<EpollWatch>,
    fds: &[i32],
    warnings: &mut Vec<String>,
) -> Vec<EpollWatch> {
    use crate::sys::process::epoll_watches_file;
    let mut out = Vec::with_capacity(watches.len());
    for (i, w) in watches.iter().enumerate() {
        // Registrations of one number are told apart by their rank among
        // those of that number, in the order fdinfo lists them (the
        // kernel's).
        let toff = watches[..i].iter().filter(|o| o.fd == w.fd).count() as u32;
        let same = |fd: i32| epoll_watches_file(pid, fd, epfd, w.fd, toff);
        match same(w.fd) {
            Ok(true) => out.push(*w),
            // No kcmp here (or not allowed): as fdinfo says.
            Err(nix::errno::Errno::ENOSYS | nix::errno::Errno::EPERM) => out.push(*w),
            _ => match fds.iter().copied().find(|&fd| same(fd) == Ok(true)) {
                Some(fd) => out.push(EpollWatch { fd, ..*w }),
                None => warnings.push(format!(
                    "epoll fd {epfd} watches a file it was given as fd {}, which this process no \
                     longer holds: that watch is not restored",
                    w.fd
                )),
            },
        }
    }
    out
}

fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Read the bytes buffered in a pipe and put them straight back, through a
/// second read-write description of the same pipe.
fn drain_and_refill(link_path: &str) -> Result<Vec<u8>, Error> {
    let mut pipe = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(link_path)
        .map_err(|e| Error::io(link_path, e))?;
    let n = crate::sys::fionread(pipe.as_raw_fd())
        .map_err(|e| Error::Tracee(format!("FIONREAD on {link_path}: {e}")))?;
    let mut data = vec![0u8; n];
    pipe.read_exact(&mut data)
        .map_err(|e| Error::io(link_path, e))?;
    pipe.write_all(&data).map_err(|e| Error::io(link_path, e))?;
    Ok(data)
}

/// Check, before any process is touched, that every file the image needs
/// is there.
pub fn check_paths(fds: &[FdState]) -> Result<(), Error> {
    for f in fds {
        if let FdKind::Path { path, .. } = &f.kind {
            if let Err(e) = std::fs::metadata(path) {
                return Err(Error::Restore(format!(
                    "file {path} (fd {}) that the program had open is gone: {e}",
                    f.fd
                )));
            }
        }
    }
    Ok(())
}

/// What a restart made again for every process before restoring their
/// descriptors: the descriptors are taken from these.
pub struct Remade<'a> {
    /// Pipes shared between processes of the tree.
    pub pipes: Option<&'a crate::tree::SharedPipes>,
    pub sockets: &'a Rebuilt,
    /// Shared memory objects (see `crate::shm`).
    pub memory: Option<&'a crate::shm::SharedMemory>,
    /// The ptys the program made.
    pub terminals: &'a crate::pty::Rebuilt,
    /// The process's session (whose controlling terminal may be one of
    /// `terminals`).
    pub vsid: i32,
}

/// Recreate `fds` in the stopped husk. Descriptors 0..2 of the husk are its
/// parent's (rewind restart's) stdio, used for `Inherited` and terminals
/// the program did not make.
pub fn restore(
    tracee: &Tracee,
    inj: &Injector,
    fds: &[FdState],
    warnings: &mut Vec<String>,
    remade: Remade<'_>,
) -> Result<(), Error> {
    let Remade {
        pipes: shared,
        sockets,
        memory,
        terminals,
        vsid,
    } = remade;
    let tid = tracee.pid;
    let scratch = inj.scratch();
    let call = |what: &str, nr: i64, args: &[u64]| inj.call(tid, what, nr, args);
    let hi = fds.iter().map(|f| f.fd).max().unwrap_or(2).max(2) as u64 + 1;
    // Park our stdio above every target number, close everything else.
    let mut parked = [0u64; 3];
    for (i, p) in parked.iter_mut().enumerate() {
        *p = call(
            "fcntl(F_DUPFD)",
            libc::SYS_fcntl,
            &[i as u64, libc::F_DUPFD as u64, hi],
        )?;
    }
    call("close_range", libc::SYS_close_range, &[0, hi - 1, 0])?;
    call(
        "close_range",
        libc::SYS_close_range,
        &[parked[2] + 1, u32::MAX as u64, 0],
    )?;
    let high = parked[2] + 1;
    // A descriptor of rewind's (a socket it rebuilt), copied into the
    // program through a pidfd of rewind's, kept above the target numbers.
    let rewind_pidfd: std::cell::Cell<Option<u64>> = std::cell::Cell::new(None);
    let take_from_rewind = |ours: i32| -> Result<u64, Error> {
        let pidfd = match rewind_pidfd.get() {
            Some(p) => p,
            None => {
                let p = call(
                    "pidfd_open(rewind)",
                    libc::SYS_pidfd_open,
                    &[u64::from(std::process::id()), 0],
                )?;
                let high_p = call(
                    "fcntl(F_DUPFD)",
                    libc::SYS_fcntl,
                    &[p, libc::F_DUPFD as u64, high],
                )?;
                call("close", libc::SYS_close, &[p])?;
                rewind_pidfd.set(Some(high_p));
                high_p
            }
        };
        call(
            "pidfd_getfd",
            libc::SYS_pidfd_getfd,
            &[pidfd, ours as u64, 0],
        )
    };
    // Put `tmp` at number `target`.
    let place = |tmp: u64, target: i32| -> Result<(), Error> {
        if tmp != target as u64 {
            call("dup2", libc::SYS_dup2, &[tmp, target as u64])?;
            call("close", libc::SYS_close, &[tmp])?;
        }
        Ok(())
    };
    // Take rewind's descriptor `ours` into the program at number `fd`, its
    // file status flags `flags`; pidfd_getfd's copy is close-on-exec, so
    // that is cleared (set again at the end for the ones that were).
    let adopt = |ours: i32, fd: i32, flags: u64| -> Result<(), Error> {
        let tmp = take_from_rewind(ours)?;
        place(tmp, fd)?;
        call(
            "fcntl(F_SETFD)",
            libc::SYS_fcntl,
            &[fd as u64, libc::F_SETFD as u64, 0],
        )?;
        call(
            "fcntl(F_SETFL)",
            libc::SYS_fcntl,
            &[fd as u64, libc::F_SETFL as u64, flags],
        )
        .map(drop)
    };
    // Bind socket `tmp` to `sockaddr`, listen, and put it at `fd`.
    let listen_again =
        |tmp: u64, sockaddr: &[u8], shown: &str, fd: i32, flags: u64| -> Result<(), Error> {
            tracee.write_mem(scratch, sockaddr)?;
            let bound = inj.syscall(tid, libc::SYS_bind, &[tmp, scratch, sockaddr.len() as u64])?;
            if bound < 0 {
                return Err(Error::Restore(format!(
                    "cannot listen on {shown} again (fd {fd}): {}",
                    crate::tracee::errno_text(bound)
                )));
            }
            call("listen", libc::SYS_listen, &[tmp, 4096])?;
            place(tmp, fd)?;
            call(
                "fcntl(F_SETFL)",
                libc::SYS_fcntl,
                &[fd as u64, libc::F_SETFL as u64, flags],
            )
            .map(drop)
        };
    let open_path = |path: &str, flags: u64| -> Result<u64, Error> {
        let mut bytes = path.as_bytes().to_vec();
        bytes.push(0);
        if bytes.len() > 4000 {
            return Err(Error::Restore(format!("path too long: {path}")));
        }
        tracee.write_mem(scratch, &bytes)?;
        inj.call(
            tid,
            &format!("open {path}"),
            libc::SYS_openat,
            &[libc::AT_FDCWD as u64, scratch, flags, 0o600],
        )
    };
    let mut pipes: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut socket_pairs: HashMap<u64, [u64; 2]> = HashMap::new();
    let mut placed_ends: HashMap<(u64, u8), i32> = HashMap::new();
    let mut socket_data: Vec<(u64, u8, Vec<Vec<u8>>)> = Vec::new();
    let mut pipe_data: Vec<(i32, Vec<u8>)> = Vec::new();
    for f in fds
        .iter()
        .filter(|f| !matches!(f.kind, FdKind::Epoll { .. }))
    {
        let keep_flags = f.flags as u64
            & (libc::O_APPEND | libc::O_NONBLOCK | libc::O_ASYNC | libc::O_NOATIME) as u64;
        let open_flags = f.flags as u64 & !((libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL) as u64);
        match &f.kind {
            FdKind::Inherited { from } => {
                call(
                    "dup2",
                    libc::SYS_dup2,
                    &[parked[*from as usize % 3], f.fd as u64],
                )?;
            }
            FdKind::Tty { path } if path == "/dev/tty" && terminals.controls(vsid) => {
                // The controlling terminal, a pty of the program's: it
                // took it back when its session was made.
                let tmp = open_path(path, open_flags | libc::O_NOCTTY as u64)?;
                place(tmp, f.fd)?;
            }
            FdKind::Pty { master, file, pty } => {
                let ours = terminals.fd(pty.index, *master, *file).ok_or_else(|| {
                    Error::Restore(format!("fd {}: pty {} was not made again", f.fd, pty.index))
                })?;
                adopt(ours, f.fd, keep_flags)?;
            }
            FdKind::Tty { path } => {
                // Re-bound to the terminal of `rewind restart`.
                let from = if f.fd < 3 { f.fd as usize } else { 0 };
                call("dup2", libc::SYS_dup2, &[parked[from], f.fd as u64])?;
                if f.fd >= 3 {
                    warnings.push(format!(
                        "fd {} ({path}) now refers to restart's standard input",
                        f.fd
                    ));
                }
            }
            FdKind::Path { path, pos } => {
                let tmp = open_path(path, open_flags)?;
                place(tmp, f.fd)?;
                call(
                    "lseek",
                    libc::SYS_lseek,
                    &[f.fd as u64, *pos, libc::SEEK_SET as u64],
                )?;
            }
            FdKind::DeletedFile {
                path,
                pos,
                contents,
            } => {
                let dir = std::path::Path::new(path)
                    .parent()
                    .and_then(|p| p.to_str())
                    .unwrap_or("/tmp");
                let tmp = open_path(dir, (libc::O_TMPFILE | libc::O_RDWR) as u64)
                    .or_else(|_| open_path("/tmp", (libc::O_TMPFILE | libc::O_RDWR) as u64))?;
                place(tmp, f.fd)?;
                let proc_path = format!("/proc/{tid}/fd/{}", f.fd);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&proc_path)
                    .and_then(|mut file| file.write_all(contents))
                    .map_err(|e| Error::io(&proc_path, e))?;
                call(
                    "lseek",
                    libc::SYS_lseek,
                    &[f.fd as u64, *pos, libc::SEEK_SET as u64],
                )?;
            }
            FdKind::SharedMemory {
                object,
                pos,
                unmapped,
            } => {
                // The object the restart made for the mappings (they are
                // restored already), through rewind's descriptor of it.
                let Some((crate::shm::Backing::Fd(ours), _)) =
                    memory.and_then(|m| m.backing(object))
                else {
                    return Err(Error::Restore(format!(
                        "fd {}: the shared memory it names was not made again",
                        f.fd
                    )));
                };
                if !unmapped.is_empty() {
                    use std::os::unix::fs::FileExt;
                    let own = format!("/proc/self/fd/{ours}");
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&own)
                        .map_err(|e| Error::io(&own, e))?;
                    for (at, bytes) in unmapped {
                        file.write_all_at(bytes, *at)
                            .map_err(|e| Error::io(&own, e))?;
                    }
                }
                // The /proc link must be followed (shm_open's O_NOFOLLOW).
                let tmp = open_path(
                    &format!("/proc/{}/fd/{ours}", std::process::id()),
                    open_flags & !(libc::O_NOFOLLOW as u64),
                )?;
                place(tmp, f.fd)?;
                call(
                    "lseek",
                    libc::SYS_lseek,
                    &[f.fd as u64, *pos, libc::SEEK_SET as u64],
                )?;
            }
            FdKind::Pipe { id, write_end, .. }
                if shared.is_some_and(|s| s.end(*id, *write_end).is_some()) =>
            {
                // A pipe of the tree, made (and filled) once by the restart:
                // opened through rewind's own descriptor of it.
                let end = shared.and_then(|s| s.end(*id, *write_end)).unwrap_or(-1);
                let mode = if *write_end {
                    libc::O_WRONLY
                } else {
                    libc::O_RDONLY
                };
                let tmp = open_path(
                    &format!("/proc/{}/fd/{end}", std::process::id()),
                    mode as u64,
                )?;
                place(tmp, f.fd)?;
                call(
                    "fcntl(F_SETFL)",
                    libc::SYS_fcntl,
                    &[f.fd as u64, libc::F_SETFL as u64, keep_flags],
                )?;
            }
            FdKind::Pipe {
                id,
                write_end,
                buffered,
            } => {
                let (r, w) = match pipes.get(id) {
                    Some(&ends) => ends,
                    None => {
                        call("pipe2", libc::SYS_pipe2, &[scratch, 0])?;
                        let mut b = [0u8; 8];
                        tracee.read_mem(scratch, &mut b)?;
                        let r = i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64;
                        let w = i32::from_le_bytes([b[4], b[5], b[6], b[7]]) as u64;
                        // Keep both ends above the target numbers.
                        let r2 = call(
                            "fcntl(F_DUPFD)",
                            libc::SYS_fcntl,
                            &[r, libc::F_DUPFD as u64, high],
                        )?;
                        let w2 = call(
                            "fcntl(F_DUPFD)",
                            libc::SYS_fcntl,
                            &[w, libc::F_DUPFD as u64, high],
                        )?;
                        call("close", libc::SYS_close, &[r])?;
                        call("close", libc::SYS_close, &[w])?;
                        pipes.insert(*id, (r2, w2));
                        (r2, w2)
                    }
                };
                call(
                    "dup2",
                    libc::SYS_dup2,
                    &[if *write_end { w } else { r }, f.fd as u64],
                )?;
                if !buffered.is_empty() {
                    pipe_data.push((f.fd, buffered.clone()));
                }
                call(
                    "fcntl(F_SETFL)",
                    libc::SYS_fcntl,
                    &[f.fd as u64, libc::F_SETFL as u64, keep_flags],
                )?;
            }
            FdKind::UnixPair {
                id,
                end,
                sock_type,
                queued,
            } => {
                let ends = match socket_pairs.get(id) {
                    Some(&ends) => ends,
                    None => {
                        call(
                            "socketpair",
                            libc::SYS_socketpair,
                            &[libc::AF_UNIX as u64, *sock_type as u64, 0, scratch],
                        )?;
                        let mut b = [0u8; 8];
                        tracee.read_mem(scratch, &mut b)?;
                        let mut ends = [0u64; 2];
                        for (i, e) in ends.iter_mut().enumerate() {
                            let tmp = i32::from_le_bytes([
                                b[4 * i],
                                b[4 * i + 1],
                                b[4 * i + 2],
                                b[4 * i + 3],
                            ]) as u64;
                            // Above the target numbers until placed.
                            *e = call(
                                "fcntl(F_DUPFD)",
                                libc::SYS_fcntl,
                                &[tmp, libc::F_DUPFD as u64, high],
                            )?;
                            call("close", libc::SYS_close, &[tmp])?;
                        }
                        socket_pairs.insert(*id, ends);
                        ends
                    }
                };
                call(
                    "dup2",
                    libc::SYS_dup2,
                    &[ends[usize::from(*end & 1)], f.fd as u64],
                )?;
                placed_ends.entry((*id, *end)).or_insert(f.fd);
                if !queued.is_empty() {
                    socket_data.push((*id, *end, queued.clone()));
                }
                call(
                    "fcntl(F_SETFL)",
                    libc::SYS_fcntl,
                    &[f.fd as u64, libc::F_SETFL as u64, keep_flags],
                )?;
            }
            FdKind::TcpListener { v6, addr, port } => {
                let (family, sockaddr) = if *v6 {
                    let mut a = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
                    a.extend_from_slice(&port.to_be_bytes());
                    a.extend_from_slice(&[0; 4]);
                    a.extend_from_slice(addr);
                    a.extend_from_slice(&[0; 4]);
                    (libc::AF_INET6, a)
                } else {
                    let mut a = (libc::AF_INET as u16).to_ne_bytes().to_vec();
                    a.extend_from_slice(&port.to_be_bytes());
                    a.extend_from_slice(addr);
                    a.extend_from_slice(&[0; 8]);
                    (libc::AF_INET, a)
                };
                let shown = if *v6 {
                    format!(
                        "[{}]:{port}",
                        std::net::Ipv6Addr::from(
                            <[u8; 16]>::try_from(addr.as_slice()).unwrap_or([0; 16])
                        )
                    )
                } else {
                    format!(
                        "{}:{port}",
                        std::net::Ipv4Addr::from(
                            <[u8; 4]>::try_from(addr.as_slice()).unwrap_or([0; 4])
                        )
                    )
                };
                let tmp = call(
                    "socket",
                    libc::SYS_socket,
                    &[family as u64, libc::SOCK_STREAM as u64, 0],
                )?;
                tracee.write_mem(scratch, &1i32.to_ne_bytes())?;
                call(
                    "setsockopt(SO_REUSEADDR)",
                    libc::SYS_setsockopt,
                    &[
                        tmp,
                        libc::SOL_SOCKET as u64,
                        libc::SO_REUSEADDR as u64,
                        scratch,
                        4,
                    ],
                )?;
                listen_again(tmp, &sockaddr, &shown, f.fd, keep_flags)?;
            }
            FdKind::UnixListener { name, sock_type } => {
                let shown = String::from_utf8_lossy(name).replace('\0', "@");
                // A path the old listener left behind is in the way.
                if name.first() != Some(&0) {
                    use std::os::unix::ffi::OsStrExt;
                    use std::os::unix::fs::FileTypeExt;
                    let given = std::path::Path::new(std::ffi::OsStr::from_bytes(name));
                    // A relative name is the program's, from its cwd.
                    let path = std::path::Path::new(&format!("/proc/{tid}/cwd")).join(given);
                    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
                        let _ = std::fs::remove_file(&path);
                    }
                }
                let mut sockaddr = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
                sockaddr.extend_from_slice(name);
                if sockaddr.len() > 110 {
                    return Err(Error::Restore(format!(
                        "unix socket name too long: {shown}"
                    )));
                }
                let tmp = call(
                    "socket",
                    libc::SYS_socket,
                    &[libc::AF_UNIX as u64, *sock_type as u64, 0],
                )?;
                listen_again(
                    tmp,
                    &sockaddr,
                    &format!("unix socket {shown}"),
                    f.fd,
                    keep_flags,
                )?;
            }
            FdKind::EventFd { count, semaphore } => {
                let fl = (f.flags as u64 & libc::O_NONBLOCK as u64)
                    | if *semaphore {
                        libc::EFD_SEMAPHORE as u64
                    } else {
                        0
                    };
                let tmp = call("eventfd2", libc::SYS_eventfd2, &[*count, fl])?;
                place(tmp, f.fd)?;
            }
            FdKind::TimerFd {
                clockid,
                interval_ns,
                value_ns,
                ticks,
            } => {
                let fl = f.flags as u64 & libc::O_NONBLOCK as u64;
                let tmp = call(
                    "timerfd_create",
                    libc::SYS_timerfd_create,
                    &[*clockid as u64, fl],
                )?;
                place(tmp, f.fd)?;
                let spec: Vec<u8> = [
                    interval_ns / 1_000_000_000,
                    interval_ns % 1_000_000_000,
                    value_ns / 1_000_000_000,
                    value_ns % 1_000_000_000,
                ]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
                tracee.write_mem(scratch, &spec)?;
                call(
                    "timerfd_settime",
                    libc::SYS_timerfd_settime,
                    &[f.fd as u64, 0, scratch, 0],
                )?;
                if *ticks > 0 {
                    tracee.write_mem(scratch, &ticks.to_le_bytes())?;
                    // TFD_IOC_SET_TICKS = _IOW('T', 0, u64)
                    call(
                        "ioctl(TFD_IOC_SET_TICKS)",
                        libc::SYS_ioctl,
                        &[f.fd as u64, 0x4008_5400, scratch],
                    )?;
                }
            }
            FdKind::SignalFd { mask } => {
                tracee.write_mem(scratch, &mask.to_le_bytes())?;
                let fl = f.flags as u64 & libc::O_NONBLOCK as u64;
                let tmp = call(
                    "signalfd4",
                    libc::SYS_signalfd4,
                    &[u64::MAX, scratch, 8, fl],
                )?;
                place(tmp, f.fd)?;
            }
            FdKind::Unsupported { what } if what.starts_with("socket:") => {
                // A connection to something outside the checkpoint cannot
                // come back: it comes back closed, never silently
                // swallowing data. One end of a socket pair whose other
                // end is gone: reads see the end, writes fail with EPIPE.
                let nonblock = if f.flags & libc::O_NONBLOCK as u32 != 0 {
                    libc::SOCK_NONBLOCK as u64
                } else {
                    0
                };
                call(
                    "socketpair",
                    libc::SYS_socketpair,
                    &[
                        libc::AF_UNIX as u64,
                        libc::SOCK_STREAM as u64 | nonblock,
                        0,
                        scratch,
                    ],
                )?;
                let mut pair = [0u8; 8];
                tracee.read_mem(scratch, &mut pair)?;
                let ours = u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]) as u64;
                let peer = u32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]) as u64;
                call("close", libc::SYS_close, &[peer])?;
                place(ours, f.fd)?;
                warnings.push(format!(
                    "fd {} ({what}) led outside the checkpoint: it is a closed connection now \
                     (reads see its end, writes fail with EPIPE)",
                    f.fd
                ));
            }
            FdKind::Unsupported { what } => {
                let tmp = open_path("/dev/null", libc::O_RDWR as u64)?;
                place(tmp, f.fd)?;
                warnings.push(format!(
                    "fd {} ({what}) was not restored; it is /dev/null now",
                    f.fd
                ));
            }
            FdKind::Socket { id, socket } => {
                let ours = sockets.fd(*id).ok_or_else(|| {
                    Error::Restore(format!("fd {}: socket {id} was not rebuilt", f.fd))
                })?;
                adopt(ours, f.fd, keep_flags)?;
                let outside = match socket {
                    SocketState::Closed {
                        what,
                        outside: true,
                        ..
                    } => Some(what.clone()),
                    SocketState::Unix(u) | SocketState::UnixLinked { end: u, .. } => u
                        .peer
                        .as_ref()
                        .filter(|p| {
                            !p.held
                                && p.alive
                                && p.elsewhere.is_none()
                                && u.sock_type != libc::SOCK_DGRAM
                        })
                        .map(|p| {
                            format!(
                                "unix socket connected to {}",
                                crate::sockets::unix::show(&p.name)
                            )
                        }),
                    _ => None,
                };
                if let Some(what) = outside {
                    warnings.push(format!(
                        "fd {} ({what}) led outside the checkpoint: it is a closed connection now \
                         (reads see what had arrived, then its end; writes fail with EPIPE)",
                        f.fd
                    ));
                }
            }
            FdKind::Epoll { .. } | FdKind::Plugin { .. } => {}
        }
    }
    // Every epoll instance first: one may watch another (nested epolls).
    for f in fds {
        if let FdKind::Epoll { .. } = &f.kind {
            let tmp = call("epoll_create1", libc::SYS_epoll_create1, &[0])?;
            place(tmp, f.fd)?;
        }
    }
    for f in fds {
        if let FdKind::Epoll { watches } = &f.kind {
            for w in watches {
                let mut ev = w.events.to_le_bytes().to_vec();
                ev.extend_from_slice(&w.data.to_le_bytes());
                tracee.write_mem(scratch, &ev)?;
                let added = inj.syscall(
                    tid,
                    libc::SYS_epoll_ctl,
                    &[
                        f.fd as u64,
                        libc::EPOLL_CTL_ADD as u64,
                        w.fd as u64,
                        scratch,
                    ],
                )?;
                if added == -i64::from(libc::EEXIST) {
                    // Two watches of one file, added through two
                    // descriptors of which one is closed now.
                    warnings.push(format!(
                        "epoll fd {} watched the file of fd {} twice: it watches it once now",
                        f.fd, w.fd
                    ));
                } else if added < 0 {
                    return Err(Error::Restore(format!(
                        "epoll fd {}: cannot watch fd {} again: {}",
                        f.fd,
                        w.fd,
                        crate::tracee::errno_text(added)
                    )));
                }
            }
        }
    }
    // Plugins set close-on-exec on their own descriptors.
    for f in fds {
        if f.cloexec && !matches!(f.kind, FdKind::Plugin { .. }) {
            call(
                "fcntl(F_SETFD)",
                libc::SYS_fcntl,
                &[f.fd as u64, libc::F_SETFD as u64, libc::FD_CLOEXEC as u64],
            )?;
        }
    }
    // Pipe ends and parked stdio above the targets go away.
    call(
        "close_range",
        libc::SYS_close_range,
        &[hi, u32::MAX as u64, 0],
    )?;
    // What waited at one end of a socket pair is sent again by the other.
    for (id, end, queued) in socket_data {
        let Some(&peer_fd) = placed_ends.get(&(id, 1 - (end & 1))) else {
            continue;
        };
        let peer = crate::sys::process::pidfd_getfd(tid, peer_fd).map_err(|e| {
            Error::Restore(format!("socket pair at fd {peer_fd}: pidfd_getfd: {e}"))
        })?;
        for m in &queued {
            // A stream may take its bytes in pieces; a message goes whole.
            let mut sent = 0;
            loop {
                let n = nix::sys::socket::send(
                    peer.as_raw_fd(),
                    &m[sent..],
                    nix::sys::socket::MsgFlags::MSG_DONTWAIT,
                )
                .map_err(|e| Error::Restore(format!("socket pair at fd {peer_fd}: refill: {e}")))?;
                sent += n;
                if sent >= m.len() || n == 0 {
                    break;
                }
            }
        }
    }
    for (fd, data) in pipe_data {
        let proc_path = format!("/proc/{tid}/fd/{fd}");
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&proc_path)
            .and_then(|mut p| p.write_all(&data))
            .map_err(|e| Error::io(&proc_path, e))?;
    }
    Ok(())
}
