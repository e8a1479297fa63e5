//! Capture: read the whole state of a stopped process (DESIGN §3) and stream
//! it into an image.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use libc::pid_t;

use crate::forked::MemoryCopy;
use crate::image::format::{
    CpuSummary, FileIdentity, Header, MmFields, ProcessState, Region, RegionKind, Rlimit,
    SigAction, ThreadState,
};
use crate::image::{ImageStats, ImageWriter, PageSource};
use crate::maps::{self, Mapping};
use crate::plugin::{CaptureCtx, Plugin, ResumeCtx, StdioIds};
pub use crate::shm::TreeCapture;
use crate::sys::ptrace;
use crate::tracee::{Injector, ThreadStop, Tracee, PAGE, TRAMPOLINE_SIZE};
use crate::vids::VirtualIds;
use crate::Error;

/// What every thread blocks while the tracer works, so that no handler runs
/// in the middle of a capture: all but SIGKILL and SIGSTOP, which cannot be
/// blocked, and SIGTRAP, raised by the `int3` that ends every injected
/// syscall: a trap raised while blocked makes the kernel reset the program's
/// SIGTRAP handler (`force_sig_info`); unblocked, it stops in the tracer,
/// which swallows it (CRIU leaves it unblocked for the same reason).
pub const BLOCK_ALL: u64 = !((1u64 << (libc::SIGKILL - 1))
    | (1u64 << (libc::SIGSTOP - 1))
    | (1u64 << (libc::SIGTRAP - 1)));

/// What a capture needs besides the tracee.
pub struct CaptureEnv<'a> {
    pub stdio: &'a StdioIds,
    pub vids: &'a VirtualIds,
    /// Virtual pid of the parent, as the program knows it.
    pub vppid: i32,
    /// The ptys of the program, read once for the whole checkpoint (None:
    /// each process's are read with it).
    pub terminals: Option<&'a crate::pty::Census>,
}

/// Result of a checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub stats: ImageStats,
    pub warnings: Vec<String>,
    /// Time the capture took, the program stopped (summed over the
    /// processes of a tree).
    pub millis: f64,
    /// The images of the other processes of a tree written with this one.
    pub also: Vec<std::path::PathBuf>,
    /// How long the program was stopped for the checkpoint, as its session
    /// measured it (the capture alone otherwise).
    pub stopped_ms: f64,
    /// From the start of the checkpoint until every image was durable.
    pub durable_ms: f64,
}

/// How a checkpoint writes the memory of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryMode {
    /// From the stopped process, before it may run on: the image is
    /// complete when the capture returns.
    #[default]
    Stopped,
    /// From a copy-on-write copy of the process ([`crate::forked`]), made
    /// while it is stopped: it may run on at once, while
    /// [`PendingImage::write`] writes the image. A process that cannot be
    /// forked is written stopped.
    Forked,
}

/// One captured process whose image [`PendingImage::write`] completes (on
/// any thread; at once if it was written stopped).
pub struct PendingImage {
    /// Where the image appears once written.
    pub path: PathBuf,
    pub warnings: Vec<String>,
    /// Time the capture took, the process stopped.
    pub millis: f64,
    memory: Memory,
}

// One per image, moved once: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Memory {
    /// Written already, the process stopped.
    Written(ImageStats),
    /// To read from a copy of the process (and from bytes read at once).
    FromCopy {
        writer: ImageWriter,
        parts: Vec<Part>,
        copy: MemoryCopy,
    },
}

/// Part of the memory of an image written from a copy, in region order.
enum Part {
    /// Read at once, while the process was stopped.
    Held(Range),
    /// A region whose pages the copy's pagemap says, read from the copy.
    Copied(Region),
}

impl PendingImage {
    /// The copy its memory is read from, a process the caller's ptrace
    /// sees (it must never resume it); None once written.
    pub fn copy(&self) -> Option<pid_t> {
        match &self.memory {
            Memory::Written(_) => None,
            Memory::FromCopy { copy, .. } => Some(copy.pid()),
        }
    }

    /// Writes what is left of the image and makes it durable (fsynced,
    /// renamed); the copy is killed after (its tracer reaps it).
    pub fn write(self) -> Result<Checkpoint, Error> {
        let t = std::time::Instant::now();
        let stats = match self.memory {
            Memory::Written(stats) => stats,
            Memory::FromCopy {
                writer,
                parts,
                copy,
            } => {
                let written = write_parts(writer, parts, copy.pid());
                drop(copy);
                written?
            }
        };
        Ok(Checkpoint {
            stats,
            warnings: self.warnings,
            millis: self.millis,
            also: Vec::new(),
            stopped_ms: self.millis,
            durable_ms: self.millis + t.elapsed().as_secs_f64() * 1e3,
        })
    }
}

