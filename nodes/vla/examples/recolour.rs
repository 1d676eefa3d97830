//! Writes a copy of a frame with the saturated pixels' hue turned by 120° (a cyclic swap of
//! R, G and B), so the cubes change colour while the geometry stays. With
//! `text_sensitivity MODEL IMAGE RECOLOURED`, it measures how far a model's first-token
//! logits follow colour alone (issue 8: can a colour word bind to anything in the image?).
//!
//! cargo run --release -p vela-vla --example recolour -- IN.png OUT.png

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        return Err("usage: recolour IN.png OUT.png".into());
    };
    let mut img = image::open(input)?.to_rgb8();
    let mut changed = 0usize;
    for p in img.pixels_mut() {
        let [r, g, b] = p.0;
        let (hi, lo) = (r.max(g).max(b) as f32, r.min(g).min(b) as f32);
        // The table, floor, robot and background are grey or weakly tinted; the cubes are not.
        if hi > 50.0 && (hi - lo) / hi > 0.45 {
            p.0 = [b, r, g];
            changed += 1;
        }
    }
    img.save(output)?;
    println!("{{\"pixels_recoloured\": {changed}}}");
    Ok(())
}
