//! Restore an image into a fresh process (DESIGN §3): a husk is forked,
//! seized, emptied and refilled by injected syscalls; finally every thread
//! gets its saved registers. Nothing runs program code until the session
//! resumes the threads; on any error the husk is killed, so no half-restored
//! process is ever left.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::path::Path;

use libc::pid_t;

use crate::capture::{regs_from_slice, xcr0_of};
use crate::image::format::{ProcessState, Region, RegionKind};
use crate::image::ImageReader;
use crate::maps::{self, Mapping};
use crate::plugin::{Plugin, RestoreCtx};
use crate::shm::{Backing, SharedMemory};
use crate::sys::ptrace::{self, Stop, PTRACE_EVENT_STOP};
use crate::tracee::{errno_text, Injector, Thread, ThreadStop, Tracee, PAGE, TRAMPOLINE_SIZE};
use crate::vids::VirtualIds;
use crate::Error;

const PR_SET_MM: u64 = 35;
const PR_SET_MM_MAP: u64 = 14;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
const RSEQ_FLAG_UNREGISTER: u64 = 1;
const SS_DISABLE: i32 = 2;
use crate::capture::BLOCK_ALL;
const ERESTARTSYS: i64 = -512;
const ERESTARTNOINTR: i64 = -513;
const ERESTARTNOHAND: i64 = -514;
const ERESTART_RESTARTBLOCK: i64 = -516;

/// What `rewind restart` may change (DMTCP's modify-env), and how it reports.
#[derive(Default, Clone)]
pub struct RestartOptions<'a> {
    /// Environment variables to set in the restored program.
    pub env: Vec<(String, String)>,
    /// Called as memory is restored, with the bytes written so far.
    pub progress: Option<&'a dyn Fn(u64)>,
    /// Install this seccomp filter (built from the trampoline's syscall
    /// address, which the filter must let through) instead of the plugins'.
    pub seccomp: Option<&'a dyn Fn(u64) -> Vec<u8>>,
    /// Make rdtsc fault in every thread (PR_SET_TSC), for replay.
    pub notsc: bool,
    /// Pipes shared by several processes of a tree, made once by the
    /// restart (see `tree`).
    pub shared_pipes: Option<&'a crate::tree::SharedPipes>,
    /// Sockets of every image being restored, made once by the restart
    /// (see `sockets`); without them each process gets its own.
    pub sockets: Option<&'a crate::sockets::Rebuilt>,
    /// The ptys of every image being restored, made once by the restart
    /// (see `pty`); [`restart`] makes them itself when None.
    pub terminals: Option<&'a crate::pty::Rebuilt>,
    /// Shared memory objects made once for every image of the restart (see
    /// `shm`); [`restart`] makes them itself when None.
    pub shared_memory: Option<&'a SharedMemory>,
    /// Bring back the image's IPC objects in the machine: System V
    /// segments, semaphore sets and message queues with their ids, POSIX
    /// shm files in /dev/shm with the checkpoint's contents (`rewind
    /// restart`). When false (replay, inspection), nothing outside rewind
    /// is touched: such memory comes back as private shared memory. Also
    /// gives the program back its user and group ids (see `creds`).
    pub recreate_ipc: bool,
}

/// A restored process, every thread stopped and ready to run.
pub struct Restored {
    pub tracee: Tracee,
    pub state: ProcessState,
    pub vids: VirtualIds,
    pub warnings: Vec<String>,
    pub millis: f64,
}

/// Restore the image at `path`.
pub fn restart(
    path: &Path,
    plugins: &mut Vec<Box<dyn Plugin>>,
    opts: &RestartOptions,
) -> Result<Restored, Error> {
    let reader = ImageReader::open(path)?;
    preflight(&reader.state, path)?;
    // The ptys it made, made again first: a session leader takes its
    // controlling terminal back in its husk.
    let mut local_ptys = None;
    let mut pty_warnings = Vec::new();
    let terminals = match opts.terminals {
        Some(t) => t,
        None => {
            let mut t = crate::pty::Rebuilt::make(&[&reader.state])
                .map_err(|e| Error::Restore(format!("{}: {e}", path.display())))?;
            pty_warnings = t.take_warnings();
            &*local_ptys.insert(t)
        }
    };
    // A replay or an inspection emulates the program's socket calls and
    // touches nothing outside: its sockets come back as stand-ins, bound
    // nowhere (a listener's path or port may be gone or taken by now).
    let stand_ins = (!opts.recreate_ipc && opts.sockets.is_none())
        .then(|| crate::sockets::Rebuilt::stand_ins(&[&reader.state]));
    let opts = RestartOptions {
        terminals: Some(terminals),
        sockets: opts.sockets.or(stand_ins.as_ref()),
        ..opts.clone()
    };
    let opts = &opts;
    let husk_for = |vpid: pid_t| -> Result<pid_t, Error> {
        let husk = new_husk(vpid, ptrace::default_options())?;
        if let Err(e) = terminals.attach_leader(husk, &reader.state) {
            kill_husk(husk);
            return Err(e);
        }
        Ok(husk)
    };
    if opts.shared_memory.is_some() {
        let husk = husk_for(reader.state.vpid)?;
        let mut restored = restart_into(reader, path, husk, plugins, opts)?;
        restored.warnings.splice(0..0, pty_warnings);
        return Ok(restored);
    }
    let shm = SharedMemory::prepare(&[&reader.state], opts.recreate_ipc)
        .map_err(|e| Error::Restore(format!("{}: {e}", path.display())))?;
    let opts = RestartOptions {
        shared_memory: Some(&shm),
        ..opts.clone()
    };
    // The original pid when it is free: then the kernel and the program
    // agree on ids everywhere, /proc contents included.
    let husk = husk_for(reader.state.vpid)?;
    let mut restored = restart_into(reader, path, husk, plugins, &opts)?;
    restored.warnings.splice(0..0, pty_warnings);
    restored.warnings.extend(shm.finish());
    Ok(restored)
}

