//! Recording programs that run virtual machines through /dev/kvm.
//!
//! In replay no VM exists: every KVM ioctl is emulated from the log. The
//! one that changes the program's memory behind its back is `KVM_RUN`: the
//! guest writes guest memory (which is the program's memory) and KVM
//! writes the vCPU's `kvm_run` page. So while recording, every memory slot
//! the program registers gets dirty logging (`KVM_MEM_LOG_DIRTY_PAGES`,
//! added to the program's request and taken out again before it can see
//! it), and after each `KVM_RUN` the recorder asks KVM for the pages the
//! guest dirtied (`KVM_GET_DIRTY_LOG`, injected into the program: KVM
//! answers only the process that made the VM) and logs them with the
//! `kvm_run` mapping as the event's written memory.
//!
//! Limits: one address space per slot as the program numbered it; pages a
//! vCPU dirties while another vCPU's `KVM_RUN` is logged are logged with
//! that event (replay then applies them earlier than the guest wrote
//! them, which only a host thread reading guest memory concurrently could
//! notice).

use std::collections::HashMap;

use libc::pid_t;
use rewind_ckpt::maps;
use rewind_ckpt::tracee::{Injector, Tracee, TRAMPOLINE_SIZE};

use crate::Error;

const KVM_SET_USER_MEMORY_REGION: u32 = 0x4020_ae46;
const KVM_RUN: u32 = 0xae80;
const KVM_GET_DIRTY_LOG: u32 = 0x4010_ae42;
const KVM_MEM_LOG_DIRTY_PAGES: u32 = 1;
const PAGE: u64 = 4096;

#[derive(Debug, Clone, Copy)]
struct Slot {
    vm_fd: i32,
    slot: u32,
    addr: u64,
    size: u64,
}

/// A region request seen at its entry, with the flags word the program
/// wrote (put back at the exit).
#[derive(Debug, Clone, Copy)]
struct PendingRegion {
    flags_at: u64,
    flags: u32,
    slot: Slot,
}

#[derive(Debug, Default)]
pub struct KvmRecord {
    slots: Vec<Slot>,
    pending: HashMap<pid_t, PendingRegion>,
}

