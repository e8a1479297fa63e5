//! The durable image format (DESIGN §8) through its public API: round trips,
//! crash safety, and clear errors for truncated, corrupt and foreign files.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rewind_ckpt::image::format::{
    CpuSummary, EpollWatch, FdKind, FdState, FileIdentity, Header, IpcPerm, MmFields, PageRun,
    ProcessState, Region, RegionKind, Rlimit, SharedKind, SharedObject, SigAction, SysVShm,
    ThreadState, FORMAT_VERSION, MAGIC, OLDEST_READABLE_VERSION,
};
use rewind_ckpt::image::{
    parse, read_header, ImageError, ImageReader, ImageWriter, MemoryChunk, PageSource,
    CHUNK_RAW_BYTES,
};

const PAGE: usize = 4096;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A directory removed with everything in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rewind-image-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .expect("read temp dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// xorshift64*: deterministic, no crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            word.copy_from_slice(&v[..word.len()]);
        }
    }
}

fn header() -> Header {
    Header {
        kernel: "6.8.0-test".into(),
        arch: "x86_64".into(),
        cpu: CpuSummary {
            vendor: "GenuineIntel".into(),
            xcr0: 0x2e7,
            xsave_size: 2696,
        },
        created_unix: 1_700_000_000,
        prog: "loop".into(),
        vpid: 4242,
        writer: "rewind test".into(),
    }
}

fn anon(start: u64, end: u64) -> Region {
    Region {
        start,
        end,
        prot: 3,
        shared: false,
        kind: RegionKind::Anon,
        name: String::new(),
    }
}

fn state(regions: Vec<Region>) -> ProcessState {
    ProcessState {
        vpid: 4242,
        vppid: 1,
        vpgid: 4242,
        vsid: 4242,
        exe: "/usr/bin/loop".into(),
        cmdline: vec!["loop".into(), "--forever".into()],
        cwd: "/tmp".into(),
        umask: 0o022,
        personality: 0,
        rlimits: vec![Rlimit {
            resource: 7,
            cur: 1024,
            max: 4096,
        }],
        mm: MmFields {
            start_code: 0x40_0000,
            end_code: 0x40_1000,
            brk: 0x60_0000,
            ..MmFields::default()
        },
        auxv: (0u8..64).collect(),
        regions,
        threads: vec![ThreadState {
            vtid: 4242,
            comm: "loop".into(),
            regs: (0..27).collect(),
            xstate: vec![0xab; 832],
            sigmask: 1 << 9,
            pending: vec![],
            altstack: (0, 2, 0),
            rseq: Some((0x7f00_0000_1000, 32, 0x5305_3053)),
            clear_child_tid: 0x7f00_0000_2000,
            robust_list: (0x7f00_0000_3000, 24),
        }],
        sigactions: vec![SigAction::default(); 64],
        shared_pending: vec![],
        itimers: [(0, 0); 3],
        fds: vec![FdState {
            fd: 1,
            flags: 1,
            cloexec: false,
            kind: FdKind::Inherited { from: 1 },
        }],
        vids: vec![(4242, 4242)],
        plugin_data: vec![],
    }
}

/// Pages of `chunks` by address.
fn pages_of(chunks: &[MemoryChunk]) -> BTreeMap<u64, Vec<u8>> {
    let mut pages = BTreeMap::new();
    for chunk in chunks {
        let stored: u64 = chunk.runs.iter().map(|r| r.len).sum();
        assert_eq!(stored as usize, chunk.data.len(), "runs cover the data");
        for (run, bytes) in chunk.pages() {
            for (i, page) in bytes.chunks(PAGE).enumerate() {
                let old = pages.insert(run.addr + (i * PAGE) as u64, page.to_vec());
                assert!(old.is_none(), "page {:#x} stored twice", run.addr);
            }
        }
    }
    pages
}

