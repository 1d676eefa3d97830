//! TextOverlay: draws the latest texts (instructions, transcripts, action vectors) on
//! each frame, on a translucent box so they stay readable over any scene.

use std::sync::Arc;

use ab_glyph::{Font, FontArc, PxScale, ScaleFont};
use serde_json::Value;
use vela_runtime::{
    Context, DataType, Image, Message, Node, NodeDescriptor, NodeError, NodeInit, ParamKind, ParamSpec, Payload,
};

pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub [u8; 3]);

impl Rgb {
    /// Parses `#rrggbb` (or `rrggbb`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let h = s.trim().trim_start_matches('#');
        if h.len() != 6 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("{s:?} is not a colour like #78d715"));
        }
        let byte = |i: usize| u8::from_str_radix(&h[i..i + 2], 16).unwrap();
        Ok(Rgb([byte(0), byte(2), byte(4)]))
    }
}

/// Action vectors as the reference prints them: 3 decimals, no brackets.
pub fn format_actions(values: &[f32]) -> String {
    // A chunk of several 7-D actions would run off the frame: the current one and a count.
    let (shown, more) = if values.len() > 7 && values.len() % 7 == 0 { (&values[..7], values.len() / 7 - 1) } else { (values, 0) };
    let s = shown.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(" ");
    if more > 0 { format!("{s} (+{more} more)") } else { s }
}

struct Style {
    font: FontArc,
    font_path: String,
    size: f32,
    color: Rgb,
    background: Rgb,
    opacity: f32,
    x: i32,
    y: i32,
    line_spacing: f32,
    line_length: i64,
    prefix: String,
}

pub struct TextOverlay {
    style: Style,
    multiple_inputs: bool,
    partial_refresh: bool,
    /// Latest text per sender and kind (a node's instruction and its action vector are
    /// separate lines), in first-seen order.
    texts: Vec<(Arc<str>, String)>,
    frames: u64,
}

fn load_font(path: &str) -> Result<FontArc, NodeError> {
    let bytes = std::fs::read(path).map_err(|e| {
        NodeError::param("font", format!("cannot read {path}: {e} (Debian's fonts-dejavu-core provides the default; scripts/setup.sh installs it)"))
    })?;
    FontArc::try_from_vec(bytes).map_err(|_| NodeError::param("font", format!("{path} is not a TrueType/OpenType font")))
}

impl TextOverlay {
    pub fn descriptor() -> NodeDescriptor {
        let f = |min: f64, max: f64| ParamKind::Float { min: Some(min), max: Some(max) };
        NodeDescriptor::new("TextOverlay", "Video", "Text overlay")
            .describe("Draws the latest text from each input (instruction, transcript, action vector) onto the frames.")
            .input("image", &[DataType::Image], "frames to draw on")
            .input("text", &[DataType::Text, DataType::Actions, DataType::Json], "texts; action vectors are printed with 3 decimals")
            .output("image", DataType::Image, "frames with text")
            .param(ParamSpec::new("font", ParamKind::Path, DEFAULT_FONT, "TrueType font file"))
            .param(ParamSpec::new("font_size", f(4.0, 200.0), 16.0, "pixels"))
            .param(ParamSpec::new("prefix_text", ParamKind::String, "", "put before every line"))
            .param(ParamSpec::new("color", ParamKind::Color, "#78d715", "colour of the first text (#rrggbb); others are white"))
            .param(ParamSpec::new("background", ParamKind::Color, "#000000", "box colour (#rrggbb)"))
            .param(ParamSpec::new("opacity", f(0.0, 1.0), 0.4, "box opacity"))
            .param(ParamSpec::new("x", ParamKind::Int { min: Some(0), max: Some(8192) }, 5, "left edge"))
            .param(ParamSpec::new("y", ParamKind::Int { min: Some(0), max: Some(8192) }, 5, "top edge"))
            .param(ParamSpec::new("line_spacing", f(0.0, 400.0), 0.0, "pixels between lines (0 = font size + 4)"))
            .param(ParamSpec::new(
                "line_length",
                ParamKind::Int { min: Some(-1), max: Some(10_000) },
                0,
                "characters per line (0 = fit the frame, -1 = never wrap)",
            ))
            .param(ParamSpec::new("multiple_inputs", ParamKind::Bool, true, "keep one line per sender instead of one in total"))
            .param(ParamSpec::new("partial_refresh", ParamKind::Bool, true, "a shorter partial text overwrites only the start (less flicker while streaming)"))
    }

