//! Children that have ended but that their parent has not reaped yet.
//!
//! A checkpoint often lands between a child's exit and its parent's
//! `wait`: a compiler driver whose `cc1` just finished, a shell whose
//! command substitution just ended, `subprocess.run` in python. The child is
//! a zombie: no memory, no threads, only its pid and exit status, which
//! the parent is about to collect. If the restarted parent had no such
//! child, its `wait` would fail with ECHILD (`gcc: fatal error: failed to
//! get exit status: No child processes`) and the program would take another
//! path than the uninterrupted run.
//!
//! The `zombies` plugin (loaded by every session) notes each zombie child of
//! a process in its image (virtual pid, wait status, process group); at
//! restart it forks the restored process once per zombie (an injected
//! `clone3` with `set_tid`, so the child has its old pid when free), and the
//! child ends at once with the recorded status: an `exit_group` for an exit
//! code, its signal with the default action (and no core file) for a
//! signal. The tracer reaps its side of the child, which leaves a zombie
//! for the parent, and the SIGCHLD that this sends the parent now is taken
//! back (the parent had it at the original exit: if it was still pending at
//! the checkpoint, the image brings it back).

use libc::pid_t;
use serde::{Deserialize, Serialize};

use crate::plugin::{CaptureCtx, Plugin, RestoreCtx};
use crate::sys::ptrace::{self, Stop};
use crate::tracee::{errno_text, Injector, Tracee};
use crate::Error;

/// The plugin's name, and its key in an image's `plugin_data`.
pub const PLUGIN_NAME: &str = "zombies";

/// One child that had ended without being reaped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zombie {
    /// Its virtual pid, as the parent knows it.
    pub vpid: i32,
    /// Its status as `wait` reports it (exit code << 8, or the signal).
    pub status: i32,
    /// Its virtual process group.
    pub vpgid: i32,
}

/// See the module documentation.
#[derive(Default)]
pub struct Zombies;

impl Plugin for Zombies {
    fn name(&self) -> &'static str {
        PLUGIN_NAME
    }

    fn pre_checkpoint(&mut self, ctx: &mut CaptureCtx) -> Result<(), Error> {
        let zombies: Vec<Zombie> = zombie_children(ctx.tracee.pid)
            .into_iter()
            .map(|(pid, status, pgid)| Zombie {
                vpid: ctx.vids.to_virtual(pid),
                status,
                vpgid: ctx.vids.to_virtual(pgid),
            })
            .collect();
        if zombies.is_empty() {
            return Ok(());
        }
        let bytes = bincode::serde::encode_to_vec(&zombies, bincode::config::standard())
            .map_err(|e| Error::Tracee(format!("zombie children: {e}")))?;
        ctx.state.plugin_data.push((PLUGIN_NAME.to_string(), bytes));
        Ok(())
    }

    fn restart(&mut self, ctx: &mut RestoreCtx) -> Result<(), Error> {
        let Some((_, bytes)) = ctx.state.plugin_data.iter().find(|(n, _)| n == PLUGIN_NAME) else {
            return Ok(());
        };
        let zombies: Vec<Zombie> =
            bincode::serde::decode_from_slice(bytes, bincode::config::standard())
                .map(|(z, _)| z)
                .map_err(|e| Error::Restore(format!("zombie children in the image: {e}")))?;
        for z in &zombies {
            let real = make_zombie(ctx.tracee, ctx.injector, z, ctx.vids.to_real(z.vpgid))
                .map_err(|e| {
                    Error::Restore(format!(
                        "cannot bring back child {} that had ended (status {:#x}): {e}",
                        z.vpid, z.status
                    ))
                })?;
            ctx.vids.insert(z.vpid, real);
        }
        Ok(())
    }
}

/// The children of `pid` (of all its threads) that are zombies: (pid,
/// wait status, process group).
fn zombie_children(pid: pid_t) -> Vec<(pid_t, i32, pid_t)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            if let Some((state, status, pgid)) = stat_of(child) {
                if state == 'Z' {
                    out.push((child, status, pgid));
                }
            }
        }
    }
    out
}

/// State, exit status (field 52, as `wait` reports it) and process group of
/// `pid` from /proc/PID/stat.
fn stat_of(pid: pid_t) -> Option<(char, i32, pid_t)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces and ')'.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let state = fields.first()?.chars().next()?;
    let pgid = fields.get(2)?.parse().ok()?;
    let status = fields.get(49)?.parse().ok()?;
    Some((state, status, pgid))
}

