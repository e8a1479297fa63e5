//! Creating tracees: fork with a child that only makes raw syscalls, so it is
//! safe even when the parent has threads.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use libc::pid_t;
use nix::errno::Errno;

/// A child forked and waiting for its parent's go-ahead.
pub struct Child {
    pub pid: pid_t,
    /// Closing this lets the child go on.
    go: Option<OwnedFd>,
    /// Becomes readable with an errno if exec fails; EOF when exec succeeded.
    exec_err: Option<OwnedFd>,
}

impl Child {
    /// Let the child continue (call after seizing it).
    pub fn release(&mut self) {
        self.go = None;
    }

    /// After release: Err(errno) if the child's execve failed.
    pub fn exec_result(&mut self) -> Result<(), Errno> {
        let Some(fd) = self.exec_err.take() else {
            return Ok(());
        };
        let mut buf = [0u8; 4];
        let n = nix::unistd::read(fd.as_raw_fd(), &mut buf).unwrap_or(0);
        if n == 4 {
            Err(Errno::from_raw(i32::from_ne_bytes(buf)))
        } else {
            Ok(())
        }
    }
}

fn pipe_cloexec() -> Result<(OwnedFd, OwnedFd), Errno> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
}

/// What a child does between its release and execve (record/replay).
#[derive(Debug, Clone, Default)]
pub struct PreExec {
    /// A seccomp-bpf program (raw `struct sock_filter` array) to install.
    pub seccomp: Option<Vec<u8>>,
    /// Make rdtsc/rdtscp fault (PR_SET_TSC, PR_TSC_SIGSEGV) so a tracer can
    /// record their values.
    pub notsc: bool,
    /// Run only on this CPU (what CPUID reports depends on the CPU).
    pub cpu: Option<usize>,
    /// Variables set in the program's environment (over rewind's own).
    pub env: Vec<(String, String)>,
}

/// Fork a child that waits until released, then execs `path` with `argv`
/// and `envp`. Everything the child needs is prepared before fork.
pub fn spawn_waiting(path: &CString, argv: &[CString], envp: &[CString]) -> Result<Child, Errno> {
    spawn_waiting_with(path, argv, envp, &PreExec::default())
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const u8,
}

/// `spawn_waiting`, with `pre` applied in the child right before execve.
pub fn spawn_waiting_with(
    path: &CString,
    argv: &[CString],
    envp: &[CString],
    pre: &PreExec,
) -> Result<Child, Errno> {
    let fprog = pre.seccomp.as_ref().map(|f| SockFprog {
        len: (f.len() / 8) as u16,
        filter: f.as_ptr(),
    });
    let fprog_ptr = fprog
        .as_ref()
        .map(|f| f as *const SockFprog)
        .unwrap_or(std::ptr::null());
    let notsc = pre.notsc;
    let root = nix::unistd::geteuid().is_root();
    let cpuset = pre.cpu.map(|cpu| {
        // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: CPU_SET writes inside `set` for cpu < CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu.min(libc::CPU_SETSIZE as usize - 1), &mut set) };
        set
    });
    let (go_r, go_w) = pipe_cloexec()?;
    let (err_r, err_w) = pipe_cloexec()?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    let (go_r_fd, go_w_fd, err_r_fd, err_w_fd) = (
        go_r.as_raw_fd(),
        go_w.as_raw_fd(),
        err_r.as_raw_fd(),
        err_w.as_raw_fd(),
    );
    // SAFETY: the child only makes raw syscalls (close, sigaction,
    // sigprocmask, sigaltstack, read, prctl, seccomp, execve, write, _exit) on data prepared before fork, so it never touches a lock another
    // thread of the parent may hold.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Errno::last());
    }
    if pid == 0 {
        // SAFETY: raw syscalls on valid fds and pointers prepared above.
        unsafe {
            libc::close(go_w_fd);
            libc::close(err_r_fd);
            // The program starts with default dispositions for what rewind
            // ignores and with nothing blocked (rewind blocks SIGCHLD).
            for sig in [libc::SIGPIPE, libc::SIGINT, libc::SIGQUIT] {
                libc::signal(sig, libc::SIG_DFL);
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            // Nor with rewind's alternate signal stack (Rust's runtime
            // gives threads one): disabled, as a restored process has it,
            // so signal frames of a recording and its replay agree
            // (uc_stack.ss_flags).
            let off = libc::stack_t {
                ss_sp: std::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            libc::sigaltstack(&off, std::ptr::null_mut());
            let mut b = 0u8;
            while libc::read(go_r_fd, &mut b as *mut u8 as *mut libc::c_void, 1) != 0 {
                if *libc::__errno_location() != libc::EINTR {
                    break;
                }
            }
            if notsc {
                libc::prctl(libc::PR_SET_TSC, libc::PR_TSC_SIGSEGV, 0, 0, 0);
            }
            if let Some(set) = &cpuset {
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set);
            }
            if !fprog_ptr.is_null() {
                if !root {
                    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                }
                // SECCOMP_SET_MODE_FILTER = 1
                if libc::syscall(libc::SYS_seccomp, 1, 0, fprog_ptr) != 0 {
                    let e = (*libc::__errno_location()).to_ne_bytes();
                    libc::write(err_w_fd, e.as_ptr() as *const libc::c_void, 4);
                    libc::_exit(127);
                }
            }
            libc::execve(path.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr());
            let e = (*libc::__errno_location()).to_ne_bytes();
            libc::write(err_w_fd, e.as_ptr() as *const libc::c_void, 4);
            libc::_exit(127);
        }
    }
    drop(go_r);
    drop(err_w);
    Ok(Child {
        pid,
        go: Some(go_w),
        exec_err: Some(err_r),
    })
}

