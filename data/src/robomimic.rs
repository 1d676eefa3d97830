//! robomimic HDF5 files, the format MimicGen writes and robomimic trains from.
//!
//! Layout (one file):
//! ```text
//! data                    attrs: env_args (JSON string), total (sum of num_samples), name
//! data/demo_N             attrs: num_samples, plus the episode's other attrs
//!     actions             [T, 7] float64
//!     states              [T, D] float64            (when the episode has states)
//!     rewards, dones      [T] float64 / [T] int64   (when present)
//!     instructions        [T] variable-length UTF-8 strings (Vela's addition:
//!                         the per-step language instruction)
//!     obs/<cam>_image     [T, H, W, 3] uint8, chunked per frame, gzip
//!     obs/<key>           [T, D] float64 low-dimensional observations
//! mask/train              variable-length ASCII demo names (robomimic filter key)
//! ```
//! Demos are written as they come, so a generator never holds more than one
//! episode, and read one at a time (demo names sorted numerically).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hdf5::types::{TypeDescriptor, VarLenAscii, VarLenUnicode};
use hdf5::{Dataset, Group, H5Type, Location};

use crate::{DataError, DatasetMeta, Episode, EpisodeReader, EpisodeWriter, Frame, LowDim, Result};

const IMAGE_SUFFIX: &str = "_image";
/// h5py's and MimicGen's default gzip level.
pub const DEFAULT_GZIP_LEVEL: u8 = 4;

/// Writes episodes into a new robomimic HDF5 file.
pub struct RobomimicWriter {
    path: PathBuf,
    file: hdf5::File,
    data: Group,
    total: u64,
    demos: Vec<String>,
    gzip_level: u8,
}

