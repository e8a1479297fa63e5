//! Process trees: a program and the processes it forks, checkpointed
//! together and restarted together (DESIGN §3, "many processes").
//!
//! A checkpoint of a tree writes one ordinary image per process (the root,
//! the program `rewind launch` started, first); each image already names
//! its virtual pid, parent, process group and session. `restart_tree`
//! takes those images back: it first builds the whole tree of husks, each
//! forked by its parent's husk (an injected clone3 with `set_tid`, so the
//! pids are the old ones when free and every restored child is a real
//! child of its restored parent: `wait` works), sets sessions and process
//! groups (injected `setsid`/`setpgid`), makes every pipe that several
//! processes share once, in rewind itself, refilled with its buffered bytes
//! (each process opens it through `/proc/<rewind>/fd`), makes every shared
//! memory object once (`shm`: each process maps the same object again), and
//! only then restores each image into its husk.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use libc::pid_t;

use crate::image::format::{FdKind, ProcessState};
use crate::image::ImageReader;
use crate::plugin::Plugin;
use crate::restore::{self, RestartOptions, Restored};
use crate::shm::SharedMemory;
use crate::sys::ptrace;
use crate::tracee::{self, Tracee};
use crate::Error;

/// ptrace options of every process of a session: threads, children and
/// exec are followed.
pub fn options() -> libc::c_int {
    ptrace::default_options() | libc::PTRACE_O_TRACEFORK | libc::PTRACE_O_TRACEVFORK
}

/// Pipes that several processes of a tree hold, by the pipe's old inode
/// number: (read end, write end), both held by rewind during the restart.
#[derive(Default)]
pub struct SharedPipes {
    ends: HashMap<u64, (OwnedFd, OwnedFd)>,
}

impl SharedPipes {
    /// rewind's descriptor of one end of pipe `id`.
    pub fn end(&self, id: u64, write_end: bool) -> Option<RawFd> {
        self.ends.get(&id).map(|(r, w)| {
            if write_end {
                w.as_raw_fd()
            } else {
                r.as_raw_fd()
            }
        })
    }

    /// Make every pipe held by more than one of `states`, with the bytes
    /// that were in flight.
    fn make(states: &[&ProcessState]) -> Result<SharedPipes, Error> {
        let mut holders: HashMap<u64, HashSet<i32>> = HashMap::new();
        let mut data: HashMap<u64, Vec<u8>> = HashMap::new();
        for st in states {
            for f in &st.fds {
                if let FdKind::Pipe { id, buffered, .. } = &f.kind {
                    holders.entry(*id).or_default().insert(st.vpid);
                    // Every capture drained and refilled the same bytes:
                    // any copy will do.
                    if !buffered.is_empty() {
                        data.entry(*id).or_insert_with(|| buffered.clone());
                    }
                }
            }
        }
        let mut ends = HashMap::new();
        for (id, who) in holders {
            if who.len() < 2 {
                continue;
            }
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| Error::Restore(format!("pipe2: {e}")))?;
            if let Some(bytes) = data.get(&id) {
                let mut file = std::fs::File::from(w.try_clone().map_err(|e| {
                    Error::Restore(format!("cannot duplicate a pipe descriptor: {e}"))
                })?);
                if bytes.len() > 65536 {
                    // F_SETPIPE_SZ: room for everything that was in flight.
                    let _ = nix::fcntl::fcntl(
                        w.as_raw_fd(),
                        nix::fcntl::FcntlArg::F_SETPIPE_SZ(bytes.len() as i32),
                    );
                }
                file.write_all(bytes).map_err(|e| {
                    Error::Restore(format!("cannot refill a pipe of the tree: {e}"))
                })?;
            }
            ends.insert(id, (r, w));
        }
        Ok(SharedPipes { ends })
    }
}

/// The images of a tree, in the order their husks are made: the root
/// (`images[0]`) first, then every process after its parent.
struct Plan {
    /// (path, reader, index of the parent in this list).
    procs: Vec<(PathBuf, ImageReader, Option<usize>)>,
    warnings: Vec<String>,
}

