//! AutoPrompt: fills a template such as `<text><image>` with the latest inputs.
//!
//! Agent Studio's version re-emits a prompt on every input, so a simulator that sends
//! an instruction and a frame each step produces two prompts per step. Here the
//! `emit_on` parameter decides: by default a prompt goes out when a new image arrives
//! (one per frame); `any` keeps the reference behaviour.

use std::collections::VecDeque;

use serde_json::Value;
use vela_runtime::{
    Context, DataType, Image, Message, Node, NodeDescriptor, NodeError, NodeInit, ParamKind, ParamSpec, Payload, Prompt,
    PromptPart,
};

#[derive(Debug, Clone, PartialEq)]
pub enum TemplatePiece {
    Literal(String),
    /// The `index`-th oldest of the last `depth` texts.
    Text(usize),
    Image(usize),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TemplateError {
    #[error("unknown tag <{0}> (known: <text>, <txt>, <msg>, <image>, <img>, <reset>, <clear>)")]
    UnknownTag(String),
    #[error("unclosed tag starting at byte {0}")]
    Unclosed(usize),
    #[error("the template has no <text> or <image> slot")]
    NoSlots,
}

/// A parsed template: pieces in order, and how many texts and images it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub pieces: Vec<TemplatePiece>,
    pub text_depth: usize,
    pub image_depth: usize,
}

