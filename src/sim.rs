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
    /// Compare a dataset's labels with what the scripted expert would do on the same states
    /// (the episodes are replayed from their first state): per-dimension error, sign
    /// agreement, saturation, by expert phase. Says how far apart two teachers are.
    Agreement {
        /// A robomimic HDF5 file of a Stack variant (`vela datagen` or `vela dagger` output).
        #[arg(long)]
        dataset: PathBuf,
        #[arg(long, default_value_t = 20)]
        max_episodes: usize,
        /// Compare against `intended` (obs/intended_action) or the `executed` actions.
        #[arg(long, default_value = "intended", value_parser = ["intended", "executed"])]
        labels: String,
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
        SimCommand::Agreement { dataset, max_episodes, labels } => agreement(&dataset, max_episodes, &labels)?,
        SimCommand::Bench { env, steps, size } => {
            let r = vela_sim::bench(env.parse()?, steps, size, size)?;
            println!("{r}");
        }
    }
    Ok(())
}

fn agreement(path: &std::path::Path, max_episodes: usize, labels: &str) -> Result<()> {
    use anyhow::Context as _;
    use vela_data::EpisodeReader as _;
    let mut reader = vela_data::robomimic::RobomimicReader::open(path).with_context(|| format!("opening {}", path.display()))?;
    let env_name = reader.meta().env_args["env_name"].as_str().unwrap_or_default().to_string();
    let variant: vela_sim::Variant = env_name.parse().with_context(|| format!("{}: env_name {env_name:?} is not a Stack variant", path.display()))?;
    // Replays rebuild the scene from its stored state, but not its colours; in Stack_Lang the
    // colours named by the instruction decide which cube goes on which.
    anyhow::ensure!(variant != vela_sim::Variant::Lang, "{}: Stack_Lang episodes cannot be compared (their cube order depends on colours the file does not store)", path.display());
    let mut env = vela_sim::StackEnv::new(vela_sim::EnvConfig { variant, render: false, ..Default::default() })?;
    // Per phase: steps, |label - expert| per dim, sign agreements and their count, saturated labels / expert actions.
    #[derive(Default)]
    struct Acc {
        n: usize,
        abs: [f64; 7],
        sign_same: usize,
        sign_n: usize,
        sat_label: usize,
        sat_expert: usize,
    }
    let mut by_phase: std::collections::BTreeMap<String, Acc> = Default::default();
    let n = reader.len().min(max_episodes);
    anyhow::ensure!(n > 0, "{} has no episodes", path.display());
    for i in 0..n {
        let ep = reader.read_lowdim(i)?;
        let want: Vec<[f64; 7]> = match labels {
            "executed" => ep.actions.iter().map(|a| a.map(|x| x as f64)).collect(),
            _ => {
                let l = ep.low_dim.get(vela_data::INTENDED_ACTION_KEY).with_context(|| format!("{}: no {}", ep.name, vela_data::INTENDED_ACTION_KEY))?;
                (0..ep.len()).map(|t| std::array::from_fn(|d| l.row(t)[d])).collect()
            }
        };
        for ((expert, phase), label) in vela_sim::datagen::expert_labels(&mut env, &ep)?.into_iter().zip(want) {
            for key in [format!("{phase:?}"), "all".to_string()] {
                let acc = by_phase.entry(key).or_default();
                acc.n += 1;
                for d in 0..7 {
                    acc.abs[d] += (label[d] - expert[d] as f64).abs();
                }
                for d in 0..3 {
                    if label[d].abs() > 0.1 && expert[d].abs() > 0.1 {
                        acc.sign_n += 1;
                        acc.sign_same += (label[d].signum() == (expert[d] as f64).signum()) as usize;
                    }
                    acc.sat_label += (label[d].abs() >= 0.99) as usize;
                    acc.sat_expert += (expert[d].abs() >= 0.99) as usize;
                }
            }
        }
    }
    println!("{}: {n} episodes of {env_name}, {labels} labels against the scripted expert on the same states", path.display());
    println!("{:<10} {:>6}  {:>47}  {:>9}  {:>17}", "phase", "steps", "mean |label - expert| (x y z rx ry rz grip)", "same sign", "saturated xyz l/e");
    for (phase, a) in &by_phase {
        let m: Vec<String> = a.abs.iter().map(|s| format!("{:.2}", s / a.n as f64)).collect();
        println!(
            "{:<10} {:>6}  {:>47}  {:>8.0}%  {:>7.0}% / {:>4.0}%",
            phase,
            a.n,
            m.join(" "),
            100.0 * a.sign_same as f64 / a.sign_n.max(1) as f64,
            100.0 * a.sat_label as f64 / (3 * a.n) as f64,
            100.0 * a.sat_expert as f64 / (3 * a.n) as f64
        );
    }
    Ok(())
}