    pub fn new(init: &NodeInit) -> Result<Self, NodeError> {
        let p = init.params;
        let font_path = p.str("font")?.to_string();
        let style = Style {
            font: load_font(&font_path)?,
            font_path,
            size: p.f64("font_size")? as f32,
            color: Rgb::parse(p.str("color")?).map_err(|e| NodeError::param("color", e))?,
            background: Rgb::parse(p.str("background")?).map_err(|e| NodeError::param("background", e))?,
            opacity: p.f64("opacity")? as f32,
            x: p.i64("x")? as i32,
            y: p.i64("y")? as i32,
            line_spacing: p.f64("line_spacing")? as f32,
            line_length: p.i64("line_length")?,
            prefix: p.str("prefix_text")?.to_string(),
        };
        Ok(TextOverlay {
            style,
            multiple_inputs: p.bool("multiple_inputs")?,
            partial_refresh: p.bool("partial_refresh")?,
            texts: Vec::new(),
            frames: 0,
        })
    }

    fn store(&mut self, sender: Arc<str>, kind: DataType, text: String, partial: bool) {
        let key: Arc<str> = if self.multiple_inputs { Arc::from(format!("{sender}/{kind}")) } else { Arc::from("default") };
        match self.texts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, old)) => {
                if partial && self.partial_refresh && text.len() < old.len() && old.is_char_boundary(text.len()) {
                    old.replace_range(..text.len(), &text);
                } else {
                    *old = text;
                }
            }
            None => self.texts.push((key, text)),
        }
    }

    /// Splits a text into display lines of at most `max_chars` characters.
    fn wrap(text: &str, max_chars: usize) -> Vec<String> {
        let mut lines = Vec::new();
        for raw in text.lines() {
            if max_chars == 0 {
                lines.push(raw.to_string());
                continue;
            }
            let mut line = String::new();
            for word in raw.split(' ') {
                let fits = line.chars().count() + usize::from(!line.is_empty()) + word.chars().count() <= max_chars;
                if !line.is_empty() && !fits {
                    lines.push(std::mem::take(&mut line));
                }
                if !line.is_empty() {
                    line.push(' ');
                }
                line.push_str(word);
                while line.chars().count() > max_chars {
                    let head: String = line.chars().take(max_chars).collect();
                    line = line.chars().skip(max_chars).collect();
                    lines.push(head);
                }
            }
            lines.push(line);
        }
        lines
    }

    /// Draws every stored text on a copy of the frame.
    pub fn draw(&self, img: &Image) -> Image {
        let (w, h) = (img.width as i32, img.height as i32);
        let mut px = img.data.to_vec();
        let s = &self.style;
        let scale = PxScale::from(s.size);
        let font = s.font.as_scaled(scale);
        let spacing = if s.line_spacing > 0.0 { s.line_spacing } else { s.size + 4.0 };
        let max_chars = match s.line_length {
            -1 => 0,
            0 => ((w - s.x).max(1) as f32 / font.h_advance(font.glyph_id('0')).max(1.0)).floor().max(1.0) as usize,
            n => n as usize,
        };
        let alpha = s.opacity.clamp(0.0, 1.0);
        let mut y = s.y as f32;
        for (i, (_, text)) in self.texts.iter().enumerate() {
            let color = if i == 0 { s.color } else { Rgb([255, 255, 255]) };
            let full = format!("{}{}", s.prefix, text);
            for line in Self::wrap(&full, max_chars) {
                let width: f32 = line.chars().map(|c| font.h_advance(font.glyph_id(c))).sum();
                // Background box behind the line.
                if alpha > 0.0 {
                    let (x0, y0) = (s.x - 2, y as i32);
                    let (x1, y1) = ((s.x as f32 + width + 2.0) as i32, (y + spacing) as i32 - 2);
                    for yy in y0.max(0)..y1.min(h) {
                        for xx in x0.max(0)..x1.min(w) {
                            blend(&mut px, w, xx, yy, s.background.0, alpha);
                        }
                    }
                }
                let mut caret = s.x as f32;
                let baseline = y + font.ascent();
                for c in line.chars() {
                    let gid = font.glyph_id(c);
                    let glyph = gid.with_scale_and_position(scale, ab_glyph::point(caret, baseline));
                    caret += font.h_advance(gid);
                    if let Some(outline) = s.font.outline_glyph(glyph) {
                        let b = outline.px_bounds();
                        outline.draw(|gx, gy, cov| {
                            let (xx, yy) = (b.min.x as i32 + gx as i32, b.min.y as i32 + gy as i32);
                            if xx >= 0 && yy >= 0 && xx < w && yy < h {
                                blend(&mut px, w, xx, yy, color.0, cov.min(1.0));
                            }
                        });
                    }
                }
                y += spacing;
            }
        }
        Image { width: img.width, height: img.height, data: px.into(), timestamp: img.timestamp }
    }
}

