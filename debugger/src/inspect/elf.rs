//! One ELF file on disk (an executable or a shared library), parsed once:
//! its load segments, sections, symbols, and lazily its DWARF and CFI.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use object::read::elf::{ElfFile64, ProgramHeader as _};
use object::{Endianness, Object, ObjectSection, SectionFlags};

use super::dwarf::DebugInfo;
use super::symbols::Symbols;
use super::unwind::Cfi;

/// The gimli reader every DWARF and CFI parse uses: a range of a file's
/// bytes, shared, so sections are never copied.
pub(crate) type R = gimli::EndianArcSlice<gimli::LittleEndian>;

/// A `PT_LOAD` program header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub exec: bool,
}

/// A section header, kept for finding DWARF and CFI data later.
#[derive(Debug, Clone)]
pub(crate) struct SectionInfo {
    pub name: String,
    pub addr: u64,
    /// File range, `None` for `SHT_NOBITS`, compressed or out-of-bounds data.
    pub file: Option<(usize, usize)>,
    pub size: u64,
}

/// The bytes of a file and where its sections are.
pub(crate) struct FileData {
    pub data: Arc<[u8]>,
    pub sections: Vec<SectionInfo>,
}

impl FileData {
    pub fn section(&self, name: &str) -> Option<&SectionInfo> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// A reader over a section's bytes (empty if absent).
    pub fn reader(&self, name: &str) -> R {
        let whole = R::new(self.data.clone(), gimli::LittleEndian);
        match self.section(name).and_then(|s| s.file) {
            Some((off, len)) => whole.range(off..off + len),
            None => whole.range(0..0),
        }
    }
}

/// An ELF file, shared by every module mapping it.
pub(crate) struct ElfImage {
    /// Unique within a [`super::Program`] (keys type caches).
    pub id: u32,
    pub path: PathBuf,
    pub file: FileData,
    pub segments: Vec<Segment>,
    /// Link-time address of the program headers, to compare with AT_PHDR.
    pub phdr_vaddr: Option<u64>,
    pub dynamic_vaddr: Option<u64>,
    pub interp: Option<PathBuf>,
    pub entry: u64,
    pub symbols: Symbols,
    /// A separate debug file (`/usr/lib/debug/.build-id/..`), if any.
    debug_file: Option<PathBuf>,
    debug: OnceLock<Option<Arc<DebugInfo>>>,
    cfi: OnceLock<Arc<Cfi>>,
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_sections(elf: &ElfFile64<Endianness>, len: usize) -> Vec<SectionInfo> {
    elf.sections()
        .map(|s| {
            let compressed = match s.flags() {
                SectionFlags::Elf { sh_flags } => {
                    sh_flags & u64::from(object::elf::SHF_COMPRESSED) != 0
                }
                _ => false,
            };
            let file = s
                .file_range()
                .filter(|_| !compressed)
                .and_then(|(off, size)| {
                    let off = usize::try_from(off).ok()?;
                    let size = usize::try_from(size).ok()?;
                    (off.checked_add(size)? <= len).then_some((off, size))
                });
            SectionInfo {
                name: s.name().unwrap_or("").to_string(),
                addr: s.address(),
                file,
                size: s.size(),
            }
        })
        .collect()
}

impl ElfImage {
    /// Read and parse `path`.
    pub fn load(id: u32, path: &Path) -> Result<ElfImage, String> {
        let bytes = read_file(path)?;
        let elf = ElfFile64::<Endianness>::parse(&*bytes)
            .map_err(|e| format!("{}: not a 64-bit ELF file ({e})", path.display()))?;
        let endian = elf.endian();
        let mut segments = Vec::new();
        let mut phdr_vaddr = None;
        let mut dynamic_vaddr = None;
        let mut interp = None;
        for ph in elf.elf_program_headers() {
            match ph.p_type(endian) {
                object::elf::PT_LOAD => segments.push(Segment {
                    vaddr: ph.p_vaddr(endian),
                    memsz: ph.p_memsz(endian),
                    offset: ph.p_offset(endian),
                    filesz: ph.p_filesz(endian),
                    exec: ph.p_flags(endian) & object::elf::PF_X != 0,
                }),
                object::elf::PT_PHDR => phdr_vaddr = Some(ph.p_vaddr(endian)),
                object::elf::PT_DYNAMIC => dynamic_vaddr = Some(ph.p_vaddr(endian)),
                object::elf::PT_INTERP => {
                    if let Ok(Some(name)) = ph.interpreter(endian, &*bytes) {
                        let name = name.split(|&b| b == 0).next().unwrap_or(name);
                        interp = Some(PathBuf::from(String::from_utf8_lossy(name).into_owned()));
                    }
                }
                _ => {}
            }
        }
        if phdr_vaddr.is_none() {
            // No PT_PHDR: the headers sit in the segment that maps file
            // offset e_phoff.
            let phoff = elf.elf_header().e_phoff.get(endian);
            phdr_vaddr = segments
                .iter()
                .find(|s| s.offset <= phoff && phoff < s.offset + s.filesz)
                .map(|s| s.vaddr.wrapping_add(phoff - s.offset));
        }
        let sections = parse_sections(&elf, bytes.len());
        let mut symbols = Symbols::from_elf(&elf, &bytes);
        let debug_file = if elf.section_by_name(".debug_info").is_none() {
            separate_debug_file(&elf)
        } else {
            None
        };
        if let Some(dbg) = &debug_file {
            if let Ok(dbytes) = read_file(dbg) {
                if let Ok(delf) = ElfFile64::<Endianness>::parse(&*dbytes) {
                    symbols.merge(Symbols::from_elf(&delf, &dbytes));
                }
            }
        }
        let entry = elf.entry();
        Ok(ElfImage {
            id,
            path: path.to_path_buf(),
            file: FileData {
                data: Arc::from(bytes),
                sections,
            },
            segments,
            phdr_vaddr,
            dynamic_vaddr,
            interp,
            entry,
            symbols,
            debug_file,
            debug: OnceLock::new(),
            cfi: OnceLock::new(),
        })
    }

