//! The page's components. They read and change [`State`] (from context); none keeps state of its own
//! beyond what an input box holds.

use super::{ModelState, State};
use crate::conversation::Turn;
use crate::i18n::{Key, Lang};
use crate::markdown;
use crate::params::LinkChange;
use crate::protocol::{AnswerEnd, ErrorKind, Failure, ModelInfo, ModelSource, Phase, ProbeInfo, Settings};
use leptos::prelude::*;
use wasm_bindgen::JsCast;

fn state() -> State {
    expect_context::<State>()
}

/// `key` in the current language, tracked.
fn t(key: Key) -> impl Fn() -> &'static str + Copy + Send + Sync + 'static {
    let lang = state().lang;
    move || key.text(lang.get())
}

pub fn bytes(n: u64) -> String {
    amount(n as f64)
}

/// A number of bytes given as a double (a rate), for display.
fn amount(n: f64) -> String {
    match n {
        n if n >= 1e9 => format!("{:.2} GB", n / 1e9),
        n if n >= 1e6 => format!("{:.1} MB", n / 1e6),
        n if n >= 1e3 => format!("{:.0} KB", n / 1e3),
        n => format!("{n:.0} B"),
    }
}

fn duration(seconds: f64) -> String {
    // Whole seconds as doubles: exact for any duration worth showing, and no cast.
    let s = seconds.max(0.0).round();
    let (h, m) = ((s / 3600.0).floor(), (s % 3600.0 / 60.0).floor());
    if s >= 3600.0 {
        format!("{h:.0}h {m:02.0}m")
    } else if s >= 60.0 {
        format!("{:.0}m {:02.0}s", (s / 60.0).floor(), s % 60.0)
    } else {
        format!("{s:.0}s")
    }
}

/// The number typed in a settings field, when it parses as its setting's type within `range`.
fn field<T: std::str::FromStr + PartialOrd>(ev: &leptos::ev::Event, range: std::ops::RangeInclusive<T>) -> Option<T> {
    event_target_value(ev).trim().parse::<T>().ok().filter(|v| range.contains(v))
}

fn failure_text(kind: ErrorKind) -> Key {
    match kind {
        ErrorKind::NoWebGpu => Key::ErrNoWebGpu,
        ErrorKind::GpuTooSmall => Key::ErrGpuTooSmall,
        ErrorKind::DeviceLost => Key::ErrDeviceLost,
        ErrorKind::GpuHung => Key::ErrGpuHung,
        ErrorKind::GpuFault => Key::ErrGpuFault,
        ErrorKind::OutOfMemory => Key::ErrOutOfMemory,
        ErrorKind::NotFound => Key::ErrNotFound,
        ErrorKind::Http => Key::ErrHttp,
        ErrorKind::NoRange => Key::ErrNoRange,
        ErrorKind::Network => Key::ErrNetwork,
        ErrorKind::NotGguf => Key::ErrNotGguf,
        ErrorKind::SourceChanged => Key::ErrSourceChanged,
        ErrorKind::WrongArchitecture => Key::ErrWrongArchitecture,
        ErrorKind::StorageFull => Key::ErrStorageFull,
        ErrorKind::Model => Key::ErrModel,
        ErrorKind::Busy => Key::ErrBusy,
        ErrorKind::Internal => Key::ErrInternal,
    }
}

/// Offers a text as a file download (made here, from a blob: nothing leaves the machine).
pub(super) fn download(name: &str, mime: &str, text: &str) {
    // gloo-file's ObjectUrl revokes the URL when it is dropped, after the click has started the
    // download.
    let url = gloo_file::ObjectUrl::from(gloo_file::Blob::new_with_options(text, Some(mime)));
    if let Some(a) = document().create_element("a").ok().and_then(|e| e.dyn_into::<web_sys::HtmlAnchorElement>().ok()) {
        a.set_href(&url);
        a.set_download(name);
        a.click();
    }
}

/// The page: header, notices, the chat beside its history, and the dialogs.
#[component]
pub fn App() -> impl IntoView {
    let s = state();
    view! {
        <div class="app" lang=move || s.lang.get().tag()>
            <Header/>
            <Show when=move || s.update_ready.get()>
                <div class="update" role="status" data-testid="update-ready">
                    {t(Key::UpdateReady)}
                    <button class="primary" data-testid="apply-update" on:click=move |_| super::offline::apply_update()>
                        {t(Key::UpdateNow)}
                    </button>
                </div>
            </Show>
            {move || s.notice.get().map(|n| view! {
                <div class="notice" role="status">{n}<button on:click=move |_| s.notice.set(None)>"×"</button></div>
            })}
            {move || if s.model.with(|m| *m == ModelState::NoWebGpu) {
                view! { <NoWebGpu/> }.into_any()
            } else {
                view! {
                    <div class="main">
                        <Sidebar/>
                        <section class="chat">
                            <ModelPanel/>
                            <Messages/>
                            <Composer/>
                        </section>
                    </div>
                }.into_any()
            }}
            <Disclaimer/>
            <SettingsPanel/>
            <ModelManager/>
            <LeaveDialog/>
            // Last, so it is on top: the first decision on a visit through a link.
            <LinkConsent/>
        </div>
    }
}