/// Fork the restored process `tracee` into a child with pid `z.vpid` (when
/// free) that ends at once with `z.status`, reaped by the tracer only;
/// returns the child's real pid.
fn make_zombie(tracee: &Tracee, inj: &Injector, z: &Zombie, pgid: pid_t) -> Result<pid_t, Error> {
    let pid = tracee.pid;
    let scratch = inj.scratch();
    // struct clone_args: exit_signal SIGCHLD, set_tid (one pid) after it.
    let clone3 = |set_tid: bool| -> Result<i64, Error> {
        let mut args = [0u64; 11];
        args[4] = libc::SIGCHLD as u64;
        if set_tid {
            args[8] = scratch + 96;
            args[9] = 1;
        }
        let mut bytes: Vec<u8> = args.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.resize(96, 0);
        bytes.extend_from_slice(&(z.vpid as i64).to_le_bytes());
        tracee.write_mem(scratch, &bytes)?;
        inj.syscall(pid, libc::SYS_clone3, &[scratch, 88])
    };
    // The child must be the tracer's from birth (a single restart's husk
    // does not follow forks yet; the session then follows them anyway).
    ptrace::setoptions(pid, crate::tree::options())
        .map_err(|e| Error::ptrace("PTRACE_SETOPTIONS", pid, e))?;
    let mut ret = clone3(true)?;
    if ret < 0 {
        // The pid is taken: another one, which the program sees through
        // the translation of ids.
        ret = clone3(false)?;
    }
    if ret <= 0 {
        return Err(Error::Restore(format!("clone3: {}", errno_text(ret))));
    }
    let child = ret as pid_t;
    let result = end_child(child, inj, z, pgid);
    if result.is_err() {
        let _ = crate::sys::process::kill(child, libc::SIGKILL);
        let _ = ptrace::wait(child, false);
    }
    result?;
    // The parent was just sent SIGCHLD (when the tracer reaped its side): it
    // had it at the original exit already. Taken back with a sigtimedwait
    // that does not wait (the parent blocks every signal during a restore).
    let mut args = (1u64 << (libc::SIGCHLD - 1)).to_le_bytes().to_vec();
    args.extend_from_slice(&[0u8; 16]);
    tracee.write_mem(scratch, &args)?;
    inj.syscall(
        pid,
        libc::SYS_rt_sigtimedwait,
        &[scratch, 0, scratch + 8, 8],
    )?;
    Ok(child)
}

/// Make the new child `child` (in its attach stop, a copy of the restored
/// process with the trampoline) end with the zombie's status, and reap the
/// tracer's side of its end.
fn end_child(child: pid_t, inj: &Injector, z: &Zombie, pgid: pid_t) -> Result<(), Error> {
    loop {
        match ptrace::wait(child, false).map_err(|e| Error::ptrace("waitpid", child, e))? {
            Some((_, Stop::Event(_, _))) | Some((_, Stop::Signal(libc::SIGSTOP))) => break,
            Some((_, Stop::Exited(_) | Stop::Killed(_))) => {
                return Err(Error::Restore("the child died at birth".into()))
            }
            _ => {}
        }
    }
    let copy = Tracee::new(child)?;
    // Its group, when it was not its parent's (best effort: the group may
    // not exist any more).
    if pgid > 0 {
        let _ = inj.syscall(child, libc::SYS_setpgid, &[0, pgid as u64]);
    }
    let (code, sig) = (z.status >> 8 & 0xff, z.status & 0x7f);
    let mut regs = ptrace::getregs(child).map_err(|e| Error::ptrace("PTRACE_GETREGS", child, e))?;
    if sig == 0 {
        regs.rip = inj.addr;
        regs.rax = libc::SYS_exit_group as u64;
        regs.orig_rax = u64::MAX;
        regs.rdi = code as u64;
        ptrace::setregs(child, &regs).map_err(|e| Error::ptrace("PTRACE_SETREGS", child, e))?;
        ptrace::cont(child, 0).map_err(|e| Error::ptrace("PTRACE_CONT", child, e))?;
    } else {
        // The default action of the signal, without a core file.
        let mut act = [0u8; 32];
        act[..8].copy_from_slice(&(libc::SIG_DFL as u64).to_le_bytes());
        copy.write_mem(inj.scratch(), &act)?;
        inj.call(
            child,
            "rt_sigaction",
            libc::SYS_rt_sigaction,
            &[sig as u64, inj.scratch(), 0, 8],
        )?;
        let _ = crate::sys::process::prlimit_set(child, libc::RLIMIT_CORE, 0, 0);
        ptrace::setsigmask(child, 0).map_err(|e| Error::ptrace("PTRACE_SETSIGMASK", child, e))?;
        crate::sys::process::kill(child, sig).map_err(|e| Error::Restore(format!("kill: {e}")))?;
        ptrace::cont(child, 0).map_err(|e| Error::ptrace("PTRACE_CONT", child, e))?;
    }
    loop {
        match ptrace::wait(child, false).map_err(|e| Error::ptrace("waitpid", child, e))? {
            Some((_, Stop::Exited(_) | Stop::Killed(_))) => return Ok(()),
            Some((_, Stop::Signal(s))) => {
                let _ = ptrace::cont(child, s);
            }
            _ => {
                let _ = ptrace::cont(child, 0);
            }
        }
    }
}