/// libhdf5 opens files without `O_CLOEXEC`, so a process started by another thread while a file
/// is open inherits its descriptor, and with it the file's lock: until that child exits, nobody
/// can create or rewrite the file ("unable to lock file"). Mark the descriptor close-on-exec.
fn close_on_exec(file: &hdf5::File) {
    let mut handle: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: `file` is open; for the default (sec2) driver the handle points at its `int` fd,
    // which lives as long as the file; libhdf5's lock is held by `sync`.
    let rc = hdf5::sync::sync(|| unsafe { hdf5_sys::h5f::H5Fget_vfd_handle(file.id(), hdf5_sys::h5p::H5P_DEFAULT, &mut handle) });
    if rc < 0 || handle.is_null() {
        return;
    }
    // SAFETY: see above; fcntl on a valid fd only changes its flags.
    unsafe {
        let fd = *(handle as *const std::ffi::c_int);
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

/// Opens files without taking HDF5's lock: a reader should never stop a writer (another
/// process, or a copy of the descriptor that a child started meanwhile inherited) from
/// replacing the file.
fn unlocked() -> hdf5::FileBuilder {
    let mut b = hdf5::File::with_options();
    b.with_fapl(|p| p.file_locking(false));
    b
}

impl RobomimicWriter {
    /// Creates (or truncates) `path`; `env_args` and `name` are stored at once.
    pub fn create(path: impl AsRef<Path>, meta: &DatasetMeta) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let fail = |e: hdf5::Error| format_err(&path, format!("cannot create HDF5 file: {e}"));
        let file = hdf5::File::create(&path).map_err(fail)?;
        close_on_exec(&file);
        let data = file.create_group("data").map_err(fail)?;
        let w = Self { path, file, data, total: 0, demos: Vec::new(), gzip_level: DEFAULT_GZIP_LEVEL };
        let env_args = serde_json::to_string(&meta.env_args).map_err(|e| DataError::Other(e.to_string()))?;
        write_str_attr(&w.data, "env_args", &env_args).map_err(|e| w.err("data", "env_args", e))?;
        write_str_attr(&w.data, "name", &meta.name).map_err(|e| w.err("data", "name", e))?;
        Ok(w)
    }

    /// gzip level for camera frames (0 = store uncompressed, 9 = smallest).
    pub fn with_gzip_level(mut self, level: u8) -> Self {
        self.gzip_level = level.min(9);
        self
    }

    fn err(&self, episode: &str, key: &str, e: impl std::fmt::Display) -> DataError {
        DataError::Invalid { path: self.path.clone(), episode: episode.into(), key: key.into(), msg: e.to_string() }
    }

    fn write_demo(&self, g: &Group, ep: &Episode, name: &str) -> Result<()> {
        let t = ep.len();
        let err = |key: &str, e: hdf5::Error| self.err(name, key, e);
        let check = |key: &str, n: usize| {
            if n == t { Ok(()) } else { Err(self.err(name, key, format!("has {n} steps, actions have {t}"))) }
        };
        let actions: Vec<f64> = ep.actions.iter().flatten().map(|&v| v as f64).collect();
        write_array(g, "actions", &[t, 7], &actions, None).map_err(|e| err("actions", e))?;
        if ep.states.dim > 0 {
            check("states", ep.states.steps())?;
            write_array(g, "states", &[t, ep.states.dim], &ep.states.data, None).map_err(|e| err("states", e))?;
        }
        if !ep.rewards.is_empty() {
            check("rewards", ep.rewards.len())?;
            let r: Vec<f64> = ep.rewards.iter().map(|&v| v as f64).collect();
            write_array(g, "rewards", &[t], &r, None).map_err(|e| err("rewards", e))?;
        }
        if !ep.dones.is_empty() {
            check("dones", ep.dones.len())?;
            let d: Vec<i64> = ep.dones.iter().map(|&v| v as i64).collect();
            write_array(g, "dones", &[t], &d, None).map_err(|e| err("dones", e))?;
        }
        if !ep.instructions.is_empty() {
            check("instructions", ep.instructions.len())?;
            let s = ep
                .instructions
                .iter()
                .map(|s| s.parse::<VarLenUnicode>().map_err(|e| self.err(name, "instructions", e)))
                .collect::<Result<Vec<_>>>()?;
            write_array(g, "instructions", &[t], &s, None).map_err(|e| err("instructions", e))?;
        }
        let obs = g.create_group("obs").map_err(|e| err("obs", e))?;
        for (key, ld) in &ep.low_dim {
            let k = format!("obs/{key}");
            check(&k, ld.steps())?;
            write_array(&obs, key, &[t, ld.dim], &ld.data, None).map_err(|e| err(&k, e))?;
        }
        for (cam, frames) in &ep.images {
            let k = format!("obs/{cam}{IMAGE_SUFFIX}");
            check(&k, frames.len())?;
            let (w, h) = frames.first().map_or((0, 0), |f| (f.width as usize, f.height as usize));
            for (i, f) in frames.iter().enumerate() {
                if (f.width as usize, f.height as usize) != (w, h) || f.rgb.len() != w * h * 3 {
                    return Err(self.err(name, &k, format!("frame {i} is not {w}x{h} RGB")));
                }
            }
            let key = format!("{cam}{IMAGE_SUFFIX}");
            if self.gzip_level > 0 && t > 0 && w * h > 0 {
                write_frames_deflated(&obs, &key, frames, (h, w), self.gzip_level).map_err(|e| err(&k, e))?;
            } else {
                let mut pixels = Vec::with_capacity(t * h * w * 3);
                for f in frames {
                    pixels.extend_from_slice(&f.rgb);
                }
                let chunk = [1, h.max(1), w.max(1), 3];
                write_array(&obs, &key, &[t, h, w, 3], &pixels, Some((chunk, 0))).map_err(|e| err(&k, e))?;
            }
        }
        let mut attrs = ep.attrs.clone();
        attrs.insert("num_samples".into(), serde_json::json!(t));
        for (key, v) in &attrs {
            write_json_attr(g, key, v).map_err(|e| err(&format!("attrs/{key}"), e))?;
        }
        Ok(())
    }
}

impl EpisodeWriter for RobomimicWriter {
    fn append(&mut self, episode: &Episode) -> Result<()> {
        let name = format!("demo_{}", self.demos.len());
        let g = self.data.create_group(&name).map_err(|e| self.err(&name, "", e))?;
        self.write_demo(&g, episode, &name)?;
        self.total += episode.len() as u64;
        self.demos.push(name);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let total = self.data.new_attr::<u64>().create("total").and_then(|a| a.write_scalar(&self.total));
        total.map_err(|e| self.err("data", "total", e))?;
        let names = self
            .demos
            .iter()
            .map(|d| VarLenAscii::from_ascii(d).map_err(|e| self.err(d, "mask/train", e)))
            .collect::<Result<Vec<_>>>()?;
        let mask = self.file.create_group("mask").map_err(|e| self.err("", "mask", e))?;
        write_array(&mask, "train", &[names.len()], &names, None).map_err(|e| self.err("", "mask/train", e))?;
        self.file.flush().map_err(|e| format_err(&self.path, format!("cannot flush: {e}")))?;
        Ok(())
    }
}

/// Reads a robomimic HDF5 file one demo at a time.
pub struct RobomimicReader {
    path: PathBuf,
    data: Group,
    meta: DatasetMeta,
    demos: Vec<String>,
}

impl RobomimicReader {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Err(e) = std::fs::metadata(&path) {
            return Err(DataError::Io { path, source: e });
        }
        let file = unlocked()
            .open(&path)
            .map_err(|e| format_err(&path, format!("not a readable HDF5 file (truncated or corrupt?): {e}")))?;
        close_on_exec(&file);
        let data = file.group("data").map_err(|_| format_err(&path, "no `data` group: not a robomimic file".into()))?;
        let env_args = match read_str_attr(&data, "env_args") {
            Ok(Some(s)) => serde_json::from_str(&s).map_err(|e| DataError::Invalid {
                path: path.clone(),
                episode: "data".into(),
                key: "env_args".into(),
                msg: format!("not JSON: {e}"),
            })?,
            _ => serde_json::Value::Null,
        };
        let name = read_str_attr(&data, "name").ok().flatten().filter(|s| !s.is_empty()).unwrap_or_else(|| {
            env_args.get("env_name").and_then(|v| v.as_str()).map(str::to_lowercase).unwrap_or_else(|| {
                path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
            })
        });
        let mut demos: Vec<(u64, String)> = data
            .member_names()
            .map_err(|e| format_err(&path, format!("cannot list `data`: {e}")))?
            .into_iter()
            .filter_map(|n| n.strip_prefix("demo_").and_then(|i| i.parse().ok()).map(|i| (i, n)))
            .collect();
        demos.sort();
        let demos = demos.into_iter().map(|(_, n)| n).collect();
        Ok(Self { path, data, meta: DatasetMeta { name, env_args }, demos })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Demo names in reading order.
    pub fn demo_names(&self) -> &[String] {
        &self.demos
    }

    fn err(&self, episode: &str, key: &str, msg: impl std::fmt::Display) -> DataError {
        DataError::Invalid { path: self.path.clone(), episode: episode.into(), key: key.into(), msg: msg.to_string() }
    }

    fn read_demo(&self, index: usize, with_images: bool) -> Result<Episode> {
        let name = self.demos.get(index).ok_or_else(|| {
            format_err(&self.path, format!("episode index {index} out of range ({} demos)", self.demos.len()))
        })?;
        let g = self.data.group(name).map_err(|e| self.err(name, "", e))?;
        let ds = |key: &str| -> Result<Dataset> {
            g.dataset(key).map_err(|_| self.err(name, key, "missing"))
        };
        let opt = |key: &str| -> Option<Dataset> { g.link_exists(key).then(|| g.dataset(key).ok()).flatten() };

        let actions_ds = ds("actions")?;
        let shape = actions_ds.shape();
        if shape.len() != 2 || shape[1] != 7 {
            return Err(self.err(name, "actions", format!("expected shape [T, 7], found {shape:?}")));
        }
        let t = shape[0];
        let raw: Vec<f64> = read_floats(&actions_ds).map_err(|e| self.err(name, "actions", e))?;
        let actions = raw.chunks_exact(7).map(|c| std::array::from_fn(|i| c[i] as f32)).collect();

        let rows = |key: &str, d: &Dataset| -> Result<usize> {
            let s = d.shape();
            match s.as_slice() {
                [n] | [n, _] if *n == t => Ok(s.get(1).copied().unwrap_or(1)),
                _ => Err(self.err(name, key, format!("expected shape [{t}] or [{t}, D], found {s:?}"))),
            }
        };
        let lowdim = |key: &str, d: &Dataset| -> Result<LowDim> {
            let dim = rows(key, d)?;
            Ok(LowDim { dim, data: read_floats(d).map_err(|e| self.err(name, key, e))? })
        };
        let states = match opt("states") {
            Some(d) => lowdim("states", &d)?,
            None => LowDim::default(),
        };
        let rewards = match opt("rewards") {
            Some(d) => lowdim("rewards", &d)?.data.into_iter().map(|v| v as f32).collect(),
            None => Vec::new(),
        };
        let dones = match opt("dones") {
            Some(d) => lowdim("dones", &d)?.data.into_iter().map(|v| v != 0.0).collect(),
            None => Vec::new(),
        };
        let instructions = match opt("instructions") {
            Some(d) => {
                rows("instructions", &d)?;
                read_strings(&d).map_err(|e| self.err(name, "instructions", e))?
            }
            None => Vec::new(),
        };

        let mut images = BTreeMap::new();
        let mut low_dim = BTreeMap::new();
        if let Ok(obs) = g.group("obs") {
            let keys = obs.member_names().map_err(|e| self.err(name, "obs", e))?;
            for key in keys {
                let full = format!("obs/{key}");
                let d = obs.dataset(&key).map_err(|e| self.err(name, &full, e))?;
                if let Some(cam) = key.strip_suffix(IMAGE_SUFFIX) {
                    let s = d.shape();
                    let [n, h, w, 3] = s.as_slice() else {
                        return Err(self.err(name, &full, format!("expected shape [{t}, H, W, 3], found {s:?}")));
                    };
                    if *n != t {
                        return Err(self.err(name, &full, format!("has {n} frames, actions have {t} steps")));
                    }
                    if !is_u8(&d) {
                        return Err(self.err(name, &full, "expected uint8 pixels"));
                    }
                    if !with_images {
                        continue;
                    }
                    let frames = match read_frames_deflated(&d, t, (*h, *w)) {
                        Some(frames) => frames.map_err(|e| self.err(name, &full, e))?,
                        None => {
                            let px: Vec<u8> = d.read_raw().map_err(|e| self.err(name, &full, e))?;
                            px.chunks_exact(h * w * 3).map(|c| c.to_vec()).collect()
                        }
                    };
                    let frames = frames.into_iter().map(|rgb| Frame { width: *w as u32, height: *h as u32, rgb }).collect();
                    images.insert(cam.to_string(), frames);
                } else {
                    low_dim.insert(key.clone(), lowdim(&full, &d)?);
                }
            }
        }
        let mut attrs = BTreeMap::new();
        for key in g.attr_names().map_err(|e| self.err(name, "attrs", e))? {
            if let Some(v) = read_json_attr(&g, &key) {
                attrs.insert(key, v);
            }
        }
        Ok(Episode { name: name.clone(), actions, images, low_dim, states, rewards, dones, instructions, attrs })
    }
}

impl EpisodeReader for RobomimicReader {
    fn meta(&self) -> &DatasetMeta {
        &self.meta
    }
    fn len(&self) -> usize {
        self.demos.len()
    }
    fn read(&mut self, index: usize) -> Result<Episode> {
        self.read_demo(index, true)
    }
    fn read_lowdim(&mut self, index: usize) -> Result<Episode> {
        self.read_demo(index, false)
    }
}

fn format_err(path: &Path, msg: String) -> DataError {
    DataError::Format { path: path.to_path_buf(), msg }
}

/// Writes `data` as a dataset of `shape`; `gzip` = (chunk shape, level).
fn write_array<T: H5Type>(
    g: &Group,
    name: &str,
    shape: &[usize],
    data: &[T],
    gzip: Option<([usize; 4], u8)>,
) -> hdf5::Result<()> {
    let mut b = g.new_dataset::<T>();
    if let Some((chunk, level)) = gzip {
        if shape[0] > 0 {
            b = b.chunk(chunk.to_vec());
            if level > 0 {
                b = b.deflate(level);
            }
        }
    }
    b.shape(shape.to_vec()).create(name)?.write_raw(data)
}

/// Writes `frames` as a `[T, H, W, 3]` uint8 dataset of one-frame chunks with the deflate
/// filter, as libhdf5 would, but compresses the chunks on every core first and hands them to
/// libhdf5 finished (`H5Dwrite_chunk`). libhdf5 filters one chunk at a time under its global
/// lock: a datagen with 16 workers spent most of its time waiting on that one thread.
fn write_frames_deflated(g: &Group, name: &str, frames: &[crate::Frame], (h, w): (usize, usize), level: u8) -> hdf5::Result<()> {
    use std::io::Write as _;
    let ds = g.new_dataset::<u8>().chunk(vec![1, h, w, 3]).deflate(level).shape(vec![frames.len(), h, w, 3]).create(name)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(frames.len()).max(1);
    let per = frames.len().div_ceil(threads);
    let compressed: Vec<Vec<u8>> = std::thread::scope(|s| {
        let jobs: Vec<_> = frames
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|f| {
                            let mut z = flate2::write::ZlibEncoder::new(Vec::with_capacity(f.rgb.len() / 2), flate2::Compression::new(level as u32));
                            z.write_all(&f.rgb).and_then(|_| z.finish())
                        })
                        .collect::<std::io::Result<Vec<_>>>()
                })
            })
            .collect();
        jobs.into_iter().map(|j| j.join().expect("compression thread panicked")).collect::<std::io::Result<Vec<Vec<Vec<u8>>>>>()
    })
    .map_err(|e| hdf5::Error::from(format!("compressing frames: {e}")))?
    .into_iter()
    .flatten()
    .collect();
    for (t, chunk) in compressed.iter().enumerate() {
        let offset: [hdf5_sys::h5::hsize_t; 4] = [t as _, 0, 0, 0];
        // SAFETY: `ds` is an open chunked dataset of this shape; offset has its rank and is a
        // chunk origin; the buffer outlives the call; libhdf5's lock is held by `sync`.
        let rc = hdf5::sync::sync(|| unsafe {
            hdf5_sys::h5d::H5Dwrite_chunk(ds.id(), hdf5_sys::h5p::H5P_DEFAULT, 0, offset.as_ptr(), chunk.len(), chunk.as_ptr().cast())
        });
        if rc < 0 {
            return Err(hdf5::Error::from(format!("H5Dwrite_chunk failed for frame {t}")));
        }
    }
    Ok(())
}

