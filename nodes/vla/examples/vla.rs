//! Stand-in for `vela vla …` until the CLI crate wires `vela_vla::cli` (same arguments).
use std::path::PathBuf;

fn arg(args: &[String], k: &str) -> Option<String> {
    args.iter().position(|a| a == k).and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let need = |k: &str| arg(&args, k).unwrap_or_else(|| {
        eprintln!("missing {k}");
        std::process::exit(2)
    });
    let res = match args.first().map(|s| s.as_str()) {
        Some("make-checkpoint") => vela_vla::cli::make_checkpoint(
            &need("--config"),
            &PathBuf::from(need("--out")),
            arg(&args, "--seed").map(|s| s.parse().expect("seed")).unwrap_or(0),
        )
        .map(|s| format!("{} tensors, {} bytes, {} shard(s)\n", s.n_tensors, s.total_bytes, s.shards.len())),
        Some("quantize") => vela_vla::cli::quantize(&PathBuf::from(need("--model")), &need("--quantization"), &PathBuf::from(need("--out")))
            .map(|r| format!("{} ({} bytes) {:?}\n", r.out_file.display(), r.bytes, r.types)),
        Some("predict") => vela_vla::cli::predict(
            &PathBuf::from(need("--model")),
            arg(&args, "--quantization").as_deref(),
            &PathBuf::from(need("--image")),
            &need("--instruction"),
            arg(&args, "--action-space").as_deref(),
            args.iter().any(|a| a == "--verbose"),
        ),
        _ => {
            eprintln!("usage: vla make-checkpoint|quantize|predict ...");
            std::process::exit(2)
        }
    };
    match res {
        Ok(s) => print!("{s}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1)
        }
    }
}
