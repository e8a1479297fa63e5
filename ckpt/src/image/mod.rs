//! Durable checkpoint images (DESIGN §8): the writer, the reader and the
//! fuzzable decoder.
//!
//! Every serialized structure lives in [`format`], which also documents the
//! byte layout. This module only moves those structures to and from files:
//!
//! - [`ImageWriter`] writes `<dir>/.<name>.tmp.<pid>` (mode 0600). Memory
//!   goes through worker threads: with [`ImageWriter::add_range`] they read
//!   it themselves from a [`PageSource`] (the target process), drop the
//!   all-zero pages and compress the rest, in parallel; the calling thread
//!   only writes finished chunks, in order, and starts their writeback to
//!   disk at once. [`ImageWriter::finish`] fsyncs, renames over the final
//!   name and fsyncs the directory. A crash or an error never leaves a half
//!   image under the final name, and a previous image there stays valid
//!   until the rename.
//! - [`ImageReader`] reads a file chunk by chunk; [`ImageReader::verify`]
//!   reads and checks all of it (run it before touching any process).
//! - [`parse`] decodes an image held in memory; it never panics on any input.
//!
//! File and slice reading share one decoder, generic over [`std::io::Read`].
//! Every length read from the input is checked against the bytes that remain
//! and against a fixed ceiling before anything is allocated for it, and
//! every byte of an image is covered by a checksum (CRC-32C for the
//! preamble, header, process state and chunk heads and runs; zstd's content
//! checksum for memory), so damage anywhere is reported, naming the part.

mod error;
pub mod format;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use error::ImageError;
use format::{
    Header, PageRun, ProcessState, CHUNK_MAGIC, FORMAT_VERSION, MAGIC, OLDEST_READABLE_VERSION,
    TRAILER_MAGIC,
};

/// Memory is stored in pages of this size.
pub const PAGE_SIZE: u64 = 4096;
/// Raw (uncompressed) bytes the writer puts in one memory chunk at most.
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
/// zstd level for chunks whose first [`PROBE_BYTES`] do not shrink at the
/// level asked for: on random-looking memory it is 15-25% faster than
/// level 1, and no level compresses such memory (should the rest of the
/// chunk compress after all, this level still does it fairly well).
const INCOMPRESSIBLE_LEVEL: i32 = -1;
/// Bytes compressed to probe whether a chunk compresses.
const PROBE_BYTES: usize = 64 << 10;
/// Bytes a worker reads from a [`PageSource`] at once: small enough to be
/// still in cache when it checks them for zero pages.
const READ_BLOCK: usize = 256 << 10;
/// The writer asks the kernel to start writing to disk every time this many
/// bytes were written, so that `finish`'s fsync only waits for the tail.
const WRITEBACK_BYTES: u64 = 4 << 20;

const PAGE: usize = PAGE_SIZE as usize;
/// Magic, version, header length, state length, CRC-32C of those 20 bytes.
const PREAMBLE_LEN: u64 = 24;
/// A chunk's tag, three lengths and the CRC-32C of those 16 bytes.
const CHUNK_HEAD_LEN: usize = 20;
/// Tag, chunk count, raw bytes.
const TRAILER_LEN: u64 = 20;
const ZSTD_FRAME_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Content_Checksum_flag of a zstd Frame_Header_Descriptor.
const ZSTD_CHECKSUM_FLAG: u8 = 0x04;
/// Bits of a Frame_Header_Descriptor a zstd decoder ignores or refuses
/// (unused bit, reserved bit, dictionary id): none is ever set in an image,
/// so a flipped one is corruption the frame checksum would not see.
const ZSTD_UNUSED_FLAGS: u8 = 0x10 | 0x08 | 0x03;

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

/// Memory that the writer's workers read themselves, for
/// [`ImageWriter::add_range`]. Several workers call [`read`](Self::read) at
/// once, each for its own range.
pub trait PageSource: Send + Sync {
    /// Fills all of `buf` with the memory at `addr`, or fails.
    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl<F> PageSource for F
where
    F: Fn(u64, &mut [u8]) -> io::Result<()> + Send + Sync,
{
    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        self(addr, buf)
    }
}

