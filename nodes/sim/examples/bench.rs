//! `cargo run --release --example bench -- [Stack_D0] [control_steps] [size]`
fn main() -> vela_sim::Result<()> {
    let mut args = std::env::args().skip(1);
    let variant: vela_sim::Variant = args.next().unwrap_or_else(|| "Stack_D0".into()).parse()?;
    let steps: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(400);
    let size: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(224);
    let r = vela_sim::bench(variant, steps, size, size)?;
    println!("{r}");
    Ok(())
}
