//! A session under a coordinator (`launch/restart --coordinator`): it
//! registers, then obeys the coordinator's orders from its event loop
//! (`Session::run` polls the connection). The protocol is in
//! `crate::coordinator`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::writing::Waiter;
use super::{Session, SessionOptions};
use crate::capture::Checkpoint;
use crate::control;
use crate::coordinator::link::CoordinatorLink;
use crate::coordinator::{Action, Order, Reply, SessionInfo, SessionMsg};
use crate::Error;

/// A held session waits this much longer than the coordinator's barrier
/// timeout before it lets its program go by itself (as the coordinator's
/// own lease does).
const LEASE_MARGIN: Duration = Duration::from_secs(15);

impl SessionOptions {
    /// Where the session's control socket goes.
    pub fn control_path(&self) -> PathBuf {
        self.control_socket
            .clone()
            .unwrap_or_else(|| control::socket_path(&self.ckpt_dir))
    }
}

/// `p` made absolute, through its directory when it does not exist yet
/// (an image still being written).
fn absolute(p: &Path) -> String {
    std::fs::canonicalize(p)
        .or_else(|e| match (p.parent(), p.file_name()) {
            (Some(dir), Some(name)) => {
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                std::fs::canonicalize(dir).map(|d| d.join(name))
            }
            _ => Err(e),
        })
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// A checkpoint's images and times in a reply to the coordinator, or why
/// they could not be written.
pub(super) fn fill_reply(reply: &mut Reply, outcome: Result<Checkpoint, String>) {
    match outcome {
        Ok(c) => {
            reply.image = Some(absolute(&c.stats.path));
            reply.also = c.also.iter().map(|p| absolute(p)).collect();
            let others: u64 = c
                .also
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum();
            reply.image_bytes = Some(c.stats.file_bytes + others);
            reply.warnings.extend(c.warnings);
            reply.paused_ms = Some(c.stopped_ms);
            reply.durable_ms = Some(c.durable_ms);
        }
        Err(e) => {
            reply.ok = false;
            reply.error = Some(format!("its images could not be written: {e}"));
        }
    }
}

impl Session {
    /// Register with the coordinator `link` leads to; from now on the
    /// session obeys it.
    pub fn join_coordinator(&mut self, mut link: CoordinatorLink) -> Result<(), Error> {
        let info = self.coordinator_info();
        link.register(&info)?;
        tracing::info!(
            "registered with the coordinator at {} as session {}",
            link.addr,
            link.id
        );
        let lease = link.timeout + LEASE_MARGIN;
        self.coordinator = Some(link);
        // A restarted program whose connections lead to other programs
        // waits (stopped) until the coordinator has them all back.
        if !info.awaiting.is_empty() || !info.awaiting_links.is_empty() {
            self.hold(lease.as_millis() as u64);
        }
        Ok(())
    }

    /// Tell the coordinator the program ended (`code` as a shell reports it).
    pub fn leave_coordinator(&mut self, code: i32) {
        if let Some(mut link) = self.coordinator.take() {
            let _ = link.send(&SessionMsg::Exited { code });
        }
    }

    fn coordinator_info(&self) -> SessionInfo {
        SessionInfo {
            program: self.prog.clone(),
            argv: self.argv.clone(),
            vpid: self.vids.to_virtual(self.tracee.pid),
            real_pid: self.tracee.pid,
            hostname: crate::coordinator::hostname(),
            ckpt_dir: absolute(&self.opts.ckpt_dir),
            control_socket: self
                .control
                .as_ref()
                .map(|c| absolute(&c.path))
                .unwrap_or_default(),
            restarted: self.restarted,
            awaiting: self
                .awaiting
                .as_ref()
                .map(|a| a.awaiting())
                .unwrap_or_default(),
            awaiting_links: self
                .awaiting
                .as_ref()
                .map(|a| a.links())
                .unwrap_or_default(),
            moved: self
                .awaiting
                .as_ref()
                .map(|a| crate::sockets::moved_addresses(&a.awaiting()))
                .unwrap_or_default(),
        }
    }

    /// Whether the coordinator holds the program suspended.
    pub(super) fn held_by_coordinator(&self) -> bool {
        self.coordinator
            .as_ref()
            .is_some_and(|c| c.suspended_until.is_some())
    }

    /// Read and obey what the coordinator sent.
    pub(super) fn serve_coordinator(&mut self) {
        let Some(link) = self.coordinator.as_mut() else {
            return;
        };
        let orders = match link.receive() {
            Ok(orders) => orders,
            Err(why) => return self.lose_coordinator(&why),
        };
        for order in orders {
            // A resume or kill is answered once the images are durable.
            if let Some(reply) = self.obey(order) {
                self.send_reply(reply);
            }
            if self.coordinator.is_none() {
                return;
            }
        }
    }

    /// Answer the coordinator.
    pub(super) fn send_reply(&mut self, reply: Reply) {
        let Some(link) = self.coordinator.as_mut() else {
            return;
        };
        if let Err(e) = link.send(&SessionMsg::Reply(reply)) {
            self.lose_coordinator(&format!("cannot answer it: {e}"));
        }
    }

    /// A suspended program whose coordinator went quiet runs on.
    pub(super) fn check_coordinator_lease(&mut self) {
        let expired = self
            .coordinator
            .as_ref()
            .and_then(|c| c.suspended_until)
            .is_some_and(|t| Instant::now() > t);
        if expired {
            tracing::warn!(
                "the coordinator suspended the program and then said nothing for too long: resuming it"
            );
            self.resume_from_coordinator();
        }
    }

    fn resume_from_coordinator(&mut self) {
        if let Some(link) = self.coordinator.as_mut() {
            if link.suspended_until.take().is_some() && self.exit.is_none() {
                if let Err(e) = self.resume_tree() {
                    tracing::warn!("cannot resume the program: {e}");
                }
                self.note_released();
            }
        }
    }

    fn lose_coordinator(&mut self, why: &str) {
        let addr = self
            .coordinator
            .as_ref()
            .map(|c| c.addr.clone())
            .unwrap_or_default();
        tracing::warn!("lost the coordinator at {addr} ({why}); the program runs on without it");
        self.resume_from_coordinator();
        self.coordinator = None;
    }

    /// Carry out `order`; its answer, unless it waits for images being
    /// written (a resume or kill after a capture: see `writing`).
    fn obey(&mut self, order: Order) -> Option<Reply> {
        let start = Instant::now();
        tracing::debug!(
            "coordinator: {} (round {})",
            order.action.name(),
            order.round
        );
        let mut reply = Reply {
            round: order.round,
            ok: true,
            ..Default::default()
        };
        let result: Result<(), Error> = match order.action {
            Action::Ping => Ok(()),
            Action::Status => {
                reply.status = Some(self.status());
                Ok(())
            }
            Action::Suspend { lease_ms } => self.suspend_for_coordinator(lease_ms),
            Action::Drain { lease_ms } => self.drain_for_coordinator(lease_ms, &mut reply),
            Action::Capture {
                lease_ms,
                kill,
                computation,
                links,
                dgram,
            } => {
                let computation = crate::sockets::Computation {
                    tcp: computation,
                    unix: links,
                    dgram,
                };
                self.capture_for_coordinator(lease_ms, kill, &computation, &mut reply)
            }
            Action::Reconnect { moved } => {
                let moved: std::collections::HashMap<_, _> = moved.into_iter().collect();
                if let Some(map) = &self.addresses {
                    if let Ok(mut map) = map.lock() {
                        map.set(&moved);
                    }
                }
                if let Some(sockets) = self.awaiting.as_mut() {
                    sockets.reconnect(&moved);
                    reply.warnings = sockets.take_warnings();
                }
                Ok(())
            }
            Action::Resume => {
                self.resume_from_coordinator();
                return self.answer_with_images(reply, start);
            }
            Action::Kill => {
                if let Some(link) = self.coordinator.as_mut() {
                    link.suspended_until = None;
                }
                self.kill();
                self.note_released();
                return self.answer_with_images(reply, start);
            }
        };
        if let Err(e) = result {
            reply.ok = false;
            reply.error = Some(e.to_string());
        }
        reply.ms = start.elapsed().as_secs_f64() * 1e3;
        reply.suspended = self.held_by_coordinator();
        Some(reply)
    }

    /// The answer to a resume or kill: with the images of the capture
    /// before it, once they are durable (None: answered later).
    fn answer_with_images(&mut self, mut reply: Reply, start: Instant) -> Option<Reply> {
        reply.suspended = self.held_by_coordinator();
        if self.writing_kept() {
            if let Some(w) = self.writing.as_mut() {
                w.waiter = Waiter::Coordinator(reply, start);
                return None;
            }
        }
        if let Some(outcome) = self.kept.take() {
            fill_reply(&mut reply, outcome);
        }
        reply.ms = start.elapsed().as_secs_f64() * 1e3;
        Some(reply)
    }

    fn hold(&mut self, lease_ms: u64) {
        if let Some(link) = self.coordinator.as_mut() {
            link.suspended_until = Some(Instant::now() + Duration::from_millis(lease_ms));
        }
    }

    fn suspend_for_coordinator(&mut self, lease_ms: u64) -> Result<(), Error> {
        if self.exit.is_some() {
            return Err(Error::Gone("the program has already exited".into()));
        }
        if self.held_by_coordinator() {
            self.hold(lease_ms);
            return Ok(());
        }
        self.suspended_at = Some(Instant::now());
        if let Err(e) = self.stop_program() {
            self.suspended_at = None;
            self.reap_if_gone();
            // Threads stopped before the failure must not stay stopped.
            if self.exit.is_none() {
                let _ = self.resume_tree();
            }
            return Err(e);
        }
        self.hold(lease_ms);
        Ok(())
    }

    /// Phase 2 of a coordinated checkpoint: the send queues of the
    /// program's TCP connections are read (their ends go into repair
    /// mode), and the ends that lead out of its tree are reported, for the
    /// coordinator to tell which lead to other programs of the computation.
    fn drain_for_coordinator(&mut self, lease_ms: u64, reply: &mut Reply) -> Result<(), Error> {
        if !self.held_by_coordinator() {
            return Err(Error::Usage(
                "asked to drain a program that is not suspended (its suspension expired?)".into(),
            ));
        }
        let drained = (|| {
            let pids: Vec<libc::pid_t> = self.procs().map(|t| t.pid).collect();
            let mut census = crate::sockets::Census::take(&pids)?;
            census.freeze(true);
            reply.endpoints = census.endpoints();
            reply.links = census.unix_links();
            reply.dgram = census.dgram_sockets();
            // Kept for the capture, thawed if the program goes on.
            if let Some(mut old) = self.frozen.replace(census) {
                old.thaw();
            }
            Ok(())
        })();
        self.hold(lease_ms);
        drained
    }

    /// Phase 3 of a coordinated checkpoint: capture the held program.
    /// Connections to the `computation`'s endpoints are kept; receive
    /// queues are read now, after every session read its send queues. Its
    /// images are written from copies of its processes once it is let go,
    /// and the answer to the resume that follows carries them; with `kill`
    /// (it will not run on), they are written now, the program stopped.
    fn capture_for_coordinator(
        &mut self,
        lease_ms: u64,
        kill: bool,
        computation: &crate::sockets::Computation,
        reply: &mut Reply,
    ) -> Result<(), Error> {
        if !self.held_by_coordinator() {
            return Err(Error::Usage(
                "asked to capture a program that is not suspended (its suspension expired?)".into(),
            ));
        }
        // A previous checkpoint's images first (the program is stopped).
        self.finish_writing();
        self.kept = None;
        let started = self.suspended_at.unwrap_or_else(Instant::now);
        let images = self.capture_stopped(self.memory_mode(kill), computation);
        // However the capture went, the program stays suspended until the
        // coordinator's next order.
        self.hold(lease_ms);
        let images = images?;
        if let Some(root) = images.first() {
            reply.image = Some(absolute(&root.path));
        }
        reply.also = images.iter().skip(1).map(|i| absolute(&i.path)).collect();
        self.start_writing(images, started, None, Waiter::Keep);
        // Written already (stopped): the sizes are known. (The warnings
        // come with the answer to the kill or resume.)
        if let Some(Ok(c)) = &self.kept {
            let mut written = reply.clone();
            fill_reply(&mut written, Ok(c.clone()));
            reply.image_bytes = written.image_bytes;
        }
        Ok(())
    }
}
