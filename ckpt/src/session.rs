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

use crate::capture::{self, CaptureEnv, Checkpoint, MemoryMode, PendingImage};
use crate::control::{self, ControlSocket, Request, Response, Status};
use crate::plugin::{Plugin, StdioIds, SyscallAction, SyscallCtx};
use crate::restore::{self, RestartOptions};
use crate::sys::process::PreExec;
use crate::sys::ptrace::{self, Stop, PTRACE_EVENT_STOP};
use crate::tracee::{self, resume_passenger, Thread, ThreadStop, Tracee};

use crate::vids::VirtualIds;
use crate::Error;

mod coord;
mod writing;

use writing::{Waiter, Writing};

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
    /// Write images while the program is stopped, as `--kill` does,
    /// instead of from a copy-on-write copy while it runs on (forked
    /// checkpoints, `crate::forked`).
    pub write_stopped: bool,
}

pub struct Session {
    /// The program `launch` started (the root of the tree).
    pub tracee: Tracee,
    /// Every other process of the tree (its descendants), in the order
    /// they appeared.
    pub others: Vec<Tracee>,
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
    /// Children made by vfork that have not exec'd or exited yet: their
    /// parent cannot stop until they do, so a checkpoint lets them run to
    /// their exec first.
    vforked: std::collections::HashSet<pid_t>,
    coordinator: Option<crate::coordinator::link::CoordinatorLink>,
    /// The images of the last checkpoint, being written from copies of the
    /// program's processes while it runs on.
    writing: Option<Writing>,
    /// Those copies: processes traced here that must never be resumed.
    copies: std::collections::HashSet<pid_t>,
    /// The outcome of a checkpoint that nobody waited for yet (the
    /// coordinator asks for it with its resume or kill order).
    kept: Option<Result<Checkpoint, String>>,
    /// When the coordinator's suspend stopped the program.
    suspended_at: Option<std::time::Instant>,
    last_durable_ms: Option<f64>,
    /// The sockets of the last checkpoint, TCP ends in repair mode, until
    /// the program runs on (they leave it) or is killed (they close
    /// silently).
    frozen: Option<crate::sockets::Census>,
    /// Restarted: sockets rebuilt for the program whose TCP ends wait for
    /// other programs of a coordinator's computation (the program stays
    /// stopped until they are connected).
    awaiting: Option<crate::sockets::Rebuilt>,
    /// Restarted with connections that may move to this host's addresses:
    /// the addresses the program knows and the real ones (the address
    /// plugin's table).
    addresses: Option<std::sync::Arc<std::sync::Mutex<crate::sockets::addresses::AddressMap>>>,
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
        .filter(|(k, _)| {
            !pre.env
                .iter()
                .any(|(name, _)| k.as_os_str() == name.as_str())
        })
        .chain(pre.env.iter().map(|(k, v)| (k.into(), v.into())))
        .map(|(k, v): (std::ffi::OsString, std::ffi::OsString)| {
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

fn vfork_job_stop(tid: pid_t) -> Error {
    Error::Tracee(format!(
        "process {tid} is stopped by job control between vfork and exec: its parent cannot \
         stop until it goes on; continue it (fg, bg) and checkpoint again"
    ))
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
        // The children it forks are part of the session (process tree).
        let (pid, path) = spawn_traced(argv, &pre, crate::tree::options())?;
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
            others: Vec::new(),
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
            vforked: Default::default(),
            writing: None,
            copies: Default::default(),
            kept: None,
            suspended_at: None,
            last_durable_ms: None,
            frozen: None,
            awaiting: None,
            addresses: None,
        })
    }

