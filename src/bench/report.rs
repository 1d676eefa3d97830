//! The `--report DIR` page: plots (PNG) and a grid of final frames around one HTML file
//! that says at a glance how the run went.

use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{Context as _, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};
use vela_runtime::Image;

use super::stats::{wilson, BenchStats, EpisodeRecord};

const GREEN: RGBColor = RGBColor(46, 160, 67);
const RED: RGBColor = RGBColor(207, 34, 46);
const BLUE: RGBColor = RGBColor(9, 105, 218);
const SIZE: (u32, u32) = (900, 420);
/// Final frames shown per outcome.
const GRID_PER_OUTCOME: usize = 4;
const THUMB: u32 = 200;

/// plotters draws text with ab_glyph from a registered font: DejaVu Sans from the package
/// that gives TextOverlay its font (proportional digits read better on axes), else that font
/// itself; no fontconfig or system font lookup is involved.
fn font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut err = None;
    let sans = Path::new(vela_media::DEFAULT_FONT).with_file_name("DejaVuSans.ttf");
    ONCE.call_once(|| match std::fs::read(&sans).or_else(|_| std::fs::read(vela_media::DEFAULT_FONT)) {
        Ok(bytes) => {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if register_font("sans-serif", FontStyle::Normal, bytes).is_err() {
                err = Some(format!("{} is not a usable font", vela_media::DEFAULT_FONT));
            }
        }
        Err(e) => err = Some(format!("cannot read {}: {e} (install fonts-dejavu-core)", vela_media::DEFAULT_FONT)),
    });
    match err {
        Some(e) => anyhow::bail!(e),
        None => Ok(()),
    }
}

fn frame_path(dir: &Path, seed: u64) -> PathBuf {
    dir.join("frames").join(format!("seed{seed:06}.png"))
}

/// Saves an episode's final frame (as the run goes, so a resumed run still has them).
pub fn save_frame(dir: &Path, rec: &EpisodeRecord, img: &Image) -> Result<()> {
    let buf = image::RgbImage::from_raw(img.width, img.height, img.data.to_vec()).context("frame size does not match its data")?;
    let path = frame_path(dir, rec.seed);
    buf.save(&path).with_context(|| format!("writing {}", path.display()))
}

/// Writes the plots, frame grid and `index.html`; returns the HTML's path.
pub fn write(dir: &Path, stats: &BenchStats, stats_file: Option<&Path>) -> Result<PathBuf> {
    font()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let plot_err = |what: &'static str| move |e: Box<dyn std::error::Error>| anyhow::anyhow!("drawing {what}: {e}");
    success_plot(&dir.join("success.png"), stats).map_err(plot_err("success.png"))?;
    steps_plot(&dir.join("steps.png"), stats).map_err(plot_err("steps.png"))?;
    latency_plot(&dir.join("latency.png"), stats).map_err(plot_err("latency.png"))?;
    let shown = frame_grid(dir, stats).map_err(plot_err("frames.png"))?;
    let html = dir.join("index.html");
    std::fs::write(&html, page(stats, stats_file, shown)).with_context(|| format!("writing {}", html.display()))?;
    Ok(html)
}

type PlotResult<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Draws into an RGB buffer and saves it as PNG with the `image` crate (the one the rest of
/// Vela uses), so plotters needs no encoder of its own.
fn render(path: &Path, (w, h): (u32, u32), mut buf: Vec<u8>, draw: impl FnOnce(&Area) -> PlotResult) -> PlotResult {
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(&root)?;
        root.present()?;
    }
    image::RgbImage::from_raw(w, h, buf).ok_or("plot buffer size")?.save(path)?;
    Ok(())
}

fn blank((w, h): (u32, u32)) -> Vec<u8> {
    vec![255u8; (w * h * 3) as usize]
}

