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
    /// Saved while it was still being written: if no page is writing it any more, the answer was
    /// interrupted (a closed tab, a crash) and is shown as such, and not sent back to the model.
    #[serde(default)]
    pub unfinished: bool,
}

impl Turn {
    pub fn user(content: impl Into<String>) -> Self {
        Turn { role: "user".into(), content: content.into(), stats: None, error: None, unfinished: false }
    }

    /// The empty answer that tokens fill, unfinished until the worker says it is done.
    pub fn assistant() -> Self {
        Turn { role: "assistant".into(), content: String::new(), stats: None, error: None, unfinished: true }
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
    /// How many times this conversation has been saved: a save replaces the stored record only
    /// when the stored `rev` is the one this copy was read at (compare-and-swap across tabs).
    #[serde(default)]
    pub rev: u64,
}

impl Conversation {
    /// A new, empty conversation. `nonce` is random (from `crypto.getRandomValues`): two tabs
    /// starting a conversation in the same millisecond still get different ids.
    pub fn new(now_ms: f64, nonce: u64) -> Self {
        Conversation {
            id: Self::new_id(now_ms, nonce),
            title: String::new(),
            created: now_ms,
            updated: now_ms,
            turns: Vec::new(),
            rev: 0,
        }
    }

    pub fn new_id(now_ms: f64, nonce: u64) -> String {
        format!("c{now_ms:.0}-{nonce:016x}")
    }

