//! Whisper's token decoder: ids back to text.
//!
//! Recognition only ever decodes, so instead of a full BPE tokenizer this maps each id
//! of the byte-level BPE vocabulary in `tokenizer.json` back to the bytes it stands for.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("tokenizer.json: {0}")]
    Format(String),
}

pub struct Tokenizer {
    /// Bytes of each ordinary token; empty for special tokens.
    bytes: Vec<Vec<u8>>,
    special: HashMap<String, u32>,
    /// Ids at or above this are special (`<|endoftext|>` and everything after it).
    first_special: u32,
}

/// GPT-2's reversible byte → printable character table, inverted.
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = Vec::new();
    printable.extend(b'!' as u32..=b'~' as u32);
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut map = HashMap::new();
    let mut extra = 0u32;
    for b in 0u32..256 {
        let c = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        map.insert(char::from_u32(c).unwrap(), b as u8);
    }
    map
}

impl Tokenizer {
    pub fn load(path: &Path) -> Result<Self, TokenizerError> {
        let text = std::fs::read_to_string(path).map_err(|e| TokenizerError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let json: Value = serde_json::from_str(&text).map_err(|e| TokenizerError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_json(&json)
    }

    pub fn from_json(json: &Value) -> Result<Self, TokenizerError> {
        let vocab = json
            .pointer("/model/vocab")
            .and_then(Value::as_object)
            .ok_or_else(|| TokenizerError::Format("no model.vocab".into()))?;
        let table = unicode_to_byte();
        let mut special = HashMap::new();
        let mut max_id = 0u32;
        let mut entries = Vec::with_capacity(vocab.len());
        for (tok, id) in vocab {
            let id = id
                .as_u64()
                .ok_or_else(|| TokenizerError::Format(format!("bad id for {tok:?}")))?
                as u32;
            let bytes = tok
                .chars()
                .map(|c| table.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| {
                    TokenizerError::Format(format!("token {tok:?} is not byte-level"))
                })?;
            max_id = max_id.max(id);
            entries.push((id, bytes));
        }
        let mut first_special = u32::MAX;
        if let Some(added) = json.get("added_tokens").and_then(Value::as_array) {
            for t in added {
                let (Some(id), Some(content)) = (
                    t.get("id").and_then(Value::as_u64),
                    t.get("content").and_then(Value::as_str),
                ) else {
                    continue;
                };
                special.insert(content.to_string(), id as u32);
                first_special = first_special.min(id as u32);
                max_id = max_id.max(id as u32);
            }
        }
        let mut bytes = vec![Vec::new(); max_id as usize + 1];
        for (id, b) in entries {
            if id < first_special {
                bytes[id as usize] = b;
            }
        }
        Ok(Tokenizer {
            bytes,
            special,
            first_special,
        })
    }

    pub fn special(&self, token: &str) -> Option<u32> {
        self.special.get(token).copied()
    }

    pub fn is_special(&self, id: u32) -> bool {
        id >= self.first_special
    }

    /// The first special id (`<|endoftext|>`): every id below it is an ordinary token.
    pub fn first_special(&self) -> u32 {
        self.first_special
    }

    /// The bytes an ordinary token stands for (empty for special ids).
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.bytes.get(id as usize).map(Vec::as_slice)
    }

    pub fn vocab_len(&self) -> usize {
        self.bytes.len()
    }

    /// Text of the ordinary tokens among `ids`; special tokens are skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = Vec::new();
        for &id in ids {
            if !self.is_special(id) {
                if let Some(b) = self.bytes.get(id as usize) {
                    out.extend_from_slice(b);
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