/// `struct clone_args` of clone3(2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Fork a husk for restart: a child that sleeps in pause() forever, to be
/// seized, emptied and refilled by injected syscalls. With `want_pid`, the
/// child gets that pid if it is free and we may choose it (clone3 set_tid,
/// CAP_CHECKPOINT_RESTORE); otherwise any pid.
pub fn spawn_husk(want_pid: Option<pid_t>) -> Result<pid_t, Errno> {
    let pid = match want_pid {
        Some(p) => {
            let tids = [p];
            let args = CloneArgs {
                exit_signal: libc::SIGCHLD as u64,
                set_tid: tids.as_ptr() as u64,
                set_tid_size: 1,
                ..Default::default()
            };
            // SAFETY: clone3 without CLONE_VM is a fork; args and tids live
            // across the call; the child only calls pause() below.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_clone3,
                    &args as *const CloneArgs,
                    std::mem::size_of::<CloneArgs>(),
                )
            };
            if r < 0 {
                // SAFETY: as for fork below.
                unsafe { libc::fork() }
            } else {
                r as pid_t
            }
        }
        // SAFETY: the child only calls pause() in a loop (a raw syscall).
        None => unsafe { libc::fork() },
    };
    if pid < 0 {
        return Err(Errno::last());
    }
    if pid == 0 {
        loop {
            // SAFETY: pause takes no arguments.
            unsafe { libc::pause() };
        }
    }
    Ok(pid)
}

/// Block `signals` in the calling thread (before creating a signalfd for them).
pub fn block_signals(signals: &[i32]) -> Result<(), Errno> {
    let mut set = nix::sys::signal::SigSet::empty();
    for &s in signals {
        set.add(nix::sys::signal::Signal::try_from(s)?);
    }
    set.thread_block()
}

/// getrlimit of another process.
pub fn prlimit_get(pid: pid_t, resource: u32) -> Result<(u64, u64), Errno> {
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: new_limit is null (read only); old is a valid out-pointer.
    let ret = unsafe {
        libc::prlimit64(
            pid,
            resource as libc::__rlimit_resource_t,
            std::ptr::null(),
            &mut old,
        )
    };
    if ret != 0 {
        return Err(Errno::last());
    }
    Ok((old.rlim_cur, old.rlim_max))
}

/// setrlimit of another process.
pub fn prlimit_set(pid: pid_t, resource: u32, cur: u64, max: u64) -> Result<(), Errno> {
    let new = libc::rlimit64 {
        rlim_cur: cur,
        rlim_max: max,
    };
    // SAFETY: new is valid for reading; old is null.
    let ret = unsafe {
        libc::prlimit64(
            pid,
            resource as libc::__rlimit_resource_t,
            &new,
            std::ptr::null_mut(),
        )
    };
    if ret != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Send a signal to one thread of a process.
pub fn tgkill(pid: pid_t, tid: pid_t, sig: i32) -> Result<(), Errno> {
    // SAFETY: plain syscall with integer arguments.
    let ret = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) };
    if ret != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Send a signal to a process.
pub fn kill(pid: pid_t, sig: i32) -> Result<(), Errno> {
    // SAFETY: plain syscall with integer arguments.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `rewind launch`/`restart` leave Ctrl-C and Ctrl-\ to the program, which
/// gets them from the terminal too: the session ends when the program does.
pub fn ignore_terminal_signals() {
    for sig in [libc::SIGINT, libc::SIGQUIT] {
        // SAFETY: SIG_IGN installs no handler code.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
}

/// A copy, in this process, of descriptor `fd` of process `pid`
/// (pidfd_open + pidfd_getfd; the caller must be allowed to ptrace `pid`).
pub fn pidfd_getfd(pid: pid_t, fd: i32) -> Result<OwnedFd, Errno> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes plain integers and returns a new descriptor
    // or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: pidfd is a descriptor we own, just returned by the kernel.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd takes plain integers and returns a new descriptor
    // or -1.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        return Err(Errno::last());
    }
    // SAFETY: copy is a descriptor we own, just returned by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(copy as i32) })
}

/// `struct kcmp_epoll_slot` of `linux/kcmp.h`.
#[repr(C)]
struct KcmpEpollSlot {
    efd: u32,
    tfd: u32,
    toff: u32,
}

/// `KCMP_EPOLL_TFD` of `linux/kcmp.h`.
const KCMP_EPOLL_TFD: libc::c_int = 7;

/// Whether descriptor `fd` of `pid` is the file that epoll `epfd` (of the
/// same process) watches as its `toff`-th registration under number
/// `tfd` (`kcmp(KCMP_EPOLL_TFD)`). A watch outlives the descriptor it was
/// added through while another one holds the file, so `tfd` may be closed
/// or name another file by now. `ENOENT`: no such watch; `EBADF`: `fd`
/// is not open; `ENOSYS`: a kernel without kcmp.
pub fn epoll_watches_file(
    pid: pid_t,
    fd: i32,
    epfd: i32,
    tfd: i32,
    toff: u32,
) -> Result<bool, Errno> {
    let slot = KcmpEpollSlot {
        efd: epfd as u32,
        tfd: tfd as u32,
        toff,
    };
    // SAFETY: kcmp reads the slot (a live, properly laid out struct of
    // ours) and compares kernel objects; it writes no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            pid,
            KCMP_EPOLL_TFD,
            fd as libc::c_ulong,
            &slot as *const KcmpEpollSlot as libc::c_ulong,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(r == 0)
}
