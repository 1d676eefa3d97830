//! TFRecord framing: each record is
//! `u64 length (LE) | u32 masked CRC-32C of those 8 bytes | data | u32 masked CRC-32C of data`,
//! concatenated with no header. Both checksums are verified on read.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::{DataError, Result};

/// Largest record we accept; guards against allocating whatever a corrupt
/// length field says. An episode of 1000 steps with two 224² JPEG cameras is
/// about 30 MB.
pub const MAX_RECORD_BYTES: u64 = 1 << 31;

/// CRC-32C (Castagnoli) of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// TensorFlow's masked CRC: rotated and offset so that CRCs of data that
/// itself contains CRCs stay well distributed.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Frames `data` as one record.
pub fn write_record(w: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    let len = (data.len() as u64).to_le_bytes();
    w.write_all(&len)?;
    w.write_all(&masked_crc32c(&len).to_le_bytes())?;
    w.write_all(data)?;
    w.write_all(&masked_crc32c(data).to_le_bytes())
}

/// Bytes one record of `len` data bytes takes on disk.
pub fn framed_len(len: usize) -> u64 {
    len as u64 + 16
}

/// Where one record's data lies in its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordPos {
    pub offset: u64,
    pub len: u64,
}

/// Scans a TFRecord file's headers (checking each length CRC) without reading
/// record data, so indexing a multi-GB shard reads only 12 bytes per record.
pub fn index_file(path: &Path) -> Result<Vec<RecordPos>> {
    let file = File::open(path).map_err(|e| DataError::Io { path: path.into(), source: e })?;
    let size = file.metadata().map_err(|e| DataError::Io { path: path.into(), source: e })?.len();
    let mut r = BufReader::with_capacity(64, file);
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let n = out.len();
        let bad = |msg: String| DataError::Format { path: path.into(), msg: format!("record {n} at byte {pos}: {msg}") };
        if size - pos < 12 {
            return Err(bad(format!("truncated header ({} bytes left)", size - pos)));
        }
        let mut head = [0u8; 12];
        r.read_exact(&mut head).map_err(|e| bad(e.to_string()))?;
        let (len_bytes, crc) = head.split_at(8);
        if masked_crc32c(len_bytes) != u32::from_le_bytes(crc.try_into().unwrap_or_default()) {
            return Err(bad("length CRC mismatch (corrupt file)".into()));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap_or_default());
        if len > MAX_RECORD_BYTES || size - pos - 12 < len.saturating_add(4) {
            return Err(bad(format!("record of {len} bytes runs past the end of the file ({size} bytes): truncated")));
        }
        out.push(RecordPos { offset: pos + 12, len });
        r.seek_relative(len as i64 + 4).map_err(|e| bad(e.to_string()))?;
        pos += 12 + len + 4;
    }
    Ok(out)
}

/// Reads and checks one record's data.
pub fn read_record(file: &mut File, path: &Path, index: usize, pos: RecordPos) -> Result<Vec<u8>> {
    let bad = |msg: String| DataError::Format { path: path.into(), msg: format!("record {index} at byte {}: {msg}", pos.offset - 12) };
    file.seek(SeekFrom::Start(pos.offset)).map_err(|e| bad(e.to_string()))?;
    let mut buf = vec![0u8; pos.len as usize + 4];
    file.read_exact(&mut buf).map_err(|e| bad(format!("truncated: {e}")))?;
    let crc = u32::from_le_bytes([buf[pos.len as usize], buf[pos.len as usize + 1], buf[pos.len as usize + 2], buf[pos.len as usize + 3]]);
    buf.truncate(pos.len as usize);
    if masked_crc32c(&buf) != crc {
        return Err(bad("data CRC mismatch (corrupt file)".into()));
    }
    Ok(buf)
}

