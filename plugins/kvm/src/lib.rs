//! The KVM plugin (`--plugin kvm`): checkpoint and restart programs that
//! run virtual machines through `/dev/kvm` (DESIGN §3, plugins).
//!
//! # What it virtualizes
//!
//! - **The VM and its vCPUs** are kernel objects behind descriptors
//!   (`anon_inode:kvm-vm`, `anon_inode:kvm-vcpu:N`) that no `/proc` file
//!   describes, so the plugin traps the program's KVM ioctls from its first
//!   instruction (seccomp, `KVM_RUN` excepted: it runs at full speed) and
//!   keeps the ones that configure the VM, in order, with their arguments
//!   and results: `KVM_CREATE_VM`'s type, `KVM_CREATE_VCPU`, memory slots
//!   (`KVM_SET_USER_MEMORY_REGION[2]`), `KVM_SET_TSS_ADDR`,
//!   `KVM_SET_IDENTITY_MAP_ADDR`, `KVM_CREATE_IRQCHIP`, `KVM_CREATE_PIT2`,
//!   `KVM_ENABLE_CAP`, `KVM_IRQFD`, `KVM_IOEVENTFD`, `KVM_SET_GSI_ROUTING`,
//!   coalesced MMIO zones, and per vCPU `KVM_SET_CPUID2`, `KVM_ENABLE_CAP`,
//!   `KVM_SET_SIGNAL_MASK`, `KVM_SET_GUEST_DEBUG`, `KVM_X86_SETUP_MCE`,
//!   `KVM_SET_TSC_KHZ`.
//! - **At a checkpoint** it reads, through ioctls injected into the stopped
//!   program (KVM answers only the process that created the VM), every
//!   vCPU's registers, special registers, XSAVE (or FPU) state, XCRs, every
//!   MSR KVM lists, local APIC, pending events, MP state and debug
//!   registers; the VM's clock and, when the program created them, the
//!   interrupt controllers and the PIT; and each vCPU's `kvm_run` page.
//! - **Guest memory** is the program's own memory: it comes with the image.
//! - **At restart** it opens `/dev/kvm` in the new process, creates the VM,
//!   replays the configuration log (memory slots point at the restored
//!   memory, at the same addresses), sets every captured state, maps each
//!   `kvm_run` at its old address with its old contents, and puts every
//!   descriptor at its old number.
//! - **An exit in progress**: after an I/O or MMIO exit, KVM may finish the
//!   instruction only when the program calls `KVM_RUN` again, from state
//!   it keeps to itself. When a checkpoint falls between the two: an
//!   output (`out`, MMIO write) needs nothing from the program, so the
//!   checkpoint completes it at once (an injected `KVM_RUN` with
//!   `immediate_exit`, the `kvm_run` page put back after); an input (`in`,
//!   MMIO read) waits for the program's data, so restart re-executes the
//!   instruction once (an injected `KVM_RUN`, the guest's rip is still on
//!   it), checks that it makes the same exit, then puts the saved
//!   `kvm_run` back: the program finds its exit as it left it.
//!
//! # Limits
//!
//! - One VM per process (a second one is refused at the checkpoint with a
//!   clear error). The plugin must watch from the start (`rewind launch
//!   --plugin kvm`); a VM it did not see created is refused too.
//! - Unknown KVM ioctls that change VM configuration are named in a
//!   checkpoint warning: they are not replayed.
//! - The re-executed exit is checked; if the guest takes another path (an
//!   interrupt injected first by an in-kernel irqchip), restart fails
//!   cleanly rather than diverge.
//! - Nested virtualization state, SEV/TDX guests, guest_memfd slots and
//!   dirty-ring logging are not handled.

mod abi;

use std::collections::{BTreeSet, HashMap};

use libc::pid_t;
use rewind_ckpt::image::format::{FdKind, ProcessState};
use rewind_ckpt::plugin::{CaptureCtx, IoctlTrap, Plugin, RestoreCtx, SyscallAction, SyscallCtx};
use rewind_ckpt::tracee::{Injector, Tracee};
use rewind_ckpt::Error;
use serde::{Deserialize, Serialize};

pub const NAME: &str = "kvm";

/// Link prefixes of the descriptors the plugin owns.
const VM_LINK: &str = "anon_inode:kvm-vm";
const VCPU_LINK: &str = "anon_inode:kvm-vcpu:";

/// The program's argument to a logged ioctl.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Arg {
    Value(u64),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Target {
    Vm,
    Vcpu(u32),
}

