//! The render stage: a scheduled notification becomes the text that goes out.
//!
//! In: the tenant's candidate templates ([`TemplateSet`], loaded by the
//! pipeline) and a [`RenderRequest`]: template name, channel, locale, the
//! host-side event, the plugin's `data`, the shop's settings, the decision
//! time and a fuel limit (per part). Out: a [`Rendered`] message — subject
//! (email), plain text and optional HTML (email) — from the first locale of
//! the fallback chain ([`locale_chain`]) that has the template. Pure: no I/O.
//!
//! Templates are minijinja and follow the template contract
//! (`spec-templates.md`): strict undefined, HTML autoescape in the `html` part
//! only, `{% extends "layout" %}` for email layouts, and the `money`, `date`,
//! `datetime` and `time` filters (`render/format.rs` says how amounts and
//! dates look). Whitespace works as in Jinja2 (no `trim_blocks`: use `{%-`
//! and `-%}`); rendered text loses trailing whitespace and leading blank
//! lines, the subject becomes one line.
//! Templates see the customer's first name, locale and timezone, never their
//! email address or phone number.
//!
//! Fails with a [`RenderError`]: no template in any locale tried, no layout, a
//! syntax error, an undefined variable or a filter error (named, with the
//! part and line), a part that ran out of fuel, a part the channel needs but
//! the template lacks, or a part that renders to nothing.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use jiff::tz::TimeZone;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use tidings_sdk::types::{Channel, OrderEvent, Timestamp};

mod context;
mod format;

use context::TemplateContext;
use format::Lang;

/// The usual fuel (minijinja instructions) per part: an order email of a
/// hundred lines with a layout needs under 5,000; a runaway loop stops here.
pub const DEFAULT_FUEL: u64 = 50_000;

/// The name of the email layout template that `html` parts may extend.
pub const LAYOUT: &str = "layout";

/// One stored template: (name, channel, locale) → parts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateParts {
    /// Email subject (one line, plain text).
    pub subject: Option<String>,
    /// Plain text body: the whole message for SMS, WhatsApp, push and webhook.
    pub text: Option<String>,
    /// Email HTML body, autoescaped; may extend [`LAYOUT`].
    pub html: Option<String>,
}

/// Templates available to one render, keyed by (name, channel, locale);
/// includes layouts (name [`LAYOUT`], channel email).
pub type TemplateSet = HashMap<(String, Channel, String), TemplateParts>;

/// The tenant's shop, as templates see it in `shop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShopInfo {
    /// Shop name, e.g. `"Bottega Verde"`.
    pub name: String,
    /// Shop home page.
    pub url: String,
    /// Where customers write for help.
    pub support_email: String,
}

/// What to render, for whom.
#[derive(Debug, Clone, Copy)]
pub struct RenderRequest<'a> {
    /// Template name, e.g. `"order-shipped"`.
    pub template: &'a str,
    /// Channel the message goes out on; decides which parts are rendered.
    pub channel: Channel,
    /// The action's locale; the customer's locale when `None`.
    pub locale: Option<&'a str>,
    /// The tenant's default locale, tried after the requested one.
    pub tenant_default_locale: &'a str,
    /// The host-side event. Templates never see the customer's email or phone.
    pub event: &'a OrderEvent,
    /// The plugin's template variables (`data`).
    pub data: &'a BTreeMap<String, String>,
    /// The tenant's shop settings (`shop`).
    pub shop: &'a ShopInfo,
    /// The decision time (`now`).
    pub now: Timestamp,
    /// Fuel limit for each part rendered (see [`DEFAULT_FUEL`]).
    pub fuel: u64,
}

/// A rendered message, ready for dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    /// Template name.
    pub template: String,
    /// Channel it was rendered for.
    pub channel: Channel,
    /// The locale whose template was used, e.g. `"it"`.
    pub locale: String,
    /// Email subject on one line; `None` for other channels.
    pub subject: Option<String>,
    /// Plain text body.
    pub text: String,
    /// Email HTML body, when the template has one.
    pub html: Option<String>,
}

/// Why a message could not be rendered or a template was rejected.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// No locale in the fallback chain has the template for the channel.
    #[error("no template `{template}` for {} in locales {}", channel_name(*.channel), .tried.join(", "))]
    NotFound {
        /// Template name.
        template: String,
        /// Channel asked for.
        channel: Channel,
        /// Locales tried, in order.
        tried: Vec<String>,
    },
    /// The `html` part extends the layout, but no locale tried has one.
    #[error("no email layout in locales {}", .tried.join(", "))]
    LayoutNotFound {
        /// Locales tried, in order.
        tried: Vec<String>,
    },
    /// A part does not compile.
    #[error("syntax error in the {part} part: {message}")]
    Syntax {
        /// `subject`, `text`, `html` or `layout`.
        part: &'static str,
        /// What is wrong, with the line.
        message: String,
    },
    /// A part failed while rendering: an undefined variable, a filter given
    /// the wrong kind of value, ...
    #[error("cannot render the {part} part: {message}")]
    Render {
        /// `subject`, `text`, `html` or `layout`.
        part: &'static str,
        /// What went wrong, naming the variable when one is undefined, and
        /// minijinja's detail with the line.
        message: String,
    },
    /// A part used up its fuel (a runaway loop, or simply too much work).
    #[error("the {part} part ran out of fuel")]
    FuelExhausted {
        /// `subject`, `text`, `html` or `layout`.
        part: &'static str,
    },
    /// The template lacks a part its channel needs (email: subject and text;
    /// other channels: text; a layout: html).
    #[error("the template has no {part} part")]
    MissingPart {
        /// The part missing.
        part: &'static str,
    },
    /// A part rendered to nothing but whitespace.
    #[error("the {part} part rendered empty")]
    Empty {
        /// `subject` or `text`.
        part: &'static str,
    },
    /// A default-template file is not in the parts format ([`parse_parts`]).
    #[error("malformed template file at line {line}: {message}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "email",
        Channel::Sms => "sms",
        Channel::Whatsapp => "whatsapp",
        Channel::Push => "push",
        Channel::Webhook => "webhook",
    }
}

/// Render `req.template` for `req.channel` from `templates`, compiling its
/// parts for this render only ([`TemplateCache::render`] reuses them).
///
/// The first locale of [`locale_chain`] (from the request's locale, else the
/// customer's) that has the template is used for all its parts; an email
/// layout is looked up through the same chain starting from that locale.
pub fn render(templates: &TemplateSet, req: &RenderRequest<'_>) -> Result<Rendered, RenderError> {
    render_with(templates, req, None)
}

