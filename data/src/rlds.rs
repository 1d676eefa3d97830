//! RLDS datasets as TensorFlow Datasets stores them, which is what OpenVLA's
//! training reads (`tfds.builder(name, data_dir)`).
//!
//! A dataset is a folder (`<data_dir>/<name>/1.0.0/`) holding
//! `dataset_info.json`, `features.json` and shards
//! `<name>-train.tfrecord-XXXXX-of-NNNNN`. Each record is one episode as a
//! `tf.train.Example` whose step-level features hold all steps concatenated:
//!
//! | feature | kind | per episode |
//! |---|---|---|
//! | `steps/observation/<camera>` | bytes | T JPEG frames (PNG read too) |
//! | `steps/observation/<key>` | float | T × dim (low-dim observations) |
//! | `steps/observation/state` | float | T × dim proprio ([`Episode::proprio_state`]) |
//! | `steps/action` | float | T × 7, the simulator's convention (gripper -1 open); read also as a dict in RT-1's layout (`world_vector`, `rotation_delta`, `gripper_closedness_action`) |
//! | `steps/language_instruction` | bytes | T UTF-8 strings |
//! | `steps/is_first`, `is_last`, `is_terminal` | int64 | T (bools) |
//! | `steps/reward`, `steps/discount` | float | T |
//! | `episode_metadata/file_path` | bytes | the source demo name |
//! | `episode_metadata/attrs` | bytes | the episode's attrs as JSON (Vela's addition) |
//!
//! Camera names are used as feature names as they are; renaming
//! (`agentview` -> `image`) is [`crate::convert::remap_keys`]'s job.
//! Simulator states have no RLDS feature and are dropped. Episodes without
//! rewards get 1 on the last step (generated demos are successes) and
//! `is_terminal` follows `dones`, else the last step.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::example::{self, Example, Feature};
use crate::tfrecord::{self, RecordPos};
use crate::{DataError, DatasetMeta, Episode, EpisodeReader, EpisodeWriter, Frame, LowDim, Result, STATE_KEY};

pub const VERSION: &str = "1.0.0";
pub const SPLIT: &str = "train";
/// TensorFlow's `encode_jpeg` default, which TFDS uses.
pub const DEFAULT_JPEG_QUALITY: u8 = 95;
/// Start a new shard past this many bytes (TFDS aims for shards well under 1 GB).
pub const DEFAULT_SHARD_BYTES: u64 = 256 << 20;
/// Largest JPEG side the reader decodes.
pub const MAX_FRAME_SIDE: usize = 4096;
/// Vela's sidecar file: `env_args` has no place in TFDS's metadata.
const VELA_META: &str = "vela_meta.json";

const OBS: &str = "steps/observation/";
/// Where RT-1's layout keeps the instruction (text, not a camera).
const OBS_INSTRUCTION: &str = "steps/observation/natural_language_instruction";
const ACTION: &str = "steps/action";
const INSTRUCTION: &str = "steps/language_instruction";
const IS_FIRST: &str = "steps/is_first";
const IS_LAST: &str = "steps/is_last";
const IS_TERMINAL: &str = "steps/is_terminal";
const REWARD: &str = "steps/reward";
const DISCOUNT: &str = "steps/discount";
const FILE_PATH: &str = "episode_metadata/file_path";
const ATTRS: &str = "episode_metadata/attrs";

/// Writer settings.
#[derive(Clone, Debug)]
pub struct RldsOptions {
    pub jpeg_quality: u8,
    pub shard_bytes: u64,
}

impl Default for RldsOptions {
    fn default() -> Self {
        Self { jpeg_quality: DEFAULT_JPEG_QUALITY, shard_bytes: DEFAULT_SHARD_BYTES }
    }
}

/// Observation layout fixed by the first episode; later episodes must match
/// (TFDS declares one shape per feature).
#[derive(Clone, Debug, PartialEq)]
struct Schema {
    cameras: BTreeMap<String, (u32, u32)>,
    low_dim: BTreeMap<String, usize>,
}

impl Schema {
    fn of(ep: &Episode) -> Self {
        let cameras = ep
            .images
            .iter()
            .map(|(k, f)| (k.clone(), f.first().map_or((0, 0), |f| (f.width, f.height))))
            .collect();
        let mut low_dim: BTreeMap<String, usize> = ep.low_dim.iter().map(|(k, v)| (k.clone(), v.dim)).collect();
        if let Some(s) = ep.proprio_state() {
            low_dim.entry(STATE_KEY.to_string()).or_insert(s.dim);
        }
        Self { cameras, low_dim }
    }
}

/// Writes an RLDS dataset folder.
pub struct RldsWriter {
    dir: PathBuf,
    meta: DatasetMeta,
    opts: RldsOptions,
    shard: Option<(PathBuf, BufWriter<File>)>,
    shard_bytes: u64,
    /// Finished shards: temporary path and episode count.
    shards: Vec<(PathBuf, u64)>,
    num_bytes: u64,
    schema: Option<Schema>,
}