/// One configuration ioctl the program made, and its result.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Logged {
    target: Target,
    req: u32,
    arg: Arg,
    result: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct VcpuState {
    id: u32,
    fd: i32,
    regs: Vec<u8>,
    sregs: Vec<u8>,
    xsave: Option<Vec<u8>>,
    fpu: Option<Vec<u8>>,
    xcrs: Option<Vec<u8>>,
    msrs: Vec<(u32, u64)>,
    lapic: Option<Vec<u8>>,
    events: Option<Vec<u8>>,
    mp_state: Option<Vec<u8>>,
    debugregs: Option<Vec<u8>>,
    /// The `kvm_run` mapping (start, end, prot) and its bytes.
    run_map: Option<(u64, u64, u32)>,
    run: Vec<u8>,
    /// An input exit KVM will complete at the next `KVM_RUN`: restart
    /// re-creates it.
    redo_input: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct VmState {
    fd: i32,
    clock: Option<Vec<u8>>,
    irqchips: Vec<Vec<u8>>,
    pit: Option<Vec<u8>>,
    vcpus: Vec<VcpuState>,
}

/// What goes into the image (`plugin_data` under "kvm").
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Saved {
    vm_type: u64,
    log: Vec<Logged>,
    vm: VmState,
}

/// An ioctl seen at its entry, waiting for its result.
#[derive(Debug, Clone)]
enum Pending {
    CreateVm(u64),
    Config(Logged),
}

#[derive(Default)]
pub struct Kvm {
    vm_type: Option<u64>,
    vms_created: u32,
    log: Vec<Logged>,
    pending: HashMap<pid_t, Pending>,
    /// KVM ioctls seen that change state the plugin does not restore.
    unknown: BTreeSet<u32>,
}

impl Kvm {
    pub fn new() -> Kvm {
        Kvm::default()
    }
}

/// Make `--plugin kvm` known.
pub fn register() {
    rewind_ckpt::plugin::register(NAME, || Box::new(Kvm::new()));
}

const TRAPS: &[IoctlTrap] = &[IoctlTrap {
    ty: abi::TYPE,
    except: &[abi::KVM_RUN],
}];

impl Plugin for Kvm {
    fn name(&self) -> &'static str {
        NAME
    }

    fn ioctls(&self) -> &'static [IoctlTrap] {
        TRAPS
    }

    fn fd_prefixes(&self) -> &'static [&'static str] {
        &[VM_LINK, VCPU_LINK]
    }

    fn on_syscall(&mut self, ctx: &mut SyscallCtx) -> Result<SyscallAction, Error> {
        let fd = ctx.regs.rdi as i32;
        let req = ctx.regs.rsi as u32;
        let arg = ctx.regs.rdx;
        let link = std::fs::read_link(format!("/proc/{}/fd/{fd}", ctx.tracee.pid))
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = if link == VM_LINK {
            Target::Vm
        } else if let Some(id) = link.strip_prefix(VCPU_LINK) {
            Target::Vcpu(id.parse().unwrap_or(0))
        } else {
            if req == abi::KVM_CREATE_VM {
                self.pending.insert(ctx.tid, Pending::CreateVm(arg));
                return Ok(SyscallAction::RunWatchExit);
            }
            return Ok(SyscallAction::Run);
        };
        let config = match target {
            Target::Vm => abi::VM_CONFIG,
            Target::Vcpu(_) => abi::VCPU_CONFIG,
        };
        if !config.contains(&req) {
            if abi::writes_arg(req) && !restored_state(req) {
                self.unknown.insert(req);
            }
            return Ok(SyscallAction::Run);
        }
        let arg = read_arg(ctx.tracee, req, arg)?;
        self.pending.insert(
            ctx.tid,
            Pending::Config(Logged {
                target,
                req,
                arg,
                result: 0,
            }),
        );
        Ok(SyscallAction::RunWatchExit)
    }

    fn on_syscall_exit(&mut self, ctx: &mut SyscallCtx, result: i64) -> Result<(), Error> {
        let Some(p) = self.pending.remove(&ctx.tid) else {
            return Ok(());
        };
        if result < 0 {
            return Ok(());
        }
        match p {
            Pending::CreateVm(ty) => {
                self.vm_type = Some(ty);
                self.vms_created += 1;
                if self.vms_created == 1 {
                    self.log.clear();
                }
            }
            Pending::Config(mut l) => {
                l.result = result;
                self.log.push(l);
            }
        }
        Ok(())
    }

    fn pre_checkpoint(&mut self, ctx: &mut CaptureCtx) -> Result<(), Error> {
        let (vms, vcpus) = owned_fds(ctx.state);
        let Some(&vm_fd) = vms.first() else {
            return Ok(());
        };
        if vms.len() > 1 {
            return Err(Error::Tracee(format!(
                "the program has {} KVM VMs (fds {:?}); the kvm plugin restores one",
                vms.len(),
                vms
            )));
        }
        let Some(vm_type) = self.vm_type else {
            return Err(Error::Tracee(format!(
                "fd {vm_fd} is a KVM VM the kvm plugin did not see created: launch the program with --plugin kvm"
            )));
        };
        for req in &self.unknown {
            ctx.warnings.push(format!(
                "kvm: the program used {} (not replayed at restart)",
                abi::name(*req)
            ));
        }
        let state = &*ctx.state;
        let captured = Remote::with(ctx.tracee, ctx.injector, |remote| {
            capture_vm(remote, state, &self.log, vm_fd, &vcpus)
        })?;
        let saved = Saved {
            vm_type,
            log: self.log.clone(),
            vm: captured,
        };
        let bytes = bincode::serde::encode_to_vec(&saved, bincode::config::standard())
            .map_err(|e| Error::Tracee(format!("kvm: cannot encode the VM state: {e}")))?;
        ctx.state.plugin_data.push((NAME.to_string(), bytes));
        Ok(())
    }

    fn restart(&mut self, ctx: &mut RestoreCtx) -> Result<(), Error> {
        let Some((_, bytes)) = ctx.state.plugin_data.iter().find(|(n, _)| n == NAME) else {
            return Ok(());
        };
        let (saved, _): (Saved, usize) =
            bincode::serde::decode_from_slice(bytes, bincode::config::standard()).map_err(|e| {
                Error::Restore(format!("kvm: the image's VM state is corrupt: {e}"))
            })?;
        Remote::with(ctx.tracee, ctx.injector, |remote| {
            restore_vm(remote, ctx.state, &saved)
        })?;
        self.vm_type = Some(saved.vm_type);
        self.vms_created = 1;
        self.log = saved.log;
        Ok(())
    }
}