#[component]
fn Header() -> impl IntoView {
    let s = state();
    view! {
        <header>
            <h1>{t(Key::AppTitle)}</h1>
            <p class="tagline">{t(Key::Tagline)}
                {super::offline::build_version().map(|v| view! {
                    " · "<span class="hint" data-testid="app-build" data-build=v.clone()>{t(Key::AppVersion)}" "{v.clone()}</span>
                })}
            </p>
            <nav>
                <button class="history-toggle" data-testid="history-toggle" aria-controls="history-drawer"
                    aria-expanded=move || s.show_history.get().to_string()
                    on:click=move |_| s.show_history.update(|v| *v = !*v)>{t(Key::History)}</button>
                <button data-testid="open-settings" on:click=move |_| s.show_settings.set(true)>{t(Key::Settings)}</button>
                <button data-testid="open-models" on:click=move |_| s.open_models()>{t(Key::ModelsOnDevice)}</button>
                <button on:click=move |_| s.show_disclaimer.set(true)>{t(Key::About)}</button>
                <label>
                    {t(Key::Language)} " "
                    <select
                        data-testid="language"
                        on:change=move |ev| s.set_lang(if event_target_value(&ev) == "zh" { Lang::Zh } else { Lang::En })
                        prop:value=move || if s.lang.get() == Lang::Zh { "zh" } else { "en" }
                    >
                        <option value="en">"English"</option>
                        <option value="zh">"简体中文"</option>
                    </select>
                </label>
            </nav>
        </header>
    }
}

#[component]
fn NoWebGpu() -> impl IntoView {
    view! {
        <section class="no-webgpu" data-testid="model-status" data-state="no-webgpu">
            <h2>{t(Key::ErrNoWebGpu)}</h2>
            <p>{t(Key::ErrNoWebGpuHelp)}</p>
        </section>
    }
}

#[component]
fn Disclaimer() -> impl IntoView {
    let s = state();
    let accept = NodeRef::<leptos::html::Button>::new();
    let card = NodeRef::<leptos::html::Div>::new();
    focus_when_shown(accept);
    // No Escape here: the notice is read and acknowledged, not dismissed.
    let on_key = dialog_keys(card, || {});
    view! {
        <Show when=move || s.show_disclaimer.get()>
            <div class="modal" role="dialog" aria-modal="true" aria-labelledby="disclaimer-title" data-testid="disclaimer"
                on:keydown=on_key>
                <div class="card" node_ref=card>
                    <h2 id="disclaimer-title">{t(Key::DisclaimerTitle)}</h2>
                    <p>{t(Key::DisclaimerBody)}</p>
                    <button node_ref=accept class="primary" data-testid="accept-disclaimer" on:click=move |_| s.accept_disclaimer()>
                        {t(Key::DisclaimerAccept)}
                    </button>
                </div>
            </div>
        </Show>
    }
}

#[component]
fn SettingsPanel() -> impl IntoView {
    let s = state();
    // A number field changes its setting only when it holds a number in range.
    // Each field parses as its setting's own type, so no number is cast on the way.
    // Each change is kept for the next visits at once.
    let set = move |apply: &dyn Fn(&mut crate::protocol::Settings)| {
        s.settings.update(apply);
        s.save_settings();
    };
    let first = NodeRef::<leptos::html::Textarea>::new();
    let card = NodeRef::<leptos::html::Div>::new();
    focus_when_shown(first);
    let on_key = dialog_keys(card, move || s.show_settings.set(false));
    view! {
        <Show when=move || s.show_settings.get()>
            <div class="modal" role="dialog" aria-modal="true" aria-labelledby="settings-title" data-testid="settings"
                on:keydown=on_key>
                <div class="card settings" node_ref=card>
                    <h2 id="settings-title">{t(Key::Settings)}</h2>
                    <label>{t(Key::SystemPrompt)}
                        <textarea node_ref=first rows="4" data-testid="setting-system" prop:value=move || s.settings.with(|x| x.system.clone())
                            on:input=move |ev| set(&|x| x.system = event_target_value(&ev))></textarea>
                    </label>
                    <label>{t(Key::Temperature)}
                        <input type="number" min=Settings::TEMPERATURE.start().to_string() max=Settings::TEMPERATURE.end().to_string() step="0.05"
                            prop:value=move || s.settings.with(|x| x.temperature.to_string())
                            on:change=move |ev| if let Some(v) = field(&ev, Settings::TEMPERATURE) { set(&|x| x.temperature = v) }/>
                    </label>
                    <label>{t(Key::TopP)}
                        <input type="number" min=Settings::TOP_P.start().to_string() max=Settings::TOP_P.end().to_string() step="0.05"
                            prop:value=move || s.settings.with(|x| x.top_p.to_string())
                            on:change=move |ev| if let Some(v) = field(&ev, Settings::TOP_P) { set(&|x| x.top_p = v) }/>
                    </label>
                    <label>{t(Key::MaxTokens)}
                        <input type="number" min=Settings::MAX_TOKENS.start().to_string() max=Settings::MAX_TOKENS.end().to_string() step="1"
                            prop:value=move || s.settings.with(|x| x.max_tokens.to_string())
                            on:change=move |ev| if let Some(v) = field(&ev, Settings::MAX_TOKENS) { set(&|x| x.max_tokens = v) }/>
                    </label>
                    <label>{t(Key::Seed)}
                        <input type="number" min="0" step="1" prop:value=move || s.settings.with(|x| x.seed.to_string())
                            on:change=move |ev| if let Some(v) = field(&ev, 0..=u64::MAX) { set(&|x| x.seed = v) }/>
                    </label>
                    <div class="buttons">
                        <button data-testid="reset-settings" on:click=move |_| s.reset_settings()>{t(Key::ResetSettings)}</button>
                        <button class="primary" data-testid="close-settings" on:click=move |_| s.show_settings.set(false)>{t(Key::Close)}</button>
                    </div>
                </div>
            </div>
        </Show>
    }
}

