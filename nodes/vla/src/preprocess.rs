//! Image → `pixel_values` as `PrismaticImageProcessor` builds them: naive resize (no aspect
//! ratio kept) to each tower's size, [0,1] scaling, per-tower mean/std, towers stacked on the
//! channel axis (6 channels for the fused backbone).

use candle_core::{DType, Device, Tensor};
use image::{imageops::FilterType, RgbImage};

use crate::config::VitConfig;
use crate::Result;

/// Bicubic resize to `size`×`size`. PIL's antialiased bicubic and `image`'s Catmull-Rom are both
/// a=-0.5 cubics with support scaled when shrinking; results differ by rounding only. A frame
/// that already has the right size is used as is, like the reference (PIL returns a copy).
pub fn resize(img: &RgbImage, size: usize) -> RgbImage {
    if img.width() as usize == size && img.height() as usize == size {
        return img.clone();
    }
    image::imageops::resize(img, size as u32, size as u32, FilterType::CatmullRom)
}

/// `img` resized once per distinct tower size (OpenVLA's two towers both read 224 px, and a
/// resize costs milliseconds on the host).
pub fn resized_per_size(img: &RgbImage, towers: &[VitConfig]) -> Vec<(usize, RgbImage)> {
    let mut out: Vec<(usize, RgbImage)> = Vec::new();
    for t in towers {
        if !out.iter().any(|(s, _)| *s == t.image_size) {
            out.push((t.image_size, resize(img, t.image_size)));
        }
    }
    out
}

/// `[1, 3·T, S, S]` pixel values in `dtype`.
pub fn pixel_values(img: &RgbImage, towers: &[VitConfig], dtype: DType, dev: &Device) -> Result<Tensor> {
    let resized = resized_per_size(img, towers);
    let mut chans = Vec::new();
    for t in towers {
        let s = t.image_size;
        let r = &resized.iter().find(|(size, _)| *size == s).expect("one per size").1;
        let mut data = vec![0f32; 3 * s * s];
        for (x, y, p) in r.enumerate_pixels() {
            for c in 0..3 {
                let v = p.0[c] as f32 / 255.0;
                data[c * s * s + y as usize * s + x as usize] = (v - t.image_mean[c]) / t.image_std[c];
            }
        }
        chans.push(Tensor::from_vec(data, (1, 3, s, s), dev)?);
    }
    Ok(Tensor::cat(&chans, 1)?.to_dtype(dtype)?)
}

/// Raw `[S, S, 3]` u8 frames (one per distinct size, as [`resized_per_size`] makes them) →
/// the pixel values [`pixel_values`] computes on the host, with the same f32 arithmetic, on
/// the frames' device. Replayed CUDA graphs take the bytes as input: an eighth of the upload,
/// and the scaling runs on the card.
pub fn normalize_on_device(frames: &[(usize, Tensor)], towers: &[VitConfig], dtype: DType) -> Result<Tensor> {
    let mut chans = Vec::new();
    for t in towers {
        let f = &frames.iter().find(|(s, _)| *s == t.image_size).ok_or_else(|| crate::VlaError::Input(format!("no {} px frame", t.image_size)))?.1;
        let dev = f.device();
        let stat = |v: [f32; 3]| Tensor::new(&v, dev)?.reshape((3, 1, 1));
        let x = f.to_dtype(DType::F32)?.permute((2, 0, 1))?.broadcast_div(&Tensor::new(255f32, dev)?)?;
        chans.push(x.broadcast_sub(&stat(t.image_mean)?)?.broadcast_div(&stat(t.image_std)?)?.unsqueeze(0)?);
    }
    Ok(Tensor::cat(&chans, 1)?.to_dtype(dtype)?)
}

/// The evaluation-time centre crop for models fine-tuned with random-resized-crop augmentation
/// (LIBERO-style): keep the central box covering `area` of the frame (side `sqrt(area)`), then
/// resize back to the original size with bilinear filtering. Models trained without
/// augmentation (e.g. Bridge) must not use it.
pub fn center_crop(img: &RgbImage, area: f32) -> RgbImage {
    let (w, h) = img.dimensions();
    let s = area.clamp(0.0, 1.0).sqrt();
    let (cw, ch) = (((w as f32) * s).round().max(1.0) as u32, ((h as f32) * s).round().max(1.0) as u32);
    let crop = image::imageops::crop_imm(img, (w - cw) / 2, (h - ch) / 2, cw, ch).to_image();
    image::imageops::resize(&crop, w, h, FilterType::Triangle)
}

