//! Changing the environment of a restored program (DMTCP's modify-env):
//! glibc's `getenv` reads the `environ` array, so a new array is written
//! into the program and `environ` pointed at it.

use object::{Object, ObjectSymbol};

use crate::image::format::{ProcessState, RegionKind};
use crate::tracee::{Injector, Tracee, PAGE};
use crate::Error;

/// Address of the `environ` variable: the executable's own copy first (copy
/// relocations), then the libraries'.
fn environ_address(state: &ProcessState) -> Option<u64> {
    let mut files: Vec<(&str, u64)> = Vec::new();
    for r in &state.regions {
        if let RegionKind::File {
            path, offset: 0, ..
        } = &r.kind
        {
            if !files.iter().any(|(p, _)| p == path) {
                files.push((path, r.start));
            }
        }
    }
    files.sort_by_key(|(p, _)| *p != state.exe);
    for (path, base) in files {
        let Ok(data) = std::fs::read(path) else {
            continue;
        };
        let Ok(obj) = object::File::parse(&*data) else {
            continue;
        };
        let found = obj
            .dynamic_symbols()
            .chain(obj.symbols())
            .find(|s| matches!(s.name(), Ok("__environ" | "environ")) && s.is_definition());
        if let Some(sym) = found {
            let is_dyn = obj.kind() == object::ObjectKind::Dynamic;
            let min_vaddr = obj
                .segments()
                .map(|s| object::ObjectSegment::address(&s))
                .min()
                .unwrap_or(0);
            return Some(if is_dyn {
                base + sym.address() - (min_vaddr & !(PAGE - 1))
            } else {
                sym.address()
            });
        }
    }
    None
}

/// Set `vars` in the stopped, restored program.
pub fn set_vars(
    tracee: &Tracee,
    inj: &Injector,
    state: &ProcessState,
    vars: &[(String, String)],
) -> Result<(), Error> {
    let at = environ_address(state).ok_or_else(|| {
        Error::Restore(
            "--env: cannot find the program's `environ` (no symbol in its executable or libraries)"
                .into(),
        )
    })?;
    let array = tracee.read_u64(at)?;
    let mut entries: Vec<Vec<u8>> = Vec::new();
    if array != 0 {
        for i in 0..100_000u64 {
            let p = tracee.read_u64(array + i * 8)?;
            if p == 0 {
                break;
            }
            entries.push(tracee.read_cstr(p, 1 << 20)?);
        }
    }
    for (k, v) in vars {
        let key = format!("{k}=");
        let new = format!("{k}={v}").into_bytes();
        match entries.iter_mut().find(|e| e.starts_with(key.as_bytes())) {
            Some(e) => *e = new,
            None => entries.push(new),
        }
    }
    let ptrs_len = (entries.len() as u64 + 1) * 8;
    let strings_len: u64 = entries.iter().map(|e| e.len() as u64 + 1).sum();
    let size = (ptrs_len + strings_len).div_ceil(PAGE) * PAGE;
    let base = inj.map_buffer(tracee.pid, "the environment", size)?;
    let mut ptrs = Vec::with_capacity(ptrs_len as usize);
    let mut strings = Vec::with_capacity(strings_len as usize);
    let mut s_at = base + ptrs_len;
    for e in &entries {
        ptrs.extend_from_slice(&s_at.to_le_bytes());
        strings.extend_from_slice(e);
        strings.push(0);
        s_at += e.len() as u64 + 1;
    }
    ptrs.extend_from_slice(&0u64.to_le_bytes());
    tracee.write_mem(base, &ptrs)?;
    tracee.write_mem(base + ptrs_len, &strings)?;
    tracee.write_mem(at, &base.to_le_bytes())?;
    Ok(())
}