/// Every model in the browser's cache — complete, partial, or a file no record explains — with
/// its source, size and last use, each deletable; the storage they take against the quota, and
/// whether the browser keeps it when the disk runs low.
#[component]
fn ModelManager() -> impl IntoView {
    let s = state();
    let close = NodeRef::<leptos::html::Button>::new();
    let card = NodeRef::<leptos::html::Div>::new();
    focus_when_shown(close);
    let on_key = dialog_keys(card, move || s.show_models.set(false));
    let models = move || s.cache_listing.with(|l| l.as_ref().map(|l| l.models.clone()).unwrap_or_default());
    // The model being loaded holds its file open: it cannot be deleted until the load ends.
    let in_use = move |key: &str| {
        s.model.with(|m| matches!(m, ModelState::Loading { .. })) && s.current_cache_file().as_deref() == Some(key)
    };
    let row = move |m: crate::protocol::CachedModel| {
        let lang = s.lang.get_untracked();
        let key = m.key.clone();
        let disabled_key = key.clone();
        let state = if m.complete {
            Key::ModelComplete.text(lang).to_string()
        } else if let Some(size) = m.size {
            format!("{} · {} / {}", Key::ModelPartial.text(lang), bytes(m.cached), bytes(size))
        } else {
            Key::ModelUnknownFile.text(lang).to_string()
        };
        let used = match m.last_used {
            Some(ms) => format!(
                "{} {}",
                Key::LastUsed.text(lang),
                js_sys::Date::new(&ms.into()).to_locale_string(lang.tag(), &wasm_bindgen::JsValue::UNDEFINED)
            ),
            None => Key::NeverLoaded.text(lang).to_string(),
        };
        view! {
            <li data-testid="cached-model" data-key=m.key.clone() data-complete=m.complete.to_string()
                data-stored=m.stored.to_string()>
                <div>
                    <strong data-testid="cached-name">{m.name.clone().unwrap_or_else(|| m.key.clone())}</strong>
                    " · "<span data-testid="cached-state">{state}</span>" · "{bytes(m.stored)}
                    <br/><code class="hint">{m.source_label().unwrap_or_default()}</code>
                    <br/><span class="hint" data-testid="cached-used">{used}</span>
                </div>
                <button class="danger" data-testid="delete-model" disabled=move || in_use(&disabled_key)
                    on:click=move |_| {
                        // This button leaves with its row: focus stays in the dialog (on Close),
                        // so Tab and Escape still work.
                        if let Some(close) = close.get() {
                            let _ = close.focus();
                        }
                        s.delete_cached(key.clone())
                    }>{Key::DeleteOne.text(lang)}</button>
            </li>
        }
    };
    let totals = move || {
        let lang = s.lang.get();
        match s.cache_listing.with(|l| l.as_ref().map(|l| (l.usage, l.quota))) {
            Some((Some(usage), Some(quota))) => {
                format!("{} {} {}", bytes(usage), Key::StorageUsedOf.text(lang), bytes(quota))
            }
            Some(_) => Key::StorageUsedUnknown.text(lang).to_string(),
            None => Key::ModelProbing.text(lang).to_string(),
        }
    };
    view! {
        <Show when=move || s.show_models.get()>
            <div class="modal" role="dialog" aria-modal="true" aria-labelledby="models-title" data-testid="models"
                on:keydown=on_key>
                <div class="card models" node_ref=card>
                    <h2 id="models-title">{t(Key::ModelsOnDevice)}</h2>
                    <Show when=move || s.cache_listing.with(|l| l.as_ref().is_some_and(|l| l.models.is_empty()))>
                        <p data-testid="models-empty">{t(Key::ModelsNone)}</p>
                    </Show>
                    <ul class="cached-models" aria-live="polite">
                        <For each=models key=|m| (m.key.clone(), m.stored, m.last_used.map(f64::to_bits)) children=row/>
                    </ul>
                    <p data-testid="storage-total">{totals}</p>
                    <p data-testid="storage-persisted-state" data-persisted=move || format!("{:?}", s.persisted.get())>
                        {move || t(match s.persisted.get() {
                            Some(true) => Key::PersistGranted,
                            Some(false) => Key::PersistRefused,
                            None => Key::PersistUnknown,
                        })()}
                    </p>
                    <div class="buttons">
                        <Show when=move || s.persisted.get() != Some(true)>
                            <button data-testid="keep-models" on:click=move |_| s.request_persistence()>{t(Key::KeepModels)}</button>
                        </Show>
                        <button node_ref=close class="primary" data-testid="close-models" on:click=move |_| s.show_models.set(false)>
                            {t(Key::Close)}
                        </button>
                    </div>
                </div>
            </div>
        </Show>
    }
}

/// The origin of an absolute URL, as the browser reads it ("" when it cannot).
fn origin_of(url: &str) -> String {
    web_sys::Url::new(url).map(|u| u.origin()).unwrap_or_default()
}

/// The model's name as the page shows it: a hub repository read through another hub than the
/// default one is never shown under its name alone.
fn shown_name(name: &str, source: &ModelSource, lang: Lang) -> String {
    match source {
        ModelSource::Hub(repo) if repo.endpoint != crate::hub::default_endpoint() => {
            format!("{name} ({} {})", Key::Via.text(lang), repo.endpoint)
        }
        _ => name.to_string(),
    }
}

