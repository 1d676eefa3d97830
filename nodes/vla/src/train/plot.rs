//! `training.png`: loss, action-token accuracy and L1 against the step, training curves
//! smoothed over a moving window, validation points on top. The loss and L1 axes start after
//! the first steps: a fresh model's loss of 30+ would otherwise flatten the part worth reading.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use super::Metrics;
use crate::{Result, VlaError};

/// The DejaVu font the media nodes' text overlay uses (`fonts-dejavu-core`, installed by the
/// setup scripts); without it the plot is drawn without text.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf";

fn have_font() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| match std::fs::read(FONT) {
        Ok(bytes) => plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice())).is_ok(),
        Err(_) => false,
    })
}

fn smooth(v: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(v.len());
    let mut sum = 0.0;
    for i in 0..v.len() {
        sum += v[i].1;
        if i >= window {
            sum -= v[i - window].1;
        }
        out.push((v[i].0, sum / (i + 1).min(window) as f64));
    }
    out
}

fn err(e: impl std::fmt::Display) -> VlaError {
    VlaError::Train(format!("plot: {e}"))
}

pub fn write_png(path: &Path, train: &[Metrics], val: &[Metrics]) -> Result<()> {
    let (w, h) = (1000u32, 1000u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let text = have_font();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let panels = root.split_evenly((3, 1));
        let window = (train.len() / 50).max(1);
        let max_step = train.iter().chain(val).map(|m| m.step).max().unwrap_or(1).max(1) as f64;
        type Pick = fn(&Metrics) -> f32;
        let series: [(&str, Pick); 3] =
            [("loss", |m| m.loss), ("action-token accuracy", |m| m.accuracy), ("L1 (action units)", |m| m.l1)];
        for (area, (name, pick)) in panels.iter().zip(series) {
            let tr: Vec<(f64, f64)> = train.iter().map(|m| (m.step as f64, pick(m) as f64)).collect();
            let va: Vec<(f64, f64)> = val.iter().map(|m| (m.step as f64, pick(m) as f64)).collect();
            // Scale to what follows the first 5 % of steps (smoothed), and to every validation point.
            let skip = train.len() / 20;
            let later = smooth(&tr, window).into_iter().skip(skip).chain(va.iter().copied());
            let (lo, hi) = later.map(|p| p.1).filter(|x| x.is_finite()).fold((f64::MAX, 0.0f64), |(l, h), x| (l.min(x), h.max(x)));
            let (y_min, y_max) = match name {
                "action-token accuracy" => (0.0, 1.0),
                _ if lo <= hi => ((lo - 0.05 * (hi - lo)).max(0.0), hi + 0.05 * (hi - lo) + 1e-6),
                _ => (0.0, 1.0),
            };
            let mut b = ChartBuilder::on(area);
            b.margin(10);
            if text {
                b.caption(name, ("sans-serif", 20)).x_label_area_size(30).y_label_area_size(50);
            }
            let mut chart = b.build_cartesian_2d(0.0..max_step, y_min..y_max).map_err(err)?;
            let mut mesh = chart.configure_mesh();
            if !text {
                mesh.disable_x_axis().disable_y_axis();
            }
            mesh.x_desc("step").draw().map_err(err)?;
            let s = chart.draw_series(LineSeries::new(smooth(&tr, window), BLUE.stroke_width(2))).map_err(err)?;
            if text {
                s.label("train").legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
            }
            let s = chart
                .draw_series(va.iter().map(|&p| Circle::new(p, 5, RED.filled())))
                .map_err(err)?;
            if text {
                s.label("validation").legend(|(x, y)| Circle::new((x + 10, y), 5, RED.filled()));
                chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(err)?;
            }
        }
        root.present().map_err(err)?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).ok_or_else(|| err("buffer size"))?;
    img.save(path).map_err(|e| VlaError::Train(format!("{}: {e}", path.display())))
}