impl RldsWriter {
    /// Writes into `dir` (created if needed), which becomes the TFDS version
    /// folder; use [`dataset_dir`] for the `<data_dir>/<name>/1.0.0` layout.
    pub fn create(dir: impl AsRef<Path>, meta: &DatasetMeta, opts: RldsOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| DataError::Io { path: dir.clone(), source: e })?;
        if tfds_name(&meta.name) != meta.name {
            return Err(DataError::Other(format!(
                "RLDS dataset name `{}` is not snake_case: `tfds.builder(name)` (how OpenVLA opens datasets) \
                 looks for the snake_case form, and TFDS shard names split on '-'; use `{}`",
                meta.name,
                tfds_name(&meta.name)
            )));
        }
        Ok(Self {
            dir,
            meta: meta.clone(),
            opts,
            shard: None,
            shard_bytes: 0,
            shards: Vec::new(),
            num_bytes: 0,
            schema: None,
        })
    }

    fn close_shard(&mut self) -> Result<()> {
        if let Some((path, mut w)) = self.shard.take() {
            w.flush().map_err(io_err(&path))?;
        }
        Ok(())
    }

    fn to_example(&self, ep: &Episode, schema: &Schema) -> Result<Example> {
        let t = ep.len();
        let bad = |key: &str, msg: String| DataError::Invalid {
            path: self.dir.clone(),
            episode: ep.name.clone(),
            key: key.to_string(),
            msg,
        };
        let mut ex = Example::new();
        let mut cams = BTreeMap::new();
        for (cam, frames) in &ep.images {
            cams.insert(cam.clone(), frames.first().map_or((0, 0), |f| (f.width, f.height)));
            if frames.len() != t {
                return Err(bad(&format!("{OBS}{cam}"), format!("has {} frames for {t} steps", frames.len())));
            }
            let jpegs = encode_frames(frames, self.opts.jpeg_quality).map_err(|e| bad(&format!("{OBS}{cam}"), e))?;
            ex.insert(format!("{OBS}{cam}"), Feature::Bytes(jpegs));
        }
        let mut low_dim = BTreeMap::new();
        let mut put_low = |key: &str, ld: &LowDim, ex: &mut Example| -> Result<()> {
            if ld.steps() != t || ld.data.len() != t * ld.dim {
                return Err(bad(&format!("{OBS}{key}"), format!("has {} values, expected {t} × {}", ld.data.len(), ld.dim)));
            }
            low_dim.insert(key.to_string(), ld.dim);
            ex.insert(format!("{OBS}{key}"), Feature::Float(ld.data.iter().map(|&v| v as f32).collect()));
            Ok(())
        };
        for (key, ld) in &ep.low_dim {
            put_low(key, ld, &mut ex)?;
        }
        if !ep.low_dim.contains_key(STATE_KEY) {
            if let Some(s) = ep.proprio_state() {
                put_low(STATE_KEY, &s, &mut ex)?;
            }
        }
        let found = Schema { cameras: cams, low_dim };
        if &found != schema {
            return Err(bad(
                "steps/observation",
                format!("observation layout {found:?} differs from the first episode's {schema:?}"),
            ));
        }
        ex.insert(ACTION.into(), Feature::Float(ep.actions.iter().flatten().copied().collect()));
        let instr: Vec<Vec<u8>> = if ep.instructions.is_empty() {
            vec![Vec::new(); t]
        } else if ep.instructions.len() == t {
            ep.instructions.iter().map(|s| s.as_bytes().to_vec()).collect()
        } else {
            return Err(bad(INSTRUCTION, format!("{} instructions for {t} steps", ep.instructions.len())));
        };
        ex.insert(INSTRUCTION.into(), Feature::Bytes(instr));
        let flags = |f: &dyn Fn(usize) -> bool| Feature::Int64((0..t).map(|i| f(i) as i64).collect());
        ex.insert(IS_FIRST.into(), flags(&|i| i == 0));
        ex.insert(IS_LAST.into(), flags(&|i| i + 1 == t));
        let terminal = match ep.dones.len() {
            0 => flags(&|i| i + 1 == t),
            n if n == t => flags(&|i| ep.dones[i]),
            n => return Err(bad("dones", format!("{n} values for {t} steps"))),
        };
        ex.insert(IS_TERMINAL.into(), terminal);
        let reward = match ep.rewards.len() {
            0 => (0..t).map(|i| if i + 1 == t { 1.0 } else { 0.0 }).collect(),
            n if n == t => ep.rewards.clone(),
            n => return Err(bad("rewards", format!("{n} values for {t} steps"))),
        };
        ex.insert(REWARD.into(), Feature::Float(reward));
        ex.insert(DISCOUNT.into(), Feature::Float(vec![1.0; t]));
        ex.insert(FILE_PATH.into(), Feature::Bytes(vec![ep.name.as_bytes().to_vec()]));
        let attrs = serde_json::to_vec(&ep.attrs).map_err(|e| bad(ATTRS, e.to_string()))?;
        ex.insert(ATTRS.into(), Feature::Bytes(vec![attrs]));
        Ok(ex)
    }

    fn write_json(&self, name: &str, v: &serde_json::Value) -> Result<()> {
        let path = self.dir.join(name);
        let text = serde_json::to_string_pretty(v).map_err(|e| DataError::Other(e.to_string()))?;
        std::fs::write(&path, text).map_err(io_err(&path))
    }
}