fn render_with(
    templates: &TemplateSet,
    req: &RenderRequest<'_>,
    cache: Option<&TemplateCache>,
) -> Result<Rendered, RenderError> {
    let requested = req.locale.unwrap_or(&req.event.order.customer.locale);
    let chain = locale_chain(requested, req.tenant_default_locale);
    let Some((used, parts)) = chain.iter().enumerate().find_map(|(i, locale)| {
        find(templates, req.template, req.channel, locale).map(|parts| (i, parts))
    }) else {
        return Err(RenderError::NotFound {
            template: req.template.to_owned(),
            channel: req.channel,
            tried: chain,
        });
    };
    check_complete(req.template, parts, req.channel)?;
    let locale = &chain[used];

    let layout_chain = &chain[used..];
    let layout = layout_chain.iter().find_map(|locale| {
        find(templates, LAYOUT, Channel::Email, locale).and_then(|layout| layout.html.as_deref())
    });
    let sources = Sources::of(parts, layout, req.channel);
    let compiled = match cache {
        Some(cache) => cache.compiled(sources)?,
        None => Arc::new(Compiled::new(sources)?),
    };
    let renderer = Renderer::new(req, locale, &compiled, layout_chain);

    let subject = renderer
        .part("subject")?
        .map(|subject| subject.split_whitespace().collect::<Vec<_>>().join(" "));
    if subject.as_deref() == Some("") {
        return Err(RenderError::Empty { part: "subject" });
    }
    let text = renderer
        .part("text")?
        .map(|text| tidy_text(&text))
        .unwrap_or_default();
    if text.is_empty() {
        return Err(RenderError::Empty { part: "text" });
    }
    let html = renderer.part("html")?;

    Ok(Rendered {
        template: req.template.to_owned(),
        channel: req.channel,
        locale: locale.clone(),
        subject,
        text,
        html: html.map(|html| html.trim().to_owned()),
    })
}

/// How many compiled templates a [`TemplateCache`] keeps.
pub const CACHE_ENTRIES: usize = 1024;

/// Compiled templates shared by renders, keyed by their sources: the message
/// worker renders the same few templates over and over, and compiling them
/// costs more than rendering them. Tenants whose templates are the same text
/// (the bundled ones, say) share one entry; an edited template is new text,
/// so a stale compilation is never used. Holds at most [`CACHE_ENTRIES`],
/// dropping the least recently used.
#[derive(Debug, Default)]
pub struct TemplateCache {
    entries: Mutex<CacheEntries>,
}

#[derive(Debug, Default)]
struct CacheEntries {
    by_sources: HashMap<u64, CacheEntry>,
    clock: u64,
}

#[derive(Debug)]
struct CacheEntry {
    compiled: Arc<Compiled>,
    last_used: u64,
}

impl TemplateCache {
    /// [`render`], with the template's parts compiled once and reused.
    pub fn render(
        &self,
        templates: &TemplateSet,
        req: &RenderRequest<'_>,
    ) -> Result<Rendered, RenderError> {
        render_with(templates, req, Some(self))
    }

    /// How many compiled templates are held.
    pub fn len(&self) -> usize {
        self.lock().by_sources.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheEntries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The compilation of `sources`, compiled now if not held. A failed
    /// compilation is not kept: the error is the render's.
    fn compiled(&self, sources: Sources<'_>) -> Result<Arc<Compiled>, RenderError> {
        let key = sources.key();
        {
            let mut entries = self.lock();
            entries.clock += 1;
            let now = entries.clock;
            if let Some(entry) = entries.by_sources.get_mut(&key) {
                if entry.compiled.sources.matches(&sources) {
                    entry.last_used = now;
                    return Ok(entry.compiled.clone());
                }
                // Another text with the same hash: compiled for this render only.
                return Ok(Arc::new(Compiled::new(sources)?));
            }
        }
        // Compiled without the lock: other renders go on meanwhile.
        let compiled = Arc::new(Compiled::new(sources)?);
        let mut entries = self.lock();
        if entries.by_sources.len() >= CACHE_ENTRIES
            && let Some(oldest) = entries
                .by_sources
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(key, _)| *key)
        {
            entries.by_sources.remove(&oldest);
        }
        let last_used = entries.clock;
        entries.by_sources.insert(
            key,
            CacheEntry {
                compiled: compiled.clone(),
                last_used,
            },
        );
        Ok(compiled)
    }
}

/// The sources one render compiles: the parts its channel uses (those with
/// something in them) and the layout.
#[derive(Debug, Clone, Copy, Hash)]
struct Sources<'a> {
    subject: Option<&'a str>,
    text: Option<&'a str>,
    html: Option<&'a str>,
    layout: Option<&'a str>,
}

impl<'a> Sources<'a> {
    fn of(parts: &'a TemplateParts, layout: Option<&'a str>, channel: Channel) -> Self {
        let email = channel == Channel::Email;
        let used = |part: &'a Option<String>, used: bool| {
            part.as_deref()
                .filter(|source| used && !source.trim().is_empty())
        };
        Sources {
            subject: used(&parts.subject, email),
            text: used(&parts.text, true),
            html: used(&parts.html, email),
            layout: layout.filter(|_| email),
        }
    }

    /// The key of these sources in a [`TemplateCache`].
    fn key(&self) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        self.hash(&mut hasher);
        hasher.finish()
    }
}

/// [`Sources`], owned.
#[derive(Debug)]
struct OwnedSources {
    subject: Option<String>,
    text: Option<String>,
    html: Option<String>,
    layout: Option<String>,
}

impl OwnedSources {
    fn matches(&self, other: &Sources<'_>) -> bool {
        self.subject.as_deref() == other.subject
            && self.text.as_deref() == other.text
            && self.html.as_deref() == other.html
            && self.layout.as_deref() == other.layout
    }

    /// The source of `part` (`subject`, `text`, `html` or `layout`).
    fn part(&self, part: &str) -> Option<&str> {
        match part {
            "subject" => self.subject.as_deref(),
            "text" => self.text.as_deref(),
            "html" => self.html.as_deref(),
            LAYOUT => self.layout.as_deref(),
            _ => None,
        }
    }
}

/// A template's parts, compiled. The `html` part is compiled in an
/// environment of its own, where the plain parts do not exist, so that it
/// cannot include the unescaped `text` part; both environments can load only
/// the layout. The language and timezone filters are added per render.
#[derive(Debug)]
struct Compiled {
    sources: OwnedSources,
    plain: Environment<'static>,
    html: Environment<'static>,
}

impl Compiled {
    fn new(sources: Sources<'_>) -> Result<Self, RenderError> {
        let sources = OwnedSources {
            subject: sources.subject.map(str::to_owned),
            text: sources.text.map(str::to_owned),
            html: sources.html.map(str::to_owned),
            layout: sources.layout.map(str::to_owned),
        };
        let mut plain = environment(sources.layout.clone());
        let mut html = environment(sources.layout.clone());
        for part in ["subject", "text", "html"] {
            let env = if part == "html" {
                &mut html
            } else {
                &mut plain
            };
            if let Some(source) = sources.part(part) {
                env.add_template_owned(part, source.to_owned())
                    .map_err(|err| syntax_error(part, &err))?;
            }
        }
        if sources.html.is_some() && sources.layout.is_some() {
            // Compiled here once rather than in every render; a layout that
            // does not compile fails the render that extends it, as before.
            let _ = html.get_template(LAYOUT);
        }
        Ok(Compiled {
            sources,
            plain,
            html,
        })
    }
}