/// State setters whose effect the checkpoint captures anyway, and runtime
/// requests that leave no configuration behind.
fn restored_state(req: u32) -> bool {
    use abi::*;
    [
        KVM_SET_REGS,
        KVM_SET_SREGS,
        KVM_SET_FPU,
        KVM_SET_XSAVE,
        KVM_SET_XCRS,
        KVM_SET_MSRS,
        KVM_SET_LAPIC,
        KVM_SET_VCPU_EVENTS,
        KVM_SET_MP_STATE,
        KVM_SET_DEBUGREGS,
        KVM_SET_IRQCHIP,
        KVM_SET_PIT2,
        KVM_SET_CLOCK,
        KVM_GET_MSRS,
        KVM_GET_IRQCHIP,
        0x4010_ae42, // KVM_GET_DIRTY_LOG
        0x4008_ae61, // KVM_IRQ_LINE
        0xc008_ae67, // KVM_IRQ_LINE_STATUS
        0x4004_ae86, // KVM_INTERRUPT
        0xc018_ae85, // KVM_TRANSLATE
    ]
    .contains(&req)
}

/// The argument of a configuration ioctl, read from the program.
fn read_arg(tracee: &Tracee, req: u32, arg: u64) -> Result<Arg, Error> {
    if !abi::writes_arg(req) {
        return Ok(Arg::Value(arg));
    }
    let fixed = abi::size(req);
    let len = match abi::entries(req) {
        Some((header, entry)) => {
            let mut h = [0u8; 4];
            tracee.read_mem(arg, &mut h)?;
            let n = u32::from_le_bytes(h) as usize;
            (header + n.saturating_mul(entry)).min(1 << 20)
        }
        None => fixed,
    };
    let mut b = vec![0u8; len];
    tracee.read_mem(arg, &mut b)?;
    Ok(Arg::Bytes(b))
}

/// The VM and vCPU descriptors (fd, vcpu id) the file plugin left to us.
fn owned_fds(state: &ProcessState) -> (Vec<i32>, Vec<(i32, u32)>) {
    let mut vms = Vec::new();
    let mut vcpus = Vec::new();
    for f in &state.fds {
        if let FdKind::Plugin { plugin, what } = &f.kind {
            if plugin != NAME {
                continue;
            }
            if what == VM_LINK {
                vms.push(f.fd);
            } else if let Some(id) = what.strip_prefix(VCPU_LINK) {
                vcpus.push((f.fd, id.parse().unwrap_or(0)));
            }
        }
    }
    (vms, vcpus)
}