/// Fork a husk (with pid `vpid` when free), seize it with `options` and
/// stop it.
pub fn new_husk(vpid: pid_t, options: libc::c_int) -> Result<pid_t, Error> {
    let husk = crate::sys::process::spawn_husk(Some(vpid))
        .map_err(|e| Error::Restore(format!("fork: {e}")))?;
    let seized = (|| {
        ptrace::seize(husk, options).map_err(|e| Error::ptrace("PTRACE_SEIZE", husk, e))?;
        ptrace::interrupt(husk).map_err(|e| Error::ptrace("PTRACE_INTERRUPT", husk, e))?;
        loop {
            match ptrace::wait(husk, false).map_err(|e| Error::ptrace("waitpid", husk, e))? {
                Some((_, Stop::Event(PTRACE_EVENT_STOP, _))) => return Ok(()),
                Some((_, Stop::Exited(_) | Stop::Killed(_))) => {
                    return Err(Error::Restore("the new process died before restore".into()))
                }
                Some(_) => {
                    ptrace::cont(husk, 0).map_err(|e| Error::ptrace("PTRACE_CONT", husk, e))?
                }
                None => {}
            }
        }
    })();
    match seized {
        Ok(()) => Ok(husk),
        Err(e) => {
            kill_husk(husk);
            Err(e)
        }
    }
}