/// Each episode as a tick (top = success, bottom = failure) under the running success
/// rate and its Wilson 95% band: whether the rate has settled is visible at once. The legend
/// sits in a strip of its own above the chart: inside it, any corner hides either the tick
/// rows or, near 50 %, the rate line.
fn success_plot(path: &Path, stats: &BenchStats) -> PlotResult {
    render(path, SIZE, blank(SIZE), |root| {
        let n = stats.episodes.len().max(1);
        let root = root.titled(&format!("Success over episodes: {:.1}% of {}", stats.summary.success_pct, stats.summary.episodes), ("sans-serif", 22))?;
        let (strip, body) = root.split_vertically(30);
        success_legend(&strip)?;
        let mut chart = ChartBuilder::on(&body)
            .margin(12)
            .margin_top(4)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..n as f64 + 1.0, -5f64..105f64)?;
        chart
            .configure_mesh()
            .x_desc("episodes finished")
            .y_desc("success rate %")
            .x_labels(n.min(10) + 1)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 15))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        let mut k = 0;
        let (mut rate, mut lo, mut hi) = (Vec::new(), Vec::new(), Vec::new());
        for (i, e) in stats.episodes.iter().enumerate() {
            k += e.success as u64;
            let x = (i + 1) as f64;
            let (l, h) = wilson(k, i as u64 + 1, 1.96);
            rate.push((x, 100.0 * k as f64 / (i + 1) as f64));
            lo.push((x, 100.0 * l));
            hi.push((x, 100.0 * h));
        }
        let band: Vec<(f64, f64)> = hi.iter().copied().chain(lo.iter().rev().copied()).collect();
        chart.draw_series(std::iter::once(Polygon::new(band, BLUE.mix(0.18))))?;
        chart.draw_series(LineSeries::new(rate, BLUE.stroke_width(3)))?;
        chart.draw_series(stats.episodes.iter().enumerate().map(|(i, e)| {
            let (y, c) = if e.success { (102.0, GREEN) } else { (-2.0, RED) };
            Rectangle::new([((i + 1) as f64 - 0.3, y - 2.0), ((i + 1) as f64 + 0.3, y + 2.0)], c.filled())
        }))?;
        Ok(())
    })
}

