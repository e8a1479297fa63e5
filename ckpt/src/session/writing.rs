//! Forked checkpoints in a session (`crate::forked`): once the program is
//! captured and let go, a thread writes its images from the copies of its
//! processes; the event loop polls for the thread's end, kills and reaps the
//! copies, and tells whoever waits (a `rewind command`, the coordinator, the
//! log of periodic checkpoints) that the images are durable.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::Instant;

use libc::pid_t;

use super::Session;
use crate::capture::{Checkpoint, PendingImage};
use crate::control::{self, Response};
use crate::coordinator::Reply;
use crate::sys::ptrace::{self, Stop};
use crate::Error;

/// Who waits for the outcome of a checkpoint.
// One per checkpoint: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Waiter {
    /// A periodic checkpoint: its outcome is logged.
    Log,
    /// `rewind command --checkpoint`: answered on its connection.
    Control(UnixStream),
    /// Kept in `Session::kept` for whoever asks: the coordinator's resume
    /// or kill order, or `Session::checkpoint`.
    Keep,
    /// The coordinator's resume or kill order, received at that instant:
    /// its answer carries the images.
    Coordinator(Reply, Instant),
}

/// The images of one checkpoint, to write from copies.
pub(super) struct Writing {
    state: State,
    copies: Vec<pid_t>,
    /// When the checkpoint began (the program was stopped).
    started: Instant,
    /// How long the program was stopped, once it was let go.
    paused_ms: Option<f64>,
    pub(super) waiter: Waiter,
}

enum State {
    /// Not started: the coordinator still holds the program (the other
    /// sessions' captures would compete with the writing for the CPUs).
    Waiting(Vec<PendingImage>),
    Running {
        thread: JoinHandle<Result<Checkpoint, Error>>,
        /// The read end of a pipe whose write end the thread holds: it
        /// hangs up when the thread is done.
        done: OwnedFd,
    },
    /// The thread could not be started.
    Failed(Error),
    Taken,
}

