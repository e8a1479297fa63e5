//! Plugins adapt the engine to state that lives outside process memory
//! (DESIGN §3), with DMTCP's events.
//!
//! # Writing a plugin
//!
//! Implement [`Plugin`] and hand it to the session (`--plugin NAME`). At a
//! checkpoint every thread of the program is stopped, then each plugin's
//! [`Plugin::pre_checkpoint`] runs: drain what is in flight, save device
//! state into [`CaptureCtx::state`] (use `plugin_data` under your name for
//! anything the image does not model). Memory is captured after all plugins
//! ran. Then [`Plugin::resume`] runs before the program continues. At
//! restart, after memory and threads exist again and before any thread runs,
//! [`Plugin::restart`] recreates your objects (injected syscalls through
//! [`RestoreCtx::injector`] run inside the program) and rebinds virtual ids.
//! [`Plugin::syscalls`] names the syscalls the plugin wants to see while the
//! program runs; [`Plugin::on_syscall`] may then rewrite their arguments or
//! emulate them. The built-in handling of descriptors ([`crate::fds`]) and of
//! process ids ([`crate::vids`]) are plugins too: read them as examples.

use libc::{pid_t, user_regs_struct};

use crate::image::format::ProcessState;
use crate::tracee::{Injector, Tracee};
use crate::vids::VirtualIds;
use crate::Error;

/// Identity (device, inode) of the descriptors 0, 1, 2 the session itself
/// passed to the program, so they can be re-bound at restart.
pub type StdioIds = [Option<(u64, u64)>; 3];

pub struct CaptureCtx<'a> {
    pub tracee: &'a Tracee,
    pub injector: &'a Injector,
    pub state: &'a mut ProcessState,
    pub stdio: &'a StdioIds,
    pub vids: &'a VirtualIds,
    pub warnings: &'a mut Vec<String>,
}

pub struct ResumeCtx<'a> {
    pub tracee: &'a Tracee,
    pub state: &'a ProcessState,
}

pub struct RestoreCtx<'a> {
    pub tracee: &'a Tracee,
    pub injector: &'a Injector,
    pub state: &'a ProcessState,
    pub vids: &'a mut VirtualIds,
    pub warnings: &'a mut Vec<String>,
}

pub struct SyscallCtx<'a> {
    pub tracee: &'a Tracee,
    pub tid: pid_t,
    /// Registers at syscall entry: `orig_rax` is the number, the arguments
    /// are in rdi, rsi, rdx, r10, r8, r9. Changes are written back.
    pub regs: &'a mut user_regs_struct,
    pub vids: &'a VirtualIds,
    /// A scratch area in the program (per thread) for rewritten arguments,
    /// if the session has one: (address, size).
    pub scratch: Option<(u64, u64)>,
}

/// What to do with a trapped syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallAction {
    /// Let it run (with the possibly rewritten registers).
    Run,
    /// Skip it and return this value.
    Emulate(i64),
}

pub trait Plugin {
    fn name(&self) -> &'static str;

    /// Syscall numbers to trap while the program runs (restart/record).
    fn syscalls(&self) -> &'static [i64] {
        &[]
    }

    fn pre_checkpoint(&mut self, _ctx: &mut CaptureCtx) -> Result<(), Error> {
        Ok(())
    }

    fn resume(&mut self, _ctx: &mut ResumeCtx) -> Result<(), Error> {
        Ok(())
    }

    fn restart(&mut self, _ctx: &mut RestoreCtx) -> Result<(), Error> {
        Ok(())
    }

    fn on_syscall(&mut self, _ctx: &mut SyscallCtx) -> Result<SyscallAction, Error> {
        Ok(SyscallAction::Run)
    }
}

/// The plugins every session has.
pub fn builtin() -> Vec<Box<dyn Plugin>> {
    vec![
        Box::new(crate::fds::Files),
        Box::new(crate::vids::Pids::new()),
    ]
}

/// Plugins by name (`--plugin a,b`); the built-in ones always come first.
pub fn by_names(names: &[String]) -> Result<Vec<Box<dyn Plugin>>, Error> {
    match names.iter().find(|n| !n.is_empty()) {
        Some(name) => Err(Error::Usage(format!(
            "unknown plugin {name:?} (this build has only the built-in files and pids plugins)"
        ))),
        None => Ok(builtin()),
    }
}
