//! The registers gdb sees: x86-64 core, x87, SSE, `orig_rax`, `fs_base` and
//! `gs_base`, plus AVX and AVX-512 where the machine has them, described to
//! gdb by a target description of our own (gdbstub_arch's `X86_64_SSE`
//! describes the core and SSE only).

use gdbstub::arch::{Arch, Registers};
use libc::user_regs_struct;

/// The register file as gdb's `g` packet carries it, in the order of
/// [`Layout::target_xml`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Regs(pub Vec<u8>);

impl Registers for Regs {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        // rip follows the 16 general registers.
        let mut b = [0u8; 8];
        if let Some(s) = self.0.get(128..136) {
            b.copy_from_slice(s);
        }
        u64::from_le_bytes(b)
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        for b in &self.0 {
            write_byte(Some(*b));
        }
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        self.0 = bytes.to_vec();
        Ok(())
    }
}

/// x86-64 as rewind shows it to gdb.
pub enum X86_64Rewind {}

impl Arch for X86_64Rewind {
    type Usize = u64;
    type Registers = Regs;
    // Single registers are not offered (`p` packets): gdb reads them all
    // with `g`.
    type RegId = gdbstub_arch::x86::reg::id::X86_64CoreRegId;
    type BreakpointKind = usize;

    fn target_description_xml() -> Option<&'static str> {
        // Given by the TargetDescriptionXmlOverride extension (it depends
        // on the machine).
        None
    }
}

/// Which optional register sets this machine has (from XCR0), and where
/// its XSAVE layout keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub avx: bool,
    pub avx512: bool,
    /// Offsets in the standard (uncompacted) format of ptrace's
    /// NT_X86_XSTATE, which are the CPU's own (CPUID leaf 0xD): AMD keeps
    /// the AVX-512 state at 832/896/1408, Intel at 1088/1152/1664.
    ymm_hi128: usize,
    opmask: usize,
    zmm_hi256: usize,
    hi16_zmm: usize,
}

impl Layout {
    /// What this machine has (CPUID and XCR0, as the kernel enabled
    /// them), as far as an xstate buffer of `len` bytes holds it.
    pub fn of_machine(len: usize) -> Layout {
        use rewind_ckpt::sys::cpu::xsave_component;
        let fits = |bit| xsave_component(bit).filter(|&(at, n)| at + n <= len);
        let avx = fits(2).filter(|_| std::arch::is_x86_feature_detected!("avx"));
        let avx512 = match (fits(5), fits(6), fits(7)) {
            (Some(k), Some(h), Some(z))
                if avx.is_some() && std::arch::is_x86_feature_detected!("avx512f") =>
            {
                Some((k.0, h.0, z.0))
            }
            _ => None,
        };
        let (opmask, zmm_hi256, hi16_zmm) = avx512.unwrap_or_default();
        Layout {
            avx: avx.is_some(),
            avx512: avx512.is_some(),
            ymm_hi128: avx.map_or(0, |a| a.0),
            opmask,
            zmm_hi256,
            hi16_zmm,
        }
    }

