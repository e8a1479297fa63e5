//! /proc/pid/maps: the address space of a process, line by line.

use crate::Error;

/// One mapping as /proc/pid/maps shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub prot: u32,
    pub shared: bool,
    pub offset: u64,
    /// Device as "major:minor" hex, and inode.
    pub dev: (u32, u32),
    pub inode: u64,
    /// Path or pseudo-name ("[heap]", "[vdso]", "" for anonymous).
    pub name: String,
}

impl Mapping {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
}

/// Parse the text of /proc/pid/maps.
pub fn parse(text: &str) -> Result<Vec<Mapping>, Error> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_line)
        .collect()
}

/// Read and parse /proc/<pid>/maps.
pub fn read(pid: libc::pid_t) -> Result<Vec<Mapping>, Error> {
    let path = format!("/proc/{pid}/maps");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    parse(&text)
}

fn parse_line(line: &str) -> Result<Mapping, Error> {
    let bad = || Error::Tracee(format!("unexpected line in /proc/pid/maps: {line:?}"));
    let mut it = line.splitn(6, ' ');
    let range = it.next().ok_or_else(bad)?;
    let perms = it.next().ok_or_else(bad)?.as_bytes();
    let offset = it.next().ok_or_else(bad)?;
    let dev = it.next().ok_or_else(bad)?;
    let inode = it.next().ok_or_else(bad)?;
    let name = it.next().unwrap_or("").trim_start().to_string();
    let (start, end) = range.split_once('-').ok_or_else(bad)?;
    let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|_| bad());
    let (major, minor) = dev.split_once(':').ok_or_else(bad)?;
    if perms.len() < 4 {
        return Err(bad());
    }
    let mut prot = 0;
    if perms[0] == b'r' {
        prot |= libc::PROT_READ as u32;
    }
    if perms[1] == b'w' {
        prot |= libc::PROT_WRITE as u32;
    }
    if perms[2] == b'x' {
        prot |= libc::PROT_EXEC as u32;
    }
    Ok(Mapping {
        start: hex(start)?,
        end: hex(end)?,
        prot,
        shared: perms[3] == b's',
        offset: hex(offset)?,
        dev: (
            u32::from_str_radix(major, 16).map_err(|_| bad())?,
            u32::from_str_radix(minor, 16).map_err(|_| bad())?,
        ),
        inode: inode.parse().map_err(|_| bad())?,
        name,
    })
}

/// Lowest address of a hole of `size` bytes that lies in none of `taken`
/// (ranges `[start, end)`), searching downwards from `below`, keeping a
/// guard page on each side.
pub fn find_hole(taken: &[(u64, u64)], size: u64, below: u64) -> Option<u64> {
    let mut ranges: Vec<(u64, u64)> = taken.to_vec();
    ranges.sort_unstable();
    let guard = crate::tracee::PAGE;
    let mut top = below;
    for &(start, end) in ranges.iter().rev() {
        if start >= top {
            continue;
        }
        if end + guard + size + guard <= top {
            return Some(top - guard - size);
        }
        top = top.min(start);
    }
    (top >= 0x10_0000 + size + guard).then(|| top - guard - size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_anon_and_special_lines() {
        let text = "5591ceced000-5591cecef000 r--p 00001000 fe:00 247030                     /usr/bin/cat\n\
                    7fec3c3a7000-7fec3c3a9000 r-xp 00000000 00:00 0                          [vdso]\n\
                    7fec3c12f000-7fec3c151000 rw-s 00000000 00:05 42 /dev/zero (deleted)\n\
                    7fec3c1b1000-7fec3c1b4000 rw-p 00000000 00:00 0 \n";
        let m = parse(text).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].name, "/usr/bin/cat");
        assert_eq!(m[0].offset, 0x1000);
        assert_eq!(m[0].prot, libc::PROT_READ as u32);
        assert_eq!(m[1].name, "[vdso]");
        assert!(m[2].shared);
        assert_eq!(m[2].name, "/dev/zero (deleted)");
        assert_eq!(m[3].name, "");
        assert_eq!(m[3].len(), 0x3000);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("not a maps line").is_err());
    }

    #[test]
    fn finds_hole_between_ranges() {
        let taken = [(0x1000_0000, 0x2000_0000), (0x2000_4000, 0x3000_0000)];
        // Too small between the two; falls below the first.
        let h = find_hole(&taken, 0x4000, 0x3000_0000).unwrap();
        assert!(h + 0x4000 <= 0x1000_0000);
        let h = find_hole(&taken, 0x1000, 0x3000_0000).unwrap();
        assert_eq!(h, 0x2000_2000);
    }
}
