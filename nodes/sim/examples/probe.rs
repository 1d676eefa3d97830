use vela_sim::*;
fn main() -> Result<()> {
    let t = std::time::Instant::now();
    let mut env = StackEnv::new(EnvConfig { variant: "Stack_D0".parse()?, ..Default::default() })?;
    println!("init {:?}", t.elapsed());
    let obs = env.reset(0)?;
    println!("eef {:?} a {:?} b {:?} instr {}", obs.eef.pos, obs.cube_a.pos, obs.cube_b.pos, obs.instruction);
    image_io::write_png("/tmp/probe0.png".as_ref(), obs.image.as_ref().unwrap())?;
    for i in 0..40 {
        let a = if i < 20 { [0.0, 0.0, -0.5, 0.0, 0.0, 0.0, -1.0] } else { [0.5, 0.0, 0.0, 0.0, 0.0, 0.3, 1.0] };
        let r = env.step(&a)?;
        if i % 5 == 4 { println!("{i} eef {:?} q {:?} g {:?}", r.obs.eef.pos, r.obs.eef.quat, r.obs.gripper_qpos); }
    }
    image_io::write_png("/tmp/probe1.png".as_ref(), &env.render()?)?;
    Ok(())
}
