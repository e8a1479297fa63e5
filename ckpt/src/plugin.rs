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
//! emulate them, or ask with [`SyscallAction::RunWatchExit`] to see the
//! result in [`Plugin::on_syscall_exit`]; [`Plugin::ioctls`] traps ioctls
//! by their type byte. Descriptors whose `/proc/PID/fd` link starts with one
//! of [`Plugin::fd_prefixes`] are the plugin's: the file plugin records them
//! as [`crate::image::format::FdKind::Plugin`] and leaves them to the plugin
//! at restart. Plugins outside this crate are made known with [`register`].
//! The built-in handling of descriptors ([`crate::fds`]) and of
//! process ids ([`crate::vids`]) are plugins too: read them as examples.

use libc::{pid_t, user_regs_struct};

use std::sync::Mutex;

use crate::image::format::ProcessState;
pub use crate::seccomp::IoctlTrap;
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
    /// Link prefixes of descriptors some plugin owns, with its name.
    pub claimed_fds: &'a [(&'static str, &'static str)],
    /// The sockets of the whole program (its process tree), read for this
    /// checkpoint; None when the process is captured alone.
    pub sockets: Option<&'a crate::sockets::Census>,
    /// Which process of the checkpoint this is: 0 for the root of a tree
    /// (or a lone process), captured first; state of the whole program
    /// belongs in that image.
    pub tree_index: usize,
}

pub struct ResumeCtx<'a> {
    pub tracee: &'a Tracee,
    /// Still installed: a plugin can put back what it drained.
    pub injector: &'a Injector,
    pub state: &'a ProcessState,
}

pub struct RestoreCtx<'a> {
    pub tracee: &'a Tracee,
    pub injector: &'a Injector,
    pub state: &'a ProcessState,
    pub vids: &'a mut VirtualIds,
    pub warnings: &'a mut Vec<String>,
    /// Pipes of a process tree, shared with other processes being restored.
    pub shared_pipes: Option<&'a crate::tree::SharedPipes>,
    /// The sockets of every image being restored, made by rewind; None when
    /// the process is restored alone.
    pub sockets: Option<&'a crate::sockets::Rebuilt>,
    /// The shared memory objects of every image being restored, made by
    /// rewind (see `crate::shm`).
    pub shared_memory: Option<&'a crate::shm::SharedMemory>,
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
    /// Let it run and call this plugin's [`Plugin::on_syscall_exit`] with
    /// its result.
    RunWatchExit,
}

pub trait Plugin {
    fn name(&self) -> &'static str;

    /// Syscall numbers to trap while the program runs (restart/record).
    fn syscalls(&self) -> &'static [i64] {
        &[]
    }

    /// ioctls to trap while the program runs, by request type byte.
    fn ioctls(&self) -> &'static [IoctlTrap] {
        &[]
    }

    /// `/proc/PID/fd` link prefixes of the descriptors this plugin
    /// recreates itself at restart.
    fn fd_prefixes(&self) -> &'static [&'static str] {
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

    /// The end of a syscall for which [`Plugin::on_syscall`] returned
    /// [`SyscallAction::RunWatchExit`]: `ctx.regs` holds the registers at
    /// the syscall's exit (`rax` the result), the arguments as the kernel
    /// saw them.
    fn on_syscall_exit(&mut self, _ctx: &mut SyscallCtx, _result: i64) -> Result<(), Error> {
        Ok(())
    }
}

/// Makes a plugin.
pub type Factory = fn() -> Box<dyn Plugin>;

