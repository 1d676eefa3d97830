//! Prompt tokenization. The real path is Llama-2's SentencePiece-BPE vocabulary converted by
//! `convert_gguf_vocab` into a HF-style `tokenizer.json` (vocab + merges, byte fallback); the
//! fallback for random-init checkpoints maps UTF-8 bytes onto Llama's `<0xXX>` ids (3..=258),
//! so both live in the same id space and action ids stay 31744..=31999.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Result, VlaError};

pub const BOS: u32 = 1;
pub const EOS: u32 = 2;
/// SentencePiece "▁" — `predict_action` appends it after "Out:" like training text had it.
pub const SPACE_TOKEN: u32 = 29871;
const SPM_SPACE: char = '\u{2581}';

pub trait TextTokenizer: Send + Sync {
    fn encode(&self, text: &str, add_bos: bool) -> Vec<u32>;
    fn name(&self) -> &'static str;
}

/// Every byte becomes Llama's byte-fallback id `3 + byte`. Not Llama's real segmentation:
/// only for checkpoints made without the tokenizer cache.
#[derive(Clone, Debug, Default)]
pub struct ByteTokenizer;

impl TextTokenizer for ByteTokenizer {
    fn encode(&self, text: &str, add_bos: bool) -> Vec<u32> {
        let mut ids: Vec<u32> = if add_bos { vec![BOS] } else { vec![] };
        ids.extend(text.bytes().map(|b| 3 + b as u32));
        ids
    }
    fn name(&self) -> &'static str {
        "byte-fallback"
    }
}

/// Subset of HF's tokenizer.json that we write and read.
#[derive(Serialize, Deserialize)]
struct TokenizerJson {
    version: String,
    model: BpeModel,
    #[serde(default)]
    added_tokens: Vec<serde_json::Value>,
    #[serde(default)]
    normalizer: serde_json::Value,
    #[serde(default)]
    pre_tokenizer: serde_json::Value,
    #[serde(default)]
    post_processor: serde_json::Value,
    #[serde(default)]
    decoder: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct BpeModel {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    dropout: Option<f32>,
    unk_token: Option<String>,
    #[serde(default)]
    continuing_subword_prefix: Option<String>,
    #[serde(default)]
    end_of_word_suffix: Option<String>,
    fuse_unk: bool,
    byte_fallback: bool,
    vocab: serde_json::Map<String, serde_json::Value>,
    /// `"a b"` strings (what we write, and older `tokenizers`) or `["a", "b"]` pairs (newer).
    merges: Vec<serde_json::Value>,
}

fn merge_pair(m: &serde_json::Value) -> Option<(String, String)> {
    match m {
        serde_json::Value::String(s) => s.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())),
        serde_json::Value::Array(v) if v.len() == 2 => Some((v[0].as_str()?.to_string(), v[1].as_str()?.to_string())),
        _ => None,
    }
}

/// SentencePiece-style BPE: normalise (prefix "▁", spaces → "▁"), split into characters, merge
/// the adjacent pair with the best (lowest) merge rank until none applies, then map pieces to
/// ids, falling back to byte tokens for unknown characters.
pub struct SpmTokenizer {
    vocab: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    unk: u32,
}

impl SpmTokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| VlaError::io(path, e))?;
        let tj: TokenizerJson = serde_json::from_str(&text).map_err(|e| VlaError::Tokenizer(format!("{}: {e}", path.display())))?;
        if tj.model.kind != "BPE" {
            return Err(VlaError::Tokenizer(format!("expected a BPE model, got {}", tj.model.kind)));
        }
        let vocab: HashMap<String, u32> =
            tj.model.vocab.iter().filter_map(|(k, v)| v.as_u64().map(|id| (k.clone(), id as u32))).collect();
        let ranks = tj
            .model
            .merges
            .iter()
            .enumerate()
            .filter_map(|(i, m)| merge_pair(m).map(|p| (p, i)))
            .collect();
        let unk = vocab.get("<unk>").copied().unwrap_or(0);
        Ok(Self { vocab, ranks, unk })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    fn encode_plain(&self, text: &str) -> Vec<u32> {
        if text.is_empty() {
            return vec![];
        }
        let norm: String = std::iter::once(SPM_SPACE).chain(text.chars().map(|c| if c == ' ' { SPM_SPACE } else { c })).collect();
        let mut pieces: Vec<String> = norm.chars().map(String::from).collect();
        loop {
            let mut best: Option<(usize, usize)> = None;
            for i in 0..pieces.len().saturating_sub(1) {
                if let Some(&r) = self.ranks.get(&(pieces[i].clone(), pieces[i + 1].clone())) {
                    if best.is_none_or(|(br, _)| r < br) {
                        best = Some((r, i));
                    }
                }
            }
            let Some((_, i)) = best else { break };
            let right = pieces.remove(i + 1);
            pieces[i].push_str(&right);
        }
        let mut ids = Vec::with_capacity(pieces.len());
        for p in pieces {
            match self.vocab.get(&p) {
                Some(&id) => ids.push(id),
                None => {
                    for b in p.bytes() {
                        ids.push(self.vocab.get(&format!("<0x{b:02X}>")).copied().unwrap_or(self.unk));
                    }
                }
            }
        }
        ids
    }
}