/// Every record of an in-memory TFRecord stream; errors describe the first
/// problem (used by the fuzz target and tests; files go through
/// [`index_file`] + [`read_record`], which share these checks).
pub fn parse_records(mut data: &[u8]) -> std::result::Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 12 {
            return Err(format!("record {}: truncated header", out.len()));
        }
        let (len_bytes, rest) = data.split_at(8);
        let (crc, rest) = rest.split_at(4);
        if masked_crc32c(len_bytes) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(format!("record {}: length CRC mismatch", out.len()));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().map_err(|_| "bad length")?);
        if (rest.len() as u64) < len.saturating_add(4) {
            return Err(format!("record {}: truncated data", out.len()));
        }
        let (body, rest) = rest.split_at(len as usize);
        let (crc, rest) = rest.split_at(4);
        if masked_crc32c(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(format!("record {}: data CRC mismatch", out.len()));
        }
        out.push(body);
        data = rest;
    }
    Ok(out)
}

/// Shard file name as TFDS writes it: `{name}-{split}.tfrecord-{i:05}-of-{n:05}`.
pub fn shard_name(dataset: &str, split: &str, index: usize, count: usize) -> String {
    let digits = count.to_string().len().max(5);
    format!("{dataset}-{split}.tfrecord-{index:0digits$}-of-{count:0digits$}")
}

/// `(dataset, split, index, count)` from a shard file name, for reading shards
/// in order.
pub fn parse_shard_name(name: &str) -> Option<(String, String, usize, usize)> {
    let (prefix, shard) = name.split_once(".tfrecord-")?;
    let (dataset, split) = prefix.rsplit_once('-')?;
    let (i, n) = shard.split_once("-of-")?;
    Some((dataset.to_string(), split.to_string(), i.parse().ok()?, n.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_standard_vectors() {
        // RFC 3720 (iSCSI) appendix B.4 and the common check value.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let inc: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&inc), 0x46DD_794E);
        let dec: Vec<u8> = (0..32).rev().collect();
        assert_eq!(crc32c(&dec), 0x113F_DB5C);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn masking_matches_tensorflow() {
        // mask(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8
        let crc = crc32c(b"123456789");
        assert_eq!(masked_crc32c(b"123456789"), ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8));
        // An empty record as TensorFlow writes it: length 0, its masked CRC, no data, masked CRC of "".
        let mut v = Vec::new();
        write_record(&mut v, b"").unwrap();
        assert_eq!(v.len(), 16);
        assert_eq!(&v[12..], &0xa282_ead8u32.to_le_bytes());
    }

    #[test]
    fn records_round_trip_and_corruption_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tfrecord");
        let mut buf = Vec::new();
        for r in [&b"hello"[..], b"", b"world!"] {
            write_record(&mut buf, r).unwrap();
        }
        std::fs::write(&path, &buf).unwrap();
        let idx = index_file(&path).unwrap();
        assert_eq!(idx.len(), 3);
        let mut f = File::open(&path).unwrap();
        assert_eq!(read_record(&mut f, &path, 2, idx[2]).unwrap(), b"world!");
        assert_eq!(parse_records(&buf).unwrap(), vec![&b"hello"[..], b"", b"world!"]);

        let mut bad = buf.clone();
        bad[14] ^= 1; // inside "hello"
        std::fs::write(&path, &bad).unwrap();
        let idx = index_file(&path).unwrap();
        let e = read_record(&mut File::open(&path).unwrap(), &path, 0, idx[0]).unwrap_err().to_string();
        assert!(e.contains("x.tfrecord") && e.contains("record 0") && e.contains("data CRC mismatch"), "{e}");

        let mut bad = buf.clone();
        bad[0] ^= 1; // length field
        std::fs::write(&path, &bad).unwrap();
        let e = index_file(&path).unwrap_err().to_string();
        assert!(e.contains("length CRC mismatch"), "{e}");

        std::fs::write(&path, &buf[..buf.len() - 3]).unwrap();
        let e = index_file(&path).unwrap_err().to_string();
        assert!(e.contains("record 2") && e.contains("truncated"), "{e}");
    }

    #[test]
    fn shard_names_follow_tfds() {
        assert_eq!(shard_name("stack", "train", 3, 16), "stack-train.tfrecord-00003-of-00016");
        assert_eq!(shard_name("s", "train", 7, 123456), "s-train.tfrecord-000007-of-123456");
        assert_eq!(
            parse_shard_name("bridge_dataset-train.tfrecord-00000-of-01024"),
            Some(("bridge_dataset".into(), "train".into(), 0, 1024))
        );
        assert_eq!(parse_shard_name("dataset_info.json"), None);
    }
}
