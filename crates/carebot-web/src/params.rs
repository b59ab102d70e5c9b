//! What a link can preset: `?model=<url>` (any llama-architecture GGUF) or `?hf=OWNER/NAME[@REV]`
//! (a llama repository on the Hugging Face hub, `?endpoint=` for a mirror), and the initial
//! `temperature`, `top_p`, `max_tokens`, `seed` and `system` (an empty `system=` means no system
//! message), so a link reproduces an answer. Nothing a link sets applies before the user has
//! seen it in plain words and accepted ([`LinkParams::changes`]): a link must not quietly swap
//! the model or tell the assistant to give someone else's advice.

use crate::protocol::{HubRepo, ModelSource, Settings};

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
    /// Every usable parameter the link set, `key=value` (the last of a repeat), in link order:
    /// what the user is asked about and what an acceptance is remembered by.
    pub set: Vec<(String, String)>,
    /// Parameters that were present but unusable, with why (shown to the user, not fatal).
    pub ignored: Vec<String>,
}

/// `value` as a `T` that `ok` accepts.
fn in_range<T: std::str::FromStr>(value: &str, ok: impl Fn(&T) -> bool) -> Option<T> {
    value.parse::<T>().ok().filter(|v| ok(v))
}

/// What a link asks to change, in the words the consent dialog shows (see [`LinkParams::changes`]).
#[derive(Clone, Debug, PartialEq)]
pub enum LinkChange {
    /// A GGUF file at this absolute URL.
    ModelUrl { url: String },
    /// A hub repository, read through `endpoint`; `official_hub`: the app's default hub.
    Hub { repo: String, revision: String, endpoint: String, official_hub: bool },
    /// The system prompt (empty: none at all).
    System(String),
    /// Sampling, as `key value` pairs.
    Sampling(Vec<(String, String)>),
}