/// Writes one image: header and process state at [`create`](Self::create),
/// memory with [`add_range`](Self::add_range) (read by the workers) or
/// [`add_pages`](Self::add_pages) (bytes in hand), and
/// [`finish`](Self::finish) to make it appear under its final name. Dropped
/// without `finish`, it removes its temporary file.
pub struct ImageWriter {
    final_path: PathBuf,
    tmp_path: PathBuf,
    out: Option<BufWriter<File>>,
    /// Bytes written to the temporary file so far.
    written: u64,
    /// Writeback to disk was started for the bytes before this offset.
    writeback_from: u64,
    level: i32,
    /// Union of the state's regions, sorted, as (start, end).
    spans: Vec<(u64, u64)>,
    /// Bytes given to `add_pages` for the next chunk, and their runs.
    pending: Vec<u8>,
    pending_runs: Vec<PageRun>,
    /// Ranges given to `add_range` for the next chunk, and their length.
    pending_ranges: Vec<Piece>,
    pending_range_bytes: usize,
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
        let mut preamble = [0u8; PREAMBLE_LEN as usize];
        preamble[..8].copy_from_slice(&MAGIC);
        preamble[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        preamble[12..16].copy_from_slice(&len_u32(header_bytes.len())?.to_le_bytes());
        preamble[16..20].copy_from_slice(&len_u32(state_bytes.len())?.to_le_bytes());
        let crc = crc32c(&preamble[..20]);
        preamble[20..].copy_from_slice(&crc.to_le_bytes());

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
            writeback_from: 0,
            level: DEFAULT_LEVEL,
            spans: region_spans(state),
            pending: Vec::new(),
            pending_runs: Vec::new(),
            pending_ranges: Vec::new(),
            pending_range_bytes: 0,
            pipeline: Pipeline::new(),
            raw_bytes: 0,
            zero_pages: 0,
            chunks: 0,
            failed: false,
            finished: false,
        };
        writer.put(&preamble)?;
        writer.put(&header_bytes)?;
        writer.put(&crc32c(&header_bytes).to_le_bytes())?;
        writer.put(&state_bytes)?;
        writer.put(&crc32c(&state_bytes).to_le_bytes())?;
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

