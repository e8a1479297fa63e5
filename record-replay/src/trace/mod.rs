//! Traces on disk: the header, the event log in checksummed zstd chunks,
//! and the end record. Readers never panic on bad input: they name the
//! file, chunk and offset that is wrong.

pub mod format;

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use format::{
    Event, Schedule, TraceEnd, TraceHeader, CHUNK_MAGIC, SCHEDULE_MAGIC, TRACE_MAGIC,
    TRACE_VERSION, TRACE_VERSION_MIN,
};

/// Raw bytes of events gathered before a chunk is compressed and written.
const CHUNK_TARGET: usize = 1 << 20;
/// Largest chunk a reader accepts (raw or compressed).
const CHUNK_MAX: u32 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not a rewind trace (no header)")]
    NotATrace(PathBuf),
    #[error("{path}: trace format version {found}, this rewind reads version {supported}")]
    Version {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path}: corrupt {what}: {why}")]
    Corrupt {
        path: PathBuf,
        what: String,
        why: String,
    },
    #[error("{path}: truncated {what} (the recording was interrupted?)")]
    Truncated { path: PathBuf, what: String },
}

fn io(path: &Path, source: std::io::Error) -> TraceError {
    TraceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn cfg() -> bincode::config::Configuration {
    bincode::config::standard()
}

pub fn write_header(dir: &Path, header: &TraceHeader) -> Result<(), TraceError> {
    let path = dir.join("header");
    let body = bincode::serde::encode_to_vec(header, cfg()).map_err(|e| TraceError::Corrupt {
        path: path.clone(),
        what: "header".into(),
        why: e.to_string(),
    })?;
    let mut bytes = TRACE_MAGIC.to_vec();
    bytes.extend_from_slice(&TRACE_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&body);
    std::fs::write(&path, bytes).map_err(|e| io(&path, e))
}

pub fn read_header(dir: &Path) -> Result<TraceHeader, TraceError> {
    let path = dir.join("header");
    let bytes = std::fs::read(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            TraceError::NotATrace(dir.to_path_buf())
        } else {
            io(&path, e)
        }
    })?;
    if bytes.len() < 16 || bytes[..8] != TRACE_MAGIC {
        return Err(TraceError::NotATrace(dir.to_path_buf()));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if !(TRACE_VERSION_MIN..=TRACE_VERSION).contains(&version) {
        return Err(TraceError::Version {
            path,
            found: version,
            supported: TRACE_VERSION,
        });
    }
    let len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
    let body = bytes
        .get(16..16 + len)
        .ok_or_else(|| TraceError::Truncated {
            path: path.clone(),
            what: "header".into(),
        })?;
    let (header, _) =
        bincode::serde::decode_from_slice(body, cfg()).map_err(|e| TraceError::Corrupt {
            path: path.clone(),
            what: "header".into(),
            why: e.to_string(),
        })?;
    Ok(header)
}

pub fn write_end(dir: &Path, end: &TraceEnd) -> Result<(), TraceError> {
    let path = dir.join("end");
    let body = bincode::serde::encode_to_vec(end, cfg()).map_err(|e| TraceError::Corrupt {
        path: path.clone(),
        what: "end record".into(),
        why: e.to_string(),
    })?;
    std::fs::write(&path, body).map_err(|e| io(&path, e))
}

/// The end record; None if the recording never finished.
pub fn read_end(dir: &Path) -> Result<Option<TraceEnd>, TraceError> {
    let path = dir.join("end");
    match std::fs::read(&path) {
        Ok(bytes) => bincode::serde::decode_from_slice(&bytes, cfg())
            .map(|(end, _)| Some(end))
            .map_err(|e| TraceError::Corrupt {
                path,
                what: "end record".into(),
                why: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path, e)),
    }
}

/// Write the order of events across the processes of a tree.
pub fn write_schedule(dir: &Path, schedule: &Schedule) -> Result<(), TraceError> {
    let path = dir.join("schedule");
    let corrupt = |why: String| TraceError::Corrupt {
        path: path.clone(),
        what: "schedule".into(),
        why,
    };
    let body =
        bincode::serde::encode_to_vec(schedule, cfg()).map_err(|e| corrupt(e.to_string()))?;
    let mut bytes = SCHEDULE_MAGIC.to_vec();
    bytes.extend(zstd::bulk::compress(&body, 3).map_err(|e| io(&path, e))?);
    std::fs::write(&path, bytes).map_err(|e| io(&path, e))
}

/// The order of events across processes; None for a trace of one
/// process.
pub fn read_schedule(dir: &Path) -> Result<Option<Schedule>, TraceError> {
    let path = dir.join("schedule");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path, e)),
    };
    let corrupt = |why: String| TraceError::Corrupt {
        path: path.clone(),
        what: "schedule".into(),
        why,
    };
    let Some(frame) = bytes.strip_prefix(&SCHEDULE_MAGIC[..]) else {
        return Err(corrupt("no schedule magic".into()));
    };
    let mut body = Vec::new();
    zstd::stream::read::Decoder::new(frame)
        .and_then(|mut d| d.read_to_end(&mut body))
        .map_err(|e| corrupt(format!("zstd: {e}")))?;
    let (schedule, _) =
        bincode::serde::decode_from_slice(&body, cfg()).map_err(|e| corrupt(e.to_string()))?;
    Ok(Some(schedule))
}