// Not declared by hdf5-sys; in libhdf5 since 1.10.2 (the reader needs 1.10.3 for
// `H5Dread_chunk` anyway).
extern "C" {
    fn H5Dget_chunk_storage_size(dset_id: hdf5_sys::h5i::hid_t, offset: *const hdf5_sys::h5::hsize_t, chunk_nbytes: *mut hdf5_sys::h5::hsize_t) -> hdf5_sys::h5::herr_t;
}

/// The reading half of [`write_frames_deflated`]: for frames stored one deflated frame per
/// chunk (our writer's layout and robomimic's), fetches the compressed chunks under libhdf5's
/// lock (`H5Dread_chunk`, no filtering) and inflates them on every core. A training loader
/// reading through libhdf5 inflated one frame at a time and fed a GPU fewer frames than it
/// could train on. `None` for any other layout (the caller reads through libhdf5).
fn read_frames_deflated(d: &Dataset, t: usize, (h, w): (usize, usize)) -> Option<hdf5::Result<Vec<Vec<u8>>>> {
    use std::io::Read as _;
    if d.chunk()? != [1, h, w, 3] || !matches!(d.filters().as_slice(), [hdf5::filters::Filter::Deflate(_)]) {
        return None;
    }
    let frame = h * w * 3;
    // (skipped-filter mask, stored bytes) per frame.
    let stored: Vec<(u32, Vec<u8>)> = hdf5::sync::sync(|| {
        let mut out = Vec::with_capacity(t);
        for i in 0..t {
            let offset: [hdf5_sys::h5::hsize_t; 4] = [i as _, 0, 0, 0];
            let mut n: hdf5_sys::h5::hsize_t = 0;
            // SAFETY: `d` is an open chunked dataset of rank 4; `offset` is a chunk origin
            // inside it; `buf` holds the chunk's stored size as libhdf5 reported it.
            let mut mask = 0u32;
            unsafe {
                if H5Dget_chunk_storage_size(d.id(), offset.as_ptr(), &mut n) < 0 || n == 0 || n as usize > 2 * frame + 1024 {
                    return None; // unallocated or odd chunk: let libhdf5 handle it
                }
                let mut buf = vec![0u8; n as usize];
                if hdf5_sys::h5d::H5Dread_chunk(d.id(), hdf5_sys::h5p::H5P_DEFAULT, offset.as_ptr(), &mut mask, buf.as_mut_ptr().cast()) < 0 {
                    return None;
                }
                out.push((mask, buf));
            }
        }
        Some(out)
    })?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(t).max(1);
    let per = t.div_ceil(threads).max(1);
    let inflated = std::thread::scope(|s| {
        let jobs: Vec<_> = stored
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|(mask, bytes)| {
                            if mask & 1 != 0 {
                                return Ok(bytes.clone()); // stored without deflate
                            }
                            let mut rgb = Vec::with_capacity(frame);
                            flate2::read::ZlibDecoder::new(bytes.as_slice()).read_to_end(&mut rgb)?;
                            Ok(rgb)
                        })
                        .collect::<std::io::Result<Vec<_>>>()
                })
            })
            .collect();
        jobs.into_iter().map(|j| j.join().expect("inflate thread panicked")).collect::<std::io::Result<Vec<Vec<Vec<u8>>>>>()
    });
    Some(match inflated {
        Err(e) => Err(hdf5::Error::from(format!("corrupt compressed frame: {e}"))),
        Ok(parts) => {
            let frames: Vec<Vec<u8>> = parts.into_iter().flatten().collect();
            match frames.iter().position(|f| f.len() != frame) {
                Some(i) => Err(hdf5::Error::from(format!("frame {i} inflates to {} bytes, expected {frame}", frames[i].len()))),
                None => Ok(frames),
            }
        }
    })
}