fn read_all(path: &Path) -> (Header, ProcessState, Vec<MemoryChunk>) {
    let mut reader = ImageReader::open(path).expect("open image");
    let chunks: Vec<MemoryChunk> = reader
        .chunks()
        .collect::<Result<_, _>>()
        .expect("read chunks");
    assert!(reader.next_chunk().expect("after the end").is_none());
    (reader.header.clone(), reader.state.clone(), chunks)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Offsets of the header, the process state, the chunks and the trailer,
/// found by walking the layout (format.rs).
struct Layout {
    header: usize,
    state: usize,
    chunks: Vec<usize>,
    trailer: usize,
}

fn layout(bytes: &[u8]) -> Layout {
    let header = 24;
    let state = header + u32_at(bytes, 12) as usize + 4;
    let mut at = state + u32_at(bytes, 16) as usize + 4;
    let mut chunks = Vec::new();
    while u32_at(bytes, at) == rewind_ckpt::image::format::CHUNK_MAGIC {
        chunks.push(at);
        at += 20 + u32_at(bytes, at + 12) as usize + 4 + u32_at(bytes, at + 8) as usize;
    }
    assert_eq!(u32_at(bytes, at), rewind_ckpt::image::format::TRAILER_MAGIC);
    assert_eq!(at + 20, bytes.len());
    Layout {
        header,
        state,
        chunks,
        trailer: at,
    }
}

/// CRC-32C, bit by bit (an independent check of the writer's).
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Recomputes the CRC stored after `bytes[at..at + len]`.
fn fix_crc(bytes: &mut [u8], at: usize, len: usize) {
    let crc = crc32c(&bytes[at..at + len]);
    bytes[at + len..at + len + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A [`PageSource`] over a buffer that stands for the memory at `base`,
/// recording which threads read it.
struct Memory {
    base: u64,
    bytes: Vec<u8>,
    readers: Mutex<Vec<std::thread::ThreadId>>,
    reads: AtomicU64,
}

impl Memory {
    fn new(base: u64, bytes: Vec<u8>) -> Arc<Memory> {
        Arc::new(Memory {
            base,
            bytes,
            readers: Mutex::new(Vec::new()),
            reads: AtomicU64::new(0),
        })
    }
}

impl PageSource for Memory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let id = std::thread::current().id();
        let mut readers = self.readers.lock().expect("lock");
        if !readers.contains(&id) {
            readers.push(id);
        }
        drop(readers);
        let at = usize::try_from(addr - self.base).expect("offset");
        buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
        Ok(())
    }
}

/// A small image: a few compressible pages in two runs, in memory.
fn small_image(dir: &TempDir) -> Vec<u8> {
    let path = dir.path("small.rwd");
    let st = state(vec![anon(0x10000, 0x30000)]);
    let mut w = ImageWriter::create(&path, &header(), &st).expect("create");
    let mut mem = vec![0u8; 8 * PAGE];
    for (i, page) in mem.chunks_mut(PAGE).enumerate() {
        if i != 3 {
            page[..64].fill(i as u8 + 1);
        }
    }
    w.add_pages(0x10000, &mem).expect("add");
    w.finish().expect("finish");
    fs::read(&path).expect("read image")
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

#[test]
fn round_trip_keeps_every_non_zero_page_and_skips_zero_pages() {
    let dir = TempDir::new("roundtrip");
    let path = dir.path("ckpt_loop_4242.rwd");
    // Region A: 12 MiB with zero pages interleaved; region B right after a
    // gap; region C adjacent to B (a run may cross into it).
    let a = (0x1000_0000u64, 0x1000_0000u64 + (12 << 20));
    let b = (0x2000_0000u64, 0x2000_0000u64 + 64 * PAGE as u64);
    let c = (b.1, b.1 + 64 * PAGE as u64);
    let st = state(vec![anon(a.0, a.1), anon(b.0, b.1), anon(c.0, c.1)]);

    let mut rng = Rng(0x1234_5678);
    let mut expected = BTreeMap::new();
    let mut zero_pages = 0u64;
    let mut fill = |start: u64, end: u64, rng: &mut Rng| {
        let mut mem = vec![0u8; (end - start) as usize];
        for (i, page) in mem.chunks_mut(PAGE).enumerate() {
            let addr = start + (i * PAGE) as u64;
            let zero = i % 7 == 3 || (200..260).contains(&i);
            if zero {
                zero_pages += 1;
            } else {
                // Half random, half pattern: compressible but not trivially.
                rng.fill(&mut page[..PAGE / 2]);
                page[PAGE / 2..].fill((i % 251) as u8 | 1);
                expected.insert(addr, page.to_vec());
            }
        }
        mem
    };
    let mem_a = fill(a.0, a.1, &mut rng);
    let mem_bc = fill(b.0, c.1, &mut rng);

    let mut w = ImageWriter::create(&path, &header(), &st).expect("create");
    // Uneven batches, as a capture reading memory piece by piece would give.
    let mut at = 0;
    for len in [PAGE, 3 * PAGE, 1 << 20, 5 << 20].into_iter().cycle() {
        if at == mem_a.len() {
            break;
        }
        let len = len.min(mem_a.len() - at);
        w.add_pages(a.0 + at as u64, &mem_a[at..at + len])
            .expect("add A");
        at += len;
    }
    w.add_pages(b.0, &mem_bc).expect("add B and C");
    let stats = w.finish().expect("finish");

    let stored = expected.len() as u64 * PAGE as u64;
    assert_eq!(stats.path, path);
    assert_eq!(stats.raw_bytes, stored);
    assert_eq!(stats.zero_pages, zero_pages);
    assert_eq!(stats.file_bytes, fs::metadata(&path).expect("stat").len());
    assert!(
        stats.chunks >= 3,
        "{} MiB raw make several chunks",
        stored >> 20
    );
    assert_eq!(
        dir.entries(),
        vec!["ckpt_loop_4242.rwd".to_string()],
        "no temp file left"
    );

    let (h, s, chunks) = read_all(&path);
    assert_eq!(h, header());
    assert_eq!(s, st);
    assert_eq!(chunks.len() as u64, stats.chunks);
    for chunk in &chunks {
        assert!(chunk.data.len() <= CHUNK_RAW_BYTES);
    }
    assert_eq!(pages_of(&chunks), expected);

    // Runs are maximal: consecutive non-zero pages form one run, split only
    // at chunk boundaries (and the B/C boundary does not split one).
    let mut sequences = 0;
    let mut prev: Option<u64> = None;
    for &addr in expected.keys() {
        match prev {
            Some(p) if p + PAGE as u64 == addr => {}
            _ => sequences += 1,
        }
        prev = Some(addr);
    }
    let runs: usize = chunks.iter().map(|c| c.runs.len()).sum();
    assert!(
        runs >= sequences && runs < sequences + chunks.len(),
        "{runs} runs for {sequences} sequences in {} chunks",
        chunks.len()
    );
    assert!(chunks
        .iter()
        .any(|c| c.runs.iter().any(|r| r.addr < b.1 && r.addr + r.len > b.1)));

    // The same through verify, parse and read_header.
    let (vh, vs, vstats) = ImageReader::verify(&path).expect("verify");
    assert_eq!((vh, vs), (header(), st.clone()));
    assert_eq!(vstats.raw_bytes, stats.raw_bytes);
    assert_eq!(vstats.chunks, stats.chunks);
    assert_eq!(vstats.file_bytes, stats.file_bytes);
    let bytes = fs::read(&path).expect("read");
    let (ph, ps, pchunks) = parse(&bytes).expect("parse");
    assert_eq!((ph, ps), (header(), st));
    assert_eq!(pchunks, chunks);
    assert_eq!(read_header(&path).expect("read_header"), header());
}

#[test]
fn add_range_is_read_by_the_workers_and_round_trips() {
    let dir = TempDir::new("ranges");
    let path = dir.path("ranges.rwd");
    // Region A: 13 MiB, zero pages here and there and a long zero stretch;
    // region B after a gap, region C adjacent to it.
    let a = (0x1000_0000u64, 0x1000_0000u64 + (13 << 20));
    let b = (0x2000_0000u64, 0x2000_0000u64 + 64 * PAGE as u64);
    let c = (b.1, b.1 + 64 * PAGE as u64);
    let st = state(vec![anon(a.0, a.1), anon(b.0, b.1), anon(c.0, c.1)]);
    let mut rng = Rng(0xabcdef);
    let mut expected = BTreeMap::new();
    let mut fill = |start: u64, end: u64| {
        let mut mem = vec![0u8; (end - start) as usize];
        for (i, page) in mem.chunks_mut(PAGE).enumerate() {
            if i % 7 == 3 || (1000..1900).contains(&i) {
                continue;
            }
            rng.fill(&mut page[..PAGE / 2]);
            page[PAGE / 2..].fill((i % 251) as u8 | 1);
            expected.insert(start + (i * PAGE) as u64, page.to_vec());
        }
        mem
    };
    let mem_a = Memory::new(a.0, fill(a.0, a.1));
    let mem_bc = Memory::new(b.0, fill(b.0, c.1));
    let source_a: Arc<dyn PageSource> = mem_a.clone();
    let source_bc: Arc<dyn PageSource> = mem_bc.clone();

    let mut w = ImageWriter::create(&path, &header(), &st).expect("create");
    // Uneven ranges, as pagemap runs give them: single pages, odd sizes,
    // ranges longer than a chunk.
    let mut at = 0u64;
    for len in [PAGE, 3 * PAGE, 1 << 20, 5 << 20, 17 * PAGE]
        .into_iter()
        .cycle()
    {
        if at == a.1 - a.0 {
            break;
        }
        let len = (len as u64).min(a.1 - a.0 - at);
        w.add_range(a.0 + at, len, &source_a).expect("add A");
        at += len;
    }
    w.add_range(b.0, c.1 - b.0, &source_bc)
        .expect("add B and C");
    let stats = w.finish().expect("finish");

    // Nobody but the workers read the memory.
    let me = std::thread::current().id();
    for m in [&mem_a, &mem_bc] {
        let readers = m.readers.lock().expect("lock");
        assert!(!readers.is_empty());
        assert!(!readers.contains(&me), "the caller's thread read memory");
    }
    let pages = (c.1 - a.0 - (b.0 - a.1)) / PAGE as u64;
    assert_eq!(stats.raw_bytes, expected.len() as u64 * PAGE as u64);
    assert_eq!(stats.zero_pages, pages - expected.len() as u64);
    assert_eq!(stats.file_bytes, fs::metadata(&path).expect("stat").len());
    assert_eq!(dir.entries(), vec!["ranges.rwd".to_string()]);
    let (h, s, chunks) = read_all(&path);
    assert_eq!((h, s), (header(), st));
    assert_eq!(chunks.len() as u64, stats.chunks);
    for chunk in &chunks {
        assert!(!chunk.data.is_empty() && chunk.data.len() <= CHUNK_RAW_BYTES);
    }
    assert_eq!(pages_of(&chunks), expected);
    // Chunks follow the order memory was given in.
    let firsts: Vec<u64> = chunks.iter().map(|c| c.runs[0].addr).collect();
    assert!(firsts.windows(2).all(|w| w[0] < w[1]), "{firsts:x?}");
    // A run crosses from B into C.
    assert!(chunks
        .iter()
        .any(|c| c.runs.iter().any(|r| r.addr < b.1 && r.addr + r.len > b.1)));
    assert!(ImageReader::verify(&path).is_ok());
}

#[test]
fn add_range_and_add_pages_keep_their_order() {
    let dir = TempDir::new("mixed");
    let path = dir.path("mixed.rwd");
    let base = 0x4000_0000u64;
    let st = state(vec![anon(base, base + (1 << 20))]);
    let mut bytes = vec![0u8; 1 << 20];
    for (i, page) in bytes.chunks_mut(PAGE).enumerate() {
        page[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    }
    let memory = Memory::new(base, bytes.clone());
    let source: Arc<dyn PageSource> = memory.clone();
    let p = PAGE as u64;
    let mut w = ImageWriter::create(&path, &header(), &st).expect("create");
    w.add_pages(base + 10 * p, &bytes[10 * PAGE..12 * PAGE])
        .expect("pages");
    w.add_range(base, 4 * p, &source).expect("range");
    w.add_range(base + 4 * p, 2 * p, &source).expect("range");
    w.add_pages(base + 100 * p, &bytes[100 * PAGE..101 * PAGE])
        .expect("pages");
    w.add_range(base + 50 * p, 0, &source).expect("empty range");
    w.add_range(base + 50 * p, p, &source).expect("range");
    w.finish().expect("finish");
    let (_, _, chunks) = read_all(&path);
    let runs: Vec<(u64, u64)> = chunks
        .iter()
        .flat_map(|c| c.runs.iter().map(|r| ((r.addr - base) / p, r.len / p)))
        .collect();
    assert_eq!(runs, vec![(10, 2), (0, 6), (100, 1), (50, 1)]);
    let pages = pages_of(&chunks);
    for (addr, page) in pages {
        let at = (addr - base) as usize;
        assert_eq!(page[..], bytes[at..at + PAGE]);
    }
}

#[test]
fn incompressible_and_compressible_chunks_round_trip() {
    let dir = TempDir::new("incompressible");
    let path = dir.path("mixed.rwd");
    let base = 0x4000_0000u64;
    let size = 3 * CHUNK_RAW_BYTES;
    let st = state(vec![anon(base, base + size as u64)]);
    // Random, then random for a while and compressible after, then
    // compressible.
    let mut mem = vec![0u8; size];
    Rng(77).fill(&mut mem[..CHUNK_RAW_BYTES + (256 << 10)]);
    for (i, b) in mem[CHUNK_RAW_BYTES + (256 << 10)..].iter_mut().enumerate() {
        *b = (i / 64 % 7) as u8 + 1;
    }
    let source: Arc<dyn PageSource> = Memory::new(base, mem.clone());
    let mut w = ImageWriter::create(&path, &header(), &st).expect("create");
    w.add_range(base, size as u64, &source).expect("add");
    let stats = w.finish().expect("finish");
    assert_eq!(stats.chunks, 3);
    let bytes = fs::read(&path).expect("read");
    let l = layout(&bytes);
    let frame_len = |i: usize| u32_at(&bytes, l.chunks[i] + 8) as usize;
    assert!(
        frame_len(0) > CHUNK_RAW_BYTES,
        "random memory does not shrink"
    );
    assert!(
        frame_len(1) < CHUNK_RAW_BYTES / 2,
        "a chunk that starts random and goes on compressible still shrinks: {}",
        frame_len(1)
    );
    assert!(frame_len(2) < CHUNK_RAW_BYTES / 50, "{}", frame_len(2));
    let (_, _, chunks) = read_all(&path);
    let data: Vec<u8> = chunks.iter().flat_map(|c| c.data.iter().copied()).collect();
    assert_eq!(data, mem);
}

#[test]
fn add_range_of_zero_pages_stores_nothing() {
    let dir = TempDir::new("zero-range");
    let path = dir.path("zero.rwd");
    let size = 64u64 << 20;
    let base = 0x4000_0000u64;
    let st = state(vec![anon(base, base + size)]);
    let zeros = |_addr: u64, buf: &mut [u8]| -> std::io::Result<()> {
        buf.fill(0);
        Ok(())
    };
    let source: Arc<dyn PageSource> = Arc::new(zeros);
    let mut w = ImageWriter::create(&path, &header(), &st).expect("create");
    w.add_range(base, size, &source).expect("add");
    let stats = w.finish().expect("finish");
    assert_eq!((stats.chunks, stats.raw_bytes), (0, 0));
    assert_eq!(stats.zero_pages, size / PAGE as u64);
    assert!(stats.file_bytes < 4096, "{} bytes", stats.file_bytes);
    assert!(read_all(&path).2.is_empty());
}

#[test]
fn add_range_read_error_abandons_the_image() {
    let dir = TempDir::new("read-error");
    let path = dir.path("ckpt_loop_4242.rwd");
    let size = 32u64 << 20;
    let base = 0x4000_0000u64;
    let bad = base + (21 << 20) + 5 * PAGE as u64;
    let st = state(vec![anon(base, base + size)]);
    let source: Arc<dyn PageSource> = Arc::new(move |addr: u64, buf: &mut [u8]| {
        if (addr..addr + buf.len() as u64).contains(&bad) {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        buf.fill(0x11);
        Ok(())
    });
    let mut w = ImageWriter::create(&path, &header(), &st).expect("create");
    // The error comes from a later add_range or from finish.
    let err = match w.add_range(base, size, &source) {
        Err(e) => e,
        Ok(()) => w.finish().expect_err("finish after a failed read"),
    };
    match &err {
        ImageError::Read { addr, len, .. } => assert!((*addr..*addr + *len).contains(&bad)),
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(text.starts_with("cannot read "), "{text}");
    assert!(text.contains("memory at 0x"), "{text}");
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
}

#[test]
fn add_range_refuses_what_it_cannot_store() {
    let dir = TempDir::new("refuse-range");
    let path = dir.path("refuse.rwd");
    let st = state(vec![anon(0x10000, 0x20000)]);
    let source: Arc<dyn PageSource> = Memory::new(0x10000, vec![3u8; 0x10000]);
    let mut w = ImageWriter::create(&path, &header(), &st).expect("create");
    let p = PAGE as u64;
    for (addr, len) in [(0x10001, p), (0x10000, 100), (0x20000, p), (0xf000, 2 * p)] {
        match w.add_range(addr, len, &source) {
            Err(ImageError::Encode(why)) => assert!(why.starts_with("add_range: "), "{why}"),
            other => panic!("{addr:#x}+{len:#x}: {other:?}"),
        }
    }
    assert!(w.add_range(u64::MAX - p + 1, 2 * p, &source).is_err());
    // The writer is still usable after refusing.
    w.add_range(0x1f000, p, &source)
        .expect("last page of the region");
    w.finish().expect("finish");
    assert_eq!(pages_of(&read_all(&path).2).len(), 1);
}

#[test]
fn zero_pages_are_not_stored() {
    let dir = TempDir::new("zero");
    let path = dir.path("zero.rwd");
    let size = 64usize << 20;
    let st = state(vec![anon(0x4000_0000, 0x4000_0000 + size as u64)]);
    let mut mem = vec![0u8; size];
    for i in 0..16 {
        mem[i * 997 * PAGE + 5] = 0x5a;
    }
    let mut w = ImageWriter::create(&path, &header(), &st).expect("create");
    w.add_pages(0x4000_0000, &mem).expect("add");
    let stats = w.finish().expect("finish");
    assert_eq!(stats.raw_bytes, 16 * PAGE as u64);
    assert_eq!(stats.zero_pages, (size / PAGE) as u64 - 16);
    assert_eq!(stats.chunks, 1);
    assert!(
        stats.file_bytes < 16 << 10,
        "64 MiB of mostly zero memory took {} bytes",
        stats.file_bytes
    );
    let (_, _, chunks) = read_all(&path);
    let pages = pages_of(&chunks);
    assert_eq!(pages.len(), 16);
    for (addr, page) in pages {
        let i = (addr - 0x4000_0000) as usize / PAGE;
        assert_eq!(page[..], mem[i * PAGE..(i + 1) * PAGE]);
    }
}

#[test]
fn image_without_memory_round_trips() {
    let dir = TempDir::new("empty");
    let path = dir.path("empty.rwd");
    let st = state(vec![]);
    let stats = ImageWriter::create(&path, &header(), &st)
        .expect("create")
        .finish()
        .expect("finish");
    assert_eq!((stats.chunks, stats.raw_bytes), (0, 0));
    let (h, s, chunks) = read_all(&path);
    assert_eq!((h, s), (header(), st));
    assert!(chunks.is_empty());
}

#[test]
fn compression_level_is_configurable() {
    let dir = TempDir::new("level");
    let path = dir.path("level.rwd");
    let st = state(vec![anon(0x10000, 0x10000 + (1 << 20))]);
    let mem: Vec<u8> = (0..1usize << 20).map(|i| (i / 3 % 17) as u8 + 1).collect();
    let mut w = ImageWriter::create(&path, &header(), &st)
        .expect("create")
        .with_level(19);
    w.add_pages(0x10000, &mem).expect("add");
    w.finish().expect("finish");
    let (_, _, chunks) = read_all(&path);
    assert_eq!(chunks[0].data, mem);
}

#[test]
fn image_is_private_to_its_owner() {
    let dir = TempDir::new("mode");
    let bytes = small_image(&dir);
    assert!(!bytes.is_empty());
    let mode = fs::metadata(dir.path("small.rwd"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
}

#[test]
fn add_pages_refuses_what_it_cannot_store() {
    let dir = TempDir::new("refuse");
    let path = dir.path("refuse.rwd");
    let st = state(vec![anon(0x10000, 0x20000)]);
    let mut w = ImageWriter::create(&path, &header(), &st).expect("create");
    let page = vec![1u8; PAGE];
    assert!(matches!(
        w.add_pages(0x10001, &page),
        Err(ImageError::Encode(_))
    ));
    assert!(matches!(
        w.add_pages(0x10000, &page[..100]),
        Err(ImageError::Encode(_))
    ));
    let outside = w
        .add_pages(0x20000, &page)
        .expect_err("outside every region");
    assert!(outside.to_string().contains("0x20000"), "{outside}");
    w.add_pages(0x10000, &[]).expect("nothing to add is fine");
    // The writer is still usable after refusing.
    w.add_pages(0x1f000, &page)
        .expect("last page of the region");
    w.finish().expect("finish");
    assert_eq!(pages_of(&read_all(&path).2).len(), 1);
}

// ---------------------------------------------------------------------------
// Crash safety
// ---------------------------------------------------------------------------

#[test]
fn dropped_writer_leaves_no_file() {
    let dir = TempDir::new("drop");
    let path = dir.path("ckpt_loop_4242.rwd");
    let st = state(vec![anon(0x10000, 0x10000 + (9 << 20))]);
    let mut w = ImageWriter::create(&path, &header(), &st).expect("create");
    let mut mem = vec![0u8; 9 << 20];
    Rng(7).fill(&mut mem);
    w.add_pages(0x10000, &mem).expect("add");
    assert_eq!(dir.entries().len(), 1, "the temp file exists while writing");
    assert!(dir.entries()[0].starts_with(".ckpt_loop_4242.rwd.tmp."));
    drop(w);
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
}

#[test]
fn overwriting_keeps_the_old_image_valid_until_finish() {
    let dir = TempDir::new("overwrite");
    let path = dir.path("ckpt_loop_4242.rwd");
    let old_state = state(vec![anon(0x10000, 0x20000)]);
    let mut w = ImageWriter::create(&path, &header(), &old_state).expect("create old");
    w.add_pages(0x10000, &[1u8; PAGE]).expect("add old");
    w.finish().expect("finish old");

    let mut new_state = state(vec![anon(0x10000, 0x10000 + (6 << 20))]);
    new_state.vpid = 777;
    let mut w = ImageWriter::create(&path, &header(), &new_state).expect("create new");
    let mut mem = vec![0u8; 6 << 20];
    Rng(9).fill(&mut mem);
    w.add_pages(0x10000, &mem).expect("add new");

    // Mid-write, the old image is still complete and valid.
    let (_, s, stats) = ImageReader::verify(&path).expect("old image still valid");
    assert_eq!(s, old_state);
    assert_eq!(stats.raw_bytes, PAGE as u64);
    assert_eq!(dir.entries().len(), 2);

    w.finish().expect("finish new");
    let (_, s, stats) = ImageReader::verify(&path).expect("new image valid");
    assert_eq!(s, new_state);
    assert_eq!(stats.raw_bytes, 6 << 20);
    assert_eq!(dir.entries(), vec!["ckpt_loop_4242.rwd".to_string()]);
}

// ---------------------------------------------------------------------------
// Damaged and foreign files
// ---------------------------------------------------------------------------

#[test]
fn truncated_image_is_an_error_at_every_cut() {
    let dir = TempDir::new("truncated");
    let bytes = small_image(&dir);
    assert!(parse(&bytes).is_ok());
    for cut in 0..bytes.len() {
        match parse(&bytes[..cut]) {
            Err(ImageError::Truncated { .. }) => {}
            other => panic!("cut at {cut} of {}: {other:?}", bytes.len()),
        }
    }
}

#[test]
fn truncated_multi_chunk_file_names_what_ends_early() {
    let dir = TempDir::new("truncated-file");
    let path = dir.path("ckpt_loop_4242.rwd");
    let size = 9usize << 20;
    let st = state(vec![anon(0x10000, 0x10000 + size as u64)]);
    let mem: Vec<u8> = (0..size).map(|i| (i % 253) as u8 | 1).collect();
    let mut w = ImageWriter::create(&path, &header(), &st).expect("create");
    w.add_pages(0x10000, &mem).expect("add");
    w.finish().expect("finish");
    let bytes = fs::read(&path).expect("read");
    let Layout {
        state,
        chunks,
        trailer,
        ..
    } = layout(&bytes);
    assert_eq!(chunks.len(), 3);

    let cut_path = dir.path("cut.rwd");
    let cases = [
        (0, "preamble"),
        (5, "preamble"),
        (20, "preamble"),
        (30, "header"),
        (state + 2, "process state"),
        (chunks[0] - 1, "process state"),
        (chunks[0], "trailer"),
        (chunks[0] + 10, "memory chunk 0"),
        (chunks[0] + 22, "memory chunk 0"),
        (chunks[1] + 100, "memory chunk 1"),
        (chunks[2] - 1, "memory chunk 1"),
        (trailer, "trailer"),
        (trailer + 7, "trailer"),
        (bytes.len() - 1, "trailer"),
    ];
    for (cut, what_expected) in cases {
        fs::write(&cut_path, &bytes[..cut]).expect("write cut");
        let err = ImageReader::verify(&cut_path).expect_err("truncated image verified");
        match &err {
            ImageError::Truncated { what, path, .. } => {
                assert_eq!(what, what_expected, "cut at {cut}");
                assert_eq!(path, &cut_path);
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("cut.rwd: truncated image: "), "{text}");
        assert!(
            text.ends_with("ends early (was the checkpoint interrupted?)"),
            "{text}"
        );
    }
    fs::write(&cut_path, &bytes[..10]).expect("write cut");
    assert!(matches!(
        read_header(&cut_path),
        Err(ImageError::Truncated { .. })
    ));
}

#[test]
fn flipped_byte_is_corrupt_and_names_the_chunk() {
    let dir = TempDir::new("flip");
    let path = dir.path("ckpt_loop_4242.rwd");
    let size = 9usize << 20;
    let st = state(vec![anon(0x10000, 0x10000 + size as u64)]);
    let mut mem = vec![0u8; size];
    Rng(3).fill(&mut mem);
    let mut w = ImageWriter::create(&path, &header(), &st).expect("create");
    w.add_pages(0x10000, &mem).expect("add");
    w.finish().expect("finish");
    let good = fs::read(&path).expect("read");
    let Layout {
        header,
        state,
        chunks,
        trailer,
    } = layout(&good);
    let chunks: Vec<u64> = chunks.iter().map(|&c| c as u64).collect();
    let trailer = trailer as u64;
    assert_eq!(chunks.len(), 3);
    let bad_path = dir.path("bad.rwd");

    let check = |at: usize, what_expected: &str, offset_expected: u64| {
        let mut bytes = good.clone();
        bytes[at] ^= 0x40;
        fs::write(&bad_path, &bytes).expect("write bad");
        let err = ImageReader::verify(&bad_path).expect_err("corrupt image verified");
        match &err {
            ImageError::Corrupt { what, offset, .. } => {
                assert_eq!(what, what_expected, "flip at {at}: {err}");
                assert_eq!(*offset, offset_expected, "flip at {at}: {err}");
            }
            other => panic!("flip at {at}: {other:?}"),
        }
        assert!(err.to_string().contains(&format!(
            "bad.rwd: corrupt image: {what_expected} at offset {offset_expected}: "
        )));
        assert!(parse(&bytes).is_err());
        err
    };

    // In the middle of chunk 1's compressed bytes: the checksum catches it.
    let err = check(
        (chunks[1] + chunks[2]) as usize / 2,
        "memory chunk 1",
        chunks[1],
    );
    assert!(err.to_string().contains("zstd"), "{err}");
    // The chunk's magic, its raw length, its run list.
    check(chunks[2] as usize, "memory chunk 2", chunks[2]);
    check(chunks[0] as usize + 5, "memory chunk 0", chunks[0]);
    check(chunks[2] as usize + 17, "memory chunk 2", chunks[2]);
    // The trailer's chunk count.
    check(trailer as usize + 4, "trailer", trailer);
    // The trailer's tag.
    check(trailer as usize, "trailer", trailer);
    // The length of the header's first string.
    let err = check(header, "header", header as u64);
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    // The process state's length, in the preamble.
    check(17, "preamble", 0);
    // A register value in the process state.
    let regs = find(&good[state..chunks[0] as usize], &[25, 26]) + state;
    let err = check(regs, "process state", state as u64);
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    // A page run's address.
    let err = check(chunks[1] as usize + 21, "memory chunk 1", chunks[1]);
    assert!(
        err.to_string().contains("page runs: checksum mismatch"),
        "{err}"
    );

    // Reading chunk by chunk yields the good chunks first, then the error,
    // then nothing more.
    let mut bytes = good.clone();
    bytes[(chunks[1] + chunks[2]) as usize / 2] ^= 1;
    fs::write(&bad_path, &bytes).expect("write bad");
    let mut reader = ImageReader::open(&bad_path).expect("open");
    let items: Vec<_> = reader.chunks().collect();
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert!(matches!(&items[1], Err(ImageError::Corrupt { what, .. }) if what == "memory chunk 1"));
    assert!(reader.next_chunk().is_err(), "no silent end after an error");
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in haystack")
}

/// The part of the image each byte of `bytes` belongs to, as errors name it.
fn parts(bytes: &[u8]) -> Vec<String> {
    let l = layout(bytes);
    let mut parts = vec![String::new(); bytes.len()];
    for (at, part) in parts.iter_mut().enumerate() {
        *part = match at {
            0..=7 => "magic".into(),
            8..=11 => "version".into(),
            12..=23 => "preamble".into(),
            _ if at < l.state => "header".into(),
            _ if at >= l.trailer => "trailer".into(),
            _ => match l.chunks.iter().rposition(|&c| c <= at) {
                Some(i) => format!("memory chunk {i}"),
                None => "process state".into(),
            },
        };
    }
    parts
}

/// Whether `good` with bit `bit` of byte `at` flipped has a version this
/// build reads.
fn readable_version(good: &[u8], at: usize, bit: usize) -> bool {
    let mut version = [good[8], good[9], good[10], good[11]];
    version[at - 8] ^= 1 << bit;
    let v = u32::from_le_bytes(version);
    (OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&v)
}

/// Flips bits of the bytes of `good` one at a time, and requires a clear
/// error naming the part of the image each time: with `all_bits` every bit
/// of every byte, else one bit of every byte. Returns the flips made.
fn every_flip_is_an_error(good: &[u8], all_bits: bool) -> usize {
    assert!(parse(good).is_ok());
    let parts = parts(good);
    let mut flips = 0;
    let mut bytes = good.to_vec();
    for at in 0..good.len() {
        let bits = if all_bits { 0..8 } else { at % 8..at % 8 + 1 };
        for bit in bits {
            bytes[at] ^= 1 << bit;
            let result = parse(&bytes);
            bytes[at] = good[at];
            let part = parts[at].as_str();
            match (&result, part) {
                (Err(ImageError::NotAnImage { .. }), "magic") => {}
                (
                    Err(ImageError::NewerVersion { .. } | ImageError::OlderVersion { .. }),
                    "version",
                ) => {}
                // Another version this build reads: the preamble's checksum,
                // which covers the version, fails.
                (Err(ImageError::Corrupt { what, .. }), "version")
                    if what == "preamble" && readable_version(good, at, bit) => {}
                (Err(ImageError::Corrupt { what, .. }), _) if what == part => {}
                _ => panic!(
                    "flipping bit {bit} of byte {at} (in the {part}) of {}: {result:?}",
                    good.len()
                ),
            }
            flips += 1;
        }
    }
    flips
}

#[test]
fn every_flipped_bit_is_an_error_naming_the_part() {
    let dir = TempDir::new("every-flip");
    let good = small_image(&dir);
    assert_eq!(every_flip_is_an_error(&good, true), good.len() * 8);
}

#[test]
fn every_flipped_bit_of_the_v1_example_is_an_error() {
    let good = fs::read(v1_example_path()).expect("read the example");
    // One bit of each byte (a different one each time): every bit of every
    // byte takes long in a debug build; the test above does that.
    assert_eq!(every_flip_is_an_error(&good, false), good.len());
}

#[test]
fn checksums_are_crc32c() {
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    let dir = TempDir::new("crc");
    let good = small_image(&dir);
    let l = layout(&good);
    assert_eq!(crc32c(&good[..20]), u32_at(&good, 20));
    let header_len = u32_at(&good, 12) as usize;
    assert_eq!(
        crc32c(&good[l.header..l.header + header_len]),
        u32_at(&good, l.header + header_len)
    );
    let c = l.chunks[0];
    assert_eq!(crc32c(&good[c..c + 16]), u32_at(&good, c + 16));
    let runs_len = u32_at(&good, c + 12) as usize;
    assert_eq!(
        crc32c(&good[c + 20..c + 20 + runs_len]),
        u32_at(&good, c + 20 + runs_len)
    );
}

#[test]
fn every_flipped_byte_of_a_multi_chunk_image_is_an_error() {
    // Two chunks made by the workers, one with an incompressible page
    // (stored as a raw zstd block), the other compressible.
    let dir = TempDir::new("every-flip-chunks");
    let path = dir.path("ranges.rwd");
    let base = 0x10_0000u64;
    let size = CHUNK_RAW_BYTES + 4 * PAGE;
    let st = state(vec![anon(base, base + size as u64)]);
    let mut mem = vec![0u8; size];
    Rng(5).fill(&mut mem[..PAGE]);
    mem[2 * PAGE..2 * PAGE + 100].fill(7);
    for (i, page) in mem[CHUNK_RAW_BYTES..].chunks_mut(PAGE).enumerate() {
        page[..64].fill(i as u8 + 1);
    }
    let source: Arc<dyn PageSource> = Memory::new(base, mem);
    let mut w = ImageWriter::create(&path, &header(), &st).expect("create");
    w.add_range(base, size as u64, &source).expect("add");
    w.finish().expect("finish");
    let good = fs::read(&path).expect("read");
    assert_eq!(layout(&good).chunks.len(), 2);
    assert_eq!(every_flip_is_an_error(&good, false), good.len());
}

#[test]
fn trailing_garbage_is_corrupt() {
    let dir = TempDir::new("garbage");
    let mut bytes = small_image(&dir);
    bytes.extend_from_slice(b"junk");
    assert!(matches!(parse(&bytes), Err(ImageError::Corrupt { what, .. }) if what == "trailer"));
}

#[test]
fn foreign_file_is_not_an_image() {
    let dir = TempDir::new("foreign");
    let sh = fs::read("/bin/sh").unwrap_or_else(|_| b"\x7fELF not really".to_vec());
    let path = dir.path("sh.rwd");
    fs::write(&path, &sh).expect("write");
    let err = ImageReader::open(&path)
        .err()
        .expect("/bin/sh opened as an image");
    assert!(matches!(err, ImageError::NotAnImage { .. }), "{err:?}");
    assert!(
        err.to_string().contains("sh.rwd: not a rewind image"),
        "{err}"
    );
    assert!(matches!(parse(&sh), Err(ImageError::NotAnImage { .. })));
    assert!(matches!(
        read_header(&path),
        Err(ImageError::NotAnImage { .. })
    ));
    assert!(matches!(
        parse(b"hello, world\n"),
        Err(ImageError::NotAnImage { .. })
    ));
    assert!(matches!(parse(b"RW"), Err(ImageError::Truncated { .. })));
    assert!(matches!(parse(b"XY"), Err(ImageError::NotAnImage { .. })));
    assert!(matches!(parse(b""), Err(ImageError::Truncated { .. })));
    let missing = ImageReader::open(&dir.path("missing.rwd"))
        .err()
        .expect("missing file");
    assert!(matches!(missing, ImageError::Io { .. }), "{missing:?}");
}

#[test]
fn other_format_versions_are_refused() {
    let dir = TempDir::new("version");
    let good = small_image(&dir);
    let path = dir.path("versioned.rwd");

    let mut bytes = good.clone();
    bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    fs::write(&path, &bytes).expect("write");
    let err = ImageReader::open(&path)
        .err()
        .expect("newer version opened");
    match &err {
        ImageError::NewerVersion {
            found, supported, ..
        } => {
            assert_eq!((*found, *supported), (FORMAT_VERSION + 1, FORMAT_VERSION));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("newer"), "{err}");
    assert!(matches!(
        read_header(&path),
        Err(ImageError::NewerVersion { .. })
    ));

    bytes[8..12].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        parse(&bytes),
        Err(ImageError::OlderVersion {
            found: 0,
            supported: OLDEST_READABLE_VERSION,
            ..
        })
    ));
}

#[test]
fn absurd_lengths_are_refused_before_allocating() {
    let dir = TempDir::new("lengths");
    let good = small_image(&dir);
    let Layout { header, chunks, .. } = layout(&good);
    // A length changed with its checksum fixed: what a crafted file holds.
    let set = |at: usize, v: u32, crc_from: usize, crc_len: usize| {
        let mut b = good.clone();
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        fix_crc(&mut b, crc_from, crc_len);
        b
    };
    let pre = |at: usize, v: u32| set(at, v, 0, 20);
    let c = chunks[0];
    let head = |at: usize, v: u32| set(c + at, v, c, 16);
    let cases: Vec<(Vec<u8>, &str, bool)> = vec![
        (pre(12, u32::MAX), "header", false),
        (pre(12, 1 << 20), "header", true),
        (pre(16, u32::MAX), "process state", false),
        (pre(16, 100 << 20), "process state", true),
        (head(4, u32::MAX), "memory chunk 0", false),
        (head(8, u32::MAX), "memory chunk 0", false),
        (head(8, 60 << 20), "memory chunk 0", true),
        (head(12, u32::MAX), "memory chunk 0", false),
        (head(12, 1 << 20), "memory chunk 0", true),
    ];
    for (bytes, what_expected, truncated) in cases {
        match parse(&bytes) {
            Err(ImageError::Truncated { what, .. }) if truncated => assert_eq!(what, what_expected),
            Err(ImageError::Corrupt { what, .. }) if !truncated => assert_eq!(what, what_expected),
            other => panic!("{what_expected}: {other:?}"),
        }
    }
    // Without the checksum fixed, a changed length is corrupt.
    let mut bytes = good.clone();
    bytes[12..16].copy_from_slice(&(1u32 << 20).to_le_bytes());
    assert!(matches!(parse(&bytes), Err(ImageError::Corrupt { what, .. }) if what == "preamble"));
    // A string length inside the header that claims gigabytes.
    let mut bytes = good.clone();
    bytes[header] = 0xfd; // bincode varint tag: a u64 follows
    bytes[header + 1..header + 9].copy_from_slice(&(1u64 << 40).to_le_bytes());
    fix_crc(&mut bytes, header, u32_at(&good, 12) as usize);
    match parse(&bytes) {
        Err(ImageError::Corrupt { what, why, .. }) if what == "header" => {
            assert!(!why.contains("checksum"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn parse_never_panics_on_mutated_images() {
    let dir = TempDir::new("fuzz");
    let good = small_image(&dir);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut errors = 0;
    for _ in 0..4000 {
        let mut bytes = good.clone();
        for _ in 0..1 + rng.below(4) {
            match rng.below(6) {
                0 => {
                    let at = rng.below(bytes.len());
                    bytes[at] ^= 1 << rng.below(8);
                }
                1 => {
                    let at = rng.below(bytes.len());
                    bytes[at] = rng.next() as u8;
                }
                2 => {
                    let at = rng.below(bytes.len().saturating_sub(4));
                    let v = [u32::MAX, 1 << 31, 0x7fff_ffff, 0, rng.next() as u32][rng.below(5)];
                    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
                3 => {
                    let cut = rng.below(bytes.len());
                    bytes.truncate(cut);
                }
                4 => {
                    let at = rng.below(bytes.len());
                    bytes.insert(at, rng.next() as u8);
                }
                _ => {
                    let at = rng.below(bytes.len());
                    bytes.remove(at);
                }
            }
            if bytes.len() < 8 {
                break;
            }
        }
        if parse(&bytes).is_err() {
            errors += 1;
        }
    }
    println!("{errors} of 4000 mutated images were refused");
    assert!(errors > 0);
    // Random garbage after a valid preamble.
    for _ in 0..2000 {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let n = rng.below(300);
        bytes.extend((0..n).map(|_| rng.next() as u8));
        assert!(parse(&bytes).is_err());
    }
}

// ---------------------------------------------------------------------------
// Format compatibility: a checked-in version 1 image
// ---------------------------------------------------------------------------

fn v1_example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1-small.rwd")
}

/// Everything the version 1 example holds, built by hand. Do not change it
/// when the format changes: the example must keep decoding to this (or the
/// format change must say it drops version 1).
fn v1_example() -> (Header, ProcessState, Vec<(u64, Vec<u8>)>) {
    let header = Header {
        kernel: "6.8.0-rewind-example".into(),
        arch: "x86_64".into(),
        cpu: CpuSummary {
            vendor: "GenuineIntel".into(),
            xcr0: 0x2e7,
            xsave_size: 2696,
        },
        created_unix: 1_750_000_000,
        prog: "example".into(),
        vpid: 100,
        writer: "rewind 0.1.0 (format v1 example)".into(),
    };
    let state = ProcessState {
        vpid: 100,
        vppid: 1,
        vpgid: 100,
        vsid: 99,
        exe: "/usr/local/bin/example".into(),
        cmdline: vec!["example".into(), "--flag".into(), "ünïcode".into()],
        cwd: "/home/user".into(),
        umask: 0o027,
        personality: 0x0040_0000,
        rlimits: vec![
            Rlimit {
                resource: 3,
                cur: 8 << 20,
                max: u64::MAX,
            },
            Rlimit {
                resource: 7,
                cur: 1024,
                max: 524_288,
            },
        ],
        mm: MmFields {
            start_code: 0x5555_5555_4000,
            end_code: 0x5555_5555_5000,
            start_data: 0x5555_5555_7000,
            end_data: 0x5555_5555_8000,
            start_brk: 0x5555_5556_0000,
            brk: 0x5555_5558_1000,
            start_stack: 0x7ffd_0000_f000,
            arg_start: 0x7ffd_0000_f100,
            arg_end: 0x7ffd_0000_f120,
            env_start: 0x7ffd_0000_f120,
            env_end: 0x7ffd_0000_ff00,
        },
        auxv: (0u8..=255).collect(),
        regions: vec![
            Region {
                start: 0x5555_5555_4000,
                end: 0x5555_5555_6000,
                prot: 5,
                shared: false,
                kind: RegionKind::File {
                    path: "/usr/local/bin/example".into(),
                    offset: 0,
                    identity: FileIdentity {
                        dev: 0x803,
                        ino: 123_456,
                        size: 16_384,
                        mtime_ns: 1_749_999_999_123_456_789,
                    },
                },
                name: "/usr/local/bin/example".into(),
            },
            Region {
                start: 0x5555_5556_0000,
                end: 0x5555_5558_1000,
                prot: 3,
                shared: false,
                kind: RegionKind::Anon,
                name: "[heap]".into(),
            },
            Region {
                start: 0x7f00_0000_0000,
                end: 0x7f00_0000_4000,
                prot: 3,
                shared: true,
                kind: RegionKind::Contents,
                name: "/memfd:buffer (deleted)".into(),
            },
            Region {
                start: 0x7ffd_0000_0000,
                end: 0x7ffd_0001_0000,
                prot: 3,
                shared: false,
                kind: RegionKind::Anon,
                name: "[stack]".into(),
            },
            Region {
                start: 0x7ffd_0002_0000,
                end: 0x7ffd_0002_4000,
                prot: 1,
                shared: false,
                kind: RegionKind::Vvar,
                name: "[vvar]".into(),
            },
            Region {
                start: 0x7ffd_0002_4000,
                end: 0x7ffd_0002_6000,
                prot: 5,
                shared: false,
                kind: RegionKind::Vdso,
                name: "[vdso]".into(),
            },
        ],
        threads: vec![
            ThreadState {
                vtid: 100,
                comm: "example".into(),
                regs: (0..27u64).map(|i| i * 0x1111).collect(),
                xstate: (0..2696usize).map(|i| (i % 7) as u8).collect(),
                sigmask: 1 << 13,
                pending: vec![vec![2u8; 128]],
                altstack: (0x7f00_0001_0000, 0, 0x2000),
                rseq: Some((0x7f00_0002_0020, 32, 0x5305_3053)),
                clear_child_tid: 0x7f00_0002_0000,
                robust_list: (0x7f00_0002_0010, 24),
            },
            ThreadState {
                vtid: 101,
                comm: "worker-1".into(),
                regs: vec![7; 27],
                xstate: vec![],
                sigmask: 0,
                pending: vec![],
                altstack: (0, 2, 0),
                rseq: None,
                clear_child_tid: 0,
                robust_list: (0, 0),
            },
        ],
        sigactions: (0..64u64)
            .map(|i| SigAction {
                handler: if i == 1 { 0x5555_5555_4100 } else { 0 },
                flags: if i == 1 { 0x0400_0000 } else { 0 },
                restorer: 0,
                mask: i,
            })
            .collect(),
        shared_pending: vec![vec![10u8; 128]],
        itimers: [(1000, 2000), (0, 0), (5, 6)],
        fds: vec![
            FdState {
                fd: 0,
                flags: 0o2,
                cloexec: false,
                kind: FdKind::Tty {
                    path: "/dev/pts/3".into(),
                },
            },
            FdState {
                fd: 1,
                flags: 0o2001,
                cloexec: false,
                kind: FdKind::Inherited { from: 1 },
            },
            FdState {
                fd: 3,
                flags: 0,
                cloexec: true,
                kind: FdKind::Path {
                    path: "/etc/hosts".into(),
                    pos: 17,
                },
            },
            FdState {
                fd: 4,
                flags: 0o2,
                cloexec: false,
                kind: FdKind::DeletedFile {
                    path: "/tmp/scratch (deleted)".into(),
                    pos: 3,
                    contents: b"abcdef".to_vec(),
                },
            },
            FdState {
                fd: 5,
                flags: 0,
                cloexec: false,
                kind: FdKind::Pipe {
                    id: 99_001,
                    write_end: false,
                    buffered: b"in flight".to_vec(),
                },
            },
            FdState {
                fd: 6,
                flags: 0o4000,
                cloexec: true,
                kind: FdKind::EventFd {
                    count: 3,
                    semaphore: true,
                },
            },
            FdState {
                fd: 7,
                flags: 0,
                cloexec: true,
                kind: FdKind::TimerFd {
                    clockid: 1,
                    interval_ns: 1_000_000,
                    value_ns: 500_000,
                    ticks: 2,
                },
            },
            FdState {
                fd: 8,
                flags: 0,
                cloexec: true,
                kind: FdKind::SignalFd { mask: 1 << 16 },
            },
            FdState {
                fd: 9,
                flags: 0,
                cloexec: true,
                kind: FdKind::Epoll {
                    watches: vec![EpollWatch {
                        fd: 5,
                        events: 1,
                        data: 0xdead_beef,
                    }],
                },
            },
            FdState {
                fd: 10,
                flags: 0o2,
                cloexec: false,
                kind: FdKind::Unsupported {
                    what: "socket:[12345] (TCP to 10.0.0.1:80)".into(),
                },
            },
        ],
        vids: vec![(100, 31_337), (101, 31_338)],
        plugin_data: vec![("kvm".into(), vec![1, 2, 3])],
    };
    let page = |seed: u8| -> Vec<u8> {
        (0..PAGE)
            .map(|i| (i as u8).wrapping_mul(seed) | 1)
            .collect()
    };
    let memory = vec![
        // Two consecutive heap pages: one run.
        (0x5555_5556_0000, [page(3), page(5)].concat()),
        // A written page of the private file mapping.
        (0x5555_5555_5000, page(7)),
        // The memfd contents, and the top of the stack.
        (0x7f00_0000_1000, page(11)),
        (0x7ffd_0000_f000, page(13)),
    ];
    (header, state, memory)
}

#[test]
#[ignore = "writes tests/data/v1-small.rwd; run once per format version"]
fn regenerate_v1_example() {
    let path = v1_example_path();
    if path.exists() {
        eprintln!("{} exists; delete it first to regenerate", path.display());
        return;
    }
    assert_eq!(
        FORMAT_VERSION, 1,
        "this example is version 1: add a new one instead"
    );
    let (header, state, memory) = v1_example();
    let mut w = ImageWriter::create(&path, &header, &state).expect("create");
    for (addr, bytes) in &memory {
        // A zero page before each piece, which must not be stored.
        if state
            .regions
            .iter()
            .any(|r| r.start < *addr && r.end >= *addr)
        {
            w.add_pages(addr - PAGE as u64, &[0u8; PAGE])
                .expect("zero page");
        }
        w.add_pages(*addr, bytes).expect("add");
    }
    let stats = w.finish().expect("finish");
    eprintln!("wrote {} ({} bytes)", path.display(), stats.file_bytes);
}

#[test]
fn decodes_checked_in_v1_example() {
    let path = v1_example_path();
    let bytes = fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run the ignored regenerate_v1_example test)",
            path.display()
        )
    });
    assert_eq!(&bytes[..8], &MAGIC);
    assert_eq!(
        &bytes[8..12],
        &1u32.to_le_bytes(),
        "the example is version 1"
    );
    let (header, state, memory) = v1_example();

    let (h, s, chunks) = parse(&bytes).expect("decode the version 1 example");
    assert_eq!(h, header);
    assert_eq!(s, state);
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        chunks[0].runs,
        vec![
            PageRun {
                addr: 0x5555_5556_0000,
                len: 2 * PAGE as u64
            },
            PageRun {
                addr: 0x5555_5555_5000,
                len: PAGE as u64
            },
            PageRun {
                addr: 0x7f00_0000_1000,
                len: PAGE as u64
            },
            PageRun {
                addr: 0x7ffd_0000_f000,
                len: PAGE as u64
            },
        ]
    );
    let expected: BTreeMap<u64, Vec<u8>> = memory
        .iter()
        .flat_map(|(addr, bytes)| {
            bytes
                .chunks(PAGE)
                .enumerate()
                .map(move |(i, p)| (addr + (i * PAGE) as u64, p.to_vec()))
        })
        .collect();
    assert_eq!(pages_of(&chunks), expected);

    assert_eq!(read_header(&path).expect("read_header"), header);
    let (_, _, stats) = ImageReader::verify(&path).expect("verify");
    assert_eq!(stats.raw_bytes, 5 * PAGE as u64);
    assert_eq!(stats.chunks, 1);
}

#[test]
fn shared_regions_round_trip_in_the_current_version() {
    let dir = TempDir::new("shared");
    let path = dir.path("ckpt_shm_7.rwd");
    let object = |ino: u64, kind: SharedKind| SharedObject {
        dev: 1,
        ino,
        size: 8 * PAGE as u64,
        kind,
    };
    let shared = |start: u64, object: SharedObject, offset: u64, stored: bool| Region {
        start,
        end: start + 4 * PAGE as u64,
        prot: 3,
        shared: true,
        kind: RegionKind::Shared {
            object,
            offset,
            stored,
        },
        name: "/dev/zero (deleted)".into(),
    };
    let sysv = SysVShm {
        id: 32769,
        key: 0x5257_0001,
        size: 10_000,
        perm: IpcPerm {
            uid: 0,
            gid: 0,
            mode: 0o600,
        },
        removed: true,
    };
    let st = state(vec![
        shared(0x1000_0000, object(40, SharedKind::Anonymous), 0, true),
        // The second half of the same object, mapped again, not stored.
        shared(
            0x1100_0000,
            object(40, SharedKind::Anonymous),
            4 * PAGE as u64,
            false,
        ),
        shared(
            0x1200_0000,
            object(
                41,
                SharedKind::TmpfsFile {
                    path: "/dev/shm/ring".into(),
                    mode: 0o600,
                    uid: 0,
                    gid: 0,
                },
            ),
            0,
            true,
        ),
        shared(0x1300_0000, object(32769, SharedKind::SysV(sysv)), 0, true),
        shared(
            0x1400_0000,
            object(
                42,
                SharedKind::Memfd {
                    name: "ring".into(),
                },
            ),
            0,
            true,
        ),
        shared(
            0x1500_0000,
            object(
                43,
                SharedKind::Deleted {
                    path: "/dev/shm/mpich".into(),
                },
            ),
            0,
            true,
        ),
    ]);
    let page: Vec<u8> = (0..PAGE).map(|i| (i % 253) as u8 | 1).collect();
    let mut w = ImageWriter::create(&path, &header(), &st).expect("create");
    w.add_pages(0x1000_0000, &page).expect("pages");
    w.add_pages(0x1300_0000 + PAGE as u64, &page)
        .expect("pages");
    w.finish().expect("finish");
    let bytes = fs::read(&path).expect("read");
    assert_eq!(&bytes[8..12], &FORMAT_VERSION.to_le_bytes());
    let (_, s, chunks) = parse(&bytes).expect("decode");
    assert_eq!(s, st);
    assert_eq!(pages_of(&chunks).len(), 2);
}

// ---------------------------------------------------------------------------
// Speed (run with --release --ignored --nocapture)
// ---------------------------------------------------------------------------

#[test]
#[ignore = "benchmark: writes 2 GiB"]
fn write_speed_1gib() {
    let dir = TempDir::new("speed");
    let gib = 1usize << 30;
    let batch = 4usize << 20;
    let base = 0x1000_0000u64;
    let st = state(vec![anon(base, base + gib as u64)]);
    let mut random = vec![0u8; 64 << 20];
    Rng(11).fill(&mut random);
    let random = Arc::new(random);
    let zero = Arc::new(vec![0u8; batch]);

    for (name, data) in [("random", &random), ("zero", &zero)] {
        for range in [false, true] {
            let path = dir.path(&format!("{name}.rwd"));
            let start = Instant::now();
            let mut w = ImageWriter::create(&path, &header(), &st).expect("create");
            // The memory at base + at is data[at % data.len()..].
            let pattern = Arc::clone(data);
            let source: Arc<dyn PageSource> = Arc::new(move |addr: u64, buf: &mut [u8]| {
                let mut from = (addr - base) as usize % pattern.len();
                for piece in buf.chunks_mut(PAGE) {
                    piece.copy_from_slice(&pattern[from..from + piece.len()]);
                    from = (from + piece.len()) % pattern.len();
                }
                Ok(())
            });
            let mut at = 0usize;
            while at < gib {
                let len = batch.min(gib - at);
                if range {
                    w.add_range(base + at as u64, len as u64, &source)
                        .expect("add");
                } else {
                    let from = at % data.len();
                    w.add_pages(base + at as u64, &data[from..from + len])
                        .expect("add");
                }
                at += len;
            }
            let added = start.elapsed();
            let stats = w.finish().expect("finish");
            let total = start.elapsed();
            let start = Instant::now();
            let (_, _, vstats) = ImageReader::verify(&path).expect("verify");
            let verify = start.elapsed();
            assert_eq!(vstats.raw_bytes, stats.raw_bytes);
            println!(
                "1 GiB {name} ({}): write {:.2} s ({:.0} MiB/s; adding {:.2} s, \
                 finish+fsync {:.2} s), file {} MiB, {} chunks, {} zero pages; \
                 verify {:.2} s ({:.0} MiB/s)",
                if range { "add_range" } else { "add_pages" },
                total.as_secs_f64(),
                1024.0 / total.as_secs_f64(),
                added.as_secs_f64(),
                (total - added).as_secs_f64(),
                stats.file_bytes >> 20,
                stats.chunks,
                stats.zero_pages,
                verify.as_secs_f64(),
                1024.0 / verify.as_secs_f64(),
            );
            fs::remove_file(&path).expect("remove");
        }
    }
}
