//! Job control across checkpoints (the built-in `jobs` plugin): a process
//! stopped by it (Ctrl-Z, a background read of its terminal, SIGSTOP)
//! stays stopped until its SIGCONT, after a checkpoint it runs on from and
//! after a restart, as its shell expects.
//!
//! The session keeps such a process in its group-stop (PTRACE_LISTEN, see
//! [`crate::tracee::Thread::job_stop`]); its image says so
//! ([`JobStop`] in the plugin data), and the restarted process is held
//! the same way: stopped, without a new stop for its parent to see, until
//! a SIGCONT wakes it.

use crate::image::format::{JobStop, ProcessState};
use crate::plugin::{CaptureCtx, Plugin};
use crate::tracee::Tracee;
use crate::Error;

pub const PLUGIN_NAME: &str = "jobs";

pub struct Jobs;

impl Plugin for Jobs {
    fn name(&self) -> &'static str {
        PLUGIN_NAME
    }

    fn pre_checkpoint(&mut self, ctx: &mut CaptureCtx) -> Result<(), Error> {
        if let Some(signal) = stopped(ctx.tracee) {
            let bytes =
                bincode::serde::encode_to_vec(JobStop { signal }, bincode::config::standard())
                    .map_err(|e| Error::Tracee(format!("job control state: {e}")))?;
            ctx.state.plugin_data.push((PLUGIN_NAME.to_string(), bytes));
        }
        Ok(())
    }
}

/// The signal that stopped `tracee`, if every thread of it is in a
/// job-control stop.
pub fn stopped(tracee: &Tracee) -> Option<i32> {
    let mut signals = tracee.threads.values().map(|t| t.job_stop);
    let first = signals.next()??;
    signals.all(|s| s.is_some()).then_some(first)
}

/// The job-control stop an image records.
pub fn stop_of(state: &ProcessState) -> Option<i32> {
    let (_, bytes) = state.plugin_data.iter().find(|(n, _)| n == PLUGIN_NAME)?;
    bincode::serde::decode_from_slice::<JobStop, _>(bytes, bincode::config::standard())
        .ok()
        .map(|(j, _)| j.signal)
}

/// Hold a restored process in the job-control stop its image records
/// (its threads are kept stopped when the session lets them go).
pub fn restore(tracee: &mut Tracee, state: &ProcessState) {
    if let Some(signal) = stop_of(state) {
        for t in tracee.threads.values_mut() {
            t.job_stop = Some(signal);
        }
    }
}
