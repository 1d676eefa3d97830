//! Reader for CTranslate2 model files (`model.bin`, binary format version 6).
//!
//! Layout (little endian): `u32 version`, string `spec name`, `u32 spec revision`,
//! `u32 variable count`, then per variable a string name, `u8 rank`, `u32 dims[rank]`,
//! `u8 dtype`, `u32 byte count` and the raw data; finally `u32 alias count` and
//! (alias, target) string pairs. Strings are a `u16` length that includes a trailing NUL.

use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Ct2Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("model.bin is truncated at byte {0}")]
    Truncated(usize),
    #[error("unsupported CTranslate2 format version {0} (expected 6)")]
    Version(u32),
    #[error("variable {name}: unsupported dtype code {code}")]
    DType { name: String, code: u8 },
    #[error("variable {name}: {bytes} bytes do not match shape {shape:?} of {dtype:?}")]
    Size {
        name: String,
        bytes: usize,
        shape: Vec<usize>,
        dtype: Ct2DType,
    },
    #[error("bad string in model.bin at byte {0}")]
    BadString(usize),
    #[error("variable {0} is missing")]
    Missing(String),
}

/// Element types of CTranslate2 (`ctranslate2::DataType` numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl Ct2DType {
    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => Ct2DType::F32,
            1 => Ct2DType::I8,
            2 => Ct2DType::I16,
            3 => Ct2DType::I32,
            4 => Ct2DType::F16,
            5 => Ct2DType::BF16,
            _ => return None,
        })
    }
    pub fn size(self) -> usize {
        match self {
            Ct2DType::I8 => 1,
            Ct2DType::I16 | Ct2DType::F16 | Ct2DType::BF16 => 2,
            Ct2DType::F32 | Ct2DType::I32 => 4,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Variable {
    pub shape: Vec<usize>,
    pub dtype: Ct2DType,
    pub data: Vec<u8>,
}

impl Variable {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values widened to f32 (integers are converted too, for scalar flags).
    pub fn to_f32(&self) -> Vec<f32> {
        let d = &self.data;
        match self.dtype {
            Ct2DType::F32 => d
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Ct2DType::F16 => d
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Ct2DType::BF16 => d
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Ct2DType::I8 => d.iter().map(|&b| b as i8 as f32).collect(),
            Ct2DType::I16 => d
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32)
                .collect(),
            Ct2DType::I32 => d
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
                .collect(),
        }
    }
}

/// A parsed `model.bin`: every variable by name, aliases resolved on lookup.
#[derive(Debug)]
pub struct Ct2Model {
    pub version: u32,
    pub spec: String,
    pub revision: u32,
    pub variables: BTreeMap<String, Variable>,
    pub aliases: BTreeMap<String, String>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Ct2Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(Ct2Error::Truncated(self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, Ct2Error> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Ct2Error> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Ct2Error> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Result<String, Ct2Error> {
        let at = self.pos;
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        let b = b.strip_suffix(&[0]).unwrap_or(b);
        String::from_utf8(b.to_vec()).map_err(|_| Ct2Error::BadString(at))
    }
}

impl Ct2Model {
    pub fn load(path: &Path) -> Result<Self, Ct2Error> {
        let buf = std::fs::read(path).map_err(|e| Ct2Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        Self::parse(&buf)
    }

    pub fn parse(buf: &[u8]) -> Result<Self, Ct2Error> {
        let mut c = Cursor { buf, pos: 0 };
        let version = c.u32()?;
        if version != 6 {
            return Err(Ct2Error::Version(version));
        }
        let spec = c.string()?;
        let revision = c.u32()?;
        let n = c.u32()? as usize;
        let mut variables = BTreeMap::new();
        for _ in 0..n {
            let name = c.string()?;
            let rank = c.u8()? as usize;
            let mut shape = Vec::with_capacity(rank);
            for _ in 0..rank {
                shape.push(c.u32()? as usize);
            }
            let code = c.u8()?;
            let dtype = Ct2DType::from_code(code).ok_or_else(|| Ct2Error::DType {
                name: name.clone(),
                code,
            })?;
            let bytes = c.u32()? as usize;
            let numel: usize = shape.iter().product();
            if numel * dtype.size() != bytes {
                return Err(Ct2Error::Size {
                    name,
                    bytes,
                    shape,
                    dtype,
                });
            }
            let data = c.take(bytes)?.to_vec();
            variables.insert(name, Variable { shape, dtype, data });
        }
        let mut aliases = BTreeMap::new();
        // Older files end right after the variables.
        if c.pos < buf.len() {
            let na = c.u32()?;
            for _ in 0..na {
                let alias = c.string()?;
                let target = c.string()?;
                aliases.insert(alias, target);
            }
        }
        Ok(Ct2Model {
            version,
            spec,
            revision,
            variables,
            aliases,
        })
    }

    /// A variable by name or alias.
    pub fn get(&self, name: &str) -> Result<&Variable, Ct2Error> {
        let name = self.aliases.get(name).map(|s| s.as_str()).unwrap_or(name);
        self.variables
            .get(name)
            .ok_or_else(|| Ct2Error::Missing(name.to_string()))
    }

    /// A scalar flag such as `encoder/num_heads`.
    pub fn scalar(&self, name: &str) -> Result<f32, Ct2Error> {
        let v = self.get(name)?;
        v.to_f32()
            .first()
            .copied()
            .ok_or_else(|| Ct2Error::Missing(name.to_string()))
    }
}