/// A buffer mapped in the program, for ioctl arguments.
struct Remote<'a> {
    tracee: &'a Tracee,
    inj: &'a Injector,
    tid: pid_t,
    buf: u64,
}

const BUF_SIZE: usize = 64 * 1024;

impl<'a> Remote<'a> {
    /// Run `f` with a buffer mapped in the program, unmapped after.
    fn with<T>(
        tracee: &'a Tracee,
        inj: &'a Injector,
        f: impl FnOnce(&Remote) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let tid = tracee.pid;
        inj.with_buffer(tid, "kvm plugin buffer", BUF_SIZE as u64, |buf| {
            f(&Remote {
                tracee,
                inj,
                tid,
                buf,
            })
        })
    }

    fn syscall(&self, nr: i64, args: &[u64]) -> Result<i64, Error> {
        tracing::trace!("kvm: syscall {nr} {args:x?}");
        let ret = self.inj.syscall(self.tid, nr, args);
        tracing::trace!("kvm: -> {ret:?}");
        ret
    }

    /// ioctl with `input` copied into the buffer; the raw result.
    fn ioctl(&self, fd: i32, req: u32, input: &[u8]) -> Result<i64, Error> {
        if input.len() > BUF_SIZE {
            return Err(Error::Tracee(format!(
                "kvm: {} argument of {} bytes is too large",
                abi::name(req),
                input.len()
            )));
        }
        self.tracee.write_mem(self.buf, input)?;
        self.syscall(libc::SYS_ioctl, &[fd as u64, req as u64, self.buf])
    }

    /// A getter: `len` bytes (zeroed first, or `input`), None if KVM
    /// refuses it.
    fn get(&self, fd: i32, req: u32, input: &[u8], len: usize) -> Result<Option<Vec<u8>>, Error> {
        let mut first = input.to_vec();
        first.resize(len.max(input.len()), 0);
        if self.ioctl(fd, req, &first)? < 0 {
            return Ok(None);
        }
        Ok(Some(self.read(len)?))
    }

    fn get_fixed(&self, fd: i32, req: u32) -> Result<Option<Vec<u8>>, Error> {
        self.get(fd, req, &[], abi::size(req))
    }

    fn read(&self, len: usize) -> Result<Vec<u8>, Error> {
        let mut b = vec![0u8; len];
        self.tracee.read_mem(self.buf, &mut b)?;
        Ok(b)
    }

    /// ioctl that must succeed.
    fn set(&self, fd: i32, req: u32, input: &[u8], what: &str) -> Result<i64, Error> {
        let ret = self.ioctl(fd, req, input)?;
        if ret < 0 {
            return Err(Error::Restore(format!(
                "kvm: {} ({what}) failed: {}",
                abi::name(req),
                rewind_ckpt::tracee::errno_text(ret)
            )));
        }
        Ok(ret)
    }

    /// Open /dev/kvm in the program, at a descriptor >= `min`.
    fn open_kvm(&self, min: i32) -> Result<i32, Error> {
        self.tracee.write_mem(self.buf, b"/dev/kvm\0")?;
        let fd = self.syscall(
            libc::SYS_openat,
            &[
                libc::AT_FDCWD as u64,
                self.buf,
                (libc::O_RDWR | libc::O_CLOEXEC) as u64,
            ],
        )?;
        if fd < 0 {
            return Err(Error::Restore(format!(
                "kvm: cannot open /dev/kvm: {} (this machine or container has no KVM)",
                rewind_ckpt::tracee::errno_text(fd)
            )));
        }
        // KVM_GET_API_VERSION: 12 since Linux 2.6.22.
        let version = self.syscall(libc::SYS_ioctl, &[fd as u64, 0xae00, 0])?;
        if version != 12 {
            self.close(fd as i32);
            return Err(Error::Restore(format!(
                "kvm: /dev/kvm here is not a KVM device ({})",
                if version < 0 {
                    rewind_ckpt::tracee::errno_text(version)
                } else {
                    format!("API version {version}")
                }
            )));
        }
        self.move_above(fd as i32, min)
    }

    /// Move descriptor `fd` to the lowest free number >= `min`.
    fn move_above(&self, fd: i32, min: i32) -> Result<i32, Error> {
        let high = self.syscall(
            libc::SYS_fcntl,
            &[fd as u64, libc::F_DUPFD_CLOEXEC as u64, min as u64],
        )?;
        let _ = self.syscall(libc::SYS_close, &[fd as u64]);
        if high < 0 {
            return Err(Error::Restore(format!(
                "kvm: no free descriptor above {min}: {}",
                rewind_ckpt::tracee::errno_text(high)
            )));
        }
        Ok(high as i32)
    }