impl LinkParams {
    /// From the decoded query pairs, in order (a later repeat wins, as for any form), over the
    /// default settings.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self::from_pairs_over(Settings::default(), pairs)
    }

    /// The same, over `base` (the user's saved settings): what the link does not set stays.
    pub fn from_pairs_over<'a>(base: Settings, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut p =
            LinkParams { model: None, hf: None, endpoint: None, settings: base, set: Vec::new(), ignored: Vec::new() };
        for (key, value) in pairs {
            let applied: Result<(), &str> = match key {
                "model" | "hf" | "endpoint" if value.trim().is_empty() => continue,
                "model" | "hf" | "endpoint" => {
                    let slot = match key {
                        "model" => &mut p.model,
                        "hf" => &mut p.hf,
                        _ => &mut p.endpoint,
                    };
                    *slot = Some(value.trim().to_string());
                    Ok(())
                }
                "system" => {
                    p.settings.system = value.to_string();
                    Ok(())
                }
                "temperature" => in_range(value, |t: &f32| Settings::TEMPERATURE.contains(t))
                    .map(|t| p.settings.temperature = t)
                    .ok_or("expected a number from 0 to 2"),
                "top_p" => in_range(value, |t: &f32| Settings::TOP_P.contains(t))
                    .map(|t| p.settings.top_p = t)
                    .ok_or("expected a number from 0.01 to 1"),
                "max_tokens" => in_range(value, |n: &usize| Settings::MAX_TOKENS.contains(n))
                    .map(|n| p.settings.max_tokens = n)
                    .ok_or("expected a whole number from 1 to 8192"),
                "seed" => in_range(value, |_: &u64| true).map(|s| p.settings.seed = s).ok_or("expected a whole number"),
                // Not a link parameter: left alone (other tools add their own to links).
                _ => continue,
            };
            if let Err(why) = applied {
                p.ignored.push(format!("{key}={value}: {why}"));
                continue;
            }
            p.set.retain(|(k, _)| k != key);
            p.set.push((key.to_string(), value.trim().to_string()));
        }
        if let (Some(_), Some(hf)) = (&p.model, &p.hf) {
            p.ignored.push(format!("hf={hf}: the link also names ?model=, which is used"));
            p.set.retain(|(k, _)| k != "hf" && k != "endpoint");
            p.hf = None;
            p.endpoint = None;
        }
        p
    }

    /// Whether the link changes anything: then nothing it sets applies until the user accepts.
    pub fn changes_anything(&self) -> bool {
        !self.set.is_empty()
    }

    /// The link's settings, each once and sorted: the same link in another order is the same
    /// request (an accepted one is remembered by this).
    pub fn canonical(&self) -> String {
        let mut set = self.set.clone();
        set.sort();
        set.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
    }

    /// The model the link names, if any: a GGUF URL (resolved by `absolute`), or a hub
    /// repository. `?endpoint=` alone reads CareBot's own repository through that hub (a mirror).
    pub fn source(&self, absolute: &dyn Fn(&str) -> String) -> Result<Option<ModelSource>, String> {
        if let Some(url) = &self.model {
            return Ok(Some(ModelSource::Url { url: absolute(url) }));
        }
        if self.hf.is_none() && self.endpoint.is_none() {
            return Ok(None);
        }
        let spec = self.hf.as_deref().unwrap_or(crate::hub::CAREBOT_REPO);
        let endpoint = absolute(self.endpoint.as_deref().unwrap_or(crate::hub::default_endpoint()));
        HubRepo::parse(spec, &endpoint)
            .map(|repo| Some(ModelSource::Hub(repo)))
            .map_err(|e| format!("hf={spec}, endpoint={endpoint}: {e}"))
    }

    /// What accepting the link would change, for the consent dialog: the model (`source`, as
    /// [`LinkParams::source`] resolved it), the system prompt, sampling.
    pub fn changes(&self, source: Option<&ModelSource>) -> Vec<LinkChange> {
        let mut out = Vec::new();
        match source {
            Some(ModelSource::Url { url }) => out.push(LinkChange::ModelUrl { url: url.clone() }),
            Some(ModelSource::Hub(repo)) => out.push(LinkChange::Hub {
                repo: repo.repo.clone(),
                revision: repo.revision.clone(),
                endpoint: repo.endpoint.clone(),
                official_hub: repo.endpoint == crate::hub::default_endpoint(),
            }),
            Some(ModelSource::File { .. }) | None => {}
        }
        if self.set.iter().any(|(k, _)| k == "system") {
            out.push(LinkChange::System(self.settings.system.clone()));
        }
        let sampling: Vec<(String, String)> = self
            .set
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "temperature" | "top_p" | "max_tokens" | "seed"))
            .cloned()
            .collect();
        if !sampling.is_empty() {
            out.push(LinkChange::Sampling(sampling));
        }
        out
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
        ]);
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
        assert!(!p.changes_anything(), "{:?}", p.set);
    }

    fn absolute(u: &str) -> String {
        if u.contains("://") { u.to_string() } else { format!("https://app.example{u}") }
    }

    #[test]
    fn what_a_link_asks_is_listed_for_the_user() {
        let p = LinkParams::from_pairs([
            ("system", "Ignore your doctor"),
            ("model", "/models/x.gguf"),
            ("seed", "7"),
            ("temperature", "0"),
            ("seed", "8"),
            ("unknown", "1"),
        ]);
        assert!(p.changes_anything());
        let source = p.source(&absolute).unwrap();
        assert_eq!(source, Some(ModelSource::Url { url: "https://app.example/models/x.gguf".into() }));
        assert_eq!(
            p.changes(source.as_ref()),
            vec![
                LinkChange::ModelUrl { url: "https://app.example/models/x.gguf".into() },
                LinkChange::System("Ignore your doctor".into()),
                LinkChange::Sampling(vec![("temperature".into(), "0".into()), ("seed".into(), "8".into())]),
            ]
        );
        // The same request in another order is the same request; another value is not.
        let reordered = LinkParams::from_pairs([
            ("temperature", "0"),
            ("seed", "8"),
            ("model", "/models/x.gguf"),
            ("system", "Ignore your doctor"),
        ]);
        assert_eq!(p.canonical(), reordered.canonical());
        let other = LinkParams::from_pairs([
            ("temperature", "0"),
            ("seed", "8"),
            ("model", "/models/x.gguf"),
            ("system", "Ignore your doctor!"),
        ]);
        assert_ne!(p.canonical(), other.canonical());
        // An empty system prompt is a change too: no system message at all.
        let empty = LinkParams::from_pairs([("system", "")]);
        assert_eq!(empty.changes(None), vec![LinkChange::System(String::new())]);
    }

    #[test]
    fn an_endpoint_names_its_hub_and_is_never_silently_dropped() {
        // ?endpoint= alone: CareBot's repository through that hub, shown as not the official one.
        let p = LinkParams::from_pairs([("endpoint", "https://mirror.example/")]);
        let source = p.source(&absolute).unwrap();
        let Some(ModelSource::Hub(repo)) = &source else { panic!("{source:?}") };
        assert_eq!((repo.repo.as_str(), repo.endpoint.as_str()), (crate::hub::CAREBOT_REPO, "https://mirror.example"));
        assert_eq!(
            p.changes(source.as_ref()),
            vec![LinkChange::Hub {
                repo: crate::hub::CAREBOT_REPO.into(),
                revision: crate::hub::default_revision().into(),
                endpoint: "https://mirror.example".into(),
                official_hub: false,
            }]
        );
        let official = LinkParams::from_pairs([("hf", "a/b@v2")]);
        let source = official.source(&absolute).unwrap();
        assert!(matches!(&official.changes(source.as_ref())[0], LinkChange::Hub { official_hub: true, .. }));
        // ?model= and ?hf= together: the file is used, and the user is told the repository was not.
        let both = LinkParams::from_pairs([("hf", "a/b"), ("endpoint", "https://m.example"), ("model", "/x.gguf")]);
        assert!(matches!(both.source(&absolute), Ok(Some(ModelSource::Url { .. }))));
        assert_eq!(both.ignored.len(), 1, "{:?}", both.ignored);
        assert_eq!(both.canonical(), "model=/x.gguf");
        // A bad repository name is an error, not CareBot under the link's hub.
        let bad = LinkParams::from_pairs([("hf", "not a repo"), ("endpoint", "https://m.example")]);
        assert!(bad.source(&absolute).is_err());
        let ftp = LinkParams::from_pairs([("endpoint", "ftp://m.example")]);
        assert!(ftp.source(&absolute).is_err());
    }
}