impl EpisodeWriter for RldsWriter {
    fn append(&mut self, episode: &Episode) -> Result<()> {
        let schema = self.schema.get_or_insert_with(|| Schema::of(episode)).clone();
        let record = example::encode(&self.to_example(episode, &schema)?);
        let framed = tfrecord::framed_len(record.len());
        if self.shard.is_some() && self.shard_bytes + framed > self.opts.shard_bytes {
            self.close_shard()?;
        }
        if self.shard.is_none() {
            let path = self.dir.join(format!("{}-{SPLIT}.tfrecord-{:05}.partial", self.meta.name, self.shards.len()));
            let f = File::create(&path).map_err(io_err(&path))?;
            self.shard = Some((path.clone(), BufWriter::with_capacity(1 << 20, f)));
            self.shards.push((path, 0));
            self.shard_bytes = 0;
        }
        let Some((path, w)) = self.shard.as_mut() else { unreachable!("shard opened above") };
        tfrecord::write_record(w, &record).map_err(|e| DataError::Io { path: path.clone(), source: e })?;
        self.shard_bytes += framed;
        self.num_bytes += framed;
        if let Some(last) = self.shards.last_mut() {
            last.1 += 1;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.close_shard()?;
        let n = self.shards.len();
        for (i, (tmp, _)) in self.shards.iter().enumerate() {
            let final_path = self.dir.join(tfrecord::shard_name(&self.meta.name, SPLIT, i, n));
            std::fs::rename(tmp, &final_path).map_err(io_err(&final_path))?;
        }
        let lengths: Vec<String> = self.shards.iter().map(|(_, c)| c.to_string()).collect();
        let info = json!({
            "name": self.meta.name,
            "version": VERSION,
            "fileFormat": "tfrecord",
            "moduleName": format!("{0}.{0}_dataset_builder", self.meta.name),
            "description": "Written by Vela (vela-data RLDS writer).",
            "citation": "",
            "releaseNotes": {VERSION: "Initial release."},
            "splits": [{
                "name": SPLIT,
                "numBytes": self.num_bytes.to_string(),
                "shardLengths": lengths,
                "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
            }],
        });
        self.write_json("dataset_info.json", &info)?;
        let schema = self.schema.clone().unwrap_or(Schema { cameras: BTreeMap::new(), low_dim: BTreeMap::new() });
        self.write_json("features.json", &features_json(&schema))?;
        self.write_json(VELA_META, &json!({"name": self.meta.name, "env_args": self.meta.env_args}))
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DataError {
    let path = path.to_path_buf();
    move |e| DataError::Io { path: path.clone(), source: e }
}

/// The nearest name TFDS can open: `tfds.builder` converts CamelCase to
/// snake_case before looking in `data_dir` (`Stack_D4` -> `stack__d4`), so
/// only lowercase letters, digits and '_' survive, starting with a letter.
pub fn tfds_name(name: &str) -> String {
    let mut out: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert_str(0, "ds_");
    }
    out
}

/// `<data_dir>/<name>/1.0.0`, where `tfds.builder(name, data_dir=...)` looks.
pub fn dataset_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(name).join(VERSION)
}

/// JPEG-encodes frames, spread over the available cores (encoding is most of
/// a conversion's time).
fn encode_frames(frames: &[Frame], quality: u8) -> std::result::Result<Vec<Vec<u8>>, String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(frames.len().max(1));
    let per = frames.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> =
            frames.chunks(per).map(|chunk| s.spawn(move || chunk.iter().map(|f| encode_jpeg(f, quality)).collect::<Vec<_>>())).collect();
        let mut out = Vec::with_capacity(frames.len());
        for h in handles {
            for r in h.join().map_err(|_| "JPEG encoder thread panicked".to_string())? {
                out.push(r?);
            }
        }
        Ok(out)
    })
}

