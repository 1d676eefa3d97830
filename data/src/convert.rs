//! Opening either format and copying episodes between them.

use std::collections::BTreeMap;
use std::path::Path;

use crate::robomimic::RobomimicReader;
use crate::rlds::RldsReader;
use crate::{DataError, DatasetKind, Episode, EpisodeReader, EpisodeWriter, Result};

/// Which format `path` holds: a folder is RLDS, a file robomimic HDF5.
pub fn detect(path: &Path) -> Result<DatasetKind> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(DatasetKind::Rlds),
        Ok(_) => Ok(DatasetKind::Mimicgen),
        Err(e) => Err(DataError::Io { path: path.into(), source: e }),
    }
}

/// Opens a dataset of either format for reading.
pub fn open(path: &Path, kind: Option<DatasetKind>) -> Result<Box<dyn EpisodeReader>> {
    Ok(match kind.map_or_else(|| detect(path), Ok)? {
        DatasetKind::Mimicgen => Box::new(RobomimicReader::open(path)?),
        DatasetKind::Rlds => Box::new(RldsReader::open(path)?),
    })
}

/// Parses `old:new[,old:new...]` (the reference converter's `--remap-keys`).
pub fn parse_remap(spec: &str) -> Result<BTreeMap<String, String>> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|pair| match pair.trim().split_once(':') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_string(), b.to_string())),
            _ => Err(DataError::Other(format!("bad key remapping `{pair}`: expected old:new"))),
        })
        .collect()
}

/// Renames camera and low-dimensional observation keys.
pub fn remap_keys(ep: &mut Episode, map: &BTreeMap<String, String>) {
    fn rename<V>(m: &mut BTreeMap<String, V>, map: &BTreeMap<String, String>) {
        let old = std::mem::take(m);
        *m = old.into_iter().map(|(k, v)| (map.get(&k).cloned().unwrap_or(k), v)).collect();
    }
    rename(&mut ep.images, map);
    rename(&mut ep.low_dim, map);
}

/// What a conversion copied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Converted {
    pub episodes: usize,
    pub steps: usize,
}

/// Copies every episode from `reader` to `writer`, one at a time, and
/// finishes the writer. `progress` sees each episode after it is written.
pub fn convert(
    reader: &mut dyn EpisodeReader,
    mut writer: Box<dyn EpisodeWriter>,
    remap: &BTreeMap<String, String>,
    mut progress: impl FnMut(usize, &Episode),
) -> Result<Converted> {
    let mut done = Converted::default();
    for i in 0..reader.len() {
        let mut ep = reader.read(i)?;
        remap_keys(&mut ep, remap);
        writer.append(&ep)?;
        done.episodes += 1;
        done.steps += ep.len();
        progress(i + 1, &ep);
    }
    writer.finish()?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remap_parsing() {
        let m = parse_remap("agentview:image, robot0_eye_in_hand:wrist_image").unwrap();
        assert_eq!(m["agentview"], "image");
        assert_eq!(m["robot0_eye_in_hand"], "wrist_image");
        assert!(parse_remap("agentview").is_err());
        assert!(parse_remap("").unwrap().is_empty());
    }
}

/// Several datasets read as one, episodes in the order the parts were given.
///
/// Training mixtures (OpenVLA trains on mixes of RLDS datasets) need one index
/// space; statistics computed through this reader cover every part, so the
/// exported `norm_stats` suit all of them.
pub struct ConcatReader {
    parts: Vec<Box<dyn EpisodeReader>>,
    /// Episode index at which each part starts.
    starts: Vec<usize>,
    meta: crate::DatasetMeta,
}

impl ConcatReader {
    /// Joins `parts` (at least one) under `name`. `env_args` is the first part's.
    pub fn new(parts: Vec<Box<dyn EpisodeReader>>, name: impl Into<String>) -> Result<Self> {
        let first = parts.first().ok_or_else(|| DataError::Other("no datasets to join".into()))?;
        let meta = crate::DatasetMeta { name: name.into(), env_args: first.meta().env_args.clone() };
        let mut starts = Vec::with_capacity(parts.len());
        let mut n = 0;
        for p in &parts {
            starts.push(n);
            n += p.len();
        }
        Ok(Self { parts, starts, meta })
    }

    fn locate(&self, index: usize) -> Result<(usize, usize)> {
        if index >= self.len() {
            return Err(DataError::Other(format!("episode index {index} out of range ({} episodes)", self.len())));
        }
        let part = self.starts.partition_point(|&s| s <= index) - 1;
        Ok((part, index - self.starts[part]))
    }
}

impl EpisodeReader for ConcatReader {
    fn meta(&self) -> &crate::DatasetMeta {
        &self.meta
    }
    fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }
    fn read(&mut self, index: usize) -> Result<Episode> {
        let (p, i) = self.locate(index)?;
        self.parts[p].read(i)
    }
    fn read_lowdim(&mut self, index: usize) -> Result<Episode> {
        let (p, i) = self.locate(index)?;
        self.parts[p].read_lowdim(i)
    }
}

/// Opens one dataset, or several as a [`ConcatReader`] named after their
/// names joined with `+` (parts with empty names count as `dataset`).
pub fn open_many(paths: &[std::path::PathBuf], kind: Option<DatasetKind>) -> Result<Box<dyn EpisodeReader>> {
    match paths {
        [] => Err(DataError::Other("no dataset given".into())),
        [one] => open(one, kind),
        many => {
            let parts = many.iter().map(|p| open(p, kind)).collect::<Result<Vec<_>>>()?;
            let name = parts
                .iter()
                .map(|p| if p.meta().name.is_empty() { "dataset".to_string() } else { p.meta().name.clone() })
                .collect::<Vec<_>>()
                .join("+");
            Ok(Box::new(ConcatReader::new(parts, name)?))
        }
    }
}