    /// Whether this copy holds everything `stored` holds: the same turns, each at least as long
    /// (a later point of the same answers). Only then may it replace `stored` without losing a word.
    pub fn contains(&self, stored: &Conversation) -> bool {
        self.id == stored.id
            && self.turns.len() >= stored.turns.len()
            && self.turns.iter().zip(&stored.turns).all(|(mine, theirs)| {
                mine.role == theirs.role && mine.content.starts_with(&theirs.content) && theirs.error.is_none()
                    || mine == theirs
            })
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

    /// How this copy settles with `stored`, what is under its id now that a compare-and-swap save
    /// failed: the `rev` to save it at over the stored record (it was deleted, or this copy holds
    /// all of it), or `None` when the two differ and this copy must become a conversation of its
    /// own, so that neither loses a turn.
    pub fn rebase_onto(&self, stored: Option<&Conversation>) -> Option<u64> {
        match stored {
            None => Some(0),
            Some(stored) => self.contains(stored).then_some(stored.rev),
        }
    }

    /// What the model is asked to continue: every turn with text, failed and interrupted answers
    /// left out.
    pub fn messages(&self) -> Vec<ChatMessage> {
        self.turns
            .iter()
            .filter(|t| t.error.is_none() && !t.unfinished && !(t.role == "assistant" && t.content.is_empty()))
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

    /// What importing this copy does, given what is stored under its id.
    pub fn import_onto(&self, stored: Option<&Conversation>) -> Import {
        match stored {
            Some(s) if s.contains(self) => Import::AlreadyHere,
            _ => match self.rebase_onto(stored) {
                Some(rev) => Import::Save { rev },
                None => Import::SaveAsNew,
            },
        }
    }
}

/// How an imported conversation joins the saved ones, so that importing a file twice (or a file
/// exported here) adds nothing twice and erases no turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Import {
    /// The stored copy holds all of it.
    AlreadyHere,
    /// New here, or a later point of the stored one: saved over it at `rev`.
    Save { rev: u64 },
    /// Differs from the stored copy with its id: kept beside it under a new id.
    SaveAsNew,
}

/// The most an import file may be and hold: far past any year of conversations, bounded so a
/// hostile file cannot exhaust the page.
pub const IMPORT_MAX_BYTES: u64 = 64 << 20;
pub const IMPORT_MAX_CONVERSATIONS: usize = 100_000;

/// An export file's conversations: "Export all" writes a JSON array; the per-conversation JSON
/// export (one object) reads too. Anything else is refused with why.
pub fn parse_import(json: &str) -> Result<Vec<Conversation>, String> {
    if json.len() as u64 > IMPORT_MAX_BYTES {
        return Err(format!("{} bytes, more than the {IMPORT_MAX_BYTES} an export file can be", json.len()));
    }
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        one @ serde_json::Value::Object(_) => vec![one],
        _ => return Err("not a CareBot export (expected a conversation or a list of them)".into()),
    };
    if items.len() > IMPORT_MAX_CONVERSATIONS {
        return Err(format!("{} conversations, more than {IMPORT_MAX_CONVERSATIONS}", items.len()));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let c: Conversation = serde_json::from_value(item).map_err(|e| format!("conversation {}: {e}", i + 1))?;
            if c.id.is_empty() {
                return Err(format!("conversation {}: no id", i + 1));
            }
            if let Some(t) = c.turns.iter().find(|t| t.role != "user" && t.role != "assistant") {
                return Err(format!("conversation {} ({}): a turn of role {:?}", i + 1, c.id, t.role));
            }
            Ok(c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_messages_and_exports() {
        let mut c = Conversation::new(1.0e12, 7);
        c.turns.push(Turn::user(
            "头痛三天了，该怎么办？这是一个很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长的问题",
        ));
        c.turns.push(Turn { content: "Rest and **fluids**.".into(), unfinished: false, ..Turn::assistant() });
        c.turns.push(Turn::user("Thanks"));
        c.turns.push(Turn { error: Some("device lost".into()), unfinished: false, ..Turn::assistant() });
        c.turns.push(Turn::user("And?"));
        c.turns.push(Turn { content: "Half an ans".into(), ..Turn::assistant() });
        c.retitle();
        assert!(c.title.starts_with("头痛三天了") && c.title.ends_with('…') && c.title.chars().count() == 49);
        let m = c.messages();
        assert_eq!(m.len(), 4, "failed and interrupted answers are not sent back to the model");
        assert_eq!(m[1], ChatMessage::assistant("Rest and **fluids**."));
        assert!(c.to_markdown().contains("**CareBot:**\n\nRest and **fluids**."));
        let back: Conversation = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn ids_differ_within_one_millisecond() {
        assert_ne!(Conversation::new(1.0e12, 1).id, Conversation::new(1.0e12, 2).id);
    }

    /// A record saved by the first version (no `rev`, no `unfinished`) still reads.
    #[test]
    fn version_one_records_read() {
        let v1 = r#"{"id":"c1","title":"t","created":1.0,"updated":2.0,
            "turns":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello","stats":null,"error":null}]}"#;
        let c: Conversation = serde_json::from_str(v1).unwrap();
        assert_eq!((c.rev, c.turns[1].unfinished), (0, false));
    }

    #[test]
    fn a_copy_replaces_only_what_it_contains() {
        let mut stored = Conversation::new(1.0, 1);
        stored.turns = vec![Turn::user("q"), Turn { content: "half".into(), ..Turn::assistant() }];
        let mut later = stored.clone();
        later.turns[1].content.push_str(" and the rest");
        later.turns[1].unfinished = false;
        assert!(later.contains(&stored), "a later point of the same answer");
        assert!(!stored.contains(&later), "an earlier point would lose words");
        let mut other_tab = stored.clone();
        other_tab.turns[1].content = "another answer".into();
        assert!(!other_tab.contains(&stored));
        let mut elsewhere = stored.clone();
        elsewhere.id = "c2".into();
        assert!(!elsewhere.contains(&stored));

        stored.rev = 5;
        assert_eq!(later.rebase_onto(Some(&stored)), Some(5), "saved over the record it holds");
        assert_eq!(other_tab.rebase_onto(Some(&stored)), None, "saved as its own conversation");
        assert_eq!(other_tab.rebase_onto(None), Some(0), "deleted elsewhere: saved anew");
    }

    #[test]
    fn an_import_adds_nothing_twice_and_erases_nothing() {
        let mut stored = Conversation::new(1.0, 1);
        stored.turns = vec![Turn::user("q"), Turn { content: "answer".into(), unfinished: false, ..Turn::assistant() }];
        stored.rev = 3;
        assert_eq!(stored.import_onto(Some(&stored)), Import::AlreadyHere);
        assert_eq!(stored.import_onto(None), Import::Save { rev: 0 });
        let mut longer = stored.clone();
        longer.turns.push(Turn::user("and then?"));
        assert_eq!(longer.import_onto(Some(&stored)), Import::Save { rev: 3 });
        let mut shorter = stored.clone();
        shorter.turns.pop();
        assert_eq!(shorter.import_onto(Some(&stored)), Import::AlreadyHere);
        let mut other = stored.clone();
        other.turns[1].content = "another answer".into();
        assert_eq!(other.import_onto(Some(&stored)), Import::SaveAsNew);

        // The file: a list (Export all) or one conversation (the per-conversation export).
        let list = format!("[{},{}]", stored.to_json(), other.to_json());
        assert_eq!(parse_import(&list).unwrap().len(), 2);
        assert_eq!(parse_import(&stored.to_json()).unwrap(), vec![stored.clone()]);
        for (bad, why) in [
            ("42", "not a CareBot export"),
            ("{\"id\": 1}", "conversation 1"),
            ("[{\"id\":\"\",\"title\":\"\",\"created\":0,\"updated\":0,\"turns\":[]}]", "no id"),
            (
                "[{\"id\":\"x\",\"title\":\"\",\"created\":0,\"updated\":0,\"turns\":[{\"role\":\"system\",\"content\":\"\"}]}]",
                "role",
            ),
            ("[", "not JSON"),
        ] {
            let e = parse_import(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