    /// Bring back the program of an image (`rewind restart`), or a
    /// process tree from the images of its processes (the root first).
    pub fn restart(
        images: &[PathBuf],
        opts: SessionOptions,
        ropts: &RestartOptions,
    ) -> Result<(Session, Vec<String>), Error> {
        let mut plugins = crate::plugin::by_names(&opts.plugins)?;
        let control = ControlSocket::bind(&opts.control_path())?;
        if images.is_empty() {
            return Err(Error::Usage("give the image to restart".into()));
        }
        // Every socket of every image is made once, by rewind, before any
        // process takes its descriptors.
        let states = images
            .iter()
            .map(|i| crate::image::ImageReader::open(i).map(|r| r.state))
            .collect::<Result<Vec<_>, _>>()?;
        let mut sockets = crate::sockets::Rebuilt::make(&states.iter().collect::<Vec<_>>())?;
        // Connections to other programs may come back between other hosts'
        // addresses: the program keeps seeing its old ones.
        let addresses = crate::sockets::may_move(&states).then(|| {
            let map = std::sync::Arc::new(std::sync::Mutex::new(
                crate::sockets::addresses::AddressMap::default(),
            ));
            plugins.push(Box::new(crate::sockets::addresses::Addresses::new(
                map.clone(),
            )));
            map
        });
        let mut socket_warnings = sockets.take_warnings();
        // A restart brings back the program's System V and POSIX IPC
        // objects (see `shm` and `sysv`).
        let ropts = RestartOptions {
            recreate_ipc: true,
            sockets: Some(&sockets),
            ..ropts.clone()
        };
        let (mut restored, mut warnings) = match images {
            [image] => (
                vec![restore::restart(image, &mut plugins, &ropts)?],
                Vec::new(),
            ),
            _ => crate::tree::restart_tree(images, &mut plugins, &ropts)?,
        };
        drop(ropts);
        // Every process holds its sockets: connections inside the tree run
        // again.
        socket_warnings.extend(sockets.release());
        warnings.extend(socket_warnings);
        // Processes stopped by job control stay stopped until SIGCONT.
        for r in restored.iter_mut() {
            crate::jobs::restore(&mut r.tracee, &r.state);
        }
        for (r, image) in restored.iter().zip(images) {
            tracing::info!(
                "restored {} ({} threads) in {:.1} ms",
                image.display(),
                r.state.threads.len(),
                r.millis
            );
        }
        let first = restored.remove(0);
        let prog = first
            .state
            .threads
            .first()
            .map(|t| t.comm.clone())
            .unwrap_or_default();
        let mut vids = first.vids;
        let mut others = Vec::new();
        warnings.extend(first.warnings);
        for r in restored {
            for (v, real) in r.vids.pairs() {
                vids.insert(v, real);
            }
            warnings.extend(r.warnings);
            others.push(r.tracee);
        }
        let mut s = Session {
            tracee: first.tracee,
            others,
            plugins,
            vids,
            stdio: crate::fds::own_stdio(),
            vppid: first.state.vppid,
            argv: first.state.cmdline.clone(),
            prog,
            restarted: true,
            opts,
            images: Vec::new(),
            last_checkpoint_ms: None,
            control: Some(control),
            exit: None,
            detached: false,
            coordinator: None,
            vforked: Default::default(),
            writing: None,
            copies: Default::default(),
            kept: None,
            suspended_at: None,
            last_durable_ms: None,
            frozen: None,
            awaiting: sockets.is_awaiting().then_some(sockets),
            addresses,
        };
        // Children are followed, as at launch.
        for t in s.procs() {
            for &tid in t.threads.keys() {
                ptrace::setoptions(tid, crate::tree::options())
                    .map_err(|e| Error::ptrace("PTRACE_SETOPTIONS", tid, e))?;
            }
        }
        // A program whose connections wait for other programs' restarts
        // stays stopped until they are made (see `reconnect`).
        if s.awaiting.is_none() {
            for t in s.procs_mut() {
                t.resume_all()?;
            }
        }
        Ok((s, warnings))
    }

    /// Every process of the session, the root first.
    pub fn procs(&self) -> impl Iterator<Item = &Tracee> {
        std::iter::once(&self.tracee).chain(self.others.iter())
    }

    fn procs_mut(&mut self) -> impl Iterator<Item = &mut Tracee> {
        std::iter::once(&mut self.tracee).chain(self.others.iter_mut())
    }