pub fn encode_jpeg(f: &Frame, quality: u8) -> std::result::Result<Vec<u8>, String> {
    let (w, h) = (u16::try_from(f.width), u16::try_from(f.height));
    let (Ok(w), Ok(h)) = (w, h) else { return Err(format!("{}x{} frame too large for JPEG", f.width, f.height)) };
    if f.rgb.len() != f.width as usize * f.height as usize * 3 {
        return Err(format!("frame has {} bytes, expected {}x{}x3", f.rgb.len(), f.width, f.height));
    }
    let mut out = Vec::with_capacity(f.rgb.len() / 8);
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode(&f.rgb, w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Decodes one camera frame as TFDS's `Image` feature stores it: JPEG, or
/// PNG (the `encoding_format` of many published RLDS datasets and TFDS's
/// default). Grayscale frames become RGB and alpha is dropped, since an
/// [`Episode`] holds RGB frames only.
pub fn decode_frame(bytes: &[u8]) -> std::result::Result<Frame, String> {
    if bytes.starts_with(PNG_SIGNATURE) {
        decode_png(bytes)
    } else {
        decode_jpeg(bytes)
    }
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

fn decode_jpeg(bytes: &[u8]) -> std::result::Result<Frame, String> {
    use zune_jpeg::zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
    // A corrupt header must not make us allocate gigabytes: RLDS frames are small.
    let opts = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(MAX_FRAME_SIDE)
        .set_max_height(MAX_FRAME_SIDE);
    // zune-jpeg's arithmetic can overflow on corrupt streams, which panics in builds with
    // overflow checks (the fuzzer's; found by it in session 24). A corrupt frame is an error
    // for its episode, never a crash, whatever the build.
    let decoded = std::panic::catch_unwind(|| {
        let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
        let rgb = d.decode().map_err(|e| format!("not a decodable JPEG: {e:?}"))?;
        Ok::<_, String>((rgb, d.dimensions()))
    });
    let (rgb, dims) = decoded.map_err(|_| "not a decodable JPEG: the decoder failed on corrupt data".to_string())??;
    let (w, h) = dims.ok_or("JPEG without dimensions")?;
    if rgb.len() != w * h * 3 {
        return Err(format!("decoded {} bytes for {w}x{h} RGB", rgb.len()));
    }
    Ok(Frame { width: w as u32, height: h as u32, rgb })
}

fn decode_png(bytes: &[u8]) -> std::result::Result<Frame, String> {
    let bad = |e: png::DecodingError| format!("not a decodable PNG: {e}");
    let mut d = png::Decoder::new(std::io::Cursor::new(bytes));
    // Palettes and sub-byte grays become 8-bit channels.
    d.set_transformations(png::Transformations::EXPAND);
    let head = d.read_header_info().map_err(bad)?;
    let (w, h) = (head.width as usize, head.height as usize);
    if w > MAX_FRAME_SIDE || h > MAX_FRAME_SIDE {
        return Err(format!("{w}x{h} PNG is larger than {MAX_FRAME_SIDE} pixels a side"));
    }
    if head.bit_depth == png::BitDepth::Sixteen {
        return Err(format!("16-bit PNG ({:?}, a depth map?) is not an RGB camera frame", head.color_type));
    }
    let mut reader = d.read_info().map_err(bad)?;
    let mut buf = vec![0; reader.output_buffer_size().ok_or("PNG too large")?];
    let out = reader.next_frame(&mut buf).map_err(bad)?;
    buf.truncate(out.buffer_size());
    let px = |channels: usize, f: fn(&[u8]) -> [u8; 3]| -> Vec<u8> { buf.chunks_exact(channels).flat_map(f).collect() };
    let rgb = match out.color_type {
        png::ColorType::Rgb => buf.clone(),
        png::ColorType::Rgba => px(4, |p| [p[0], p[1], p[2]]),
        png::ColorType::Grayscale => px(1, |p| [p[0]; 3]),
        png::ColorType::GrayscaleAlpha => px(2, |p| [p[0]; 3]),
        png::ColorType::Indexed => return Err("PNG palette was not expanded".into()),
    };
    if rgb.len() != w * h * 3 {
        return Err(format!("decoded {} bytes for {w}x{h} RGB", rgb.len()));
    }
    Ok(Frame { width: w as u32, height: h as u32, rgb })
}

fn features_json(schema: &Schema) -> serde_json::Value {
    const P: &str = "tensorflow_datasets.core.features.";
    let dict = |features: serde_json::Map<String, serde_json::Value>| {
        json!({"pythonClassName": format!("{P}features_dict.FeaturesDict"), "featuresDict": {"features": features}})
    };
    let tensor = |dims: &[usize], dtype: &str, doc: &str| {
        let dims: Vec<String> = dims.iter().map(usize::to_string).collect();
        json!({"pythonClassName": format!("{P}tensor_feature.Tensor"),
               "tensor": {"shape": {"dimensions": dims}, "dtype": dtype, "encoding": "none"}, "description": doc})
    };
    let scalar = |dtype: &str, doc: &str| {
        json!({"pythonClassName": format!("{P}scalar.Scalar"),
               "tensor": {"shape": {}, "dtype": dtype, "encoding": "none"}, "description": doc})
    };
    let text = |doc: &str| json!({"pythonClassName": format!("{P}text_feature.Text"), "text": {}, "description": doc});
    let mut obs = serde_json::Map::new();
    for (cam, (w, h)) in &schema.cameras {
        let dims = [h.to_string(), w.to_string(), "3".to_string()];
        obs.insert(cam.clone(), json!({"pythonClassName": format!("{P}image_feature.Image"),
            "image": {"shape": {"dimensions": dims}, "dtype": "uint8", "encodingFormat": "jpeg"},
            "description": format!("{cam} camera RGB observation.")}));
    }
    for (key, dim) in &schema.low_dim {
        obs.insert(key.clone(), tensor(&[*dim], "float32", &format!("{key} observation.")));
    }
    let mut steps = serde_json::Map::new();
    steps.insert("observation".into(), dict(obs));
    steps.insert("action".into(), tensor(&[7], "float32", "End-effector delta pose (6) and gripper (-1 open, +1 close)."));
    steps.insert("language_instruction".into(), text("Language instruction."));
    steps.insert("is_first".into(), scalar("bool", "True on first step of the episode."));
    steps.insert("is_last".into(), scalar("bool", "True on last step of the episode."));
    steps.insert("is_terminal".into(), scalar("bool", "True on last step of the episode if it is a terminal step."));
    steps.insert("reward".into(), scalar("float32", "Reward, 1 on the final step of a successful demo."));
    steps.insert("discount".into(), scalar("float32", "Discount, always 1."));
    let mut meta = serde_json::Map::new();
    meta.insert("file_path".into(), text("Source demo."));
    meta.insert("attrs".into(), text("Source demo attributes as JSON."));
    let mut top = serde_json::Map::new();
    top.insert("steps".into(), json!({"pythonClassName": format!("{P}dataset_feature.Dataset"),
        "sequence": {"feature": dict(steps), "length": "-1"}}));
    top.insert("episode_metadata".into(), dict(meta));
    dict(top)
}

/// Reads an RLDS folder one episode (record) at a time; opening only indexes
/// record offsets.
pub struct RldsReader {
    dir: PathBuf,
    meta: DatasetMeta,
    shards: Vec<(PathBuf, Option<File>)>,
    /// (shard, position) per episode.
    records: Vec<(usize, RecordPos)>,
}

impl RldsReader {
    /// `path` is the version folder (with `dataset_info.json`) or a folder
    /// above it holding exactly one dataset.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let dir = find_dataset_dir(path.as_ref())?;
        let info_path = dir.join("dataset_info.json");
        let fmt = |msg: String| DataError::Format { path: info_path.clone(), msg };
        let text = std::fs::read_to_string(&info_path).map_err(|e| DataError::Io { path: info_path.clone(), source: e })?;
        let info: serde_json::Value = serde_json::from_str(&text).map_err(|e| fmt(format!("not JSON: {e}")))?;
        let name = info["name"].as_str().ok_or_else(|| fmt("no `name`".into()))?.to_string();
        let split = info["splits"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == SPLIT))
            .ok_or_else(|| fmt(format!("no `{SPLIT}` split")))?;
        let lengths: Vec<u64> = split["shardLengths"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().and_then(|s| s.parse().ok()).or(v.as_u64())).collect())
            .unwrap_or_default();
        let mut shard_files: Vec<(usize, usize, PathBuf)> = std::fs::read_dir(&dir)
            .map_err(|e| DataError::Io { path: dir.clone(), source: e })?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().into_owned();
                let (ds, sp, i, n) = tfrecord::parse_shard_name(&file)?;
                (ds == name && sp == SPLIT).then(|| (i, n, e.path()))
            })
            .collect();
        shard_files.sort();
        let n = shard_files.len();
        if shard_files.iter().enumerate().any(|(k, (i, count, _))| *i != k || *count != n) {
            return Err(fmt(format!("shard files are incomplete: found {n} `{name}-{SPLIT}.tfrecord-*` files with indices {:?}",
                shard_files.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>())));
        }
        if !lengths.is_empty() && lengths.len() != n {
            return Err(fmt(format!("dataset_info lists {} shards, the folder has {n}", lengths.len())));
        }
        let mut records = Vec::new();
        let mut shards = Vec::new();
        for (k, (_, _, path)) in shard_files.into_iter().enumerate() {
            let idx = tfrecord::index_file(&path)?;
            if let Some(&want) = lengths.get(k) {
                if want != idx.len() as u64 {
                    return Err(DataError::Format {
                        path,
                        msg: format!("holds {} episodes, dataset_info.json says {want} (truncated?)", idx.len()),
                    });
                }
            }
            records.extend(idx.into_iter().map(|p| (k, p)));
            shards.push((path, None));
        }
        let env_args = std::fs::read_to_string(dir.join(VELA_META))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|v| v["env_args"].clone())
            .unwrap_or(serde_json::Value::Null);
        Ok(Self { dir, meta: DatasetMeta { name, env_args }, shards, records })
    }

    /// The version folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Shard files in order.
    pub fn shard_paths(&self) -> impl Iterator<Item = &Path> {
        self.shards.iter().map(|(p, _)| p.as_path())
    }

    /// The raw Example of episode `index`.
    pub fn read_example(&mut self, index: usize) -> Result<(PathBuf, Example)> {
        let &(shard, pos) = self.records.get(index).ok_or_else(|| {
            DataError::Format { path: self.dir.clone(), msg: format!("episode index {index} out of range ({})", self.records.len()) }
        })?;
        let (path, file) = &mut self.shards[shard];
        if file.is_none() {
            *file = Some(File::open(&*path).map_err(|e| DataError::Io { path: path.clone(), source: e })?);
        }
        let f = file.as_mut().expect("opened above");
        let data = tfrecord::read_record(f, path, index, pos)?;
        let ex = example::decode(&data)
            .map_err(|e| DataError::Format { path: path.clone(), msg: format!("episode {index}: bad tf.train.Example: {e}") })?;
        Ok((path.clone(), ex))
    }

    fn read_episode(&mut self, index: usize, with_images: bool) -> Result<Episode> {
        let (path, ex) = self.read_example(index)?;
        episode_from_example(&ex, index, with_images)
            .map_err(|(key, msg)| DataError::Invalid { path, episode: format!("episode {index}"), key, msg })
    }
}