/// Focuses `target` once it is in the page (a dialog's safe choice).
fn focus_when_shown<E: leptos::html::ElementType>(target: NodeRef<E>)
where
    E::Output: JsCast + Clone + 'static,
{
    Effect::new(move |_| {
        if let Some(el) = target.get() {
            let _ = el.unchecked_into::<web_sys::HtmlElement>().focus();
        }
    });
}

/// A dialog's keys: Tab from its last control goes to its first (and Shift+Tab back), so focus
/// stays inside `card`; Escape does `escape`.
fn dialog_keys(
    card: NodeRef<leptos::html::Div>,
    escape: impl Fn() + Copy + 'static,
) -> impl Fn(leptos::ev::KeyboardEvent) + Copy + 'static {
    move |ev: leptos::ev::KeyboardEvent| match ev.key().as_str() {
        "Escape" => escape(),
        "Tab" => {
            let Some(controls) =
                card.get().and_then(|c| c.query_selector_all("button, a[href], input, select, textarea").ok())
            else {
                return;
            };
            let (Some(first), Some(last)) = (controls.item(0), controls.item(controls.length().saturating_sub(1)))
            else {
                return;
            };
            let active = document().active_element().map(wasm_bindgen::JsValue::from);
            let (from, to) = if ev.shift_key() { (first, last) } else { (last, first) };
            if active.as_ref() == Some(&wasm_bindgen::JsValue::from(from)) {
                ev.prevent_default();
                let _ = to.unchecked_into::<web_sys::HtmlElement>().focus();
            }
        }
        _ => {}
    }
}

/// What the page's link asks to change, in plain words with origins. Nothing applies, and no
/// model is looked at, until the user accepts; Escape or "keep the defaults" declines.
#[component]
fn LinkConsent() -> impl IntoView {
    let s = state();
    let decline = NodeRef::<leptos::html::Button>::new();
    let card = NodeRef::<leptos::html::Div>::new();
    focus_when_shown(decline);
    let item = move |change: LinkChange| {
        let lang = s.lang.get();
        match change {
            LinkChange::ModelUrl { url } => {
                let origin = origin_of(&url);
                let own = window().location().origin().is_ok_and(|o| o == origin);
                let whose = if own { format!("{origin} ({})", Key::LinkThisSite.text(lang)) } else { origin };
                view! {
                    <li data-testid="link-change" data-change="model">
                        {Key::LinkModelFile.text(lang)}" "<code class="url">{url}</code>" "
                        {Key::LinkFrom.text(lang)}" "<strong data-testid="link-origin">{whose}</strong>
                    </li>
                }
                .into_any()
            }
            LinkChange::Hub { repo, revision, endpoint, official_hub } => view! {
                <li data-testid="link-change" data-change="hub">
                    {Key::LinkHubRepo.text(lang)}" "<code>{format!("{repo}@{revision}")}</code>" "
                    {Key::LinkThroughHub.text(lang)}" "<strong data-testid="link-origin">{endpoint}</strong>
                    {(!official_hub).then(|| view! {
                        <p class="warning" data-testid="link-unofficial-hub">{Key::LinkNotOfficialHub.text(lang)}</p>
                    })}
                </li>
            }
            .into_any(),
            LinkChange::System(text) if text.is_empty() => view! {
                <li data-testid="link-change" data-change="system">{Key::LinkNoSystem.text(lang)}</li>
            }
            .into_any(),
            LinkChange::System(text) => view! {
                <li data-testid="link-change" data-change="system">
                    {Key::LinkSystem.text(lang)}<blockquote data-testid="link-system">{text}</blockquote>
                </li>
            }
            .into_any(),
            LinkChange::Sampling(pairs) => view! {
                <li data-testid="link-change" data-change="sampling">
                    {Key::LinkSampling.text(lang)}" "
                    <code>{pairs.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(" · ")}</code>
                </li>
            }
            .into_any(),
        }
    };
    let on_key = dialog_keys(card, move || s.decline_link());
    view! {
        <Show when=move || s.link_request.with(Option::is_some)>
            <div class="modal" role="dialog" aria-modal="true" aria-labelledby="link-consent-title"
                data-testid="link-consent" on:keydown=on_key>
                <div class="card" node_ref=card>
                    <h2 id="link-consent-title">{t(Key::LinkTitle)}</h2>
                    <p>{t(Key::LinkIntro)}</p>
                    <ul class="link-changes">
                        {move || s.link_request.get().map(|r| r.changes.into_iter().map(item).collect_view())}
                    </ul>
                    <div class="buttons">
                        <button node_ref=decline data-testid="link-decline" on:click=move |_| s.decline_link()>
                            {t(Key::LinkDecline)}
                        </button>
                        <button class="primary" data-testid="link-accept" on:click=move |_| s.accept_link()>
                            {t(Key::LinkAccept)}
                        </button>
                    </div>
                </div>
            </div>
        </Show>
    }
}