fn blend(px: &mut [u8], w: i32, x: i32, y: i32, c: [u8; 3], a: f32) {
    let i = ((y * w + x) * 3) as usize;
    for k in 0..3 {
        px[i + k] = (px[i + k] as f32 * (1.0 - a) + c[k] as f32 * a).round() as u8;
    }
}

impl Node for TextOverlay {
    fn on_input(&mut self, port: &str, msg: Message, ctx: &mut Context) -> Result<(), NodeError> {
        match (port, msg.payload) {
            ("image", Payload::Image(img)) => {
                self.frames += 1;
                let out = if self.texts.is_empty() { img } else { self.draw(&img) };
                ctx.send("image", out)
            }
            (_, Payload::Text(t)) => {
                let text = t.text.replace("</s>", "").replace("###", "");
                self.store(msg.sender, DataType::Text, text.trim().to_string(), !t.is_final);
                Ok(())
            }
            (_, Payload::Actions(a)) => {
                self.store(msg.sender, DataType::Actions, format_actions(&a.values), a.partial);
                Ok(())
            }
            (_, Payload::Json(v)) => {
                let text = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                self.store(msg.sender, DataType::Json, text, false);
                Ok(())
            }
            (_, other) => Err(NodeError::msg(format!("TextOverlay cannot draw {}", other.describe()))),
        }
    }

    fn set_param(&mut self, name: &str, value: &Value, _: &mut Context) -> Result<(), NodeError> {
        let s = &mut self.style;
        let num = || value.as_f64().ok_or_else(|| NodeError::param(name, "expected a number"));
        let text = || value.as_str().ok_or_else(|| NodeError::param(name, "expected a string"));
        match name {
            "font" => {
                s.font = load_font(text()?)?;
                s.font_path = text()?.to_string();
            }
            "font_size" => s.size = num()? as f32,
            "prefix_text" => s.prefix = text()?.to_string(),
            "color" => s.color = Rgb::parse(text()?).map_err(|e| NodeError::param(name, e))?,
            "background" => s.background = Rgb::parse(text()?).map_err(|e| NodeError::param(name, e))?,
            "opacity" => s.opacity = num()? as f32,
            "x" => s.x = num()? as i32,
            "y" => s.y = num()? as i32,
            "line_spacing" => s.line_spacing = num()? as f32,
            "line_length" => s.line_length = num()? as i64,
            "multiple_inputs" => {
                self.multiple_inputs = value.as_bool().unwrap_or(true);
                self.texts.clear();
            }
            "partial_refresh" => self.partial_refresh = value.as_bool().unwrap_or(true),
            _ => return Err(NodeError::param(name, "unknown")),
        }
        Ok(())
    }

    fn summary(&self) -> Option<String> {
        Some(format!("{} texts, {} frames", self.texts.len(), self.frames))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_parse_and_reject_junk() {
        assert_eq!(Rgb::parse("#78d715"), Ok(Rgb([0x78, 0xd7, 0x15])));
        assert_eq!(Rgb::parse("000000"), Ok(Rgb([0, 0, 0])));
        assert!(Rgb::parse("#78d71").is_err());
        assert!(Rgb::parse("green").is_err());
    }

    #[test]
    fn actions_print_like_the_reference() {
        assert_eq!(format_actions(&[0.0123, -0.3, 1.0]), "0.012 -0.300 1.000");
        let chunk: Vec<f32> = (0..21).map(|i| i as f32).collect();
        assert_eq!(format_actions(&chunk), "0.000 1.000 2.000 3.000 4.000 5.000 6.000 (+2 more)");
    }

    #[test]
    fn wrapping_respects_the_limit() {
        let lines = TextOverlay::wrap("put the red block on the green block", 12);
        assert!(lines.iter().all(|l| l.chars().count() <= 12), "{lines:?}");
        assert_eq!(lines.join(" "), "put the red block on the green block");
        assert_eq!(TextOverlay::wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(TextOverlay::wrap("no wrap here", 0), vec!["no wrap here"]);
    }
}