/// The success plot's legend in one row, centred in `strip` (pixel coordinates).
fn success_legend(strip: &Area) -> PlotResult {
    let font = TextStyle::from(("sans-serif", 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let entries = ["Wilson 95% interval", "running success rate", "episode: success (top) / failure (bottom)"];
    let (swatch, gap, pad) = (22i32, 28i32, 6i32);
    let widths: Vec<i32> = entries
        .iter()
        .map(|t| strip.estimate_text_size(t, &font).map(|(w, _)| w as i32))
        .collect::<Result<_, _>>()?;
    let total = widths.iter().map(|w| swatch + pad + w).sum::<i32>() + gap * (entries.len() as i32 - 1);
    let (w, h) = strip.dim_in_pixel();
    let (mut x, y) = ((w as i32 - total).max(0) / 2, h as i32 / 2);
    for (i, (text, tw)) in entries.iter().zip(&widths).enumerate() {
        match i {
            0 => strip.draw(&Rectangle::new([(x, y - 6), (x + swatch, y + 6)], BLUE.mix(0.18).filled()))?,
            1 => strip.draw(&PathElement::new([(x, y), (x + swatch, y)], BLUE.stroke_width(3)))?,
            _ => {
                strip.draw(&Rectangle::new([(x + 4, y - 7), (x + 9, y + 7)], GREEN.filled()))?;
                strip.draw(&Rectangle::new([(x + 13, y - 7), (x + 18, y + 7)], RED.filled()))?;
            }
        }
        strip.draw(&Text::new(text.to_string(), (x + swatch + pad, y), font.clone()))?;
        x += swatch + pad + tw + gap;
    }
    Ok(())
}

/// Tick count for an axis of whole counts up to `top`, so no tick falls between integers.
fn count_labels(top: f64) -> usize {
    let n = top.floor() as usize + 1;
    if n <= 11 { n } else { 11 }
}

/// Counts per bin of `values` over `[0, max]` in `bins` bins.
fn histogram(values: impl Iterator<Item = f64>, max: f64, bins: usize) -> Vec<u32> {
    let mut h = vec![0u32; bins];
    for v in values {
        let b = ((v / max) * bins as f64).floor().clamp(0.0, bins as f64 - 1.0) as usize;
        h[b] += 1;
    }
    h
}

/// Steps per episode, successes and failures stacked: timeouts pile up at the limit.
fn steps_plot(path: &Path, stats: &BenchStats) -> PlotResult {
    render(path, SIZE, blank(SIZE), |root| {
        let max = stats.config.max_steps.max(1) as f64;
        let bins = 20;
        let ok = histogram(stats.episodes.iter().filter(|e| e.success).map(|e| e.steps as f64), max, bins);
        let bad = histogram(stats.episodes.iter().filter(|e| !e.success).map(|e| e.steps as f64), max, bins);
        let top = ok.iter().zip(&bad).map(|(a, b)| a + b).max().unwrap_or(0).max(1) as f64 * 1.15;
        let mean = stats.summary.mean_steps_success.map_or("no successes".into(), |m| format!("successes take {m:.0} on average"));
        let mut chart = ChartBuilder::on(root)
            .caption(format!("Steps per episode ({mean}; limit {})", stats.config.max_steps), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..max, 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("steps")
            .y_desc("episodes")
            .y_labels(count_labels(top))
            .light_line_style(WHITE.mix(0.0))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 15))
            .draw()?;
        let w = max / bins as f64;
        let bar = |i: usize, y0: f64, y1: f64, c: RGBColor| {
            Rectangle::new([(i as f64 * w + w * 0.08, y0), ((i + 1) as f64 * w - w * 0.08, y1)], c.filled())
        };
        chart
            .draw_series(ok.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| bar(i, 0.0, *c as f64, GREEN)))?
            .label("success")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], GREEN.filled()));
        chart
            .draw_series(bad.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| bar(i, ok[i] as f64, (ok[i] + c) as f64, RED)))?
            .label("failure (step limit)")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], RED.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 15))
            .draw()?;
        Ok(())
    })
}

/// Mean policy latency per episode (frame out → action in).
fn latency_plot(path: &Path, stats: &BenchStats) -> PlotResult {
    render(path, SIZE, blank(SIZE), |root| {
        let ms: Vec<f64> = stats.episodes.iter().filter_map(|e| e.policy_ms_mean).collect();
        if ms.is_empty() {
            let note = "No policy latency: the simulator's built-in motion drove this run";
            root.draw(&Text::new(note, (40, SIZE.1 as i32 / 2), ("sans-serif", 22).into_font()))?;
            return Ok(());
        }
        let max = ms.iter().cloned().fold(0.0, f64::max) * 1.1 + 1e-3;
        let bins = 25;
        let h = histogram(ms.iter().copied(), max, bins);
        let top = *h.iter().max().unwrap_or(&1) as f64 * 1.15;
        let worst_p95 = stats.episodes.iter().filter_map(|e| e.policy_ms_p95).fold(0.0, f64::max);
        let mean = ms.iter().sum::<f64>() / ms.len() as f64;
        let mut chart = ChartBuilder::on(root)
            .caption(format!("Policy latency per episode: mean {mean:.1} ms, worst p95 {worst_p95:.1} ms"), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..max, 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("episode mean, ms per step (frame out to action in)")
            .y_desc("episodes")
            .y_labels(count_labels(top))
            .light_line_style(WHITE.mix(0.0))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 15))
            .draw()?;
        let w = max / bins as f64;
        chart.draw_series(h.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| {
            Rectangle::new([(i as f64 * w + w * 0.08, 0.0), ((i + 1) as f64 * w - w * 0.08, *c as f64)], BLUE.filled())
        }))?;
        Ok(())
    })
}