/// A link in an answer is the model's words: its full address (origin in bold) is shown before
/// the user leaves, and it opens in a new tab that learns nothing about this one.
#[component]
fn LeaveDialog() -> impl IntoView {
    let s = state();
    let stay = NodeRef::<leptos::html::Button>::new();
    let card = NodeRef::<leptos::html::Div>::new();
    focus_when_shown(stay);
    let on_key = dialog_keys(card, move || s.leaving.set(None));
    view! {
        <Show when=move || s.leaving.with(Option::is_some)>
            <div class="modal" role="dialog" aria-modal="true" aria-labelledby="leave-title" data-testid="leave-dialog"
                on:keydown=on_key>
                <div class="card" node_ref=card>
                    <h2 id="leave-title">{t(Key::LeaveTitle)}</h2>
                    <p>{t(Key::LeaveBody)}</p>
                    {move || s.leaving.get().map(|url| view! {
                        <p><strong data-testid="leave-origin">{origin_of(&url)}</strong></p>
                        <p><code class="url" data-testid="leave-url">{url.clone()}</code></p>
                        <div class="buttons">
                            <button node_ref=stay data-testid="leave-stay" on:click=move |_| s.leaving.set(None)>{t(Key::LeaveStay)}</button>
                            <a class="button primary" data-testid="leave-open" href=url target="_blank" rel="noopener noreferrer"
                                on:click=move |_| s.leaving.set(None)>{t(Key::LeaveOpen)}</a>
                        </div>
                    })}
                </div>
            </div>
        </Show>
    }
}

#[component]
fn Sidebar() -> impl IntoView {
    let s = state();
    let export = move |json: bool| {
        let c = s.conversation.get_untracked();
        let stem = format!("carebot-{}", c.id);
        if json {
            download(&format!("{stem}.json"), "application/json", &c.to_json());
        } else {
            download(&format!("{stem}.md"), "text/markdown", &c.to_markdown());
        }
    };
    view! {
        <aside class="sidebar" id="history-drawer" class:open=move || s.show_history.get() data-testid="sidebar"
            on:keydown=move |ev: leptos::ev::KeyboardEvent| if ev.key() == "Escape" { s.show_history.set(false) }>
            <button class="primary" data-testid="new-chat" on:click=move |_| {
                s.new_conversation();
                s.show_history.set(false);
            }>{t(Key::NewChat)}</button>
            <h2>{t(Key::History)}</h2>
            <ul data-testid="history">
                <Show when=move || s.saved.with(Vec::is_empty)>
                    <li class="empty">{t(Key::NoConversations)}</li>
                </Show>
                // Keyed by id and title: a save redraws only the rows that changed, so a click
                // during an answer's saves lands on the row it aimed at.
                <For each=move || s.saved.get() key=|c| (c.id.clone(), c.title.clone()) let:c>
                    {
                        let (open_id, delete_id, active_id) = (c.id.clone(), c.id.clone(), c.id);
                        let active = move || s.conversation.with(|open| open.id == active_id);
                        let title = if c.title.is_empty() { "…".to_string() } else { c.title };
                        view! {
                            <li class:active=active>
                                <button class="open" on:click=move |_| s.open_conversation(&open_id)>{title}</button>
                                <button class="delete" title=t(Key::DeleteOne) on:click=move |_| s.delete_saved(delete_id.clone())>"✕"</button>
                            </li>
                        }
                    }
                </For>
            </ul>
            <div class="exports">
                <button on:click=move |_| export(false)>{t(Key::ExportMarkdown)}</button>
                <button on:click=move |_| export(true)>{t(Key::ExportJson)}</button>
                <button data-testid="export-all" on:click=move |_| s.export_all()>{t(Key::ExportAll)}</button>
                <label class="button">{t(Key::Import)}
                    <input type="file" accept=".json,application/json" data-testid="import-file" class="visually-hidden"
                        on:change=move |ev| {
                            let input: web_sys::HtmlInputElement = event_target(&ev);
                            if let Some(file) = input.files().and_then(|f| f.get(0)) {
                                s.import(file);
                            }
                            // The same file can be chosen again.
                            input.set_value("");
                        }/>
                </label>
                <button class="danger" on:click=move |_| {
                    let sure = window().confirm_with_message(Key::ConfirmDeleteAll.text(s.lang.get_untracked())).unwrap_or(false);
                    if sure { s.delete_all_saved() }
                }>{t(Key::DeleteAll)}</button>
            </div>
        </aside>
    }
}

#[component]
fn ProbedModel(info: ProbeInfo) -> impl IntoView {
    let s = state();
    let lang = s.lang.get_untracked();
    let needed = info.size - info.cached;
    let short = info.available.is_some_and(|a| a < needed);
    let space =
        info.available.map(|a| format!(" · {} {}", bytes(a), Key::StorageAvailable.text(lang))).unwrap_or_default();
    let preparation = info.preparation.clone().map(|p| {
        let done = if p.downloaded > 0 {
            format!(" ({} {})", bytes(p.downloaded), Key::PrepareAlreadyDone.text(lang))
        } else {
            String::new()
        };
        view! {
            <div class="prepare" data-testid="prepare-info" data-download=p.download.to_string()>
                <p><strong>{Key::PrepareTitle.text(lang)}</strong></p>
                <p>{Key::PrepareExplain.text(lang)}</p>
                <p>{format!("{}: {}{done} · {}: {} · ", Key::PrepareDownload.text(lang), bytes(p.download), Key::PrepareResult.text(lang), bytes(info.size))}
                   <code>{p.revision.clone()}</code></p>
            </div>
        }
    });
    let preparing = info.preparation.is_some();
    view! {
        <p><strong data-testid="model-name">{shown_name(&info.name, &s.source.get_untracked(), lang)}</strong>" · "{info.architecture.clone()}" · "{format!("{:.2}B", info.parameters as f64 / 1e9)}
           " · "{bytes(info.size)}{space}</p>
        {preparation}
        <p data-testid="cache-state" data-resumed=info.resumed.to_string()>
            {if info.resumed { Key::ModelPartlyCached.text(lang) } else { Key::ModelNotCached.text(lang) }}
        </p>
        {short.then(|| view! {
            <p class="error" data-testid="storage-short">
                {format!("{} {}, {} {}. ", Key::StorageShort.text(lang), bytes(needed), Key::StorageShortAvail.text(lang), bytes(info.available.unwrap_or(0)))}
                {Key::StorageShortHint.text(lang)}
            </p>
        })}
        <button class="primary" data-testid="load-model" disabled=short on:click=move |_| s.load()>
            {if preparing {
                Key::PrepareAndLoad.text(lang).to_string()
            } else {
                format!("{} ({})", Key::DownloadAndLoad.text(lang), bytes(needed))
            }}
        </button>
    }
}