/// The locales to try, best first: `it-IT` → [`it-IT`, `it`, tenant default
/// (and its language), `en`], deduplicated, case-normalised (language
/// lowercase, region uppercase, script titlecase; `_` becomes `-`).
pub fn locale_chain(requested: &str, tenant_default: &str) -> Vec<String> {
    let mut chain: Vec<String> = Vec::new();
    let mut push = |locale: String| {
        if !chain.contains(&locale) {
            chain.push(locale);
        }
    };
    for locale in [requested, tenant_default]
        .into_iter()
        .filter_map(normalize_locale)
    {
        let subtags: Vec<&str> = locale.split('-').collect();
        for len in (1..=subtags.len()).rev() {
            push(subtags[..len].join("-"));
        }
    }
    push("en".to_owned());
    chain
}

/// `it_it.UTF-8` → `it-IT`; `None` when there is no usable language.
fn normalize_locale(raw: &str) -> Option<String> {
    let raw = raw.split(['.', '@']).next()?.trim();
    let mut subtags = Vec::new();
    for (i, subtag) in raw.split(['-', '_']).enumerate() {
        let valid = !subtag.is_empty() && subtag.chars().all(|c| c.is_ascii_alphanumeric());
        if !valid || (i == 0 && !subtag.chars().all(|c| c.is_ascii_alphabetic())) {
            return None;
        }
        subtags.push(match (i, subtag.len()) {
            (0, _) => subtag.to_ascii_lowercase(),
            (_, 4) => {
                let lower = subtag.to_ascii_lowercase();
                lower[..1].to_ascii_uppercase() + &lower[1..]
            }
            (_, 2 | 3) => subtag.to_ascii_uppercase(),
            _ => subtag.to_ascii_lowercase(),
        });
    }
    Some(subtags.join("-"))
}

/// The template (name, channel, locale); stored locales are compared in
/// normalised form, an exact key first.
fn find<'t>(
    templates: &'t TemplateSet,
    name: &str,
    channel: Channel,
    locale: &str,
) -> Option<&'t TemplateParts> {
    templates
        .get(&(name.to_owned(), channel, locale.to_owned()))
        .or_else(|| {
            templates
                .iter()
                .find(|((n, c, l), _)| {
                    n == name && *c == channel && normalize_locale(l).as_deref() == Some(locale)
                })
                .map(|(_, parts)| parts)
        })
}

/// Parse a file in the on-disk default-template format: parts separated by
/// lines `{# subject #}`, `{# text #}`, `{# html #}` (each trimmed of
/// surrounding blank lines; a part with nothing in it is absent).
pub fn parse_parts(source: &str) -> Result<TemplateParts, RenderError> {
    let mut parts = TemplateParts::default();
    let mut current: Option<(&str, Vec<&str>)> = None;
    let mut seen: Vec<&str> = Vec::new();
    for (i, line) in source.lines().enumerate() {
        if let Some(marker) = part_marker(line) {
            if seen.contains(&marker) {
                return Err(RenderError::Malformed {
                    line: i + 1,
                    message: format!("a second `{{# {marker} #}}` marker"),
                });
            }
            seen.push(marker);
            store_part(&mut parts, current.replace((marker, Vec::new())));
        } else if let Some((_, lines)) = current.as_mut() {
            lines.push(line);
        } else if !line.trim().is_empty() {
            return Err(RenderError::Malformed {
                line: i + 1,
                message:
                    "content before the first `{# subject #}`, `{# text #}` or `{# html #}` marker"
                        .to_owned(),
            });
        }
    }
    if seen.is_empty() {
        return Err(RenderError::Malformed {
            line: 1,
            message: "no `{# subject #}`, `{# text #}` or `{# html #}` marker".to_owned(),
        });
    }
    store_part(&mut parts, current);
    Ok(parts)
}

fn store_part(parts: &mut TemplateParts, part: Option<(&str, Vec<&str>)>) {
    if let Some((name, lines)) = part {
        let body = trim_blank_lines(&lines);
        let slot = match name {
            "subject" => &mut parts.subject,
            "text" => &mut parts.text,
            _ => &mut parts.html,
        };
        *slot = (!body.is_empty()).then_some(body);
    }
}

/// `subject`, `text` or `html` when `line` is that part's marker.
fn part_marker(line: &str) -> Option<&'static str> {
    let inner = line.trim().strip_prefix("{#")?.strip_suffix("#}")?.trim();
    ["subject", "text", "html"]
        .into_iter()
        .find(|part| *part == inner)
}

fn trim_blank_lines(lines: &[&str]) -> String {
    let start = lines.iter().position(|l| !l.trim().is_empty());
    let end = lines.iter().rposition(|l| !l.trim().is_empty());
    match (start, end) {
        (Some(start), Some(end)) => lines[start..=end].join("\n"),
        _ => String::new(),
    }
}

/// Check a template's parts compile (used when a merchant uploads one):
/// syntax errors name the part and line. Only the parts `channel` uses are
/// checked; whether the needed ones are there is [`check_complete`]'s job.
pub fn validate(parts: &TemplateParts, channel: Channel) -> Result<(), RenderError> {
    // Compiling needs neither fuel nor the filters, which are looked up
    // when a template renders.
    let env = environment(None);
    for (part, source) in used_parts(parts, channel) {
        if let Some(source) = source {
            env.template_from_named_str(part, source)
                .map_err(|err| syntax_error(part, &err))?;
        }
    }
    Ok(())
}

/// Check the template named `name` has the parts `channel` needs: email
/// needs a subject and a text (html is optional), other channels a text, and
/// the email [`LAYOUT`] an html part.
pub fn check_complete(
    name: &str,
    parts: &TemplateParts,
    channel: Channel,
) -> Result<(), RenderError> {
    let present = |part: &Option<String>| part.as_deref().is_some_and(|s| !s.trim().is_empty());
    let needed: &[(&'static str, bool)] = match channel {
        Channel::Email if name == LAYOUT => &[("html", present(&parts.html))],
        Channel::Email => &[
            ("subject", present(&parts.subject)),
            ("text", present(&parts.text)),
        ],
        _ => &[("text", present(&parts.text))],
    };
    match needed.iter().find(|(_, present)| !present) {
        Some((part, _)) => Err(RenderError::MissingPart { part }),
        None => Ok(()),
    }
}

fn used_parts(parts: &TemplateParts, channel: Channel) -> Vec<(&'static str, Option<&str>)> {
    match channel {
        Channel::Email => vec![
            ("subject", parts.subject.as_deref()),
            ("text", parts.text.as_deref()),
            ("html", parts.html.as_deref()),
        ],
        _ => vec![("text", parts.text.as_deref())],
    }
}

/// Drop trailing whitespace and leading blank lines.
fn tidy_text(text: &str) -> String {
    let text = text.trim_end();
    let leading = text.len() - text.trim_start().len();
    let start = text[..leading].rfind('\n').map_or(0, |i| i + 1);
    text[start..].to_owned()
}

/// The environment every part is compiled in; [`Renderer::new`] adds the
/// fuel and the filters of the render's language and timezone.
fn environment(layout: Option<String>) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| {
        if name == "html" || name == LAYOUT {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    // Only the layout can be loaded.
    env.set_loader(move |name| Ok(if name == LAYOUT { layout.clone() } else { None }));
    env
}

/// A compiled environment made ready for one render.
fn configured(
    env: &Environment<'static>,
    lang: Lang,
    tz: TimeZone,
    fuel: u64,
) -> Environment<'static> {
    let mut env = env.clone();
    env.set_fuel(Some(fuel));
    format::add_filters(&mut env, lang, tz);
    env
}

/// A part (or the layout it extends) that does not compile.
fn syntax_error(part: &'static str, err: &minijinja::Error) -> RenderError {
    let part = if err.name() == Some(LAYOUT) {
        LAYOUT
    } else {
        part
    };
    RenderError::Syntax {
        part,
        message: located(err, syntax_detail(err)),
    }
}

/// `line 3: what`, for an error minijinja located in a part.
fn located(err: &minijinja::Error, what: impl std::fmt::Display) -> String {
    match err.line() {
        Some(line) => format!("line {line}: {what}"),
        None => what.to_string(),
    }
}

/// minijinja's description of a syntax error, e.g. `unexpected end of input`.
fn syntax_detail(err: &minijinja::Error) -> String {
    err.detail()
        .map_or_else(|| err.kind().to_string(), str::to_owned)
}

/// One render: the compiled parts made ready for it, the context and what is
/// needed to explain an error.
struct Renderer<'a> {
    plain: Environment<'static>,
    /// Only when the template has an `html` part.
    html: Option<Environment<'static>>,
    context: TemplateContext,
    sources: &'a OwnedSources,
    layout_tried: &'a [String],
}

