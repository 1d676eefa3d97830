//! Stand-in for the future `vela sim` subcommands:
//!   sim info | sim render ENV SEED CAMERA SIZE OUT.png [EXPERT_STEPS] | sim expert ENV EPISODES
fn main() -> vela_sim::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("render") => {
            let size: u32 = args[4].parse().unwrap_or(224);
            let steps: u32 = args.get(6).and_then(|s| s.parse().ok()).unwrap_or(0);
            vela_sim::render_to_png(
                args[1].parse()?,
                args[2].parse().unwrap_or(0),
                args[3].parse()?,
                size,
                size,
                steps,
                args[5].as_ref(),
            )?;
        }
        Some("expert") => {
            let first: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
            let r =
                vela_sim::run_expert(args[1].parse()?, args[2].parse().unwrap_or(100), first, 200)?;
            println!("{r}");
        }
        _ => print!("{}", vela_sim::info()),
    }
    Ok(())
}
