//! `tf.train.Example` protobuf, encoded and decoded by hand: three message
//! types and a map are all RLDS needs, so a protobuf toolchain would be
//! more machinery than message.
//!
//! ```text
//! Example  { Features features = 1; }
//! Features { map<string, Feature> feature = 1; }   // map entry: key = 1, value = 2
//! Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
//! BytesList { repeated bytes value = 1; }
//! FloatList { repeated float value = 1 [packed]; }
//! Int64List { repeated int64 value = 1 [packed]; }
//! ```
//! The decoder accepts packed and unpacked repeated scalars and skips unknown
//! fields, as any protobuf parser must; malformed input is an error, never a panic.

use std::collections::BTreeMap;

/// One feature's values.
#[derive(Clone, Debug, PartialEq)]
pub enum Feature {
    Bytes(Vec<Vec<u8>>),
    Float(Vec<f32>),
    Int64(Vec<i64>),
}

impl Feature {
    pub fn kind(&self) -> &'static str {
        match self {
            Feature::Bytes(_) => "bytes_list",
            Feature::Float(_) => "float_list",
            Feature::Int64(_) => "int64_list",
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Feature::Bytes(v) => v.len(),
            Feature::Float(v) => v.len(),
            Feature::Int64(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A `tf.train.Example`: feature name to values, sorted by name.
pub type Example = BTreeMap<String, Feature>;

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, ((field as u64) << 3) | wire as u64);
}

fn put_len_prefixed(out: &mut Vec<u8>, field: u32, body: &[u8]) {
    put_tag(out, field, LEN);
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn encode_feature(f: &Feature) -> Vec<u8> {
    let mut list = Vec::new();
    match f {
        Feature::Bytes(vs) => {
            for v in vs {
                put_len_prefixed(&mut list, 1, v);
            }
        }
        Feature::Float(vs) if !vs.is_empty() => {
            put_tag(&mut list, 1, LEN);
            put_varint(&mut list, vs.len() as u64 * 4);
            for v in vs {
                list.extend_from_slice(&v.to_le_bytes());
            }
        }
        Feature::Int64(vs) if !vs.is_empty() => {
            let body_len: usize = vs.iter().map(|&v| varint_len(v as u64)).sum();
            put_tag(&mut list, 1, LEN);
            put_varint(&mut list, body_len as u64);
            for &v in vs {
                put_varint(&mut list, v as u64);
            }
        }
        _ => {}
    }
    let field = match f {
        Feature::Bytes(_) => 1,
        Feature::Float(_) => 2,
        Feature::Int64(_) => 3,
    };
    let mut out = Vec::with_capacity(list.len() + 8);
    put_len_prefixed(&mut out, field, &list);
    out
}

/// Serialises an Example the way `SerializeToString` would (field order aside,
/// which protobuf leaves free).
pub fn encode(example: &Example) -> Vec<u8> {
    let mut features = Vec::new();
    for (key, f) in example {
        let mut entry = Vec::new();
        put_len_prefixed(&mut entry, 1, key.as_bytes());
        put_len_prefixed(&mut entry, 2, &encode_feature(f));
        put_len_prefixed(&mut features, 1, &entry);
    }
    let mut out = Vec::with_capacity(features.len() + 8);
    put_len_prefixed(&mut out, 1, &features);
    out
}

/// A bounds-checked protobuf cursor.
struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        if n > self.buf.len() as u64 {
            return Err(format!("field of {n} bytes runs past the end ({} left)", self.buf.len()));
        }
        let (a, b) = self.buf.split_at(n as usize);
        self.buf = b;
        Ok(a)
    }

    /// Next `(field, wire type)`, or `None` at the end.
    fn tag(&mut self) -> Result<Option<(u64, u8)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let t = self.varint()?;
        Ok(Some((t >> 3, (t & 7) as u8)))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()?;
        self.take(n)
    }

    fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            VARINT => self.varint().map(|_| ()),
            I64 => self.take(8).map(|_| ()),
            LEN => self.bytes().map(|_| ()),
            I32 => self.take(4).map(|_| ()),
            w => Err(format!("unsupported wire type {w}")),
        }
    }
}

