//! The program's user and group ids.
//!
//! A program started as root may have changed them (a server dropping its
//! privileges, `runuser`, `su`), and one started by an unprivileged user
//! has that user's. A restart makes the program in a husk forked by rewind,
//! which runs as root: without this the restored program kept rewind's ids,
//! so a PostgreSQL server that ran as `postgres` came back as root (and
//! `pg_ctl stop`, run as postgres, could no longer signal it).
//!
//! The built-in `creds` plugin stores the real, effective, saved and
//! filesystem user and group ids and the supplementary groups of every
//! process in its image; `rewind restart` gives them back as the last step
//! that needs privileges (after the memory layout, the seccomp filter...),
//! through injected `setgroups`, `setresgid`, `setfsgid`, `setresuid` and
//! `setfsuid`. Ids the restored process already has are left alone, so a
//! program that kept rewind's own ids costs nothing. Replay and inspection
//! do not change ids (they never act on the machine).

use serde::{Deserialize, Serialize};

use crate::image::format::ProcessState;
use crate::plugin::{CaptureCtx, Plugin};
use crate::tracee::{Injector, Tracee};
use crate::Error;

/// The plugin's name, and its key in an image's `plugin_data`.
pub const PLUGIN_NAME: &str = "creds";

/// A process's ids, as /proc/PID/status shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// Real, effective, saved, filesystem user ids.
    pub uid: [u32; 4],
    /// Real, effective, saved, filesystem group ids.
    pub gid: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// PR_GET_DUMPABLE: any change of ids makes a process non-dumpable,
    /// which an exec after it undoes; the restart sets it back.
    pub dumpable: u64,
}

impl Credentials {
    /// The ids of process `pid` now.
    pub fn of(pid: libc::pid_t) -> Result<Credentials, Error> {
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let line = |key: &str| -> Vec<u32> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| {
                    v.split_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        let four = |v: Vec<u32>| -> Result<[u32; 4], Error> {
            v.try_into()
                .map_err(|_| Error::Tracee(format!("{path}: unexpected Uid/Gid line")))
        };
        Ok(Credentials {
            uid: four(line("Uid:"))?,
            gid: four(line("Gid:"))?,
            groups: line("Groups:"),
            dumpable: 1,
        })
    }

    /// The credentials an image stores, if any.
    pub fn in_image(state: &ProcessState) -> Option<Result<Credentials, Error>> {
        let (_, bytes) = state.plugin_data.iter().find(|(n, _)| n == PLUGIN_NAME)?;
        Some(
            bincode::serde::decode_from_slice(bytes, bincode::config::standard())
                .map(|(c, _)| c)
                .map_err(|e| Error::Restore(format!("user and group ids in the image: {e}"))),
        )
    }

    /// Give the stopped process `tracee` these ids through injected
    /// syscalls in its thread `tid` (the process-wide ones: every thread of
    /// the restored process shares them until it changes its own).
    pub fn apply(&self, tracee: &Tracee, inj: &Injector) -> Result<(), Error> {
        let pid = tracee.pid;
        let now = Credentials::of(pid)?;
        if (&now.uid, &now.gid, &now.groups) == (&self.uid, &self.gid, &self.groups) {
            return Ok(());
        }
        let fail = |what: &str, e: Error| {
            Error::Restore(format!(
                "cannot give the program back its {what} (uids {:?}, gids {:?}, groups {:?}): {e}",
                self.uid, self.gid, self.groups
            ))
        };
        let mut list: Vec<u8> = Vec::new();
        for g in &self.groups {
            list.extend_from_slice(&g.to_le_bytes());
        }
        if list.len() as u64 > crate::tracee::PAGE {
            return Err(fail(
                "supplementary groups",
                Error::Restore("too many".into()),
            ));
        }
        tracee.write_mem(inj.scratch(), &list)?;
        let [ru, eu, su, fu] = self.uid.map(u64::from);
        let [rg, eg, sg, fg] = self.gid.map(u64::from);
        let steps: [(&str, i64, Vec<u64>); 5] = [
            (
                "supplementary groups",
                libc::SYS_setgroups,
                vec![self.groups.len() as u64, inj.scratch()],
            ),
            ("group ids", libc::SYS_setresgid, vec![rg, eg, sg]),
            ("filesystem group id", libc::SYS_setfsgid, vec![fg]),
            ("user ids", libc::SYS_setresuid, vec![ru, eu, su]),
            ("filesystem user id", libc::SYS_setfsuid, vec![fu]),
        ];
        for (what, nr, args) in steps {
            // setfsuid/setfsgid return the previous id, never an error.
            let ret = inj.syscall(pid, nr, &args)?;
            if ret < 0 && !matches!(nr, libc::SYS_setfsuid | libc::SYS_setfsgid) {
                return Err(fail(what, Error::Restore(crate::tracee::errno_text(ret))));
            }
        }
        inj.call(
            pid,
            "prctl(PR_SET_DUMPABLE)",
            libc::SYS_prctl,
            &[libc::PR_SET_DUMPABLE as u64, self.dumpable],
        )?;
        let after = Credentials::of(pid)?;
        if (&after.uid, &after.gid, &after.groups) != (&self.uid, &self.gid, &self.groups) {
            return Err(fail(
                "ids",
                Error::Restore(format!(
                    "it has uids {:?}, gids {:?}, groups {:?}",
                    after.uid, after.gid, after.groups
                )),
            ));
        }
        Ok(())
    }
}

/// See the module documentation.
#[derive(Default)]
pub struct Creds;

impl Plugin for Creds {
    fn name(&self) -> &'static str {
        PLUGIN_NAME
    }

    fn pre_checkpoint(&mut self, ctx: &mut CaptureCtx) -> Result<(), Error> {
        let pid = ctx.tracee.pid;
        let mut creds = Credentials::of(pid)?;
        creds.dumpable = ctx.injector.call(
            pid,
            "prctl(PR_GET_DUMPABLE)",
            libc::SYS_prctl,
            &[libc::PR_GET_DUMPABLE as u64],
        )?;
        let bytes = bincode::serde::encode_to_vec(&creds, bincode::config::standard())
            .map_err(|e| Error::Tracee(format!("user and group ids: {e}")))?;
        ctx.state.plugin_data.push((PLUGIN_NAME.to_string(), bytes));
        Ok(())
    }
}