/// Write a checkpoint image of `tracee`, whose threads must all be stopped.
/// The threads stay stopped (with their signal masks restored) afterwards.
pub fn checkpoint(
    tracee: &mut Tracee,
    plugins: &mut [Box<dyn Plugin>],
    env: &CaptureEnv,
    path: &Path,
) -> Result<Checkpoint, Error> {
    checkpoint_in_tree(
        tracee,
        plugins,
        env,
        None,
        path,
        &mut TreeCapture::default(),
    )
}

/// [`checkpoint`] of one process of a tree whose processes are captured
/// one after the other (the root first) with the same `tree`: shared
/// memory an earlier image stored is not stored again; `sockets`, the
/// program's sockets read for this checkpoint (shared by every process).
pub fn checkpoint_in_tree(
    tracee: &mut Tracee,
    plugins: &mut [Box<dyn Plugin>],
    env: &CaptureEnv,
    sockets: Option<&crate::sockets::Census>,
    path: &Path,
    tree: &mut TreeCapture,
) -> Result<Checkpoint, Error> {
    capture_in_tree(
        tracee,
        plugins,
        env,
        sockets,
        path,
        tree,
        MemoryMode::Stopped,
    )?
    .write()
}

/// [`checkpoint_in_tree`] whose memory is written as `mode` says: with
/// [`MemoryMode::Forked`], the process may run on as soon as this returns,
/// and [`PendingImage::write`] writes its image.
#[allow(clippy::too_many_arguments)]
pub fn capture_in_tree(
    tracee: &mut Tracee,
    plugins: &mut [Box<dyn Plugin>],
    env: &CaptureEnv,
    sockets: Option<&crate::sockets::Census>,
    path: &Path,
    tree: &mut TreeCapture,
    mode: MemoryMode,
) -> Result<PendingImage, Error> {
    let t0 = std::time::Instant::now();
    block_signals(tracee)?;
    let result = checkpoint_blocked(tracee, plugins, env, sockets, path, tree, mode);
    tree.index += 1;
    let unblocked = unblock_signals(tracee);
    let pending = result?;
    unblocked?;
    Ok(PendingImage {
        millis: t0.elapsed().as_secs_f64() * 1e3,
        ..pending
    })
}

fn block_signals(tracee: &mut Tracee) -> Result<(), Error> {
    for t in tracee.threads.values_mut() {
        let mask =
            ptrace::getsigmask(t.tid).map_err(|e| Error::ptrace("PTRACE_GETSIGMASK", t.tid, e))?;
        t.saved_mask = Some(mask);
        ptrace::setsigmask(t.tid, BLOCK_ALL)
            .map_err(|e| Error::ptrace("PTRACE_SETSIGMASK", t.tid, e))?;
    }
    Ok(())
}

