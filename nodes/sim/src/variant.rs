//! Task variants, cameras, cube colours and instruction text.
use std::fmt;
use std::str::FromStr;

use rand::Rng;

use crate::error::SimError;

/// The MimicGen Stack variants plus our language variant.
///
/// D0-D4 follow the MimicGen fork: D0 is robosuite's Stack, D1 widens the
/// spawn area and the agentview camera, D2-D4 randomise colours and
/// instructions at different rates. `Lang` exists because in D0-D4 the small
/// cube always goes on the big one, so a policy can ignore the instruction;
/// here the instruction decides which cube is moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    D0,
    D1,
    D2,
    D3,
    D4,
    Lang,
}

impl Variant {
    pub const ALL: [Variant; 6] = [
        Variant::D0,
        Variant::D1,
        Variant::D2,
        Variant::D3,
        Variant::D4,
        Variant::Lang,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::D0 => "Stack_D0",
            Variant::D1 => "Stack_D1",
            Variant::D2 => "Stack_D2",
            Variant::D3 => "Stack_D3",
            Variant::D4 => "Stack_D4",
            Variant::Lang => "Stack_Lang",
        }
    }

    /// Half-width of the square in which cube centres are sampled (metres).
    pub fn spawn_range(self) -> f64 {
        match self {
            Variant::D0 => 0.08,
            _ => 0.20,
        }
    }

    /// Whether `agentview` is moved back to show the whole table (D1 and up).
    pub fn wide_camera(self) -> bool {
        !matches!(self, Variant::D0)
    }

    pub fn colours_per_episode(self) -> bool {
        matches!(
            self,
            Variant::D2 | Variant::D3 | Variant::D4 | Variant::Lang
        )
    }
    pub fn colours_per_step(self) -> bool {
        matches!(self, Variant::D4)
    }
    pub fn instruction_per_episode(self) -> bool {
        matches!(
            self,
            Variant::D2 | Variant::D3 | Variant::D4 | Variant::Lang
        )
    }
    pub fn instruction_per_step(self) -> bool {
        matches!(self, Variant::D3 | Variant::D4)
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = SimError;
    /// Accepts `Stack_D2`, `stack_d2`, `D2`; `Stack_Lang`/`Lang`.
    fn from_str(s: &str) -> Result<Self, SimError> {
        let l = s.trim().to_ascii_lowercase();
        let short = l.strip_prefix("stack_").unwrap_or(&l);
        Ok(match short {
            "d0" => Variant::D0,
            "d1" => Variant::D1,
            "d2" => Variant::D2,
            "d3" => Variant::D3,
            "d4" => Variant::D4,
            "lang" | "language" => Variant::Lang,
            _ => return Err(SimError::UnknownVariant(s.to_string())),
        })
    }
}

/// Fixed cameras of robosuite's table arena, plus one composite view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Camera {
    #[default]
    Agentview,
    Frontview,
    Birdview,
    /// agentview with the Panda's wrist camera (`eye_in_hand`) inset in the bottom-right
    /// corner, where the D1+ view shows only the front of the table. OpenVLA sees one image,
    /// and from agentview alone the height of the hand over a cube is hard to judge; the wrist
    /// view is what makes image policies work on Stack in robomimic. One frame carries both.
    AgentviewHand,
}

impl Camera {
    pub const ALL: [Camera; 4] = [
        Camera::Agentview,
        Camera::Frontview,
        Camera::Birdview,
        Camera::AgentviewHand,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Camera::Agentview => "agentview",
            Camera::Frontview => "frontview",
            Camera::Birdview => "birdview",
            Camera::AgentviewHand => "agentview_hand",
        }
    }

    /// The MuJoCo camera the main image comes from.
    pub fn mj_name(self) -> &'static str {
        match self {
            Camera::AgentviewHand => "agentview",
            c => c.name(),
        }
    }

    /// The MuJoCo camera drawn as an inset, if any.
    pub fn inset(self) -> Option<&'static str> {
        match self {
            Camera::AgentviewHand => Some("robot0_eye_in_hand"),
            _ => None,
        }
    }
}

