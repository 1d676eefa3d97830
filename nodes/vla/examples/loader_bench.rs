//! Throughput (frames/s) of `vela train`'s data loader on a real dataset: HDF5/RLDS decode,
//! downscale to the model's input size and shuffle, without any model. Tells whether a GPU
//! run would wait on data.
//!
//! `cargo run --release -p vela-vla --example loader_bench -- DATASET[,DATASET..] [--size 112] [--chunk 16]`

use std::sync::{Arc, Mutex};
use std::time::Instant;

use vela_vla::train::data::{spawn_loader, DataOptions, EpochPlan};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let paths: Vec<std::path::PathBuf> = args.get(1).ok_or("usage: loader_bench DATASET[,..] [--size N] [--chunk N]")?.split(',').map(Into::into).collect();
    let get = |n: &str, d: usize| args.iter().position(|a| a == n).and_then(|i| args.get(i + 1)).and_then(|s| s.parse().ok()).unwrap_or(d);
    let size = get("--size", 112);
    let chunk = get("--chunk", 16);
    let reader = vela_data::convert::open_many(&paths, None)?;
    let n = reader.len();
    let reader = Arc::new(Mutex::new(reader));
    let eps: Vec<usize> = (0..n).collect();
    let t = Instant::now();
    let rx = spawn_loader(reader, DataOptions { camera: None, instruction: Some("stack".into()), image_size: size, pointing: false, action_chunk: 1 }, EpochPlan::new(&eps, chunk, 0, 0), 0, 0, 0, None);
    let mut frames = 0usize;
    for c in rx {
        frames += c?.len();
    }
    let s = t.elapsed().as_secs_f64();
    println!("{{\"episodes\": {n}, \"frames\": {frames}, \"secs\": {s:.2}, \"frames_per_sec\": {:.0}, \"size\": {size}}}", frames as f64 / s);
    Ok(())
}
