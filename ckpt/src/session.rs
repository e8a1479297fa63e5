//! A session keeps one program running under the engine: `rewind launch`
//! starts one, `rewind restart` resumes one from an image. Its event loop
//! waits on the program (SIGCHLD through a signalfd), the control socket and
//! the periodic checkpoint timer.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libc::pid_t;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use crate::capture::{self, CaptureEnv, Checkpoint};
use crate::control::{self, ControlSocket, Request, Response, Status};
use crate::plugin::{Plugin, StdioIds, SyscallAction, SyscallCtx};
use crate::restore::{self, RestartOptions};
use crate::sys::process::PreExec;
use crate::sys::ptrace::{self, Stop, PTRACE_EVENT_STOP};
use crate::tracee::{self, resume_passenger, Thread, ThreadStop, Tracee};
use crate::vids::VirtualIds;
use crate::Error;

mod coord;

/// How a session is set up (shared by launch and restart).
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    pub ckpt_dir: PathBuf,
    /// Take a checkpoint every `interval`.
    pub interval: Option<Duration>,
    pub plugins: Vec<String>,
    /// The control socket's path, if not the default one of `ckpt_dir`
    /// (sessions of one coordinator may share a checkpoint directory).
    pub control_socket: Option<PathBuf>,
}

pub struct Session {
    pub tracee: Tracee,
    plugins: Vec<Box<dyn Plugin>>,
    pub vids: VirtualIds,
    stdio: StdioIds,
    vppid: i32,
    argv: Vec<String>,
    prog: String,
    restarted: bool,
    opts: SessionOptions,
    pub images: Vec<PathBuf>,
    last_checkpoint_ms: Option<f64>,
    control: Option<ControlSocket>,
    /// Set once the program is gone: its exit code as a shell reports it.
    exit: Option<i32>,
    detached: bool,
    coordinator: Option<crate::coordinator::link::CoordinatorLink>,
}

/// Find `prog` like execvp does.
pub fn resolve_program(prog: &str) -> Result<PathBuf, Error> {
    let candidate = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        if candidate(&p) {
            return Ok(p);
        }
        return Err(Error::Usage(format!("no such program: {prog}")));
    }
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    path.split(':')
        .map(|d| Path::new(if d.is_empty() { "." } else { d }).join(prog))
        .find(|p| candidate(p))
        .ok_or_else(|| Error::Usage(format!("no such program: {prog} (not found in PATH)")))
}

