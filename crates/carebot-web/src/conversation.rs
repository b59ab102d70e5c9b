//! A conversation as the page keeps it (and saves it in IndexedDB), and its exports.

use crate::protocol::AnswerStats;
use carebot_model::chat::ChatMessage;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    /// The answer's numbers, once it is complete.
    #[serde(default)]
    pub stats: Option<AnswerStats>,
    /// Why the answer failed, if it did.
    #[serde(default)]
    pub error: Option<String>,
}

impl Turn {
    pub fn user(content: impl Into<String>) -> Self {
        Turn { role: "user".into(), content: content.into(), stats: None, error: None }
    }

    pub fn assistant() -> Self {
        Turn { role: "assistant".into(), content: String::new(), stats: None, error: None }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    pub title: String,
    /// Milliseconds since 1970.
    pub created: f64,
    pub updated: f64,
    pub turns: Vec<Turn>,
}

impl Conversation {
    pub fn new(now_ms: f64) -> Self {
        Conversation {
            id: format!("c{now_ms:.0}"),
            title: String::new(),
            created: now_ms,
            updated: now_ms,
            turns: Vec::new(),
        }
    }

    /// The first user message, shortened, names the conversation.
    pub fn retitle(&mut self) {
        if let Some(first) = self.turns.iter().find(|t| t.role == "user") {
            let line = first.content.lines().next().unwrap_or("").trim();
            let mut title: String = line.chars().take(48).collect();
            if line.chars().count() > 48 {
                title.push('…');
            }
            self.title = title;
        }
    }

    /// What the model is asked to continue: every turn with text, failed answers left out.
    pub fn messages(&self) -> Vec<ChatMessage> {
        self.turns
            .iter()
            .filter(|t| t.error.is_none() && !(t.role == "assistant" && t.content.is_empty()))
            .map(|t| ChatMessage::new(&t.role, &t.content))
            .collect()
    }

    pub fn to_markdown(&self) -> String {
        let mut md = format!("# {}\n\n", if self.title.is_empty() { "CareBot" } else { &self.title });
        for t in &self.turns {
            let who = if t.role == "user" { "You" } else { "CareBot" };
            md.push_str(&format!("**{who}:**\n\n{}\n\n", t.content.trim()));
        }
        md
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("conversations serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_messages_and_exports() {
        let mut c = Conversation::new(1.0e12);
        c.turns.push(Turn::user(
            "头痛三天了，该怎么办？这是一个很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长的问题",
        ));
        c.turns.push(Turn { content: "Rest and **fluids**.".into(), ..Turn::assistant() });
        c.turns.push(Turn::user("Thanks"));
        c.turns.push(Turn { error: Some("device lost".into()), ..Turn::assistant() });
        c.retitle();
        assert!(c.title.starts_with("头痛三天了") && c.title.ends_with('…') && c.title.chars().count() == 49);
        let m = c.messages();
        assert_eq!(m.len(), 3, "the failed answer is not sent back to the model");
        assert_eq!(m[1], ChatMessage::assistant("Rest and **fluids**."));
        assert!(c.to_markdown().contains("**CareBot:**\n\nRest and **fluids**."));
        let back: Conversation = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(back, c);
    }
}
