//! Forked checkpoints (DMTCP's): the program is stopped only while its
//! threads, descriptors, regions and plugins' state are captured and a
//! copy-on-write copy of its memory is made; it then runs on, and the
//! image's memory is written from the copy, which is killed after
//! (`capture::MemoryMode::Forked`).
//!
//! **The copy** is a process of its own whose private memory is the
//! program's, copy-on-write, and which rewind kills and reaps once the image
//! is written; the program must never see it as a child of its own. A
//! process whose parent is rewind (the program `launch` or `restart`
//! started) makes it with an injected `clone(CLONE_PARENT)`: the copy is
//! rewind's child. Any other process of a tree makes it in two steps:
//! `clone(CLONE_VM | CLONE_FILES)` makes a sibling that shares its memory
//! (nothing is copied), `clone(0)` injected into the sibling forks the copy,
//! and the sibling is killed and reaped by the process itself (an injected
//! `wait4`): the copy, orphaned, is adopted by rewind, a child subreaper for
//! that moment. A subreaper of the program's own between them would adopt
//! it instead: such a process (and one whose ancestors do not lead to
//! rewind, an orphan) is written stopped. The copy never runs a single
//! instruction of the program: it sits in a ptrace stop, in a session of
//! its own (no terminal signal reaches it), without descriptors (a pipe or
//! socket the program closes meanwhile is closed) and without the program's
//! shared mappings.
//!
//! **What is read at once.** The copy would share MAP_SHARED memory with the
//! program, whose later writes would leak into the image: shared memory an
//! image stores is read while the program is stopped, into rewind's memory
//! (`capture`). So is a mapping the copy does not hold as the program does:
//! one marked `MADV_DONTFORK` (not in the copy) or `MADV_WIPEONFORK` (empty
//! in the copy), or a private file mapping whose pages the fork left to the
//! file; a fork copies a mapping's page table whole or not at all, so the
//! copy holding the mapping's first page worth storing tells. A process
//! holding a userfaultfd is not forked (a fork may wait for the monitor
//! thread, which is stopped): its image is written while it is stopped.
//!
//! **Cost.** Making the copy costs a fork, which copies the page tables
//! (measured here: 3-6 ms for 100 MiB, 80-110 ms for 1.5 GiB). While the
//! image is written, every page the program writes is copied once, so the
//! memory the program and its copy hold together grows by what the program
//! writes meanwhile, up to its size. The copy is read through /proc/PID/mem,
//! never with process_vm_readv, which pins pages and so unshares every page
//! it reads (a full copy, twice as slow).

use libc::pid_t;

use crate::sys::ptrace::{self, Stop};
use crate::tracee::{Injector, Tracee};
use crate::Error;

/// A copy-on-write copy of a process's memory: a traced process that never
/// runs. Killed when dropped; the session tracing it reaps it.
#[derive(Debug)]
pub struct MemoryCopy {
    pid: pid_t,
}

impl MemoryCopy {
    pub fn pid(&self) -> pid_t {
        self.pid
    }
}

impl Drop for MemoryCopy {
    fn drop(&mut self) {
        let _ = crate::sys::process::kill(self.pid, libc::SIGKILL);
    }
}

/// How a process is forked into its copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Its parent is rewind: `clone(CLONE_PARENT)`.
    Parent,
    /// Through a sibling sharing its memory, and rewind as a subreaper.
    Sibling,
}

/// How process `pid` can be copied: None when a copy orphaned below it
/// would not be adopted by rewind (it, or an ancestor of it below rewind,
/// is in `subreapers`, or rewind is not its ancestor).
pub fn via(pid: pid_t, subreapers: &std::collections::HashSet<pid_t>) -> Option<Via> {
    let me = std::process::id() as pid_t;
    let mut at = ppid_of(pid)?;
    if at == me {
        return Some(Via::Parent);
    }
    // The sibling's orphan goes to the nearest subreaper above the sibling:
    // the process itself, or one of its ancestors.
    if subreapers.contains(&pid) {
        return None;
    }
    for _ in 0..4096 {
        if at == me {
            return Some(Via::Sibling);
        }
        if at <= 1 || subreapers.contains(&at) {
            return None;
        }
        at = ppid_of(at)?;
    }
    None
}

/// Whether the stopped process of `inj` is a child subreaper.
pub fn is_subreaper(tracee: &Tracee, inj: &Injector) -> Result<bool, Error> {
    let scratch = inj.scratch();
    tracee.write_mem(scratch, &[0; 4])?;
    inj.call(
        tracee.pid,
        "prctl(PR_GET_CHILD_SUBREAPER)",
        libc::SYS_prctl,
        &[libc::PR_GET_CHILD_SUBREAPER as u64, scratch],
    )?;
    let mut flag = [0u8; 4];
    tracee.read_mem(scratch, &mut flag)?;
    Ok(flag != [0; 4])
}

