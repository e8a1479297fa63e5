//! System V IPC across checkpoint and restart (issue 7): shared memory
//! segments, semaphore sets and message queues.
//!
//! These objects belong to the machine (its IPC namespace), not to a
//! process, and /proc says which segments a process has attached but not
//! which semaphore sets or queues it uses. So the built-in `sysv` plugin
//! watches the program's `shmget`, `semget` and `msgget` (their results,
//! through the seccomp filter) to know its objects. At a checkpoint the
//! root's image gets their state ([`SysVState`], the plugin's data): the
//! value of every semaphore, every queued message (copied with
//! `MSG_COPY`, the queue is left as it is), and the contents of segments
//! no process has attached; attached segments are shared memory regions
//! (`shm.rs`) whose pages their first image stores.
//!
//! At restart ([`Restored`]) each object gets its old id back: an object
//! that still exists under that id with the same key (the program was
//! killed, the objects outlived it) is reset to the checkpoint's state; a
//! missing one is made again with that id (`/proc/sys/kernel/*_next_id`,
//! as CRIU does) and key. An id taken by another object, a key that names
//! another object, or a segment still attached by some process (the
//! original program still running) is refused with one line naming it:
//! ids are not translated. On a failed restart the objects made are
//! removed again.

use std::collections::BTreeSet;

use crate::image::format::{
    DetachedSegment, IpcPerm, ProcessState, SysVMsg, SysVSem, SysVShm, SysVState,
};
use crate::plugin::{CaptureCtx, Plugin, RestoreCtx, SyscallAction, SyscallCtx};
use crate::sys::ipc::{self, IpcStat, IPC_CREAT, IPC_EXCL, SHM_DEST};
use crate::Error;
use nix::errno::Errno;

/// The plugin's name, and its key in an image's plugin data.
pub const PLUGIN_NAME: &str = "sysv";

/// Largest message text read from a queue (the kernel's MSGMAX limit is
/// at most this unless raised).
fn msg_max() -> usize {
    std::fs::read_to_string("/proc/sys/kernel/msgmax")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(8192)
        .max(8192)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Shm,
    Sem,
    Msg,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Shm => "shared memory segment",
            Kind::Sem => "semaphore set",
            Kind::Msg => "message queue",
        }
    }
    fn ipcrm(self) -> &'static str {
        match self {
            Kind::Shm => "-m",
            Kind::Sem => "-s",
            Kind::Msg => "-q",
        }
    }
    fn next_id_file(self) -> &'static str {
        match self {
            Kind::Shm => "/proc/sys/kernel/shm_next_id",
            Kind::Sem => "/proc/sys/kernel/sem_next_id",
            Kind::Msg => "/proc/sys/kernel/msg_next_id",
        }
    }
    fn stat(self, id: i32) -> Result<IpcStat, Errno> {
        match self {
            Kind::Shm => ipc::shm_stat(id),
            Kind::Sem => ipc::sem_stat(id),
            Kind::Msg => ipc::msg_stat(id),
        }
    }
    fn remove(self, id: i32) -> Result<(), Errno> {
        match self {
            Kind::Shm => ipc::shm_remove(id),
            Kind::Sem => ipc::sem_remove(id),
            Kind::Msg => ipc::msg_remove(id),
        }
    }
}

fn perm_of(st: &IpcStat) -> IpcPerm {
    IpcPerm {
        uid: st.uid,
        gid: st.gid,
        mode: st.mode & 0o777,
    }
}

/// The segment `id` as it is now.
pub fn segment(id: i32) -> Result<SysVShm, Errno> {
    let st = ipc::shm_stat(id)?;
    Ok(SysVShm {
        id,
        key: st.key,
        size: st.count,
        perm: perm_of(&st),
        removed: st.mode & SHM_DEST != 0,
    })
}

/// The System V state stored in an image, if it has some.
pub fn state_of(st: &ProcessState) -> Option<Result<SysVState, Error>> {
    let (_, bytes) = st.plugin_data.iter().find(|(n, _)| n == PLUGIN_NAME)?;
    Some(
        bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map(|(s, _)| s)
            .map_err(|e| Error::Restore(format!("System V IPC data of the image: {e}"))),
    )
}

/// The built-in plugin that knows the program's System V objects.
#[derive(Default)]
pub struct SysV {
    /// Objects the program obtained (made or looked up), by kind and id.
    known: BTreeSet<(Kind, i32)>,
}

impl SysV {
    pub fn new() -> SysV {
        SysV::default()
    }

