//! Durable checkpoint images (DESIGN §8): the writer, the reader and the
//! fuzzable decoder.
//!
//! Every serialized structure lives in [`format`], which also documents the
//! byte layout. This module only moves those structures to and from files:
//!
//! - [`ImageWriter`] writes `<dir>/.<name>.tmp.<pid>` (mode 0600), compresses
//!   memory on worker threads while the caller keeps reading the target, and
//!   on [`ImageWriter::finish`] fsyncs, renames over the final name and fsyncs
//!   the directory. A crash or an error never leaves a half image under the
//!   final name, and a previous image there stays valid until the rename.
//! - [`ImageReader`] reads a file chunk by chunk; [`ImageReader::verify`]
//!   reads and checks all of it (run it before touching any process).
//! - [`parse`] decodes an image held in memory; it never panics on any input.
//!
//! File and slice reading share one decoder, generic over [`std::io::Read`].
//! Every length read from the input is checked against the bytes that remain
//! and against a fixed ceiling before anything is allocated for it.

mod error;
pub mod format;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use error::ImageError;
use format::{Header, PageRun, ProcessState, CHUNK_MAGIC, FORMAT_VERSION, MAGIC, TRAILER_MAGIC};

/// Memory is stored in pages of this size.
pub const PAGE_SIZE: u64 = 4096;
/// Raw (uncompressed) bytes the writer puts in one memory chunk.
pub const CHUNK_RAW_BYTES: usize = 4 << 20;
/// zstd level used unless [`ImageWriter::with_level`] says otherwise.
pub const DEFAULT_LEVEL: i32 = 1;

/// Largest header either side accepts.
const MAX_HEADER_BYTES: u32 = 64 << 20;
/// Largest encoded process state either side accepts.
const MAX_STATE_BYTES: u32 = 256 << 20;
/// Largest raw or compressed chunk the reader accepts.
const MAX_CHUNK_BYTES: u32 = 64 << 20;
/// Largest encoded run list the reader accepts (a 64 MiB chunk of single
/// pages needs about 300 KiB).
const MAX_RUNS_BYTES: u32 = 1 << 20;
/// Most compression workers, whatever the machine: beyond this the writer
/// waits on reading the target or on the disk, not on zstd.
const MAX_WORKERS: usize = 16;

const PAGE: usize = PAGE_SIZE as usize;
const PREAMBLE_LEN: u64 = 16;
const ZSTD_FRAME_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Content_Checksum_flag of a zstd Frame_Header_Descriptor.
const ZSTD_CHECKSUM_FLAG: u8 = 0x04;

/// What writing or verifying an image found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageStats {
    /// Final path of the image.
    pub path: PathBuf,
    /// Bytes of memory stored (non-zero pages only), before compression.
    pub raw_bytes: u64,
    /// All-zero pages given to the writer and not stored. The image does not
    /// record this number: [`ImageReader::verify`] reports 0.
    pub zero_pages: u64,
    /// Size of the image file.
    pub file_bytes: u64,
    /// Memory chunks in the image.
    pub chunks: u64,
}

/// One decoded memory chunk: `data` is the concatenation of the bytes of
/// `runs`, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryChunk {
    pub runs: Vec<PageRun>,
    pub data: Vec<u8>,
}

impl MemoryChunk {
    /// Each run with its bytes.
    pub fn pages(&self) -> impl Iterator<Item = (&PageRun, &[u8])> + '_ {
        let mut at = 0usize;
        self.runs.iter().map(move |run| {
            // `len` was checked against `data` when the chunk was decoded.
            let len = usize::try_from(run.len).unwrap_or(0);
            let bytes = self.data.get(at..at.saturating_add(len)).unwrap_or(&[]);
            at = at.saturating_add(len);
            (run, bytes)
        })
    }
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// Writes one image: header and process state at [`create`](Self::create),
/// memory with [`add_pages`](Self::add_pages), and [`finish`](Self::finish)
/// to make it appear under its final name. Dropped without `finish`, it
/// removes its temporary file.
pub struct ImageWriter {
    final_path: PathBuf,
    tmp_path: PathBuf,
    out: Option<BufWriter<File>>,
    /// Bytes written to the temporary file so far.
    written: u64,
    level: i32,
    /// Union of the state's regions, sorted, as (start, end).
    spans: Vec<(u64, u64)>,
    /// Raw bytes of the chunk being filled, and its runs.
    pending: Vec<u8>,
    pending_runs: Vec<PageRun>,
    pipeline: Pipeline,
    raw_bytes: u64,
    zero_pages: u64,
    chunks: u64,
    /// A write or compression failed: the temporary file is unusable.
    failed: bool,
    finished: bool,
}