/// Makes the copy of the stopped process `tracee` (every thread stopped,
/// `inj` installed in it) `via` a way [`via`] said. `shared`: its
/// MAP_SHARED mappings (start, end), which the copy unmaps. Fails, leaving
/// the program as it was, when the process cannot be forked (userfaultfd,
/// a fork refused by a limit...).
pub fn make(
    tracee: &Tracee,
    inj: &Injector,
    via: Via,
    shared: &[(u64, u64)],
) -> Result<MemoryCopy, Error> {
    let pid = tracee.pid;
    if has_userfaultfd(pid) {
        return Err(Error::Tracee(
            "it has a userfaultfd, whose monitor a fork may wait for".into(),
        ));
    }
    let copy = match via {
        Via::Parent => inj
            .clone_stopped(pid, libc::CLONE_PARENT as u64)
            .map(|pid| MemoryCopy { pid })?,
        Via::Sibling => fork_copy(tracee, inj)?,
    };
    tidy(&copy, inj, shared)?;
    Ok(copy)
}

/// Whether process `pid` holds a userfaultfd (memory registered with one
/// lives as long as it).
fn has_userfaultfd(pid: pid_t) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read_link(e.path())
            .is_ok_and(|l| l.as_os_str().to_string_lossy().contains("[userfaultfd]"))
    })
}

/// This process as a child subreaper while it lives; as it was after.
struct Subreaper {
    was: bool,
}

impl Subreaper {
    fn enter() -> Result<Subreaper, Error> {
        use nix::sys::prctl;
        let was = prctl::get_child_subreaper()
            .map_err(|e| Error::Tracee(format!("PR_GET_CHILD_SUBREAPER: {}", e.desc())))?;
        if !was {
            prctl::set_child_subreaper(true)
                .map_err(|e| Error::Tracee(format!("PR_SET_CHILD_SUBREAPER: {}", e.desc())))?;
        }
        Ok(Subreaper { was })
    }
}

impl Drop for Subreaper {
    fn drop(&mut self) {
        if !self.was {
            let _ = nix::sys::prctl::set_child_subreaper(false);
        }
    }
}

/// The sibling, the copy, and the sibling's end (see the module's doc):
/// the process of `tracee` is not rewind's child.
fn fork_copy(tracee: &Tracee, inj: &Injector) -> Result<MemoryCopy, Error> {
    let pid = tracee.pid;
    // Every process of the program is stopped: no orphan of its own can be
    // adopted by rewind while it is a subreaper. None of the process's
    // ancestors below rewind is one (`via`).
    let _subreaper = Subreaper::enter()?;
    let sibling = inj.clone_stopped(pid, (libc::CLONE_VM | libc::CLONE_FILES) as u64)?;
    let copy = inj.clone_stopped(sibling, 0).map(|pid| MemoryCopy { pid });
    let _ = crate::sys::process::kill(sibling, libc::SIGKILL);
    // Its tracer sees it die first; then it is the program's zombie.
    loop {
        match ptrace::wait(sibling, false) {
            Ok(Some((_, Stop::Exited(_) | Stop::Killed(_)))) | Err(_) => break,
            _ => {}
        }
    }
    let wall = (libc::__WALL | libc::WNOHANG) as u64;
    let mut reaped = false;
    for _ in 0..10_000 {
        match inj.syscall(pid, libc::SYS_wait4, &[sibling as u64, 0, wall, 0])? {
            0 => std::thread::sleep(std::time::Duration::from_micros(100)),
            r if r == i64::from(sibling) => {
                reaped = true;
                break;
            }
            r => {
                return Err(Error::Tracee(format!(
                    "the program cannot reap the process {sibling} rewind made it fork: {}",
                    crate::tracee::errno_text(r)
                )))
            }
        }
    }
    if !reaped {
        return Err(Error::Tracee(format!(
            "the process {sibling} rewind made the program fork does not end"
        )));
    }
    let copy = copy?;
    if ppid_of(copy.pid) != Some(std::process::id() as pid_t) {
        tracing::debug!(
            "the copy {} of process {pid} was adopted by another process than rewind",
            copy.pid
        );
    }
    Ok(copy)
}

/// The copy lets go of what it must not hold: the program's shared
/// mappings (System V segments stay attached otherwise), its descriptors,
/// its session and process group.
fn tidy(copy: &MemoryCopy, inj: &Injector, shared: &[(u64, u64)]) -> Result<(), Error> {
    let pid = copy.pid;
    for &(start, end) in shared {
        inj.call(
            pid,
            "munmap (copy)",
            libc::SYS_munmap,
            &[start, end - start],
        )?;
    }
    inj.call(
        pid,
        "close_range (copy)",
        libc::SYS_close_range,
        &[0, u64::from(u32::MAX), 0],
    )?;
    inj.call(pid, "setsid (copy)", libc::SYS_setsid, &[])?;
    // What ps and top show for it.
    let _ = std::fs::write(format!("/proc/{pid}/comm"), "rewind-copy");
    Ok(())
}

/// The parent of process `pid` (/proc/pid/stat field 4).
fn ppid_of(pid: pid_t) -> Option<pid_t> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