fn is_u8(d: &Dataset) -> bool {
    matches!(d.dtype().and_then(|t| t.to_descriptor()), Ok(TypeDescriptor::Unsigned(hdf5::types::IntSize::U1)))
}

/// Any integer or float dataset, converted to f64 (robomimic files hold
/// float32 or float64 actions, int or bool dones).
fn read_floats(d: &Dataset) -> hdf5::Result<Vec<f64>> {
    match d.dtype()?.to_descriptor()? {
        TypeDescriptor::Float(_) => d.read_raw::<f64>(),
        TypeDescriptor::Integer(_) => Ok(d.read_raw::<i64>()?.into_iter().map(|v| v as f64).collect()),
        TypeDescriptor::Unsigned(_) => Ok(d.read_raw::<u64>()?.into_iter().map(|v| v as f64).collect()),
        TypeDescriptor::Boolean => Ok(d.read_raw::<bool>()?.into_iter().map(|v| v as u8 as f64).collect()),
        other => Err(format!("expected numbers, found {other}").into()),
    }
}

fn read_strings(d: &Dataset) -> hdf5::Result<Vec<String>> {
    match d.dtype()?.to_descriptor()? {
        TypeDescriptor::VarLenUnicode => Ok(d.read_raw::<VarLenUnicode>()?.iter().map(|s| s.to_string()).collect()),
        TypeDescriptor::VarLenAscii => Ok(d.read_raw::<VarLenAscii>()?.iter().map(|s| s.to_string()).collect()),
        other => Err(format!("expected variable-length strings, found {other}").into()),
    }
}

