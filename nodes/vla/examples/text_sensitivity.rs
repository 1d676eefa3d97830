//! How far two instructions move a model's first-token logits on the same frame (issue 8).
//!
//! Between "put the red cube on the green cube" and the reverse, a random-initialised
//! small-168 checkpoint moves them by up to 0.29 (0.57 between "point at the red cube" and
//! "... green cube"); the shipped model by 0.018. Training had closed the path from the
//! text to the actions. Cheap enough to run on every exported checkpoint.
//!
//! With a second frame, it also reports how far the logits move between the two frames for
//! the same instruction: the scale that a text change should be compared with.
//!
//! cargo run --release -p vela-vla --example text_sensitivity -- MODEL IMAGE.png [OTHER.png] ["A" "B"]

use std::path::Path;

use candle_core::DType;
use vela_vla::model::{LoadOptions, OpenVla};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let other = match args.get(2) {
        Some(p) if p.ends_with(".png") || p.ends_with(".jpg") => Some(args.remove(2)),
        _ => None,
    };
    if args.len() != 2 && args.len() != 4 {
        return Err("usage: text_sensitivity MODEL IMAGE [OTHER_IMAGE] [INSTRUCTION_A INSTRUCTION_B]".into());
    }
    let (a, b) = match args.len() {
        4 => (args[2].as_str(), args[3].as_str()),
        _ => ("put the red cube on the green cube", "put the green cube on the red cube"),
    };
    let m = OpenVla::load(Path::new(&args[0]), &LoadOptions::default())?;
    let img = OpenVla::read_image(Path::new(&args[1]))?;
    let (_, patches, _, la) = m.trace(&img, a)?;
    let (_, _, _, lb) = m.trace(&img, b)?;
    let norms = patches.sqr()?.sum_keepdim(2)?.sqrt()?.flatten_all()?.to_vec1::<f32>()?;
    let mean = norms.iter().sum::<f32>() / norms.len() as f32;
    let diff = (la.to_dtype(DType::F32)? - lb.to_dtype(DType::F32)?)?.abs()?.max(0)?.to_scalar::<f32>()?;
    let (ta, tb) = (vela_vla::llama::argmax(&la)?, vela_vla::llama::argmax(&lb)?);
    let image_diff = match other {
        Some(p) => {
            let (_, _, _, lo) = m.trace(&OpenVla::read_image(Path::new(&p))?, a)?;
            format!("{}", (la.to_dtype(DType::F32)? - lo.to_dtype(DType::F32)?)?.abs()?.max(0)?.to_scalar::<f32>()?)
        }
        None => "null".into(),
    };
    println!("{{\"a\": {a:?}, \"b\": {b:?}, \"max_abs_logit_diff\": {diff}, \"other_frame_max_abs_logit_diff\": {image_diff}, \"first_token\": [{ta}, {tb}], \"patch_norm_mean\": {mean}}}");
    Ok(())
}
