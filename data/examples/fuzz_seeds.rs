//! Writes a seed corpus for the `tfrecord_example` fuzz target (fuzz/, scripts/fuzz.sh).
//!
//! A fresh machine starts fuzzing from nothing, and libFuzzer needs minutes to discover a valid
//! TFRecord frame with a CRC and a nested protobuf inside it; the CI budget gives it 60 s. Small
//! valid shards from our own writer let every run start inside the Example and episode decoders.
//!
//! Usage: `cargo run -p vela-data --example fuzz_seeds -- DIR`

use std::collections::BTreeMap;
use std::path::PathBuf;

use vela_data::rlds::{RldsOptions, RldsWriter};
use vela_data::{synthetic, tfrecord, DatasetMeta, EpisodeWriter};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).ok_or("usage: fuzz_seeds DIR")?);
    std::fs::create_dir_all(&out)?;
    let meta = DatasetMeta { name: "seed".into(), env_args: serde_json::json!({"env_name": "Stack_D2", "type": 1}) };
    for (i, (steps, size, low_dim)) in [(1, 4, false), (3, 8, false), (2, 8, true)].into_iter().enumerate() {
        let mut ep = synthetic::episode(i, steps, &["agentview"], size);
        if !low_dim {
            ep.low_dim = BTreeMap::new();
        }
        let tmp = tempfile::tempdir()?;
        let mut w = RldsWriter::create(tmp.path(), &meta, RldsOptions::default())?;
        w.append(&ep)?;
        Box::new(w).finish()?;
        let shard = std::fs::read(tmp.path().join("seed-train.tfrecord-00000-of-00001"))?;
        // One seed as a whole shard, one as the bare Example body inside it.
        let body = tfrecord::parse_records(&shard)?.first().ok_or("empty shard")?.to_vec();
        std::fs::write(out.join(format!("shard-{i}")), &shard)?;
        std::fs::write(out.join(format!("example-{i}")), &body)?;
    }
    println!("wrote 6 seeds to {}", out.display());
    Ok(())
}