    fn close(&self, fd: i32) {
        let _ = self.syscall(libc::SYS_close, &[fd as u64]);
    }
}

/// MSR indices KVM saves and restores (KVM_GET_MSR_INDEX_LIST).
fn msr_list(remote: &Remote, kvm_fd: i32) -> Result<Vec<u32>, Error> {
    let max = (BUF_SIZE - 4) / 4;
    let mut input = (max as u32).to_le_bytes().to_vec();
    input.resize(4 + max * 4, 0);
    let ret = remote.ioctl(kvm_fd, abi::KVM_GET_MSR_INDEX_LIST, &input)?;
    if ret < 0 {
        return Err(Error::Tracee(format!(
            "kvm: KVM_GET_MSR_INDEX_LIST failed: {}",
            rewind_ckpt::tracee::errno_text(ret)
        )));
    }
    let b = remote.read(4 + max * 4)?;
    let n = (abi::u32_at(&b, 0) as usize).min(max);
    Ok((0..n).map(|i| abi::u32_at(&b, 4 + 4 * i)).collect())
}

fn msr_entries(entries: &[(u32, u64)]) -> Vec<u8> {
    let mut b = (entries.len() as u32).to_le_bytes().to_vec();
    b.extend_from_slice(&[0; 4]);
    for &(index, data) in entries {
        b.extend_from_slice(&index.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&data.to_le_bytes());
    }
    b
}

/// Read every MSR of `indices` KVM lets us read: KVM_GET_MSRS stops at
/// the first it refuses, which is skipped.
fn get_msrs(remote: &Remote, fd: i32, indices: &[u32]) -> Result<Vec<(u32, u64)>, Error> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let chunk: Vec<(u32, u64)> = indices[i..].iter().take(1024).map(|&x| (x, 0)).collect();
        let input = msr_entries(&chunk);
        let ret = remote.ioctl(fd, abi::KVM_GET_MSRS, &input)?;
        let got = if ret < 0 { 0 } else { ret as usize };
        let b = remote.read(input.len())?;
        for (k, &(index, _)) in chunk.iter().enumerate().take(got) {
            out.push((index, abi::u64_at(&b, 8 + 16 * k + 8)));
        }
        i += got + usize::from(got < chunk.len());
    }
    Ok(out)
}

/// Write MSRs, skipping those KVM refuses; the refused indices.
fn set_msrs(remote: &Remote, fd: i32, msrs: &[(u32, u64)]) -> Result<Vec<u32>, Error> {
    let mut refused = Vec::new();
    let mut i = 0;
    while i < msrs.len() {
        let chunk: Vec<(u32, u64)> = msrs[i..].iter().take(1024).copied().collect();
        let ret = remote.ioctl(fd, abi::KVM_SET_MSRS, &msr_entries(&chunk))?;
        let done = if ret < 0 { 0 } else { ret as usize };
        if done < chunk.len() {
            refused.push(chunk[done].0);
        }
        i += done + usize::from(done < chunk.len());
    }
    Ok(refused)
}

