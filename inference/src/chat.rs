//! Chat messages to prompt text with the model's own template.
//!
//! We do not run a Jinja engine: we recognise the template families we support from the
//! template text in the GGUF and render them with a few lines of code. ChatML is the one
//! supported now (SmolLM2, Qwen, ...): `<|im_start|>{role}\n{content}<|im_end|>\n` per message
//! and `<|im_start|>assistant\n` as the generation prompt. A ChatML template may insert a default
//! system message when the first message is not one (SmolLM2's does); its text is read from the
//! template itself. Anything else is refused with `InferenceError::ChatTemplate` rather than
//! rendered wrongly.

use crate::error::InferenceError;

/// The most messages one request may hold.
pub const MESSAGES_MAX: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// "system", "user" or "assistant".
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message { role: role.to_string(), content: content.to_string() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplate {
    ChatMl { default_system: Option<String> },
}

impl ChatTemplate {
    /// Recognises the template text of `tokenizer.chat_template`.
    pub fn recognise(template: &str) -> Result<ChatTemplate, InferenceError> {
        if !(template.contains("<|im_start|>") && template.contains("<|im_end|>")) {
            return Err(InferenceError::ChatTemplate(
                "not a ChatML template (the only family supported)".into(),
            ));
        }
        // SmolLM2: {% if loop.first and messages[0]['role'] != 'system' %}
        //   {{ '<|im_start|>system\nYou are ...<|im_end|>\n' }}{% endif %}
        let default_system = if template.contains("!= 'system'") || template.contains("!= \"system\"") {
            let head = "<|im_start|>system";
            let start = template.find(head).map(|i| i + head.len());
            let text = start.and_then(|s| {
                let rest = &template[s..];
                let end = rest.find("<|im_end|>")?;
                Some(rest[..end].to_string())
            });
            match text {
                // The literal's newline is either a real one or Jinja's `\n` escape.
                Some(t) => Some(t.replace("\\n", "\n").trim_start_matches('\n').to_string()),
                None => {
                    return Err(InferenceError::ChatTemplate(
                        "the template adds a system message whose text we cannot find".into(),
                    ))
                }
            }
        } else {
            None
        };
        Ok(ChatTemplate::ChatMl { default_system })
    }

    /// The prompt text for `messages`, ending with the generation prompt.
    pub fn render(&self, messages: &[Message]) -> Result<String, InferenceError> {
        if messages.is_empty() {
            return Err(InferenceError::InvalidRequest("no messages".into()));
        }
        if messages.len() > MESSAGES_MAX {
            return Err(InferenceError::LimitExceeded {
                what: "messages count",
                actual: messages.len() as u64,
                limit: MESSAGES_MAX as u64,
            });
        }
        for m in messages {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
                return Err(InferenceError::InvalidRequest(format!("message role {:?}", m.role)));
            }
        }
        let ChatTemplate::ChatMl { default_system } = self;
        let mut out = String::new();
        if let Some(system) = default_system {
            if messages[0].role != "system" {
                push_chatml(&mut out, "system", system);
            }
        }
        for m in messages {
            push_chatml(&mut out, &m.role, &m.content);
        }
        out.push_str("<|im_start|>assistant\n");
        Ok(out)
    }
}

fn push_chatml(out: &mut String, role: &str, content: &str) {
    out.push_str("<|im_start|>");
    out.push_str(role);
    out.push('\n');
    out.push_str(content);
    out.push_str("<|im_end|>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_default_system() {
        let t = ChatTemplate::recognise(SMOLLM2).unwrap();
        let text = t.render(&[Message::new("user", "Hi")]).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let text = t.render(&[Message::new("system", "S"), Message::new("user", "Hi")]).unwrap();
        assert_eq!(text, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        // The Jinja-escaped spelling of the same template.
        let escaped = SMOLLM2.replace('\n', "\\n");
        assert_eq!(ChatTemplate::recognise(&escaped).unwrap(), t);
    }

    #[test]
    fn refuses_bad_input() {
        let t = ChatTemplate::recognise(SMOLLM2).unwrap();
        assert!(t.render(&[]).is_err());
        assert!(t.render(&[Message::new("tool", "x")]).is_err());
        let many = vec![Message::new("user", "x"); MESSAGES_MAX + 1];
        assert!(matches!(t.render(&many), Err(InferenceError::LimitExceeded { .. })));
        assert!(ChatTemplate::recognise("{{ bos_token }}[INST]").is_err());
    }
}