    /// Resume every stopped thread of every process (its sockets leave
    /// the repair mode a checkpoint put them in first).
    fn resume_tree(&mut self) -> Result<(), Error> {
        if let Some(mut census) = self.frozen.take() {
            census.thaw();
        }
        // Restarted, connections to other programs go now (made first if
        // no coordinator said how).
        if let Some(mut sockets) = self.awaiting.take() {
            sockets.reconnect(&std::collections::HashMap::new());
            for w in sockets.release() {
                tracing::warn!("{w}");
            }
        }
        for t in self.procs_mut() {
            t.resume_all()?;
        }
        Ok(())
    }

    /// The process (None: the root, Some(i): `others[i]`) `tid` belongs
    /// to, if it is one of ours.
    fn owner(&self, tid: pid_t) -> Option<Option<usize>> {
        if self.tracee.threads.contains_key(&tid) {
            return Some(None);
        }
        if let Some(i) = self
            .others
            .iter()
            .position(|t| t.threads.contains_key(&tid))
        {
            return Some(Some(i));
        }
        let tgid = tracee::tgid_of(tid)?;
        if tgid == self.tracee.pid {
            return Some(None);
        }
        self.others.iter().position(|t| t.pid == tgid).map(Some)
    }

    fn proc_mut(&mut self, which: Option<usize>) -> Option<&mut Tracee> {
        match which {
            None => Some(&mut self.tracee),
            Some(i) => self.others.get_mut(i),
        }
    }

    /// The process `tid` belongs to ([`Session::owner`]), adopting it if
    /// new; None (the stop resumed as a passenger's) if it is not ours.
    fn owner_or_adopt(&mut self, tid: pid_t, stop: Stop) -> Option<Option<usize>> {
        if self.copies.contains(&tid) {
            // A copy being written from: it stays stopped.
            return None;
        }
        let which = self.owner(tid).or_else(|| self.adopt(tid));
        if which.is_none() {
            resume_passenger(tid, stop);
        }
        which
    }

    /// A process we have not heard of, seen through one of its threads'
    /// stops (its fork event may still be queued): it joins the tree when
    /// it descends from it.
    fn adopt(&mut self, tid: pid_t) -> Option<Option<usize>> {
        let pid = tracee::tgid_of(tid)?;
        let t = Tracee::new(pid).ok()?;
        tracing::debug!("process {pid} joins the tree");
        self.others.push(t);
        let i = self.others.len() - 1;
        if let Some(t) = self.others.get_mut(i) {
            t.threads.entry(tid).or_insert_with(|| Thread::new(tid));
        }
        Some(Some(i))
    }

    /// A fork, vfork or clone event of `tid`: the new task is a thread of
    /// its process or a new process of the tree. Returns the new pid of a
    /// vfork.
    fn note_new_task(&mut self, tid: pid_t, stop: Stop) -> Option<pid_t> {
        let new = ptrace::geteventmsg(tid).ok()? as pid_t;
        if let Stop::Event(libc::PTRACE_EVENT_VFORK, _) = stop {
            self.vforked.insert(new);
        }
        self.note_new_task_of(new);
        matches!(stop, Stop::Event(libc::PTRACE_EVENT_VFORK, _)).then_some(new)
    }

    fn note_new_task_of(&mut self, new: pid_t) {
        match tracee::tgid_of(new) {
            Some(g) if g == new && !self.procs().any(|t| t.pid == new) => {
                self.adopt(new);
            }
            Some(g) if g == new => {}
            Some(_) => {
                if let Some(t) = self.owner(new).and_then(|w| self.proc_mut(w)) {
                    t.threads.entry(new).or_insert_with(|| Thread::new(new));
                }
            }
            None => {}
        }
    }

    /// Where the next image of this program goes.
    pub fn image_path(&self) -> PathBuf {
        crate::tree::image_name(
            &self.opts.ckpt_dir,
            &self.prog,
            self.vids.to_virtual(self.tracee.pid),
        )
    }

