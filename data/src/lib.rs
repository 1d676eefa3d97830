//! Episode datasets for training and evaluating VLAs.
//!
//! Everything meets in [`Episode`]: the simulator's data generator writes
//! episodes, the robomimic HDF5 and RLDS back ends store them, and training
//! and offline evaluation read them back one episode at a time, so a dataset
//! never has to fit in memory.

pub mod bench;
pub mod convert;
pub mod episode;
pub mod error;
pub mod example;
pub mod rlds;
pub mod robomimic;
pub mod stats;
pub mod synthetic;
pub mod tfrecord;

pub use episode::{DatasetKind, DatasetMeta, Episode, Frame, LowDim, Relabel, INTENDED_ACTION_KEY, PROPRIO_KEYS, STATE_KEY};
pub use error::{DataError, Result};

/// Reads episodes one at a time (random access by index).
///
/// Implementations index the file(s) on open and decode lazily, so opening a
/// 1000-episode dataset is cheap.
pub trait EpisodeReader: Send {
    fn meta(&self) -> &DatasetMeta;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn read(&mut self, index: usize) -> Result<Episode>;
    /// Like [`EpisodeReader::read`] but may leave `images` empty: statistics
    /// and summaries need only the low-dimensional series, and skipping the
    /// frames (decompression, JPEG decoding) makes them many times faster.
    fn read_lowdim(&mut self, index: usize) -> Result<Episode> {
        self.read(index)
    }
}

/// Appends episodes to a dataset being written; `finish` writes whatever
/// summary metadata the format needs (robomimic `total`, TFDS `dataset_info.json`).
pub trait EpisodeWriter: Send {
    fn append(&mut self, episode: &Episode) -> Result<()>;
    fn finish(self: Box<Self>) -> Result<()>;
}
