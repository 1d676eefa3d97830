//! MimicGen-style generation: segmentation, the generated data itself, replay
//! and determinism. Small on purpose (3 source demos, a few episodes, 64² frames):
//! the rates and speed are measured by `vela datagen`, not here.
use std::sync::Arc;

use vela_data::Episode;
use vela_sim::datagen::{self, GenConfig, GenReport, SourceSet};
use vela_sim::*;

fn sources(variant: Variant, n: usize) -> Arc<SourceSet> {
    Arc::new(datagen::record_source_demos(variant, n, 7, 20).expect("expert records source demos"))
}

fn generate(cfg: &GenConfig, src: &Arc<SourceSet>, episodes: u64, workers: usize) -> (Vec<Episode>, GenReport) {
    let mut out = Vec::new();
    let report = datagen::generate(cfg, Arc::clone(src), 11, episodes, 20 * episodes, workers, |e| {
        out.push(e);
        Ok(())
    }, |_| {})
    .expect("generation runs");
    (out, report)
}

fn low_dim(variant: Variant) -> GenConfig {
    GenConfig { variant, images: false, ..Default::default() }
}

#[test]
fn source_demos_split_into_grasp_and_place() {
    let src = sources(Variant::D0, 2);
    assert_eq!(src.demos.len(), 2);
    for d in &src.demos {
        let g = d.grasp_index().expect("grasped");
        assert!(d.steps[..g].iter().all(|s| !s.grasped), "no grasp before the signal's first edge");
        let [grasp, place] = d.segments(0);
        assert_eq!(grasp, 0..g + 1, "grasp subtask ends one step past the signal edge");
        assert_eq!(place, g + 1..d.len());
        // The randomised boundary moves the split, never past the end.
        assert_eq!(d.segments(15)[0].end, g + 16);
        assert_eq!(d.segments(15)[1].end, d.len());
        // The signals mean what they say: cube A is lifted while held, and stacked at the end.
        let a = Cube::A as usize;
        let lift = d.steps[place.clone()].iter().map(|s| s.objects[a].pos[2]).fold(0.0, f64::max);
        assert!(lift > 0.8 + 0.04, "cube A lifted during the place subtask ({lift})");
        assert!(d.steps.last().unwrap().placed);
        assert!(!d.steps[g - 1].placed);
        // The target pose is the OSC goal: action · 0.05 m away from the hand.
        let s = &d.steps[5];
        let dist = vela_sim::math::norm(vela_sim::math::sub(s.target.pos, s.eef.pos));
        assert!(dist <= 0.05 * 3f64.sqrt() + 1e-9);
    }
}

#[test]
fn generated_episodes_replay_to_success() {
    for variant in [Variant::D2, Variant::Lang] {
        let src = sources(variant, 4);
        let cfg = GenConfig { variant, width: 64, height: 64, ..Default::default() };
        let (eps, report) = generate(&cfg, &src, 1, 1);
        assert_eq!(report.kept, 1);
        assert!(report.tried >= 1);
        let ep = &eps[0];
        let t = ep.len();
        assert!(t > 30, "{variant}: {t} steps");
        assert_eq!(ep.name, "demo_0");
        // Every series has one entry per action; obs come before each action.
        let frames = &ep.images["agentview"];
        assert_eq!(frames.len(), t);
        assert!(frames.iter().all(|f| f.width == 64 && f.rgb.len() == 64 * 64 * 3));
        assert_ne!(frames[0].rgb, frames[t - 1].rgb, "the arm moved");
        assert_eq!(ep.states.steps(), t);
        assert_eq!(ep.instructions.len(), t);
        assert_eq!((ep.rewards.len(), ep.dones.len()), (t, t));
        assert_eq!(*ep.rewards.last().unwrap(), 1.0);
        assert!(ep.dones.last().unwrap());
        for (key, dim) in [("robot0_eef_pos", 3), ("robot0_eef_quat", 4), ("robot0_gripper_qpos", 2), ("object", 23)] {
            assert_eq!(ep.low_dim[key].dim, dim, "{key}");
            assert_eq!(ep.low_dim[key].steps(), t, "{key}");
        }
        assert!(ep.instructions.iter().all(|i| !i.is_empty()));
        assert_eq!(ep.attrs["variant"], variant.name());
        assert_eq!(ep.attrs["src_demo_inds"].as_array().unwrap().len(), 2);
        // A new scene, not one of the source scenes.
        let seed = ep.attrs["seed"].as_u64().unwrap();
        assert!(src.demos.iter().all(|d| d.seed != seed));

        // Replay from states[0] in a fresh env that starts elsewhere.
        let mut env = StackEnv::new(EnvConfig { variant, render: false, seed: 999, ..Default::default() }).unwrap();
        assert!(datagen::replay(&mut env, ep).unwrap(), "{variant}: replay reaches success");
        // And the recorded actions matter: without them the cube stays on the table.
        let mut idle = ep.clone();
        idle.actions.iter_mut().for_each(|a| *a = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0]);
        assert!(!datagen::replay(&mut env, &idle).unwrap());
    }
}

