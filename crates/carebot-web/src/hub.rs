//! The zero-install source: a Llama model repository on the Hugging Face hub, read through the
//! hub's `resolve` URLs (which answer cross-origin Range requests) and turned into a Q4_K_M GGUF
//! in the browser, once. This module is the part that needs no browser: repository names, URLs,
//! the cache key, and how the work is cut into pieces and resumed.

use serde::{Deserialize, Serialize};

pub use carebot_model::convert::CAREBOT_REPO;

/// The revision the app prepares by default. `CAREBOT_HF_REVISION` at build time pins a commit;
/// otherwise `main` is resolved to its commit (`X-Repo-Commit`) when preparation starts, and every
/// file is then read at that commit, so a push during a long download cannot mix two versions.
pub fn default_revision() -> &'static str {
    option_env!("CAREBOT_HF_REVISION").unwrap_or("main")
}

/// The hub (`HF_ENDPOINT` in Hugging Face's tools): a mirror can be set at build time with
/// `CAREBOT_HF_ENDPOINT`, or per link with `?endpoint=`.
pub fn default_endpoint() -> &'static str {
    option_env!("CAREBOT_HF_ENDPOINT").unwrap_or("https://huggingface.co")
}

/// One repository at one revision on one hub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubRepo {
    /// `https://huggingface.co`, without a trailing slash.
    pub endpoint: String,
    /// `OWNER/NAME`.
    pub repo: String,
    /// Branch, tag or commit.
    pub revision: String,
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl HubRepo {
    /// `OWNER/NAME` or `OWNER/NAME@REVISION` (the `?hf=` link parameter).
    pub fn parse(spec: &str, endpoint: &str) -> Result<Self, String> {
        let spec = spec.trim();
        let (repo, revision) = match spec.split_once('@') {
            Some((r, rev)) => (r, rev),
            None => (spec, default_revision()),
        };
        let mut parts = repo.split('/');
        let ok = matches!((parts.next(), parts.next(), parts.next()), (Some(o), Some(n), None) if valid_part(o) && valid_part(n));
        if !ok {
            return Err(format!("{spec:?} is not a repository name: expected OWNER/NAME or OWNER/NAME@REVISION"));
        }
        if !valid_part(revision) {
            return Err(format!("{revision:?} is not a revision: expected a branch, tag or commit"));
        }
        let endpoint = endpoint.trim().trim_end_matches('/');
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(format!("{endpoint:?} is not an http(s) address"));
        }
        Ok(HubRepo { endpoint: endpoint.into(), repo: repo.into(), revision: revision.into() })
    }

    /// CareBot's repository at the default revision on the default hub.
    pub fn carebot() -> Self {
        HubRepo::parse(CAREBOT_REPO, default_endpoint()).expect("the built-in repository name is valid")
    }

    /// The `resolve` URL of `file` at `revision` (the resolved commit, once known).
    pub fn file_url(&self, revision: &str, file: &str) -> String {
        format!("{}/{}/resolve/{}/{}", self.endpoint, self.repo, revision, file)
    }

    /// The name of the prepared model in the browser's cache: repository, revision as asked,
    /// and the output format, so another revision or format never reuses it.
    pub fn cache_key(&self) -> String {
        format!("{}/{}@{}#q4_k_m", self.endpoint, self.repo, self.revision)
    }

    /// The page's link to the repository.
    pub fn page_url(&self) -> String {
        format!("{}/{}", self.endpoint, self.repo)
    }

    /// Origins the page must be allowed to contact: the hub, and on huggingface.co the storage
    /// hosts its `resolve` URLs redirect to.
    pub fn connect_origins(&self) -> Vec<String> {
        let mut out = vec![self.endpoint.clone()];
        if self.endpoint == "https://huggingface.co" {
            out.extend(["https://*.huggingface.co".into(), "https://*.hf.co".into()]);
        }
        out
    }
}

/// Whether a header value is a full git commit id.
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// One tensor of the output as the preparation sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutTensor {
    /// Where its data starts in the output file.
    pub start: u64,
    /// Its data bytes, and with the alignment padding after it.
    pub bytes: u64,
    pub padded: u64,
    pub rows: u64,
    pub out_row_bytes: u64,
}

/// Where to continue a preparation whose output already holds `cached` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumeAt {
    pub tensor: usize,
    pub row: u64,
    /// Bytes of the output to keep (whole rows only; anything after is cut off).
    pub keep: u64,
}