fn write_str_attr(loc: &Location, name: &str, value: &str) -> hdf5::Result<()> {
    let v: VarLenUnicode = value.parse().map_err(|e| hdf5::Error::from(format!("{e}")))?;
    loc.new_attr::<VarLenUnicode>().create(name)?.write_scalar(&v)
}

fn read_str_attr(loc: &Location, name: &str) -> hdf5::Result<Option<String>> {
    if !loc.attr_names()?.iter().any(|n| n == name) {
        return Ok(None);
    }
    let a = loc.attr(name)?;
    match a.dtype()?.to_descriptor()? {
        TypeDescriptor::VarLenUnicode => Ok(Some(a.read_scalar::<VarLenUnicode>()?.to_string())),
        TypeDescriptor::VarLenAscii => Ok(Some(a.read_scalar::<VarLenAscii>()?.to_string())),
        other => Err(format!("attribute `{name}` is {other}, expected a string").into()),
    }
}

/// Attributes keep JSON scalars as native HDF5 types (so h5py and robomimic
/// see `num_samples` as an int) and anything else as a JSON string.
fn write_json_attr(loc: &Location, name: &str, v: &serde_json::Value) -> hdf5::Result<()> {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_i64() => loc.new_attr::<i64>().create(name)?.write_scalar(&n.as_i64().unwrap_or(0)),
        Value::Number(n) if n.is_u64() => loc.new_attr::<u64>().create(name)?.write_scalar(&n.as_u64().unwrap_or(0)),
        Value::Number(n) => loc.new_attr::<f64>().create(name)?.write_scalar(&n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => write_str_attr(loc, name, s),
        Value::Bool(b) => loc.new_attr::<i64>().create(name)?.write_scalar(&(*b as i64)),
        other => write_str_attr(loc, name, &other.to_string()),
    }
}