impl fmt::Display for Camera {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Camera {
    type Err = SimError;
    fn from_str(s: &str) -> Result<Self, SimError> {
        let wanted = s.trim().to_ascii_lowercase().replace('+', "_");
        Camera::ALL
            .into_iter()
            .find(|c| c.name() == wanted)
            .ok_or_else(|| SimError::UnknownCamera(s.to_string()))
    }
}

/// The six cube colours of the MimicGen fork.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CubeColor {
    Red,
    Orange,
    Yellow,
    Green,
    Blue,
    Purple,
}

impl CubeColor {
    pub const ALL: [CubeColor; 6] = [
        CubeColor::Red,
        CubeColor::Orange,
        CubeColor::Yellow,
        CubeColor::Green,
        CubeColor::Blue,
        CubeColor::Purple,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CubeColor::Red => "red",
            CubeColor::Orange => "orange",
            CubeColor::Yellow => "yellow",
            CubeColor::Green => "green",
            CubeColor::Blue => "blue",
            CubeColor::Purple => "purple",
        }
    }

    /// Tint applied to the light wood texture. Chosen so the six colours stay
    /// distinguishable after texture modulation and at 224 px.
    pub fn rgba(self) -> [f32; 4] {
        match self {
            CubeColor::Red => [0.85, 0.12, 0.10, 1.0],
            CubeColor::Orange => [0.95, 0.50, 0.08, 1.0],
            CubeColor::Yellow => [0.95, 0.88, 0.15, 1.0],
            CubeColor::Green => [0.15, 0.70, 0.20, 1.0],
            CubeColor::Blue => [0.12, 0.30, 0.90, 1.0],
            CubeColor::Purple => [0.55, 0.18, 0.75, 1.0],
        }
    }
}

impl fmt::Display for CubeColor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which cube goes on which. In D0-D4 it is always the small cube (A) on the
/// big one (B); the language variant may ask for the reverse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackOrder {
    SmallOnBig,
    BigOnSmall,
}

/// Two distinct colours, drawn uniformly.
pub fn draw_colours<R: Rng>(rng: &mut R) -> (CubeColor, CubeColor) {
    let a = rng.random_range(0..6);
    let mut b = rng.random_range(0..5);
    if b >= a {
        b += 1;
    }
    (CubeColor::ALL[a], CubeColor::ALL[b])
}

fn pick<'a, R: Rng>(rng: &mut R, xs: &[&'a str]) -> &'a str {
    xs[rng.random_range(0..xs.len())]
}

/// The fork's template `$PICK the $A $NOUN_A $PLACE $B $NOUN_B`. The colour is
/// listed five times so it is drawn far more often than the size words.
/// `top`/`bottom` are the colours of the cube to move and the target cube.
pub fn draw_instruction<R: Rng>(
    rng: &mut R,
    top: CubeColor,
    bottom: CubeColor,
    order: StackOrder,
) -> String {
    let pick_w = pick(rng, &["stack", "place", "put"]);
    let place = pick(rng, &["on the", "on top of the"]);
    let noun_a = pick(rng, &["block", "cube"]);
    let noun_b = pick(rng, &["block", "cube", "one"]);
    let (ta, tb) = (top.name(), bottom.name());
    let a = match order {
        StackOrder::SmallOnBig => pick(rng, &[ta, ta, ta, ta, ta, "small", "smaller", "little"]),
        StackOrder::BigOnSmall => pick(rng, &[ta, ta, ta, ta, ta, "big", "bigger", "larger"]),
    };
    let b = match order {
        StackOrder::SmallOnBig => pick(rng, &[tb, tb, tb, tb, tb, "big", "larger", "other"]),
        StackOrder::BigOnSmall => pick(rng, &[tb, tb, tb, tb, tb, "small", "smaller", "other"]),
    };
    format!("{pick_w} the {a} {noun_a} {place} {b} {noun_b}")
}