/// The directory of process `pid`'s log in a trace of a tree (the root's
/// is the trace directory itself).
pub fn process_dir(trace: &Path, pid: i32, root: i32) -> PathBuf {
    if pid == root {
        trace.to_path_buf()
    } else {
        trace.join(format!("proc-{pid}"))
    }
}

/// The events of a trace in memory, shared by every replay of it (a
/// debugger's current replay and its snapshots); a live recording
/// (`rewind debug -- PROG`) appends to it as the program runs.
#[derive(Debug, Clone, Default)]
pub struct EventList(Arc<RwLock<Vec<Arc<Event>>>>);

impl EventList {
    pub fn new(events: Vec<Event>) -> EventList {
        EventList(Arc::new(RwLock::new(
            events.into_iter().map(Arc::new).collect(),
        )))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Event>>> {
        // Nothing panics while holding the lock: a poisoned one is whole.
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Event `i` (0-based: the `i+1`-th).
    pub fn get(&self, i: usize) -> Option<Arc<Event>> {
        self.read().get(i).cloned()
    }

    pub fn push(&self, event: Event) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(event));
    }
}

/// Appends events to `events`, a chunk at a time. Chunks are compressed
/// and written by a thread of their own, so the recorder goes on serving
/// the program meanwhile (the order of chunks is kept).
pub struct EventLog {
    path: PathBuf,
    pending: Vec<u8>,
    pending_count: u32,
    pub events: u64,
    pub chunks: u64,
    pub bytes: u64,
    writer: Option<Writer>,
}

/// The writer thread: its queue and its handle.
type Writer = (
    std::sync::mpsc::SyncSender<Chunk>,
    std::thread::JoinHandle<Result<(), TraceError>>,
);

enum Chunk {
    Data(Vec<u8>, u32),
    /// Write everything before this, fsync, answer (chunks, bytes).
    Sync(std::sync::mpsc::Sender<Result<(u64, u64), TraceError>>),
}

/// The writer thread: compress and append each chunk in order.
fn write_chunks(
    path: PathBuf,
    file: File,
    chunks: std::sync::mpsc::Receiver<Chunk>,
) -> Result<(), TraceError> {
    // Signals are for the recorder's thread (its SIGCHLD signalfd).
    let _ = nix::sys::signal::SigSet::all().thread_block();
    let mut out = BufWriter::new(file);
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut failed: Option<TraceError> = None;
    let mut c = zstd::bulk::Compressor::new(3).map_err(|e| io(&path, e))?;
    c.include_checksum(true).map_err(|e| io(&path, e))?;
    for chunk in chunks {
        match chunk {
            Chunk::Data(raw, n) => {
                if failed.is_some() {
                    continue;
                }
                let written = c.compress(&raw).and_then(|comp| {
                    let mut head = Vec::with_capacity(16);
                    head.extend_from_slice(&CHUNK_MAGIC.to_le_bytes());
                    head.extend_from_slice(&n.to_le_bytes());
                    head.extend_from_slice(&(raw.len() as u32).to_le_bytes());
                    head.extend_from_slice(&(comp.len() as u32).to_le_bytes());
                    out.write_all(&head)?;
                    out.write_all(&comp)?;
                    Ok((head.len() + comp.len()) as u64)
                });
                match written {
                    Ok(b) => {
                        bytes += b;
                        count += 1;
                    }
                    Err(e) => failed = Some(io(&path, e)),
                }
            }
            Chunk::Sync(answer) => {
                let result = match failed.take() {
                    Some(e) => Err(e),
                    None => out
                        .flush()
                        .and_then(|_| out.get_ref().sync_all())
                        .map(|_| (count, bytes))
                        .map_err(|e| io(&path, e)),
                };
                let _ = answer.send(result);
            }
        }
    }
    Ok(())
}

impl EventLog {
    pub fn create(dir: &Path) -> Result<EventLog, TraceError> {
        let path = dir.join("events");
        let file = File::create(&path).map_err(|e| io(&path, e))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let p = path.clone();
        let handle = std::thread::Builder::new()
            .name("rewind-trace".into())
            .spawn(move || write_chunks(p, file, rx))
            .map_err(|e| io(&path, e))?;
        Ok(EventLog {
            path,
            pending: Vec::new(),
            pending_count: 0,
            events: 0,
            chunks: 0,
            bytes: 0,
            writer: Some((tx, handle)),
        })
    }

    pub fn push(&mut self, event: &Event) -> Result<(), TraceError> {
        bincode::serde::encode_into_std_write(event, &mut self.pending, cfg()).map_err(|e| {
            TraceError::Corrupt {
                path: self.path.clone(),
                what: "event".into(),
                why: e.to_string(),
            }
        })?;
        self.pending_count += 1;
        self.events += 1;
        if self.pending.len() >= CHUNK_TARGET {
            self.flush_chunk()?;
        }
        Ok(())
    }