#[component]
fn PreparingModel(p: crate::protocol::PrepareProgress) -> impl IntoView {
    let s = state();
    let lang = s.lang.get_untracked();
    let left = if p.download_rate > 0.0 {
        p.download_total.saturating_sub(p.downloaded) as f64 / p.download_rate
    } else {
        0.0
    };
    view! {
        <p><strong>{Key::Preparing.text(lang)}</strong>": "<code>{p.tensor.clone()}</code></p>
        <progress data-testid="prepare-download" max=p.download_total.to_string() value=p.downloaded.to_string()></progress>
        <p>{format!("{}: {} / {} · {}/s · {} {}", Key::Downloading.text(lang), bytes(p.downloaded), bytes(p.download_total),
            amount(p.download_rate), duration(left), Key::TimeLeft.text(lang))}</p>
        <progress data-testid="prepare-quantize" max=p.write_total.to_string() value=p.written.to_string()></progress>
        <p>{format!("{}: {} / {} · {}/s", Key::Quantizing.text(lang), bytes(p.written), bytes(p.write_total), amount(p.quantize_rate))}</p>
    }
}

#[component]
fn LoadingModel(phase: Phase, done: u64, total: u64, bytes_per_second: f64) -> impl IntoView {
    let s = state();
    let lang = s.lang.get_untracked();
    let label = match phase {
        Phase::Prepare => Key::Preparing,
        Phase::Download => Key::Downloading,
        Phase::Cache => Key::LoadingFromCache,
        Phase::LocalFile => Key::ReadingFile,
    }
    .text(lang);
    let left = if bytes_per_second > 0.0 { (total - done) as f64 / bytes_per_second } else { 0.0 };
    view! {
        <progress data-testid="progress" max=total.to_string() value=done.to_string()></progress>
        <p>{format!("{label}: {} / {} · {}/s · {} {}", bytes(done), bytes(total), amount(bytes_per_second), duration(left), Key::TimeLeft.text(lang))}</p>
    }
}

#[component]
fn ReadyModel(info: ModelInfo) -> impl IntoView {
    let s = state();
    let lang = s.lang.get_untracked();
    view! {
        <p data-testid="model-ready" data-wasm-heap=info.wasm_heap_bytes.to_string()
           data-load-seconds=info.load_seconds.to_string() data-times=serde_json::to_string(&info.times).unwrap_or_default()>
           <strong>{Key::ModelReady.text(lang)}</strong>": "<span data-testid="model-name">{shown_name(&info.name, &s.source.get_untracked(), lang)}</span>" · "{info.adapter.clone()}
           {info.from_cache.then(|| format!(" · {}", Key::FromCache.text(lang)))}
           {format!(" · {:.1}s · {} {}", info.load_seconds, bytes(info.wasm_heap_bytes), Key::WorkerMemory.text(lang))}</p>
        {info.prepared.clone().map(|p| view! {
            <p class="hint" data-testid="prepared" data-stats=serde_json::to_string(&p).unwrap_or_default()>
                {format!("{} {}: {} {} ({}/s), {} {}/s", Key::PreparedIn.text(lang), duration(p.total_seconds),
                    Key::PrepareDownload.text(lang), bytes(p.source_bytes),
                    amount(p.source_bytes as f64 / p.download_seconds.max(1e-3)),
                    Key::Quantizing.text(lang), amount(p.source_bytes as f64 / p.quantize_seconds.max(1e-3)))}
            </p>
        })}
        {info.software_adapter.then(|| view! { <p class="hint">{Key::SoftwareGpu.text(lang)}</p> })}
        <p class="hint" data-testid="model-summary">{Key::ModelRead.text(lang)}": "{info.summary.clone()}</p>
    }
}

#[component]
fn FailedModel(f: Failure) -> impl IntoView {
    let s = state();
    let lang = s.lang.get_untracked();
    let reload = f.kind.needs_reload();
    view! {
        <p class="error" data-testid="model-error" data-kind=format!("{:?}", f.kind)>
            <strong>{failure_text(f.kind).text(lang)}</strong><br/>{f.detail.clone()}
        </p>
        <button class="primary" data-testid="retry" on:click=move |_| if reload { s.load() } else { s.probe(None) }>
            {if reload { Key::Reload.text(lang) } else { Key::Retry.text(lang) }}
        </button>
    }
}