impl EpisodeReader for RldsReader {
    fn meta(&self) -> &DatasetMeta {
        &self.meta
    }
    fn len(&self) -> usize {
        self.records.len()
    }
    fn read(&mut self, index: usize) -> Result<Episode> {
        self.read_episode(index, true)
    }
    fn read_lowdim(&mut self, index: usize) -> Result<Episode> {
        self.read_episode(index, false)
    }
}

fn find_dataset_dir(path: &Path) -> Result<PathBuf> {
    if path.join("dataset_info.json").is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        return Err(DataError::Format { path: path.into(), msg: "not an RLDS folder (no dataset_info.json)".into() });
    }
    // <data_dir>/<name>/<version>/ or <name>/<version>/
    let mut found = Vec::new();
    for depth1 in std::fs::read_dir(path).map_err(|e| DataError::Io { path: path.into(), source: e })?.flatten() {
        let p = depth1.path();
        if p.join("dataset_info.json").is_file() {
            found.push(p.clone());
        }
        if let Ok(rd) = std::fs::read_dir(&p) {
            found.extend(rd.flatten().map(|e| e.path()).filter(|q| q.join("dataset_info.json").is_file()));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(DataError::Format { path: path.into(), msg: "no dataset_info.json here or two levels below".into() }),
        _ => Err(DataError::Format { path: path.into(), msg: format!("several datasets below: {found:?}; name one") }),
    }
}

