use vela_sim::*;
fn main() -> Result<()> {
    let variant: Variant = std::env::args().nth(1).unwrap_or("Stack_D0".into()).parse()?;
    let n: u64 = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(10);
    let verbose = std::env::var("V").is_ok();
    let mut env = StackEnv::new(EnvConfig { variant, render: false, ..Default::default() })?;
    let mut ex = Expert::default();
    let mut ok = 0; let mut steps_sum = 0;
    let t = std::time::Instant::now();
    let start: u64 = std::env::var("S").ok().map(|s| s.parse().unwrap()).unwrap_or(0);
    for seed in start..start + n {
        env.reset(seed)?;
        let mut succ = false;
        for _ in 0..200 {
            let a = ex.act(&env);
            let r = env.step(&a)?;
            if verbose { println!("{:?} {:?} eef {:.3?} a {:.3?} b {:.3?} g {:.3?} act {:.2?}", r.obs.step, ex.phase(), r.obs.eef.pos, r.obs.cube_a.pos, r.obs.cube_b.pos, r.obs.gripper_qpos, a); }
            if r.success { succ = true; steps_sum += r.obs.step; break; }
        }
        if succ { ok += 1 } else { println!("seed {seed} FAIL phase {:?} instr {}", ex.phase(), env.instruction()); }
    }
    println!("{variant}: {ok}/{n} mean steps {:.1} in {:?}", steps_sum as f64 / ok.max(1) as f64, t.elapsed());
    Ok(())
}
