//! Prompt nodes: turn text and images into the ordered multimodal prompts VLAs and
//! VLMs consume.

mod auto_prompt;
mod user_prompt;

pub use auto_prompt::{AutoPrompt, Template, TemplateError, TemplatePiece};
pub use user_prompt::UserPrompt;

use vela_runtime::Registry;

pub fn register(r: &mut Registry) {
    r.register(AutoPrompt::descriptor(), |init| Ok(Box::new(AutoPrompt::new(init)?)));
    r.register(UserPrompt::descriptor(), |init| Ok(Box::new(UserPrompt::new(init)?)));
}