    /// Stores the non-zero pages of the `len` bytes of memory at `addr`,
    /// which the workers read from `source` (in pieces of at most
    /// [`CHUNK_RAW_BYTES`], several at once, in any order).
    ///
    /// `addr` and `len` must be page aligned and the range inside the
    /// regions of the process state. All-zero pages are skipped. This only
    /// queues the range: it returns at once unless enough chunks are in
    /// flight, and a failed read (an [`ImageError::Read`]) is returned by a
    /// later call or by [`finish`](Self::finish), which returns once all
    /// reads are done.
    pub fn add_range(
        &mut self,
        addr: u64,
        len: u64,
        source: &Arc<dyn PageSource>,
    ) -> Result<(), ImageError> {
        self.usable()?;
        self.check_range("add_range", addr, len)?;
        if len == 0 {
            return Ok(());
        }
        // Chunks are written in the order their memory was given.
        self.dispatch_pages()?;
        let (mut addr, mut left) = (addr, len);
        while left > 0 {
            let room = CHUNK_RAW_BYTES - self.pending_range_bytes;
            let n = usize::try_from(left).map_or(room, |left| left.min(room));
            self.pending_ranges.push(Piece {
                addr,
                len: n,
                source: Arc::clone(source),
            });
            self.pending_range_bytes += n;
            addr += n as u64;
            left -= n as u64;
            if self.pending_range_bytes >= CHUNK_RAW_BYTES {
                self.dispatch_ranges()?;
            }
        }
        Ok(())
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
        self.check_range("add_pages", addr, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        self.dispatch_ranges()?;
        let mut page_addr = addr;
        for page in data.chunks_exact(PAGE) {
            if is_zero(page) {
                self.zero_pages += 1;
            } else {
                push_page(&mut self.pending_runs, page_addr);
                if self.pending.capacity() == 0 {
                    self.pending = self.pipeline.buffer(CHUNK_RAW_BYTES);
                }
                self.pending.extend_from_slice(page);
                if self.pending.len() >= CHUNK_RAW_BYTES {
                    self.dispatch_pages()?;
                }
            }
            page_addr += PAGE_SIZE;
        }
        Ok(())
    }

    /// Completes the image: waits for the workers, writes the last chunks
    /// and the trailer, fsyncs the file, renames it to its final name and
    /// fsyncs the directory.
    pub fn finish(mut self) -> Result<ImageStats, ImageError> {
        self.usable()?;
        self.dispatch_pages()?;
        self.dispatch_ranges()?;
        while self.pipeline.next_write < self.pipeline.next_seq {
            self.wait_one()?;
        }
        let mut trailer = [0u8; TRAILER_LEN as usize];
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
        // Replacing an image frees it, which takes long for a big one (the
        // kernel drops its cached pages and blocks): held open, it is freed
        // when closed, and that is done on the side.
        let previous = File::open(&self.final_path).ok();
        fs::rename(&self.tmp_path, &self.final_path).map_err(|source| ImageError::Io {
            path: self.final_path.clone(),
            source,
        })?;
        self.finished = true;
        sync_parent_dir(&self.final_path)?;
        close_aside(previous);
        Ok(ImageStats {
            path: self.final_path.clone(),
            raw_bytes: self.raw_bytes,
            zero_pages: self.zero_pages,
            file_bytes: self.written,
            chunks: self.chunks,
        })
    }

    /// A write or read failed: the image is abandoned at once (its
    /// temporary file removed), not only when the writer is dropped.
    fn fail(&mut self) {
        self.failed = true;
        drop(self.out.take());
        if let Err(e) = fs::remove_file(&self.tmp_path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.tmp_path.display(), error = %e,
                    "cannot remove abandoned image");
            }
        }
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