    /// Checkpoint the program (every process of its tree) and wait until
    /// its images are durable: stop it, capture it, let it run on while its
    /// images are written from copies of its processes (or, with `kill`,
    /// write them and kill it).
    pub fn checkpoint(&mut self, kill: bool) -> Result<Checkpoint, Error> {
        self.checkpoint_for(kill, Waiter::Keep);
        self.finish_writing();
        match self.kept.take() {
            Some(outcome) => outcome.map_err(Error::Tracee),
            None => Err(Error::Tracee("the checkpoint has no outcome".into())),
        }
    }

    /// [`Session::checkpoint`] whose outcome goes to `waiter` once the
    /// images are durable; the program runs on meanwhile.
    fn checkpoint_for(&mut self, kill: bool, waiter: Waiter) {
        let started = std::time::Instant::now();
        if self.exit.is_some() {
            return self.deliver(waiter, Err("the program has already exited".into()));
        }
        let stopped = self.stop_program();
        if let Err(e) = stopped {
            self.reap_if_gone();
            if self.exit.is_none() {
                let _ = self.resume_tree();
            }
            return self.deliver(waiter, Err(e.to_string()));
        }
        tracing::debug!("all threads stopped");
        // The previous checkpoint's images are finished first (nothing can
        // wait on rewind meanwhile: the program is stopped).
        self.finish_writing();
        let result = self.capture_stopped(self.memory_mode(kill), &Default::default());
        // Killed only once its images are durable: a failed checkpoint
        // leaves the program running.
        let released = if kill && result.is_ok() {
            self.kill();
            Ok(())
        } else {
            self.resume_tree()
        };
        let paused = started.elapsed().as_secs_f64() * 1e3;
        match (result, released) {
            (Ok(images), Ok(())) => self.start_writing(images, started, Some(paused), waiter),
            (Err(e), _) if kill => self.deliver(
                waiter,
                Err(format!("{e} (the program was not killed: it runs on)")),
            ),
            (Err(e), _) | (Ok(_), Err(e)) => self.deliver(waiter, Err(e.to_string())),
        }
    }

    /// How the images of a checkpoint are written: a program killed right
    /// after never runs on, so it stays stopped until they are durable (a
    /// failed write then leaves it alive).
    fn memory_mode(&self, kill: bool) -> MemoryMode {
        if kill || self.opts.write_stopped {
            MemoryMode::Stopped
        } else {
            MemoryMode::Forked
        }
    }

    /// Capture every process of the program, whose threads are all
    /// stopped; they stay stopped. The root's image comes first, with the
    /// warnings about sockets. With [`MemoryMode::Forked`] the images are
    /// still to be written.
    fn capture_stopped(
        &mut self,
        mode: MemoryMode,
        computation: &crate::sockets::Computation,
    ) -> Result<Vec<PendingImage>, Error> {
        let path = self.image_path();
        // The sockets of the whole tree, read once for every image: send
        // queues first (a coordinator's drain did it already), then the rest.
        let mut census = match self.frozen.take() {
            Some(c) => c,
            None => {
                let pids: Vec<pid_t> = self.procs().map(|t| t.pid).collect();
                let mut c = crate::sockets::Census::take(&pids)?;
                c.freeze(false);
                c
            }
        };
        if let Some(map) = self.addresses.as_ref().and_then(|m| m.lock().ok()) {
            census.show_addresses(map.shown());
        }
        census.capture(computation);
        let mut socket_warnings = census.take_warnings();
        // The ptys it made, read once (what is in flight is put back).
        let pids: Vec<pid_t> = self.procs().map(|t| t.pid).collect();
        let terminals = crate::pty::Census::take(&pids, &self.vids);
        // Kept until the program runs on or is killed.
        let census = &*self.frozen.insert(census);
        let mut terminals = terminals?;
        socket_warnings.extend(terminals.take_warnings());
        let env = CaptureEnv {
            stdio: &self.stdio,
            vids: &self.vids,
            vppid: self.vppid,
            terminals: Some(&terminals),
        };
        // Shared memory is stored once, by the first image that maps it.
        let mut tree = capture::TreeCapture::default();
        let mut images = vec![capture::capture_in_tree(
            &mut self.tracee,
            &mut self.plugins,
            &env,
            Some(census),
            &path,
            &mut tree,
            mode,
        )?];
        images[0].warnings.extend(socket_warnings);
        for t in self.others.iter_mut() {
            let ppid = ppid_of(t.pid).unwrap_or(0);
            let env = CaptureEnv {
                stdio: &self.stdio,
                vids: &self.vids,
                vppid: self.vids.to_virtual(ppid),
                terminals: Some(&terminals),
            };
            let comm = std::fs::read_to_string(format!("/proc/{}/comm", t.pid))
                .map(|c| c.trim_end().to_string())
                .unwrap_or_default();
            let p =
                crate::tree::image_name(&self.opts.ckpt_dir, &comm, self.vids.to_virtual(t.pid));
            images.push(capture::capture_in_tree(
                t,
                &mut self.plugins,
                &env,
                Some(census),
                &p,
                &mut tree,
                mode,
            )?);
        }
        Ok(images)
    }

