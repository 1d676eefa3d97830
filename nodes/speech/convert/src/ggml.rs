//! whisper.cpp's model file ("ggml" format), written from a CTranslate2 Whisper model, and
//! checked before whisper.cpp is given one.
//!
//! No Whisper model in this format can be fetched here; the CT2 files setup installs hold
//! the same weights, so they are renamed, the fused projections split and the layout
//! changed to the one whisper.cpp's loader reads. The format (all little endian):
//!
//! - `u32` magic `0x67676d6c`;
//! - eleven `i32` hyper-parameters (vocabulary size, audio context/width/heads/layers, text
//!   context/width/heads/layers, mel bands, weight type: 1 = f16);
//! - the mel filter bank: `i32` bands, `i32` FFT bins (201), then bands × bins `f32`;
//! - the ordinary tokens as raw bytes: `i32` count, then per token a `u32` length and the bytes
//!   (whisper.cpp numbers the special tokens itself, from the vocabulary size);
//! - tensors until the end of the file: `i32` rank, `i32` name length, `i32` type (0 f32,
//!   1 f16), `i32` dims fastest-varying first, the name, then the data.
//!
//! whisper.cpp aborts the process on some malformed input, so [`inspect`] walks a file's
//! structure (every tensor present with its shape and type, nothing cut off) before the
//! backend loads it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::ct2::{Ct2DType, Ct2Error, Ct2Model, Variable};
use crate::tokenizer::{Tokenizer, TokenizerError};

pub const MAGIC: u32 = 0x6767_6d6c;
/// FFT bins of Whisper's 400-point STFT, the width of the mel filter bank.
pub const N_FFT_BINS: usize = 201;
/// The name setup gives the converted file, next to the CT2 `model.bin`.
pub const FILE_NAME: &str = "ggml-f16.bin";

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: {source}")]
    Ct2 {
        path: String,
        #[source]
        source: Ct2Error,
    },
    #[error("{path}: {source}")]
    Tokenizer {
        path: String,
        #[source]
        source: TokenizerError,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The input is readable but is not a Whisper model this format can hold.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// Element types of the tensors whisper.cpp reads (ggml's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
}

impl GgmlType {
    pub fn size(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 => 2,
        }
    }
    fn from_code(c: i32) -> Option<Self> {
        match c {
            0 => Some(GgmlType::F32),
            1 => Some(GgmlType::F16),
            _ => None,
        }
    }
}

/// whisper.cpp's hyper-parameters, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hparams {
    pub n_vocab: i32,
    pub n_audio_ctx: i32,
    pub n_audio_state: i32,
    pub n_audio_head: i32,
    pub n_audio_layer: i32,
    pub n_text_ctx: i32,
    pub n_text_state: i32,
    pub n_text_head: i32,
    pub n_text_layer: i32,
    pub n_mels: i32,
    /// 1: matrices in f16 (the only kind this converter writes).
    pub ftype: i32,
}

impl Hparams {
    fn fields(&self) -> [i32; 11] {
        [
            self.n_vocab,
            self.n_audio_ctx,
            self.n_audio_state,
            self.n_audio_head,
            self.n_audio_layer,
            self.n_text_ctx,
            self.n_text_state,
            self.n_text_head,
            self.n_text_layer,
            self.n_mels,
            self.ftype,
        ]
    }

    /// whisper.cpp tells multilingual models from English-only ones by vocabulary size.
    pub fn multilingual(&self) -> bool {
        self.n_vocab >= 51865
    }

    /// The special ids whisper.cpp assumes for this vocabulary size: (end of text, start of
    /// transcript, transcribe, no timestamps). The tokenizer must agree, or whisper.cpp would
    /// prompt and stop with the wrong tokens.
    pub fn special_ids(&self) -> (u32, u32, u32, u32) {
        if self.multilingual() {
            let languages = self.n_vocab - 51765 - 1;
            let dt = (languages - 98) as u32;
            (50257, 50258, 50358 + dt, 50362 + dt)
        } else {
            (50256, 50257, 50358, 50362)
        }
    }
}