fn decode_list(body: &[u8], kind: u64) -> Result<Feature, String> {
    let mut c = Cursor { buf: body };
    let mut feature = match kind {
        1 => Feature::Bytes(Vec::new()),
        2 => Feature::Float(Vec::new()),
        _ => Feature::Int64(Vec::new()),
    };
    while let Some((field, wire)) = c.tag()? {
        match (&mut feature, field, wire) {
            (Feature::Bytes(v), 1, LEN) => v.push(c.bytes()?.to_vec()),
            (Feature::Float(v), 1, LEN) => {
                let packed = c.bytes()?;
                if packed.len() % 4 != 0 {
                    return Err(format!("packed floats of {} bytes (not a multiple of 4)", packed.len()));
                }
                v.extend(packed.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
            }
            (Feature::Float(v), 1, I32) => {
                let b = c.take(4)?;
                v.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            }
            (Feature::Int64(v), 1, LEN) => {
                let mut p = Cursor { buf: c.bytes()? };
                while !p.buf.is_empty() {
                    v.push(p.varint()? as i64);
                }
            }
            (Feature::Int64(v), 1, VARINT) => v.push(c.varint()? as i64),
            (_, 1, w) => return Err(format!("value of wire type {w} in a {}", feature.kind())),
            (_, _, w) => c.skip(w)?,
        }
    }
    Ok(feature)
}

fn decode_feature(body: &[u8]) -> Result<Feature, String> {
    let mut c = Cursor { buf: body };
    let mut out = None;
    while let Some((field, wire)) = c.tag()? {
        match (field, wire) {
            (1..=3, LEN) => out = Some(decode_list(c.bytes()?, field)?),
            (_, w) => c.skip(w)?,
        }
    }
    // A Feature with no kind set is an empty feature; TFDS never writes one.
    out.ok_or_else(|| "feature has no value list".into())
}

/// Parses a serialised Example; the error says what was malformed.
pub fn decode(data: &[u8]) -> Result<Example, String> {
    let mut example = Example::new();
    let mut c = Cursor { buf: data };
    while let Some((field, wire)) = c.tag()? {
        if (field, wire) != (1, LEN) {
            c.skip(wire)?;
            continue;
        }
        let mut features = Cursor { buf: c.bytes()? };
        while let Some((field, wire)) = features.tag()? {
            if (field, wire) != (1, LEN) {
                features.skip(wire)?;
                continue;
            }
            let mut entry = Cursor { buf: features.bytes()? };
            let (mut key, mut value) = (None, None);
            while let Some((field, wire)) = entry.tag()? {
                match (field, wire) {
                    (1, LEN) => {
                        let k = entry.bytes()?;
                        key = Some(String::from_utf8(k.to_vec()).map_err(|_| "feature name is not UTF-8")?);
                    }
                    (2, LEN) => value = Some(entry.bytes()?),
                    (_, w) => entry.skip(w)?,
                }
            }
            let key = key.ok_or("feature map entry without a name")?;
            let feature = match value {
                Some(v) => decode_feature(v).map_err(|e| format!("feature `{key}`: {e}"))?,
                None => return Err(format!("feature `{key}` has no value")),
            };
            example.insert(key, feature);
        }
    }
    Ok(example)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Example {
        Example::from([
            ("steps/action".to_string(), Feature::Float(vec![0.5, -1.25, 3.0])),
            ("steps/is_first".to_string(), Feature::Int64(vec![1, 0, -7, i64::MAX])),
            ("steps/language_instruction".to_string(), Feature::Bytes(vec![b"stack".to_vec(), Vec::new()])),
            ("empty".to_string(), Feature::Float(vec![])),
        ])
    }

    #[test]
    fn round_trip() {
        let e = sample();
        assert_eq!(decode(&encode(&e)).unwrap(), e);
    }

    #[test]
    fn known_bytes() {
        // tf.train.Example(features=tf.train.Features(feature={"a": tf.train.Feature(
        //     int64_list=tf.train.Int64List(value=[1]))})).SerializeToString()
        let e = Example::from([("a".to_string(), Feature::Int64(vec![1]))]);
        assert_eq!(encode(&e), b"\n\x0c\n\x0a\n\x01a\x12\x05\x1a\x03\n\x01\x01");
    }

    #[test]
    fn unpacked_and_unknown_fields_are_accepted() {
        // Int64List with two unpacked values, FloatList with one unpacked value,
        // and an unknown varint field 9 in the Feature.
        let int_list = [0x08, 0x05, 0x08, 0x06];
        let mut feat = Vec::new();
        put_len_prefixed(&mut feat, 3, &int_list);
        put_tag(&mut feat, 9, VARINT);
        put_varint(&mut feat, 42);
        let mut entry = Vec::new();
        put_len_prefixed(&mut entry, 1, b"x");
        put_len_prefixed(&mut entry, 2, &feat);
        let mut fs = Vec::new();
        put_len_prefixed(&mut fs, 1, &entry);
        let mut ex = Vec::new();
        put_len_prefixed(&mut ex, 1, &fs);
        assert_eq!(decode(&ex).unwrap()["x"], Feature::Int64(vec![5, 6]));

        let float_list = [0x0d, 0, 0, 0x80, 0x3f];
        assert_eq!(decode_list(&float_list, 2).unwrap(), Feature::Float(vec![1.0]));
    }

    #[test]
    fn malformed_input_errors() {
        let good = encode(&sample());
        for cut in 1..good.len() {
            // Every strict prefix is malformed or a shorter valid message; none panics.
            let _ = decode(&good[..cut]);
        }
        assert!(decode(&good[..good.len() - 1]).is_err());
        assert!(decode(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]).unwrap_err().contains("runs past the end"));
        assert!(decode(&[0x0a; 11]).is_err());
    }
}