fn capture_vm(
    remote: &Remote,
    state: &ProcessState,
    log: &[Logged],
    vm_fd: i32,
    vcpus: &[(i32, u32)],
) -> Result<VmState, Error> {
    let min = state.fds.iter().map(|f| f.fd).max().unwrap_or(2) + 1;
    let kvm_fd = remote
        .open_kvm(min)
        .map_err(|e| Error::Tracee(e.to_string()))?;
    let msrs = msr_list(remote, kvm_fd);
    remote.close(kvm_fd);
    let msrs = msrs?;
    let has = |req: u32| log.iter().any(|l| l.req == req);
    let mut vm = VmState {
        fd: vm_fd,
        clock: remote.get_fixed(vm_fd, abi::KVM_GET_CLOCK)?,
        ..VmState::default()
    };
    if has(abi::KVM_CREATE_IRQCHIP) {
        for chip in 0u32..3 {
            let mut input = chip.to_le_bytes().to_vec();
            input.resize(abi::size(abi::KVM_GET_IRQCHIP), 0);
            let got = remote
                .get(vm_fd, abi::KVM_GET_IRQCHIP, &input, input.len())?
                .ok_or_else(|| Error::Tracee(format!("kvm: KVM_GET_IRQCHIP {chip} failed")))?;
            vm.irqchips.push(got);
        }
    }
    if has(abi::KVM_CREATE_PIT2) {
        vm.pit = remote.get_fixed(vm_fd, abi::KVM_GET_PIT2)?;
    }
    // KVM_GET_XSAVE2's size, when the CPU's XSAVE area exceeds 4 KiB.
    let xsave2 = remote
        .syscall(
            libc::SYS_ioctl,
            &[
                vm_fd as u64,
                abi::KVM_CHECK_EXTENSION as u64,
                abi::KVM_CAP_XSAVE2,
            ],
        )?
        .max(0) as usize;
    for &(fd, id) in vcpus {
        let need = |what: &str, v: Option<Vec<u8>>| {
            v.ok_or_else(|| Error::Tracee(format!("kvm: cannot read vCPU {id}'s {what}")))
        };
        let xsave = if xsave2 > 4096 {
            remote.get(fd, abi::KVM_GET_XSAVE2, &[], xsave2)?
        } else {
            remote.get_fixed(fd, abi::KVM_GET_XSAVE)?
        };
        let fpu = if xsave.is_none() {
            remote.get_fixed(fd, abi::KVM_GET_FPU)?
        } else {
            None
        };
        let name = format!("{VCPU_LINK}{id}");
        let region = state.regions.iter().find(|r| r.name == name);
        let run = match region {
            Some(r) => {
                let mut b = vec![0u8; (r.end - r.start) as usize];
                remote.tracee.read_mem(r.start, &mut b)?;
                b
            }
            None => Vec::new(),
        };
        let pending = unfinished_exit(&run);
        if let (Some(Direction::Out), Some(r)) = (pending, region) {
            finish_output(remote, fd, id, r.start, &run)?;
        }
        vm.vcpus.push(VcpuState {
            id,
            fd,
            regs: need("registers", remote.get_fixed(fd, abi::KVM_GET_REGS)?)?,
            sregs: need(
                "special registers",
                remote.get_fixed(fd, abi::KVM_GET_SREGS)?,
            )?,
            xsave,
            fpu,
            xcrs: remote.get_fixed(fd, abi::KVM_GET_XCRS)?,
            msrs: get_msrs(remote, fd, &msrs)?,
            lapic: if has(abi::KVM_CREATE_IRQCHIP) {
                remote.get_fixed(fd, abi::KVM_GET_LAPIC)?
            } else {
                None
            },
            events: remote.get_fixed(fd, abi::KVM_GET_VCPU_EVENTS)?,
            mp_state: remote.get_fixed(fd, abi::KVM_GET_MP_STATE)?,
            debugregs: remote.get_fixed(fd, abi::KVM_GET_DEBUGREGS)?,
            run_map: region.map(|r| (r.start, r.end, r.prot)),
            run,
            redo_input: pending == Some(Direction::In),
        });
    }
    Ok(vm)
}

