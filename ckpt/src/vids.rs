//! Virtual process and thread ids: "the user sees only virtual pids; the
//! kernel sees only real pids". Under `launch` the table is the identity;
//! after a restart it maps the ids the program knows to the new real ones.

use std::collections::HashMap;

#[derive(Debug, Clone, Default)]
pub struct VirtualIds {
    v2r: HashMap<i32, i32>,
    r2v: HashMap<i32, i32>,
}

impl VirtualIds {
    pub fn insert(&mut self, virt: i32, real: i32) {
        self.v2r.insert(virt, real);
        self.r2v.insert(real, virt);
    }

    pub fn remove_real(&mut self, real: i32) {
        if let Some(v) = self.r2v.remove(&real) {
            self.v2r.remove(&v);
        }
    }

    /// The real id of a virtual one; ids the table does not know are their
    /// own (threads and children created since the restart).
    pub fn to_real(&self, virt: i32) -> i32 {
        self.v2r.get(&virt).copied().unwrap_or(virt)
    }

    pub fn to_virtual(&self, real: i32) -> i32 {
        self.r2v.get(&real).copied().unwrap_or(real)
    }

    /// Translate a pid argument of kill()/wait4(): negative values name
    /// process groups, 0 and -1 are special.
    pub fn pid_arg_to_real(&self, pid: i32) -> i32 {
        match pid {
            0 | -1 => pid,
            p if p < -1 => -self.to_real(-p),
            p => self.to_real(p),
        }
    }

    pub fn is_identity(&self) -> bool {
        self.v2r.iter().all(|(v, r)| v == r)
    }

    /// (virtual, real) pairs, sorted.
    pub fn pairs(&self) -> Vec<(i32, i32)> {
        let mut p: Vec<_> = self.v2r.iter().map(|(&v, &r)| (v, r)).collect();
        p.sort_unstable();
        p
    }

    /// Rewrite "/proc/<vpid>/..." to the real pid; None when unchanged.
    pub fn proc_path_to_real(&self, path: &str) -> Option<String> {
        let rest = path.strip_prefix("/proc/")?;
        let (num, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let virt: i32 = num.parse().ok()?;
        let real = self.to_real(virt);
        (real != virt).then(|| format!("/proc/{real}{tail}"))
    }
}

/// The built-in Pids plugin: translates the pid-carrying syscalls of a
/// restarted program between its virtual ids and the kernel's.
pub struct Pids {
    /// The virtual parent of each restored process, by its real pid (one
    /// plugin serves every process of a tree).
    vppid: std::collections::HashMap<i32, i32>,
}

impl Pids {
    pub fn new() -> Pids {
        Pids {
            vppid: Default::default(),
        }
    }
}

impl Default for Pids {
    fn default() -> Self {
        Pids::new()
    }
}

/// Syscalls taking a path, and which argument it is: "/proc/<vpid>/..."
/// must name the real process.
const PATH_SYSCALLS: &[(i64, usize)] = &[
    (libc::SYS_open, 0),
    (libc::SYS_openat, 1),
    (libc::SYS_readlink, 0),
    (libc::SYS_readlinkat, 1),
    (libc::SYS_stat, 0),
    (libc::SYS_lstat, 0),
    (libc::SYS_newfstatat, 1),
    (libc::SYS_statx, 1),
    (libc::SYS_access, 0),
    (libc::SYS_faccessat, 1),
    (libc::SYS_faccessat2, 1),
    (libc::SYS_chdir, 0),
];

const TRAPPED: &[i64] = &[
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getppid,
    libc::SYS_kill,
    libc::SYS_tkill,
    libc::SYS_tgkill,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_getpgid,
    libc::SYS_getsid,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_setaffinity,
    libc::SYS_prlimit64,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_open,
    libc::SYS_kcmp,
    libc::SYS_sched_getparam,
    libc::SYS_sched_setparam,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_getattr,
    libc::SYS_sched_setattr,
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_access,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_chdir,
];

/// Below the stack pointer, past the red zone: room for a rewritten path
/// while the thread is stopped at syscall entry.
const PATH_SCRATCH_BELOW_SP: u64 = 4096;

fn arg(r: &libc::user_regs_struct, i: usize) -> u64 {
    [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9][i]
}

fn set_arg(r: &mut libc::user_regs_struct, i: usize, v: u64) {
    match i {
        0 => r.rdi = v,
        1 => r.rsi = v,
        2 => r.rdx = v,
        3 => r.r10 = v,
        4 => r.r8 = v,
        _ => r.r9 = v,
    }
}

/// Point a path argument naming /proc/<vpid> at a copy naming the real pid.
fn translate_path_arg(ctx: &mut crate::plugin::SyscallCtx, i: usize) {
    let ptr = arg(ctx.regs, i);
    if ptr == 0 {
        return;
    }
    let Ok(bytes) = ctx.tracee.read_cstr(ptr, 4096) else {
        return;
    };
    let Ok(path) = std::str::from_utf8(&bytes) else {
        return;
    };
    let Some(real) = ctx.vids.proc_path_to_real(path) else {
        return;
    };
    let mut new = real.into_bytes();
    new.push(0);
    let at = (ctx.regs.rsp - PATH_SCRATCH_BELOW_SP - new.len() as u64) & !15;
    if ctx.tracee.write_mem(at, &new).is_ok() {
        set_arg(ctx.regs, i, at);
    }
}

/// The pid plugin's name.
pub const PLUGIN_NAME: &str = "pids";

impl crate::plugin::Plugin for Pids {
    fn name(&self) -> &'static str {
        PLUGIN_NAME
    }