    /// Stop every thread of every process of the program; stops met on
    /// the way (new threads and processes, trapped syscalls) are handled
    /// as usual.
    fn stop_program(&mut self) -> Result<(), Error> {
        // A vfork child stopped by job control will not exec: its parent
        // cannot be stopped until it is continued.
        if let Some(&tid) = self.vforked.iter().find(|&&v| {
            self.procs()
                .filter_map(|t| t.threads.get(&v))
                .any(|th| th.job_stop.is_some())
        }) {
            return Err(vfork_job_stop(self.vids.to_virtual(tid)));
        }
        for t in self.procs().filter(|t| !self.vforked.contains(&t.pid)) {
            for th in t.threads.values() {
                if th.stop == ThreadStop::Running {
                    match ptrace::interrupt(th.tid) {
                        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                        Err(e) => return Err(Error::ptrace("PTRACE_INTERRUPT", th.tid, e)),
                    }
                }
            }
        }
        while !self.procs().all(Tracee::all_stopped) {
            let Some((tid, stop)) = ptrace::wait(-1, false)
                .map_err(|e| Error::ptrace("waitpid", self.tracee.pid, e))?
            else {
                continue;
            };
            if let Stop::Exited(_) | Stop::Killed(_) = stop {
                if tid == self.tracee.pid {
                    self.exit = exit_code(stop);
                    return Err(Error::Gone("the program exited".into()));
                }
                self.task_gone(tid);
                continue;
            }
            let Some(which) = self.owner_or_adopt(tid, stop) else {
                continue;
            };
            match stop {
                Stop::Event(PTRACE_EVENT_STOP, sig)
                    if self.vforked.contains(&tid) && tracee::is_group_stop(sig) =>
                {
                    self.note_job_stop(which, tid, Some(sig));
                    let _ = ptrace::listen(tid);
                    return Err(vfork_job_stop(self.vids.to_virtual(tid)));
                }
                Stop::Event(PTRACE_EVENT_STOP, _) if self.vforked.contains(&tid) => {
                    // A vfork child runs on to its exec (or exit): its
                    // parent cannot stop before.
                    let _ = ptrace::cont(tid, 0);
                }
                Stop::Signal(sig) if self.vforked.contains(&tid) => {
                    // Delivered at once, for the same reason.
                    self.translate_siginfo(tid);
                    let _ = ptrace::cont(tid, sig);
                }
                Stop::Event(PTRACE_EVENT_STOP, sig) => {
                    if let Some(t) = self.proc_mut(which) {
                        let th = t.threads.entry(tid).or_insert_with(|| Thread::new(tid));
                        th.stop = ThreadStop::Interrupted;
                        // A thread in a job-control stop reports its signal.
                        th.job_stop = tracee::is_group_stop(sig).then_some(sig);
                    }
                }
                Stop::Event(libc::PTRACE_EVENT_EXEC, _) if self.vforked.remove(&tid) => {
                    self.other_stop(which, tid, stop)?;
                    // Its parent goes on (and stops); now it stops too.
                    let _ = ptrace::interrupt(tid);
                }
                Stop::Signal(sig) => {
                    let info = ptrace::getsiginfo(tid).ok();
                    if let Some(t) = self.proc_mut(which) {
                        let th = t.threads.entry(tid).or_insert_with(|| Thread::new(tid));
                        th.stop = ThreadStop::Signal(sig);
                        th.stop_siginfo = info;
                    }
                }
                Stop::Event(
                    libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE,
                    _,
                ) => {
                    if let Some(child) = self.note_new_task(tid, stop) {
                        // Its attach stop may have been taken for our
                        // interrupt already: let it run to its exec.
                        let stopped = self
                            .procs_mut()
                            .find(|t| t.pid == child)
                            .and_then(|t| t.threads.get_mut(&child))
                            .filter(|th| th.stop != ThreadStop::Running);
                        if let Some(th) = stopped {
                            th.stop = ThreadStop::Running;
                            let _ = ptrace::cont(child, 0);
                        }
                    }
                    let _ = ptrace::cont(tid, 0);
                }
                _ => self.other_stop(which, tid, stop)?,
            }
        }
        Ok(())
    }