fn restore_vm(remote: &Remote, state: &ProcessState, saved: &Saved) -> Result<(), Error> {
    let min = state.fds.iter().map(|f| f.fd).max().unwrap_or(2) + 1;
    let kvm_fd = remote.open_kvm(min)?;
    let made = (|| {
        let vm_tmp = remote.syscall(
            libc::SYS_ioctl,
            &[kvm_fd as u64, abi::KVM_CREATE_VM as u64, saved.vm_type],
        )?;
        if vm_tmp < 0 {
            return Err(Error::Restore(format!(
                "kvm: KVM_CREATE_VM failed: {}",
                rewind_ckpt::tracee::errno_text(vm_tmp)
            )));
        }
        let vm_tmp = remote.move_above(vm_tmp as i32, min)?;
        let mut made = vec![(vm_tmp, saved.vm.fd)];
        let mut vcpu_tmp: HashMap<u32, i32> = HashMap::new();
        for l in &saved.log {
            let fd = match l.target {
                Target::Vm => vm_tmp,
                Target::Vcpu(id) => *vcpu_tmp.get(&id).ok_or_else(|| {
                    Error::Restore(format!(
                        "kvm: the log configures vCPU {id} before creating it"
                    ))
                })?,
            };
            let ret = match &l.arg {
                Arg::Value(v) => remote.syscall(libc::SYS_ioctl, &[fd as u64, l.req as u64, *v])?,
                Arg::Bytes(b) => remote.ioctl(fd, l.req, b)?,
            };
            if ret < 0 {
                return Err(Error::Restore(format!(
                    "kvm: replaying {} failed: {}",
                    abi::name(l.req),
                    rewind_ckpt::tracee::errno_text(ret)
                )));
            }
            if l.req == abi::KVM_CREATE_VCPU && l.target == Target::Vm {
                let id = match l.arg {
                    Arg::Value(v) => v as u32,
                    Arg::Bytes(_) => 0,
                };
                let tmp = remote.move_above(ret as i32, min)?;
                vcpu_tmp.insert(id, tmp);
            }
        }
        for v in &saved.vm.vcpus {
            let fd = *vcpu_tmp.get(&v.id).ok_or_else(|| {
                Error::Restore(format!("kvm: vCPU {} was not created by the log", v.id))
            })?;
            made.push((fd, v.fd));
            restore_vcpu(remote, fd, v)?;
        }
        let vm = &saved.vm;
        for chip in &vm.irqchips {
            remote.set(vm_tmp, abi::KVM_SET_IRQCHIP, chip, "interrupt controller")?;
        }
        if let Some(pit) = &vm.pit {
            remote.set(vm_tmp, abi::KVM_SET_PIT2, pit, "PIT")?;
        }
        if let Some(clock) = &vm.clock {
            // Only the clock value: the flags say what else was read.
            let mut c = clock.clone();
            if let Some(flags) = c.get_mut(8..12) {
                flags.copy_from_slice(&[0; 4]);
            }
            let ret = remote.ioctl(vm_tmp, abi::KVM_SET_CLOCK, &c)?;
            if ret < 0 {
                tracing::debug!("KVM_SET_CLOCK: {}", rewind_ckpt::tracee::errno_text(ret));
            }
        }
        Ok(made)
    })();
    remote.close(kvm_fd);
    let made = made?;
    for (tmp, fd) in made {
        let cloexec = state
            .fds
            .iter()
            .find(|f| f.fd == fd)
            .is_some_and(|f| f.cloexec);
        let flags = if cloexec { libc::O_CLOEXEC as u64 } else { 0 };
        let ret = remote.syscall(libc::SYS_dup3, &[tmp as u64, fd as u64, flags])?;
        remote.close(tmp);
        if ret < 0 {
            return Err(Error::Restore(format!(
                "kvm: cannot put the VM descriptor at {fd}: {}",
                rewind_ckpt::tracee::errno_text(ret)
            )));
        }
    }
    Ok(())
}

fn restore_vcpu(remote: &Remote, fd: i32, v: &VcpuState) -> Result<(), Error> {
    let what = format!("vCPU {}", v.id);
    // QEMU's order: registers, FPU/XSAVE, XCRs, special registers, MSRs,
    // MP state, local APIC, events, debug registers.
    remote.set(fd, abi::KVM_SET_REGS, &v.regs, &what)?;
    if let Some(x) = &v.xsave {
        remote.set(fd, abi::KVM_SET_XSAVE, x, &what)?;
    } else if let Some(f) = &v.fpu {
        remote.set(fd, abi::KVM_SET_FPU, f, &what)?;
    }
    if let Some(x) = &v.xcrs {
        remote.set(fd, abi::KVM_SET_XCRS, x, &what)?;
    }
    remote.set(fd, abi::KVM_SET_SREGS, &v.sregs, &what)?;
    let refused = set_msrs(remote, fd, &v.msrs)?;
    if !refused.is_empty() {
        tracing::debug!("vCPU {}: MSRs refused at restore: {refused:x?}", v.id);
    }
    if let Some(m) = &v.mp_state {
        remote.set(fd, abi::KVM_SET_MP_STATE, m, &what)?;
    }
    if let Some(l) = &v.lapic {
        remote.set(fd, abi::KVM_SET_LAPIC, l, &what)?;
    }
    if let Some(e) = &v.events {
        remote.set(fd, abi::KVM_SET_VCPU_EVENTS, e, &what)?;
    }
    if let Some(d) = &v.debugregs {
        remote.set(fd, abi::KVM_SET_DEBUGREGS, d, &what)?;
    }
    let Some((start, end, prot)) = v.run_map else {
        return Ok(());
    };
    let addr = remote.syscall(
        libc::SYS_mmap,
        &[
            start,
            end - start,
            prot as u64,
            (libc::MAP_SHARED | libc::MAP_FIXED) as u64,
            fd as u64,
            0,
        ],
    )?;
    if addr as u64 != start {
        return Err(Error::Restore(format!(
            "kvm: cannot map {what}'s kvm_run at {start:#x}: {}",
            rewind_ckpt::tracee::errno_text(addr)
        )));
    }
    if v.redo_input {
        redo_exit(remote, fd, v, start, &what)?;
    }
    remote.tracee.write_mem(start, &v.run)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    In,
    Out,
}

