//! `vela sim ...`: look at and check the simulator without a graph.

use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Subcommand)]
pub enum SimCommand {
    /// Versions, asset folder, variants and cameras.
    Info,
    /// Render one frame to a PNG (optionally after some expert steps).
    Render {
        #[arg(long, default_value = "Stack_D2")]
        env: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value = "agentview")]
        camera: String,
        #[arg(long, default_value_t = 224)]
        width: u32,
        #[arg(long, default_value_t = 224)]
        height: u32,
        /// Let the scripted expert act this many steps first.
        #[arg(long, default_value_t = 0)]
        expert_steps: u32,
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the scripted expert and report its success rate.
    Expert {
        #[arg(long, default_value = "Stack_D2")]
        env: String,
        #[arg(long, default_value_t = 100)]
        episodes: u32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 200)]
        horizon: u32,
    },
    /// Physics and control steps per second, with rendering.
    Bench {
        #[arg(long, default_value = "Stack_D0")]
        env: String,
        #[arg(long, default_value_t = 400)]
        steps: u32,
        #[arg(long, default_value_t = 224)]
        size: u32,
    },
}

pub fn run(cmd: SimCommand) -> Result<()> {
    match cmd {
        SimCommand::Info => print!("{}", vela_sim::info()),
        SimCommand::Render { env, seed, camera, width, height, expert_steps, out } => {
            vela_sim::render_to_png(env.parse()?, seed, camera.parse()?, width, height, expert_steps, &out)?;
            println!("wrote {}", out.display());
        }
        SimCommand::Expert { env, episodes, seed, horizon } => {
            anyhow::ensure!(episodes > 0, "--episodes must be at least 1");
            let r = vela_sim::run_expert(env.parse()?, episodes, seed, horizon)?;
            println!("{r}");
        }
        SimCommand::Bench { env, steps, size } => {
            let r = vela_sim::bench(env.parse()?, steps, size, size)?;
            println!("{r}");
        }
    }
    Ok(())
}