fn unblock_signals(tracee: &mut Tracee) -> Result<(), Error> {
    for t in tracee.threads.values_mut() {
        if let Some(mask) = t.saved_mask.take() {
            ptrace::setsigmask(t.tid, mask)
                .map_err(|e| Error::ptrace("PTRACE_SETSIGMASK", t.tid, e))?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn checkpoint_blocked(
    tracee: &mut Tracee,
    plugins: &mut [Box<dyn Plugin>],
    env: &CaptureEnv,
    sockets: Option<&crate::sockets::Census>,
    path: &Path,
    tree: &mut TreeCapture,
    mode: MemoryMode,
) -> Result<PendingImage, Error> {
    let mappings = maps::read(tracee.pid)?;
    let taken: Vec<(u64, u64)> = mappings.iter().map(|m| (m.start, m.end)).collect();
    let hole = maps::find_hole(&taken, TRAMPOLINE_SIZE, 0x7fff_0000_0000)
        .ok_or_else(|| Error::Tracee("no room in the address space for the trampoline".into()))?;
    let injector = Injector::install(tracee, tracee.pid, hole)?;
    let result = capture_with(
        tracee,
        &injector,
        &mappings,
        plugins,
        env,
        path,
        (sockets, tree),
        mode,
    );
    let removed = injector.remove(tracee, tracee.pid);
    // A SIGTRAP of the program's that an injected syscall took off a
    // thread's queue is delivered when the thread goes on (the thread sits
    // in the signal-delivery-stop of the injection's own trap).
    for t in tracee.threads.values_mut() {
        if let Some(info) = crate::tracee::take_held_trap(t.tid) {
            if !matches!(t.stop, ThreadStop::Signal(_)) {
                t.stop = ThreadStop::Signal(libc::SIGTRAP);
                t.stop_siginfo = Some(info);
            }
        }
    }
    let ckpt = result?;
    removed?;
    Ok(ckpt)
}

#[allow(clippy::too_many_arguments)]
fn capture_with(
    tracee: &Tracee,
    injector: &Injector,
    mappings: &[Mapping],
    plugins: &mut [Box<dyn Plugin>],
    env: &CaptureEnv,
    path: &Path,
    (sockets, tree): (Option<&crate::sockets::Census>, &mut TreeCapture),
    mode: MemoryMode,
) -> Result<PendingImage, Error> {
    let pid = tracee.pid;
    let t = std::time::Instant::now();
    let mut state = process_state(tracee, injector, env)?;
    state.regions = regions(pid, mappings, injector.addr, tree)?;
    tracing::debug!(
        "process state captured in {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let mut warnings = Vec::new();
    let claimed = crate::plugin::claimed_fds(plugins);
    // Plugins whose pre_checkpoint ran get their resume even when the
    // checkpoint fails later: what they drained goes back to the program.
    let mut prepared = 0;
    let mut result = Ok(());
    for p in plugins.iter_mut() {
        let mut ctx = CaptureCtx {
            claimed_fds: &claimed,
            tracee,
            injector,
            state: &mut state,
            stdio: env.stdio,
            vids: env.vids,
            warnings: &mut warnings,
            sockets,
            terminals: env.terminals,
            tree_index: tree.index,
        };
        result = p.pre_checkpoint(&mut ctx);
        if result.is_err() {
            break;
        }
        prepared += 1;
    }
    // The memory is written (or a copy of it made) between the plugins'
    // pre_checkpoint and resume, as they left it.
    let memory = result.and_then(|()| {
        let header = header(tracee, &state)?;
        let writer = ImageWriter::create(path, &header, &state)?;
        prepare_memory(tracee, injector, &state.regions, writer, mode, tree)
    });
    let mut resumed = Ok(());
    for p in plugins.iter_mut().take(prepared) {
        let r = p.resume(&mut ResumeCtx {
            tracee,
            injector,
            state: &state,
        });
        if resumed.is_ok() {
            resumed = r;
        }
    }
    let memory = memory?;
    resumed?;
    Ok(PendingImage {
        path: path.to_path_buf(),
        warnings,
        millis: 0.0,
        memory,
    })
}

/// The memory of an image: written now from the stopped process, or, with
/// [`MemoryMode::Forked`], ready to be read from a copy made now.
fn prepare_memory(
    tracee: &Tracee,
    injector: &Injector,
    regions: &[Region],
    writer: ImageWriter,
    mode: MemoryMode,
    tree: &mut TreeCapture,
) -> Result<Memory, Error> {
    let pid = tracee.pid;
    if mode == MemoryMode::Forked {
        let t = std::time::Instant::now();
        let shared: Vec<(u64, u64)> = regions
            .iter()
            .filter(|r| r.shared)
            .map(|r| (r.start, r.end))
            .collect();
        if crate::forked::is_subreaper(tracee, injector)? {
            tree.subreapers.insert(pid);
        }
        let made = crate::forked::via(pid, &tree.subreapers)
            .ok_or_else(|| {
                Error::Tracee(
                    "a copy of it would not be rewind's (a subreaper of the program's, or an orphan)"
                        .into(),
                )
            })
            .and_then(|via| crate::forked::make(tracee, injector, via, &shared));
        match made {
            Ok(copy) => {
                let parts = memory_parts(pid, regions, copy.pid())?;
                tracing::debug!(
                    "process {pid} copied (copy {}) in {:.1} ms",
                    copy.pid(),
                    t.elapsed().as_secs_f64() * 1e3
                );
                return Ok(Memory::FromCopy {
                    writer,
                    parts,
                    copy,
                });
            }
            Err(e) => tracing::info!(
                "process {pid} cannot be copied ({e}): its image is written while it is stopped"
            ),
        }
    }
    let ranges = memory_ranges(pid, regions)?;
    Ok(Memory::Written(write_ranges(writer, ranges)?))
}

/// The memory of the stopped process `pid` as its copy `copy`, just
/// forked, holds it: a region whose first page to store the copy has as
/// the process does is read from the copy later (fork copies a mapping's
/// page table whole, or not at all); one the copy lacks (marked
/// `MADV_DONTFORK`, wiped by `MADV_WIPEONFORK`, a private file mapping
/// whose pages the fork did not copy) is read now, as is shared memory,
/// which the copy would share with the running process.
fn memory_parts(pid: pid_t, regions: &[Region], copy: pid_t) -> Result<Vec<Part>, Error> {
    let open = |what: &str, of: pid_t| {
        let path = format!("/proc/{of}/{what}");
        std::fs::File::open(&path).map_err(|e| Error::io(&path, e))
    };
    let pagemap = open("pagemap", pid)?;
    let copy_pagemap = open("pagemap", copy)?;
    let own = TraceeMemory {
        pid,
        mem: open("mem", pid)?,
    };
    let mut parts = Vec::new();
    for r in regions {
        if let RegionKind::Shared { offset, stored, .. } = &r.kind {
            if *stored {
                let (object, runs) = crate::shm::data_runs(pid, r, *offset)?;
                for (addr, len) in runs {
                    parts.push(Part::Held(hold(object.as_ref(), addr, len)?));
                }
            }
            continue;
        }
        let Some(first) = first_page_to_store(&pagemap, r)? else {
            continue;
        };
        if !r.shared && page_stored(&copy_pagemap, r, first)? {
            parts.push(Part::Copied(r.clone()));
            continue;
        }
        for (first, count) in pages_to_store(&pagemap, r)? {
            parts.push(Part::Held(hold(
                &own,
                r.start + first * PAGE,
                count * PAGE,
            )?));
        }
    }
    Ok(parts)
}

/// Hands every part to the writer (the pages of copied regions as the
/// copy's pagemap says) and completes the image.
fn write_parts(writer: ImageWriter, parts: Vec<Part>, copy: pid_t) -> Result<ImageStats, Error> {
    let open = |what: &str| {
        let path = format!("/proc/{copy}/{what}");
        std::fs::File::open(&path).map_err(|e| Error::io(&path, e))
    };
    let pagemap = open("pagemap")?;
    let source: Arc<dyn PageSource> = Arc::new(CopyMemory { mem: open("mem")? });
    let mut ranges = Vec::new();
    for part in parts {
        match part {
            Part::Held(range) => ranges.push(range),
            Part::Copied(r) => {
                for (first, count) in pages_to_store(&pagemap, &r)? {
                    ranges.push(Range {
                        addr: r.start + first * PAGE,
                        len: count * PAGE,
                        source: Arc::clone(&source),
                    });
                }
            }
        }
    }
    write_ranges(writer, ranges)
}

/// Hands every range to the writer, whose workers read, zero-check and
/// compress them in parallel, and completes the image.
fn write_ranges(mut writer: ImageWriter, ranges: Vec<Range>) -> Result<ImageStats, Error> {
    let t = std::time::Instant::now();
    for r in ranges {
        writer.add_range(r.addr, r.len, &r.source)?;
    }
    let stats = writer.finish()?;
    tracing::debug!(
        "memory: {:.1} MiB stored, {} zero pages dropped; image written in {:.1} ms",
        stats.raw_bytes as f64 / f64::from(1 << 20),
        stats.zero_pages,
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(stats)
}

fn header(tracee: &Tracee, state: &ProcessState) -> Result<Header, Error> {
    let uname = nix::sys::utsname::uname().map_err(|e| Error::Tracee(format!("uname: {e}")))?;
    let xstate = state
        .threads
        .first()
        .map(|t| t.xstate.as_slice())
        .unwrap_or(&[]);
    let prog = Path::new(&state.exe)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("pid{}", tracee.pid));
    Ok(Header {
        kernel: uname.release().to_string_lossy().into_owned(),
        arch: "x86_64".into(),
        cpu: cpu_summary(xstate),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        prog,
        vpid: state.vpid,
        writer: format!("rewind {}", env!("CARGO_PKG_VERSION")),
    })
}

/// CPU summary of this machine; `xstate` is any thread's xsave area.
pub fn cpu_summary(xstate: &[u8]) -> CpuSummary {
    let vendor = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("vendor_id"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    CpuSummary {
        vendor,
        xcr0: xcr0_of(xstate),
        xsave_size: xstate.len() as u32,
    }
}

/// XCR0 as the kernel reports it in the software-reserved bytes of an xsave
/// area (struct _fpx_sw_bytes at offset 464: magic, size, xfeatures).
pub fn xcr0_of(xstate: &[u8]) -> u64 {
    xstate
        .get(472..480)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

fn read_proc(pid: pid_t, what: &str) -> Result<String, Error> {
    let path = format!("/proc/{pid}/{what}");
    std::fs::read_to_string(&path).map_err(|e| Error::io(path, e))
}

fn readlink_proc(pid: pid_t, what: &str) -> Result<String, Error> {
    let path = format!("/proc/{pid}/{what}");
    std::fs::read_link(&path)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| Error::io(path, e))
}

/// Fields of /proc/pid/stat, numbered as in proc(5) (1-based).
fn stat_fields(pid: pid_t) -> Result<Vec<u64>, Error> {
    let text = read_proc(pid, "stat")?;
    let after = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| Error::Tracee("malformed /proc/pid/stat".into()))?;
    // Index 0 is unused; fields 1..=3 (pid, comm, state) are not numbers
    // we need, so the first pushed value is field 4.
    let mut v = vec![0u64; 4];
    v.extend(
        after
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse::<i64>().unwrap_or(0) as u64),
    );
    Ok(v)
}

fn mm_fields(pid: pid_t, brk: u64) -> Result<MmFields, Error> {
    let f = stat_fields(pid)?;
    let get = |n: usize| f.get(n).copied().unwrap_or(0);
    Ok(MmFields {
        start_code: get(26),
        end_code: get(27),
        start_stack: get(28),
        start_data: get(45),
        end_data: get(46),
        start_brk: get(47),
        brk,
        arg_start: get(48),
        arg_end: get(49),
        env_start: get(50),
        env_end: get(51),
    })
}

fn process_state(tracee: &Tracee, inj: &Injector, env: &CaptureEnv) -> Result<ProcessState, Error> {
    let pid = tracee.pid;
    let leader = pid;
    let scratch = inj.scratch();
    let brk = inj.call(leader, "brk(0)", libc::SYS_brk, &[0])?;
    let mut sigactions = Vec::with_capacity(64);
    for sig in 1..=64u64 {
        if sig == libc::SIGKILL as u64 || sig == libc::SIGSTOP as u64 {
            sigactions.push(SigAction::default());
            continue;
        }
        inj.call(
            leader,
            "rt_sigaction",
            libc::SYS_rt_sigaction,
            &[sig, 0, scratch, 8],
        )?;
        let mut b = [0u8; 32];
        tracee.read_mem(scratch, &mut b)?;
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        sigactions.push(SigAction {
            handler: w(0),
            flags: w(1),
            restorer: w(2),
            mask: w(3),
        });
    }
    let mut itimers = [(0u64, 0u64); 3];
    for (which, slot) in itimers.iter_mut().enumerate() {
        inj.call(
            leader,
            "getitimer",
            libc::SYS_getitimer,
            &[which as u64, scratch],
        )?;
        let mut b = [0u8; 32];
        tracee.read_mem(scratch, &mut b)?;
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        *slot = (w(0) * 1_000_000 + w(1), w(2) * 1_000_000 + w(3));
    }
    let mut threads = Vec::new();
    for t in tracee.threads.values() {
        threads.push(thread_state(tracee, inj, t.tid, env.vids)?);
        if let (ThreadStop::Signal(_), Some(info)) = (t.stop, t.stop_siginfo) {
            // The signal was taken off the queue when the thread stopped for
            // it: it is pending as far as the program is concerned.
            if let Some(ts) = threads.last_mut() {
                ts.pending.insert(0, info.to_vec());
            }
        }
        if let Some(ts) = threads.last_mut() {
            // A fault's signal is not stored: the thread is at the faulting
            // instruction, which raises it again when it runs.
            ts.pending.retain(|info| !is_fault(info));
        }
        if let (Some(info), Some(ts)) = (crate::tracee::held_trap(t.tid), threads.last_mut()) {
            // Its own SIGTRAP, taken off its queue by an injected syscall.
            ts.pending.insert(0, info.to_vec());
        }
        if let Some(ts) = threads.last_mut() {
            ts.sigmask = t.saved_mask.unwrap_or(ts.sigmask);
        }
    }
    // The leader comes first.
    threads.sort_by_key(|t| t.vtid != env.vids.to_virtual(pid));
    let status = read_proc(pid, "status")?;
    let umask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .unwrap_or(0o022);
    let personality = u32::from_str_radix(read_proc(pid, "personality")?.trim(), 16).unwrap_or(0);
    let mut rlimits = Vec::new();
    for resource in 0..16u32 {
        if let Ok((cur, max)) = crate::sys::process::prlimit_get(pid, resource) {
            rlimits.push(Rlimit { resource, cur, max });
        }
    }
    let stat = stat_fields(pid)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map_err(|e| Error::io(format!("/proc/{pid}/cmdline"), e))?
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let auxv = std::fs::read(format!("/proc/{pid}/auxv"))
        .map_err(|e| Error::io(format!("/proc/{pid}/auxv"), e))?;
    Ok(ProcessState {
        vpid: env.vids.to_virtual(pid),
        vppid: env.vppid,
        vpgid: env
            .vids
            .to_virtual(stat.get(5).copied().unwrap_or(0) as i32),
        vsid: env
            .vids
            .to_virtual(stat.get(6).copied().unwrap_or(0) as i32),
        exe: readlink_proc(pid, "exe")?,
        cmdline,
        cwd: readlink_proc(pid, "cwd")?,
        umask,
        personality,
        rlimits,
        mm: mm_fields(pid, brk)?,
        auxv,
        regions: Vec::new(),
        threads,
        sigactions,
        shared_pending: ptrace::peek_pending(pid, true)
            .map_err(|e| Error::ptrace("PTRACE_PEEKSIGINFO", pid, e))?,
        itimers,
        fds: Vec::new(),
        vids: env.vids.pairs(),
        plugin_data: Vec::new(),
    })
}

/// `user_regs_struct` as 27 words, in kernel order.
pub fn regs_to_vec(r: &libc::user_regs_struct) -> Vec<u64> {
    vec![
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx,
        r.rsi, r.rdi, r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds,
        r.es, r.fs, r.gs,
    ]
}

/// A register file of zeros.
pub fn zero_regs() -> libc::user_regs_struct {
    regs_from_array(&[0; 27])
}

pub fn regs_from_slice(v: &[u64]) -> Option<libc::user_regs_struct> {
    let v: &[u64; 27] = v.try_into().ok()?;
    Some(regs_from_array(v))
}

fn regs_from_array(v: &[u64; 27]) -> libc::user_regs_struct {
    libc::user_regs_struct {
        r15: v[0],
        r14: v[1],
        r13: v[2],
        r12: v[3],
        rbp: v[4],
        rbx: v[5],
        r11: v[6],
        r10: v[7],
        r9: v[8],
        r8: v[9],
        rax: v[10],
        rcx: v[11],
        rdx: v[12],
        rsi: v[13],
        rdi: v[14],
        orig_rax: v[15],
        rip: v[16],
        cs: v[17],
        eflags: v[18],
        rsp: v[19],
        ss: v[20],
        fs_base: v[21],
        gs_base: v[22],
        ds: v[23],
        es: v[24],
        fs: v[25],
        gs: v[26],
    }
}

fn thread_state(
    tracee: &Tracee,
    inj: &Injector,
    tid: pid_t,
    vids: &VirtualIds,
) -> Result<ThreadState, Error> {
    let regs = ptrace::getregs(tid).map_err(|e| Error::ptrace("PTRACE_GETREGS", tid, e))?;
    let xstate = ptrace::get_xstate(tid).map_err(|e| Error::ptrace("PTRACE_GETREGSET", tid, e))?;
    let sigmask =
        ptrace::getsigmask(tid).map_err(|e| Error::ptrace("PTRACE_GETSIGMASK", tid, e))?;
    let pending = ptrace::peek_pending(tid, false)
        .map_err(|e| Error::ptrace("PTRACE_PEEKSIGINFO", tid, e))?;
    let scratch = inj.scratch();
    inj.call(tid, "sigaltstack", libc::SYS_sigaltstack, &[0, scratch])?;
    let mut ss = [0u8; 24];
    tracee.read_mem(scratch, &mut ss)?;
    let altstack = (
        u64::from_le_bytes(ss[0..8].try_into().unwrap_or([0; 8])),
        i32::from_le_bytes(ss[8..12].try_into().unwrap_or([0; 4])),
        u64::from_le_bytes(ss[16..24].try_into().unwrap_or([0; 8])),
    );
    inj.call(
        tid,
        "prctl(PR_GET_TID_ADDRESS)",
        libc::SYS_prctl,
        &[libc::PR_GET_TID_ADDRESS as u64, scratch],
    )?;
    let clear_child_tid = tracee.read_u64(scratch)?;
    let comm = std::fs::read_to_string(format!("/proc/{}/task/{tid}/comm", tracee.pid))
        .map(|c| c.trim_end_matches('\n').to_string())
        .unwrap_or_default();
    Ok(ThreadState {
        vtid: vids.to_virtual(tid),
        comm,
        regs: regs_to_vec(&regs),
        xstate,
        sigmask,
        pending,
        altstack,
        rseq: ptrace::rseq_configuration(tid)
            .map_err(|e| Error::ptrace("PTRACE_GET_RSEQ_CONFIGURATION", tid, e))?,
        clear_child_tid,
        robust_list: ptrace::robust_list(tid)
            .map_err(|e| Error::ptrace("get_robust_list", tid, e))?,
    })
}

/// Classify every mapping of process `pid` (the trampoline at `skip` is
/// ours, not the program's).
fn regions(
    pid: pid_t,
    mappings: &[Mapping],
    skip: u64,
    tree: &mut TreeCapture,
) -> Result<Vec<Region>, Error> {
    let mut out = Vec::new();
    for m in mappings {
        if m.contains(skip) || m.name == "[vsyscall]" {
            continue;
        }
        if let Some(object) = crate::shm::object_of(pid, m) {
            let stored = tree.claim(&object, m.offset, m.len());
            out.push(Region {
                start: m.start,
                end: m.end,
                prot: m.prot,
                shared: true,
                kind: RegionKind::Shared {
                    object,
                    offset: m.offset,
                    stored,
                },
                name: m.name.clone(),
            });
            continue;
        }
        let kind = match m.name.as_str() {
            "[vdso]" => RegionKind::Vdso,
            "[vvar]" => RegionKind::Vvar,
            "[vvar_vclock]" => RegionKind::VvarVclock,
            "" | "[heap]" | "[stack]" if !m.shared => RegionKind::Anon,
            n if n.starts_with("[anon:") && !m.shared => RegionKind::Anon,
            n if n.starts_with('/') && !n.ends_with(" (deleted)") && !n.starts_with("/memfd:") => {
                match file_identity(n, m) {
                    Some(identity) => RegionKind::File {
                        path: n.to_string(),
                        offset: m.offset,
                        identity,
                    },
                    None => RegionKind::Contents,
                }
            }
            _ => RegionKind::Contents,
        };
        out.push(Region {
            start: m.start,
            end: m.end,
            prot: m.prot,
            shared: m.shared,
            kind,
            name: m.name.clone(),
        });
    }
    Ok(out)
}

/// The identity of the file at `path` if it is still the file mapped.
fn file_identity(path: &str, m: &Mapping) -> Option<FileIdentity> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).ok()?;
    if md.ino() != m.inode {
        return None;
    }
    Some(FileIdentity {
        dev: md.dev(),
        ino: md.ino(),
        size: md.size(),
        mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
    })
}

/// pagemap bits (Documentation/admin-guide/mm/pagemap.rst).
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAP: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;

/// How pagemap says which pages of region `r` are worth storing: None
/// when none is (read otherwise, or not at all); else whether it is a
/// private file mapping, whose pages are stored only once written.
fn pagemap_rule(r: &Region) -> Option<bool> {
    match r.kind {
        RegionKind::Vdso | RegionKind::Vvar | RegionKind::VvarVclock => None,
        RegionKind::File { .. } if r.shared => None,
        // Read through their object (`memory_ranges`).
        RegionKind::Shared { .. } => None,
        RegionKind::File { .. } => Some(true),
        _ => Some(false),
    }
}

/// Whether a page with pagemap entry `e` is stored.
fn stores(e: u64, private_file: bool) -> bool {
    if private_file {
        // A private file page that is not the file's own page was
        // written (copied on write): it differs from the file.
        (e & PM_PRESENT != 0 && e & PM_FILE == 0) || e & PM_SWAP != 0
    } else {
        e & (PM_PRESENT | PM_SWAP) != 0
    }
}

/// Calls `f` with each page of `r` (its index in the region) pagemap says
/// to store, in order, while `f` returns true.
fn scan_pagemap(
    pagemap: &std::fs::File,
    r: &Region,
    mut f: impl FnMut(u64) -> bool,
) -> Result<(), Error> {
    use std::os::unix::fs::FileExt;
    let Some(private_file) = pagemap_rule(r) else {
        return Ok(());
    };
    let npages = (r.end - r.start) / PAGE;
    let batch = 64 * 1024u64;
    let mut buf = vec![0u8; (batch.min(npages) * 8) as usize];
    let mut first = 0;
    while first < npages {
        let n = batch.min(npages - first);
        let bytes = &mut buf[..(n * 8) as usize];
        pagemap
            .read_exact_at(bytes, (r.start / PAGE + first) * 8)
            .map_err(|e| Error::io("/proc/pid/pagemap", e))?;
        for (i, e) in bytes.chunks_exact(8).enumerate() {
            let e = u64::from_le_bytes(e.try_into().unwrap_or([0; 8]));
            if stores(e, private_file) && !f(first + i as u64) {
                return Ok(());
            }
        }
        first += n;
    }
    Ok(())
}

/// Which pages of a region must be stored: runs of (first page, count).
fn pages_to_store(pagemap: &std::fs::File, r: &Region) -> Result<Vec<(u64, u64)>, Error> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    scan_pagemap(pagemap, r, |page| {
        match runs.last_mut() {
            Some((s, c)) if *s + *c == page => *c += 1,
            _ => runs.push((page, 1)),
        }
        true
    })?;
    Ok(runs)
}