    /// The state of every known object that still exists (forgetting the
    /// others).
    fn capture(&mut self, warnings: &mut Vec<String>) -> SysVState {
        let mut out = SysVState::default();
        let max = msg_max();
        let known: Vec<(Kind, i32)> = self.known.iter().copied().collect();
        for (kind, id) in known {
            let Ok(st) = kind.stat(id) else {
                // Removed since: forgotten.
                self.known.remove(&(kind, id));
                continue;
            };
            match kind {
                Kind::Sem => match ipc::sem_values(id, st.count as usize) {
                    Ok(values) => out.semaphores.push(SysVSem {
                        id,
                        key: st.key,
                        perm: perm_of(&st),
                        values,
                    }),
                    Err(e) => warnings.push(format!(
                        "System V semaphore set {id}: cannot read its values: {}",
                        e.desc()
                    )),
                },
                Kind::Msg => {
                    let mut messages = Vec::new();
                    for i in 0..st.count {
                        match ipc::msg_copy(id, i, max) {
                            Ok(m) => messages.push(m),
                            Err(e) => {
                                warnings.push(format!(
                                    "System V message queue {id}: cannot copy message {i}: {}",
                                    e.desc()
                                ));
                                break;
                            }
                        }
                    }
                    out.queues.push(SysVMsg {
                        id,
                        key: st.key,
                        perm: perm_of(&st),
                        qbytes: st.extra,
                        messages,
                    });
                }
                // Attached segments come with the memory of the processes
                // that attach them.
                Kind::Shm if st.extra > 0 => {}
                Kind::Shm => match detached_contents(id, st.count) {
                    Ok(pages) => {
                        if let Ok(segment) = segment(id) {
                            out.detached_shm.push(DetachedSegment { segment, pages });
                        }
                    }
                    Err(e) => warnings.push(format!(
                        "System V shared memory segment {id}: cannot read it: {}",
                        e.desc()
                    )),
                },
            }
        }
        out
    }
}

/// The non-zero pages of segment `id` ({`size` bytes), as (offset, bytes).
fn detached_contents(id: i32, size: u64) -> Result<Vec<(u64, Vec<u8>)>, Errno> {
    const PIECE: u64 = 1 << 20;
    let page = crate::tracee::PAGE;
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut at = 0;
    while at < size {
        let n = PIECE.min(size - at);
        let mut buf = vec![0u8; n as usize];
        ipc::shm_read(id, at, &mut buf)?;
        for (i, p) in buf.chunks(page as usize).enumerate() {
            if p.iter().all(|&b| b == 0) {
                continue;
            }
            let off = at + i as u64 * page;
            match out.last_mut() {
                Some((o, bytes)) if *o + bytes.len() as u64 == off => bytes.extend_from_slice(p),
                _ => out.push((off, p.to_vec())),
            }
        }
        at += n;
    }
    Ok(out)
}

const TRAPPED: &[i64] = &[libc::SYS_shmget, libc::SYS_semget, libc::SYS_msgget];

impl Plugin for SysV {
    fn name(&self) -> &'static str {
        PLUGIN_NAME
    }

    fn syscalls(&self) -> &'static [i64] {
        TRAPPED
    }

    fn pre_checkpoint(&mut self, ctx: &mut CaptureCtx) -> Result<(), Error> {
        // Once per checkpoint: into the root's image (a lone process's).
        if ctx.tree_index != 0 || self.known.is_empty() {
            return Ok(());
        }
        let state = self.capture(ctx.warnings);
        if state == SysVState::default() {
            return Ok(());
        }
        let bytes = bincode::serde::encode_to_vec(&state, bincode::config::standard())
            .map_err(|e| Error::Tracee(format!("System V IPC state: {e}")))?;
        ctx.state.plugin_data.push((PLUGIN_NAME.to_string(), bytes));
        Ok(())
    }

    fn restart(&mut self, ctx: &mut RestoreCtx) -> Result<(), Error> {
        // The restored objects are the program's again (same ids).
        if let Some(Ok(st)) = state_of(ctx.state) {
            self.known
                .extend(st.semaphores.iter().map(|s| (Kind::Sem, s.id)));
            self.known
                .extend(st.queues.iter().map(|q| (Kind::Msg, q.id)));
            self.known
                .extend(st.detached_shm.iter().map(|d| (Kind::Shm, d.segment.id)));
        }
        for r in &ctx.state.regions {
            if let crate::image::format::RegionKind::Shared { object, .. } = &r.kind {
                if let crate::image::format::SharedKind::SysV(seg) = &object.kind {
                    self.known.insert((Kind::Shm, seg.id));
                }
            }
        }
        Ok(())
    }

    fn on_syscall(&mut self, _ctx: &mut SyscallCtx) -> Result<SyscallAction, Error> {
        Ok(SyscallAction::RunWatchExit)
    }

    fn on_syscall_exit(&mut self, ctx: &mut SyscallCtx, result: i64) -> Result<(), Error> {
        let kind = match ctx.regs.orig_rax as i64 {
            libc::SYS_shmget => Kind::Shm,
            libc::SYS_semget => Kind::Sem,
            libc::SYS_msgget => Kind::Msg,
            _ => return Ok(()),
        };
        if let Ok(id) = i32::try_from(result) {
            if id >= 0 {
                self.known.insert((kind, id));
            }
        }
        Ok(())
    }
}