/// Start `argv` (found like execvp does) as a tracee seized before exec,
/// with `pre` applied in the child; returns at the PTRACE_EVENT_EXEC stop
/// (the program's first instruction is next) with its pid and path.
pub fn spawn_traced(
    argv: &[String],
    pre: &PreExec,
    options: libc::c_int,
) -> Result<(pid_t, PathBuf), Error> {
    let prog = argv
        .first()
        .ok_or_else(|| Error::Usage("no program given".into()))?;
    let path = resolve_program(prog)?;
    let c_path = cstring(&path.to_string_lossy())?;
    let c_argv = argv
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<Vec<_>, _>>()?;
    let c_env = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            CString::new(kv).map_err(|_| Error::Usage("environment contains a NUL byte".into()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut child = crate::sys::process::spawn_waiting_with(&c_path, &c_argv, &c_env, pre)
        .map_err(|e| Error::Tracee(format!("fork: {e}")))?;
    let pid = child.pid;
    if let Err(e) = ptrace::seize(pid, options) {
        let _ = crate::sys::process::kill(pid, libc::SIGKILL);
        return Err(Error::ptrace("PTRACE_SEIZE", pid, e));
    }
    child.release();
    // Until exec: the PTRACE_EVENT_EXEC stop, or the child's death.
    loop {
        match ptrace::wait(pid, false).map_err(|e| Error::ptrace("waitpid", pid, e))? {
            Some((_, Stop::Event(libc::PTRACE_EVENT_EXEC, _))) => return Ok((pid, path)),
            Some((_, Stop::Exited(_) | Stop::Killed(_))) => {
                let why = child
                    .exec_result()
                    .err()
                    .map(|e| e.desc().to_string())
                    .unwrap_or_default();
                return Err(Error::Usage(format!("cannot run {prog}: {why}")));
            }
            Some((_, Stop::Signal(sig))) => {
                ptrace::cont(pid, sig).map_err(|e| Error::ptrace("PTRACE_CONT", pid, e))?
            }
            Some(_) => ptrace::cont(pid, 0).map_err(|e| Error::ptrace("PTRACE_CONT", pid, e))?,
            None => {}
        }
    }
}

fn cstring(s: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::Usage(format!("argument contains a NUL byte: {s:?}")))
}

fn exit_code(stop: Stop) -> Option<i32> {
    match stop {
        Stop::Exited(c) => Some(c),
        Stop::Killed(s) => Some(128 + s),
        _ => None,
    }
}

impl Session {
    /// Start `argv` under the engine (`rewind launch`).
    pub fn launch(argv: &[String], opts: SessionOptions) -> Result<Session, Error> {
        // A missing program is reported before anything is set up.
        resolve_program(
            argv.first()
                .ok_or_else(|| Error::Usage("no program given".into()))?,
        )?;
        let plugins = crate::plugin::by_names(&opts.plugins)?;
        let control = ControlSocket::bind(&opts.control_path())?;
        // Plugins see their syscalls from the first instruction on (no
        // trampoline exists yet: nothing is exempt).
        let (traced, ioctls) = crate::plugin::traps(&plugins, false);
        let pre = PreExec {
            seccomp: (!traced.is_empty() || !ioctls.is_empty())
                .then(|| crate::seccomp::filter(&traced, &ioctls, 0)),
            ..PreExec::default()
        };
        // Children inherit the filter: follow them (as passengers) so their
        // trapped syscalls run instead of failing with ENOSYS.
        let options = if pre.seccomp.is_some() {
            ptrace::default_options() | libc::PTRACE_O_TRACEFORK | libc::PTRACE_O_TRACEVFORK
        } else {
            ptrace::default_options()
        };
        let (pid, path) = spawn_traced(argv, &pre, options)?;
        let mut tracee = Tracee::new(pid)?;
        if let Some(t) = tracee.threads.get_mut(&pid) {
            t.stop = ThreadStop::Interrupted;
        }
        tracee.resume_all()?;
        // The name the kernel gives the program (comm), as ps shows it.
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim_end().to_string())
            .unwrap_or_else(|_| {
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
        Ok(Session {
            tracee,
            plugins,
            vids: VirtualIds::default(),
            stdio: crate::fds::own_stdio(),
            vppid: std::process::id() as i32,
            argv: argv.to_vec(),
            prog: name,
            restarted: false,
            opts,
            images: Vec::new(),
            last_checkpoint_ms: None,
            control: Some(control),
            exit: None,
            detached: false,
            coordinator: None,
        })
    }

    /// Bring back the program of an image (`rewind restart`).
    pub fn restart(
        image: &Path,
        opts: SessionOptions,
        ropts: &RestartOptions,
    ) -> Result<(Session, Vec<String>), Error> {
        let mut plugins = crate::plugin::by_names(&opts.plugins)?;
        let control = ControlSocket::bind(&opts.control_path())?;
        let restored = restore::restart(image, &mut plugins, ropts)?;
        tracing::info!(
            "restored {} ({} threads) in {:.1} ms",
            image.display(),
            restored.state.threads.len(),
            restored.millis
        );
        let prog = restored
            .state
            .threads
            .first()
            .map(|t| t.comm.clone())
            .unwrap_or_default();
        let mut s = Session {
            tracee: restored.tracee,
            plugins,
            vids: restored.vids,
            stdio: crate::fds::own_stdio(),
            vppid: restored.state.vppid,
            argv: restored.state.cmdline.clone(),
            prog,
            restarted: true,
            opts,
            images: Vec::new(),
            last_checkpoint_ms: None,
            control: Some(control),
            exit: None,
            detached: false,
            coordinator: None,
        };
        let (traced, ioctls) = crate::plugin::traps(&s.plugins, !s.vids.is_identity());
        if !traced.is_empty() || !ioctls.is_empty() {
            // Children inherit the filter: follow them.
            let opts =
                ptrace::default_options() | libc::PTRACE_O_TRACEFORK | libc::PTRACE_O_TRACEVFORK;
            for &tid in s.tracee.threads.keys() {
                ptrace::setoptions(tid, opts)
                    .map_err(|e| Error::ptrace("PTRACE_SETOPTIONS", tid, e))?;
            }
        }
        s.tracee.resume_all()?;
        Ok((s, restored.warnings))
    }

    /// Where the next image of this program goes.
    pub fn image_path(&self) -> PathBuf {
        let name: String = self
            .prog
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.opts.ckpt_dir.join(format!(
            "ckpt_{name}_{}.rwd",
            self.vids.to_virtual(self.tracee.pid)
        ))
    }

    /// Stop the program, write an image, then resume it (or kill it).
    pub fn checkpoint(&mut self, kill: bool) -> Result<Checkpoint, Error> {
        if self.exit.is_some() {
            return Err(Error::Gone("the program has already exited".into()));
        }
        let stopped = self.stop_program();
        if let Err(e) = stopped {
            self.reap_if_gone();
            return Err(e);
        }
        tracing::debug!("all threads stopped");
        let result = self.capture_stopped();
        if kill {
            self.kill();
        } else {
            self.tracee.resume_all()?;
        }
        result
    }

    /// Write an image of the program, whose threads are all stopped; they
    /// stay stopped.
    fn capture_stopped(&mut self) -> Result<Checkpoint, Error> {
        let path = self.image_path();
        let env = CaptureEnv {
            stdio: &self.stdio,
            vids: &self.vids,
            vppid: self.vppid,
        };
        let ckpt = capture::checkpoint(&mut self.tracee, &mut self.plugins, &env, &path)?;
        tracing::info!(
            "checkpoint {} written in {:.1} ms ({} bytes)",
            ckpt.stats.path.display(),
            ckpt.millis,
            ckpt.stats.file_bytes
        );
        self.last_checkpoint_ms = Some(ckpt.millis);
        if !self.images.contains(&path) {
            self.images.push(path);
        }
        Ok(ckpt)
    }

    /// Stop every thread of the program; stops met on the way (new threads,
    /// trapped syscalls, children under the filter) are handled as usual.
    fn stop_program(&mut self) -> Result<(), Error> {
        let (plugins, vids) = (&mut self.plugins, &self.vids);
        tracee::stop_all(&mut self.tracee, |t, tid, stop| {
            if !t.owns(tid) {
                resume_passenger(tid, stop);
                return Ok(());
            }
            handle_other_stop(t, plugins, vids, tid, stop).map(drop)
        })
    }

    /// Kill the program and wait until it is gone.
    pub fn kill(&mut self) {
        let _ = crate::sys::process::kill(self.tracee.pid, libc::SIGKILL);
        while self.exit.is_none() {
            match ptrace::wait(-1, false) {
                Ok(Some((tid, stop))) if tid == self.tracee.pid => self.exit = exit_code(stop),
                Ok(_) => {}
                Err(_) => self.exit = Some(128 + libc::SIGKILL),
            }
        }
    }

    fn reap_if_gone(&mut self) {
        if let Ok(Some((_, stop))) = ptrace::wait(self.tracee.pid, true) {
            self.exit = exit_code(stop);
        }
        if self.exit.is_none() && std::fs::metadata(format!("/proc/{}", self.tracee.pid)).is_err() {
            self.exit = Some(0);
        }
    }

    pub fn status(&self) -> Status {
        Status {
            program: self.prog.clone(),
            argv: self.argv.clone(),
            pid: self.vids.to_virtual(self.tracee.pid),
            real_pid: self.tracee.pid,
            threads: self
                .tracee
                .threads
                .keys()
                .map(|&t| self.vids.to_virtual(t))
                .collect(),
            ckpt_dir: self.opts.ckpt_dir.display().to_string(),
            images: self
                .images
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            restarted: self.restarted,
            last_checkpoint_ms: self.last_checkpoint_ms,
        }
    }

    /// Run until the program ends; returns its exit code as a shell sees it
    /// (128 + signal when killed).
    pub fn run(&mut self) -> Result<i32, Error> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block()
            .map_err(|e| Error::Tracee(format!("sigprocmask: {e}")))?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| Error::Tracee(format!("signalfd: {e}")))?;
        let timer = match self.opts.interval {
            Some(d) if !d.is_zero() => {
                let t = TimerFd::new(
                    ClockId::CLOCK_MONOTONIC,
                    TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
                )
                .map_err(|e| Error::Tracee(format!("timerfd: {e}")))?;
                t.set(
                    Expiration::Interval(TimeSpec::from_duration(d)),
                    TimerSetTimeFlags::empty(),
                )
                .map_err(|e| Error::Tracee(format!("timerfd: {e}")))?;
                Some(t)
            }
            _ => None,
        };
        // Stops may have queued before the signalfd existed.
        self.drain_stops()?;
        while self.exit.is_none() && !self.detached {
            // While the coordinator holds the program stopped, local
            // requests and periodic checkpoints wait.
            let held = self.held_by_coordinator();
            let mut fds = vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
            fn at<'a>(fds: &mut Vec<PollFd<'a>>, fd: std::os::fd::BorrowedFd<'a>) -> Option<usize> {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
                Some(fds.len() - 1)
            }
            let control_at = match &self.control {
                Some(c) if !held => at(&mut fds, c.listener.as_fd()),
                _ => None,
            };
            let coordinator_at = match &self.coordinator {
                Some(c) => at(&mut fds, c.as_fd()),
                None => None,
            };
            let timer_at = match &timer {
                Some(t) => at(&mut fds, t.as_fd()),
                None => None,
            };
            match nix::poll::poll(&mut fds, PollTimeout::from(1000u16)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(Error::Tracee(format!("poll: {e}"))),
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            let ready = |at: Option<usize>| at.and_then(|i| ready.get(i).copied()) == Some(true);
            // Always look for stops: a lost SIGCHLD must not hang us.
            while let Ok(Some(_)) = sigfd.read_signal() {}
            self.drain_stops()?;
            if self.exit.is_some() {
                break;
            }
            if ready(coordinator_at) {
                self.serve_coordinator();
            }
            self.check_coordinator_lease();
            if ready(control_at) {
                self.serve_control();
            }
            if let Some(t) = &timer {
                if ready(timer_at) {
                    let _ = t.wait();
                    if !held {
                        if let Err(e) = self.checkpoint(false) {
                            tracing::warn!("periodic checkpoint failed: {e}");
                        }
                    }
                }
            }
        }
        if self.detached {
            return Ok(0);
        }
        Ok(self.exit.unwrap_or(0))
    }

    fn serve_control(&mut self) {
        let Some(control) = &self.control else { return };
        let Some((req, stream)) = control.accept() else {
            return;
        };
        let resp = match req {
            Err(e) => Response {
                ok: false,
                error: Some(e),
                ..Default::default()
            },
            Ok(Request::Status) => Response {
                ok: true,
                status: Some(self.status()),
                ..Default::default()
            },
            Ok(Request::Checkpoint { kill }) => match self.checkpoint(kill) {
                Ok(c) => Response {
                    ok: true,
                    image: Some(c.stats.path.display().to_string()),
                    warnings: c.warnings,
                    ..Default::default()
                },
                Err(e) => Response {
                    ok: false,
                    error: Some(e.to_string()),
                    ..Default::default()
                },
            },
            Ok(Request::Kill) => {
                self.kill();
                Response {
                    ok: true,
                    ..Default::default()
                }
            }
            Ok(Request::Quit) => match self.detach() {
                Ok(()) => Response {
                    ok: true,
                    ..Default::default()
                },
                Err(e) => Response {
                    ok: false,
                    error: Some(e.to_string()),
                    ..Default::default()
                },
            },
        };
        control::respond(stream, &resp);
    }

    /// Let the program run on without rewind.
    pub fn detach(&mut self) -> Result<(), Error> {
        if !self.vids.is_identity() {
            return Err(Error::Usage(
                "a restarted program needs rewind to translate its process ids; use --kill to end it".into(),
            ));
        }
        self.stop_program()?;
        for t in self.tracee.threads.values() {
            let sig = match t.stop {
                ThreadStop::Signal(s) => s,
                _ => 0,
            };
            let _ = ptrace::detach(t.tid, sig);
        }
        self.detached = true;
        Ok(())
    }

    /// Handle every stop the kernel has queued, without blocking.
    fn drain_stops(&mut self) -> Result<(), Error> {
        loop {
            let (tid, stop) = match ptrace::wait(-1, true) {
                Ok(Some(x)) => x,
                Ok(None) => return Ok(()),
                Err(nix::errno::Errno::ECHILD) => {
                    self.exit.get_or_insert(0);
                    return Ok(());
                }
                Err(e) => return Err(Error::ptrace("waitpid", self.tracee.pid, e)),
            };
            if tid == self.tracee.pid {
                if let Some(code) = exit_code(stop) {
                    self.exit = Some(code);
                    return Ok(());
                }
            }
            if !self.tracee.owns(tid) {
                // A child forked under the translation filter: followed
                // only so its trapped syscalls don't fail with ENOSYS.
                resume_passenger(tid, stop);
                continue;
            }
            match stop {
                Stop::Exited(_) | Stop::Killed(_) => {
                    self.tracee.threads.remove(&tid);
                    self.vids.remove_real(tid);
                }
                Stop::Signal(sig) => {
                    self.translate_siginfo(tid);
                    let _ = ptrace::cont(tid, sig);
                }
                Stop::Event(PTRACE_EVENT_STOP, sig) => {
                    self.tracee
                        .threads
                        .entry(tid)
                        .or_insert_with(|| Thread::new(tid));
                    if tracee::is_group_stop(sig) {
                        // A group-stop: stay stopped until SIGCONT.
                        let _ = ptrace::listen(tid);
                    } else {
                        let _ = ptrace::cont(tid, 0);
                    }
                }
                _ => {
                    handle_other_stop(&mut self.tracee, &mut self.plugins, &self.vids, tid, stop)?;
                }
            }
        }
    }

    /// The program sees virtual pids in the siginfo of the signals it gets.
    fn translate_siginfo(&self, tid: pid_t) {
        if self.vids.is_identity() {
            return;
        }
        if let Ok(mut info) = ptrace::getsiginfo(tid) {
            let code = i32::from_le_bytes([info[8], info[9], info[10], info[11]]);
            // si_pid sits at offset 16 for signals sent by kill/tgkill/sigqueue
            // (si_code <= 0) and for SIGCHLD.
            let signo = i32::from_le_bytes([info[0], info[1], info[2], info[3]]);
            if code <= 0 || signo == libc::SIGCHLD {
                let real = i32::from_le_bytes([info[16], info[17], info[18], info[19]]);
                let virt = self.vids.to_virtual(real);
                if virt != real {
                    info[16..20].copy_from_slice(&virt.to_le_bytes());
                    let _ = ptrace::setsiginfo(tid, &info);
                }
            }
        }
    }
}