    fn syscalls(&self) -> &'static [i64] {
        TRAPPED
    }

    fn restart(&mut self, ctx: &mut crate::plugin::RestoreCtx) -> Result<(), crate::Error> {
        self.vppid.insert(ctx.tracee.pid, ctx.state.vppid);
        Ok(())
    }

    fn on_syscall(
        &mut self,
        ctx: &mut crate::plugin::SyscallCtx,
    ) -> Result<crate::plugin::SyscallAction, crate::Error> {
        use crate::plugin::SyscallAction::{Emulate, Run, RunWatchExit};
        if let Some(&(_, i)) = PATH_SYSCALLS
            .iter()
            .find(|(nr, _)| *nr == ctx.regs.orig_rax as i64)
        {
            translate_path_arg(ctx, i);
            return Ok(Run);
        }
        let v = ctx.vids;
        let r = &mut *ctx.regs;
        let real = |x: u64| v.to_real(x as i32) as u32 as u64;
        let arg_pid = |x: u64| v.pid_arg_to_real(x as i32) as u32 as u64;
        Ok(match r.orig_rax as i64 {
            libc::SYS_getpid => Emulate(v.to_virtual(ctx.tracee.pid) as i64),
            libc::SYS_gettid => Emulate(v.to_virtual(ctx.tid) as i64),
            libc::SYS_getppid => match self.vppid.get(&ctx.tracee.pid) {
                Some(&p) => Emulate(p as i64),
                // A process forked since the restart: its parent's real pid,
                // seen as virtual.
                None => RunWatchExit,
            },
            libc::SYS_kill => {
                r.rdi = arg_pid(r.rdi);
                Run
            }
            libc::SYS_wait4 => {
                r.rdi = arg_pid(r.rdi);
                // The child it reaps is named by its virtual pid (trees).
                RunWatchExit
            }
            libc::SYS_tkill
            | libc::SYS_rt_sigqueueinfo
            | libc::SYS_getpgid
            | libc::SYS_getsid
            | libc::SYS_sched_getaffinity
            | libc::SYS_sched_setaffinity
            | libc::SYS_prlimit64
            // Another process's memory (cross-memory attach: MPI's UCX).
            | libc::SYS_process_vm_readv
            | libc::SYS_process_vm_writev
            | libc::SYS_pidfd_open
            | libc::SYS_sched_getparam
            | libc::SYS_sched_setparam
            | libc::SYS_sched_getscheduler
            | libc::SYS_sched_setscheduler
            | libc::SYS_sched_getattr
            | libc::SYS_sched_setattr => {
                if r.rdi as i32 > 0 {
                    r.rdi = real(r.rdi);
                }
                Run
            }
            libc::SYS_kcmp => {
                r.rdi = real(r.rdi);
                r.rsi = real(r.rsi);
                Run
            }
            libc::SYS_tgkill | libc::SYS_rt_tgsigqueueinfo => {
                r.rdi = real(r.rdi);
                r.rsi = real(r.rsi);
                Run
            }
            libc::SYS_waitid => {
                // idtype P_PID = 1, P_PGID = 2
                if r.rdi == 1 || r.rdi == 2 {
                    r.rsi = real(r.rsi);
                }
                Run
            }
            _ => Run,
        })
    }

    fn on_syscall_exit(
        &mut self,
        ctx: &mut crate::plugin::SyscallCtx,
        result: i64,
    ) -> Result<(), crate::Error> {
        let nr = ctx.regs.orig_rax as i64;
        if (nr == libc::SYS_wait4 || nr == libc::SYS_getppid) && result > 0 {
            ctx.regs.rax = ctx.vids.to_virtual(result as i32) as i64 as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_both_ways_and_leaves_unknown_ids() {
        let mut v = VirtualIds::default();
        v.insert(100, 5000);
        assert_eq!(v.to_real(100), 5000);
        assert_eq!(v.to_virtual(5000), 100);
        assert_eq!(v.to_real(7), 7);
        assert_eq!(v.pid_arg_to_real(-100), -5000);
        assert_eq!(v.pid_arg_to_real(-1), -1);
        assert_eq!(
            v.proc_path_to_real("/proc/100/status").as_deref(),
            Some("/proc/5000/status")
        );
        assert_eq!(
            v.proc_path_to_real("/proc/100").as_deref(),
            Some("/proc/5000")
        );
        assert_eq!(v.proc_path_to_real("/proc/self/maps"), None);
        assert_eq!(v.proc_path_to_real("/proc/7/maps"), None);
        assert!(!v.is_identity());
    }
}