/// Scalar attributes back as JSON; others (arrays, compounds) are skipped.
fn read_json_attr(loc: &Location, name: &str) -> Option<serde_json::Value> {
    let a = loc.attr(name).ok()?;
    if !a.shape().is_empty() {
        return None;
    }
    match a.dtype().ok()?.to_descriptor().ok()? {
        TypeDescriptor::Integer(_) => a.read_scalar::<i64>().ok().map(Into::into),
        TypeDescriptor::Unsigned(_) => a.read_scalar::<u64>().ok().map(Into::into),
        TypeDescriptor::Float(_) => a.read_scalar::<f64>().ok().map(Into::into),
        TypeDescriptor::VarLenUnicode | TypeDescriptor::VarLenAscii => {
            read_str_attr(loc, name).ok().flatten().map(serde_json::Value::String)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic;

    /// libhdf5 opens without O_CLOEXEC, and `create` marks the file close-on-exec just after.
    /// A child started by another test in that instant would keep the new file's lock for
    /// its whole life (CI saw `write` fail with errno 11 once). Tests that create files hold
    /// this for reading; the test that starts children holds it for writing.
    static SPAWNING: std::sync::RwLock<()> = std::sync::RwLock::new(());

    fn create(path: &Path, meta: &DatasetMeta) -> RobomimicWriter {
        let _no_spawn = SPAWNING.read().unwrap_or_else(|e| e.into_inner());
        RobomimicWriter::create(path, meta).unwrap()
    }

    fn write(path: &Path, n: usize) -> Vec<Episode> {
        let meta = DatasetMeta { name: "stack_d0".into(), env_args: serde_json::json!({"env_name": "Stack_D0", "type": 1}) };
        let mut w: Box<dyn EpisodeWriter> = Box::new(create(path, &meta));
        let eps: Vec<Episode> = (0..n).map(|i| synthetic::episode(i, 10, &["agentview"], 16)).collect();
        for e in &eps {
            w.append(e).unwrap();
        }
        w.finish().unwrap();
        eps
    }

    #[test]
    fn round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo.hdf5");
        let eps = write(&path, 12);
        let mut r = RobomimicReader::open(&path).unwrap();
        assert_eq!(r.len(), 12);
        assert_eq!(r.meta().name, "stack_d0");
        assert_eq!(r.meta().env_args["env_name"], "Stack_D0");
        // demo_10 sorts after demo_9, not after demo_1.
        assert_eq!(r.demo_names()[10], "demo_10");
        for (i, want) in eps.iter().enumerate() {
            let got = r.read(i).unwrap();
            assert_eq!(&got, want, "episode {i}");
        }
        let lite = r.read_lowdim(3).unwrap();
        assert!(lite.images.is_empty());
        assert_eq!(lite.actions, eps[3].actions);
        let f = unlocked().open(&path).unwrap();
        assert_eq!(f.group("data").unwrap().attr("total").unwrap().read_scalar::<u64>().unwrap(), 120);
        let img = f.dataset("data/demo_0/obs/agentview_image").unwrap();
        assert_eq!(img.chunk(), Some(vec![1, 16, 16, 3]));
        assert_eq!(img.filters(), vec![hdf5::filters::Filter::Deflate(DEFAULT_GZIP_LEVEL)]);
    }

    /// A process started while a file is open must not inherit it: its copy of the descriptor
    /// would keep the file locked against the next writer until that process exits.
    #[cfg(target_os = "linux")]
    #[test]
    fn open_files_are_not_inherited_by_child_processes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("open.hdf5");
        let meta = DatasetMeta { name: "stack_d0".into(), env_args: serde_json::json!({}) };
        let inherited = |p: &Path| {
            let _spawning = SPAWNING.write().unwrap_or_else(|e| e.into_inner());
            let o = std::process::Command::new("ls").args(["-l", "/proc/self/fd"]).output().unwrap();
            String::from_utf8_lossy(&o.stdout).contains(p.to_str().unwrap())
        };
        let w = create(&path, &meta);
        assert!(!inherited(&path), "the writer's file leaked into a child");
        Box::new(w).finish().unwrap();
        let r = RobomimicReader::open(&path).unwrap();
        assert!(!inherited(&path), "the reader's file leaked into a child");
        drop(r);
    }

    fn expect_err(path: &Path, episode: &str, key: &str) {
        let mut r = RobomimicReader::open(path).unwrap();
        let e = r.read(0).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()) && e.contains(episode) && e.contains(key), "{e}");
    }

    #[test]
    fn bad_files_name_file_episode_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.hdf5");
        write(&path, 1);
        {
            let f = unlocked().open_rw(&path).unwrap();
            f.unlink("data/demo_0/actions").unwrap();
        }
        expect_err(&path, "demo_0", "`actions`: missing");

        write(&path, 1);
        {
            let f = unlocked().open_rw(&path).unwrap();
            f.unlink("data/demo_0/actions").unwrap();
            f.new_dataset::<f32>().shape([10, 6]).create("data/demo_0/actions").unwrap();
        }
        expect_err(&path, "demo_0", "`actions`: expected shape [T, 7], found [10, 6]");

        write(&path, 1);
        {
            let f = unlocked().open_rw(&path).unwrap();
            f.unlink("data/demo_0/obs/agentview_image").unwrap();
            f.new_dataset::<u8>().shape([9, 16, 16, 3]).create("data/demo_0/obs/agentview_image").unwrap();
        }
        expect_err(&path, "demo_0", "obs/agentview_image");

        // A file cut short is refused on open, naming the file.
        write(&path, 2);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let e = RobomimicReader::open(&path).and_then(|mut r| r.read(1)).unwrap_err().to_string();
        assert!(e.contains("bad.hdf5"), "{e}");

        let e = RobomimicReader::open(dir.path().join("missing.hdf5")).err().unwrap().to_string();
        assert!(e.contains("missing.hdf5"), "{e}");
    }
}