#[component]
fn ModelPanel() -> impl IntoView {
    let s = state();
    let on_pick = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        if let Some(file) = input.files().and_then(|f| f.get(0)) {
            s.open_local_file(file);
        }
    };
    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        if let Some(file) = ev.data_transfer().and_then(|d| d.files()).and_then(|f| f.get(0)) {
            s.open_local_file(file);
        }
    };
    let source_text = move || match s.source.get() {
        ModelSource::Url { url } => url,
        ModelSource::File { name, .. } => name,
        ModelSource::Hub(repo) => format!("{}@{}", repo.page_url(), repo.revision),
    };
    let delete_cache = move |_| {
        if let Some(key) = s.current_cache_file() {
            s.delete_cached(key);
        }
    };
    // Each state is its own component; this closure tracks the language too, so a switch
    // redraws the panel in the other one.
    let body = move || {
        s.lang.track();
        match s.model.get() {
            ModelState::Starting | ModelState::NoWebGpu | ModelState::Probing => {
                view! { <p>{t(Key::ModelProbing)}</p> }.into_any()
            }
            ModelState::Probed(info) => view! { <ProbedModel info/> }.into_any(),
            ModelState::Loading { prepare: Some(p), .. } => view! { <PreparingModel p/> }.into_any(),
            ModelState::Loading { phase, done, total, bytes_per_second, .. } => {
                view! { <LoadingModel phase done total bytes_per_second/> }.into_any()
            }
            ModelState::Ready(info) => view! { <ReadyModel info/> }.into_any(),
            ModelState::Failed(f) => view! { <FailedModel f/> }.into_any(),
        }
    };
    view! {
        <div class="model" data-testid="model-status" data-state=move || s.model.with(ModelState::name)
            on:dragover=|ev: leptos::ev::DragEvent| ev.prevent_default() on:drop=on_drop>
            <p class="source">{t(Key::Model)}": "<code>{source_text}</code></p>
            {body}
            {move || s.persisted.get().map(|kept| view! {
                <p class=if kept { "hint" } else { "warning" } data-testid="storage-persisted" data-persisted=kept.to_string()>
                    {t(if kept { Key::PersistGranted } else { Key::PersistRefused })}
                </p>
            })}
            <details>
                <summary>{t(Key::DropHere)}</summary>
                <p>{t(Key::OpenLocal)}" "<input type="file" accept=".gguf" data-testid="model-file" on:change=on_pick/></p>
                <button class="danger" data-testid="delete-cache" on:click=delete_cache
                    disabled=move || s.source.with(|m| m.cache_key().is_none())>{t(Key::DeleteCache)}</button>
            </details>
        </div>
    }
}

#[component]
fn Messages() -> impl IntoView {
    let s = state();
    // A click (or middle click) on a link in an answer asks first (see `LeaveDialog`).
    let on_link = move |ev: leptos::ev::MouseEvent| {
        let link = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
            .and_then(|e| e.closest(".markdown a[href]").ok().flatten())
            .and_then(|a| a.dyn_into::<web_sys::HtmlAnchorElement>().ok());
        if let Some(a) = link {
            ev.prevent_default();
            s.leaving.set(Some(a.href()));
        }
    };
    // One row per turn, keyed by everything it shows: a token changes only the streaming
    // answer's key, so only that answer is rendered again (its Markdown and its DOM), however
    // long the conversation (BENCHMARKS.md: the time per token with 5 and 50 turns).
    let rows = move || {
        let answering = s.answering.get().is_some();
        let lang = s.lang.get();
        s.conversation.with(|c| {
            let elsewhere = s.written_elsewhere.with(|w| w.as_deref() == Some(c.id.as_str()));
            let last = c.turns.len().saturating_sub(1);
            c.turns
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let writing = i == last && answering;
                    (turn_key(&c.id, i, t, writing, elsewhere, lang), i, writing, elsewhere)
                })
                .collect::<Vec<_>>()
        })
    };
    view! {
        // Screen readers hear an answer once it is written (busy while it streams), not token by token.
        <div class="messages" data-testid="messages" aria-live="polite" aria-busy=move || s.answering.get().is_some().to_string()
            on:click=on_link on:auxclick=on_link>
            <For each=rows key=|row| row.0 let:row>
                {
                    let (_, index, writing, elsewhere) = row;
                    s.conversation
                        .with_untracked(|c| c.turns.get(index).cloned())
                        .map(|turn| message(turn, index, writing, elsewhere))
                }
            </For>
        </div>
    }
}

/// Puts `text` on the clipboard: the Clipboard API, or where a page has none (served over plain
/// http, as on a clinic's intranet) the older copy command on a hidden text box.
async fn copy_to_clipboard(text: &str) -> bool {
    let navigator = window().navigator();
    let has_api = js_sys::Reflect::get(&navigator, &"clipboard".into()).is_ok_and(|c| !c.is_undefined());
    if has_api {
        return wasm_bindgen_futures::JsFuture::from(navigator.clipboard().write_text(text)).await.is_ok();
    }
    let document = document();
    let Some(area) =
        document.create_element("textarea").ok().and_then(|e| e.dyn_into::<web_sys::HtmlTextAreaElement>().ok())
    else {
        return false;
    };
    area.set_value(text);
    let _ = area.set_attribute("style", "position: fixed; opacity: 0");
    let Some(body) = document.body() else { return false };
    let _ = body.append_child(&area);
    area.select();
    let copied = document.unchecked_ref::<web_sys::HtmlDocument>().exec_command("copy").unwrap_or(false);
    area.remove();
    copied
}

/// What a turn's row shows, as one number: the row is made again only when it changes.
fn turn_key(conversation: &str, index: usize, t: &Turn, writing: bool, elsewhere: bool, lang: Lang) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (conversation, index, &t.role, &t.content, &t.error, t.unfinished, writing, elsewhere, lang.tag()).hash(&mut h);
    t.stats.as_ref().map(|st| (st.generated, &st.stop, st.prompt_tokens, st.dropped_turns)).hash(&mut h);
    h.finish()
}