type KeyError = (String, String);

/// Parts of a dict-valued action, in the order of Vela's 7-D end-effector action, for the
/// layout RT-1 (`fractal20220817_data`) and the Open X-Embodiment datasets derived from it
/// use: `world_vector` (3), `rotation_delta` (3), `gripper_closedness_action` (1, +1 closes,
/// as Vela's convention). Other keys of such a dict (base motion, `terminate_episode`) are not
/// end-effector actions and are left out.
const DICT_ACTION_PARTS: [(&str, usize); 3] = [("world_vector", 3), ("rotation_delta", 3), ("gripper_closedness_action", 1)];

/// A dict-valued `steps/action` (TFDS flattens it into `steps/action/<key>` features) as
/// T × 7 values, or why it cannot be one.
fn dict_action(ex: &Example) -> std::result::Result<Vec<f32>, String> {
    let prefix = format!("{ACTION}/");
    let mut present: Vec<&str> = ex.keys().filter_map(|k| k.strip_prefix(prefix.as_str())).collect();
    present.sort_unstable();
    if present.is_empty() {
        return Err("missing".into());
    }
    let mut parts = Vec::new();
    for (key, width) in DICT_ACTION_PARTS {
        match ex.get(&format!("{prefix}{key}")) {
            Some(Feature::Float(v)) if v.len() % width == 0 => parts.push((v, width)),
            Some(Feature::Float(v)) => return Err(format!("`{key}` has {} values, not a multiple of {width}", v.len())),
            Some(f) => return Err(format!("`{key}` is {}, expected float_list", f.kind())),
            None => {
                return Err(format!(
                    "is a dict with keys {present:?}; Vela reads dict actions with the end-effector keys {:?} (RT-1's layout)",
                    DICT_ACTION_PARTS.map(|p| p.0)
                ))
            }
        }
    }
    let t = parts[0].0.len() / parts[0].1;
    if let Some((v, w)) = parts.iter().find(|(v, w)| v.len() / w != t) {
        return Err(format!("dict parts disagree on the step count ({} vs {t}, {} values of width {w})", v.len() / w, v.len()));
    }
    let mut out = Vec::with_capacity(t * 7);
    for step in 0..t {
        for (v, w) in &parts {
            out.extend_from_slice(&v[step * w..(step + 1) * w]);
        }
    }
    Ok(out)
}