    /// Lowest and highest (exclusive) link-time address of the load segments.
    pub fn vaddr_range(&self) -> (u64, u64) {
        let lo = self.segments.iter().map(|s| s.vaddr).min().unwrap_or(0);
        let hi = self
            .segments
            .iter()
            .map(|s| s.vaddr.saturating_add(s.memsz))
            .max()
            .unwrap_or(0);
        (lo, hi)
    }

    /// The file's bytes for link-time addresses `[vaddr, vaddr+len)`, if a
    /// segment holds them in the file (used to look at code without
    /// touching the target, whose memory may hold breakpoints).
    pub fn bytes_at(&self, vaddr: u64, len: usize) -> Option<&[u8]> {
        let seg = self
            .segments
            .iter()
            .find(|s| s.vaddr <= vaddr && vaddr < s.vaddr.saturating_add(s.filesz))?;
        let off = usize::try_from(seg.offset.checked_add(vaddr - seg.vaddr)?).ok()?;
        let avail = usize::try_from(seg.vaddr.saturating_add(seg.filesz) - vaddr).ok()?;
        self.file.data.get(off..off.checked_add(len.min(avail))?)
    }

    /// Whether a link-time address is in an executable segment.
    pub fn is_code(&self, vaddr: u64) -> bool {
        self.segments
            .iter()
            .any(|s| s.exec && s.vaddr <= vaddr && vaddr < s.vaddr.saturating_add(s.memsz))
    }

    /// The parsed DWARF (of this file or its separate debug file), if any.
    pub fn debug(&self) -> Option<&Arc<DebugInfo>> {
        self.debug
            .get_or_init(|| {
                let own = DebugInfo::load(&self.file, self.id);
                if own.is_some() {
                    return own.map(Arc::new);
                }
                let path = self.debug_file.as_ref()?;
                let bytes = read_file(path).ok()?;
                let elf = ElfFile64::<Endianness>::parse(&*bytes).ok()?;
                let sections = parse_sections(&elf, bytes.len());
                let file = FileData {
                    data: Arc::from(bytes),
                    sections,
                };
                DebugInfo::load(&file, self.id).map(Arc::new)
            })
            .as_ref()
    }

    /// The call frame information (`.eh_frame`, `.debug_frame`).
    pub fn cfi(&self) -> &Arc<Cfi> {
        self.cfi.get_or_init(|| Arc::new(Cfi::load(&self.file)))
    }
}

/// `/usr/lib/debug/.build-id/xx/rest.debug` if it exists.
fn separate_debug_file(elf: &ElfFile64<Endianness>) -> Option<PathBuf> {
    let id = elf.build_id().ok()??;
    let (first, rest) = id.split_first()?;
    let hex: String = rest.iter().map(|b| format!("{b:02x}")).collect();
    let path = PathBuf::from(format!("/usr/lib/debug/.build-id/{first:02x}/{hex}.debug"));
    path.is_file().then_some(path)
}