/// The System V objects a restart made or reset. Dropped before
/// [`Restored::finish`], it removes the ones it made.
#[derive(Default)]
pub struct Restored {
    made: Vec<(Kind, i32)>,
    /// Segments to mark for removal once every process has attached them.
    to_remove: Vec<i32>,
    /// Segments already made or reset by this restart: (old id, new id,
    /// reset).
    segments: Vec<(i32, i32, bool)>,
}

fn describe(kind: Kind, id: i32, key: i32) -> String {
    if key == 0 {
        format!("System V {} {id}", kind.noun())
    } else {
        format!("System V {} {id} (key {:#x})", kind.noun(), key as u32)
    }
}

impl Restored {
    /// Brings back the semaphore sets, message queues and unattached
    /// segments of `state`.
    pub fn restore(&mut self, state: &SysVState) -> Result<(), Error> {
        for s in &state.semaphores {
            let id = self.object(Kind::Sem, s.id, s.key, s.values.len() as u64, s.perm)?;
            let what = describe(Kind::Sem, s.id, s.key);
            ipc::sem_set_values(id, &s.values).map_err(|e| {
                Error::Restore(format!("{what}: cannot set its values: {}", e.desc()))
            })?;
            ipc::sem_set_perm(id, s.perm.uid, s.perm.gid, s.perm.mode).map_err(|e| {
                Error::Restore(format!("{what}: cannot set its mode: {}", e.desc()))
            })?;
        }
        for q in &state.queues {
            let id = self.object(Kind::Msg, q.id, q.key, 0, q.perm)?;
            let what = describe(Kind::Msg, q.id, q.key);
            // Room for every message first, then only them in the queue.
            let bytes: u64 = q.messages.iter().map(|(_, t)| t.len() as u64).sum();
            ipc::msg_set(id, q.perm.uid, q.perm.gid, q.perm.mode, q.qbytes.max(bytes)).map_err(
                |e| Error::Restore(format!("{what}: cannot set its mode: {}", e.desc())),
            )?;
            let max = msg_max();
            while ipc::msg_take(id, max)
                .map_err(|e| Error::Restore(format!("{what}: cannot empty it: {}", e.desc())))?
                .is_some()
            {}
            for (mtype, text) in &q.messages {
                ipc::msg_send(id, *mtype, text).map_err(|e| {
                    Error::Restore(format!(
                        "{what}: cannot queue a message again: {}",
                        e.desc()
                    ))
                })?;
            }
            if q.qbytes < bytes {
                let _ = ipc::msg_set(id, q.perm.uid, q.perm.gid, q.perm.mode, q.qbytes);
            }
        }
        for DetachedSegment {
            segment: seg,
            pages,
        } in &state.detached_shm
        {
            let (id, reset) = self.segment(seg)?;
            let what = describe(Kind::Shm, seg.id, seg.key);
            let fail = |e: Errno| Error::Restore(format!("{what}: cannot write it: {}", e.desc()));
            if reset {
                let zeros = vec![0u8; 1 << 20];
                let mut at = 0;
                while at < seg.size {
                    let n = (1u64 << 20).min(seg.size - at);
                    ipc::shm_write(id, at, &zeros[..n as usize]).map_err(fail)?;
                    at += n;
                }
            }
            for (off, bytes) in pages {
                ipc::shm_write(id, *off, bytes).map_err(fail)?;
            }
        }
        Ok(())
    }

