//! HDF5 -> RLDS conversion speed without building the whole `vela` binary:
//! `cargo run --release -p vela-data --example convert_bench -- [EPISODES STEPS SIZE [OUT.json]]`
//! (default 50 episodes × 150 steps × 224² frames, one camera).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let work_dir = std::env::temp_dir().join(format!("vela-convert-bench-{}", std::process::id()));
    let cfg = vela_data::bench::BenchConfig {
        episodes: num(0, 50),
        steps: num(1, 150),
        size: num(2, 224) as u32,
        source: None,
        work_dir: work_dir.clone(),
    };
    let report = vela_data::bench::run(&cfg, |stage, done, total| {
        if done % 10 == 0 || done == total {
            eprintln!("{stage}: {done}/{total}");
        }
    });
    let _ = std::fs::remove_dir_all(&work_dir);
    let report = report?;
    println!("{report}");
    if let Some(out) = args.get(3) {
        let doc = report.to_json(vela_runtime::bench::machine_description());
        std::fs::write(out, serde_json::to_string_pretty(&doc)? + "\n")?;
        println!("wrote {out}");
    }
    Ok(())
}