impl<'a> Renderer<'a> {
    fn new(
        req: &RenderRequest<'_>,
        locale: &str,
        compiled: &'a Compiled,
        layout_tried: &'a [String],
    ) -> Self {
        let tz = format::timezone(&req.event.order.customer.timezone);
        let lang = Lang::of_locale(locale);
        let html = compiled
            .sources
            .html
            .is_some()
            .then(|| configured(&compiled.html, lang, tz.clone(), req.fuel));
        let plain = configured(&compiled.plain, lang, tz, req.fuel);
        let globals = plain.globals().map(|(name, _)| name.to_owned());
        let context = TemplateContext::new(req, locale, globals);
        Renderer {
            plain,
            html,
            context,
            sources: &compiled.sources,
            layout_tried,
        }
    }

    /// Render one part, if the template has it.
    fn part(&self, part: &'static str) -> Result<Option<String>, RenderError> {
        if self.sources.part(part).is_none() {
            return Ok(None);
        }
        let env = match &self.html {
            Some(html) if part == "html" => html,
            _ => &self.plain,
        };
        env.get_template(part)
            .and_then(|template| template.render(self.context.root()))
            .map(Some)
            .map_err(|err| self.error(part, &err))
    }

    fn error(&self, part: &'static str, err: &minijinja::Error) -> RenderError {
        let part = if err.name() == Some(LAYOUT) {
            LAYOUT
        } else {
            part
        };
        match err.kind() {
            ErrorKind::OutOfFuel => RenderError::FuelExhausted { part },
            ErrorKind::SyntaxError => syntax_error(part, err),
            ErrorKind::TemplateNotFound
                if self.sources.layout.is_none()
                    && err
                        .detail()
                        .is_some_and(|d| d.contains(&format!("{LAYOUT:?}"))) =>
            {
                RenderError::LayoutNotFound {
                    tried: self.layout_tried.to_vec(),
                }
            }
            ErrorKind::UndefinedError => RenderError::Render {
                part,
                message: match self.undefined_name(err) {
                    Some(name) => located(err, format_args!("`{name}` is undefined")),
                    None => located(err, "undefined value"),
                },
            },
            kind => RenderError::Render {
                part,
                message: match err.detail() {
                    Some(detail) => located(err, format_args!("{kind}: {detail}")),
                    None => located(err, kind),
                },
            },
        }
    }