/// The direction of the I/O or MMIO exit a `kvm_run` page shows, if any.
fn unfinished_exit(run: &[u8]) -> Option<Direction> {
    let e = abi::RUN_EXIT;
    let out = match abi::u32_at(run, abi::RUN_EXIT_REASON) {
        // struct { __u8 direction; ... }: KVM_EXIT_IO_OUT is 1.
        abi::KVM_EXIT_IO => run.get(e) == Some(&1),
        // struct { __u64 phys_addr; __u8 data[8]; __u32 len; __u8 is_write; }
        abi::KVM_EXIT_MMIO => run.get(e + 20) == Some(&1),
        _ => return None,
    };
    Some(if out { Direction::Out } else { Direction::In })
}

/// Let KVM finish an output exit now: `KVM_RUN` with `immediate_exit`
/// completes what is pending (skipping the instruction if it was not yet)
/// and returns without running the guest. The program's `kvm_run` page is
/// put back as it was.
fn finish_output(remote: &Remote, fd: i32, id: u32, run_at: u64, run: &[u8]) -> Result<(), Error> {
    remote
        .tracee
        .write_mem(run_at + abi::RUN_IMMEDIATE_EXIT as u64, &[1])?;
    let ret = remote.syscall(libc::SYS_ioctl, &[fd as u64, abi::KVM_RUN as u64, 0]);
    remote.tracee.write_mem(run_at, run)?;
    let ret = ret?;
    if ret < 0 && ret != -(libc::EINTR as i64) {
        return Err(Error::Tracee(format!(
            "kvm: cannot finish vCPU {id}'s output exit: {}",
            rewind_ckpt::tracee::errno_text(ret)
        )));
    }
    tracing::info!("kvm: vCPU {id} was inside an output exit at the checkpoint: finished it");
    Ok(())
}

/// Make KVM hold the same unfinished exit as at the checkpoint: run the
/// vCPU once (it re-executes the instruction that exited) and check the
/// exit is the same one.
fn redo_exit(
    remote: &Remote,
    fd: i32,
    v: &VcpuState,
    run_at: u64,
    what: &str,
) -> Result<(), Error> {
    let mut run = v.run.clone();
    if let Some(b) = run.get_mut(abi::RUN_IMMEDIATE_EXIT) {
        *b = 0;
    }
    remote.tracee.write_mem(run_at, &run)?;
    let ret = remote.syscall(libc::SYS_ioctl, &[fd as u64, abi::KVM_RUN as u64, 0])?;
    let mut now = vec![0u8; v.run.len().min(4096)];
    remote.tracee.read_mem(run_at, &mut now)?;
    let reason = abi::u32_at(&v.run, abi::RUN_EXIT_REASON);
    // io: direction, size, port, count, data_offset; mmio: phys_addr,
    // data, len, is_write (data only says something for writes).
    let key = |b: &[u8]| -> Vec<u8> {
        let e = abi::RUN_EXIT;
        let mut k = abi::u32_at(b, abi::RUN_EXIT_REASON).to_le_bytes().to_vec();
        match reason {
            abi::KVM_EXIT_IO => k.extend_from_slice(b.get(e..e + 16).unwrap_or(&[])),
            _ => {
                k.extend_from_slice(b.get(e..e + 8).unwrap_or(&[]));
                k.extend_from_slice(b.get(e + 16..e + 21).unwrap_or(&[]));
                if b.get(e + 20) == Some(&1) {
                    k.extend_from_slice(b.get(e + 8..e + 16).unwrap_or(&[]));
                }
            }
        }
        k
    };
    if ret >= 0 && key(&now) == key(&v.run) {
        tracing::info!("kvm: {what} was inside an input exit at the checkpoint: re-executed it");
    }
    if ret < 0 || key(&now) != key(&v.run) {
        return Err(Error::Restore(format!(
            "kvm: {what} stopped in an {} exit at the checkpoint; re-executing it gave {} instead",
            if reason == abi::KVM_EXIT_IO {
                "I/O"
            } else {
                "MMIO"
            },
            if ret < 0 {
                rewind_ckpt::tracee::errno_text(ret)
            } else {
                format!("exit reason {}", abi::u32_at(&now, abi::RUN_EXIT_REASON))
            }
        )));
    }
    Ok(())
}