/// The first page of `r` pagemap says to store.
fn first_page_to_store(pagemap: &std::fs::File, r: &Region) -> Result<Option<u64>, Error> {
    let mut found = None;
    scan_pagemap(pagemap, r, |page| {
        found = Some(page);
        false
    })?;
    Ok(found)
}

/// Whether pagemap says to store page `page` of `r`.
fn page_stored(pagemap: &std::fs::File, r: &Region, page: u64) -> Result<bool, Error> {
    use std::os::unix::fs::FileExt;
    let Some(private_file) = pagemap_rule(r) else {
        return Ok(false);
    };
    let mut e = [0u8; 8];
    pagemap
        .read_exact_at(&mut e, (r.start / PAGE + page) * 8)
        .map_err(|e| Error::io("/proc/pid/pagemap", e))?;
    Ok(stores(u64::from_le_bytes(e), private_file))
}

/// A copy's memory, read through /proc/PID/mem only: process_vm_readv pins
/// the pages it reads, and pinning a page the copy shares with the program
/// (copy-on-write) gives the copy a page of its own (the kernel unshares
/// it), which would copy all its memory and take twice as long.
struct CopyMemory {
    mem: std::fs::File,
}

impl PageSource for CopyMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.mem.read_exact_at(buf, addr)
    }
}