    /// The variable behind an undefined-value error: the latest failed lookup
    /// whose last name appears on the failing line.
    fn undefined_name(&self, err: &minijinja::Error) -> Option<String> {
        let source = self.sources.part(err.name()?)?;
        let line = source.lines().nth(err.line()?.checked_sub(1)?)?;
        self.context.undefined_on(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_sdk::testing::fixture;
    use tidings_sdk::types::EventKind;

    /// A host-side event (contact details included) and what goes with it.
    struct Case {
        event: OrderEvent,
        data: BTreeMap<String, String>,
        shop: ShopInfo,
        tenant_default: &'static str,
    }

    impl Case {
        fn new(kind: EventKind) -> Self {
            Case {
                event: fixture(kind),
                data: BTreeMap::new(),
                shop: ShopInfo {
                    name: "Bottega Verde".to_owned(),
                    url: "https://shop.example.com".to_owned(),
                    support_email: "help@shop.example.com".to_owned(),
                },
                tenant_default: "en",
            }
        }

        fn data(mut self, key: &str, value: &str) -> Self {
            self.data.insert(key.to_owned(), value.to_owned());
            self
        }

        fn customer(mut self, locale: &str, timezone: &str) -> Self {
            self.event.order.customer.locale = locale.to_owned();
            self.event.order.customer.timezone = timezone.to_owned();
            self
        }

        fn request<'a>(&'a self, template: &'a str, channel: Channel) -> RenderRequest<'a> {
            RenderRequest {
                template,
                channel,
                locale: None,
                tenant_default_locale: self.tenant_default,
                event: &self.event,
                data: &self.data,
                shop: &self.shop,
                now: "2026-11-23T10:00:00Z".parse().expect("valid timestamp"),
                fuel: DEFAULT_FUEL,
            }
        }

        fn render(
            &self,
            templates: &TemplateSet,
            template: &str,
            channel: Channel,
        ) -> Result<Rendered, RenderError> {
            render(templates, &self.request(template, channel))
        }
    }

    /// [`super::render`], checking on the way that a [`TemplateCache`]
    /// shared by all tests gives the same result, when it compiles the
    /// template and when it reuses the compilation.
    fn render(templates: &TemplateSet, req: &RenderRequest<'_>) -> Result<Rendered, RenderError> {
        static CACHE: std::sync::LazyLock<TemplateCache> =
            std::sync::LazyLock::new(TemplateCache::default);
        let fresh = super::render(templates, req);
        for _ in 0..2 {
            let cached = CACHE.render(templates, req);
            assert_eq!(format!("{cached:?}"), format!("{fresh:?}"));
        }
        fresh
    }

    fn email(subject: &str, text: &str, html: Option<&str>) -> TemplateParts {
        TemplateParts {
            subject: Some(subject.to_owned()),
            text: Some(text.to_owned()),
            html: html.map(str::to_owned),
        }
    }

    fn text_only(text: &str) -> TemplateParts {
        TemplateParts {
            text: Some(text.to_owned()),
            ..TemplateParts::default()
        }
    }

    fn layout(html: &str) -> TemplateParts {
        TemplateParts {
            html: Some(html.to_owned()),
            ..TemplateParts::default()
        }
    }

    fn key(name: &str, channel: Channel, locale: &str) -> (String, Channel, String) {
        (name.to_owned(), channel, locale.to_owned())
    }

    fn set(entries: Vec<(&str, Channel, &str, TemplateParts)>) -> TemplateSet {
        entries
            .into_iter()
            .map(|(name, channel, locale, parts)| (key(name, channel, locale), parts))
            .collect()
    }

    /// An SMS template `t` stored for `locale`.
    fn sms_set(locale: &str, text: &str) -> TemplateSet {
        set(vec![("t", Channel::Sms, locale, text_only(text))])
    }

    /// Render `text` as an English SMS for `case`.
    fn sms(case: &Case, text: &str) -> Result<String, RenderError> {
        let templates = sms_set("en", text);
        let mut req = case.request("t", Channel::Sms);
        req.locale = Some("en");
        render(&templates, &req).map(|r| r.text)
    }

    /// Render `text` as an SMS template stored for `locale` only.
    fn sms_in(case: &Case, locale: &str, text: &str) -> String {
        let templates = sms_set(locale, text);
        let mut req = case.request("t", Channel::Sms);
        req.locale = Some(locale);
        render(&templates, &req).expect("renders").text
    }

    #[test]
    fn locale_falls_back_from_region_to_language_to_tenant_default_to_english() {
        assert_eq!(
            locale_chain("it-IT", "fr-FR"),
            ["it-IT", "it", "fr-FR", "fr", "en"]
        );
        assert_eq!(locale_chain("it_it", "IT"), ["it-IT", "it", "en"]);
        assert_eq!(locale_chain("en-GB", "en"), ["en-GB", "en"]);
        assert_eq!(
            locale_chain("zh_hant_tw", "en"),
            ["zh-Hant-TW", "zh-Hant", "zh", "en"]
        );
        assert_eq!(locale_chain("", "de"), ["de", "en"]);

        let mut case = Case::new(EventKind::ShipmentCreated);
        case.tenant_default = "fr-FR";
        let mut templates = set(vec![
            (
                "shipped",
                Channel::Email,
                "fr",
                email("Expédiée", "fr", None),
            ),
            (
                "shipped",
                Channel::Email,
                "en",
                email("Shipped", "en", None),
            ),
        ]);
        let used = |templates: &TemplateSet| {
            case.render(templates, "shipped", Channel::Email)
                .expect("renders")
        };
        assert_eq!(used(&templates).locale, "fr");
        assert_eq!(used(&templates).text, "fr");

        templates.insert(
            key("shipped", Channel::Email, "IT"),
            email("Spedito", "it", None),
        );
        assert_eq!(
            used(&templates).locale,
            "it",
            "stored locales are matched case-insensitively"
        );
        assert_eq!(used(&templates).subject.as_deref(), Some("Spedito"));

        templates.clear();
        templates.insert(
            key("shipped", Channel::Email, "en"),
            email("Shipped", "en", None),
        );
        templates.insert(key("shipped", Channel::Sms, "it"), text_only("sms"));
        assert_eq!(
            used(&templates).locale,
            "en",
            "another channel's template does not count"
        );
    }

    #[test]
    fn the_action_locale_wins_over_the_customer_locale() {
        let case = Case::new(EventKind::OrderPaid);
        let templates = set(vec![
            ("paid", Channel::Sms, "it", text_only("Pagato")),
            ("paid", Channel::Sms, "es", text_only("Pagado")),
        ]);
        let mut req = case.request("paid", Channel::Sms);
        assert_eq!(render(&templates, &req).expect("renders").text, "Pagato");
        req.locale = Some("es-ES");
        let rendered = render(&templates, &req).expect("renders");
        assert_eq!(
            (rendered.locale.as_str(), rendered.text.as_str()),
            ("es", "Pagado")
        );
    }

    #[test]
    fn missing_template_lists_the_locales_tried() {
        let mut case = Case::new(EventKind::OrderPaid);
        case.tenant_default = "fr";
        let templates = set(vec![("other", Channel::Email, "it", email("s", "t", None))]);
        let err = case
            .render(&templates, "paid", Channel::Email)
            .expect_err("no such template");
        let RenderError::NotFound {
            template,
            channel,
            tried,
        } = &err
        else {
            panic!("expected NotFound, got {err:?}");
        };
        assert_eq!((template.as_str(), *channel), ("paid", Channel::Email));
        assert_eq!(tried, &["it-IT", "it", "fr", "en"]);
        assert_eq!(
            err.to_string(),
            "no template `paid` for email in locales it-IT, it, fr, en"
        );
    }

    #[test]
    fn html_part_is_autoescaped_but_text_is_not() {
        let case = Case::new(EventKind::OrderPaid).data("note", "<script>alert('x')</script> & co");
        let templates = set(vec![(
            "paid",
            Channel::Email,
            "it",
            email(
                "Nota: {{ data.note }}",
                "Nota: {{ data.note }}",
                Some("<p>{{ data.note }}</p>"),
            ),
        )]);
        let rendered = case
            .render(&templates, "paid", Channel::Email)
            .expect("renders");
        assert_eq!(rendered.text, "Nota: <script>alert('x')</script> & co");
        assert_eq!(
            rendered.subject.as_deref(),
            Some("Nota: <script>alert('x')</script> & co")
        );
        assert_eq!(
            rendered.html.as_deref(),
            Some("<p>&lt;script&gt;alert(&#x27;x&#x27;)&lt;&#x2f;script&gt; &amp; co</p>")
        );
    }

    #[test]
    fn an_html_part_cannot_include_the_unescaped_text_part() {
        let case = Case::new(EventKind::OrderPaid).data("note", "<b>");
        let templates = set(vec![(
            "paid",
            Channel::Email,
            "it",
            email("s", "{{ data.note }}", Some("{% include \"text\" %}")),
        )]);
        let err = case
            .render(&templates, "paid", Channel::Email)
            .expect_err("text is not loadable");
        assert!(
            matches!(err, RenderError::Render { part: "html", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn strict_undefined_names_the_missing_variable() {
        let case = Case::new(EventKind::ShipmentCreated);
        let err = sms(
            &case,
            "{% if data.coupon is defined %}{{ data.coupon }}{% endif %}\nHi {{ customer.first_name }}\nTrack: {{ data.tracking_url }}",
        )
        .expect_err("data.tracking_url is not set");
        let RenderError::Render { part, message } = &err else {
            panic!("expected Render, got {err:?}");
        };
        assert_eq!(*part, "text");
        assert_eq!(message, "line 3: `data.tracking_url` is undefined");

        let err = sms(
            &case,
            "{% for i in range(2) %}{{ i }}{% endfor %} {{ coupon_code }}",
        )
        .expect_err("undefined");
        assert!(
            err.to_string().contains("`coupon_code` is undefined"),
            "{err}"
        );

        let err = sms(&case, "{{ 1250|money(data.refund_currency) }}").expect_err("undefined");
        assert!(
            err.to_string()
                .contains("`data.refund_currency` is undefined"),
            "{err}"
        );

        let err = sms(&case, "{{ order.items[7].title }}").expect_err("no eighth item");
        assert!(
            err.to_string().contains("`order.items[7]` is undefined"),
            "{err}"
        );

        let err = sms(
            &case,
            "{% for item in order.items %}{{ item.colour }}{% endfor %}",
        )
        .expect_err("undefined");
        assert!(
            err.to_string()
                .contains("`order.items[0].colour` is undefined"),
            "{err}"
        );
    }

    #[test]
    fn guarded_optional_values_render() {
        let case = Case::new(EventKind::OrderPaid);
        let text = "{% if shipment %}{{ shipment.carrier }}{% else %}no shipment{% endif %} {{ data.x|default(\"-\") }}";
        assert_eq!(sms(&case, text).expect("renders"), "no shipment -");
    }

    #[test]
    fn fuel_limit_stops_a_runaway_template() {
        let case = Case::new(EventKind::OrderPaid);
        let err = sms(
            &case,
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        )
        .expect_err("out of fuel");
        assert!(
            matches!(err, RenderError::FuelExhausted { part: "text" }),
            "{err:?}"
        );

        let templates = sms_set("en", "{% for i in range(50) %}{{ i }}{% endfor %}");
        let mut req = case.request("t", Channel::Sms);
        req.fuel = 20;
        let err = render(&templates, &req).expect_err("too little fuel");
        assert!(
            matches!(err, RenderError::FuelExhausted { part: "text" }),
            "{err:?}"
        );
    }

    #[test]
    fn layout_is_applied_in_the_locale_used() {
        let layout_in = |locale: &str| {
            layout(&format!(
                "<h1>{{{{ shop.name }}}}</h1>{{% block content %}}{{% endblock %}}<footer>{{% block footer %}}{locale} footer{{% endblock %}}</footer>"
            ))
        };
        let html =
            "{% extends \"layout\" %}{% block content %}<p>{{ data.note }}</p>{% endblock %}";
        let case = Case::new(EventKind::ShipmentCreated).data("note", "Fish & Chips");
        let mut templates = set(vec![
            (
                "shipped",
                Channel::Email,
                "it",
                email("Spedito", "Spedito", Some(html)),
            ),
            (LAYOUT, Channel::Email, "it-IT", layout_in("it-IT")),
            (LAYOUT, Channel::Email, "it", layout_in("it")),
            (LAYOUT, Channel::Email, "en", layout_in("en")),
        ]);
        let rendered = case
            .render(&templates, "shipped", Channel::Email)
            .expect("renders");
        assert_eq!(
            rendered.html.as_deref(),
            Some("<h1>Bottega Verde</h1><p>Fish &amp; Chips</p><footer>it footer</footer>"),
            "the layout of the template's locale, not of the customer's region"
        );

        templates.remove(&key("shipped", Channel::Email, "it"));
        templates.insert(
            key("shipped", Channel::Email, "en"),
            email("Shipped", "Shipped", Some(html)),
        );
        let rendered = case
            .render(&templates, "shipped", Channel::Email)
            .expect("renders");
        assert_eq!(rendered.locale, "en");
        assert!(
            rendered
                .html
                .as_deref()
                .is_some_and(|h| h.ends_with("<footer>en footer</footer>")),
            "{rendered:?}"
        );
    }

    #[test]
    fn a_missing_layout_lists_the_locales_tried() {
        let case = Case::new(EventKind::ShipmentCreated);
        let templates = set(vec![(
            "shipped",
            Channel::Email,
            "it",
            email(
                "s",
                "t",
                Some("{% extends \"layout\" %}{% block content %}x{% endblock %}"),
            ),
        )]);
        let err = case
            .render(&templates, "shipped", Channel::Email)
            .expect_err("no layout");
        let RenderError::LayoutNotFound { tried } = &err else {
            panic!("expected LayoutNotFound, got {err:?}");
        };
        assert_eq!(tried, &["it", "en"]);
    }

    #[test]
    fn errors_in_the_layout_name_the_layout() {
        let case = Case::new(EventKind::ShipmentCreated);
        let templates = set(vec![
            (
                "shipped",
                Channel::Email,
                "en",
                email("s", "t", Some("{% extends \"layout\" %}")),
            ),
            (
                LAYOUT,
                Channel::Email,
                "en",
                layout("<h1>{{ shop.logo }}</h1>"),
            ),
        ]);
        let err = case
            .render(&templates, "shipped", Channel::Email)
            .expect_err("no logo");
        assert!(
            matches!(&err, RenderError::Render { part: LAYOUT, message } if message.contains("`shop.logo`")),
            "{err:?}"
        );
    }

    #[test]
    fn money_is_formatted_per_locale_and_currency() {
        let case = Case::new(EventKind::OrderPaid);
        let total = "{{ order.total|money }}";
        assert_eq!(sms_in(&case, "it", total), "135,00 €");
        assert_eq!(sms_in(&case, "en", total), "€135.00");
        assert_eq!(
            sms_in(&case, "de", total),
            "€135.00",
            "unsupported languages format as English"
        );

        let big = Case::new(EventKind::OrderPaid)
            .data("minor", "123450")
            .data("currency", "EUR");
        let amount = |currency: &str| format!("{{{{ data.minor|int|money(\"{currency}\") }}}}");
        let cases = [
            ("en", "EUR", "€1,234.50"),
            ("en", "USD", "$1,234.50"),
            ("en", "GBP", "£1,234.50"),
            ("en", "JPY", "¥123,450"),
            ("en", "CHF", "1,234.50 CHF"),
            ("en", "XYZ", "1,234.50 XYZ"),
            ("it", "EUR", "1.234,50 €"),
            ("es", "EUR", "1.234,50 €"),
            ("fr", "EUR", "1 234,50 €"),
            ("cs", "CZK", "1 234,50 Kč"),
            ("ro", "RON", "1.234,50 lei"),
            ("ro", "EUR", "1.234,50 €"),
            ("it", "PLN", "1.234,50 zł"),
            ("cs", "HUF", "1 234,50 Ft"),
            ("it", "SEK", "1.234,50 SEK"),
            ("fr", "DKK", "1 234,50 DKK"),
            ("it", "JPY", "123.450 ¥"),
            ("it", "XYZ", "1.234,50 XYZ"),
        ];
        for (locale, currency, expected) in cases {
            assert_eq!(
                sms_in(&big, locale, &amount(currency)),
                expected,
                "{locale} {currency}"
            );
        }
        assert_eq!(
            sms_in(&big, "it", "{{ data.minor|int|money(data.currency) }}"),
            "1.234,50 €"
        );
        assert_eq!(
            sms_in(
                &case,
                "en",
                "{% for item in order.items %}{{ item.unit_price|money }} {% endfor %}"
            ),
            "€29.00 €18.00 €59.00"
        );

        for (text, why) in [
            ("{{ 1250|money }}", "an integer needs a currency"),
            (
                "{{ order.total|money(\"USD\") }}",
                "a money object has its currency",
            ),
            ("{{ order.number|money }}", "not an amount"),
            ("{{ 1250|money(\"<b>\") }}", "not a currency code"),
        ] {
            let err = sms(&case, text).expect_err(why);
            assert!(
                matches!(err, RenderError::Render { part: "text", .. }),
                "{why}: {err:?}"
            );
        }
    }

    #[test]
    fn dates_are_shown_in_the_customer_timezone_and_language() {
        let case = |locale: &str, timezone: &str| {
            Case::new(EventKind::ShipmentCreated)
                .customer(locale, timezone)
                .data("at", "2026-11-26T23:30:00Z")
        };
        let rome = case("it-IT", "Europe/Rome");
        assert_eq!(
            sms_in(&rome, "it", "{{ data.at|date }}"),
            "27 novembre 2026"
        );
        assert_eq!(
            sms_in(&rome, "it", "{{ data.at|datetime }}"),
            "27 novembre 2026, 00:30"
        );
        assert_eq!(sms_in(&rome, "it", "{{ data.at|time }}"), "00:30");
        assert_eq!(
            sms_in(&rome, "it", "{{ shipment.eta|datetime }}"),
            "26 novembre 2026, 19:00"
        );
        assert_eq!(
            sms_in(&rome, "cs", "{{ data.at|date }}"),
            "27. listopadu 2026"
        );
        assert_eq!(
            sms_in(&rome, "cs", "{{ data.at|datetime }}"),
            "27. listopadu 2026 v 0:30"
        );
        assert_eq!(
            sms_in(&rome, "ro", "{{ data.at|date }}"),
            "27 noiembrie 2026"
        );
        assert_eq!(
            sms_in(&rome, "fr", "{{ data.at|datetime }}"),
            "27 novembre 2026 à 00:30"
        );
        assert_eq!(
            sms_in(&rome, "es", "{{ data.at|datetime }}"),
            "27 de noviembre de 2026, 0:30"
        );
        assert_eq!(
            sms_in(&rome, "en", "{{ data.at|datetime }}"),
            "November 27, 2026, 12:30 AM"
        );

        let new_york = case("en-US", "America/New_York");
        assert_eq!(
            sms_in(&new_york, "en", "{{ data.at|datetime }}"),
            "November 26, 2026, 6:30 PM"
        );
        assert_eq!(
            sms_in(&new_york, "de", "{{ data.at|date }}"),
            "November 26, 2026"
        );

        let nowhere = case("it-IT", "Nowhere/Special");
        assert_eq!(
            sms_in(&nowhere, "it", "{{ data.at|datetime }}"),
            "26 novembre 2026, 23:30",
            "unknown zones are UTC"
        );

        let dated = Case::new(EventKind::OrderPaid).data("day", "2026-12-01");
        assert_eq!(
            sms_in(&dated, "it", "{{ data.day|date }}"),
            "1 dicembre 2026",
            "a bare date is not shifted"
        );
        assert_eq!(sms_in(&dated, "it", "{{ now|date }}"), "23 novembre 2026");

        for (text, why) in [
            ("{{ data.day|time }}", "a date has no time"),
            ("{{ order.number|date }}", "not a timestamp"),
            ("{{ order.total|date }}", "not a string"),
        ] {
            let err = sms(&dated, text).expect_err(why);
            assert!(
                matches!(err, RenderError::Render { part: "text", .. }),
                "{why}: {err:?}"
            );
        }
    }

    #[test]
    fn templates_see_the_variables_of_the_contract() {
        let case = Case::new(EventKind::ShipmentCreated).data("code", "WELCOME10");
        let text = "{{ shop.name }} {{ shop.url }} {{ shop.support_email }}\n\
            {{ customer.first_name }} {{ customer.locale }} {{ customer.timezone }}\n\
            {{ order.id }} {{ order.number }} {{ order.created_at }} {{ order.items|length }} {{ order.items[0].sku }} {{ order.items[0].status }}\n\
            {{ order.shipments[0].tracking_number }} {{ order.tags|length }} {{ order.attributes.risk_level }}\n\
            {{ shipment.carrier }} {{ shipment.eta }} {{ shipment.status }} {{ shipment.items[0].quantity }}\n\
            {{ event.id }} {{ event.kind }} {{ event.occurred_at }} {{ event.attributes|length }}\n\
            {{ data.code }} {{ locale }} {{ now }}";
        assert_eq!(
            sms_in(&case, "it", text),
            "Bottega Verde https://shop.example.com help@shop.example.com\n\
            Giulia it-IT Europe/Rome\n\
            ord_1042 #1042 2026-11-20T09:12:44Z 3 TEE-ORG-M fulfilled\n\
            BRT123456789IT 0 low\n\
            BRT 2026-11-26T18:00:00Z label_created 2\n\
            evt_1042_shipment_created shipment_created 2026-11-20T17:15:00Z 0\n\
            WELCOME10 it 2026-11-23T10:00:00Z"
        );
    }

    #[test]
    fn templates_never_see_customer_contact_details() {
        let case = Case::new(EventKind::ShipmentCreated);
        let customer = &case.event.order.customer;
        let (email, phone) = (
            customer.email.clone().expect("the fixture has an email"),
            customer.phone.clone().expect("the fixture has a phone"),
        );
        for probe in [
            "{{ order.customer.email }}",
            "{{ customer.email }}",
            "{{ customer.phone }}",
            "{{ order.customer['phone'] }}",
            "{{ email }}",
        ] {
            let err = sms(&case, probe).expect_err("contact details are not in the context");
            let message = err.to_string();
            assert!(
                !message.contains(&email) && !message.contains(&phone),
                "{message}"
            );
        }
        let dump = sms(
            &case,
            "{{ shop }} {{ customer }} {{ order }} {{ shipment }} {{ event }} {{ data }}\n\
             {% for key, value in customer|items %}{{ key }}={{ value }} {% endfor %}",
        )
        .expect("renders");
        assert!(!dump.contains(&email) && !dump.contains(&phone), "{dump}");
        assert!(
            !dump.contains("has_email") && !dump.contains("consents"),
            "{dump}"
        );
        assert!(dump.contains("first_name=Giulia"), "{dump}");
    }

    #[test]
    fn sms_needs_only_text() {
        let case = Case::new(EventKind::OutForDelivery);
        let templates = set(vec![(
            "out",
            Channel::Sms,
            "it",
            TemplateParts {
                subject: Some("{{ ignored.subject }}".to_owned()),
                text: Some("Ciao {{ customer.first_name }}, il pacco arriva oggi.\n".to_owned()),
                html: Some("{{ ignored.html }}".to_owned()),
            },
        )]);
        let rendered = case
            .render(&templates, "out", Channel::Sms)
            .expect("renders");
        assert_eq!(rendered.text, "Ciao Giulia, il pacco arriva oggi.");
        assert_eq!((rendered.subject, rendered.html), (None, None));

        let templates = set(vec![(
            "out",
            Channel::Sms,
            "it",
            TemplateParts {
                subject: Some("s".to_owned()),
                ..TemplateParts::default()
            },
        )]);
        let err = case
            .render(&templates, "out", Channel::Sms)
            .expect_err("no text");
        assert!(
            matches!(err, RenderError::MissingPart { part: "text" }),
            "{err:?}"
        );
    }

    #[test]
    fn email_needs_a_subject_and_a_text_but_not_html() {
        let case = Case::new(EventKind::OrderPaid);
        let no_subject = TemplateParts {
            subject: None,
            ..email("", "text", Some("<p>x</p>"))
        };
        let templates = set(vec![("paid", Channel::Email, "it", no_subject)]);
        let err = case
            .render(&templates, "paid", Channel::Email)
            .expect_err("no subject");
        assert!(
            matches!(err, RenderError::MissingPart { part: "subject" }),
            "{err:?}"
        );

        let templates = set(vec![(
            "paid",
            Channel::Email,
            "it",
            email("Pagato", "Grazie", None),
        )]);
        let rendered = case
            .render(&templates, "paid", Channel::Email)
            .expect("renders");
        assert_eq!(rendered.html, None);

        assert!(check_complete(LAYOUT, &layout("<html></html>"), Channel::Email).is_ok());
        assert!(matches!(
            check_complete(LAYOUT, &TemplateParts::default(), Channel::Email),
            Err(RenderError::MissingPart { part: "html" })
        ));
    }

    #[test]
    fn the_subject_is_one_line_and_text_is_trimmed_like_jinja() {
        let case = Case::new(EventKind::ShipmentCreated);
        let templates = set(vec![(
            "shipped",
            Channel::Email,
            "it",
            email(
                "\n  Ordine {{ order.number }}\n  spedito   con {{ shipment.carrier }}\n",
                "\n\nCiao {{ customer.first_name }},\n{% if shipment %}  Corriere: {{ shipment.carrier }}\n{% endif %}A presto\n\n\n",
                None,
            ),
        )]);
        let rendered = case
            .render(&templates, "shipped", Channel::Email)
            .expect("renders");
        assert_eq!(
            rendered.subject.as_deref(),
            Some("Ordine #1042 spedito con BRT")
        );
        assert_eq!(rendered.text, "Ciao Giulia,\n  Corriere: BRT\nA presto");
    }

    #[test]
    fn a_part_that_renders_empty_is_an_error() {
        let case = Case::new(EventKind::OrderPaid);
        let err = sms(&case, "{% if false %}never{% endif %}").expect_err("empty");
        assert!(
            matches!(err, RenderError::Empty { part: "text" }),
            "{err:?}"
        );
    }

    #[test]
    fn syntax_errors_name_the_part_and_line() {
        let parts = email(
            "Ok {{ order.number }}",
            "Line one\nLine two\n{{ order.number | }}\nLine four",
            None,
        );
        let err = validate(&parts, Channel::Email).expect_err("a filter without a name");
        let RenderError::Syntax { part, message } = &err else {
            panic!("expected Syntax, got {err:?}");
        };
        assert_eq!(*part, "text");
        assert!(message.starts_with("line 3: "), "{message}");

        let parts = email("{{ order.number", "fine", None);
        assert!(matches!(
            validate(&parts, Channel::Email),
            Err(RenderError::Syntax {
                part: "subject",
                ..
            })
        ));
        assert!(
            validate(&parts, Channel::Sms).is_ok(),
            "an sms ignores the subject"
        );
        assert!(
            validate(
                &email("s", "t", Some("{% extends \"layout\" %}")),
                Channel::Email
            )
            .is_ok()
        );

        let case = Case::new(EventKind::OrderPaid);
        let err = sms(&case, "{{ }}").expect_err("bad syntax");
        assert!(
            matches!(err, RenderError::Syntax { part: "text", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn one_compilation_serves_customers_in_other_languages_and_timezones() {
        let cache = TemplateCache::default();
        let template = "{{ data.at|datetime }} {{ order.total|money }}";
        let render_for = |locale: &str, timezone: &str| {
            let case = Case::new(EventKind::ShipmentCreated)
                .customer(locale, timezone)
                .data("at", "2026-11-26T23:30:00Z");
            // The same text stored for both languages: one compilation.
            let templates = sms_set(locale, template);
            let mut req = case.request("t", Channel::Sms);
            req.locale = Some(locale);
            let cached = cache.render(&templates, &req).expect("renders").text;
            assert_eq!(
                cached,
                super::render(&templates, &req).expect("renders").text
            );
            cached
        };
        let rome = render_for("it", "Europe/Rome");
        let new_york = render_for("en", "America/New_York");
        assert!(rome.starts_with("27 novembre 2026, 00:30"), "{rome}");
        assert!(new_york.starts_with("November 26, 2026"), "{new_york}");
        assert_ne!(rome, new_york);
        assert_eq!(cache.len(), 1, "one template, compiled once");
    }

    #[test]
    fn an_edited_template_is_compiled_again() {
        let cache = TemplateCache::default();
        let case = Case::new(EventKind::OrderPaid);
        let mut req = case.request("t", Channel::Sms);
        req.locale = Some("en");
        let before = sms_set("en", "Paid {{ order.number }}");
        let after = sms_set("en", "Thanks for {{ order.number }}");
        let number = &case.event.order.number;
        assert_eq!(
            cache.render(&before, &req).expect("renders").text,
            format!("Paid {number}")
        );
        assert_eq!(
            cache.render(&after, &req).expect("renders").text,
            format!("Thanks for {number}")
        );
        let broken = sms_set("en", "{% if %}");
        assert!(matches!(
            cache.render(&broken, &req),
            Err(RenderError::Syntax { part: "text", .. })
        ));
        assert_eq!(
            cache.len(),
            2,
            "a template that does not compile is not kept"
        );
    }

    #[test]
    fn the_cache_drops_the_least_recently_used_when_full() {
        let cache = TemplateCache::default();
        let case = Case::new(EventKind::OrderPaid);
        let mut req = case.request("t", Channel::Sms);
        req.locale = Some("en");
        let render_text = |text: &str| {
            let templates = sms_set("en", text);
            cache.render(&templates, &req).expect("renders").text
        };
        for n in 0..CACHE_ENTRIES {
            render_text(&format!("message {n}"));
        }
        assert_eq!(cache.len(), CACHE_ENTRIES);
        // The first one used again: the second is now the oldest.
        render_text("message 0");
        render_text("one more");
        assert_eq!(cache.len(), CACHE_ENTRIES);
        let held = |text: &str| {
            let sources = Sources {
                subject: None,
                text: Some(text),
                html: None,
                layout: None,
            };
            cache.lock().by_sources.contains_key(&sources.key())
        };
        assert!(held("message 0"));
        assert!(!held("message 1"));
        assert!(held("message 2"));
        assert!(held("one more"));
    }

    #[test]
    fn parse_parts_splits_on_markers() {
        let source = "\n{# subject #}\nYour order {{ order.number }} shipped\n\n{#text#}\n\nHi {{ customer.first_name }},\n\n  indented\n{# a comment #}\n\n{# html #}\n<p>Hi</p>\n";
        let parts = parse_parts(source).expect("parses");
        assert_eq!(
            parts.subject.as_deref(),
            Some("Your order {{ order.number }} shipped")
        );
        assert_eq!(
            parts.text.as_deref(),
            Some("Hi {{ customer.first_name }},\n\n  indented\n{# a comment #}")
        );
        assert_eq!(parts.html.as_deref(), Some("<p>Hi</p>"));

        let sms = parse_parts("{# text #}\nOn its way!\n{# html #}\n\n").expect("parses");
        assert_eq!(
            sms,
            TemplateParts {
                text: Some("On its way!".to_owned()),
                ..TemplateParts::default()
            }
        );

        for (source, line) in [
            ("Hello\n{# text #}\nx", 1),
            ("{# text #}\na\n{# text #}\nb", 3),
            ("just text", 1),
        ] {
            let err = parse_parts(source).expect_err("malformed");
            assert!(
                matches!(err, RenderError::Malformed { line: l, .. } if l == line),
                "{source:?}: {err:?}"
            );
        }
    }
}
