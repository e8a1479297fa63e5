//! What can go wrong with an image, said in one line that names the file,
//! the part of the image and its offset.

use std::path::PathBuf;

/// An image could not be written or read.
///
/// Every variant names the file; decoding errors also name the part of the
/// image (`"preamble"`, `"header"`, `"process state"`, `"memory chunk 17"`,
/// `"trailer"`) and the file offset where that part starts.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The operating system refused a read, write, rename or sync.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The file does not start with the image magic: not a rewind image.
    #[error(
        "{}: not a rewind image (foreign file: it does not start with the image magic)",
        path.display()
    )]
    NotAnImage { path: PathBuf },

    /// The image was written by a newer rewind, in a format this one cannot read.
    #[error(
        "{}: image format version {found} is newer than this rewind reads (version {supported}); use a newer rewind",
        path.display()
    )]
    NewerVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    /// The image was written by an older rewind whose format is no longer read.
    #[error(
        "{}: image format version {found} is older than this rewind reads (version {supported}); use the rewind that wrote it",
        path.display()
    )]
    OlderVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    /// The file ends inside `what` (or where `what` should start).
    #[error(
        "{}: truncated image: {what} at offset {offset} ends early (was the checkpoint interrupted?)",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        what: String,
        offset: u64,
    },

    /// `what`, starting at `offset`, is present but wrong: `why` says how.
    #[error("{}: corrupt image: {what} at offset {offset}: {why}", path.display())]
    Corrupt {
        path: PathBuf,
        what: String,
        offset: u64,
        why: String,
    },

    /// The writer could not read the memory it was to store from its
    /// [`PageSource`](super::PageSource) (the target process).
    #[error("cannot read {len} bytes of memory at {addr:#x}: {source}")]
    Read {
        addr: u64,
        len: u64,
        source: std::io::Error,
    },

    /// The writer was given something it cannot store (misaligned pages,
    /// pages outside every region, a state too large to encode...).
    #[error("cannot write image: {0}")]
    Encode(String),
}