/// One axis of `image`'s Catmull-Rom resize, precomputed: per output index the first input
/// index, the number of inputs that contribute, where its weights start in `weights`, and the
/// normalised weights. The arithmetic is image 0.25's (`vertical_sample` / `horizontal_sample`
/// with `FilterType::CatmullRom`) step for step, so replaying it — [`resize_replayed`] here,
/// the CUDA kernels of `fused.rs` on the card — reproduces [`resize`] bit for bit.
#[derive(Clone, Debug, PartialEq)]
pub struct ResizeAxis {
    pub left: Vec<u32>,
    pub count: Vec<u32>,
    pub offset: Vec<u32>,
    pub weights: Vec<f32>,
}

fn catmull_rom(x: f32) -> f32 {
    let (b, c) = (0.0f32, 0.5f32);
    let a = x.abs();
    let k = if a < 1.0 {
        (12.0 - 9.0 * b - 6.0 * c) * a.powi(3) + (-18.0 + 12.0 * b + 6.0 * c) * a.powi(2) + (6.0 - 2.0 * b)
    } else if a < 2.0 {
        (-b - 6.0 * c) * a.powi(3) + (6.0 * b + 30.0 * c) * a.powi(2) + (-12.0 * b - 48.0 * c) * a + (8.0 * b + 24.0 * c)
    } else {
        0.0
    };
    k / 6.0
}

/// The weights that resample `src` samples to `dst` (see [`ResizeAxis`]).
pub fn resize_axis(src: u32, dst: u32) -> ResizeAxis {
    let ratio = src as f32 / dst as f32;
    let sratio = if ratio < 1.0 { 1.0 } else { ratio };
    let support = 2.0 * sratio;
    let mut axis = ResizeAxis { left: Vec::new(), count: Vec::new(), offset: Vec::new(), weights: Vec::new() };
    for out in 0..dst {
        let input = (out as f32 + 0.5) * ratio;
        let left = ((input - support).floor() as i64).clamp(0, src as i64 - 1);
        let right = ((input + support).ceil() as i64).clamp(left + 1, src as i64);
        let input = input - 0.5;
        let start = axis.weights.len();
        let mut sum = 0.0f32;
        for i in left..right {
            let w = catmull_rom((i as f32 - input) / sratio);
            axis.weights.push(w);
            sum += w;
        }
        for w in &mut axis.weights[start..] {
            *w /= sum;
        }
        axis.left.push(left as u32);
        axis.count.push((right - left) as u32);
        axis.offset.push(start as u32);
    }
    axis
}

/// [`resize`] replayed from [`resize_axis`] weights: rows first into f32, then columns,
/// rounded to the nearest byte (what the CUDA resize computes).
pub fn resize_replayed(img: &RgbImage, size: usize) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == size && h == size {
        return img.clone();
    }
    let (rows, cols) = (resize_axis(h as u32, size as u32), resize_axis(w as u32, size as u32));
    let src = img.as_raw();
    let mut tmp = vec![0f32; size * w * 3];
    for oy in 0..size {
        let (l, n, o) = (rows.left[oy] as usize, rows.count[oy] as usize, rows.offset[oy] as usize);
        for x in 0..w * 3 {
            let mut t = 0.0f32;
            for i in 0..n {
                t += src[(l + i) * w * 3 + x] as f32 * rows.weights[o + i];
            }
            tmp[oy * w * 3 + x] = t;
        }
    }
    let mut out = vec![0u8; size * size * 3];
    for y in 0..size {
        for ox in 0..size {
            let (l, n, o) = (cols.left[ox] as usize, cols.count[ox] as usize, cols.offset[ox] as usize);
            for c in 0..3 {
                let mut t = 0.0f32;
                for i in 0..n {
                    t += tmp[(y * w + l + i) * 3 + c] * cols.weights[o + i];
                }
                out[(y * size + ox) * 3 + c] = t.clamp(0.0, 255.0).round() as u8;
            }
        }
    }
    RgbImage::from_raw(size as u32, size as u32, out).expect("size·size·3 bytes")
}