    /// The target description (one document, no includes).
    pub fn target_xml(&self) -> String {
        let mut x = String::from(
            r#"<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd"><target version="1.0"><architecture>i386:x86-64</architecture><osabi>GNU/Linux</osabi>"#,
        );
        x.push_str(r#"<feature name="org.gnu.gdb.i386.core"><flags id="i386_eflags" size="4"><field name="CF" start="0" end="0"/><field name="" start="1" end="1"/><field name="PF" start="2" end="2"/><field name="AF" start="4" end="4"/><field name="ZF" start="6" end="6"/><field name="SF" start="7" end="7"/><field name="TF" start="8" end="8"/><field name="IF" start="9" end="9"/><field name="DF" start="10" end="10"/><field name="OF" start="11" end="11"/><field name="NT" start="14" end="14"/><field name="RF" start="16" end="16"/><field name="VM" start="17" end="17"/><field name="AC" start="18" end="18"/><field name="VIF" start="19" end="19"/><field name="VIP" start="20" end="20"/><field name="ID" start="21" end="21"/></flags>"#);
        for (name, ty) in [
            ("rax", "int64"),
            ("rbx", "int64"),
            ("rcx", "int64"),
            ("rdx", "int64"),
            ("rsi", "int64"),
            ("rdi", "int64"),
            ("rbp", "data_ptr"),
            ("rsp", "data_ptr"),
        ] {
            x.push_str(&format!(r#"<reg name="{name}" bitsize="64" type="{ty}"/>"#));
        }
        for i in 8..16 {
            x.push_str(&format!(r#"<reg name="r{i}" bitsize="64" type="int64"/>"#));
        }
        x.push_str(r#"<reg name="rip" bitsize="64" type="code_ptr"/><reg name="eflags" bitsize="32" type="i386_eflags"/>"#);
        for s in ["cs", "ss", "ds", "es", "fs", "gs"] {
            x.push_str(&format!(r#"<reg name="{s}" bitsize="32" type="int32"/>"#));
        }
        for i in 0..8 {
            x.push_str(&format!(
                r#"<reg name="st{i}" bitsize="80" type="i387_ext"/>"#
            ));
        }
        for r in [
            "fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop",
        ] {
            x.push_str(&format!(
                r#"<reg name="{r}" bitsize="32" type="int" group="float"/>"#
            ));
        }
        x.push_str("</feature>");
        x.push_str(r#"<feature name="org.gnu.gdb.i386.sse"><vector id="v4f" type="ieee_single" count="4"/><vector id="v2d" type="ieee_double" count="2"/><vector id="v16i8" type="int8" count="16"/><vector id="v8i16" type="int16" count="8"/><vector id="v4i32" type="int32" count="4"/><vector id="v2i64" type="int64" count="2"/><union id="vec128"><field name="v4_float" type="v4f"/><field name="v2_double" type="v2d"/><field name="v16_int8" type="v16i8"/><field name="v8_int16" type="v8i16"/><field name="v4_int32" type="v4i32"/><field name="v2_int64" type="v2i64"/><field name="uint128" type="uint128"/></union><flags id="i386_mxcsr" size="4"><field name="IE" start="0" end="0"/><field name="DE" start="1" end="1"/><field name="ZE" start="2" end="2"/><field name="OE" start="3" end="3"/><field name="UE" start="4" end="4"/><field name="PE" start="5" end="5"/><field name="DAZ" start="6" end="6"/><field name="IM" start="7" end="7"/><field name="DM" start="8" end="8"/><field name="ZM" start="9" end="9"/><field name="OM" start="10" end="10"/><field name="UM" start="11" end="11"/><field name="PM" start="12" end="12"/><field name="FZ" start="15" end="15"/></flags>"#);
        for i in 0..16 {
            x.push_str(&format!(
                r#"<reg name="xmm{i}" bitsize="128" type="vec128"/>"#
            ));
        }
        x.push_str(
            r#"<reg name="mxcsr" bitsize="32" type="i386_mxcsr" group="vector"/></feature>"#,
        );
        x.push_str(r#"<feature name="org.gnu.gdb.i386.linux"><reg name="orig_rax" bitsize="64" type="int"/></feature>"#);
        x.push_str(r#"<feature name="org.gnu.gdb.i386.segments"><reg name="fs_base" bitsize="64" type="int"/><reg name="gs_base" bitsize="64" type="int"/></feature>"#);
        if self.avx {
            x.push_str(r#"<feature name="org.gnu.gdb.i386.avx">"#);
            for i in 0..16 {
                x.push_str(&format!(
                    r#"<reg name="ymm{i}h" bitsize="128" type="uint128"/>"#
                ));
            }
            x.push_str("</feature>");
        }
        if self.avx && self.avx512 {
            x.push_str(r#"<feature name="org.gnu.gdb.i386.avx512"><vector id="v4f" type="ieee_single" count="4"/><vector id="v2d" type="ieee_double" count="2"/><vector id="v16i8" type="int8" count="16"/><vector id="v8i16" type="int16" count="8"/><vector id="v4i32" type="int32" count="4"/><vector id="v2i64" type="int64" count="2"/><union id="vec128"><field name="v4_float" type="v4f"/><field name="v2_double" type="v2d"/><field name="v16_int8" type="v16i8"/><field name="v8_int16" type="v8i16"/><field name="v4_int32" type="v4i32"/><field name="v2_int64" type="v2i64"/><field name="uint128" type="uint128"/></union><vector id="v2ui128" type="uint128" count="2"/>"#);
            for i in 16..32 {
                x.push_str(&format!(
                    r#"<reg name="xmm{i}" bitsize="128" type="vec128"/>"#
                ));
            }
            for i in 16..32 {
                x.push_str(&format!(
                    r#"<reg name="ymm{i}h" bitsize="128" type="uint128"/>"#
                ));
            }
            for i in 0..8 {
                x.push_str(&format!(r#"<reg name="k{i}" bitsize="64" type="uint64"/>"#));
            }
            for i in 0..32 {
                x.push_str(&format!(
                    r#"<reg name="zmm{i}h" bitsize="256" type="v2ui128"/>"#
                ));
            }
            x.push_str("</feature>");
        }
        x.push_str("</target>");
        x
    }

    /// The `g` packet's bytes for these registers and this xstate.
    pub fn pack(&self, r: &user_regs_struct, xs: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        let q = |out: &mut Vec<u8>, v: u64| out.extend_from_slice(&v.to_le_bytes());
        let d = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
        for v in [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15, r.rip,
        ] {
            q(&mut out, v);
        }
        d(&mut out, r.eflags as u32);
        for s in [r.cs, r.ss, r.ds, r.es, r.fs, r.gs] {
            d(&mut out, s as u32);
        }
        // x87, from the FXSAVE area at the start of the xstate.
        for i in 0..8 {
            out.extend_from_slice(&bytes(xs, 32 + 16 * i, 10));
        }
        let fcw = le16(xs, 0) as u32;
        let fsw = le16(xs, 2) as u32;
        let fop = (le16(xs, 6) & 0x7ff) as u32;
        let fip = le64(xs, 8);
        let fdp = le64(xs, 16);
        d(&mut out, fcw);
        d(&mut out, fsw);
        d(&mut out, full_tag_word(xs, fsw));
        d(&mut out, (fip >> 32) as u32 & 0xffff);
        d(&mut out, fip as u32);
        d(&mut out, (fdp >> 32) as u32 & 0xffff);
        d(&mut out, fdp as u32);
        d(&mut out, fop);
        for i in 0..16 {
            out.extend_from_slice(&bytes(xs, 160 + 16 * i, 16));
        }
        d(&mut out, le64(xs, 24) as u32);
        q(&mut out, r.orig_rax);
        q(&mut out, r.fs_base);
        q(&mut out, r.gs_base);
        if self.avx {
            for i in 0..16 {
                out.extend_from_slice(&bytes(xs, self.ymm_hi128 + 16 * i, 16));
            }
        }
        if self.avx && self.avx512 {
            for i in 0..16 {
                out.extend_from_slice(&bytes(xs, self.hi16_zmm + 64 * i, 16));
            }
            for i in 0..16 {
                out.extend_from_slice(&bytes(xs, self.hi16_zmm + 64 * i + 16, 16));
            }
            for i in 0..8 {
                out.extend_from_slice(&bytes(xs, self.opmask + 8 * i, 8));
            }
            for i in 0..16 {
                out.extend_from_slice(&bytes(xs, self.zmm_hi256 + 32 * i, 32));
            }
            for i in 0..16 {
                out.extend_from_slice(&bytes(xs, self.hi16_zmm + 64 * i + 32, 32));
            }
        }
        out
    }
}

/// `len` bytes at `at`, zeros where the buffer is short.
fn bytes(xs: &[u8], at: usize, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    if let Some(s) = xs.get(at..at + len) {
        v.copy_from_slice(s);
    }
    v
}

fn le16(xs: &[u8], at: usize) -> u16 {
    let b = bytes(xs, at, 2);
    u16::from_le_bytes([b[0], b[1]])
}

fn le64(xs: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&bytes(xs, at, 8));
    u64::from_le_bytes(a)
}

/// The x87 tag word gdb shows (2 bits a register) from FXSAVE's abridged
/// one (1 bit: empty or not), classifying each register's value as gdb's
/// i387_supply_fxsave does.
fn full_tag_word(xs: &[u8], fsw: u32) -> u32 {
    let abridged = bytes(xs, 4, 1)[0];
    let top = ((fsw >> 11) & 7) as usize;
    let mut tag = 0u32;
    for fpreg in 0..8 {
        let t = if abridged & (1 << fpreg) == 0 {
            3
        } else {
            let st = (fpreg + 8 - top) % 8;
            let raw = bytes(xs, 32 + 16 * st, 10);
            let exponent = u16::from_le_bytes([raw[8], raw[9]]) & 0x7fff;
            let integer = raw[7] & 0x80 != 0;
            let fraction_zero = raw[..8].iter().all(|b| *b == 0);
            if exponent == 0x7fff {
                2
            } else if exponent == 0 {
                if fraction_zero && !integer {
                    1
                } else {
                    2
                }
            } else if integer {
                0
            } else {
                2
            }
        };
        tag |= t << (2 * fpreg);
    }
    tag
}