fn episode_from_example(ex: &Example, index: usize, with_images: bool) -> std::result::Result<Episode, KeyError> {
    let err = |key: &str, msg: String| (key.to_string(), msg);
    let get = |key: &str| ex.get(key).ok_or_else(|| err(key, "missing".into()));
    let floats = |key: &str| match get(key)? {
        Feature::Float(v) => Ok(v),
        f => Err(err(key, format!("expected float_list, found {}", f.kind()))),
    };
    let bytes = |key: &str| match get(key)? {
        Feature::Bytes(v) => Ok(v),
        f => Err(err(key, format!("expected bytes_list, found {}", f.kind()))),
    };
    let ints = |key: &str| match get(key)? {
        Feature::Int64(v) => Ok(v),
        f => Err(err(key, format!("expected int64_list, found {}", f.kind()))),
    };
    let a = match ex.get(ACTION) {
        Some(_) => floats(ACTION)?.clone(),
        None => dict_action(ex).map_err(|msg| err(ACTION, msg))?,
    };
    // `is_first` has one value per step whatever the action size, so an 8-D
    // or 14-D action is named as such instead of passing for 7-D.
    let t = match ex.get(IS_FIRST) {
        Some(Feature::Int64(v)) => v.len(),
        _ => a.len() / 7,
    };
    if a.len() != t * 7 {
        let per = if t > 0 { format!("{:.3}", a.len() as f64 / t as f64) } else { "?".into() };
        return Err(err(ACTION, format!("{} values for {t} steps ({per} per step); Vela's episodes have 7-D actions", a.len())));
    }
    let actions = a.chunks_exact(7).map(|c| std::array::from_fn(|i| c[i])).collect();
    let check = |key: &str, n: usize| if n == t { Ok(()) } else { Err(err(key, format!("has {n} values for {t} steps"))) };

    let instructions = match ex.get(INSTRUCTION) {
        Some(_) => {
            let b = bytes(INSTRUCTION)?;
            check(INSTRUCTION, b.len())?;
            b.iter()
                .map(|s| String::from_utf8(s.clone()).map_err(|_| err(INSTRUCTION, "not UTF-8".into())))
                .collect::<std::result::Result<Vec<_>, _>>()?
        }
        // RT-1 and the datasets derived from it keep the instruction among the observations.
        None => match ex.get(OBS_INSTRUCTION) {
            Some(_) => {
                let b = bytes(OBS_INSTRUCTION)?;
                check(OBS_INSTRUCTION, b.len())?;
                b.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect()
            }
            None => Vec::new(),
        },
    };
    let rewards = match ex.get(REWARD) {
        Some(_) => {
            let r = floats(REWARD)?;
            check(REWARD, r.len())?;
            r.clone()
        }
        None => Vec::new(),
    };
    let dones = match ex.get(IS_TERMINAL) {
        Some(_) => {
            let d = ints(IS_TERMINAL)?;
            check(IS_TERMINAL, d.len())?;
            d.iter().map(|&v| v != 0).collect()
        }
        None => Vec::new(),
    };
    let mut images = BTreeMap::new();
    let mut low_dim = BTreeMap::new();
    for (key, f) in ex.range(OBS.to_string()..) {
        let Some(name) = key.strip_prefix(OBS) else { break };
        if key == OBS_INSTRUCTION {
            continue;
        }
        match f {
            Feature::Bytes(frames) => {
                check(key, frames.len())?;
                if !with_images {
                    continue;
                }
                let decoded = frames
                    .iter()
                    .enumerate()
                    .map(|(i, b)| decode_frame(b).map_err(|e| err(key, format!("frame {i}: {e}"))))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                images.insert(name.to_string(), decoded);
            }
            Feature::Float(v) => {
                low_dim.insert(name.to_string(), lowdim(key, v.iter().map(|&x| x as f64).collect(), t)?);
            }
            Feature::Int64(v) => {
                low_dim.insert(name.to_string(), lowdim(key, v.iter().map(|&x| x as f64).collect(), t)?);
            }
        }
    }
    let name = match ex.get(FILE_PATH) {
        Some(Feature::Bytes(v)) if !v.is_empty() => String::from_utf8_lossy(&v[0]).into_owned(),
        _ => format!("demo_{index}"),
    };
    let attrs = match ex.get(ATTRS) {
        Some(Feature::Bytes(v)) if !v.is_empty() => {
            serde_json::from_slice(&v[0]).map_err(|e| err(ATTRS, format!("not a JSON object: {e}")))?
        }
        _ => BTreeMap::new(),
    };
    Ok(Episode { name, actions, images, low_dim, states: LowDim::default(), rewards, dones, instructions, attrs })
}

fn lowdim(key: &str, data: Vec<f64>, t: usize) -> std::result::Result<LowDim, KeyError> {
    if t == 0 || data.len() % t != 0 {
        return Err((key.to_string(), format!("{} values is not a whole number of values per step for {t} steps", data.len())));
    }
    Ok(LowDim { dim: data.len() / t, data })
}