fn plan(images: &[PathBuf]) -> Result<Plan, Error> {
    let mut readers = Vec::new();
    for p in images {
        readers.push((p.clone(), ImageReader::open(p)?));
    }
    let mut seen = HashSet::new();
    for (p, r) in &readers {
        if !seen.insert(r.state.vpid) {
            return Err(Error::Usage(format!(
                "{}: two images of process {}",
                p.display(),
                r.state.vpid
            )));
        }
    }
    let mut warnings = Vec::new();
    let vpids: Vec<i32> = readers.iter().map(|(_, r)| r.state.vpid).collect();
    // Children of each image, by index (the root is image 0; a process
    // whose parent is not among the images hangs from the root).
    let mut children: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, (p, r)) in readers.iter().enumerate().skip(1) {
        let parent = match vpids.iter().position(|&v| v == r.state.vppid) {
            Some(j) if j != i => j,
            _ => {
                warnings.push(format!(
                    "{} (pid {}): its parent {} is not among the images; it is restarted as a child of {}",
                    p.display(),
                    r.state.vpid,
                    r.state.vppid,
                    vpids[0]
                ));
                0
            }
        };
        children.entry(parent).or_default().push(i);
    }
    let mut order = vec![0usize];
    let mut parent_of: HashMap<usize, usize> = HashMap::new();
    let mut k = 0;
    while k < order.len() {
        let at = order[k];
        for &c in children.get(&at).map(Vec::as_slice).unwrap_or(&[]) {
            if !parent_of.contains_key(&c) && c != 0 {
                parent_of.insert(c, at);
                order.push(c);
            }
        }
        k += 1;
    }
    if order.len() != readers.len() {
        return Err(Error::Usage(
            "the images' parent links form a cycle: they are not one process tree".into(),
        ));
    }
    let mut slots: Vec<Option<(PathBuf, ImageReader)>> = readers.into_iter().map(Some).collect();
    let pos: HashMap<usize, usize> = order.iter().enumerate().map(|(n, &i)| (i, n)).collect();
    let mut procs = Vec::new();
    for &i in &order {
        let (p, r) = slots[i]
            .take()
            .ok_or_else(|| Error::Usage("an image is listed twice".into()))?;
        procs.push((p, r, parent_of.get(&i).and_then(|j| pos.get(j).copied())));
    }
    Ok(Plan { procs, warnings })
}

/// Current process group and session of `pid` (/proc/pid/stat fields 5, 6).
fn pgid_sid(pid: pid_t) -> Option<(pid_t, pid_t)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().skip(2);
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// Put husk `husk` (stopped) in the session and group the image names:
/// its own session or group when it led one, else the group of another
/// process of the tree; ids outside the tree are left as inherited.
fn set_ids(
    husk: pid_t,
    st: &ProcessState,
    real: &HashMap<i32, pid_t>,
    warnings: &mut Vec<String>,
) -> Result<(), Error> {
    let t = Tracee::new(husk)?;
    if st.vsid == st.vpid {
        let r = tracee::syscall_in_place(&t, husk, libc::SYS_setsid, &[])?;
        if r < 0 {
            warnings.push(format!(
                "process {}: setsid failed: {}",
                st.vpid,
                tracee::errno_text(r)
            ));
        }
    }
    let group = if st.vpgid == st.vpid {
        Some(0)
    } else {
        real.get(&st.vpgid).copied()
    };
    if let Some(g) = group {
        if st.vsid != st.vpid && pgid_sid(husk).map(|(pg, _)| pg) != Some(g) {
            let r = tracee::syscall_in_place(&t, husk, libc::SYS_setpgid, &[0, g as u64])?;
            if r < 0 {
                warnings.push(format!(
                    "process {}: cannot join process group {}: {}",
                    st.vpid,
                    st.vpgid,
                    tracee::errno_text(r)
                ));
            }
        }
    }
    Ok(())
}

/// Restore the tree of `images` (the root first). Every process is
/// stopped and ready to run, root first in the result; on any error every
/// process made so far is killed.
pub fn restart_tree(
    images: &[PathBuf],
    plugins: &mut Vec<Box<dyn Plugin>>,
    opts: &RestartOptions,
) -> Result<(Vec<Restored>, Vec<String>), Error> {
    let plan = plan(images)?;
    let mut warnings = plan.warnings;
    let mut husks: Vec<pid_t> = Vec::new();
    let kill_all = |husks: &[pid_t]| {
        for &h in husks.iter().rev() {
            restore::kill_husk(h);
        }
    };
    let mut real: HashMap<i32, pid_t> = HashMap::new();
    let made = (|| {
        for (path, reader, parent) in &plan.procs {
            let st = &reader.state;
            let husk = match parent {
                None => restore::new_husk(st.vpid, options())?,
                Some(j) => {
                    let ph = husks[*j];
                    let t = Tracee::new(ph)?;
                    tracee::fork_husk(&t, ph, Some(st.vpid))?
                }
            };
            husks.push(husk);
            real.insert(st.vpid, husk);
            set_ids(husk, st, &real, &mut warnings)
                .map_err(|e| Error::Restore(format!("{}: {e}", path.display())))?;
        }
        Ok::<(), Error>(())
    })();
    if let Err(e) = made {
        kill_all(&husks);
        return Err(e);
    }
    let states: Vec<&ProcessState> = plan.procs.iter().map(|(_, r, _)| &r.state).collect();
    let pipes = match SharedPipes::make(&states) {
        Ok(p) => p,
        Err(e) => {
            kill_all(&husks);
            return Err(e);
        }
    };
    // Shared memory several processes map is made once (see `shm`).
    let memory = match SharedMemory::prepare(&states, opts.recreate_ipc) {
        Ok(m) => m,
        Err(e) => {
            kill_all(&husks);
            return Err(e);
        }
    };
    // When some pid could not be taken back, every process translates.
    let translate = real.iter().any(|(v, r)| v != r);
    let (traced, ioctls) = crate::plugin::traps(plugins, translate);
    let build = move |addr: u64| crate::seccomp::filter(&traced, &ioctls, addr);
    let sub = RestartOptions {
        env: opts.env.clone(),
        progress: opts.progress,
        seccomp: if translate {
            Some(&build)
        } else {
            opts.seccomp
        },
        notsc: opts.notsc,
        shared_pipes: Some(&pipes),
        sockets: opts.sockets,
        shared_memory: Some(&memory),
        recreate_ipc: opts.recreate_ipc,
    };
    let mut done: Vec<Restored> = Vec::new();
    for (n, (path, reader, _)) in plan.procs.into_iter().enumerate() {
        match restore::restart_into(reader, &path, husks[n], plugins, &sub) {
            Ok(r) => done.push(r),
            Err(e) => {
                // restart_into killed its own husk; the others go too.
                let rest: Vec<pid_t> = husks
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i != n)
                    .map(|(_, &h)| h)
                    .collect();
                kill_all(&rest);
                return Err(Error::Restore(format!("{}: {e}", path.display())));
            }
        }
    }
    warnings.extend(memory.finish());
    Ok((done, warnings))
}

