//! What a link can preset: `?model=<url>` (any llama-architecture GGUF) or `?hf=OWNER/NAME[@REV]`
//! (a llama repository on the Hugging Face hub, `?endpoint=` for a mirror), and the initial
//! `temperature`, `top_p`, `max_tokens`, `seed` and `system` (an empty `system=` means no system
//! message), so a link reproduces an answer.

use crate::protocol::Settings;

/// A GGUF URL to use when a link names no model, set at build time with `CAREBOT_MODEL_URL` (for
/// a site that hosts its own `carebot convert` output). Without it the page prepares CareBot from
/// its hub repository.
pub fn default_model_url() -> Option<&'static str> {
    option_env!("CAREBOT_MODEL_URL")
}

#[derive(Clone, Debug, PartialEq)]
pub struct LinkParams {
    /// The model URL as given (relative URLs are resolved against the page by the caller).
    pub model: Option<String>,
    /// `OWNER/NAME[@REVISION]` of a hub repository, and the hub to read it from.
    pub hf: Option<String>,
    pub endpoint: Option<String>,
    pub settings: Settings,
    /// Parameters that were present but unusable, with why (shown to the user, not fatal).
    pub ignored: Vec<String>,
}

impl LinkParams {
    /// From the decoded query pairs, in order (a later repeat wins, as for any form).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut p =
            LinkParams { model: None, hf: None, endpoint: None, settings: Settings::default(), ignored: Vec::new() };
        for (key, value) in pairs {
            let bad = |what: &str| format!("{key}={value}: {what}");
            match key {
                "model" if !value.trim().is_empty() => p.model = Some(value.trim().to_string()),
                "hf" if !value.trim().is_empty() => p.hf = Some(value.trim().to_string()),
                "endpoint" if !value.trim().is_empty() => p.endpoint = Some(value.trim().to_string()),
                "system" => p.settings.system = value.to_string(),
                "temperature" => match value.parse::<f32>() {
                    Ok(t) if (0.0..=2.0).contains(&t) => p.settings.temperature = t,
                    _ => p.ignored.push(bad("expected a number from 0 to 2")),
                },
                "top_p" => match value.parse::<f32>() {
                    Ok(t) if t > 0.0 && t <= 1.0 => p.settings.top_p = t,
                    _ => p.ignored.push(bad("expected a number above 0, at most 1")),
                },
                "max_tokens" => match value.parse::<usize>() {
                    Ok(n) if (1..=8192).contains(&n) => p.settings.max_tokens = n,
                    _ => p.ignored.push(bad("expected a whole number from 1 to 8192")),
                },
                "seed" => match value.parse::<u64>() {
                    Ok(s) => p.settings.seed = s,
                    _ => p.ignored.push(bad("expected a whole number")),
                },
                _ => {}
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_preset_the_model_and_settings() {
        let p = LinkParams::from_pairs([
            ("model", "https://models.example/tiny.gguf"),
            ("temperature", "0"),
            ("top_p", "0.5"),
            ("max_tokens", "33"),
            ("seed", "42"),
            ("system", ""),
            ("hf", "a/b@v1"),
        ]);
        assert_eq!(p.hf.as_deref(), Some("a/b@v1"));
        assert_eq!(p.model.as_deref(), Some("https://models.example/tiny.gguf"));
        assert_eq!(
            p.settings,
            Settings { system: String::new(), temperature: 0.0, top_p: 0.5, max_tokens: 33, seed: 42 }
        );
        assert!(p.ignored.is_empty());
    }

    #[test]
    fn bad_values_are_reported_and_leave_the_defaults() {
        let p = LinkParams::from_pairs([("temperature", "hot"), ("top_p", "0"), ("max_tokens", "-1"), ("model", " ")]);
        assert_eq!(p.settings, Settings::default());
        assert_eq!(p.model, None);
        assert_eq!(p.ignored.len(), 3, "{:?}", p.ignored);
        assert!(p.ignored[0].starts_with("temperature=hot"));
    }
}