/// What whisper.cpp expects: every tensor's name, row-major shape and type.
pub fn layout(h: &Hparams) -> Vec<(String, Vec<usize>, GgmlType)> {
    use GgmlType::{F16, F32};
    let d = h.n_audio_state as usize;
    let dt = h.n_text_state as usize;
    let mut v: Vec<(String, Vec<usize>, GgmlType)> = vec![
        ("encoder.positional_embedding".into(), vec![h.n_audio_ctx as usize, d], F32),
        ("encoder.conv1.weight".into(), vec![d, h.n_mels as usize, 3], F16),
        ("encoder.conv1.bias".into(), vec![d, 1], F32),
        ("encoder.conv2.weight".into(), vec![d, d, 3], F16),
        ("encoder.conv2.bias".into(), vec![d, 1], F32),
        ("encoder.ln_post.weight".into(), vec![d], F32),
        ("encoder.ln_post.bias".into(), vec![d], F32),
        ("decoder.positional_embedding".into(), vec![h.n_text_ctx as usize, dt], F32),
        ("decoder.token_embedding.weight".into(), vec![h.n_vocab as usize, dt], F16),
        ("decoder.ln.weight".into(), vec![dt], F32),
        ("decoder.ln.bias".into(), vec![dt], F32),
    ];
    let block = |v: &mut Vec<(String, Vec<usize>, GgmlType)>, p: &str, d: usize, cross: bool| {
        let mut attn = |a: &str| {
            v.push((format!("{p}.{a}_ln.weight"), vec![d], F32));
            v.push((format!("{p}.{a}_ln.bias"), vec![d], F32));
            v.push((format!("{p}.{a}.query.weight"), vec![d, d], F16));
            v.push((format!("{p}.{a}.query.bias"), vec![d], F32));
            v.push((format!("{p}.{a}.key.weight"), vec![d, d], F16));
            v.push((format!("{p}.{a}.value.weight"), vec![d, d], F16));
            v.push((format!("{p}.{a}.value.bias"), vec![d], F32));
            v.push((format!("{p}.{a}.out.weight"), vec![d, d], F16));
            v.push((format!("{p}.{a}.out.bias"), vec![d], F32));
        };
        attn("attn");
        if cross {
            attn("cross_attn");
        }
        v.push((format!("{p}.mlp_ln.weight"), vec![d], F32));
        v.push((format!("{p}.mlp_ln.bias"), vec![d], F32));
        v.push((format!("{p}.mlp.0.weight"), vec![4 * d, d], F16));
        v.push((format!("{p}.mlp.0.bias"), vec![4 * d], F32));
        v.push((format!("{p}.mlp.2.weight"), vec![d, 4 * d], F16));
        v.push((format!("{p}.mlp.2.bias"), vec![d], F32));
    };
    for i in 0..h.n_audio_layer {
        block(&mut v, &format!("encoder.blocks.{i}"), d, false);
    }
    for i in 0..h.n_text_layer {
        block(&mut v, &format!("decoder.blocks.{i}"), dt, true);
    }
    v
}

/// The input files of one conversion.
#[derive(Debug, Clone)]
pub struct Sources {
    /// CTranslate2 `model.bin` (WhisperSpec).
    pub model_bin: PathBuf,
    /// The HF `tokenizer.json` next to it: the vocabulary's bytes.
    pub tokenizer_json: PathBuf,
    /// Whisper's mel filter bank as raw little-endian f32, bands × 201.
    pub mel_filters: PathBuf,
}

