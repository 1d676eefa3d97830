//! PNG output for frames (CLI `vela sim render`, tests, debugging).
use std::path::Path;

use crate::env::RgbImage;
use crate::error::{Result, SimError};

/// Writes an RGB8 frame as PNG.
#[cfg(feature = "render")]
pub fn write_png(path: &Path, img: &RgbImage) -> Result<()> {
    let io = |e: std::io::Error| SimError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), img.width, img.height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let to_io = |e: png::EncodingError| io(std::io::Error::other(e.to_string()));
    let mut w = enc.write_header().map_err(to_io)?;
    w.write_image_data(&img.data).map_err(to_io)?;
    w.finish().map_err(to_io)?;
    Ok(())
}

#[cfg(not(feature = "render"))]
pub fn write_png(_path: &Path, _img: &RgbImage) -> Result<()> {
    Err(SimError::RenderUnavailable)
}