#[test]
fn same_seed_same_dataset_for_any_worker_count() {
    let src = sources(Variant::D1, 3);
    let cfg = low_dim(Variant::D1);
    let (one, r1) = generate(&cfg, &src, 3, 1);
    let (two, r2) = generate(&cfg, &src, 3, 2);
    assert_eq!((r1.kept, r1.tried), (r2.kept, r2.tried));
    assert_eq!(one, two);
    let names: Vec<&str> = one.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["demo_0", "demo_1", "demo_2"]);
    // Different scenes per episode, and the noise changes actions between trials.
    assert_ne!(one[0].states.row(0), one[1].states.row(0));
    assert_ne!(one[0].actions[..10], one[1].actions[..10]);
}

#[test]
fn bad_settings_give_clear_errors() {
    let src = sources(Variant::D0, 1);
    let run = |cfg: GenConfig, episodes: u64, workers: usize| {
        datagen::generate(&cfg, Arc::clone(&src), 0, episodes, 10, workers, |_| Ok(()), |_| {})
            .unwrap_err()
            .to_string()
    };
    let e = run(GenConfig { action_noise: f64::NAN, ..low_dim(Variant::D0) }, 1, 1);
    assert!(e.contains("action noise") && e.contains("NaN"), "{e}");
    let e = run(GenConfig { action_noise: 2.0, ..low_dim(Variant::D0) }, 1, 1);
    assert!(e.contains("action noise") && e.contains("0..=1"), "{e}");
    assert!(run(low_dim(Variant::D0), 0, 1).contains("episodes"));
    assert!(run(low_dim(Variant::D0), 1, 0).contains("workers"));
    let e = run(GenConfig { width: 8, ..low_dim(Variant::D0) }, 1, 1);
    assert!(e.contains("width") && e.contains('8'), "{e}");
    // Source demos from another variant cannot drive this one.
    let e = run(low_dim(Variant::D2), 1, 1);
    assert!(e.contains("Stack_D0") && e.contains("Stack_D2"), "{e}");
    let e = datagen::record_source_demos(Variant::Lang, 1, 0, 20).unwrap_err().to_string();
    assert!(e.contains("Stack_Lang") && e.contains("at least 2"), "{e}");
    // A sink error stops the run and names the episode.
    let e = datagen::generate(&low_dim(Variant::D0), Arc::clone(&src), 0, 2, 10, 1, |_| Err("disk full".into()), |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("demo_0") && e.contains("disk full"), "{e}");
}

#[test]
fn intended_actions_are_the_executed_ones_without_noise() {
    let src = sources(Variant::D0, 3);
    let (eps, _) = generate(&low_dim(Variant::D0), &src, 1, 1);
    let ep = &eps[0];
    let intended = &ep.low_dim[vela_data::INTENDED_ACTION_KEY];
    assert_eq!((intended.dim, intended.steps()), (7, ep.len()));
    let mut noisy_steps = 0;
    for (t, a) in ep.actions.iter().enumerate() {
        let i = intended.row(t);
        assert_eq!(i[6], a[6] as f64, "step {t}: the gripper carries no noise");
        let diff = (0..6).map(|d| (i[d] - a[d] as f64).abs()).fold(0.0, f64::max);
        // Noise of std 0.05: no step moves a dim by more than ~6 sigma (clamping only shrinks it).
        assert!(diff < 0.3, "step {t}: intended {i:?} vs executed {a:?}");
        noisy_steps += (diff > 1e-6) as usize;
    }
    assert!(noisy_steps > ep.len() / 2, "most steps are noisy ({noisy_steps} of {})", ep.len());
    // The relabelled episode trains on these, and replays the noise-free plan's labels.
    let mut relabelled = ep.clone();
    relabelled.relabel_actions(vela_data::INTENDED_ACTION_KEY).unwrap();
    assert_eq!(relabelled.actions[3].map(f64::from), *<&[f64; 7]>::try_from(intended.row(3)).unwrap());

    // Without noise the two series are the same.
    let (clean, _) = generate(&GenConfig { action_noise: 0.0, ..low_dim(Variant::D0) }, &src, 1, 1);
    let c = &clean[0];
    for (t, a) in c.actions.iter().enumerate() {
        assert_eq!(c.low_dim[vela_data::INTENDED_ACTION_KEY].row(t), a.map(f64::from).as_slice());
    }
}