impl ImageWriter {
    /// Starts an image that will become `final_path`: writes the preamble,
    /// `header` and `state` to a temporary file beside it (mode 0600).
    pub fn create(
        final_path: &Path,
        header: &Header,
        state: &ProcessState,
    ) -> Result<ImageWriter, ImageError> {
        let Some(name) = final_path.file_name() else {
            return Err(ImageError::Encode(format!(
                "{}: image path has no file name",
                final_path.display()
            )));
        };
        let mut tmp_name = OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp.{}", std::process::id()));
        let tmp_path = final_path.with_file_name(tmp_name);

        // Encode first: a state that cannot be stored leaves no file behind.
        let header_bytes = encode(header, "header", MAX_HEADER_BYTES)?;
        let state_bytes = encode(state, "process state", MAX_STATE_BYTES)?;

        // A temporary file left by a crashed writer of the same pid is stale.
        match fs::remove_file(&tmp_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(ImageError::Io {
                    path: tmp_path,
                    source: e,
                })
            }
            _ => {}
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_path)
            .map_err(|source| ImageError::Io {
                path: tmp_path.clone(),
                source,
            })?;

        let mut writer = ImageWriter {
            final_path: final_path.to_path_buf(),
            tmp_path,
            out: Some(BufWriter::with_capacity(256 << 10, file)),
            written: 0,
            level: DEFAULT_LEVEL,
            spans: region_spans(state),
            pending: Vec::new(),
            pending_runs: Vec::new(),
            pipeline: Pipeline::new(),
            raw_bytes: 0,
            zero_pages: 0,
            chunks: 0,
            failed: false,
            finished: false,
        };
        writer.put(&MAGIC)?;
        writer.put(&FORMAT_VERSION.to_le_bytes())?;
        writer.put(&len_u32(header_bytes.len())?.to_le_bytes())?;
        writer.put(&header_bytes)?;
        writer.put(&len_u32(state_bytes.len())?.to_le_bytes())?;
        writer.put(&state_bytes)?;
        Ok(writer)
    }

    /// Sets the zstd level (default [`DEFAULT_LEVEL`]); applies to the chunks
    /// compressed from now on.
    pub fn with_level(mut self, level: i32) -> Self {
        self.level = level;
        self
    }

    /// Where the image will appear after [`finish`](Self::finish).
    pub fn path(&self) -> &Path {
        &self.final_path
    }

    /// Stores the non-zero pages of `data`, the memory at `addr`.
    ///
    /// `addr` must be page aligned, `data` a whole number of pages, and the
    /// range inside the regions of the process state. All-zero pages are
    /// skipped; consecutive stored pages (also across calls) form one run.
    /// Full chunks are handed to the compression workers, so this returns
    /// while they compress; it blocks only when enough chunks are in flight.
    pub fn add_pages(&mut self, addr: u64, data: &[u8]) -> Result<(), ImageError> {
        self.usable()?;
        if !page_aligned(addr) {
            return Err(ImageError::Encode(format!(
                "add_pages: address {addr:#x} is not page aligned"
            )));
        }
        if !page_aligned(data.len() as u64) {
            return Err(ImageError::Encode(format!(
                "add_pages: {} bytes at {addr:#x} are not a whole number of pages",
                data.len()
            )));
        }
        if data.is_empty() {
            return Ok(());
        }
        let end = addr.checked_add(data.len() as u64).ok_or_else(|| {
            ImageError::Encode(format!(
                "add_pages: {} bytes at {addr:#x} go past the end of the address space",
                data.len()
            ))
        })?;
        if !covered(&self.spans, addr, end) {
            return Err(ImageError::Encode(format!(
                "add_pages: {addr:#x}..{end:#x} is not inside the regions of the process state"
            )));
        }

        let mut page_addr = addr;
        for page in data.chunks_exact(PAGE) {
            if is_zero(page) {
                self.zero_pages += 1;
            } else {
                match self.pending_runs.last_mut() {
                    Some(run) if run.addr + run.len == page_addr => run.len += PAGE_SIZE,
                    _ => self.pending_runs.push(PageRun {
                        addr: page_addr,
                        len: PAGE_SIZE,
                    }),
                }
                if self.pending.capacity() == 0 {
                    self.pending = self.pipeline.buffer(CHUNK_RAW_BYTES);
                }
                self.pending.extend_from_slice(page);
                self.raw_bytes += PAGE_SIZE;
                if self.pending.len() >= CHUNK_RAW_BYTES {
                    self.dispatch()?;
                }
            }
            page_addr += PAGE_SIZE;
        }
        Ok(())
    }

    /// Completes the image: writes the last chunks and the trailer, fsyncs
    /// the file, renames it to its final name and fsyncs the directory.
    pub fn finish(mut self) -> Result<ImageStats, ImageError> {
        self.usable()?;
        self.dispatch()?;
        while self.pipeline.next_write < self.pipeline.next_seq {
            self.wait_one()?;
        }
        let mut trailer = [0u8; 20];
        trailer[..4].copy_from_slice(&TRAILER_MAGIC.to_le_bytes());
        trailer[4..12].copy_from_slice(&self.chunks.to_le_bytes());
        trailer[12..].copy_from_slice(&self.raw_bytes.to_le_bytes());
        self.put(&trailer)?;

        let Some(out) = self.out.take() else {
            return Err(ImageError::Encode("image writer has no file".into()));
        };
        let file = out.into_inner().map_err(|e| ImageError::Io {
            path: self.tmp_path.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(|source| ImageError::Io {
            path: self.tmp_path.clone(),
            source,
        })?;
        drop(file);
        fs::rename(&self.tmp_path, &self.final_path).map_err(|source| ImageError::Io {
            path: self.final_path.clone(),
            source,
        })?;
        self.finished = true;
        sync_parent_dir(&self.final_path)?;
        Ok(ImageStats {
            path: self.final_path.clone(),
            raw_bytes: self.raw_bytes,
            zero_pages: self.zero_pages,
            file_bytes: self.written,
            chunks: self.chunks,
        })
    }

    fn usable(&self) -> Result<(), ImageError> {
        if self.failed {
            Err(ImageError::Encode(format!(
                "{}: an earlier write failed; the image was abandoned",
                self.final_path.display()
            )))
        } else {
            Ok(())
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        let result = match self.out.as_mut() {
            Some(out) => out.write_all(bytes),
            None => Err(io::Error::other("image file already closed")),
        };
        match result {
            Ok(()) => {
                self.written += bytes.len() as u64;
                Ok(())
            }
            Err(source) => {
                self.failed = true;
                Err(ImageError::Io {
                    path: self.tmp_path.clone(),
                    source,
                })
            }
        }
    }

    /// Hands the pending chunk to the workers, first waiting (and writing
    /// finished chunks) while too many are in flight.
    fn dispatch(&mut self) -> Result<(), ImageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        while self.pipeline.in_flight() >= self.pipeline.max_in_flight {
            self.wait_one()?;
        }
        let job = Job {
            seq: self.pipeline.next_seq,
            raw: std::mem::take(&mut self.pending),
            runs: std::mem::take(&mut self.pending_runs),
            out: self.pipeline.buffer(0),
            level: self.level,
        };
        if let Err(e) = self.pipeline.submit(job) {
            self.failed = true;
            return Err(e);
        }
        // Write whatever is already compressed, without waiting.
        while let Some(done) = self.pipeline.try_done() {
            self.pipeline.ready.insert(done.seq, done);
        }
        self.write_ready()
    }

    /// Waits for one compressed chunk, then writes every chunk that is next.
    fn wait_one(&mut self) -> Result<(), ImageError> {
        match self.pipeline.wait_done() {
            Ok(done) => {
                self.pipeline.ready.insert(done.seq, done);
                self.write_ready()
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    fn write_ready(&mut self) -> Result<(), ImageError> {
        while let Some(done) = self.pipeline.ready.remove(&self.pipeline.next_write) {
            self.pipeline.next_write += 1;
            let (runs, frame) = match done.result {
                Ok(encoded) => encoded,
                Err(why) => {
                    self.failed = true;
                    return Err(ImageError::Encode(format!(
                        "memory chunk {}: {why}",
                        done.seq
                    )));
                }
            };
            let mut head = [0u8; 16];
            head[..4].copy_from_slice(&CHUNK_MAGIC.to_le_bytes());
            head[4..8].copy_from_slice(&len_u32(done.raw.len())?.to_le_bytes());
            head[8..12].copy_from_slice(&len_u32(frame.len())?.to_le_bytes());
            head[12..].copy_from_slice(&len_u32(runs.len())?.to_le_bytes());
            self.put(&head)?;
            self.put(&runs)?;
            self.put(&frame)?;
            self.chunks += 1;
            self.pipeline.recycle(done.raw);
            self.pipeline.recycle(frame);
        }
        Ok(())
    }
}

impl Drop for ImageWriter {
    fn drop(&mut self) {
        self.pipeline.shut_down();
        if !self.finished {
            drop(self.out.take());
            if let Err(e) = fs::remove_file(&self.tmp_path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.tmp_path.display(), error = %e,
                        "cannot remove abandoned image");
                }
            }
        }
    }
}

/// One chunk to compress.
struct Job {
    seq: u64,
    raw: Vec<u8>,
    runs: Vec<PageRun>,
    /// Buffer to compress into (reused).
    out: Vec<u8>,
    level: i32,
}

/// One compressed chunk: (encoded runs, zstd frame), with its raw buffer
/// returned for reuse.
struct Done {
    seq: u64,
    raw: Vec<u8>,
    result: Result<(Vec<u8>, Vec<u8>), String>,
}

/// Compression workers, started at the first chunk. Chunks are numbered as
/// they are submitted and written in that order; at most `max_in_flight`
/// are submitted and not yet written, so memory stays bounded.
struct Pipeline {
    jobs: Option<SyncSender<Job>>,
    done_rx: Option<Receiver<Done>>,
    workers: Vec<JoinHandle<()>>,
    max_in_flight: usize,
    next_seq: u64,
    next_write: u64,
    ready: BTreeMap<u64, Done>,
    /// Spare buffers (raw chunks, compressed frames).
    spare: Vec<Vec<u8>>,
}

impl Pipeline {
    fn new() -> Self {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, MAX_WORKERS);
        Pipeline {
            jobs: None,
            done_rx: None,
            workers: Vec::new(),
            max_in_flight: workers + 2,
            next_seq: 0,
            next_write: 0,
            ready: BTreeMap::new(),
            spare: Vec::new(),
        }
    }

    fn in_flight(&self) -> usize {
        usize::try_from(self.next_seq - self.next_write).unwrap_or(usize::MAX)
    }

    fn buffer(&mut self, capacity: usize) -> Vec<u8> {
        match self.spare.pop() {
            Some(mut buf) => {
                buf.clear();
                buf.reserve(capacity);
                buf
            }
            None => Vec::with_capacity(capacity),
        }
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < 2 * self.max_in_flight + 2 {
            self.spare.push(buf);
        }
    }

    fn start(&mut self) -> Result<(), ImageError> {
        let count = self.max_in_flight - 2;
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(self.max_in_flight);
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        for i in 0..count {
            let jobs = Arc::clone(&job_rx);
            let done = done_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("rewind-zstd-{i}"))
                .spawn(move || compress_worker(&jobs, &done))
                .map_err(|e| {
                    ImageError::Encode(format!("cannot start a compression thread: {e}"))
                })?;
            self.workers.push(handle);
        }
        self.jobs = Some(job_tx);
        self.done_rx = Some(done_rx);
        Ok(())
    }

    fn submit(&mut self, job: Job) -> Result<(), ImageError> {
        if self.jobs.is_none() {
            self.start()?;
        }
        let sent = match &self.jobs {
            Some(jobs) => jobs.send(job).is_ok(),
            None => false,
        };
        if !sent {
            return Err(ImageError::Encode("the compression threads stopped".into()));
        }
        self.next_seq += 1;
        Ok(())
    }

    fn try_done(&mut self) -> Option<Done> {
        self.done_rx.as_ref().and_then(|rx| rx.try_recv().ok())
    }

    fn wait_done(&mut self) -> Result<Done, ImageError> {
        self.done_rx
            .as_ref()
            .and_then(|rx| rx.recv().ok())
            .ok_or_else(|| ImageError::Encode("the compression threads stopped".into()))
    }

    fn shut_down(&mut self) {
        // Closing the job queue ends each worker after its current chunk.
        self.jobs = None;
        for handle in self.workers.drain(..) {
            if handle.join().is_err() {
                tracing::warn!("a compression thread panicked");
            }
        }
        self.done_rx = None;
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn compress_worker(jobs: &Mutex<Receiver<Job>>, done: &Sender<Done>) {
    let mut compressor: Option<(i32, zstd::bulk::Compressor<'static>)> = None;
    loop {
        let job = {
            let Ok(queue) = jobs.lock() else { return };
            match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let Job {
            seq,
            raw,
            runs,
            mut out,
            level,
        } = job;
        let result = compress_chunk(&mut compressor, level, &raw, &mut out)
            .map_err(|e| format!("zstd: {e}"))
            .and_then(|()| {
                bincode::serde::encode_to_vec(&runs, bincode::config::standard())
                    .map_err(|e| format!("page runs: {e}"))
            })
            .map(|runs| (runs, out));
        if done.send(Done { seq, raw, result }).is_err() {
            return;
        }
    }
}

fn compress_chunk(
    compressor: &mut Option<(i32, zstd::bulk::Compressor<'static>)>,
    level: i32,
    raw: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let c = match compressor {
        Some((current, c)) => {
            if *current != level {
                c.set_compression_level(level)?;
                *current = level;
            }
            c
        }
        None => {
            let mut c = zstd::bulk::Compressor::new(level)?;
            c.include_checksum(true)?;
            c.include_contentsize(true)?;
            &mut compressor.insert((level, c)).1
        }
    };
    out.clear();
    out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
    c.compress_to_buffer(raw, out)?;
    Ok(())
}

/// Whether `x` is a multiple of the page size.
fn page_aligned(x: u64) -> bool {
    x & (PAGE_SIZE - 1) == 0
}

/// Whether a page is all zero bytes (OR-folds 64-byte blocks, which the
/// compiler turns into vector instructions).
fn is_zero(page: &[u8]) -> bool {
    page.chunks(64)
        .all(|block| block.iter().fold(0u8, |acc, b| acc | b) == 0)
}

fn encode<T: Serialize>(value: &T, what: &str, max: u32) -> Result<Vec<u8>, ImageError> {
    let bytes = bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| ImageError::Encode(format!("{what}: {e}")))?;
    if bytes.len() > max as usize {
        return Err(ImageError::Encode(format!(
            "{what} takes {} bytes, more than the {max} an image may hold",
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn len_u32(len: usize) -> Result<u32, ImageError> {
    u32::try_from(len)
        .map_err(|_| ImageError::Encode(format!("{len} bytes do not fit a u32 length")))
}

fn sync_parent_dir(path: &Path) -> Result<(), ImageError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| ImageError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// The union of the state's regions as sorted, disjoint (start, end) spans;
/// adjacent regions merge, so a run may cross a region boundary.
fn region_spans(state: &ProcessState) -> Vec<(u64, u64)> {
    let mut spans: Vec<(u64, u64)> = state
        .regions
        .iter()
        .filter(|r| r.start < r.end)
        .map(|r| (r.start, r.end))
        .collect();
    spans.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// Whether `start..end` lies inside one span.
fn covered(spans: &[(u64, u64)], start: u64, end: u64) -> bool {
    let i = spans.partition_point(|&(s, _)| s <= start);
    i > 0 && spans[i - 1].1 >= end
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

/// Reads an image file: header and process state at [`open`](Self::open),
/// memory chunk by chunk after.
pub struct ImageReader {
    pub header: Header,
    pub state: ProcessState,
    decoder: Decoder<BufReader<File>>,
}

impl ImageReader {
    /// Opens `path` and decodes its preamble, header and process state.
    pub fn open(path: &Path) -> Result<ImageReader, ImageError> {
        let mut decoder = Decoder::open_file(path, 256 << 10)?;
        let header = decoder.header()?;
        let state = decoder.state()?;
        Ok(ImageReader {
            header,
            state,
            decoder,
        })
    }

    /// The next memory chunk, or `None` after the trailer (which must be
    /// present and agree with the chunks read).
    pub fn next_chunk(&mut self) -> Result<Option<MemoryChunk>, ImageError> {
        let mut data = Vec::new();
        Ok(self
            .decoder
            .next_chunk(&mut data)?
            .map(|runs| MemoryChunk { runs, data }))
    }

    /// The remaining memory chunks; stops after the first error.
    pub fn chunks(&mut self) -> Chunks<'_> {
        Chunks {
            reader: self,
            done: false,
        }
    }

    /// Reads and checks all of `path`: every chunk's checksum, runs and the
    /// trailer. Run it before touching any process so a bad image never
    /// yields a half-restored one.
    pub fn verify(path: &Path) -> Result<(Header, ProcessState, ImageStats), ImageError> {
        let mut reader = ImageReader::open(path)?;
        let mut data = Vec::new();
        while reader.decoder.next_chunk(&mut data)?.is_some() {}
        let stats = ImageStats {
            path: path.to_path_buf(),
            raw_bytes: reader.decoder.raw_total,
            zero_pages: 0,
            file_bytes: reader.decoder.len,
            chunks: reader.decoder.chunk_index,
        };
        Ok((reader.header, reader.state, stats))
    }

    /// Path of the image being read.
    pub fn path(&self) -> &Path {
        &self.decoder.path
    }
}

/// Iterator over the remaining chunks of an [`ImageReader`].
pub struct Chunks<'a> {
    reader: &'a mut ImageReader,
    done: bool,
}

impl Iterator for Chunks<'_> {
    type Item = Result<MemoryChunk, ImageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.reader.next_chunk().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

/// Decodes the header of `path` only (preamble and header bytes are read).
pub fn read_header(path: &Path) -> Result<Header, ImageError> {
    Decoder::open_file(path, 8 << 10)?.header()
}

/// Decodes a whole image held in memory. Never panics, whatever `bytes` hold;
/// errors name the path `<bytes>`.
pub fn parse(bytes: &[u8]) -> Result<(Header, ProcessState, Vec<MemoryChunk>), ImageError> {
    let mut decoder = Decoder::new(bytes, PathBuf::from("<bytes>"), bytes.len() as u64);
    let header = decoder.header()?;
    let state = decoder.state()?;
    let mut chunks = Vec::new();
    loop {
        let mut data = Vec::new();
        match decoder.next_chunk(&mut data)? {
            Some(runs) => chunks.push(MemoryChunk { runs, data }),
            None => return Ok((header, state, chunks)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Preamble,
    State,
    Chunks,
    End,
    Failed,
}

/// The one decoder behind [`ImageReader`], [`read_header`] and [`parse`].
/// `len` is the input's total size: every length read is checked against
/// what remains before anything is allocated.
struct Decoder<R> {
    input: R,
    path: PathBuf,
    pos: u64,
    len: u64,
    stage: Stage,
    spans: Vec<(u64, u64)>,
    chunk_index: u64,
    raw_total: u64,
    frame: Vec<u8>,
    dctx: Option<zstd::bulk::Decompressor<'static>>,
}

impl Decoder<BufReader<File>> {
    fn open_file(path: &Path, buffer: usize) -> Result<Self, ImageError> {
        let io_err = |source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        Ok(Decoder::new(
            BufReader::with_capacity(buffer, file),
            path.to_path_buf(),
            len,
        ))
    }
}

impl<R: Read> Decoder<R> {
    fn new(input: R, path: PathBuf, len: u64) -> Self {
        Decoder {
            input,
            path,
            pos: 0,
            len,
            stage: Stage::Preamble,
            spans: Vec::new(),
            chunk_index: 0,
            raw_total: 0,
            frame: Vec::new(),
            dctx: None,
        }
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn truncated(&self, what: &str, offset: u64) -> ImageError {
        ImageError::Truncated {
            path: self.path.clone(),
            what: what.to_string(),
            offset,
        }
    }

    fn corrupt(&self, what: &str, offset: u64, why: impl Into<String>) -> ImageError {
        ImageError::Corrupt {
            path: self.path.clone(),
            what: what.to_string(),
            offset,
            why: why.into(),
        }
    }

    /// Fills `buf` from the input; `what` starting at `start` is reported
    /// truncated if the input ends first.
    fn fill(&mut self, buf: &mut [u8], what: &str, start: u64) -> Result<(), ImageError> {
        if buf.len() as u64 > self.remaining() {
            return Err(self.truncated(what, start));
        }
        match self.input.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            // The file shrank while we read it.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(self.truncated(what, start)),
            Err(source) => Err(ImageError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn read_array<const N: usize>(
        &mut self,
        what: &str,
        start: u64,
    ) -> Result<[u8; N], ImageError> {
        let mut buf = [0u8; N];
        self.fill(&mut buf, what, start)?;
        Ok(buf)
    }

    /// Reads `len` bytes into `buf` (resized), after checking they exist.
    fn read_into(
        &mut self,
        buf: &mut Vec<u8>,
        len: u32,
        what: &str,
        start: u64,
    ) -> Result<(), ImageError> {
        if u64::from(len) > self.remaining() {
            return Err(self.truncated(what, start));
        }
        buf.clear();
        buf.resize(len as usize, 0);
        self.fill(buf, what, start)
    }

    fn read_u32(&mut self, what: &str, start: u64) -> Result<u32, ImageError> {
        Ok(u32::from_le_bytes(self.read_array(what, start)?))
    }

    fn fail<T>(&mut self, result: Result<T, ImageError>) -> Result<T, ImageError> {
        if result.is_err() {
            self.stage = Stage::Failed;
        }
        result
    }

    /// Preamble and header.
    fn header(&mut self) -> Result<Header, ImageError> {
        let result = self.header_inner();
        self.fail(result)
    }

    fn header_inner(&mut self) -> Result<Header, ImageError> {
        if self.stage != Stage::Preamble {
            return Err(self.corrupt("header", self.pos, "decoder used out of order"));
        }
        // Magic: a file that is a strict prefix of it is truncated, anything
        // else that differs is foreign.
        let have = usize::try_from(self.remaining().min(MAGIC.len() as u64)).unwrap_or(0);
        let mut magic = [0u8; 8];
        self.fill(&mut magic[..have], "preamble", 0)?;
        if magic[..have] != MAGIC[..have] {
            return Err(ImageError::NotAnImage {
                path: self.path.clone(),
            });
        }
        if have < MAGIC.len() {
            return Err(self.truncated("preamble", 0));
        }
        let version = self.read_u32("preamble", 0)?;
        if version > FORMAT_VERSION {
            return Err(ImageError::NewerVersion {
                path: self.path.clone(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if version < FORMAT_VERSION {
            return Err(ImageError::OlderVersion {
                path: self.path.clone(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let header_len = self.read_u32("preamble", 0)?;
        if header_len > MAX_HEADER_BYTES {
            return Err(self.corrupt(
                "header",
                PREAMBLE_LEN,
                format!("length {header_len} is over the {MAX_HEADER_BYTES}-byte limit"),
            ));
        }
        let mut bytes = Vec::new();
        self.read_into(&mut bytes, header_len, "header", PREAMBLE_LEN)?;
        let header =
            decode_exact(&bytes).map_err(|why| self.corrupt("header", PREAMBLE_LEN, why))?;
        self.stage = Stage::State;
        Ok(header)
    }

    /// The process state section.
    fn state(&mut self) -> Result<ProcessState, ImageError> {
        let result = self.state_inner();
        self.fail(result)
    }

    fn state_inner(&mut self) -> Result<ProcessState, ImageError> {
        const WHAT: &str = "process state";
        if self.stage != Stage::State {
            return Err(self.corrupt(WHAT, self.pos, "decoder used out of order"));
        }
        let start = self.pos;
        let len = self.read_u32(WHAT, start)?;
        if len > MAX_STATE_BYTES {
            return Err(self.corrupt(
                WHAT,
                start,
                format!("length {len} is over the {MAX_STATE_BYTES}-byte limit"),
            ));
        }
        let mut bytes = Vec::new();
        self.read_into(&mut bytes, len, WHAT, start)?;
        let state: ProcessState =
            decode_exact(&bytes).map_err(|why| self.corrupt(WHAT, start, why))?;
        self.spans = region_spans(&state);
        self.stage = Stage::Chunks;
        Ok(state)
    }

    /// The next chunk's runs, its bytes in `data`; `None` after a valid trailer.
    fn next_chunk(&mut self, data: &mut Vec<u8>) -> Result<Option<Vec<PageRun>>, ImageError> {
        match self.stage {
            Stage::Chunks => {}
            Stage::End => return Ok(None),
            Stage::Failed => {
                return Err(self.corrupt("image", self.pos, "reading stopped at an earlier error"))
            }
            Stage::Preamble | Stage::State => {
                return Err(self.corrupt("memory chunk", self.pos, "decoder used out of order"))
            }
        }
        let result = self.chunk_inner(data);
        self.fail(result)
    }

    fn chunk_inner(&mut self, data: &mut Vec<u8>) -> Result<Option<Vec<PageRun>>, ImageError> {
        let start = self.pos;
        if self.remaining() < 4 {
            return Err(self.truncated("trailer", start));
        }
        let tag = self.read_u32("trailer", start)?;
        if tag == TRAILER_MAGIC {
            self.trailer(start)?;
            return Ok(None);
        }
        let what = format!("memory chunk {}", self.chunk_index);
        if tag != CHUNK_MAGIC {
            return Err(self.corrupt(
                &what,
                start,
                format!("expected a chunk or the trailer, found tag {tag:#010x}"),
            ));
        }
        let head: [u8; 12] = self.read_array(&what, start)?;
        let field = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let (raw_len, frame_len, runs_len) = (field(0), field(4), field(8));
        if raw_len == 0 || raw_len > MAX_CHUNK_BYTES || !page_aligned(u64::from(raw_len)) {
            return Err(self.corrupt(
                &what,
                start,
                format!(
                    "raw length {raw_len} is not a whole number of pages up to {MAX_CHUNK_BYTES}"
                ),
            ));
        }
        if frame_len > MAX_CHUNK_BYTES {
            return Err(self.corrupt(
                &what,
                start,
                format!("compressed length {frame_len} is over the {MAX_CHUNK_BYTES}-byte limit"),
            ));
        }
        if runs_len > MAX_RUNS_BYTES {
            return Err(self.corrupt(
                &what,
                start,
                format!("page run list length {runs_len} is over the {MAX_RUNS_BYTES}-byte limit"),
            ));
        }

        let mut frame = std::mem::take(&mut self.frame);
        let runs = self.chunk_body(&mut frame, data, &what, start, raw_len, frame_len, runs_len);
        self.frame = frame;
        let runs = runs?;
        self.chunk_index += 1;
        self.raw_total += u64::from(raw_len);
        Ok(Some(runs))
    }

    /// Runs and frame of a chunk whose header was read; `buf` is scratch.
    #[allow(clippy::too_many_arguments)]
    fn chunk_body(
        &mut self,
        buf: &mut Vec<u8>,
        data: &mut Vec<u8>,
        what: &str,
        start: u64,
        raw_len: u32,
        frame_len: u32,
        runs_len: u32,
    ) -> Result<Vec<PageRun>, ImageError> {
        self.read_into(buf, runs_len, what, start)?;
        let runs: Vec<PageRun> = decode_exact(buf)
            .map_err(|why| self.corrupt(what, start, format!("page runs: {why}")))?;
        self.check_runs(&runs, raw_len)
            .map_err(|why| self.corrupt(what, start, why))?;
        self.read_into(buf, frame_len, what, start)?;
        self.decompress(buf, raw_len, data)
            .map_err(|why| self.corrupt(what, start, why))?;
        Ok(runs)
    }

    /// Runs must be whole pages inside the state's regions and add up to
    /// the chunk's raw length.
    fn check_runs(&self, runs: &[PageRun], raw_len: u32) -> Result<(), String> {
        let mut total = 0u64;
        for run in runs {
            let end = run.addr.checked_add(run.len);
            match end {
                _ if run.len == 0 || !page_aligned(run.len) || !page_aligned(run.addr) => {
                    return Err(format!(
                        "page run {:#x}+{:#x} is not whole pages",
                        run.addr, run.len
                    ))
                }
                Some(end) if covered(&self.spans, run.addr, end) => {}
                _ => {
                    return Err(format!(
                        "page run {:#x}+{:#x} is outside every region of the process state",
                        run.addr, run.len
                    ))
                }
            }
            total = total.saturating_add(run.len);
        }
        if total != u64::from(raw_len) {
            return Err(format!(
                "page runs cover {total} bytes but the chunk holds {raw_len}"
            ));
        }
        Ok(())
    }

    fn decompress(&mut self, frame: &[u8], raw_len: u32, data: &mut Vec<u8>) -> Result<(), String> {
        if frame.len() < 5 || frame[..4] != ZSTD_FRAME_MAGIC {
            return Err("compressed data is not a zstd frame".into());
        }
        if frame[4] & ZSTD_CHECKSUM_FLAG == 0 {
            return Err("zstd frame has no content checksum".into());
        }
        let dctx = match &mut self.dctx {
            Some(d) => d,
            None => {
                let d = zstd::bulk::Decompressor::new().map_err(|e| format!("zstd: {e}"))?;
                self.dctx.insert(d)
            }
        };
        data.clear();
        data.reserve_exact(raw_len as usize);
        let n = dctx
            .decompress_to_buffer(frame, data)
            .map_err(|e| format!("zstd: {e}"))?;
        if n != raw_len as usize {
            return Err(format!("decompressed to {n} bytes, expected {raw_len}"));
        }
        Ok(())
    }

    fn trailer(&mut self, start: u64) -> Result<(), ImageError> {
        let body: [u8; 16] = self.read_array("trailer", start)?;
        let mut count = [0u8; 8];
        let mut raw = [0u8; 8];
        count.copy_from_slice(&body[..8]);
        raw.copy_from_slice(&body[8..]);
        let (count, raw) = (u64::from_le_bytes(count), u64::from_le_bytes(raw));
        if count != self.chunk_index {
            return Err(self.corrupt(
                "trailer",
                start,
                format!(
                    "it counts {count} memory chunks but the image has {}",
                    self.chunk_index
                ),
            ));
        }
        if raw != self.raw_total {
            return Err(self.corrupt(
                "trailer",
                start,
                format!(
                    "it counts {raw} bytes of memory but the chunks hold {}",
                    self.raw_total
                ),
            ));
        }
        if self.remaining() != 0 {
            return Err(self.corrupt(
                "trailer",
                start,
                format!("{} unexpected bytes follow it", self.remaining()),
            ));
        }
        self.stage = Stage::End;
        Ok(())
    }
}

/// Decodes all of `bytes` as one `T`, with bincode's allocation limit set
/// from the input size: a corrupt length cannot make it allocate much more
/// than the input (a valid encoding claims at most 16 bytes per byte).
fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let need = bytes.len().saturating_mul(16).max(1 << 12);
    macro_rules! limited {
        ($($limit:expr),*) => {
            $(
                if need <= $limit {
                    let config = bincode::config::standard().with_limit::<{ $limit }>();
                    return finish_decode(bytes, bincode::serde::decode_from_slice(bytes, config));
                }
            )*
        };
    }
    limited!(
        1 << 12,
        1 << 14,
        1 << 16,
        1 << 18,
        1 << 20,
        1 << 21,
        1 << 22,
        1 << 23,
        1 << 24,
        1 << 25,
        1 << 26,
        1 << 27,
        1 << 28,
        1 << 29,
        1 << 30,
        1 << 31,
        1 << 32,
        1 << 33,
        1 << 34
    );
    Err(format!("{} bytes are too many to decode", bytes.len()))
}

fn finish_decode<T>(
    bytes: &[u8],
    result: Result<(T, usize), bincode::error::DecodeError>,
) -> Result<T, String> {
    match result {
        Ok((value, used)) if used == bytes.len() => Ok(value),
        Ok((_, used)) => Err(format!(
            "{} bytes left over after decoding",
            bytes.len() - used
        )),
        Err(bincode::error::DecodeError::LimitExceeded) => {
            Err("a length inside is larger than the data holds".into())
        }
        Err(e) => Err(e.to_string()),
    }
}