    /// A thread or process of the tree ended (or a copy of one).
    fn task_gone(&mut self, tid: pid_t) {
        if self.copies.remove(&tid) {
            return;
        }
        self.vforked.remove(&tid);
        if let Some(i) = self.others.iter().position(|t| t.pid == tid) {
            let t = self.others.remove(i);
            // The leader's id stays known: its parent still reaps it by
            // that id (wait4's result is translated).
            for th in t.threads.keys().filter(|&&th| th != tid) {
                self.vids.remove_real(*th);
            }
            tracing::debug!("process {tid} of the tree ended");
            return;
        }
        for t in self.procs_mut() {
            t.threads.remove(&tid);
        }
        self.vids.remove_real(tid);
    }

    fn other_stop(&mut self, which: Option<usize>, tid: pid_t, stop: Stop) -> Result<(), Error> {
        let Session {
            tracee,
            others,
            plugins,
            vids,
            ..
        } = self;
        let t = match which {
            None => tracee,
            Some(i) => match others.get_mut(i) {
                Some(t) => t,
                None => {
                    resume_passenger(tid, stop);
                    return Ok(());
                }
            },
        };
        handle_other_stop(t, plugins, vids, tid, stop).map(drop)
    }

    /// Kill the program (its whole tree) and wait until it is gone.
    pub fn kill(&mut self) {
        // The root's children, orphaned by its death, come to rewind rather
        // than to init, so that kill_others reaps them at once (an init may
        // take seconds, and a restart right after wants their pids back).
        if !self.others.is_empty() {
            let _ = crate::sys::set_child_subreaper();
        }
        let _ = crate::sys::process::kill(self.tracee.pid, libc::SIGKILL);
        self.kill_others();
        while self.exit.is_none() {
            match ptrace::wait(-1, false) {
                Ok(Some((tid, stop))) if tid == self.tracee.pid => self.exit = exit_code(stop),
                Ok(_) => {}
                Err(_) => self.exit = Some(128 + libc::SIGKILL),
            }
        }
        // The program is gone: sockets left in repair mode by a checkpoint
        // close now without a word to their peers (restarts reuse their
        // addresses).
        self.frozen = None;
        self.awaiting = None;
    }