    fn gone(&self) -> TraceError {
        io(
            &self.path,
            std::io::Error::other("the trace writer thread stopped"),
        )
    }

    fn flush_chunk(&mut self) -> Result<(), TraceError> {
        if self.pending_count == 0 {
            return Ok(());
        }
        let raw = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK_TARGET + 4096));
        let n = std::mem::take(&mut self.pending_count);
        let Some((tx, _)) = &self.writer else {
            return Err(self.gone());
        };
        tx.send(Chunk::Data(raw, n)).map_err(|_| self.gone())
    }

    /// Write what is pending and make it durable.
    pub fn finish(mut self) -> Result<(u64, u64, u64), TraceError> {
        let result = self.sync();
        if let Some((tx, handle)) = self.writer.take() {
            drop(tx);
            match handle.join() {
                Ok(r) => r?,
                Err(_) => return Err(self.gone()),
            }
        }
        result
    }

    /// Write what is pending and make it durable, keeping the log open:
    /// (events, chunks, bytes) so far.
    pub fn sync(&mut self) -> Result<(u64, u64, u64), TraceError> {
        self.flush_chunk()?;
        let (answer, result) = std::sync::mpsc::channel();
        let Some((tx, _)) = &self.writer else {
            return Err(self.gone());
        };
        tx.send(Chunk::Sync(answer)).map_err(|_| self.gone())?;
        let (chunks, bytes) = result.recv().map_err(|_| self.gone())??;
        self.chunks = chunks;
        self.bytes = bytes;
        Ok((self.events, self.chunks, self.bytes))
    }
}

/// Reads events back, chunk by chunk.
pub struct EventReader {
    path: PathBuf,
    input: BufReader<File>,
    chunk: Vec<Event>,
    next: usize,
    pub chunk_index: u64,
    offset: u64,
    pub events_read: u64,
    done: bool,
}

impl EventReader {
    pub fn open(dir: &Path) -> Result<EventReader, TraceError> {
        let path = dir.join("events");
        let file = File::open(&path).map_err(|e| io(&path, e))?;
        Ok(EventReader {
            path,
            input: BufReader::new(file),
            chunk: Vec::new(),
            next: 0,
            chunk_index: 0,
            offset: 0,
            events_read: 0,
            done: false,
        })
    }

    fn corrupt(&self, why: impl Into<String>) -> TraceError {
        TraceError::Corrupt {
            path: self.path.clone(),
            what: format!("chunk {} at offset {}", self.chunk_index, self.offset),
            why: why.into(),
        }
    }

    fn truncated(&self) -> TraceError {
        TraceError::Truncated {
            path: self.path.clone(),
            what: format!("chunk {} at offset {}", self.chunk_index, self.offset),
        }
    }

    fn load_chunk(&mut self) -> Result<bool, TraceError> {
        let mut head = [0u8; 16];
        let mut got = 0;
        while got < 16 {
            match self.input.read(&mut head[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => return Err(self.truncated()),
                Ok(n) => got += n,
                Err(e) => return Err(io(&self.path, e)),
            }
        }
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        if word(0) != CHUNK_MAGIC {
            return Err(self.corrupt("bad chunk magic"));
        }
        let (count, raw_len, comp_len) = (word(4), word(8), word(12));
        if raw_len > CHUNK_MAX || comp_len > CHUNK_MAX {
            return Err(self.corrupt("absurd chunk length"));
        }
        let mut comp = vec![0u8; comp_len as usize];
        self.input.read_exact(&mut comp).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.truncated()
            } else {
                io(&self.path, e)
            }
        })?;
        let raw = zstd::bulk::decompress(&comp, raw_len as usize)
            .map_err(|e| self.corrupt(format!("zstd: {e}")))?;
        if raw.len() != raw_len as usize {
            return Err(self.corrupt("chunk shorter than announced"));
        }
        let mut events = Vec::with_capacity(count.min(1 << 20) as usize);
        let mut at = 0usize;
        for _ in 0..count {
            let (ev, used): (Event, usize) = bincode::serde::decode_from_slice(&raw[at..], cfg())
                .map_err(|e| self.corrupt(format!("event: {e}")))?;
            events.push(ev);
            at += used;
        }
        if at != raw.len() {
            return Err(self.corrupt("trailing bytes after the events"));
        }
        self.offset += 16 + comp_len as u64;
        self.chunk_index += 1;
        self.chunk = events;
        self.next = 0;
        Ok(true)
    }

    /// The next event; None at the end of the log.
    pub fn next_event(&mut self) -> Result<Option<Event>, TraceError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if self.next < self.chunk.len() {
                let ev = std::mem::replace(
                    &mut self.chunk[self.next],
                    Event::Exec {
                        tid: 0,
                        image: String::new(),
                    },
                );
                self.next += 1;
                self.events_read += 1;
                return Ok(Some(ev));
            }
            if !self.load_chunk()? {
                self.done = true;
            }
        }
    }
}