/// Kill a husk (restored or not) and reap it and its threads.
pub fn kill_husk(husk: pid_t) {
    // Threads made so far are traced too: reap them before the leader,
    // whose wait would block on them.
    let tasks: Vec<pid_t> = std::fs::read_dir(format!("/proc/{husk}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let _ = crate::sys::process::kill(husk, libc::SIGKILL);
    for tid in tasks.into_iter().filter(|&t| t != husk) {
        crate::tracee::wait_thread_gone(husk, tid);
    }
    let _ = ptrace::wait(husk, false);
}

/// Restore the image read by `reader` into `husk`, a seized process
/// stopped in its attach or interrupt stop. On failure the husk is killed.
pub fn restart_into(
    mut reader: ImageReader,
    path: &Path,
    husk: pid_t,
    plugins: &mut Vec<Box<dyn Plugin>>,
    opts: &RestartOptions,
) -> Result<Restored, Error> {
    let t0 = std::time::Instant::now();
    let state = reader.state.clone();
    let result = (|| {
        preflight(&state, path)?;
        crate::plugin::add_needed(plugins, &state)?;
        let own = maps::read(std::process::id() as pid_t)?;
        let mut taken: Vec<(u64, u64)> = state.regions.iter().map(|r| (r.start, r.end)).collect();
        taken.extend(own.iter().map(|m| (m.start, m.end)));
        let tramp =
            maps::find_hole(&taken, TRAMPOLINE_SIZE, 0x7fff_0000_0000).ok_or_else(|| {
                Error::Restore("no room for the trampoline in the image's address space".into())
            })?;
        let mut tracee = Tracee::new(husk)?;
        if let Some(t) = tracee.threads.get_mut(&husk) {
            t.stop = ThreadStop::Interrupted;
        }
        let mut r = Refill {
            tracee,
            inj: Injector { addr: 0 },
            state: &state,
            warnings: Vec::new(),
            tids: Vec::new(),
        };
        r.run(&mut reader, tramp, plugins, opts)
    })();
    match result {
        Ok((tracee, vids, warnings)) => Ok(Restored {
            tracee,
            state,
            vids,
            warnings,
            millis: t0.elapsed().as_secs_f64() * 1e3,
        }),
        Err(e) => {
            kill_husk(husk);
            Err(e)
        }
    }
}

/// Checks that need no process: files the image depends on, CPU features.
fn preflight(state: &ProcessState, path: &Path) -> Result<(), Error> {
    if state.threads.is_empty() {
        return Err(Error::Restore(format!(
            "{}: image has no threads",
            path.display()
        )));
    }
    for r in &state.regions {
        if let RegionKind::File {
            path: file,
            identity,
            ..
        } = &r.kind
        {
            use std::os::unix::fs::MetadataExt;
            let md = std::fs::metadata(file).map_err(|e| {
                Error::Restore(format!(
                    "file {file}, mapped at {:#x}-{:#x}, is gone: {e}",
                    r.start, r.end
                ))
            })?;
            let mtime_ns = md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128;
            // A shared mapping shows the file as it is now (its writes
            // went to the file, which others may have changed since).
            if !r.shared && (md.size() != identity.size || mtime_ns != identity.mtime_ns) {
                return Err(Error::Restore(format!(
                    "file {file}, mapped at {:#x}-{:#x}, changed since the checkpoint (size or mtime differ)",
                    r.start, r.end
                )));
            }
        }
    }
    crate::fds::check_paths(&state.fds)?;
    Ok(())
}

struct Refill<'a> {
    tracee: Tracee,
    inj: Injector,
    state: &'a ProcessState,
    warnings: Vec<String>,
    /// Real tids, in the order of the image's threads.
    tids: Vec<pid_t>,
}

impl Refill<'_> {
    fn pid(&self) -> pid_t {
        self.tracee.pid
    }

    fn call(&self, what: &str, nr: i64, args: &[u64]) -> Result<u64, Error> {
        self.inj.call(self.pid(), what, nr, args)
    }

    fn run(
        &mut self,
        reader: &mut ImageReader,
        tramp: u64,
        plugins: &mut [Box<dyn Plugin>],
        opts: &RestartOptions,
    ) -> Result<(Tracee, VirtualIds, Vec<String>), Error> {
        let pid = self.pid();
        let state = self.state;
        self.check_cpu()?;
        ptrace::setsigmask(pid, BLOCK_ALL)
            .map_err(|e| Error::ptrace("PTRACE_SETSIGMASK", pid, e))?;
        self.inj = Injector::install(&self.tracee, pid, tramp)?;
        // The husk inherited rewind's own rseq registration, whose area is
        // about to be unmapped.
        if let Some((addr, len, sig)) = ptrace::rseq_configuration(pid).ok().flatten() {
            self.call(
                "rseq unregister",
                libc::SYS_rseq,
                &[addr, len as u64, RSEQ_FLAG_UNREGISTER, sig as u64],
            )?;
        }
        self.empty()?;
        self.move_vdso()?;
        self.map_regions(opts.shared_memory)?;
        self.fill_memory(reader, opts.progress)?;
        self.protect_regions()?;
        self.restore_mm()?;
        self.restore_process_attrs()?;
        let mut vids = VirtualIds::default();
        vids.insert(state.vpid, pid);
        self.create_threads(&mut vids)?;
        for p in plugins.iter_mut() {
            let mut ctx = RestoreCtx {
                tracee: &self.tracee,
                injector: &self.inj,
                state,
                vids: &mut vids,
                warnings: &mut self.warnings,
                shared_pipes: opts.shared_pipes,
                sockets: opts.sockets,
                shared_memory: opts.shared_memory,
                terminals: opts.terminals,
            };
            p.restart(&mut ctx)?;
        }
        if let Some(build) = opts.seccomp {
            self.install_program(&build(self.inj.addr + 2))?;
        } else {
            // Plugins that trap syscalls keep trapping them; when some id
            // could not be kept, the program's pid syscalls need translating
            // from now on.
            self.install_filter(plugins, !vids.is_identity())?;
        }
        if opts.notsc {
            for &tid in &self.tids {
                self.inj.call(
                    tid,
                    "prctl(PR_SET_TSC)",
                    libc::SYS_prctl,
                    &[libc::PR_SET_TSC as u64, libc::PR_TSC_SIGSEGV as u64],
                )?;
            }
        }
        if !opts.env.is_empty() {
            crate::environ::set_vars(&self.tracee, &self.inj, state, &opts.env)?;
        }
        // The program's user and group ids, last of what needs privileges
        // (a restart into the machine only; see `creds`).
        if opts.recreate_ipc {
            if let Some(creds) = crate::creds::Credentials::in_image(state) {
                creds?.apply(&self.tracee, &self.inj)?;
            }
        }
        self.queue_pending()?;
        // The trampoline is unmapped from the leader's own code, at the
        // instruction pointer it is about to get back (mapped by now).
        if let Some(rip) = self
            .state
            .threads
            .first()
            .and_then(|t| regs_from_slice(&t.regs))
            .map(|r| r.rip)
        {
            let mut regs =
                ptrace::getregs(pid).map_err(|e| Error::ptrace("PTRACE_GETREGS", pid, e))?;
            regs.rip = rip;
            ptrace::setregs(pid, &regs).map_err(|e| Error::ptrace("PTRACE_SETREGS", pid, e))?;
        }
        let inj = self.inj;
        inj.remove(&self.tracee, pid)?;
        self.final_registers()?;
        let tracee = std::mem::replace(&mut self.tracee, Tracee::new(pid)?);
        Ok((tracee, vids, std::mem::take(&mut self.warnings)))
    }

    /// Refuse to restore state a CPU lacks (DESIGN §10 xsave).
    fn check_cpu(&self) -> Result<(), Error> {
        let pid = self.pid();
        let ours =
            ptrace::get_xstate(pid).map_err(|e| Error::ptrace("PTRACE_GETREGSET", pid, e))?;
        let have = xcr0_of(&ours);
        for t in &self.state.threads {
            let need = xcr0_of(&t.xstate);
            if need & !have != 0 {
                return Err(Error::Restore(format!(
                    "this CPU lacks register state the image uses (XCR0 {need:#x}, this CPU {have:#x}): restart on a CPU with the same features"
                )));
            }
            if t.xstate.len() > ours.len() {
                return Err(Error::Restore(format!(
                    "the image's xsave area ({} bytes) is larger than this CPU's ({} bytes)",
                    t.xstate.len(),
                    ours.len()
                )));
            }
        }
        Ok(())
    }

    fn install_filter(&self, plugins: &[Box<dyn Plugin>], translate: bool) -> Result<(), Error> {
        let (traced, ioctls) = crate::plugin::traps(plugins, translate);
        if traced.is_empty() && ioctls.is_empty() {
            return Ok(());
        }
        self.install_program(&crate::seccomp::filter(&traced, &ioctls, self.inj.addr + 2))
    }

    /// Install a raw seccomp-bpf program in every thread.
    fn install_program(&self, prog: &[u8]) -> Result<(), Error> {
        let scratch = self.inj.scratch();
        let filter_at = scratch + 64;
        if prog.len() as u64 + 64 > PAGE {
            return Err(Error::Restore("seccomp filter too large".into()));
        }
        self.tracee.write_mem(filter_at, prog)?;
        let mut fprog = ((prog.len() / 8) as u64).to_le_bytes().to_vec();
        fprog.extend_from_slice(&filter_at.to_le_bytes());
        self.tracee.write_mem(scratch, &fprog)?;
        if !nix::unistd::geteuid().is_root() {
            self.call(
                "prctl(PR_SET_NO_NEW_PRIVS)",
                libc::SYS_prctl,
                &[libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0],
            )?;
        }
        // SECCOMP_SET_MODE_FILTER = 1, SECCOMP_FILTER_FLAG_TSYNC = 1: every
        // thread gets the filter.
        self.call(
            "seccomp(SET_MODE_FILTER)",
            libc::SYS_seccomp,
            &[1, 1, scratch],
        )?;
        Ok(())
    }

    fn husk_maps(&self) -> Result<Vec<Mapping>, Error> {
        maps::read(self.pid())
    }

    fn is_special(m: &Mapping) -> bool {
        matches!(
            m.name.as_str(),
            "[vdso]" | "[vvar]" | "[vvar_vclock]" | "[vsyscall]"
        )
    }

    /// Unmap everything of the husk but the trampoline and the kernel's
    /// special mappings.
    fn empty(&self) -> Result<(), Error> {
        for m in self.husk_maps()? {
            if Self::is_special(&m) || m.contains(self.inj.addr) {
                continue;
            }
            self.call(
                &format!("munmap {:#x}-{:#x}", m.start, m.end),
                libc::SYS_munmap,
                &[m.start, m.len()],
            )?;
        }
        Ok(())
    }

    /// Move [vvar], [vvar_vclock] and [vdso] to where the image had them.
    fn move_vdso(&self) -> Result<(), Error> {
        let husk = self.husk_maps()?;
        let kinds = [
            (RegionKind::Vvar, "[vvar]"),
            (RegionKind::VvarVclock, "[vvar_vclock]"),
            (RegionKind::Vdso, "[vdso]"),
        ];
        let mut moves = Vec::new();
        for (kind, name) in kinds {
            let want = self.state.regions.iter().find(|r| r.kind == kind);
            let have = husk.iter().find(|m| m.name == name);
            match (want, have) {
                (Some(w), Some(h)) if w.end - w.start != h.len() => {
                    return Err(Error::Restore(format!(
                        "this kernel's {name} is {} bytes, the image's {}: restart on the kernel that wrote the image",
                        h.len(),
                        w.end - w.start
                    )))
                }
                (Some(w), Some(h)) => moves.push((h.start, w.start, h.len())),
                (Some(_), None) => {
                    return Err(Error::Restore(format!("this kernel has no {name}, the image needs one")))
                }
                (None, Some(h)) => {
                    self.call("munmap", libc::SYS_munmap, &[h.start, h.len()])?;
                }
                (None, None) => {}
            }
        }
        if moves.iter().all(|(from, to, _)| from == to) {
            return Ok(());
        }
        // Through a hole first, so no move overlaps another's source.
        let mut taken: Vec<(u64, u64)> = self
            .state
            .regions
            .iter()
            .map(|r| (r.start, r.end))
            .collect();
        taken.extend(husk.iter().map(|m| (m.start, m.end)));
        let total: u64 = moves.iter().map(|m| m.2).sum();
        let mut tmp = maps::find_hole(&taken, total, 0x7fff_0000_0000)
            .ok_or_else(|| Error::Restore("no room to move the vdso".into()))?;
        let mremap = |from: u64, to: u64, len: u64| {
            self.call(
                "mremap vdso",
                libc::SYS_mremap,
                &[
                    from,
                    len,
                    len,
                    (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                    to,
                ],
            )
        };
        let mut staged = Vec::new();
        for &(from, to, len) in &moves {
            mremap(from, tmp, len)?;
            staged.push((tmp, to, len));
            tmp += len;
        }
        for (from, to, len) in staged {
            mremap(from, to, len)?;
        }
        Ok(())
    }

    fn map_regions(&mut self, shm: Option<&SharedMemory>) -> Result<(), Error> {
        let mut files: HashMap<(String, bool), u64> = HashMap::new();
        // Descriptors of shared memory objects opened in the husk, and the
        // System V attaches made: (base, end, id).
        let mut objects: HashMap<(u64, u64), u64> = HashMap::new();
        let mut attached: Vec<(u64, u64, i32)> = Vec::new();
        let scratch = self.inj.scratch();
        let result = (|| {
            for r in &self.state.regions {
                let len = r.end - r.start;
                let shared = if r.shared {
                    libc::MAP_SHARED
                } else {
                    libc::MAP_PRIVATE
                } as u64;
                let growsdown = if r.name == "[stack]" {
                    libc::MAP_GROWSDOWN as u64
                } else {
                    0
                };
                let (prot, flags, fd, offset) = match &r.kind {
                    RegionKind::Vdso | RegionKind::Vvar | RegionKind::VvarVclock => continue,
                    RegionKind::Shared { object, offset, .. } => {
                        let (backing, _) =
                            shm.and_then(|s| s.backing(object)).ok_or_else(|| {
                                Error::Restore(format!(
                                    "shared memory {} at {:#x}-{:#x} was not made for this restart",
                                    region_name(r),
                                    r.start,
                                    r.end
                                ))
                            })?;
                        match backing {
                            Backing::SysV(id) => {
                                self.attach_segment(r, id, *offset, &mut attached)?;
                                self.empty_if_reset(r, shm)?;
                                continue;
                            }
                            Backing::Fd(fd) => {
                                let key = (object.dev, object.ino);
                                let hfd = match objects.get(&key) {
                                    Some(&h) => h,
                                    None => {
                                        let h = self.open_rewind_fd(fd)?;
                                        objects.insert(key, h);
                                        h
                                    }
                                };
                                (
                                    r.prot as u64 | libc::PROT_WRITE as u64,
                                    libc::MAP_SHARED as u64,
                                    hfd,
                                    *offset,
                                )
                            }
                        }
                    }
                    RegionKind::Anon | RegionKind::Contents => (
                        r.prot as u64 | libc::PROT_WRITE as u64,
                        shared | libc::MAP_ANONYMOUS as u64 | growsdown,
                        u64::MAX,
                        0,
                    ),
                    RegionKind::File { path, offset, .. } => {
                        let writable_shared = r.shared && r.prot & libc::PROT_WRITE as u32 != 0;
                        let key = (path.clone(), writable_shared);
                        let fd = match files.get(&key) {
                            Some(&fd) => fd,
                            None => {
                                let mut bytes = path.as_bytes().to_vec();
                                bytes.push(0);
                                self.tracee.write_mem(scratch, &bytes)?;
                                let mode = if writable_shared {
                                    libc::O_RDWR
                                } else {
                                    libc::O_RDONLY
                                };
                                let fd = self.call(
                                    &format!("open {path}"),
                                    libc::SYS_openat,
                                    &[
                                        libc::AT_FDCWD as u64,
                                        scratch,
                                        (mode | libc::O_CLOEXEC) as u64,
                                        0,
                                    ],
                                )?;
                                files.insert(key, fd);
                                fd
                            }
                        };
                        // Private mappings get written; shared ones keep their
                        // protection (the file holds their contents).
                        let prot = if r.shared {
                            r.prot as u64
                        } else {
                            r.prot as u64 | libc::PROT_WRITE as u64
                        };
                        (prot, shared, fd, *offset)
                    }
                };
                let ret = self.inj.syscall(
                    self.pid(),
                    libc::SYS_mmap,
                    &[r.start, len, prot, flags | MAP_FIXED_NOREPLACE, fd, offset],
                )?;
                if ret as u64 != r.start {
                    let what = if ret == -(libc::EEXIST as i64) {
                        let husk = self.husk_maps().unwrap_or_default();
                        let other = husk
                            .iter()
                            .find(|m| m.start < r.end && r.start < m.end)
                            .map(|m| {
                                format!(
                                    "{} at {:#x}-{:#x}",
                                    if m.name.is_empty() {
                                        "anonymous memory"
                                    } else {
                                        &m.name
                                    },
                                    m.start,
                                    m.end
                                )
                            })
                            .unwrap_or_else(|| "another mapping".into());
                        format!(
                            "address conflict: region {} at {:#x}-{:#x} overlaps {other}",
                            region_name(r),
                            r.start,
                            r.end
                        )
                    } else {
                        format!(
                            "cannot map region {} at {:#x}-{:#x}: {}",
                            region_name(r),
                            r.start,
                            r.end,
                            errno_text(ret)
                        )
                    };
                    return Err(Error::Restore(what));
                }
                self.empty_if_reset(r, shm)?;
            }
            Ok(())
        })();
        for fd in files.values().chain(objects.values()) {
            let _ = self.call("close", libc::SYS_close, &[*fd]);
        }
        result
    }

    /// Open rewind's descriptor `fd` in the husk (through /proc), read-write.
    fn open_rewind_fd(&self, fd: RawFd) -> Result<u64, Error> {
        let path = format!("/proc/{}/fd/{fd}", std::process::id());
        let mut bytes = path.clone().into_bytes();
        bytes.push(0);
        let scratch = self.inj.scratch();
        self.tracee.write_mem(scratch, &bytes)?;
        self.call(
            &format!("open {path}"),
            libc::SYS_openat,
            &[
                libc::AT_FDCWD as u64,
                scratch,
                (libc::O_RDWR | libc::O_CLOEXEC) as u64,
                0,
            ],
        )
    }

    /// Attach System V segment `id` so that region `r` (at `offset` in the
    /// segment) is where it was. One attach serves every region of it (an
    /// attach split by mprotect); the parts of an attach the image does
    /// not have (detached by munmap) are unmapped again.
    fn attach_segment(
        &self,
        r: &Region,
        id: i32,
        offset: u64,
        attached: &mut Vec<(u64, u64, i32)>,
    ) -> Result<(), Error> {
        let base = r.start.checked_sub(offset).ok_or_else(|| {
            Error::Restore(format!(
                "region {} at {:#x}: offset {offset:#x} in its segment lies below address 0",
                region_name(r),
                r.start
            ))
        })?;
        if attached
            .iter()
            .any(|&(b, e, i)| i == id && b == base && r.end <= e)
        {
            return Ok(());
        }
        // Every region of this attach, and whether any is executable.
        let pieces: Vec<&Region> = self
            .state
            .regions
            .iter()
            .filter(|o| match &o.kind {
                RegionKind::Shared { object, offset, .. } => {
                    matches!(&object.kind, crate::image::format::SharedKind::SysV(s) if s.id == sysv_old_id(r))
                        && o.start.checked_sub(*offset) == Some(base)
                }
                _ => false,
            })
            .collect();
        let exec = pieces.iter().any(|p| p.prot & libc::PROT_EXEC as u32 != 0);
        const SHM_EXEC: u64 = 0o100000;
        let ret = self.inj.syscall(
            self.pid(),
            libc::SYS_shmat,
            &[id as u64, base, if exec { SHM_EXEC } else { 0 }],
        )?;
        if ret as u64 != base {
            return Err(Error::Restore(format!(
                "cannot attach System V shared memory segment {id} at {base:#x} (region {} at {:#x}-{:#x}): {}",
                region_name(r),
                r.start,
                r.end,
                errno_text(ret)
            )));
        }
        let size = sysv_size(r).div_ceil(PAGE) * PAGE;
        let end = base + size;
        // Unmap what the image does not have of this attach.
        let mut at = base;
        let mut kept: Vec<(u64, u64)> = pieces.iter().map(|p| (p.start, p.end)).collect();
        kept.sort_unstable();
        for (s, e) in kept.into_iter().chain(std::iter::once((end, end))) {
            if s > at {
                self.call("munmap", libc::SYS_munmap, &[at, s.min(end) - at])?;
            }
            at = at.max(e);
        }
        attached.push((base, end, id));
        Ok(())
    }

    /// A stored region of an object that held data already (a tmpfs file,
    /// a segment that outlived the program) is emptied before the image's
    /// pages are written into it: it gets the checkpoint's contents.
    fn empty_if_reset(&self, r: &Region, shared: Option<&SharedMemory>) -> Result<(), Error> {
        let RegionKind::Shared {
            object,
            stored: true,
            ..
        } = &r.kind
        else {
            return Ok(());
        };
        if shared.and_then(|s| s.backing(object)).map(|b| b.1) != Some(true) {
            return Ok(());
        }
        const MADV_REMOVE: u64 = 9;
        self.call(
            &format!("madvise(MADV_REMOVE) {:#x}-{:#x}", r.start, r.end),
            libc::SYS_madvise,
            &[r.start, r.end - r.start, MADV_REMOVE],
        )?;
        Ok(())
    }

    /// Write the image's pages into the husk. A second thread reads and
    /// decompresses chunks ahead while this one writes.
    fn fill_memory(
        &self,
        reader: &mut ImageReader,
        progress: Option<&dyn Fn(u64)>,
    ) -> Result<(), Error> {
        let pid = self.pid();
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel(4);
            scope.spawn(move || loop {
                let next = reader.next_chunk();
                let stop = !matches!(next, Ok(Some(_)));
                if tx.send(next).is_err() || stop {
                    return;
                }
            });
            let mut done = 0u64;
            for next in rx {
                let Some(chunk) = next? else { break };
                done += chunk.data.len() as u64;
                if let Some(report) = progress {
                    report(done);
                }
                let mut off = 0usize;
                for run in &chunk.runs {
                    let len = run.len as usize;
                    let data = chunk.data.get(off..off + len).ok_or_else(|| {
                        Error::Restore("memory chunk shorter than its runs".into())
                    })?;
                    if !covered(&self.state.regions, run.addr, run.len) {
                        return Err(Error::Restore(format!(
                            "image memory at {:#x} (+{:#x}) lies in no region of the image",
                            run.addr, run.len
                        )));
                    }
                    match ptrace::vm_write(pid, run.addr, data) {
                        Ok(n) if n == len => {}
                        _ => self.tracee.write_mem(run.addr, data)?,
                    }
                    off += len;
                }
            }
            Ok(())
        })
    }

    fn protect_regions(&self) -> Result<(), Error> {
        for r in &self.state.regions {
            let added_write = match r.kind {
                RegionKind::Vdso | RegionKind::Vvar | RegionKind::VvarVclock => false,
                RegionKind::File { .. } if r.shared => false,
                // Mapped or attached writable (and a segment's attach
                // covers all its regions, whatever their protection).
                RegionKind::Shared { .. } => true,
                _ => r.prot & libc::PROT_WRITE as u32 == 0,
            };
            if added_write {
                self.call(
                    "mprotect",
                    libc::SYS_mprotect,
                    &[r.start, r.end - r.start, r.prot as u64],
                )?;
            }
        }
        Ok(())
    }

    /// brk, stack, arg and env bounds, auxv and exe link (PR_SET_MM_MAP).
    fn restore_mm(&mut self) -> Result<(), Error> {
        let st = self.state;
        let scratch = self.inj.scratch();
        let exe_fd = {
            let mut bytes = st.exe.as_bytes().to_vec();
            bytes.push(0);
            self.tracee.write_mem(scratch, &bytes)?;
            match self.inj.syscall(
                self.pid(),
                libc::SYS_openat,
                &[
                    libc::AT_FDCWD as u64,
                    scratch,
                    (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
                    0,
                ],
            )? {
                fd if fd >= 0 => Some(fd as u64),
                _ => {
                    self.warnings.push(format!(
                        "executable {} is gone; /proc/self/exe keeps its old target",
                        st.exe
                    ));
                    None
                }
            }
        };
        let mm = &st.mm;
        let auxv_at = scratch + 1024;
        if st.auxv.len() > 2048 {
            return Err(Error::Restore("auxv in the image is too large".into()));
        }
        self.tracee.write_mem(auxv_at, &st.auxv)?;
        let mut map: Vec<u8> = [
            mm.start_code,
            mm.end_code,
            mm.start_data,
            mm.end_data,
            mm.start_brk,
            mm.brk,
            mm.start_stack,
            mm.arg_start,
            mm.arg_end,
            mm.env_start,
            mm.env_end,
            auxv_at,
        ]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
        map.extend_from_slice(&(st.auxv.len() as u32).to_le_bytes());
        map.extend_from_slice(&(exe_fd.map(|f| f as u32).unwrap_or(u32::MAX)).to_le_bytes());
        self.tracee.write_mem(scratch, &map)?;
        tracing::debug!(
            "PR_SET_MM_MAP {mm:x?} auxv {} bytes exe_fd {exe_fd:?}",
            st.auxv.len()
        );
        let ret = self.inj.syscall(
            self.pid(),
            libc::SYS_prctl,
            &[PR_SET_MM, PR_SET_MM_MAP, scratch, map.len() as u64, 0],
        )?;
        if let Some(fd) = exe_fd {
            self.call("close", libc::SYS_close, &[fd])?;
        }
        if ret == -(libc::EPERM as i64) {
            return Err(Error::Restore(
                "prctl(PR_SET_MM_MAP) was refused: restoring the heap and mm layout needs CAP_SYS_RESOURCE or CAP_CHECKPOINT_RESTORE".into(),
            ));
        }
        if ret < 0 {
            return Err(Error::Restore(format!(
                "prctl(PR_SET_MM_MAP) failed: {}",
                errno_text(ret)
            )));
        }
        Ok(())
    }

    fn restore_process_attrs(&self) -> Result<(), Error> {
        let st = self.state;
        let pid = self.pid();
        let scratch = self.inj.scratch();
        let mut cwd = st.cwd.as_bytes().to_vec();
        cwd.push(0);
        self.tracee.write_mem(scratch, &cwd)?;
        if self.inj.syscall(pid, libc::SYS_chdir, &[scratch])? < 0 {
            return Err(Error::Restore(format!(
                "the working directory {} is gone",
                st.cwd
            )));
        }
        self.call("umask", libc::SYS_umask, &[st.umask as u64])?;
        self.call(
            "personality",
            libc::SYS_personality,
            &[st.personality as u64],
        )?;
        for l in &st.rlimits {
            crate::sys::process::prlimit_set(pid, l.resource, l.cur, l.max).map_err(|e| {
                Error::Restore(format!("cannot restore resource limit {}: {e}", l.resource))
            })?;
        }
        for (sig, a) in st.sigactions.iter().enumerate() {
            let sig = sig as u64 + 1;
            if sig == libc::SIGKILL as u64 || sig == libc::SIGSTOP as u64 {
                continue;
            }
            let bytes: Vec<u8> = [a.handler, a.flags, a.restorer, a.mask]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            self.tracee.write_mem(scratch, &bytes)?;
            self.call(
                "rt_sigaction",
                libc::SYS_rt_sigaction,
                &[sig, scratch, 0, 8],
            )?;
        }
        for (which, (interval, value)) in st.itimers.iter().enumerate() {
            if *value == 0 {
                continue;
            }
            let v: Vec<u8> = [
                interval / 1_000_000,
                interval % 1_000_000,
                value / 1_000_000,
                value % 1_000_000,
            ]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
            self.tracee.write_mem(scratch, &v)?;
            self.call(
                "setitimer",
                libc::SYS_setitimer,
                &[which as u64, scratch, 0],
            )?;
        }
        Ok(())
    }

    fn create_threads(&mut self, vids: &mut VirtualIds) -> Result<(), Error> {
        let pid = self.pid();
        let flags = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM) as u64;
        let mut tids = vec![pid];
        let scratch = self.inj.scratch();
        for t in self.state.threads.iter().skip(1) {
            // clone3 with set_tid gives the thread its old id when free.
            let mut args = [0u64; 11];
            args[0] = flags;
            args[8] = scratch + 256;
            args[9] = 1;
            let bytes: Vec<u8> = args.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.tracee.write_mem(scratch, &bytes)?;
            self.tracee
                .write_mem(scratch + 256, &t.vtid.to_le_bytes())?;
            let ret = self
                .inj
                .syscall(pid, libc::SYS_clone3, &[scratch, bytes.len() as u64])?;
            let tid = if ret > 0 {
                ret as pid_t
            } else {
                self.call("clone", libc::SYS_clone, &[flags, 0, 0, 0, 0])? as pid_t
            };
            // The new thread starts in a PTRACE_EVENT_STOP (auto-attached).
            loop {
                match ptrace::wait(tid, false).map_err(|e| Error::ptrace("waitpid", tid, e))? {
                    Some((_, Stop::Event(PTRACE_EVENT_STOP, _))) => break,
                    Some((_, Stop::Exited(_) | Stop::Killed(_))) => {
                        return Err(Error::Restore(
                            "a restored thread died before it ran".into(),
                        ))
                    }
                    _ => {}
                }
            }
            let mut th = Thread::new(tid);
            th.stop = ThreadStop::Interrupted;
            self.tracee.threads.insert(tid, th);
            ptrace::setsigmask(tid, BLOCK_ALL)
                .map_err(|e| Error::ptrace("PTRACE_SETSIGMASK", tid, e))?;
            vids.insert(t.vtid, tid);
            tids.push(tid);
        }
        self.tids = tids.clone();
        for (t, &tid) in self.state.threads.iter().zip(&tids) {
            let inj = self.inj;
            let mut comm = t
                .comm
                .as_bytes()
                .iter()
                .copied()
                .take(15)
                .collect::<Vec<u8>>();
            comm.push(0);
            self.tracee.write_mem(scratch, &comm)?;
            inj.call(
                tid,
                "prctl(PR_SET_NAME)",
                libc::SYS_prctl,
                &[libc::PR_SET_NAME as u64, scratch],
            )?;
            inj.call(
                tid,
                "set_tid_address",
                libc::SYS_set_tid_address,
                &[t.clear_child_tid],
            )?;
            if t.robust_list.0 != 0 {
                inj.call(
                    tid,
                    "set_robust_list",
                    libc::SYS_set_robust_list,
                    &[t.robust_list.0, t.robust_list.1],
                )?;
            }
            let (sp, fl, size) = t.altstack;
            let mut ss = sp.to_le_bytes().to_vec();
            ss.extend_from_slice(
                &(if fl & SS_DISABLE != 0 {
                    SS_DISABLE
                } else {
                    fl & !1
                })
                .to_le_bytes(),
            );
            ss.extend_from_slice(&[0u8; 4]);
            ss.extend_from_slice(&size.to_le_bytes());
            self.tracee.write_mem(scratch, &ss)?;
            inj.call(tid, "sigaltstack", libc::SYS_sigaltstack, &[scratch, 0])?;
            if let Some((addr, len, sig)) = t.rseq {
                inj.call(
                    tid,
                    "rseq",
                    libc::SYS_rseq,
                    &[addr, len as u64, 0, sig as u64],
                )?;
            }
        }
        Ok(())
    }

    fn queue_pending(&mut self) -> Result<(), Error> {
        let pid = self.pid();
        let scratch = self.inj.scratch();
        let sig_of = |info: &[u8]| {
            info.get(0..4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64)
                .unwrap_or(0)
        };
        for info in &self.state.shared_pending {
            self.tracee.write_mem(scratch, info)?;
            self.call(
                "rt_sigqueueinfo",
                libc::SYS_rt_sigqueueinfo,
                &[pid as u64, sig_of(info), scratch],
            )?;
        }
        let tids: Vec<pid_t> = self.thread_tids();
        for (t, tid) in self.state.threads.iter().zip(tids) {
            for info in &t.pending {
                if crate::capture::is_fault(info) {
                    // Raised again by its instruction (older images kept it).
                    continue;
                }
                tracing::debug!("thread {tid}: signal {} pending again", sig_of(info));
                if sig_of(info) == libc::SIGTRAP as u64 {
                    // SIGTRAP stays unblocked while the tracer works: queued
                    // now, the next injected syscall would take it. The
                    // thread sits in the signal-delivery-stop of an injected
                    // syscall's trap: it gets it when it first goes on.
                    if let (Ok(si), Some(th)) = (
                        <[u8; ptrace::SIGINFO_SIZE]>::try_from(info.as_slice()),
                        self.tracee.threads.get_mut(&tid),
                    ) {
                        th.stop = ThreadStop::Signal(libc::SIGTRAP);
                        th.stop_siginfo = Some(si);
                        continue;
                    }
                }
                self.tracee.write_mem(scratch, info)?;
                // From the thread itself: the kernel lets a thread queue a
                // signal with the siginfo of kill()/tgkill() or of the kernel
                // (si_code >= 0 or SI_TKILL) only to itself (EPERM otherwise).
                self.inj.call(
                    tid,
                    "rt_tgsigqueueinfo",
                    libc::SYS_rt_tgsigqueueinfo,
                    &[pid as u64, tid as u64, sig_of(info), scratch],
                )?;
            }
        }
        Ok(())
    }

    fn thread_tids(&self) -> Vec<pid_t> {
        self.tids.clone()
    }

    fn final_registers(&self) -> Result<(), Error> {
        for (t, tid) in self.state.threads.iter().zip(self.thread_tids()) {
            let mut regs = regs_from_slice(&t.regs).ok_or_else(|| {
                Error::Restore(format!(
                    "thread {}: malformed registers in the image",
                    t.vtid
                ))
            })?;
            restart_interrupted_syscall(&mut regs);
            if let Some((rseq, _, _)) = t.rseq {
                self.rseq_abort(rseq, &mut regs)?;
            }
            ptrace::set_xstate(tid, &t.xstate)
                .map_err(|e| Error::ptrace("PTRACE_SETREGSET(xstate)", tid, e))?;
            ptrace::setregs(tid, &regs).map_err(|e| Error::ptrace("PTRACE_SETREGS", tid, e))?;
            ptrace::setsigmask(tid, t.sigmask)
                .map_err(|e| Error::ptrace("PTRACE_SETSIGMASK", tid, e))?;
        }
        Ok(())
    }

    /// A thread captured inside an rseq critical section resumes at its
    /// abort handler (the kernel would have sent it there on preemption).
    fn rseq_abort(&self, rseq: u64, regs: &mut libc::user_regs_struct) -> Result<(), Error> {
        let cs = self.tracee.read_u64(rseq + 8)?;
        if cs == 0 {
            return Ok(());
        }
        let mut b = [0u8; 32];
        if self.tracee.read_mem(cs, &mut b).is_err() {
            return Ok(());
        }
        let start = u64::from_le_bytes(b[8..16].try_into().unwrap_or([0; 8]));
        let post = u64::from_le_bytes(b[16..24].try_into().unwrap_or([0; 8]));
        let abort = u64::from_le_bytes(b[24..32].try_into().unwrap_or([0; 8]));
        if regs.rip >= start && regs.rip < start.wrapping_add(post) {
            regs.rip = abort;
        }
        Ok(())
    }
}

