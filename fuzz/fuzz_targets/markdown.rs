//! Arbitrary model output through the page's Markdown renderer: the HTML it makes must hold only
//! allowed elements and attributes, and links only with http, https or mailto.
#![no_main]

#[path = "../../crates/carebot-web/src/markdown.rs"]
#[allow(dead_code)]
mod markdown;

use libfuzzer_sys::fuzz_target;

/// Elements pulldown-cmark writes for the Markdown we enable.
const ELEMENTS: &[&str] = &[
    "p",
    "em",
    "strong",
    "del",
    "code",
    "pre",
    "a",
    "ul",
    "ol",
    "li",
    "blockquote",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "br",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "input",
    "div",
    "sup",
    "span",
];
const ATTRIBUTES: &[&str] =
    &["href", "title", "rel", "target", "start", "class", "style", "disabled", "type", "checked", "id"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The app's origin, as the page's URL parser would judge it (here: a plain prefix test).
    let leads_into_app = |u: &str| u.to_ascii_lowercase().starts_with("https://app.example");
    let html = markdown::render(text, &leads_into_app);
    let mut rest = html.as_str();
    while let Some(open) = rest.find('<') {
        let tag = &rest[open + 1..];
        let end = tag.find('>').unwrap_or_else(|| panic!("an unclosed tag in {html:?}"));
        let tag = &tag[..end];
        rest = &rest[open + 1 + end..];
        let tag = tag.trim_start_matches('/').trim_end_matches('/');
        let mut words = tag.splitn(2, ' ');
        let name = words.next().unwrap_or_default();
        assert!(ELEMENTS.contains(&name), "element <{name}> in {html:?}");
        let mut attrs = words.next().unwrap_or_default();
        while let Some(eq) = attrs.find('=') {
            let attr = attrs[..eq].trim();
            assert!(ATTRIBUTES.contains(&attr), "attribute {attr} in {html:?}");
            let value = &attrs[eq + 1..];
            assert!(value.starts_with('"'), "unquoted attribute value in {html:?}");
            let close = value[1..].find('"').expect("quoted value ends") + 1;
            let v = &value[1..close];
            if attr == "href" {
                let v = v.replace("&amp;", "&").to_ascii_lowercase();
                assert!(["http:", "https:", "mailto:"].iter().any(|s| v.starts_with(s)), "link {v:?} in {html:?}");
                assert!(!v.starts_with("https://app.example"), "a link into the app: {v:?} in {html:?}");
            }
            if attr == "style" {
                assert!(v.starts_with("text-align: "), "style {v:?} in {html:?}");
            }
            attrs = &value[close + 1..];
        }
    }
});