    /// Memory at `addr`, `len` bytes, may be stored: whole pages inside the
    /// regions of the process state.
    fn check_range(&self, what: &str, addr: u64, len: u64) -> Result<(), ImageError> {
        if !page_aligned(addr) {
            return Err(ImageError::Encode(format!(
                "{what}: address {addr:#x} is not page aligned"
            )));
        }
        if !page_aligned(len) {
            return Err(ImageError::Encode(format!(
                "{what}: {len} bytes at {addr:#x} are not a whole number of pages"
            )));
        }
        if len == 0 {
            return Ok(());
        }
        let end = addr.checked_add(len).ok_or_else(|| {
            ImageError::Encode(format!(
                "{what}: {len} bytes at {addr:#x} go past the end of the address space"
            ))
        })?;
        if !covered(&self.spans, addr, end) {
            return Err(ImageError::Encode(format!(
                "{what}: {addr:#x}..{end:#x} is not inside the regions of the process state"
            )));
        }
        Ok(())
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
                self.fail();
                Err(ImageError::Io {
                    path: self.tmp_path.clone(),
                    source,
                })
            }
        }
    }

    /// Once enough bytes were written since the last time, hands them to
    /// the kernel to write to disk now rather than at the final fsync.
    fn start_writeback(&mut self) {
        let len = self.written - self.writeback_from;
        if len < WRITEBACK_BYTES {
            return;
        }
        let Some(out) = self.out.as_mut() else {
            return;
        };
        // A failed flush keeps the bytes buffered: the next write or
        // `finish` reports the error.
        if out.flush().is_err() {
            return;
        }
        let fd = out.get_ref().as_raw_fd();
        if let Err(e) = crate::sys::start_writeback(fd, self.writeback_from, len) {
            // Only an optimization: the final fsync still writes everything.
            tracing::debug!(path = %self.tmp_path.display(), error = %e, "sync_file_range");
        }
        self.writeback_from = self.written;
    }

    /// Hands the pages gathered by `add_pages` to the workers.
    fn dispatch_pages(&mut self) -> Result<(), ImageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let raw = std::mem::take(&mut self.pending);
        let runs = std::mem::take(&mut self.pending_runs);
        self.submit(raw, Input::Pages(runs))
    }

    /// Hands the ranges gathered by `add_range` to the workers.
    fn dispatch_ranges(&mut self) -> Result<(), ImageError> {
        if self.pending_ranges.is_empty() {
            return Ok(());
        }
        let pieces = std::mem::take(&mut self.pending_ranges);
        self.pending_range_bytes = 0;
        let raw = self.pipeline.scratch();
        self.submit(raw, Input::Ranges(pieces))
    }

    /// Queues one chunk for the workers, first waiting (and writing
    /// finished chunks) while too many are in flight.
    fn submit(&mut self, raw: Vec<u8>, input: Input) -> Result<(), ImageError> {
        while self.pipeline.in_flight() >= self.pipeline.max_in_flight {
            self.wait_one()?;
        }
        let job = Job {
            seq: self.pipeline.next_seq,
            raw,
            input,
            out: self.pipeline.buffer(0),
            level: self.level,
        };
        if let Err(e) = self.pipeline.submit(job) {
            self.fail();
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
                self.fail();
                Err(e)
            }
        }
    }

    fn write_ready(&mut self) -> Result<(), ImageError> {
        while let Some(done) = self.pipeline.ready.remove(&self.pipeline.next_write) {
            self.pipeline.next_write += 1;
            self.pipeline.recycle(done.raw);
            let chunk = match done.result {
                Ok(chunk) => chunk,
                Err(e) => {
                    self.fail();
                    return Err(e);
                }
            };
            self.zero_pages += chunk.zero_pages;
            // Memory that was all zero pages makes no chunk.
            if chunk.raw_len > 0 {
                let mut head = [0u8; CHUNK_HEAD_LEN];
                head[..4].copy_from_slice(&CHUNK_MAGIC.to_le_bytes());
                head[4..8].copy_from_slice(&len_u32(chunk.raw_len)?.to_le_bytes());
                head[8..12].copy_from_slice(&len_u32(chunk.frame.len())?.to_le_bytes());
                head[12..16].copy_from_slice(&len_u32(chunk.runs.len())?.to_le_bytes());
                let crc = crc32c(&head[..16]);
                head[16..].copy_from_slice(&crc.to_le_bytes());
                self.put(&head)?;
                self.put(&chunk.runs)?;
                self.put(&crc32c(&chunk.runs).to_le_bytes())?;
                self.put(&chunk.frame)?;
                self.chunks += 1;
                self.raw_bytes += chunk.raw_len as u64;
            }
            self.pipeline.recycle(chunk.frame);
            self.start_writeback();
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

/// A range of memory for a worker to read.
struct Piece {
    addr: u64,
    len: usize,
    source: Arc<dyn PageSource>,
}

/// What a chunk is made of.
enum Input {
    /// Non-zero pages already gathered: the job's `raw` holds exactly them.
    Pages(Vec<PageRun>),
    /// Memory the worker reads, then drops the zero pages of.
    Ranges(Vec<Piece>),
}

/// One chunk to make.
struct Job {
    seq: u64,
    /// The pages (`Input::Pages`) or a buffer to read them into.
    raw: Vec<u8>,
    input: Input,
    /// Buffer to compress into (reused).
    out: Vec<u8>,
    level: i32,
}

/// One chunk made, with its raw buffer returned for reuse.
struct Done {
    seq: u64,
    raw: Vec<u8>,
    result: Result<Chunk, ImageError>,
}

/// A chunk ready to write; `raw_len` 0 (nothing but zero pages) writes nothing.
struct Chunk {
    raw_len: usize,
    zero_pages: u64,
    /// bincode `Vec<PageRun>`.
    runs: Vec<u8>,
    /// zstd frame.
    frame: Vec<u8>,
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

    /// An empty buffer with room for `capacity` bytes.
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

    /// A buffer whose contents do not matter: a reused one keeps its
    /// length, so reading into it costs no zeroing.
    fn scratch(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < 2 * self.max_in_flight + 2 && buf.capacity() > 0 {
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
                .spawn(move || chunk_worker(&jobs, &done))
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
        // Closing the job queue ends each worker once the queue is empty.
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

fn chunk_worker(jobs: &Mutex<Receiver<Job>>, done: &Sender<Done>) {
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
            mut raw,
            input,
            out,
            level,
        } = job;
        let result = make_chunk(&mut compressor, seq, &mut raw, input, out, level);
        if done.send(Done { seq, raw, result }).is_err() {
            return;
        }
    }
}

/// Reads (for `Input::Ranges`), compresses and encodes one chunk.
fn make_chunk(
    compressor: &mut Option<(i32, zstd::bulk::Compressor<'static>)>,
    seq: u64,
    raw: &mut Vec<u8>,
    input: Input,
    out: Vec<u8>,
    level: i32,
) -> Result<Chunk, ImageError> {
    let (runs, raw_len, zero_pages) = match input {
        Input::Pages(runs) => (runs, raw.len(), 0),
        Input::Ranges(pieces) => gather(raw, &pieces)?,
    };
    let mut chunk = Chunk {
        raw_len,
        zero_pages,
        runs: Vec::new(),
        frame: out,
    };
    if raw_len == 0 {
        return Ok(chunk);
    }
    compress_chunk(compressor, level, &raw[..raw_len], &mut chunk.frame)
        .map_err(|e| ImageError::Encode(format!("memory chunk {seq}: zstd: {e}")))?;
    chunk.runs = bincode::serde::encode_to_vec(&runs, bincode::config::standard())
        .map_err(|e| ImageError::Encode(format!("memory chunk {seq}: page runs: {e}")))?;
    Ok(chunk)
}

/// Reads `pieces` into `raw`, block by block, keeping only the non-zero
/// pages, packed at the front. Returns their runs, their length and how
/// many zero pages were dropped.
fn gather(raw: &mut Vec<u8>, pieces: &[Piece]) -> Result<(Vec<PageRun>, usize, u64), ImageError> {
    let total: usize = pieces.iter().map(|p| p.len).sum();
    if raw.len() < total {
        raw.resize(total, 0);
    }
    let mut runs = Vec::new();
    let mut kept = 0usize;
    let mut zero_pages = 0u64;
    for piece in pieces {
        let mut done = 0usize;
        while done < piece.len {
            let n = READ_BLOCK.min(piece.len - done);
            let addr = piece.addr + done as u64;
            // Read right after the pages kept so far: with many zero pages
            // the same few cache-warm bytes are read into again and again.
            piece
                .source
                .read(addr, &mut raw[kept..kept + n])
                .map_err(|source| ImageError::Read {
                    addr,
                    len: n as u64,
                    source,
                })?;
            let block = kept;
            for i in 0..n / PAGE {
                let at = block + i * PAGE;
                if is_zero(&raw[at..at + PAGE]) {
                    zero_pages += 1;
                    continue;
                }
                if at != kept {
                    raw.copy_within(at..at + PAGE, kept);
                }
                kept += PAGE;
                push_page(&mut runs, addr + (i * PAGE) as u64);
            }
            done += n;
        }
    }
    Ok((runs, kept, zero_pages))
}

/// Adds the page at `addr` to `runs`, extending the last run if it ends there.
fn push_page(runs: &mut Vec<PageRun>, addr: u64) {
    match runs.last_mut() {
        Some(run) if run.addr + run.len == addr => run.len += PAGE_SIZE,
        _ => runs.push(PageRun {
            addr,
            len: PAGE_SIZE,
        }),
    }
}

/// Compresses `raw` into `out` as one zstd frame, at `level`, unless its
/// first bytes do not compress at that level (random-looking memory): then
/// at [`INCOMPRESSIBLE_LEVEL`], which is faster and does as well on such data.
fn compress_chunk(
    compressor: &mut Option<(i32, zstd::bulk::Compressor<'static>)>,
    level: i32,
    raw: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<()> {
    out.clear();
    out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
    let mut level = level;
    if level > INCOMPRESSIBLE_LEVEL && raw.len() >= 4 * PROBE_BYTES {
        let probe = &raw[..PROBE_BYTES];
        compressor_at(compressor, level)?.compress_to_buffer(probe, out)?;
        if out.len() > PROBE_BYTES - PROBE_BYTES / 32 {
            level = INCOMPRESSIBLE_LEVEL;
        }
        out.clear();
    }
    compressor_at(compressor, level)?.compress_to_buffer(raw, out)?;
    Ok(())
}

/// The worker's compressor, set to `level`.
fn compressor_at<'c>(
    compressor: &'c mut Option<(i32, zstd::bulk::Compressor<'static>)>,
    level: i32,
) -> io::Result<&'c mut zstd::bulk::Compressor<'static>> {
    Ok(match compressor {
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
    })
}

/// Whether `x` is a multiple of the page size.
fn page_aligned(x: u64) -> bool {
    x & (PAGE_SIZE - 1) == 0
}

/// Whether a page is all zero bytes. OR-folds 256-byte blocks as words,
/// which the compiler turns into vector instructions: several times faster
/// than byte by byte, and a non-zero page is still left after one block.
fn is_zero(page: &[u8]) -> bool {
    let mut blocks = page.chunks_exact(256);
    blocks.all(|block| {
        block.chunks_exact(8).fold(0u64, |acc, w| {
            acc | u64::from_ne_bytes(w.try_into().unwrap_or([1; 8]))
        }) == 0
    }) && blocks.remainder().iter().all(|&b| b == 0)
}

/// CRC-32C (Castagnoli), slicing by 8.
fn crc32c(bytes: &[u8]) -> u32 {
    static T: [[u32; 256]; 8] = crc32c_tables();
    let mut crc = !0u32;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let lo = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) ^ crc;
        let hi = u32::from_le_bytes([w[4], w[5], w[6], w[7]]);
        crc = T[7][(lo & 0xff) as usize]
            ^ T[6][(lo >> 8 & 0xff) as usize]
            ^ T[5][(lo >> 16 & 0xff) as usize]
            ^ T[4][(lo >> 24) as usize]
            ^ T[3][(hi & 0xff) as usize]
            ^ T[2][(hi >> 8 & 0xff) as usize]
            ^ T[1][(hi >> 16 & 0xff) as usize]
            ^ T[0][(hi >> 24) as usize];
    }
    for &b in words.remainder() {
        crc = crc >> 8 ^ T[0][((crc ^ u32::from(b)) & 0xff) as usize];
    }
    !crc
}

const fn crc32c_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                c >> 1 ^ 0x82f6_3b78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut j = 1;
        while j < 8 {
            t[j][i] = t[j - 1][i] >> 8 ^ t[0][(t[j - 1][i] & 0xff) as usize];
            j += 1;
        }
        i += 1;
    }
    t
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

/// Closes `file`, on a thread of its own if it is big enough for the close
/// to take a while (the last close of an unlinked file frees it).
fn close_aside(file: Option<File>) {
    const BIG: u64 = 32 << 20;
    let Some(file) = file else { return };
    if file.metadata().map_or(true, |m| m.len() < BIG) {
        return;
    }
    // Should the thread not start, the file is closed here.
    let _ = std::thread::Builder::new()
        .name("rewind-free-image".into())
        .spawn(move || drop(file));
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
    /// Length of the process state, from the preamble.
    state_len: u32,
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
            state_len: 0,
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

    /// Reads `len` bytes into `buf` and the CRC-32C that follows them, and
    /// checks it.
    fn read_checked(
        &mut self,
        buf: &mut Vec<u8>,
        len: u32,
        what: &str,
        start: u64,
    ) -> Result<(), ImageError> {
        if u64::from(len) + 4 > self.remaining() {
            return Err(self.truncated(what, start));
        }
        self.read_into(buf, len, what, start)?;
        let stored = self.read_u32(what, start)?;
        check_crc(buf, stored).map_err(|why| self.corrupt(what, start, why))
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
        if version < OLDEST_READABLE_VERSION {
            return Err(ImageError::OlderVersion {
                path: self.path.clone(),
                found: version,
                supported: OLDEST_READABLE_VERSION,
            });
        }
        let rest: [u8; 12] = self.read_array("preamble", 0)?;
        let mut preamble = [0u8; PREAMBLE_LEN as usize];
        preamble[..8].copy_from_slice(&MAGIC);
        preamble[8..12].copy_from_slice(&version.to_le_bytes());
        preamble[12..].copy_from_slice(&rest);
        let field = |i: usize| {
            u32::from_le_bytes([
                preamble[i],
                preamble[i + 1],
                preamble[i + 2],
                preamble[i + 3],
            ])
        };
        let (header_len, state_len, stored) = (field(12), field(16), field(20));
        check_crc(&preamble[..20], stored).map_err(|why| self.corrupt("preamble", 0, why))?;
        if header_len > MAX_HEADER_BYTES {
            return Err(self.corrupt(
                "header",
                PREAMBLE_LEN,
                format!("length {header_len} is over the {MAX_HEADER_BYTES}-byte limit"),
            ));
        }
        self.state_len = state_len;
        let mut bytes = Vec::new();
        self.read_checked(&mut bytes, header_len, "header", PREAMBLE_LEN)?;
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
        let len = self.state_len;
        if len > MAX_STATE_BYTES {
            return Err(self.corrupt(
                WHAT,
                start,
                format!("length {len} is over the {MAX_STATE_BYTES}-byte limit"),
            ));
        }
        let mut bytes = Vec::new();
        self.read_checked(&mut bytes, len, WHAT, start)?;
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
            // Exactly a trailer's worth of bytes left: that is what it was.
            let what = if self.remaining() + 4 == TRAILER_LEN {
                "trailer"
            } else {
                what.as_str()
            };
            return Err(self.corrupt(
                what,
                start,
                format!("expected a chunk or the trailer, found tag {tag:#010x}"),
            ));
        }
        let rest: [u8; CHUNK_HEAD_LEN - 4] = self.read_array(&what, start)?;
        let mut head = [0u8; CHUNK_HEAD_LEN];
        head[..4].copy_from_slice(&tag.to_le_bytes());
        head[4..].copy_from_slice(&rest);
        let field = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let (raw_len, frame_len, runs_len) = (field(4), field(8), field(12));
        check_crc(&head[..16], field(16))
            .map_err(|why| self.corrupt(&what, start, format!("chunk head: {why}")))?;
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
        self.read_checked(buf, runs_len, what, start)
            .map_err(|e| match e {
                ImageError::Corrupt {
                    path,
                    what,
                    offset,
                    why,
                } => ImageError::Corrupt {
                    path,
                    what,
                    offset,
                    why: format!("page runs: {why}"),
                },
                e => e,
            })?;
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
        if frame[4] & ZSTD_UNUSED_FLAGS != 0 {
            return Err(format!(
                "zstd frame header has unexpected flags {:#04x}",
                frame[4]
            ));
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

/// Whether `bytes` have the CRC-32C `stored`.
fn check_crc(bytes: &[u8], stored: u32) -> Result<(), String> {
    let computed = crc32c(bytes);
    if computed == stored {
        Ok(())
    } else {
        Err(format!(
            "checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the bytes are damaged"
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_zero_sees_any_byte() {
        let mut page = vec![0u8; PAGE];
        assert!(is_zero(&page));
        for at in 0..PAGE {
            page[at] = 0x80;
            assert!(!is_zero(&page), "byte {at}");
            page[at] = 0;
        }
        assert!(is_zero(&page[..100]));
        assert!(!is_zero(&[0, 0, 1]));
    }

    #[test]
    fn crc32c_matches_the_standard() {
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        // Slicing by 8 agrees with the bytewise remainder loop at every length.
        let data: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(37)).collect();
        for len in 0..data.len() {
            let mut crc = !0u32;
            for &b in &data[..len] {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        (crc >> 1) ^ 0x82f6_3b78
                    } else {
                        crc >> 1
                    };
                }
            }
            assert_eq!(crc32c(&data[..len]), !crc, "length {len}");
        }
    }
}