/// Split `images` into process trees, each root first (the others keep
/// their order): an image joins the tree of the image that holds its
/// parent's virtual pid; one whose parent is not among them (or is
/// ambiguous: two images of that pid, from two hosts) roots a tree of its
/// own. Several sessions' images, restarted through a coordinator, are
/// thus told apart by their parent links alone.
pub fn group(images: &[PathBuf]) -> Result<Vec<Vec<PathBuf>>, Error> {
    let mut ids = Vec::new();
    for p in images {
        let r = ImageReader::open(p)?;
        ids.push((r.state.vpid, r.state.vppid));
    }
    Ok(group_ids(&ids)
        .into_iter()
        .map(|g| g.into_iter().map(|i| images[i].clone()).collect())
        .collect())
}

/// [`group`] over (vpid, vppid) pairs: trees of indices, root first.
fn group_ids(ids: &[(i32, i32)]) -> Vec<Vec<usize>> {
    let mut by_vpid: HashMap<i32, Option<usize>> = HashMap::new();
    for (i, &(vpid, _)) in ids.iter().enumerate() {
        by_vpid
            .entry(vpid)
            .and_modify(|e| *e = None)
            .or_insert(Some(i));
    }
    let parent = |i: usize| match by_vpid.get(&ids[i].1) {
        Some(&Some(j)) if j != i => Some(j),
        _ => None,
    };
    // The root of each image: follow parents (a cycle roots where it closes).
    let root = |mut i: usize| {
        let mut seen = HashSet::new();
        while let Some(j) = parent(i) {
            if !seen.insert(i) {
                break;
            }
            i = j;
        }
        i
    };
    let mut trees: Vec<(usize, Vec<usize>)> = Vec::new();
    for i in 0..ids.len() {
        let r = root(i);
        match trees.iter_mut().find(|(t, _)| *t == r) {
            Some((_, members)) => members.push(i),
            None => trees.push((r, vec![i])),
        }
    }
    for (r, members) in &mut trees {
        if let Some(k) = members.iter().position(|m| m == r) {
            let root = members.remove(k);
            members.insert(0, root);
        }
    }
    trees.into_iter().map(|(_, m)| m).collect()
}

/// The name of a process's image: `ckpt_<comm>_<virtual pid>.rwd`.
pub fn image_name(dir: &Path, comm: &str, vpid: i32) -> PathBuf {
    let name: String = comm
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("ckpt_{name}_{vpid}.rwd"))
}

#[cfg(test)]
mod tests {
    use super::group_ids;

    #[test]
    fn images_of_several_sessions_split_into_their_trees() {
        // Two sessions: 10 -> 11 -> 12 and 20 -> 21, interleaved, a child
        // listed before its root.
        let ids = [(11, 10), (20, 1), (10, 5), (21, 20), (12, 11)];
        assert_eq!(group_ids(&ids), vec![vec![2, 0, 4], vec![1, 3]]);
    }

    #[test]
    fn an_orphan_or_an_ambiguous_parent_roots_its_own_tree() {
        // 30's parent is absent; 40 appears twice (two hosts), so 41's
        // parent is ambiguous.
        let ids = [(30, 7), (40, 1), (40, 2), (41, 40)];
        assert_eq!(group_ids(&ids), vec![vec![0], vec![1], vec![2], vec![3]]);
    }

    #[test]
    fn a_parent_cycle_does_not_loop() {
        let ids = [(1, 2), (2, 1)];
        let trees = group_ids(&ids);
        assert_eq!(trees.iter().map(Vec::len).sum::<usize>(), 2);
    }
}