    /// Kill every process of the tree but the root, and reap them.
    fn kill_others(&mut self) {
        for t in &self.others {
            let _ = crate::sys::process::kill(t.pid, libc::SIGKILL);
        }
        let others = std::mem::take(&mut self.others);
        for t in &others {
            for &tid in t.threads.keys().filter(|&&x| x != t.pid) {
                tracee::wait_thread_gone(t.pid, tid);
            }
            // The leader's exit as its tracer sees it (its parent, if
            // alive, gets it too).
            loop {
                match ptrace::wait(t.pid, false) {
                    Ok(Some((_, Stop::Exited(_) | Stop::Killed(_)))) | Err(_) => break,
                    _ => {}
                }
            }
        }
        // Orphans are reaped by their new parent: rewind (see `kill`), or
        // init: wait (a little) until their pids are free, so that a restart
        // right after can take them back.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        for t in &others {
            while std::fs::metadata(format!("/proc/{}", t.pid)).is_ok()
                && std::time::Instant::now() < deadline
            {
                // Ours to reap if it was handed to us (a no-op otherwise).
                let _ = ptrace::wait(t.pid, true);
                std::thread::sleep(Duration::from_millis(2));
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
            processes: self.procs().map(|t| self.vids.to_virtual(t.pid)).collect(),
            ckpt_dir: self.opts.ckpt_dir.display().to_string(),
            images: self
                .images
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            restarted: self.restarted,
            last_checkpoint_ms: self.last_checkpoint_ms,
            last_durable_ms: self.last_durable_ms,
            writing: self.writing.is_some(),
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
        // Without a coordinator nobody says when the other programs are
        // back: the connections are made now.
        if self.coordinator.is_none() && self.awaiting.is_some() {
            tracing::warn!(
                "connections to other programs of the checkpoint are made now: restart those programs too (with a coordinator, restart waits for them)"
            );
            self.resume_tree()?;
        }
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
            let writing_at = match self.writing.as_ref().and_then(Writing::as_fd) {
                Some(fd) => at(&mut fds, fd),
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
            if ready(writing_at) {
                self.finish_writing();
            }
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
                    // A checkpoint whose images are still being written
                    // is not followed by another.
                    if !held && self.writing.is_none() {
                        self.checkpoint_for(false, Waiter::Log);
                    }
                }
            }
        }
        // Images being written are finished, and whoever waits told.
        self.finish_writing();
        self.reap_copies();
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
        if let Ok(Request::Checkpoint { kill }) = req {
            // Answered once the images are durable.
            return self.checkpoint_for(kill, Waiter::Control(stream));
        }
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
            Ok(Request::Checkpoint { .. }) => return,
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
        self.finish_writing();
        self.reap_copies();
        for p in self.procs() {
            for t in p.threads.values() {
                let sig = match t.stop {
                    ThreadStop::Signal(s) => s,
                    _ => 0,
                };
                let _ = ptrace::detach(t.tid, sig);
            }
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
                    // What is left of the tree ends with the program.
                    self.kill_others();
                    return Ok(());
                }
            }
            if let Stop::Exited(_) | Stop::Killed(_) = stop {
                self.task_gone(tid);
                continue;
            }
            let Some(which) = self.owner_or_adopt(tid, stop) else {
                continue;
            };
            match stop {
                Stop::Signal(sig) => {
                    self.note_job_stop(which, tid, None);
                    self.translate_siginfo(tid);
                    let _ = ptrace::cont(tid, sig);
                }
                Stop::Event(PTRACE_EVENT_STOP, sig) => {
                    let group_stop = tracee::is_group_stop(sig).then_some(sig);
                    self.note_job_stop(which, tid, group_stop);
                    if group_stop.is_some() {
                        // A group-stop: stay stopped until SIGCONT.
                        let _ = ptrace::listen(tid);
                    } else {
                        let _ = ptrace::cont(tid, 0);
                    }
                }
                Stop::Event(
                    libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE,
                    _,
                ) => {
                    self.note_new_task(tid, stop);
                    let _ = ptrace::cont(tid, 0);
                }
                Stop::Event(libc::PTRACE_EVENT_EXEC, _) => {
                    self.vforked.remove(&tid);
                    self.other_stop(which, tid, stop)?;
                }
                _ => self.other_stop(which, tid, stop)?,
            }
        }
    }

    /// Thread `tid` of process `which` is in a job-control stop by
    /// `signal`, or (None) runs again.
    fn note_job_stop(&mut self, which: Option<usize>, tid: pid_t, signal: Option<i32>) {
        if let Some(t) = self.proc_mut(which) {
            t.threads
                .entry(tid)
                .or_insert_with(|| Thread::new(tid))
                .job_stop = signal;
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
                if regs.rax as i64 != result {
                    ptrace::setregs(tid, &regs)
                        .map_err(|e| Error::ptrace("PTRACE_SETREGS", tid, e))?;
                }
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

/// The parent of process `pid` (/proc/pid/stat field 4; not its tracer).
fn ppid_of(pid: pid_t) -> Option<pid_t> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