/// The tracee's memory as the image writer's workers read it, several
/// pieces at once: by process_vm_readv, else through /proc/pid/mem.
struct TraceeMemory {
    pid: pid_t,
    mem: std::fs::File,
}

impl PageSource for TraceeMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        match ptrace::vm_read(self.pid, addr, buf) {
            Ok(n) if n == buf.len() => Ok(()),
            // Unreadable through process_vm_readv (PROT_NONE...):
            // /proc/pid/mem reads whatever may be read.
            _ => self.mem.read_exact_at(buf, addr),
        }
    }
}

/// Memory to store, `len` bytes at `addr`, and where it is read.
struct Range {
    addr: u64,
    len: u64,
    source: Arc<dyn PageSource>,
}

/// Bytes read already (from a stopped process).
struct Held {
    start: u64,
    bytes: Vec<u8>,
}

impl PageSource for Held {
    fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let from = usize::try_from(addr.wrapping_sub(self.start)).unwrap_or(usize::MAX);
        let bytes = from
            .checked_add(buf.len())
            .and_then(|to| self.bytes.get(from..to))
            .ok_or_else(|| std::io::Error::other(format!("{addr:#x} is not held")))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

/// Reads `len` bytes at `addr` from `source` now.
fn hold(source: &dyn PageSource, addr: u64, len: u64) -> Result<Range, Error> {
    let n = usize::try_from(len)
        .map_err(|_| Error::Tracee(format!("{len} bytes at {addr:#x} do not fit in memory")))?;
    let mut bytes = vec![0u8; n];
    source
        .read(addr, &mut bytes)
        .map_err(|e| Error::Tracee(format!("cannot read {len} bytes at {addr:#x}: {e}")))?;
    Ok(Range {
        addr,
        len,
        source: Arc::new(Held { start: addr, bytes }),
    })
}

/// Every range of the stopped process `pid` worth storing (pagemap says
/// which pages; shared memory objects are read through the object), to read
/// from it before it runs on.
fn memory_ranges(pid: pid_t, regions: &[Region]) -> Result<Vec<Range>, Error> {
    let open = |what: &str| {
        let path = format!("/proc/{pid}/{what}");
        std::fs::File::open(&path).map_err(|e| Error::io(&path, e))
    };
    let pagemap = open("pagemap")?;
    let source: Arc<dyn PageSource> = Arc::new(TraceeMemory {
        pid,
        mem: open("mem")?,
    });
    let mut out = Vec::new();
    for r in regions {
        if let RegionKind::Shared { offset, stored, .. } = &r.kind {
            if *stored {
                let (object, runs) = crate::shm::data_runs(pid, r, *offset)?;
                out.extend(runs.into_iter().map(|(addr, len)| Range {
                    addr,
                    len,
                    source: Arc::clone(&object),
                }));
            }
            continue;
        }
        for (first, count) in pages_to_store(&pagemap, r)? {
            out.push(Range {
                addr: r.start + first * PAGE,
                len: count * PAGE,
                source: Arc::clone(&source),
            });
        }
    }
    Ok(out)
}

/// Whether a raw siginfo is a fault the kernel raised for the instruction
/// the thread stands on (SIGSEGV, SIGBUS, SIGILL, SIGFPE with a positive
/// si_code): running that instruction again raises it again. Queued again
/// at restart instead, it was delivered at once although blocked ("got
/// signal 11 during an injected syscall").
pub(crate) fn is_fault(info: &[u8]) -> bool {
    let word = |i: usize| {
        info.get(i..i + 4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0)
    };
    let (signo, code) = (word(0), word(8));
    matches!(
        signo,
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE
    ) && code > 0
}