fn link(pid: pid_t, fd: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl KvmRecord {
    /// At a syscall's entry: a memory slot registered gets dirty logging.
    pub fn entry(&mut self, tracee: &Tracee, tid: pid_t, nr: i64, args: &[u64; 6]) {
        if nr != libc::SYS_ioctl || args[1] as u32 != KVM_SET_USER_MEMORY_REGION {
            return;
        }
        let vm_fd = args[0] as i32;
        if link(tracee.pid, vm_fd) != "anon_inode:kvm-vm" {
            return;
        }
        // struct kvm_userspace_memory_region { u32 slot, flags; u64
        // guest_phys_addr, memory_size, userspace_addr; }
        let mut b = [0u8; 32];
        if tracee.read_mem(args[2], &mut b).is_err() {
            return;
        }
        let word = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        let slot = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let flags = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let region = PendingRegion {
            flags_at: args[2] + 4,
            flags,
            slot: Slot {
                vm_fd,
                slot,
                addr: word(24),
                size: word(16),
            },
        };
        if region.slot.size > 0 && flags & KVM_MEM_LOG_DIRTY_PAGES == 0 {
            let logged = flags | KVM_MEM_LOG_DIRTY_PAGES;
            if tracee
                .write_mem(region.flags_at, &logged.to_le_bytes())
                .is_err()
            {
                return;
            }
        }
        self.pending.insert(tid, region);
    }

    /// At a syscall's exit (the thread stopped there): the memory the
    /// kernel wrote besides what the generic table knows, as ranges.
    pub fn exit(
        &mut self,
        tracee: &Tracee,
        tid: pid_t,
        nr: i64,
        args: &[u64; 6],
        ret: i64,
    ) -> Result<Vec<(u64, u64)>, Error> {
        if nr != libc::SYS_ioctl {
            return Ok(Vec::new());
        }
        if let Some(p) = self.pending.remove(&tid) {
            tracee.write_mem(p.flags_at, &p.flags.to_le_bytes())?;
            if ret == 0 {
                let s = p.slot;
                self.slots
                    .retain(|o| !(o.vm_fd == s.vm_fd && o.slot == s.slot));
                if s.size > 0 {
                    self.slots.push(s);
                }
            }
            return Ok(Vec::new());
        }
        if args[1] as u32 != KVM_RUN {
            return Ok(Vec::new());
        }
        let vcpu = link(tracee.pid, args[0] as i32);
        let Some(id) = vcpu.strip_prefix("anon_inode:kvm-vcpu:") else {
            return Ok(Vec::new());
        };
        let mappings = maps::read(tracee.pid)?;
        let name = format!("anon_inode:kvm-vcpu:{id}");
        let mut ranges: Vec<(u64, u64)> = mappings
            .iter()
            .filter(|m| m.name == name)
            .map(|m| (m.start, m.end - m.start))
            .collect();
        if !self.slots.is_empty() {
            ranges.extend(self.dirty_pages(tracee, tid, &mappings)?);
        }
        Ok(ranges)
    }

    /// Pages the guest dirtied since the last call, over every slot.
    fn dirty_pages(
        &self,
        tracee: &Tracee,
        tid: pid_t,
        mappings: &[maps::Mapping],
    ) -> Result<Vec<(u64, u64)>, Error> {
        let taken: Vec<(u64, u64)> = mappings.iter().map(|m| (m.start, m.end)).collect();
        let hole = maps::find_hole(&taken, TRAMPOLINE_SIZE, 0x7fff_0000_0000).ok_or_else(|| {
            Error::Unsupported("no room in the address space for the trampoline".into())
        })?;
        let inj = Injector::install(tracee, tid, hole)?;
        let result = self.dirty_with(tracee, tid, &inj);
        let removed = inj.remove(tracee, tid);
        let ranges = result?;
        removed?;
        Ok(ranges)
    }

    fn dirty_with(
        &self,
        tracee: &Tracee,
        tid: pid_t,
        inj: &Injector,
    ) -> Result<Vec<(u64, u64)>, Error> {
        let largest = self.slots.iter().map(|s| s.size).max().unwrap_or(0);
        let bitmap_len = (largest / PAGE).div_ceil(64) * 8;
        // The request takes the scratch page's first 16 bytes; a bitmap
        // that fits after it (slots up to ~126 MiB) needs no mapping.
        let in_scratch = 64;
        if bitmap_len <= PAGE - in_scratch {
            return self.dirty_into(tracee, tid, inj, inj.scratch() + in_scratch);
        }
        let buf_len = bitmap_len.div_ceil(PAGE) * PAGE;
        inj.with_buffer(tid, "dirty log", buf_len, |buf| {
            self.dirty_into(tracee, tid, inj, buf)
        })
    }

    /// The dirty pages of every slot, each slot's bitmap read into `buf`.
    fn dirty_into(
        &self,
        tracee: &Tracee,
        tid: pid_t,
        inj: &Injector,
        buf: u64,
    ) -> Result<Vec<(u64, u64)>, Error> {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for s in &self.slots {
            let pages = s.size / PAGE;
            let len = (pages.div_ceil(64) * 8) as usize;
            let mut req = s.slot.to_le_bytes().to_vec();
            req.extend_from_slice(&[0; 4]);
            req.extend_from_slice(&buf.to_le_bytes());
            tracee.write_mem(inj.scratch(), &req)?;
            inj.call(
                tid,
                "KVM_GET_DIRTY_LOG",
                libc::SYS_ioctl,
                &[s.vm_fd as u64, KVM_GET_DIRTY_LOG as u64, inj.scratch()],
            )?;
            let mut bits = vec![0u8; len];
            tracee.read_mem(buf, &mut bits)?;
            for page in (0..pages).filter(|&p| bits[(p / 8) as usize] & (1 << (p % 8)) != 0) {
                let at = s.addr + page * PAGE;
                match ranges.last_mut() {
                    Some((start, n)) if *start + *n == at => *n += PAGE,
                    _ => ranges.push((at, PAGE)),
                }
            }
        }
        Ok(ranges)
    }
}