/// The checkpoint's id of the System V segment behind region `r`.
fn sysv_old_id(r: &Region) -> i32 {
    match &r.kind {
        RegionKind::Shared { object, .. } => match &object.kind {
            crate::image::format::SharedKind::SysV(s) => s.id,
            _ => -1,
        },
        _ => -1,
    }
}

/// The size of the System V segment behind region `r`.
fn sysv_size(r: &Region) -> u64 {
    match &r.kind {
        RegionKind::Shared { object, .. } => match &object.kind {
            crate::image::format::SharedKind::SysV(s) => s.size,
            _ => 0,
        },
        _ => 0,
    }
}

/// Highest user address on x86-64 with 4-level page tables, and the fixed
/// [vsyscall] page no process can unmap.
const TASK_SIZE: u64 = 0x7fff_ffff_f000;
const VSYSCALL: (u64, u64) = (0xffff_ffff_ff60_0000, 0xffff_ffff_ff60_1000);

/// The image's regions must be page-aligned, inside user space and
/// disjoint; say which ones are not.
pub fn check_layout(regions: &[Region]) -> Result<(), Error> {
    let mut sorted: Vec<&Region> = regions.iter().collect();
    sorted.sort_by_key(|r| r.start);
    for r in &sorted {
        if r.start >= r.end || r.start % PAGE != 0 || r.end % PAGE != 0 {
            return Err(Error::Restore(format!(
                "region {} at {:#x}-{:#x} is not a page-aligned range",
                region_name(r),
                r.start,
                r.end
            )));
        }
        if r.start < VSYSCALL.1 && VSYSCALL.0 < r.end {
            return Err(Error::Restore(format!(
                "address conflict: region {} at {:#x}-{:#x} overlaps the kernel's [vsyscall] page",
                region_name(r),
                r.start,
                r.end
            )));
        }
        if r.end > TASK_SIZE {
            return Err(Error::Restore(format!(
                "region {} at {:#x}-{:#x} lies beyond this kernel's user address space (5-level paging image?)",
                region_name(r),
                r.start,
                r.end
            )));
        }
    }
    for w in sorted.windows(2) {
        if w[1].start < w[0].end {
            return Err(Error::Restore(format!(
                "address conflict: region {} at {:#x}-{:#x} overlaps region {} at {:#x}-{:#x}",
                region_name(w[1]),
                w[1].start,
                w[1].end,
                region_name(w[0]),
                w[0].start,
                w[0].end
            )));
        }
    }
    Ok(())
}