/// Stops other than exits, plain signals and PTRACE_EVENT_STOP: new
/// threads, exec, and syscalls trapped by the seccomp filter. The thread is
/// resumed. Returns whether it was handled.
fn handle_other_stop(
    tracee: &mut Tracee,
    plugins: &mut [Box<dyn Plugin>],
    vids: &VirtualIds,
    tid: pid_t,
    stop: Stop,
) -> Result<bool, Error> {
    match stop {
        Stop::Event(libc::PTRACE_EVENT_CLONE, _) => {
            if let Ok(new) = ptrace::geteventmsg(tid) {
                let new = new as pid_t;
                tracee
                    .threads
                    .entry(new)
                    .or_insert_with(|| Thread::new(new));
            }
            let _ = ptrace::cont(tid, 0);
        }
        Stop::Event(libc::PTRACE_EVENT_EXEC, _) => {
            // Other threads are gone; the leader runs the new program.
            let pid = tracee.pid;
            tracee.threads.retain(|&t, _| t == pid);
            tracee.reopen_mem()?;
            let _ = ptrace::cont(tid, 0);
        }
        Stop::Event(libc::PTRACE_EVENT_SECCOMP, _) => {
            let mut regs =
                ptrace::getregs(tid).map_err(|e| Error::ptrace("PTRACE_GETREGS", tid, e))?;
            let nr = regs.orig_rax as i64;
            let mut action = SyscallAction::Run;
            let mut watcher = None;
            for (i, p) in plugins.iter_mut().enumerate() {
                if !wants(p.as_ref(), nr, regs.rsi) {
                    continue;
                }
                let mut ctx = SyscallCtx {
                    tracee,
                    tid,
                    regs: &mut regs,
                    vids,
                    scratch: None,
                };
                action = p.on_syscall(&mut ctx)?;
                if action == SyscallAction::RunWatchExit {
                    watcher = Some(i);
                    break;
                }
                if action != SyscallAction::Run {
                    break;
                }
            }
            if let SyscallAction::Emulate(v) = action {
                regs.orig_rax = u64::MAX;
                regs.rax = v as u64;
            }
            ptrace::setregs(tid, &regs).map_err(|e| Error::ptrace("PTRACE_SETREGS", tid, e))?;
            match watcher {
                Some(i) => {
                    if let Some(t) = tracee.threads.get_mut(&tid) {
                        t.exit_watcher = Some(i);
                    }
                    let _ = ptrace::syscall(tid, 0);
                }
                None => {
                    let _ = ptrace::cont(tid, 0);
                }
            }
        }
        Stop::Syscall => {
            // The exit of a syscall a plugin asked to see.
            let watcher = tracee
                .threads
                .get_mut(&tid)
                .and_then(|t| t.exit_watcher.take());
            if let Some(p) = watcher.and_then(|i| plugins.get_mut(i)) {
                let mut regs =
                    ptrace::getregs(tid).map_err(|e| Error::ptrace("PTRACE_GETREGS", tid, e))?;
                let result = regs.rax as i64;
                let mut ctx = SyscallCtx {
                    tracee,
                    tid,
                    regs: &mut regs,
                    vids,
                    scratch: None,
                };
                p.on_syscall_exit(&mut ctx, result)?;
            }
            let _ = ptrace::cont(tid, 0);
        }
        Stop::Signal(sig) => {
            let _ = ptrace::cont(tid, sig);
        }
        _ => {
            let _ = ptrace::cont(tid, 0);
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether plugin `p` traps syscall `nr` (with `arg1`, an ioctl's request).
fn wants(p: &dyn Plugin, nr: i64, arg1: u64) -> bool {
    if p.syscalls().contains(&nr) {
        return true;
    }
    nr == libc::SYS_ioctl && {
        let req = arg1 as u32;
        p.ioctls()
            .iter()
            .any(|t| (req >> 8) as u8 == t.ty && !t.except.contains(&req))
    }
}
