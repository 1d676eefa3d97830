//! UserPrompt: text typed in the studio (or given as a parameter) enters the graph.

use serde_json::Value;
use vela_runtime::{Context, DataType, Message, Node, NodeDescriptor, NodeError, NodeInit, ParamKind, ParamSpec, Text};

pub struct UserPrompt {
    initial: String,
    sent: u64,
    last: String,
}

impl UserPrompt {
    pub fn descriptor() -> NodeDescriptor {
        NodeDescriptor::new("UserPrompt", "LLM", "User prompt")
            .describe("A text box: what the user submits (command `submit` with {\"text\": ...}) is sent as final text.")
            .output("text", DataType::Text, "submitted text")
            .param(ParamSpec::new("prompt", ParamKind::Multiline, "", "text sent once when the graph starts (empty = none)"))
            .command("submit", "Send", "args {\"text\": ...}: send the text")
    }

    pub fn new(init: &NodeInit) -> Result<Self, NodeError> {
        Ok(UserPrompt { initial: init.params.str("prompt")?.to_string(), sent: 0, last: String::new() })
    }

    fn submit(&mut self, text: &str, ctx: &mut Context) -> Result<(), NodeError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(NodeError::msg("nothing to submit: the text is empty"));
        }
        self.sent += 1;
        self.last = text.to_string();
        ctx.send("text", Text::final_text(text))
    }
}

impl Node for UserPrompt {
    fn start(&mut self, ctx: &mut Context) -> Result<(), NodeError> {
        if !self.initial.trim().is_empty() {
            let t = self.initial.clone();
            self.submit(&t, ctx)?;
        }
        Ok(())
    }

    fn on_input(&mut self, _: &str, _: Message, _: &mut Context) -> Result<(), NodeError> {
        Ok(())
    }

    fn set_param(&mut self, name: &str, value: &Value, ctx: &mut Context) -> Result<(), NodeError> {
        match name {
            // Changing the prompt while running submits it, like typing into the box.
            "prompt" => {
                self.initial = value.as_str().unwrap_or_default().to_string();
                let t = self.initial.clone();
                if t.trim().is_empty() { Ok(()) } else { self.submit(&t, ctx) }
            }
            _ => Err(NodeError::param(name, "unknown")),
        }
    }

    fn command(&mut self, name: &str, args: &Value, ctx: &mut Context) -> Result<(), NodeError> {
        match name {
            "submit" => {
                let text = args.get("text").and_then(Value::as_str).ok_or_else(|| NodeError::msg("submit needs {\"text\": \"...\"}"))?;
                self.submit(text, ctx)
            }
            other => Err(NodeError::msg(format!("unknown command '{other}' (UserPrompt knows: submit)"))),
        }
    }

    fn summary(&self) -> Option<String> {
        Some(if self.sent == 0 { "waiting for input".into() } else { format!("{} sent: {:?}", self.sent, self.last) })
    }
}