impl Template {
    pub fn parse(src: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let (mut texts, mut images) = (0, 0);
        let mut literal = String::new();
        let mut rest = src;
        let mut offset = 0;
        while let Some(open) = rest.find('<') {
            literal.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after.find('>').ok_or(TemplateError::Unclosed(offset + open))?;
            let tag = &after[..close];
            let piece = match tag {
                "text" | "txt" | "msg" => {
                    texts += 1;
                    Some(TemplatePiece::Text(texts - 1))
                }
                "image" | "img" => {
                    images += 1;
                    Some(TemplatePiece::Image(images - 1))
                }
                // Chat-history resets mean nothing to a stateless VLA; accepted for
                // compatibility with Agent Studio templates and dropped.
                "reset" | "clear" => None,
                other => return Err(TemplateError::UnknownTag(other.to_string())),
            };
            if let Some(p) = piece {
                if !literal.is_empty() {
                    pieces.push(TemplatePiece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(p);
            }
            offset += open + close + 2;
            rest = &after[close + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(TemplatePiece::Literal(literal));
        }
        if texts + images == 0 {
            return Err(TemplateError::NoSlots);
        }
        Ok(Template { pieces, text_depth: texts, image_depth: images })
    }

    /// Builds the prompt if every slot has data. Adjacent text joins into one part.
    pub fn fill(&self, texts: &VecDeque<String>, images: &VecDeque<Image>) -> Option<Prompt> {
        if texts.len() < self.text_depth || images.len() < self.image_depth {
            return None;
        }
        let mut parts: Vec<PromptPart> = Vec::new();
        let push_text = |parts: &mut Vec<PromptPart>, s: &str| match parts.last_mut() {
            Some(PromptPart::Text(t)) => t.push_str(s),
            _ => parts.push(PromptPart::Text(s.to_string())),
        };
        for p in &self.pieces {
            match p {
                TemplatePiece::Literal(s) => push_text(&mut parts, s),
                TemplatePiece::Text(i) => push_text(&mut parts, &texts[*i]),
                TemplatePiece::Image(i) => parts.push(PromptPart::Image(images[*i].clone())),
            }
        }
        Some(Prompt { parts })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Trigger {
    Image,
    Text,
    Any,
}

impl Trigger {
    fn parse(s: &str) -> Result<Self, NodeError> {
        match s {
            "image" => Ok(Trigger::Image),
            "text" => Ok(Trigger::Text),
            "any" => Ok(Trigger::Any),
            other => Err(NodeError::param("emit_on", format!("{other:?} is not image, text or any"))),
        }
    }
}

pub struct AutoPrompt {
    template: Template,
    texts: VecDeque<String>,
    images: VecDeque<Image>,
    trigger: Trigger,
    emitted: u64,
}

impl AutoPrompt {
    pub fn descriptor() -> NodeDescriptor {
        NodeDescriptor::new("AutoPrompt", "LLM", "AutoPrompt")
            .describe("Fills a template of <text> and <image> slots with the latest inputs and emits the prompt.")
            .input("in", &[DataType::Text, DataType::Image], "final texts and images")
            .output("prompt", DataType::Prompt, "ordered text and image parts")
            .param(ParamSpec::new("template", ParamKind::Multiline, "<text><image>", "e.g. <text><image> or <image> Describe the image."))
            .param(ParamSpec::new(
                "emit_on",
                ParamKind::Choice { options: vec!["image".into(), "text".into(), "any".into()] },
                "image",
                "which input triggers a prompt once every slot is filled (Agent Studio: any)",
            ))
    }

    pub fn new(init: &NodeInit) -> Result<Self, NodeError> {
        let template = Template::parse(init.params.str("template")?).map_err(|e| NodeError::param("template", e))?;
        let trigger = Trigger::parse(init.params.str("emit_on")?)?;
        Ok(AutoPrompt { template, texts: VecDeque::new(), images: VecDeque::new(), trigger, emitted: 0 })
    }
}

/// Keeps the newest `depth` items, oldest first (a sliding window, not consumed).
fn push_window<T>(q: &mut VecDeque<T>, item: T, depth: usize) {
    if depth == 0 {
        return;
    }
    q.push_back(item);
    while q.len() > depth {
        q.pop_front();
    }
}

impl Node for AutoPrompt {
    fn on_input(&mut self, _port: &str, msg: Message, ctx: &mut Context) -> Result<(), NodeError> {
        let kind = match msg.payload {
            Payload::Text(t) if t.is_final => {
                push_window(&mut self.texts, t.text, self.template.text_depth);
                Trigger::Text
            }
            // Partial transcripts are previews; only final text becomes an instruction.
            Payload::Text(_) => return Ok(()),
            Payload::Image(img) => {
                push_window(&mut self.images, img, self.template.image_depth);
                Trigger::Image
            }
            other => return Err(NodeError::msg(format!("AutoPrompt takes text and images, got {}", other.describe()))),
        };
        let fire = self.trigger == Trigger::Any
            || self.trigger == kind
            // A template without the trigger's slot kind fires on whatever it has.
            || (self.trigger == Trigger::Image && self.template.image_depth == 0)
            || (self.trigger == Trigger::Text && self.template.text_depth == 0);
        if fire {
            if let Some(p) = self.template.fill(&self.texts, &self.images) {
                self.emitted += 1;
                ctx.send("prompt", p)?;
            }
        }
        Ok(())
    }

    fn set_param(&mut self, name: &str, value: &Value, _: &mut Context) -> Result<(), NodeError> {
        let s = value.as_str().ok_or_else(|| NodeError::param(name, "expected a string"))?;
        match name {
            "template" => {
                self.template = Template::parse(s).map_err(|e| NodeError::param(name, e))?;
                self.texts.clear();
                self.images.clear();
            }
            "emit_on" => self.trigger = Trigger::parse(s)?,
            _ => return Err(NodeError::param(name, "unknown")),
        }
        Ok(())
    }

    fn summary(&self) -> Option<String> {
        let waiting_t = self.template.text_depth.saturating_sub(self.texts.len());
        let waiting_i = self.template.image_depth.saturating_sub(self.images.len());
        Some(if waiting_t + waiting_i > 0 {
            format!("waiting for {waiting_t} text, {waiting_i} image")
        } else {
            format!("{} prompts", self.emitted)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(v: u8) -> Image {
        Image::rgb8(2, 1, vec![v; 6]).unwrap()
    }

    #[test]
    fn parses_tags_aliases_and_literals() {
        let t = Template::parse("<reset><img> Describe <txt> and <text>.").unwrap();
        assert_eq!(
            t.pieces,
            vec![
                TemplatePiece::Image(0),
                TemplatePiece::Literal(" Describe ".into()),
                TemplatePiece::Text(0),
                TemplatePiece::Literal(" and ".into()),
                TemplatePiece::Text(1),
                TemplatePiece::Literal(".".into()),
            ]
        );
        assert_eq!((t.text_depth, t.image_depth), (2, 1));
        assert_eq!(Template::parse("<video>"), Err(TemplateError::UnknownTag("video".into())));
        assert_eq!(Template::parse("a <text"), Err(TemplateError::Unclosed(2)));
        assert_eq!(Template::parse("just words"), Err(TemplateError::NoSlots));
    }

    #[test]
    fn fills_in_template_order_with_sliding_windows() {
        let t = Template::parse("<text> then <text><image>").unwrap();
        let mut texts = VecDeque::new();
        let mut images = VecDeque::new();
        push_window(&mut texts, "a".to_string(), 2);
        push_window(&mut images, img(1), 1);
        assert!(t.fill(&texts, &images).is_none(), "one text missing");
        push_window(&mut texts, "b".to_string(), 2);
        push_window(&mut texts, "c".to_string(), 2);
        let p = t.fill(&texts, &images).unwrap();
        assert_eq!(p.parts.len(), 2);
        assert_eq!(p.parts[0], PromptPart::Text("b then c".into()));
        assert_eq!(p.last_image().unwrap().data[0], 1);
    }
}