static REGISTRY: Mutex<Vec<(&'static str, Factory)>> = Mutex::new(Vec::new());

/// Make a plugin known by name to `--plugin` (done once by the binary for
/// the plugin crates it links).
pub fn register(name: &'static str, make: Factory) {
    if let Ok(mut r) = REGISTRY.lock() {
        if !r.iter().any(|(n, _)| *n == name) {
            r.push((name, make));
        }
    }
}

/// A new instance of the registered plugin `name`.
pub fn make(name: &str) -> Option<Box<dyn Plugin>> {
    if name == crate::zombies::PLUGIN_NAME {
        return Some(Box::new(crate::zombies::Zombies));
    }
    if name == crate::creds::PLUGIN_NAME {
        return Some(Box::new(crate::creds::Creds));
    }
    let registry = REGISTRY.lock().ok()?;
    registry.iter().find(|(n, _)| *n == name).map(|(_, f)| f())
}

/// Load the plugins an image's state names (its plugin descriptors and
/// plugin data) that are not loaded yet, so `restart` needs no `--plugin`.
pub fn add_needed(plugins: &mut Vec<Box<dyn Plugin>>, state: &ProcessState) -> Result<(), Error> {
    use crate::image::format::FdKind;
    let mut needed: Vec<&str> = state
        .fds
        .iter()
        .filter_map(|f| match &f.kind {
            FdKind::Plugin { plugin, .. } => Some(plugin.as_str()),
            _ => None,
        })
        .chain(state.plugin_data.iter().map(|(n, _)| n.as_str()))
        .collect();
    needed.dedup();
    for name in needed {
        if plugins.iter().any(|p| p.name() == name) {
            continue;
        }
        match make(name) {
            Some(p) => plugins.push(p),
            None => {
                return Err(Error::Usage(format!(
                    "the image needs the {name:?} plugin, which this build of rewind lacks"
                )))
            }
        }
    }
    Ok(())
}

/// The registered plugin that would own a descriptor with this `/proc`
/// link (for a hint when that plugin is not loaded).
pub fn registered_owner(link: &str) -> Option<&'static str> {
    let registry = REGISTRY.lock().ok()?.clone();
    registry
        .iter()
        .find(|(_, make)| make().fd_prefixes().iter().any(|p| link.starts_with(p)))
        .map(|(name, _)| *name)
}

/// Names of the registered plugins.
pub fn available() -> Vec<&'static str> {
    REGISTRY
        .lock()
        .map(|r| r.iter().map(|(n, _)| *n).collect())
        .unwrap_or_default()
}

/// The plugins every session has.
pub fn builtin() -> Vec<Box<dyn Plugin>> {
    vec![
        Box::new(crate::fds::Files),
        Box::new(crate::vids::Pids::new()),
        Box::new(crate::sysv::SysV::new()),
        Box::new(crate::creds::Creds),
    ]
}

/// Plugins by name (`--plugin a,b` or repeated `--plugin`); the built-in
/// ones always come first.
pub fn by_names(names: &[String]) -> Result<Vec<Box<dyn Plugin>>, Error> {
    let mut out = builtin();
    // Sessions (launch, restart) bring back unreaped children too; record
    // and replay need not (a replayed `wait` is the recorded one).
    out.push(Box::new(crate::zombies::Zombies));
    let registry = REGISTRY.lock().map(|r| r.clone()).unwrap_or_default();
    let mut seen: Vec<&str> = Vec::new();
    for name in names
        .iter()
        .flat_map(|n| n.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        if seen.contains(&name) {
            continue;
        }
        let Some((_, make)) = registry.iter().find(|(n, _)| *n == name) else {
            let known: Vec<&str> = registry.iter().map(|(n, _)| *n).collect();
            return Err(Error::Usage(format!(
                "unknown plugin {name:?} (available: {})",
                if known.is_empty() {
                    "none besides the built-in files, pids, sysv, creds and zombies".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        seen.push(name);
        out.push(make());
    }
    Ok(out)
}

/// The syscalls and ioctls the plugins trap, merged. Without `translate`
/// (every virtual id equals its real one) the pid plugin needs none.
pub fn traps(plugins: &[Box<dyn Plugin>], translate: bool) -> (Vec<i64>, Vec<IoctlTrap>) {
    let mut traced: Vec<i64> = plugins
        .iter()
        .filter(|p| translate || p.name() != crate::vids::PLUGIN_NAME)
        .flat_map(|p| p.syscalls().iter().copied())
        .collect();
    traced.sort_unstable();
    traced.dedup();
    let ioctls = plugins
        .iter()
        .flat_map(|p| p.ioctls().iter().copied())
        .collect();
    (traced, ioctls)
}

/// Which plugin owns a descriptor with this `/proc/PID/fd` link.
pub fn claimed_fds(plugins: &[Box<dyn Plugin>]) -> Vec<(&'static str, &'static str)> {
    plugins
        .iter()
        .flat_map(|p| p.fd_prefixes().iter().map(move |&pre| (pre, p.name())))
        .collect()
}