/// A few successes (top row) and failures (bottom row) as their last frame; returns how
/// many frames it found.
fn frame_grid(dir: &Path, stats: &BenchStats) -> PlotResult<usize> {
    let pick = |success: bool| -> Vec<(&EpisodeRecord, image::RgbImage)> {
        stats
            .episodes
            .iter()
            .filter(|e| e.success == success)
            .filter_map(|e| image::open(frame_path(dir, e.seed)).ok().map(|i| (e, i.to_rgb8())))
            .take(GRID_PER_OUTCOME)
            .collect()
    };
    let rows = [(true, pick(true)), (false, pick(false))];
    let label_h = 26;
    // A row without frames shrinks to its one-line note.
    let row_h = |frames: &[(&EpisodeRecord, image::RgbImage)]| if frames.is_empty() { label_h + 4 } else { THUMB + label_h + 8 };
    let tops = [38, 38 + row_h(&rows[0].1)];
    let (w, h) = (GRID_PER_OUTCOME as u32 * (THUMB + 8) + 8, tops[1] + row_h(&rows[1].1) + 4);
    let mut buf = blank((w, h));
    // Frames first, straight into the buffer; labels are drawn over it by plotters.
    for (r, (_, frames)) in rows.iter().enumerate() {
        for (c, (_, img)) in frames.iter().enumerate() {
            let thumb = image::imageops::resize(img, THUMB, THUMB, image::imageops::FilterType::Triangle);
            let (x0, y0) = (8 + c as u32 * (THUMB + 8), tops[r] + label_h);
            for (x, y, p) in thumb.enumerate_pixels() {
                let i = (((y0 + y) * w + x0 + x) * 3) as usize;
                buf[i..i + 3].copy_from_slice(&p.0);
            }
        }
    }
    render(&dir.join("frames.png"), (w, h), buf, |root| {
        root.draw(&Text::new("Final frames", (8, 6), ("sans-serif", 20).into_font()))?;
        for (r, (success, frames)) in rows.iter().enumerate() {
            let y = tops[r] as i32;
            if frames.is_empty() {
                let what = if *success { "no successes" } else { "no failures" };
                root.draw(&Text::new(what, (8, y + 4), ("sans-serif", 16).into_font()))?;
            }
            for (c, (e, _)) in frames.iter().enumerate() {
                let x = 8 + c as i32 * (THUMB + 8) as i32;
                let (mark, colour) = if *success { ("success", GREEN) } else { ("fail", RED) };
                let text = format!("{mark} · seed {} · {} steps", e.seed, e.steps);
                root.draw(&Text::new(text, (x, y + 4), ("sans-serif", 15).into_font().color(&colour)))?;
            }
        }
        Ok(())
    })?;
    Ok(rows.iter().map(|(_, f)| f.len()).sum())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn page(stats: &BenchStats, stats_file: Option<&Path>, frames: usize) -> String {
    let (c, s) = (&stats.config, &stats.summary);
    let opt = |v: Option<f64>, unit: &str| v.map_or("–".to_string(), |x| format!("{x:.1}{unit}"));
    let verdict_colour = if s.success_pct >= 50.0 { "#2ea043" } else { "#cf222e" };
    let facts = [
        ("Preset", esc(&c.preset)),
        ("Variant", esc(&c.variant)),
        ("Policy", esc(&c.model)),
        ("Quantization", esc(c.quantization.as_deref().unwrap_or("–"))),
        ("Episodes", format!("{} of {}{}", s.episodes, c.episodes, if s.complete { "" } else { " (stopped early)" })),
        ("Seeds", format!("{} … {}", c.seed, c.seed + c.episodes.saturating_sub(1))),
        ("Step limit", c.max_steps.to_string()),
        ("Mean steps (successes / all)", format!("{} / {}", opt(s.mean_steps_success, ""), opt(s.mean_steps_all, ""))),
        ("Policy latency (mean)", opt(s.policy_ms_mean, " ms")),
        ("Parallel environments", c.parallel.to_string()),
        ("Simulator steps per second", format!("{:.1}", s.fps)),
        ("Wall time", format!("{:.1} s", s.wall_s)),
        ("Machine", esc(&s.machine)),
    ];
    let mut facts = facts.to_vec();
    if let Some((counts, other)) = super::stats::stage_counts(&stats.episodes) {
        // Where the failures stopped: the furthest stage each episode reached.
        let cells: Vec<String> = counts.iter().map(|(name, n)| format!("{name} <b>{n}</b>")).collect();
        facts.push(("Episodes by furthest stage", cells.join(" · ")));
        facts.push(("Grasped the cube that should stay", other.to_string()));
    }
    let facts: String = facts.iter().map(|(k, v)| format!("<tr><th>{k}</th><td>{v}</td></tr>\n")).collect();
    let rows: String = stats
        .episodes
        .iter()
        .map(|e| {
            format!(
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td></tr>\n",
                if e.success { "ok" } else { "bad" },
                e.index,
                e.seed,
                esc(&e.instruction),
                if e.success { "success" } else { "fail" },
                esc(e.stage.as_deref().unwrap_or("–")),
                e.steps,
                opt(e.policy_ms_mean, ""),
                opt(e.policy_ms_p95, ""),
                e.wall_s
            )
        })
        .collect();
    let stats_link = stats_file
        .map(|p| format!("<p>Raw numbers: <code>{}</code></p>", esc(&p.display().to_string())))
        .unwrap_or_default();
    let latency_html = if s.policy_ms_mean.is_some() {
        "<img src=\"latency.png\" alt=\"latency histogram\">"
    } else {
        "<p>No policy latency: the simulator's built-in motion drove this run.</p>"
    };
    let frames_html = if frames > 0 { "<img src=\"frames.png\" alt=\"final frames\">" } else { "<p>No frames were saved for this run.</p>" };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vela bench: {preset}</title>
<style>
body {{ font-family: DejaVu Sans, sans-serif; margin: 24px auto; max-width: 960px; color: #1f2328; }}
.verdict {{ font-size: 44px; font-weight: bold; color: {verdict_colour}; margin: 4px 0; }}
.sub {{ color: #59636e; margin-bottom: 18px; }}
table {{ border-collapse: collapse; }}
.facts th {{ text-align: left; padding: 3px 16px 3px 0; color: #59636e; font-weight: normal; }}
.episodes td, .episodes th {{ padding: 2px 10px; border-bottom: 1px solid #eee; font-size: 13px; text-align: right; }}
.episodes td:nth-child(3) {{ text-align: left; }}
tr.ok td:nth-child(4) {{ color: #2ea043; }} tr.bad td:nth-child(4) {{ color: #cf222e; }}
img {{ max-width: 100%; border: 1px solid #ddd; margin: 8px 0; }}
</style></head><body>
<h1>Success benchmark: {preset}</h1>
<div class="verdict">{succ}/{n} successes ({pct:.1}%)</div>
<div class="sub">95% Wilson interval {lo:.1}% – {hi:.1}% · {variant} · {steps} step limit</div>
<table class="facts">
{facts}</table>
{stats_link}
<h2>Success rate</h2><img src="success.png" alt="success over episodes">
<h2>Steps</h2><img src="steps.png" alt="steps histogram">
<h2>Policy latency</h2>{latency_html}
<h2>Final frames</h2>{frames_html}
<h2>Episodes</h2>
<details><summary>{n} episodes</summary>
<table class="episodes"><tr><th>#</th><th>seed</th><th>instruction</th><th>outcome</th><th>furthest stage</th><th>steps</th><th>policy ms</th><th>p95 ms</th><th>wall s</th></tr>
{rows}</table></details>
</body></html>
"#,
        preset = esc(&c.preset),
        succ = s.successes,
        n = s.episodes,
        pct = s.success_pct,
        lo = s.wilson95_pct[0],
        hi = s.wilson95_pct[1],
        variant = esc(&c.variant),
        steps = c.max_steps,
    )
}