/// Decodes one serialised episode record end to end, as [`RldsReader`] does
/// after framing: the fuzz target's entry point.
pub fn decode_episode(record: &[u8]) -> std::result::Result<Episode, String> {
    let ex = example::decode(record)?;
    episode_from_example(&ex, 0, true).map_err(|(k, m)| format!("{k}: {m}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32, color: png::ColorType, depth: png::BitDepth, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        enc.write_header().unwrap().write_image_data(data).unwrap();
        out
    }

    #[test]
    fn png_frames_decode_to_rgb() {
        let rgb: Vec<u8> = (0..2 * 3 * 3).map(|v| v as u8 * 13).collect();
        let f = decode_frame(&png(2, 3, png::ColorType::Rgb, png::BitDepth::Eight, &rgb)).unwrap();
        assert_eq!((f.width, f.height, &f.rgb), (2, 3, &rgb));

        let rgba = [1, 2, 3, 255, 4, 5, 6, 0];
        let f = decode_frame(&png(2, 1, png::ColorType::Rgba, png::BitDepth::Eight, &rgba)).unwrap();
        assert_eq!(f.rgb, [1, 2, 3, 4, 5, 6]);

        let f = decode_frame(&png(2, 1, png::ColorType::Grayscale, png::BitDepth::Eight, &[7, 200])).unwrap();
        assert_eq!(f.rgb, [7, 7, 7, 200, 200, 200]);

        let depth = png(1, 1, png::ColorType::Grayscale, png::BitDepth::Sixteen, &[1, 2]);
        assert!(decode_frame(&depth).unwrap_err().contains("16-bit"));
        let mut cut = png(2, 3, png::ColorType::Rgb, png::BitDepth::Eight, &rgb);
        cut.truncate(cut.len() - 20);
        assert!(decode_frame(&cut).unwrap_err().contains("PNG"));
    }

    #[test]
    fn names_are_what_tfds_builder_looks_up() {
        assert_eq!(tfds_name("Stack_D4"), "stack_d4");
        assert_eq!(tfds_name("my-data.v2"), "my_data_v2");
        assert_eq!(tfds_name("4stack"), "ds_4stack");
        assert_eq!(tfds_name(""), "ds_");
        let dir = tempfile::tempdir().unwrap();
        let meta = |name: &str| DatasetMeta { name: name.into(), env_args: serde_json::Value::Null };
        let err = RldsWriter::create(dir.path(), &meta("Stack_D4"), RldsOptions::default()).err().unwrap();
        assert!(err.to_string().contains("use `stack_d4`"), "{err}");
        assert!(RldsWriter::create(dir.path(), &meta("stack_d4"), RldsOptions::default()).is_ok());
    }

    #[test]
    fn action_size_is_checked_against_the_step_count() {
        let mut ex = Example::new();
        ex.insert(ACTION.into(), Feature::Float(vec![0.0; 2 * 14]));
        ex.insert(IS_FIRST.into(), Feature::Int64(vec![1, 0]));
        let e = decode_episode(&example::encode(&ex)).unwrap_err();
        assert!(e.contains("steps/action") && e.contains("28 values for 2 steps (14.000 per step)"), "{e}");
        ex.insert(ACTION.into(), Feature::Float(vec![0.5; 2 * 7]));
        assert_eq!(decode_episode(&example::encode(&ex)).unwrap().actions, vec![[0.5; 7]; 2]);
    }

    #[test]
    fn dict_actions_in_rt1_layout_become_7d() {
        let mut ex = Example::new();
        ex.insert(IS_FIRST.into(), Feature::Int64(vec![1, 0]));
        ex.insert(format!("{ACTION}/world_vector"), Feature::Float(vec![0.1, 0.2, 0.3, 1.1, 1.2, 1.3]));
        ex.insert(format!("{ACTION}/rotation_delta"), Feature::Float(vec![0.4, 0.5, 0.6, 1.4, 1.5, 1.6]));
        ex.insert(format!("{ACTION}/base_displacement_vector"), Feature::Float(vec![9.0; 4]));
        ex.insert(format!("{ACTION}/terminate_episode"), Feature::Int64(vec![1, 0, 0, 0, 1, 0]));
        // Without the gripper part the error names what is there and what is needed.
        let e = decode_episode(&example::encode(&ex)).unwrap_err();
        assert!(e.contains("terminate_episode") && e.contains("gripper_closedness_action"), "{e}");
        ex.insert(format!("{ACTION}/gripper_closedness_action"), Feature::Float(vec![1.0, -1.0]));
        ex.insert(format!("{OBS}natural_language_instruction"), Feature::Bytes(vec![b"pick rxbar chocolate".to_vec(); 2]));
        let ep = decode_episode(&example::encode(&ex)).unwrap();
        assert_eq!(ep.actions, vec![[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0], [1.1, 1.2, 1.3, 1.4, 1.5, 1.6, -1.0]]);
        assert_eq!(ep.instructions, vec!["pick rxbar chocolate"; 2], "the instruction, not a camera");
        assert!(ep.images.is_empty());
        // Parts that disagree on the step count are an error, not a silent shift.
        ex.insert(format!("{ACTION}/rotation_delta"), Feature::Float(vec![0.0; 9]));
        let e = decode_episode(&example::encode(&ex)).unwrap_err();
        assert!(e.contains("disagree"), "{e}");
    }

    #[test]
    fn jpeg_frames_still_decode() {
        let f = Frame { width: 8, height: 8, rgb: vec![128; 8 * 8 * 3] };
        let back = decode_frame(&encode_jpeg(&f, DEFAULT_JPEG_QUALITY).unwrap()).unwrap();
        assert_eq!((back.width, back.height), (8, 8));
        assert!(back.rgb.iter().all(|&v| v.abs_diff(128) <= 2));
    }
}