/// Turn `index`; `writing`: this page is writing it now; `elsewhere`: another tab is writing an
/// answer in this conversation.
fn message(turn: Turn, index: usize, writing: bool, elsewhere: bool) -> impl IntoView {
    let s = state();
    let lang = s.lang.get_untracked();
    if turn.role == "user" {
        return view! {
            <div class="msg user" data-testid="user-message">
                <div class="who">{Key::You.text(lang)}</div>
                <div class="text">{turn.content.clone()}</div>
                <button class="small" data-testid="edit" on:click=move |_| s.edit(index)>{Key::Edit.text(lang)}</button>
            </div>
        }
        .into_any();
    }
    let html = markdown::render(&turn.content, &super::leads_into_app);
    let stats = turn.stats.clone().map(|st| {
        let stop = match st.stop {
            AnswerEnd::Cancelled => format!(" · {}", Key::Stopped.text(lang)),
            AnswerEnd::ContextFull => format!(" · {}", Key::CutShort.text(lang)),
            AnswerEnd::Stop | AnswerEnd::MaxTokens => String::new(),
        };
        let dropped = (st.dropped_turns > 0).then(|| view! {
            <p class="dropped" data-testid="dropped-notice">{format!("{} {}", Key::Dropped.text(lang), st.dropped_turns)}</p>
        });
        view! {
            {dropped}
            <div class="stats" data-testid="answer-stats" data-stats=serde_json::to_string(&st).unwrap_or_default()>
                {format!("{} {} · {} {:.1} {}", st.generated, Key::Tokens.text(lang), Key::WritingSpeed.text(lang),
                    st.tokens_per_second, Key::TokensPerSecond.text(lang))}
                // Reading the prompt is its own figure: a long conversation's first token waits for it.
                <span data-testid="prompt-stats">{format!(" · {} ({} {}) {:.1} s{stop}", Key::ReadingPrompt.text(lang),
                    st.prompt_tokens_run, Key::Tokens.text(lang), st.prompt_seconds)}</span>
            </div>
        }
    });
    let done = !writing;
    // None: not tried; then whether the clipboard took the answer's Markdown.
    let copied = RwSignal::new(None::<bool>);
    let text = turn.content.clone();
    let copy = move |_| {
        let text = text.clone();
        leptos::task::spawn_local(async move { copied.set(Some(copy_to_clipboard(&text).await)) });
    };
    view! {
        <div class="msg assistant" data-testid="assistant-message" data-done=done.to_string() data-text=turn.content.clone()>
            <div class="who">{Key::Assistant.text(lang)}
                {done.then(|| view! {
                    <button class="small copy" data-testid="copy" on:click=copy
                        data-copied=move || copied.get().map(|c| c.to_string()).unwrap_or_default()>
                        {move || match copied.get() {
                            None => Key::Copy.text(lang),
                            Some(true) => Key::Copied.text(lang),
                            Some(false) => Key::CopyFailed.text(lang),
                        }}
                    </button>
                })}
            </div>
            <div class="text markdown" inner_html=html></div>
            {turn.error.clone().map(|e| view! { <p class="error" data-testid="answer-error">{e}</p> })}
            {(turn.unfinished && !writing).then(|| if elsewhere {
                view! { <p class="hint" data-testid="written-elsewhere">{Key::WrittenElsewhere.text(lang)}</p> }.into_any()
            } else {
                view! { <p class="interrupted" data-testid="interrupted">{Key::Interrupted.text(lang)}</p> }.into_any()
            })}
            {stats}
        </div>
    }
    .into_any()
}

#[component]
fn Composer() -> impl IntoView {
    let s = state();
    let ready = move || s.model.with(|m| matches!(m, ModelState::Ready(_)));
    let answering = move || s.answering.get().is_some();
    let send = move || {
        let text = s.draft.get_untracked();
        if ready() && !text.trim().is_empty() && s.answering.get_untracked().is_none() {
            s.draft.set(String::new());
            s.submit(text);
        }
    };
    let meter = move || {
        s.conversation.with(|c| c.turns.iter().rev().find_map(|t| t.stats.clone())).map(|st| {
            let pct = 100.0 * st.context_used as f64 / st.context_size.max(1) as f64;
            view! {
                <div class="meter" data-testid="context-meter" title=format!("{pct:.0}%")>
                    {t(Key::Context)}": "{format!("{} / {}", st.context_used, st.context_size)}
                    <meter min="0" max=st.context_size.to_string() value=st.context_used.to_string()></meter>
                </div>
            }
        })
    };
    let can_regenerate = move || {
        !answering() && ready() && s.conversation.with(|c| c.turns.last().is_some_and(|t| t.role == "assistant"))
    };
    view! {
        <div class="composer">
            <textarea data-testid="chat-input" rows="3" placeholder=t(Key::Placeholder)
                prop:value=move || s.draft.get()
                on:input=move |ev| s.draft.set(event_target_value(&ev))
                on:keydown=move |ev: leptos::ev::KeyboardEvent| if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
                    ev.prevent_default();
                    send();
                }></textarea>
            <div class="buttons">
                <button class="primary" data-testid="send" disabled=move || !ready() || answering() on:click=move |_| send()>{t(Key::Send)}</button>
                <button data-testid="stop" disabled=move || !answering() on:click=move |_| s.stop()>{t(Key::Stop)}</button>
                <button data-testid="regenerate" disabled=move || !can_regenerate() on:click=move |_| s.regenerate()>{t(Key::Regenerate)}</button>
                {meter}
            </div>
            <p class="disclaimer-line">{t(Key::DisclaimerShort)}</p>
        </div>
    }
}