    /// Segment `seg`, made or reset (once per restart): its id now, and
    /// whether it held data already.
    pub fn segment(&mut self, seg: &SysVShm) -> Result<(i32, bool), Error> {
        if let Some(&(_, id, reset)) = self.segments.iter().find(|s| s.0 == seg.id) {
            return Ok((id, reset));
        }
        let what = describe(Kind::Shm, seg.id, seg.key);
        if let Ok(st) = ipc::shm_stat(seg.id) {
            if st.extra > 0 && st.key == seg.key && st.count == seg.size {
                return Err(Error::Restore(format!(
                    "{what} is still attached by {} process(es) (is the checkpointed program still running?): stop them or remove it (ipcrm -m {}) to restart",
                    st.extra, seg.id
                )));
            }
        }
        let before = self.made.len();
        let id = self.object(Kind::Shm, seg.id, seg.key, seg.size, seg.perm)?;
        ipc::shm_set_perm(id, seg.perm.uid, seg.perm.gid, seg.perm.mode)
            .map_err(|e| Error::Restore(format!("{what}: cannot set its mode: {}", e.desc())))?;
        let reset = self.made.len() == before;
        if seg.removed {
            self.to_remove.push(id);
        }
        self.segments.push((seg.id, id, reset));
        Ok((id, reset))
    }

    /// Object `id` of `kind` with `key`: the existing one when it is the
    /// same (same key, and for sets and segments the same size), else a
    /// new one made with that id. `size`: semaphores of a set, bytes of a
    /// segment, unused for queues.
    fn object(
        &mut self,
        kind: Kind,
        id: i32,
        key: i32,
        size: u64,
        perm: IpcPerm,
    ) -> Result<i32, Error> {
        let what = describe(kind, id, key);
        match kind.stat(id) {
            Ok(st) => {
                let same_size = kind == Kind::Msg || st.count == size;
                if st.key == key && same_size && st.mode & SHM_DEST == 0 {
                    return Ok(id);
                }
                return Err(Error::Restore(format!(
                    "cannot restart {what}: id {id} is taken by another {} (key {:#x}); remove it (ipcrm {} {id}) to restart",
                    kind.noun(),
                    st.key as u32,
                    kind.ipcrm()
                )));
            }
            Err(Errno::EINVAL) | Err(Errno::EIDRM) => {}
            Err(e) => {
                return Err(Error::Restore(format!(
                    "cannot look at {what}: {}",
                    e.desc()
                )))
            }
        }
        if key != 0 {
            let other = match kind {
                Kind::Shm => ipc::shm_get(key, 0, 0),
                Kind::Sem => ipc::sem_get(key, 0, 0),
                Kind::Msg => ipc::msg_get(key, 0),
            };
            if let Ok(other) = other {
                return Err(Error::Restore(format!(
                    "cannot restart {what}: key {:#x} now names {} {other}; remove it (ipcrm {} {other}) to restart",
                    key as u32,
                    kind.noun(),
                    kind.ipcrm()
                )));
            }
        }
        std::fs::write(kind.next_id_file(), id.to_string()).map_err(|e| {
            Error::Restore(format!(
                "cannot make {what} again with its id ({}: {e}; restart needs root or CAP_CHECKPOINT_RESTORE)",
                kind.next_id_file()
            ))
        })?;
        let flags = IPC_CREAT | IPC_EXCL | perm.mode as i32;
        let made = match kind {
            Kind::Shm => ipc::shm_get(key, size, flags),
            Kind::Sem => ipc::sem_get(key, size as i32, flags),
            Kind::Msg => ipc::msg_get(key, flags),
        };
        let new = match made {
            Ok(new) => new,
            Err(e) => {
                let _ = std::fs::write(kind.next_id_file(), "-1");
                return Err(Error::Restore(format!(
                    "cannot make {what} again: {}",
                    e.desc()
                )));
            }
        };
        if new != id {
            let _ = kind.remove(new);
            return Err(Error::Restore(format!(
                "cannot make {what} again with its id (the kernel gave {new}); ids are not translated"
            )));
        }
        self.made.push((kind, id));
        Ok(id)
    }

    /// Every process is attached: segments removed before the checkpoint
    /// are marked for removal again; what was made stays.
    pub fn finish(mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        for id in std::mem::take(&mut self.to_remove) {
            if let Err(e) = ipc::shm_remove(id) {
                warnings.push(format!(
                    "System V shared memory segment {id}: cannot mark it removed again: {}",
                    e.desc()
                ));
            }
        }
        self.made.clear();
        warnings
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        for &(kind, id) in self.made.iter().rev() {
            let _ = kind.remove(id);
        }
    }
}