impl TextTokenizer for SpmTokenizer {
    fn encode(&self, text: &str, add_bos: bool) -> Vec<u32> {
        let mut ids = if add_bos { vec![BOS] } else { vec![] };
        ids.extend(self.encode_plain(text));
        ids
    }
    fn name(&self) -> &'static str {
        "llama-spm"
    }
}

/// The vocabulary section of a llama.cpp vocab-only GGUF.
pub struct GgufVocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
}

pub fn read_gguf_vocab(path: &Path) -> Result<GgufVocab> {
    use candle_core::quantized::gguf_file::Content;
    let mut f = std::fs::File::open(path).map_err(|e| VlaError::io(path, e))?;
    let c = Content::read(&mut f)?;
    let get = |k: &str| c.metadata.get(k).ok_or_else(|| VlaError::Tokenizer(format!("gguf has no `{k}`")));
    let model = get("tokenizer.ggml.model")?.to_string()?.clone();
    if model != "llama" {
        return Err(VlaError::Tokenizer(format!("expected an SPM (`llama`) vocabulary, got `{model}`")));
    }
    let tokens = get("tokenizer.ggml.tokens")?.to_vec()?.iter().map(|v| v.to_string().cloned()).collect::<candle_core::Result<Vec<_>>>()?;
    let scores = get("tokenizer.ggml.scores")?.to_vec()?.iter().map(|v| v.to_f32()).collect::<candle_core::Result<Vec<_>>>()?;
    let types = get("tokenizer.ggml.token_type")?.to_vec()?.iter().map(|v| v.to_i32()).collect::<candle_core::Result<Vec<_>>>()?;
    Ok(GgufVocab { tokens, scores, types })
}

/// Writes a HF `tokenizer.json` (BPE, byte fallback, legacy Llama normaliser) from a GGUF SPM
/// vocabulary. Merges are every split of a normal piece into two in-vocabulary pieces, ordered
/// by the merged piece's score (higher first): with that order rank-based BPE reproduces
/// SentencePiece's score-greedy merging.
pub fn convert_gguf_vocab(gguf: &Path, out: &Path) -> Result<usize> {
    let v = read_gguf_vocab(gguf)?;
    let index: HashMap<&str, usize> = v.tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let mut merges: Vec<(f32, usize, usize, String)> = Vec::new();
    for (id, piece) in v.tokens.iter().enumerate() {
        if v.types[id] != 1 {
            continue;
        }
        let chars: Vec<(usize, char)> = piece.char_indices().collect();
        for &(split, _) in chars.iter().skip(1) {
            let (l, r) = piece.split_at(split);
            if let (Some(&li), Some(&ri)) = (index.get(l), index.get(r)) {
                if v.types[li] == 1 && v.types[ri] == 1 {
                    merges.push((v.scores[id], li, ri, format!("{l} {r}")));
                }
            }
        }
    }
    // Highest merged score first; ties broken by the ids of the parts like the HF extractor.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut vocab = serde_json::Map::new();
    for (i, t) in v.tokens.iter().enumerate() {
        vocab.insert(t.clone(), serde_json::Value::from(i));
    }
    let added: Vec<serde_json::Value> = v
        .tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(v.types[*i], 2 | 3))
        .map(|(i, t)| serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let n_merges = merges.len();
    let tj = TokenizerJson {
        version: "1.0".into(),
        model: BpeModel {
            kind: "BPE".into(),
            dropout: None,
            unk_token: Some("<unk>".into()),
            continuing_subword_prefix: None,
            end_of_word_suffix: None,
            fuse_unk: true,
            byte_fallback: true,
            vocab,
            merges: merges.into_iter().map(|m| serde_json::Value::String(m.3)).collect(),
        },
        added_tokens: added,
        normalizer: serde_json::json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u{2581}"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]}),
        pre_tokenizer: serde_json::Value::Null,
        post_processor: serde_json::json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}),
        decoder: serde_json::json!({"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}),
    };
    let text = serde_json::to_string(&tj).map_err(|e| VlaError::Tokenizer(e.to_string()))?;
    std::fs::write(out, text).map_err(|e| VlaError::io(out, e))?;
    Ok(n_merges)
}

/// Loads `tokenizer.json` from a model folder, or the byte fallback when there is none.
pub fn load_for_model(dir: &Path) -> Result<Box<dyn TextTokenizer>> {
    let p = dir.join("tokenizer.json");
    if p.exists() {
        Ok(Box::new(SpmTokenizer::from_file(&p)?))
    } else {
        tracing::warn!(dir = %dir.display(), "no tokenizer.json: using the byte-fallback tokenizer (fine for random-init models only)");
        Ok(Box::new(ByteTokenizer))
    }
}

/// The default tokenizer cache that `scripts/setup-tokenizer.sh` fills.
pub fn cache_dir() -> std::path::PathBuf {
    if let Ok(c) = std::env::var("VELA_CACHE") {
        return Path::new(&c).join("tokenizer");
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    Path::new(&home).join(".cache/vela/tokenizer")
}