/// The first row not yet written, given how many bytes of the output exist. Writes are whole
/// pieces of rows, with a tensor's padding written with its last piece, so a clean stop lands
/// on a row boundary; a torn write is cut back to one.
pub fn resume_at(header_len: u64, tensors: &[OutTensor], cached: u64) -> ResumeAt {
    if cached < header_len {
        return ResumeAt { tensor: 0, row: 0, keep: 0 };
    }
    for (i, t) in tensors.iter().enumerate() {
        if cached >= t.start + t.padded {
            continue;
        }
        let row = ((cached - t.start) / t.out_row_bytes.max(1)).min(t.rows);
        // All rows but not the padding: write the last row again with its padding.
        let row = if row == t.rows { t.rows.saturating_sub(1) } else { row };
        return ResumeAt { tensor: i, row, keep: t.start + row * t.out_row_bytes };
    }
    let end = tensors.last().map_or(header_len, |t| t.start + t.padded);
    ResumeAt { tensor: tensors.len(), row: 0, keep: end }
}

/// Rows per piece: as many as fit `max_bytes` of source and `max_values` values, in whole
/// groups of `group` rows (a head, for q/k), at least one group.
pub fn rows_per_piece(src_row_bytes: u64, cols: u64, group: u64, max_bytes: u64, max_values: u64) -> u64 {
    let group = group.max(1);
    let by_bytes = max_bytes / src_row_bytes.max(1);
    let by_values = max_values / cols.max(1);
    (by_bytes.min(by_values) / group).max(1) * group
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_specs_parse_and_bad_ones_are_refused() {
        let r = HubRepo::parse("MonteXiaofeng/CareBot_Medical_multi-llama3-8b-instruct@abc123", "https://hf.example/")
            .unwrap();
        assert_eq!(r.repo, "MonteXiaofeng/CareBot_Medical_multi-llama3-8b-instruct");
        assert_eq!(r.revision, "abc123");
        assert_eq!(
            r.file_url("abc123", "config.json"),
            "https://hf.example/MonteXiaofeng/CareBot_Medical_multi-llama3-8b-instruct/resolve/abc123/config.json"
        );
        assert_eq!(HubRepo::parse("a/b", "https://huggingface.co").unwrap().revision, default_revision());
        for bad in ["a", "a/b/c", "../b", "a/b@", "a/b@x/y", "a b/c", "/b"] {
            assert!(HubRepo::parse(bad, "https://huggingface.co").is_err(), "{bad}");
        }
        assert!(HubRepo::parse("a/b", "javascript:x").is_err());
        let carebot = HubRepo::carebot();
        assert_eq!(carebot.repo, CAREBOT_REPO);
        assert!(carebot.connect_origins().contains(&"https://*.hf.co".to_string()));
        assert_ne!(carebot.cache_key(), HubRepo { revision: "other".into(), ..carebot.clone() }.cache_key());
        assert!(is_commit("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_commit("main"));
    }

    fn layout() -> (u64, Vec<OutTensor>) {
        // Header of 96 bytes; tensors of 3 rows × 40 bytes (padded to 128) and 2 rows × 32 (64).
        let a = OutTensor { start: 96, bytes: 120, padded: 128, rows: 3, out_row_bytes: 40 };
        let b = OutTensor { start: 224, bytes: 64, padded: 64, rows: 2, out_row_bytes: 32 };
        (96, vec![a, b])
    }

    #[test]
    fn a_preparation_resumes_at_the_first_missing_row() {
        let (h, t) = layout();
        assert_eq!(resume_at(h, &t, 0), ResumeAt { tensor: 0, row: 0, keep: 0 });
        assert_eq!(resume_at(h, &t, 50), ResumeAt { tensor: 0, row: 0, keep: 0 });
        assert_eq!(resume_at(h, &t, 96), ResumeAt { tensor: 0, row: 0, keep: 96 });
        assert_eq!(resume_at(h, &t, 136), ResumeAt { tensor: 0, row: 1, keep: 136 });
        // A torn write inside row 2 is cut back to its start.
        assert_eq!(resume_at(h, &t, 190), ResumeAt { tensor: 0, row: 2, keep: 176 });
        // All rows but no padding: the last row is written again with it.
        assert_eq!(resume_at(h, &t, 216), ResumeAt { tensor: 0, row: 2, keep: 176 });
        assert_eq!(resume_at(h, &t, 224), ResumeAt { tensor: 1, row: 0, keep: 224 });
        assert_eq!(resume_at(h, &t, 256), ResumeAt { tensor: 1, row: 1, keep: 256 });
        assert_eq!(resume_at(h, &t, 288), ResumeAt { tensor: 2, row: 0, keep: 288 });
    }

    #[test]
    fn pieces_hold_whole_heads_within_both_bounds() {
        // Llama-3-8B attn_q: 4096 bf16 columns, heads of 128 rows, 8 MiB pieces, 4 Mi values.
        assert_eq!(rows_per_piece(8192, 4096, 128, 8 << 20, 4 << 20), 1024);
        // A head bigger than a piece still goes whole.
        assert_eq!(rows_per_piece(8192, 4096, 2048, 8 << 20, 4 << 20), 2048);
        // The value bound wins for f32 sources.
        assert_eq!(rows_per_piece(16384, 4096, 1, 64 << 20, 1 << 20), 256);
    }
}