/// Whether `[addr, addr + len)` lies inside the regions (adjacent regions
/// may share one run of pages).
fn covered(regions: &[Region], addr: u64, len: u64) -> bool {
    let end = addr.saturating_add(len);
    let mut at = addr;
    while at < end {
        match regions.iter().find(|r| r.start <= at && at < r.end) {
            Some(r) => at = r.end,
            None => return false,
        }
    }
    true
}

fn region_name(r: &Region) -> String {
    if r.name.is_empty() {
        "(anonymous)".into()
    } else {
        r.name.clone()
    }
}

/// A thread captured inside a sleeping syscall shows rax = -ERESTART*:
/// rewind it so the syscall runs again (DESIGN §10). restart_syscall would
/// need kernel state this process lacks, so RESTARTBLOCK restarts the
/// original call.
pub fn restart_interrupted_syscall(regs: &mut libc::user_regs_struct) {
    let rax = regs.rax as i64;
    if (regs.orig_rax as i64) < 0 {
        return;
    }
    if matches!(
        rax,
        ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND | ERESTART_RESTARTBLOCK
    ) {
        regs.rax = regs.orig_rax;
        regs.rip -= 2;
    }
    regs.orig_rax = u64::MAX;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: u64, end: u64, name: &str) -> Region {
        Region {
            start,
            end,
            prot: 3,
            shared: false,
            kind: RegionKind::Anon,
            name: name.into(),
        }
    }

    #[test]
    fn layout_conflicts_name_both_regions() {
        let ok = [region(0x1000, 0x3000, "[heap]"), region(0x3000, 0x5000, "")];
        assert!(check_layout(&ok).is_ok());
        let bad = [
            region(0x1000, 0x4000, "[heap]"),
            region(0x3000, 0x5000, "/lib/x.so"),
        ];
        let msg = check_layout(&bad).unwrap_err().to_string();
        assert!(
            msg.contains("address conflict") && msg.contains("/lib/x.so") && msg.contains("[heap]"),
            "{msg}"
        );
        let unaligned = [region(0x1001, 0x3000, "")];
        assert!(check_layout(&unaligned)
            .unwrap_err()
            .to_string()
            .contains("page-aligned"));
        let vsys = [region(0xffff_ffff_ff60_0000, 0xffff_ffff_ff60_1000, "x")];
        assert!(check_layout(&vsys)
            .unwrap_err()
            .to_string()
            .contains("[vsyscall]"));
    }

    #[test]
    fn interrupted_syscalls_are_rewound() {
        let mut r = regs_from_slice(&[0; 27]).unwrap();
        r.orig_rax = libc::SYS_read as u64;
        r.rax = ERESTARTSYS as u64;
        r.rip = 0x1002;
        restart_interrupted_syscall(&mut r);
        assert_eq!(
            (r.rax, r.rip, r.orig_rax),
            (libc::SYS_read as u64, 0x1000, u64::MAX)
        );
        // A finished syscall is left alone (its result stays).
        r.orig_rax = libc::SYS_read as u64;
        r.rax = 5;
        r.rip = 0x2002;
        restart_interrupted_syscall(&mut r);
        assert_eq!((r.rax, r.rip), (5, 0x2002));
    }
}