/// Which stacking order an instruction asks for, given the colours of the
/// small (A) and big (B) cube. The cube to move is named before "on"/"onto"
/// and the target after it, by colour or by size word, as the fork's
/// template and most spoken commands phrase it; naming one side is enough.
/// `None` when the text names neither cube or both sides name the same one.
pub fn parse_instruction(text: &str, small: CubeColor, big: CubeColor) -> Option<StackOrder> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let on = words.iter().position(|w| matches!(*w, "on" | "onto"))?;
    // true = the small cube.
    let names = |ws: &[&str]| {
        ws.iter().find_map(|&w| match w {
            _ if w == small.name() => Some(true),
            _ if w == big.name() => Some(false),
            "small" | "smaller" | "smallest" | "little" | "tiny" => Some(true),
            "big" | "bigger" | "biggest" | "large" | "larger" | "largest" => Some(false),
            _ => None,
        })
    };
    let moved_small = match (names(&words[..on]), names(&words[on + 1..])) {
        (Some(m), Some(t)) if m != t => m,
        (Some(_), Some(_)) => return None,
        (Some(m), None) => m,
        (None, Some(t)) => !t,
        (None, None) => return None,
    };
    Some(if moved_small { StackOrder::SmallOnBig } else { StackOrder::BigOnSmall })
}

/// A command as the task keeps it: a transcript's sentence punctuation and stray spacing
/// removed ("Put the red block on the green one." → "Put the red block on the green one").
/// The policy's training instructions carry no full stop, and the prompt template closes with
/// its own "?", so Whisper's "." would put "one.?" in front of a model that never saw it.
pub fn clean_instruction(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let joined = words.join(" ");
    let edge = |c: char| matches!(c, '.' | '!' | '?' | ',' | ';' | ':' | '"' | '\'' | '…' | '“' | '”') || c.is_whitespace();
    joined.trim_matches(edge).to_string()
}

/// The instruction D0/D1 show (the fork's default text).
pub fn default_instruction(top: CubeColor, bottom: CubeColor) -> String {
    format!("put the {top} block on top of the {bottom} block")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn parse_variants() {
        assert_eq!("Stack_D2".parse::<Variant>().unwrap(), Variant::D2);
        assert_eq!("d4".parse::<Variant>().unwrap(), Variant::D4);
        assert_eq!("Stack_Lang".parse::<Variant>().unwrap(), Variant::Lang);
        let e = "Stack_D9".parse::<Variant>().unwrap_err().to_string();
        assert!(e.contains("Stack_D9") && e.contains("Stack_D0"), "{e}");
        assert!("fisheye"
            .parse::<Camera>()
            .unwrap_err()
            .to_string()
            .contains("agentview"));
    }

    #[test]
    fn transcripts_lose_their_sentence_punctuation() {
        assert_eq!(clean_instruction(" Put the red block on the green one. "), "Put the red block on the green one");
        assert_eq!(clean_instruction("\"stack  the green cube\tonto the red one!\""), "stack the green cube onto the red one");
        assert_eq!(clean_instruction("put the red block on the green block"), "put the red block on the green block");
        assert_eq!(clean_instruction("...?"), "");
    }

    #[test]
    fn instructions_parse_back_to_their_order() {
        use StackOrder::*;
        let (r, g) = (CubeColor::Red, CubeColor::Green);
        for (text, want) in [
            ("put the red block on top of the green block", Some(SmallOnBig)),
            ("Stack the green cube onto the red one.", Some(BigOnSmall)),
            ("place the bigger block on the other cube", Some(BigOnSmall)),
            ("put it on the green one", Some(SmallOnBig)),
            ("put the red block on the red block", None),
            ("stack the blue cube on the yellow one", None),
            ("hello there", None),
        ] {
            assert_eq!(parse_instruction(text, r, g), want, "{text}");
        }
        // Every generated instruction reads back as the order it was drawn for.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        for order in [SmallOnBig, BigOnSmall] {
            for _ in 0..200 {
                let (a, b) = draw_colours(&mut rng);
                let (top, bottom) = if order == SmallOnBig { (a, b) } else { (b, a) };
                let s = draw_instruction(&mut rng, top, bottom, order);
                assert_eq!(parse_instruction(&s, a, b), Some(order), "{s}");
            }
        }
    }

    #[test]
    fn instructions_follow_template() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..200 {
            let (a, b) = draw_colours(&mut rng);
            assert_ne!(a, b);
            let s = draw_instruction(&mut rng, a, b, StackOrder::SmallOnBig);
            let w: Vec<&str> = s.split(' ').collect();
            assert!(["stack", "place", "put"].contains(&w[0]), "{s}");
            assert_eq!(w[1], "the");
            assert!(s.contains(" on "), "{s}");
        }
    }
}
