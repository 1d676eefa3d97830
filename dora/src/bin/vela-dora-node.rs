//! The dora node runner as a small binary of its own, so a dora deployment needs
//! neither the studio nor every model back end: it carries the runtime's utility
//! nodes, the benchmark nodes, and the node families enabled as features of this crate
//! (`sim`: the simulator and AutoPrompt). `vela dora node` (`vela` built with `--features dora`) is the same runner
//! with every node family.
//!
//! Started by dora without arguments. `vela-dora-node bench [--frames N] [--rate HZ]
//! [--size PX] [--via run|coordinator] [--out FILE.json]` runs the transport benchmark
//! (as `vela dora bench` does) with this binary as the runner.

use std::path::PathBuf;

use tracing_subscriber::EnvFilter;
use vela_dora::bench::{self, BenchConfig};
use vela_dora::launch::{self, Via};

fn registry() -> vela_runtime::Registry {
    let mut registry = vela_runtime::Registry::with_builtins();
    vela_dora::probe::register(&mut registry);
    #[cfg(feature = "sim")]
    {
        vela_sim::register(&mut registry);
        vela_prompt::register(&mut registry);
    }
    registry
}

fn bench_cmd(args: &[String]) -> Result<(), String> {
    let mut cfg = BenchConfig {
        frames: 500,
        rate_hz: 100.0,
        size: 224,
        via: Via::Run,
        runner: std::env::current_exe().map_err(|e| e.to_string())?,
        runner_args: None,
    };
    let mut out: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--frames" => cfg.frames = value.parse().map_err(|e| bad(&e))?,
            "--rate" => cfg.rate_hz = value.parse().map_err(|e| bad(&e))?,
            "--size" => cfg.size = value.parse().map_err(|e| bad(&e))?,
            "--via" => cfg.via = value.parse().map_err(|e| bad(&e))?,
            "--out" => out = Some(value.into()),
            _ => return Err(format!("unknown option {flag} (--frames, --rate, --size, --via, --out)")),
        }
    }
    let cli = launch::find_cli().map_err(|e| e.to_string())?;
    let rows = bench::run(&cfg, &registry(), &cli).map_err(|e| e.to_string())?;
    bench::print(&rows);
    if let Some(p) = out {
        let doc = serde_json::json!({ "benchmark": "dora", "machine": bench::machine(), "results": rows });
        std::fs::write(&p, serde_json::to_string_pretty(&doc).expect("json") + "\n").map_err(|e| format!("{}: {e}", p.display()))?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

fn main() {
    let filter = EnvFilter::try_from_env("VELA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench_cmd(&args[1..]),
        Some(other) => Err(format!("unknown command '{other}': dora starts this without arguments; `bench` runs the benchmark")),
        None => vela_dora::runner::main(&registry()).map_err(|e| e.to_string()),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