/// What a conversion wrote, or what [`inspect`] found.
#[derive(Debug, Clone)]
pub struct Summary {
    pub hparams: Hparams,
    /// Ordinary tokens in the vocabulary section.
    pub tokens: usize,
    /// Tensor name → (row-major shape, type).
    pub tensors: BTreeMap<String, (Vec<usize>, GgmlType)>,
    pub bytes: u64,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ConvertError + '_ {
    move |e| ConvertError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

fn invalid(path: &Path, message: impl Into<String>) -> ConvertError {
    ConvertError::Invalid {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Where a ggml tensor's values come from: rows `rows` of a CT2 variable (fused projections
/// are split by row ranges), as `ty`.
struct Plan<'a> {
    name: String,
    shape: Vec<usize>,
    ty: GgmlType,
    var: &'a Variable,
    /// First element and element count within the variable.
    start: usize,
    len: usize,
}

/// Converts a CTranslate2 Whisper model to whisper.cpp's file at `out` (written next to it
/// under a temporary name, then renamed: a crash never leaves a half file under `out`).
pub fn convert(src: &Sources, out: &Path) -> Result<Summary, ConvertError> {
    let mp = &src.model_bin;
    let ct2 = Ct2Model::load(mp).map_err(|e| ConvertError::Ct2 {
        path: mp.display().to_string(),
        source: e,
    })?;
    if ct2.spec != "WhisperSpec" {
        return Err(invalid(mp, format!("holds a {}, not a Whisper model", ct2.spec)));
    }
    let get = |name: &str| {
        ct2.get(name).map_err(|e| ConvertError::Ct2 {
            path: mp.display().to_string(),
            source: e,
        })
    };
    let count_layers = |side: &str| {
        (0..)
            .take_while(|i| {
                ct2.variables
                    .contains_key(&format!("{side}/layer_{i}/ffn/linear_0/weight"))
            })
            .count() as i32
    };
    let dim = |name: &str, axis: usize| -> Result<i32, ConvertError> {
        let v = get(name)?;
        v.shape
            .get(axis)
            .map(|&n| n as i32)
            .ok_or_else(|| invalid(mp, format!("{name} has shape {:?}", v.shape)))
    };
    let scalar = |name: &str| -> Result<i32, ConvertError> {
        let v = get(name)?;
        v.to_f32()
            .first()
            .map(|&x| x as i32)
            .ok_or_else(|| invalid(mp, format!("{name} is empty")))
    };
    let h = Hparams {
        n_vocab: dim("decoder/embeddings/weight", 0)?,
        n_audio_ctx: dim("encoder/position_encodings/encodings", 0)?,
        n_audio_state: dim("encoder/conv1/weight", 0)?,
        n_audio_head: scalar("encoder/num_heads")?,
        n_audio_layer: count_layers("encoder"),
        n_text_ctx: dim("decoder/position_encodings/encodings", 0)?,
        n_text_state: dim("decoder/embeddings/weight", 1)?,
        n_text_head: scalar("decoder/num_heads")?,
        n_text_layer: count_layers("decoder"),
        n_mels: dim("encoder/conv1/weight", 1)?,
        ftype: 1,
    };
    if h.n_audio_state != h.n_text_state {
        return Err(invalid(mp, format!(
            "encoder width {} differs from decoder width {}; whisper.cpp needs them equal",
            h.n_audio_state, h.n_text_state
        )));
    }
    if h.n_audio_layer == 0 || h.n_text_layer == 0 {
        return Err(invalid(mp, "no encoder or decoder layers found"));
    }
    for (what, heads) in [("encoder", h.n_audio_head), ("decoder", h.n_text_head)] {
        if heads <= 0 || h.n_audio_state % heads != 0 {
            return Err(invalid(mp, format!("{what}: {heads} heads do not divide width {}", h.n_audio_state)));
        }
    }

    // Tokens: whisper.cpp stores only the ordinary ones and numbers the special tokens
    // itself from the vocabulary size, so both numberings must agree.
    let tp = &src.tokenizer_json;
    let tok = Tokenizer::load(tp).map_err(|e| ConvertError::Tokenizer {
        path: tp.display().to_string(),
        source: e,
    })?;
    let (eot, sot, transcribe, no_ts) = h.special_ids();
    for (token, want) in [
        ("<|endoftext|>", eot),
        ("<|startoftranscript|>", sot),
        ("<|transcribe|>", transcribe),
        ("<|notimestamps|>", no_ts),
    ] {
        match tok.special(token) {
            Some(id) if id == want => {}
            got => {
                return Err(invalid(tp, format!(
                    "{token} is {got:?}, but whisper.cpp takes it to be {want} for a vocabulary of {}",
                    h.n_vocab
                )))
            }
        }
    }
    if tok.first_special() != eot {
        return Err(invalid(tp, format!(
            "first special token is {}, expected {eot}",
            tok.first_special()
        )));
    }

    // Mel filters: raw f32, bands × 201.
    let fp = &src.mel_filters;
    let filters = std::fs::read(fp).map_err(io_err(fp))?;
    let want = h.n_mels as usize * N_FFT_BINS * 4;
    if filters.len() != want {
        return Err(invalid(fp, format!(
            "{} bytes, expected {want} ({} bands x {N_FFT_BINS} f32)",
            filters.len(),
            h.n_mels
        )));
    }

    let plans = plan(&ct2, &h, mp)?;

    let tmp = out.with_extension("bin.part");
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let werr = io_err(&tmp);
    let put = |w: &mut BufWriter<File>, b: &[u8]| w.write_all(b).map_err(&werr);
    put(&mut w, &MAGIC.to_le_bytes())?;
    for f in h.fields() {
        put(&mut w, &f.to_le_bytes())?;
    }
    put(&mut w, &h.n_mels.to_le_bytes())?;
    put(&mut w, &(N_FFT_BINS as i32).to_le_bytes())?;
    put(&mut w, &filters)?;
    put(&mut w, &(eot as i32).to_le_bytes())?;
    for id in 0..eot {
        let b = tok.token_bytes(id).unwrap_or(&[]);
        put(&mut w, &(b.len() as u32).to_le_bytes())?;
        put(&mut w, b)?;
    }
    let mut tensors = BTreeMap::new();
    let mut buf = Vec::new();
    for p in &plans {
        put(&mut w, &(p.shape.len() as i32).to_le_bytes())?;
        put(&mut w, &(p.name.len() as i32).to_le_bytes())?;
        put(&mut w, &(p.ty as i32).to_le_bytes())?;
        for &n in p.shape.iter().rev() {
            put(&mut w, &(n as i32).to_le_bytes())?;
        }
        put(&mut w, p.name.as_bytes())?;
        encode(p, &mut buf);
        put(&mut w, &buf)?;
        tensors.insert(p.name.clone(), (p.shape.clone(), p.ty));
    }
    let file = w.into_inner().map_err(|e| ConvertError::Io {
        path: tmp.display().to_string(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io_err(&tmp))?;
    let bytes = file.metadata().map_err(io_err(&tmp))?.len();
    drop(file);
    std::fs::rename(&tmp, out).map_err(io_err(out))?;
    tracing::info!(
        "wrote {} ({} tensors, {:.1} MB)",
        out.display(),
        tensors.len(),
        bytes as f64 / 1e6
    );
    Ok(Summary {
        hparams: h,
        tokens: eot as usize,
        tensors,
        bytes,
    })
}

/// Maps every tensor of [`layout`] to its source in the CT2 model, checking shapes.
fn plan<'a>(ct2: &'a Ct2Model, h: &Hparams, mp: &Path) -> Result<Vec<Plan<'a>>, ConvertError> {
    let d = h.n_audio_state as usize;
    let get = |name: &str| {
        ct2.get(name).map_err(|e| ConvertError::Ct2 {
            path: mp.display().to_string(),
            source: e,
        })
    };
    // CT2 name of each whisper.cpp tensor, and which block of rows it takes when the CT2
    // tensor is a fused projection ([q; k; v] for self-attention, [k; v] for cross-attention).
    let mut sources: BTreeMap<String, (String, usize, usize)> = BTreeMap::new();
    let mut map = |to: String, from: String, part: usize, parts: usize| {
        sources.insert(to, (from, part, parts));
    };
    let whole = |to: &str, from: &str, map: &mut dyn FnMut(String, String, usize, usize)| {
        map(to.to_string(), from.to_string(), 0, 1)
    };
    let ln = |to: &str, from: &str, map: &mut dyn FnMut(String, String, usize, usize)| {
        map(format!("{to}.weight"), format!("{from}/gamma"), 0, 1);
        map(format!("{to}.bias"), format!("{from}/beta"), 0, 1);
    };
    let lin = |to: &str, from: &str, map: &mut dyn FnMut(String, String, usize, usize)| {
        map(format!("{to}.weight"), format!("{from}/weight"), 0, 1);
        map(format!("{to}.bias"), format!("{from}/bias"), 0, 1);
    };
    whole("encoder.positional_embedding", "encoder/position_encodings/encodings", &mut map);
    lin("encoder.conv1", "encoder/conv1", &mut map);
    lin("encoder.conv2", "encoder/conv2", &mut map);
    ln("encoder.ln_post", "encoder/layer_norm", &mut map);
    whole("decoder.positional_embedding", "decoder/position_encodings/encodings", &mut map);
    whole("decoder.token_embedding.weight", "decoder/embeddings/weight", &mut map);
    ln("decoder.ln", "decoder/layer_norm", &mut map);
    for (side, layers) in [("encoder", h.n_audio_layer), ("decoder", h.n_text_layer)] {
        for i in 0..layers {
            let (to, from) = (format!("{side}.blocks.{i}"), format!("{side}/layer_{i}"));
            let sa = format!("{from}/self_attention");
            ln(&format!("{to}.attn_ln"), &format!("{sa}/layer_norm"), &mut map);
            for (k, part) in [("query", 0), ("key", 1), ("value", 2)] {
                map(format!("{to}.attn.{k}.weight"), format!("{sa}/linear_0/weight"), part, 3);
                if k != "key" {
                    map(format!("{to}.attn.{k}.bias"), format!("{sa}/linear_0/bias"), part, 3);
                }
            }
            lin(&format!("{to}.attn.out"), &format!("{sa}/linear_1"), &mut map);
            if side == "decoder" {
                let ca = format!("{from}/attention");
                ln(&format!("{to}.cross_attn_ln"), &format!("{ca}/layer_norm"), &mut map);
                lin(&format!("{to}.cross_attn.query"), &format!("{ca}/linear_0"), &mut map);
                map(format!("{to}.cross_attn.key.weight"), format!("{ca}/linear_1/weight"), 0, 2);
                map(format!("{to}.cross_attn.value.weight"), format!("{ca}/linear_1/weight"), 1, 2);
                map(format!("{to}.cross_attn.value.bias"), format!("{ca}/linear_1/bias"), 1, 2);
                lin(&format!("{to}.cross_attn.out"), &format!("{ca}/linear_2"), &mut map);
            }
            ln(&format!("{to}.mlp_ln"), &format!("{from}/ffn/layer_norm"), &mut map);
            lin(&format!("{to}.mlp.0"), &format!("{from}/ffn/linear_0"), &mut map);
            lin(&format!("{to}.mlp.2"), &format!("{from}/ffn/linear_1"), &mut map);

            // whisper.cpp has no key bias: the fused ones must hold zeros there, or
            // dropping them would change the model.
            for (bias, part, parts) in [
                (format!("{sa}/linear_0/bias"), 1, 3),
                (format!("{from}/attention/linear_1/bias"), 0, 2),
            ] {
                if side == "encoder" && parts == 2 {
                    continue;
                }
                let v = get(&bias)?;
                let vals = v.to_f32();
                let n = vals.len() / parts;
                if vals.len() != n * parts || vals[part * n..(part + 1) * n].iter().any(|&x| x != 0.0) {
                    return Err(invalid(mp, format!(
                        "{bias}: the key part is not zero; whisper.cpp has no key bias"
                    )));
                }
            }
        }
    }
    let mut plans = Vec::new();
    for (name, shape, ty) in layout(h) {
        let (from, part, parts) = sources
            .get(&name)
            .ok_or_else(|| invalid(mp, format!("no source for {name}")))?
            .clone();
        let var = get(&from)?;
        if !matches!(var.dtype, Ct2DType::F16 | Ct2DType::F32 | Ct2DType::BF16) {
            return Err(invalid(mp, format!("{from}: {:?} weights are not supported (f16, f32 or bf16)", var.dtype)));
        }
        let len: usize = shape.iter().product();
        if var.numel() != len * parts {
            return Err(invalid(mp, format!(
                "{from} has shape {:?}; {name} needs {parts} x {shape:?} (model width {d})",
                var.shape
            )));
        }
        plans.push(Plan {
            name,
            shape,
            ty,
            var,
            start: part * len,
            len,
        });
    }
    Ok(plans)
}

/// The plan's values in its output type, little endian, into `out`.
fn encode(p: &Plan, out: &mut Vec<u8>) {
    out.clear();
    let v = p.var;
    let es = v.dtype.size();
    let raw = &v.data[p.start * es..(p.start + p.len) * es];
    match (v.dtype, p.ty) {
        (Ct2DType::F16, GgmlType::F16) | (Ct2DType::F32, GgmlType::F32) => out.extend_from_slice(raw),
        (src, GgmlType::F32) => {
            for x in widen(src, raw) {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        (src, GgmlType::F16) => {
            for x in widen(src, raw) {
                out.extend_from_slice(&half::f16::from_f32(x).to_le_bytes());
            }
        }
    }
}

fn widen(src: Ct2DType, raw: &[u8]) -> impl Iterator<Item = f32> + '_ {
    let es = src.size();
    raw.chunks_exact(es).map(move |b| match src {
        Ct2DType::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
        Ct2DType::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        _ => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
    })
}

/// Walks a whisper.cpp model file without loading its weights: header, filters,
/// vocabulary, and every tensor's header, checked against [`layout`] and the file's length.
pub fn inspect(path: &Path) -> Result<Summary, ConvertError> {
    let file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let mut r = BufReader::new(file);
    let mut pos = 0u64;
    let truncated = |pos: u64, what: &str| {
        invalid(path, format!("truncated: the file ends ({len} bytes) inside {what} at byte {pos}"))
    };
    let i32_at = |r: &mut BufReader<File>, pos: &mut u64, what: &str| -> Result<i32, ConvertError> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b).map_err(|_| truncated(*pos, what))?;
        *pos += 4;
        Ok(i32::from_le_bytes(b))
    };
    let magic = i32_at(&mut r, &mut pos, "the magic number")? as u32;
    if magic != MAGIC {
        return Err(invalid(path, format!("not a whisper.cpp model (magic {magic:#010x}, expected {MAGIC:#010x})")));
    }
    let mut f = [0i32; 11];
    for x in f.iter_mut() {
        *x = i32_at(&mut r, &mut pos, "the hyper-parameters")?;
    }
    let h = Hparams {
        n_vocab: f[0],
        n_audio_ctx: f[1],
        n_audio_state: f[2],
        n_audio_head: f[3],
        n_audio_layer: f[4],
        n_text_ctx: f[5],
        n_text_state: f[6],
        n_text_head: f[7],
        n_text_layer: f[8],
        n_mels: f[9],
        ftype: f[10],
    };
    let sane = |x: i32, max: i32| x > 0 && x <= max;
    if !(sane(h.n_vocab, 1 << 20)
        && sane(h.n_audio_ctx, 1 << 16)
        && sane(h.n_audio_state, 1 << 14)
        && sane(h.n_audio_head, 1 << 10)
        && sane(h.n_audio_layer, 1 << 10)
        && sane(h.n_text_ctx, 1 << 16)
        && h.n_text_state == h.n_audio_state
        && sane(h.n_text_head, 1 << 10)
        && sane(h.n_text_layer, 1 << 10)
        && sane(h.n_mels, 1 << 10)
        && h.ftype == 1)
    {
        return Err(invalid(path, format!("implausible hyper-parameters {h:?}")));
    }
    let n_mel = i32_at(&mut r, &mut pos, "the mel filters")?;
    let n_fft = i32_at(&mut r, &mut pos, "the mel filters")?;
    if n_mel != h.n_mels || n_fft != N_FFT_BINS as i32 {
        return Err(invalid(path, format!("mel filters are {n_mel} x {n_fft}, expected {} x {N_FFT_BINS}", h.n_mels)));
    }
    let skip = |r: &mut BufReader<File>, pos: &mut u64, n: u64, what: &str| -> Result<(), ConvertError> {
        if *pos + n > len {
            return Err(truncated(*pos, what));
        }
        r.seek_relative(n as i64).map_err(io_err(path))?;
        *pos += n;
        Ok(())
    };
    skip(&mut r, &mut pos, (n_mel * n_fft) as u64 * 4, "the mel filters")?;
    let tokens = i32_at(&mut r, &mut pos, "the vocabulary")?;
    if !(0..=h.n_vocab).contains(&tokens) {
        return Err(invalid(path, format!("{tokens} tokens for a vocabulary of {}", h.n_vocab)));
    }
    for _ in 0..tokens {
        let n = i32_at(&mut r, &mut pos, "the vocabulary")? as u32 as u64;
        if n > 1024 {
            return Err(invalid(path, format!("a token of {n} bytes at byte {pos}: corrupt vocabulary")));
        }
        skip(&mut r, &mut pos, n, "the vocabulary")?;
    }
    let want: BTreeMap<String, (Vec<usize>, GgmlType)> = layout(&h)
        .into_iter()
        .map(|(n, s, t)| (n, (s, t)))
        .collect();
    let mut tensors = BTreeMap::new();
    while pos < len {
        let at = pos;
        let rank = i32_at(&mut r, &mut pos, "a tensor header")?;
        let name_len = i32_at(&mut r, &mut pos, "a tensor header")?;
        let code = i32_at(&mut r, &mut pos, "a tensor header")?;
        if !(1..=4).contains(&rank) || !(1..=256).contains(&name_len) {
            return Err(invalid(path, format!("corrupt tensor header at byte {at} (rank {rank}, name length {name_len})")));
        }
        let ty = GgmlType::from_code(code)
            .ok_or_else(|| invalid(path, format!("tensor at byte {at}: unsupported type {code}")))?;
        let mut shape = Vec::new();
        for _ in 0..rank {
            let n = i32_at(&mut r, &mut pos, "a tensor header")?;
            if n <= 0 {
                return Err(invalid(path, format!("tensor at byte {at}: dimension {n}")));
            }
            shape.push(n as usize);
        }
        shape.reverse();
        let mut name = vec![0u8; name_len as usize];
        r.read_exact(&mut name).map_err(|_| truncated(pos, "a tensor name"))?;
        pos += name_len as u64;
        let name = String::from_utf8_lossy(&name).into_owned();
        let Some((wshape, wty)) = want.get(&name) else {
            return Err(invalid(path, format!("unexpected tensor {name:?} at byte {at}")));
        };
        if *wshape != shape || *wty != ty {
            return Err(invalid(path, format!(
                "{name}: {shape:?} {ty:?}, whisper.cpp expects {wshape:?} {wty:?}"
            )));
        }
        if tensors.contains_key(&name) {
            return Err(invalid(path, format!("{name} appears twice")));
        }
        let bytes = shape.iter().product::<usize>() as u64 * ty.size() as u64;
        skip(&mut r, &mut pos, bytes, &format!("tensor {name}"))?;
        tensors.insert(name, (shape, ty));
    }
    if let Some(missing) = want.keys().find(|k| !tensors.contains_key(*k)) {
        return Err(invalid(path, format!(
            "{missing} is missing ({} of {} tensors present): the file is incomplete",
            tensors.len(),
            want.len()
        )));
    }
    Ok(Summary {
        hparams: h,
        tokens: tokens as usize,
        tensors,
        bytes: len,
    })
}