impl Writing {
    /// Readable (hung up) once the images are written; None before the
    /// writing starts.
    pub(super) fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.state {
            State::Running { done, .. } => Some(done.as_fd()),
            _ => None,
        }
    }

    /// Starts writing, on a thread of its own.
    fn start(&mut self) {
        if !matches!(self.state, State::Waiting(_)) {
            return;
        }
        let State::Waiting(images) = std::mem::replace(&mut self.state, State::Taken) else {
            return;
        };
        let spawned = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::Tracee(format!("pipe: {}", e.desc())))
            .and_then(|(done, hang_up)| {
                std::thread::Builder::new()
                    .name("rewind-images".into())
                    .spawn(move || {
                        let _hang_up: OwnedFd = hang_up;
                        write_all(images)
                    })
                    .map(|thread| State::Running { thread, done })
                    .map_err(|e| Error::Tracee(format!("cannot start a thread: {e}")))
            });
        self.state = spawned.unwrap_or_else(State::Failed);
    }

    /// Waits for the images (writing them here if not started).
    fn outcome(&mut self) -> Result<Checkpoint, Error> {
        match std::mem::replace(&mut self.state, State::Taken) {
            State::Waiting(images) => write_all(images),
            State::Running { thread, .. } => thread.join().unwrap_or_else(|_| {
                Err(Error::Tracee(
                    "the thread writing the images panicked".into(),
                ))
            }),
            State::Failed(e) => Err(e),
            State::Taken => Err(Error::Tracee("the images were written already".into())),
        }
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Writes the images in order (the root's first) into one outcome.
fn write_all(images: Vec<PendingImage>) -> Result<Checkpoint, Error> {
    let mut images = images.into_iter();
    let Some(root) = images.next() else {
        return Err(Error::Tracee("the checkpoint has no image".into()));
    };
    let mut ckpt = root.write()?;
    for image in images {
        let c = image.write()?;
        ckpt.warnings.extend(c.warnings);
        ckpt.millis += c.millis;
        ckpt.also.push(c.stats.path);
    }
    Ok(ckpt)
}

/// The answer to `rewind command --checkpoint`.
fn response(outcome: Result<Checkpoint, String>) -> Response {
    match outcome {
        Ok(c) => Response {
            ok: true,
            image: Some(c.stats.path.display().to_string()),
            other_images: c.also.iter().map(|p| p.display().to_string()).collect(),
            warnings: c.warnings,
            paused_ms: Some(c.stopped_ms),
            durable_ms: Some(c.durable_ms),
            ..Default::default()
        },
        Err(e) => Response {
            ok: false,
            error: Some(e),
            ..Default::default()
        },
    }
}

impl Session {
    /// The images of a checkpoint that began at `started` are written: by
    /// a thread, from the copies of the program's processes, if they come
    /// from copies (once [`Session::note_released`] says the program was
    /// let go, unless it was already: `paused_ms`, how long it was
    /// stopped); at once otherwise (written already, stopped). `waiter` is
    /// told once they are durable.
    pub(super) fn start_writing(
        &mut self,
        images: Vec<PendingImage>,
        started: Instant,
        paused_ms: Option<f64>,
        waiter: Waiter,
    ) {
        if paused_ms.is_some() {
            self.last_checkpoint_ms = paused_ms;
        }
        let copies: Vec<pid_t> = images.iter().filter_map(PendingImage::copy).collect();
        self.copies.extend(&copies);
        if copies.is_empty() {
            let outcome = write_all(images);
            return self.conclude(outcome, started, paused_ms, copies, waiter);
        }
        let mut writing = Writing {
            state: State::Waiting(images),
            copies,
            started,
            paused_ms,
            waiter,
        };
        if paused_ms.is_some() {
            writing.start();
        }
        self.writing = Some(writing);
    }

    /// Waits until the images being written (if any) are durable, and
    /// tells whoever waits for them.
    pub(super) fn finish_writing(&mut self) {
        let Some(mut w) = self.writing.take() else {
            return;
        };
        let outcome = w.outcome();
        self.conclude(outcome, w.started, w.paused_ms, w.copies, w.waiter)
    }

    fn conclude(
        &mut self,
        outcome: Result<Checkpoint, Error>,
        started: Instant,
        paused_ms: Option<f64>,
        copies: Vec<pid_t>,
        waiter: Waiter,
    ) {
        self.reap(&copies);
        let durable_ms = ms_since(started);
        let outcome = outcome
            .map(|c| Checkpoint {
                durable_ms,
                // Not let go yet (the coordinator holds it): so far.
                stopped_ms: paused_ms.unwrap_or(durable_ms),
                ..c
            })
            .map_err(|e| e.to_string());
        match &outcome {
            Ok(c) => {
                tracing::info!(
                    "checkpoint {} durable after {:.1} ms, the program stopped {:.1} ms ({} bytes, {} more process(es))",
                    c.stats.path.display(),
                    c.durable_ms,
                    c.stopped_ms,
                    c.stats.file_bytes,
                    c.also.len()
                );
                self.last_durable_ms = Some(c.durable_ms);
                if !self.images.contains(&c.stats.path) {
                    self.images.push(c.stats.path.clone());
                }
            }
            Err(e) => tracing::debug!("checkpoint failed: {e}"),
        }
        self.deliver(waiter, outcome);
    }

    /// Tells `waiter` how a checkpoint went.
    pub(super) fn deliver(&mut self, waiter: Waiter, outcome: Result<Checkpoint, String>) {
        match waiter {
            Waiter::Log => {
                if let Err(e) = &outcome {
                    tracing::warn!("periodic checkpoint failed: {e}");
                }
            }
            Waiter::Control(stream) => control::respond(stream, &response(outcome)),
            Waiter::Keep => self.kept = Some(outcome),
            Waiter::Coordinator(mut reply, since) => {
                super::coord::fill_reply(&mut reply, outcome);
                reply.ms = ms_since(since);
                self.send_reply(reply);
            }
        }
    }

    /// The coordinator let the program go (resume or kill): the pause of
    /// its checkpoint ends.
    pub(super) fn note_released(&mut self) {
        let paused = self.suspended_at.take().map(ms_since);
        if let Some(w) = self.writing.as_mut() {
            if w.paused_ms.is_none() {
                w.paused_ms = paused;
                self.last_checkpoint_ms = paused.or(self.last_checkpoint_ms);
            }
            w.start();
        } else if let (Some(paused), Some(Ok(c))) = (paused, self.kept.as_mut()) {
            c.stopped_ms = paused;
            self.last_checkpoint_ms = Some(paused);
        }
    }

    /// Whether the images being written are the coordinator's to claim.
    pub(super) fn writing_kept(&self) -> bool {
        matches!(self.writing.as_ref().map(|w| &w.waiter), Some(Waiter::Keep))
    }

    /// Kill and reap copies (their images are written, or abandoned).
    fn reap(&mut self, copies: &[pid_t]) {
        for &pid in copies {
            if !self.copies.remove(&pid) {
                // Reaped already, by a wait for any of our processes.
                continue;
            }
            let _ = crate::sys::process::kill(pid, libc::SIGKILL);
            loop {
                match ptrace::wait(pid, false) {
                    Ok(Some((_, Stop::Exited(_) | Stop::Killed(_)))) | Err(_) => break,
                    _ => {}
                }
            }
            // rewind adopted it: as its parent, too (a no-op when the
            // tracer's wait reaped it already).
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::__WALL | nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }

    /// Every copy left (the session ends).
    pub(super) fn reap_copies(&mut self) {
        let copies: Vec<pid_t> = self.copies.iter().copied().collect();
        self.reap(&copies);
    }
}
