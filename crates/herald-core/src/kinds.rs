//! The kind-specific part of a destination: one settings struct per kind, each able to
//! validate, complete and mask itself. Adding a kind means adding a variant here and a
//! module in `herald-channels`.

use crate::error::ValidationErrors;
use crate::secret_ref::{
    has_reference, is_sensitive_header, looks_masked, mask, mask_url, mask_url_password,
    parse_references,
};
use crate::signature::SigningKey;
use crate::template::TemplateEngine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The kind-specific part of a destination, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KindSpec {
    /// POST JSON signed per Standard Webhooks.
    Webhook(WebhookSpec),
    /// Any in-house HTTP API, e.g. a messenger with a Bearer token.
    Http(HttpSpec),
    /// Slack: an incoming webhook or the Web API `chat.postMessage`, Block Kit.
    Slack(SlackSpec),
    /// Microsoft Teams: an Adaptive Card to a Workflows or legacy connector webhook.
    Teams(TeamsSpec),
    /// Discord: execute webhook.
    Discord(DiscordSpec),
    /// Telegram: Bot API `sendMessage`.
    Telegram(TelegramSpec),
    /// Email over SMTP.
    Email(EmailSpec),
    /// SMS through Twilio's Messages API.
    Sms(SmsSpec),
}

/// One secret or several (during rotation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Secrets {
    One(String),
    Many(Vec<String>),
}

impl Secrets {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Secrets::One(s) => std::slice::from_ref(s),
            Secrets::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Signing {
    /// Standard Webhooks headers only.
    Standard,
    /// Also `X-Webhook-Signature: sha256=<hex>` and `X-Webhook-Event` for older receivers.
    HexSha256,
    /// Svix's wire format, for receivers written for Svix: `svix-id`, `svix-timestamp`
    /// and `svix-signature` (the same algorithm as Standard Webhooks), and the payload
    /// itself as the body. Endpoints made through the Svix-compatible API sign so.
    Svix,
}

/// A secret replaced by a rotation: it keeps signing, beside the new one, until `until`
/// (RFC 3339), so receivers can switch over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetiredSecret {
    pub secret: String,
    pub until: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    pub url: String,
    /// `whsec_…`; generated when absent. Several during rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secrets>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<Signing>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Leave attachments out of the JSON body (default: included, base64).
    #[serde(default, skip_serializing_if = "is_false")]
    pub omit_attachments: bool,
    /// Secrets replaced by a rotation, still signing until their time is up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_secrets: Vec<RetiredSecret>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    pub url: String,
    /// `POST` (default), `PUT` or `PATCH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// `"payload"` (default): the message payload as-is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// A minijinja template that renders the JSON body; wins over `body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_template: Option<String>,
    /// Add the message's `attachments` (base64) to the default payload body as
    /// `"attachments"` (default: left out, the body is the payload as-is).
    #[serde(default, skip_serializing_if = "is_false")]
    pub include_attachments: bool,
}

/// Slack: set `url` (an incoming webhook) or `token` + `channel` (`chat.postMessage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackSpec {
    /// Incoming webhook URL; the URL is the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Bot token (`xoxb-…`) for `chat.postMessage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Channel id (`C…`) or name for `chat.postMessage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Web API base, default `https://slack.com/api`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    /// A minijinja template that renders the JSON body (`{"text", "blocks"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

/// Microsoft Teams: a Workflows (Power Automate) or legacy connector webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamsSpec {
    /// Webhook URL; the URL is the secret.
    pub url: String,
    /// A minijinja template that renders the JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

/// Discord: an execute-webhook URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscordSpec {
    /// `https://discord.com/api/webhooks/{id}/{token}`; the URL is the secret.
    pub url: String,
    /// A minijinja template that renders the JSON body (`{"content", "embeds"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Most bytes of files one message uploads: Discord's limit for the server (10 MiB
    /// by default; more on boosted servers). Files over it are listed, not uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_upload_bytes: Option<u64>,
}

/// Discord's upload limit for a server without boosts.
pub const DISCORD_DEFAULT_UPLOAD_BYTES: u64 = 10 * 1024 * 1024;

/// A Telegram chat: a numeric id (negative for groups) or `@channelusername`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ChatId {
    Id(i64),
    Name(String),
}

/// Telegram: Bot API `sendMessage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TelegramSpec {
    /// Bot token (`123456:ABC…`); it is part of the request path.
    pub token: String,
    pub chat_id: ChatId,
    /// Bot API base, default `https://api.telegram.org`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    /// A minijinja template that renders the JSON body (`{"text", "parse_mode"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

/// Email over SMTP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailSpec {
    /// `smtps://user:password@host[:465]` (implicit TLS),
    /// `smtp://user:password@host[:587]` (STARTTLS required, also `?tls=required`) or
    /// `smtp://host[:25]?tls=none` (plain text).
    pub smtp_url: String,
    /// `herald@example.com` or `Herald <herald@example.com>`.
    pub from: String,
    pub to: Vec<String>,
    /// A minijinja template that renders the text part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// A minijinja template that renders the HTML part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html_template: Option<String>,
}

/// SMS through Twilio's Messages API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmsSpec {
    /// `AC…`.
    pub account_sid: String,
    pub auth_token: String,
    /// An E.164 number (`+15005550006`) or an alphanumeric sender id.
    pub from: String,
    /// One E.164 number.
    pub to: String,
    /// API base, default `https://api.twilio.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    /// A minijinja template that renders the SMS text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl KindSpec {
    pub fn name(&self) -> &'static str {
        match self {
            KindSpec::Webhook(_) => "webhook",
            KindSpec::Http(_) => "http",
            KindSpec::Slack(_) => "slack",
            KindSpec::Teams(_) => "teams",
            KindSpec::Discord(_) => "discord",
            KindSpec::Telegram(_) => "telegram",
            KindSpec::Email(_) => "email",
            KindSpec::Sms(_) => "sms",
        }
    }

    /// Checks the kind's own fields, pushing errors named by field.
    pub fn validate(&self, templates: &TemplateEngine, errs: &mut ValidationErrors) {
        match self {
            KindSpec::Webhook(w) => w.validate(errs),
            KindSpec::Http(h) => h.validate(templates, errs),
            KindSpec::Slack(s) => s.validate(templates, errs),
            KindSpec::Teams(t) => {
                check_secret_url(&t.url, "url", errs);
                check_template(templates, t.template.as_deref(), "template", errs);
            }
            KindSpec::Discord(d) => {
                check_secret_url(&d.url, "url", errs);
                check_template(templates, d.template.as_deref(), "template", errs);
                if d.max_upload_bytes
                    .is_some_and(|n| n == 0 || n > 500 * 1024 * 1024)
                {
                    errs.push("max_upload_bytes", "must be 1 byte to 500 MiB");
                }
            }
            KindSpec::Telegram(t) => t.validate(templates, errs),
            KindSpec::Email(e) => e.validate(templates, errs),
            KindSpec::Sms(s) => s.validate(templates, errs),
        }
    }

    /// Fills in generated values; returns a generated secret to show once.
    pub fn complete(&mut self) -> Option<String> {
        match self {
            KindSpec::Webhook(w) => w.complete(),
            _ => None,
        }
    }

    /// Masks for a reader who may not see secrets at all (a `read` token): beyond
    /// [`mask`](Self::mask), every header value, and every URL's path, query and
    /// user-info — a secret in `?access_token=…` or in the path, or under a header whose name
    /// says nothing (`X-Access`), is not recognisable as one, so nothing of it is shown.
    pub fn mask_all(&mut self) {
        self.mask();
        let hide = |headers: &mut BTreeMap<String, String>| {
            headers.values_mut().for_each(|v| *v = mask(v));
        };
        match self {
            KindSpec::Webhook(w) => {
                w.url = mask_url(&w.url);
                hide(&mut w.headers);
            }
            KindSpec::Http(h) => {
                h.url = mask_url(&h.url);
                hide(&mut h.headers);
            }
            KindSpec::Email(e) => e.smtp_url = mask_url(&e.smtp_url),
            // Their URLs and tokens are masked whole already.
            KindSpec::Slack(_)
            | KindSpec::Teams(_)
            | KindSpec::Discord(_)
            | KindSpec::Telegram(_)
            | KindSpec::Sms(_) => {}
        }
    }

    /// Calls `f` with every field that may carry a secret — URLs, header values, tokens,
    /// webhook secrets, the SMTP URL (its password), Twilio's SID and token — named as in
    /// the API. `${env:…}`/`${file:…}` references are resolved in these fields only, never
    /// in template text or any other setting.
    pub fn visit_secret_fields(
        &mut self,
        f: &mut dyn FnMut(String, &mut String) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut headers = |prefix: &str, h: &mut BTreeMap<String, String>| {
            h.iter_mut()
                .try_for_each(|(k, v)| f(format!("{prefix}.{k}"), v))
        };
        match self {
            KindSpec::Webhook(w) => {
                headers("headers", &mut w.headers)?;
                match &mut w.secret {
                    Some(Secrets::One(s)) => f("secret".into(), s)?,
                    Some(Secrets::Many(v)) => v
                        .iter_mut()
                        .enumerate()
                        .try_for_each(|(i, s)| f(format!("secret[{i}]"), s))?,
                    None => {}
                }
                w.retired_secrets
                    .iter_mut()
                    .enumerate()
                    .try_for_each(|(i, r)| {
                        f(format!("retired_secrets[{i}].secret"), &mut r.secret)
                    })?;
                f("url".into(), &mut w.url)
            }
            KindSpec::Http(h) => {
                headers("headers", &mut h.headers)?;
                f("url".into(), &mut h.url)
            }
            KindSpec::Slack(s) => {
                for (name, v) in [
                    ("url", &mut s.url),
                    ("token", &mut s.token),
                    ("api_base", &mut s.api_base),
                ] {
                    if let Some(v) = v {
                        f(name.into(), v)?;
                    }
                }
                Ok(())
            }
            KindSpec::Teams(t) => f("url".into(), &mut t.url),
            KindSpec::Discord(d) => f("url".into(), &mut d.url),
            KindSpec::Telegram(t) => {
                if let Some(v) = &mut t.api_base {
                    f("api_base".into(), v)?;
                }
                f("token".into(), &mut t.token)
            }
            KindSpec::Email(e) => f("smtp_url".into(), &mut e.smtp_url),
            KindSpec::Sms(s) => {
                if let Some(v) = &mut s.api_base {
                    f("api_base".into(), v)?;
                }
                f("account_sid".into(), &mut s.account_sid)?;
                f("auth_token".into(), &mut s.auth_token)
            }
        }
    }

    /// The addresses this kind connects to, by field (`api_base` only when set; the
    /// providers' own defaults are public).
    pub fn outbound_urls(&self) -> Vec<(&'static str, &str)> {
        match self {
            KindSpec::Webhook(w) => vec![("url", w.url.as_str())],
            KindSpec::Http(h) => vec![("url", h.url.as_str())],
            KindSpec::Slack(s) => [
                ("url", s.url.as_deref()),
                ("api_base", s.api_base.as_deref()),
            ]
            .into_iter()
            .filter_map(|(f, u)| u.map(|u| (f, u)))
            .collect(),
            KindSpec::Teams(t) => vec![("url", t.url.as_str())],
            KindSpec::Discord(d) => vec![("url", d.url.as_str())],
            KindSpec::Telegram(t) => t
                .api_base
                .as_deref()
                .map(|u| ("api_base", u))
                .into_iter()
                .collect(),
            KindSpec::Email(e) => vec![("smtp_url", e.smtp_url.as_str())],
            KindSpec::Sms(s) => s
                .api_base
                .as_deref()
                .map(|u| ("api_base", u))
                .into_iter()
                .collect(),
        }
    }

    /// Masks inline secrets for display.
    pub fn mask(&mut self) {
        match self {
            KindSpec::Webhook(w) => w.mask(),
            KindSpec::Http(h) => mask_headers(&mut h.headers),
            KindSpec::Slack(s) => {
                s.url = s.url.as_deref().map(mask_url);
                s.token = s.token.as_deref().map(mask);
            }
            KindSpec::Teams(t) => t.url = mask_url(&t.url),
            KindSpec::Discord(d) => d.url = mask_url(&d.url),
            KindSpec::Telegram(t) => t.token = mask(&t.token),
            KindSpec::Email(e) => e.smtp_url = mask_url_password(&e.smtp_url),
            KindSpec::Sms(s) => s.auth_token = mask(&s.auth_token),
        }
    }
}

impl WebhookSpec {
    /// The secrets that sign at `now`: the current ones, then the retired ones still in
    /// their overlap.
    pub fn signing_secrets(&self, now: i64) -> Vec<&str> {
        let current = self
            .secret
            .iter()
            .flat_map(|s| s.as_slice())
            .map(String::as_str);
        let retired = self
            .retired_secrets
            .iter()
            .filter(|r| crate::clock::parse_rfc3339(&r.until).is_some_and(|u| u > now))
            .map(|r| r.secret.as_str());
        current.chain(retired).collect()
    }

    /// Replaces the secret with `new`; the current ones keep signing until `until` (epoch
    /// ms). Retired secrets whose time is up are dropped.
    pub fn rotate_secret(&mut self, new: String, until: i64, now: i64) {
        self.retired_secrets
            .retain(|r| crate::clock::parse_rfc3339(&r.until).is_some_and(|u| u > now));
        if let Some(old) = self.secret.take() {
            for s in old.as_slice() {
                self.retired_secrets.push(RetiredSecret {
                    secret: s.clone(),
                    until: crate::clock::rfc3339(until),
                });
            }
        }
        self.secret = Some(Secrets::One(new));
    }

    fn validate(&self, errs: &mut ValidationErrors) {
        check_url(&self.url, "url", errs);
        check_headers(&self.headers, "headers", errs);
        for (i, r) in self.retired_secrets.iter().enumerate() {
            if let Err(e) = SigningKey::parse(&r.secret) {
                errs.push(format!("retired_secrets[{i}].secret"), e);
            }
            if crate::clock::parse_rfc3339(&r.until).is_none() {
                errs.push(
                    format!("retired_secrets[{i}].until"),
                    "an RFC 3339 time, e.g. 2026-12-08T10:00:00Z",
                );
            }
        }
        if let Some(secrets) = &self.secret {
            if secrets.as_slice().is_empty() {
                errs.push(
                    "secret",
                    "give at least one secret, or omit it to have one generated",
                );
            }
            for (i, s) in secrets.as_slice().iter().enumerate() {
                let res = if has_reference(s) {
                    parse_references(s).map(|_| ())
                } else {
                    SigningKey::parse(s).map(|_| ())
                };
                if let Err(e) = res {
                    errs.push(format!("secret[{i}]"), e);
                }
            }
        }
    }

    fn complete(&mut self) -> Option<String> {
        if self.secret.is_some() {
            return None;
        }
        let s = SigningKey::generate();
        self.secret = Some(Secrets::One(s.clone()));
        Some(s)
    }

    fn mask(&mut self) {
        for r in &mut self.retired_secrets {
            r.secret = mask(&r.secret);
        }
        if let Some(s) = &mut self.secret {
            *s = match s {
                Secrets::One(v) => Secrets::One(mask(v)),
                Secrets::Many(vs) => Secrets::Many(vs.iter().map(|v| mask(v)).collect()),
            };
        }
        mask_headers(&mut self.headers);
    }
}

impl HttpSpec {
    fn validate(&self, templates: &TemplateEngine, errs: &mut ValidationErrors) {
        check_url(&self.url, "url", errs);
        check_headers(&self.headers, "headers", errs);
        if let Some(m) = &self.method
            && !matches!(m.as_str(), "POST" | "PUT" | "PATCH")
        {
            errs.push("method", "must be POST, PUT or PATCH");
        }
        if let Some(b) = &self.body
            && b != "payload"
        {
            errs.push("body", "must be \"payload\" (or use body_template)");
        }
        if let Some(t) = &self.body_template
            && let Err(e) = templates.check_template(t)
        {
            errs.push("body_template", format!("does not compile: {e}"));
        }
    }
}

impl SlackSpec {
    fn validate(&self, templates: &TemplateEngine, errs: &mut ValidationErrors) {
        match (&self.url, &self.token, &self.channel) {
            (Some(url), None, None) => check_secret_url(url, "url", errs),
            (None, Some(token), Some(channel)) => {
                check_secret(token, "token", errs);
                check_plain(channel, "channel", errs);
            }
            (None, Some(_), None) => errs.push("channel", "chat.postMessage needs a channel"),
            (None, None, Some(_)) => errs.push("token", "chat.postMessage needs a token"),
            (None, None, None) => errs.push(
                "url",
                "give an incoming webhook `url`, or `token` and `channel` for chat.postMessage",
            ),
            (Some(_), _, _) => errs.push(
                "url",
                "give either an incoming webhook `url` or `token` + `channel`, not both",
            ),
        }
        if let Some(base) = &self.api_base {
            if self.token.is_none() {
                errs.push("api_base", "only used with `token` (chat.postMessage)");
            }
            check_url(base, "api_base", errs);
        }
        check_template(templates, self.template.as_deref(), "template", errs);
    }
}

impl TelegramSpec {
    fn validate(&self, templates: &TemplateEngine, errs: &mut ValidationErrors) {
        check_secret(&self.token, "token", errs);
        if !has_reference(&self.token)
            && !looks_masked(&self.token)
            && !self
                .token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_:-".contains(&b))
        {
            errs.push("token", "a bot token looks like 123456:ABC-DEF…");
        }
        if let ChatId::Name(n) = &self.chat_id {
            check_plain(n, "chat_id", errs);
        }
        if let Some(base) = &self.api_base {
            check_url(base, "api_base", errs);
        }
        check_template(templates, self.template.as_deref(), "template", errs);
    }
}

/// Most recipients one email destination takes.
pub const MAX_EMAIL_RECIPIENTS: usize = 50;

impl EmailSpec {
    fn validate(&self, templates: &TemplateEngine, errs: &mut ValidationErrors) {
        check_smtp_url(&self.smtp_url, "smtp_url", errs);
        if let Err(e) = check_mailbox(&self.from) {
            errs.push("from", e);
        }
        if self.to.is_empty() {
            errs.push("to", "list at least one recipient");
        }
        if self.to.len() > MAX_EMAIL_RECIPIENTS {
            errs.push("to", format!("at most {MAX_EMAIL_RECIPIENTS} recipients"));
        }
        for (i, t) in self.to.iter().enumerate() {
            if let Err(e) = check_mailbox(t) {
                errs.push(format!("to[{i}]"), e);
            }
        }
        check_template(templates, self.template.as_deref(), "template", errs);
        check_template(
            templates,
            self.html_template.as_deref(),
            "html_template",
            errs,
        );
    }
}

impl SmsSpec {
    fn validate(&self, templates: &TemplateEngine, errs: &mut ValidationErrors) {
        check_plain(&self.account_sid, "account_sid", errs);
        let sid_ok = self.account_sid.len() == 34
            && self.account_sid.starts_with("AC")
            && self.account_sid.bytes().all(|b| b.is_ascii_alphanumeric());
        if !has_reference(&self.account_sid) && !sid_ok {
            errs.push(
                "account_sid",
                "a Twilio account SID is AC followed by 32 characters",
            );
        }
        check_secret(&self.auth_token, "auth_token", errs);
        if !has_reference(&self.to) && !is_e164(&self.to) {
            errs.push("to", "one phone number in E.164 form, e.g. +15005550006");
        }
        if !has_reference(&self.from) && !is_e164(&self.from) && !is_sender_id(&self.from) {
            errs.push(
                "from",
                "an E.164 number or an alphanumeric sender id (1–11 letters, digits, spaces)",
            );
        }
        if let Some(base) = &self.api_base {
            check_url(base, "api_base", errs);
        }
        check_template(templates, self.template.as_deref(), "template", errs);
    }
}

fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|d| {
        (2..=15).contains(&d.len()) && !d.starts_with('0') && d.bytes().all(|b| b.is_ascii_digit())
    })
}

fn is_sender_id(s: &str) -> bool {
    (1..=11).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && s.bytes().any(|b| b.is_ascii_alphabetic())
}

/// Checks an optional template field compiles.
fn check_template(
    templates: &TemplateEngine,
    src: Option<&str>,
    field: &str,
    errs: &mut ValidationErrors,
) {
    if let Some(t) = src
        && let Err(e) = templates.check_template(t)
    {
        errs.push(field, format!("does not compile: {e}"));
    }
}

/// A plain string field: references parse, no control characters.
fn check_plain(value: &str, field: &str, errs: &mut ValidationErrors) {
    if let Err(e) = parse_references(value) {
        errs.push(field, e);
    } else if value.trim().is_empty() || value.chars().any(char::is_control) {
        errs.push(field, "must be non-empty, without control characters");
    }
}

/// A secret field: like a plain one, and not a masked value copied from a read.
fn check_secret(value: &str, field: &str, errs: &mut ValidationErrors) {
    if looks_masked(value) {
        errs.push(
            field,
            "this is the masked value shown on read; give the secret itself",
        );
    } else {
        check_plain(value, field, errs);
    }
}

/// A webhook URL that is itself the secret.
fn check_secret_url(url: &str, field: &str, errs: &mut ValidationErrors) {
    if looks_masked(url) {
        errs.push(
            field,
            "this is the masked URL shown on read; give the webhook URL itself",
        );
    } else {
        check_url(url, field, errs);
    }
}

/// Checks `smtp://` / `smtps://` URLs (skipped when they hold a reference).
pub fn check_smtp_url(value: &str, field: &str, errs: &mut ValidationErrors) {
    if let Err(e) = parse_references(value) {
        errs.push(field, e);
        return;
    }
    if has_reference(value) {
        return; // checked again after resolution, at send time
    }
    if looks_masked(value) {
        errs.push(
            field,
            "the password is the masked value shown on read; give the password itself",
        );
        return;
    }
    if let Err(e) = parse_smtp_url(value) {
        errs.push(field, e);
    }
}

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtps://`: TLS from the first byte (port 465).
    ImplicitTls,
    /// `smtp://` (default) or `?tls=required`: STARTTLS, refusing to go on without it (587).
    StartTls,
    /// `smtp://…?tls=none`: plain text (port 25). For local relays only.
    None,
}

/// An SMTP URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// Percent-decoded.
    pub user: Option<String>,
    /// Percent-decoded.
    pub password: Option<String>,
}

/// Parses an `smtp://` or `smtps://` URL. Errors never repeat the URL (it may hold a
/// password).
pub fn parse_smtp_url(value: &str) -> Result<SmtpUrl, String> {
    let u = url::Url::parse(value).map_err(|e| format!("not a valid URL: {e}"))?;
    let mut tls = None;
    for (k, v) in u.query_pairs() {
        match k.as_ref() {
            "tls" if tls.is_none() => tls = Some(v.into_owned()),
            other => return Err(format!("unknown parameter {other:?}; only `tls` is known")),
        }
    }
    let security = match (u.scheme(), tls.as_deref()) {
        ("smtps", None) => SmtpSecurity::ImplicitTls,
        ("smtps", Some(_)) => {
            return Err("smtps:// is always TLS; `tls` is for smtp:// URLs".into());
        }
        ("smtp", None | Some("required")) => SmtpSecurity::StartTls,
        ("smtp", Some("none")) => SmtpSecurity::None,
        ("smtp", Some(other)) => {
            return Err(format!("tls={other:?}: use tls=required or tls=none"));
        }
        _ => return Err("must be an smtp:// or smtps:// URL".into()),
    };
    let host = match u.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err("the URL has no host".into()),
    };
    if !matches!(u.path(), "" | "/") {
        return Err("an SMTP URL has no path".into());
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = Some(u.username()).filter(|s| !s.is_empty()).map(decode);
    let password = u.password().map(decode);
    if password.is_some() && user.is_none() {
        return Err("a password needs a user name (smtp://user:password@host)".into());
    }
    let port = u.port().unwrap_or(match security {
        SmtpSecurity::ImplicitTls => 465,
        SmtpSecurity::StartTls => 587,
        SmtpSecurity::None => 25,
    });
    Ok(SmtpUrl {
        host,
        port,
        security,
        user,
        password,
    })
}

/// Checks an address as `local@domain` or `Display Name <local@domain>`; the SMTP channel
/// parses it fully at send time.
pub fn check_mailbox(value: &str) -> Result<(), String> {
    if has_reference(value) {
        return parse_references(value).map(|_| ());
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    let v = value.trim();
    let addr = match v.strip_suffix('>') {
        Some(rest) => match rest.rfind('<') {
            Some(i) => &rest[i + 1..],
            None => return Err("unbalanced `<…>`".into()),
        },
        None => v,
    };
    match addr.rsplit_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.is_empty()
                && !addr.contains(char::is_whitespace)
                && !domain.contains(['<', '>']) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{value:?} is not an email address (name@example.com or Name <name@example.com>)"
        )),
    }
}

/// Checks an http(s) URL field (skipped when it holds a reference: checked after
/// resolution, at send time).
pub fn check_url(url: &str, field: &str, errs: &mut ValidationErrors) {
    if let Err(e) = parse_references(url) {
        errs.push(field, e);
        return;
    }
    if has_reference(url) {
        return; // checked again after resolution, at send time
    }
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            if !u.username().is_empty() || u.password().is_some() {
                errs.push(field, "credentials in the URL are not allowed; use headers");
            }
        }
        Ok(_) => errs.push(field, "must be an http:// or https:// URL with a host"),
        Err(e) => errs.push(field, format!("not a valid URL: {e}")),
    }
}

/// Checks a header name and value (no CR/LF/NUL: header injection).
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return Err(format!("{name:?} is not a valid header name"));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err("header values must not contain CR, LF or NUL".into());
    }
    Ok(())
}

pub fn check_headers(headers: &BTreeMap<String, String>, field: &str, errs: &mut ValidationErrors) {
    for (k, v) in headers {
        if let Err(e) = check_header(k, v).and_then(|_| parse_references(v).map(|_| ())) {
            errs.push(format!("{field}.{k}"), e);
        }
    }
}

/// Masks the values of headers that usually carry credentials.
pub fn mask_headers(headers: &mut BTreeMap<String, String>) {
    for (k, v) in headers.iter_mut() {
        if is_sensitive_header(k) {
            *v = mask(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_out_secret_signs_until_its_time_is_up() {
        let old = SigningKey::generate();
        let new = SigningKey::generate();
        let mut w: WebhookSpec = serde_json::from_value(serde_json::json!({
            "url": "http://127.0.0.1:9/", "secret": old
        }))
        .unwrap();
        w.rotate_secret(new.clone(), 2_000, 1_000);
        assert_eq!(
            w.signing_secrets(1_500),
            [new.as_str(), old.as_str()],
            "new first"
        );
        assert_eq!(
            w.signing_secrets(2_000),
            [new.as_str()],
            "the overlap is over"
        );
        let mut errs = ValidationErrors::new();
        w.validate(&mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        // Rotating again drops what has expired and keeps what still overlaps.
        let third = SigningKey::generate();
        w.rotate_secret(third.clone(), 5_000, 2_500);
        assert_eq!(w.signing_secrets(3_000), [third.as_str(), new.as_str()]);
        let mut masked = w.clone();
        masked.mask();
        assert!(masked.retired_secrets.iter().all(|r| r.secret != new));
    }
    use crate::destination::DestinationSpec;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> DestinationSpec {
        serde_json::from_value(v).unwrap()
    }

    fn error_fields(v: serde_json::Value) -> Vec<String> {
        match spec(v).validate("d", &TemplateEngine::new()) {
            Ok(()) => vec![],
            Err(e) => e.0.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn every_kind_parses_and_validates() {
        for v in [
            json!({"kind": "slack", "url": "https://hooks.slack.com/services/T/B/x"}),
            json!({"kind": "slack", "token": "xoxb-1", "channel": "C123", "api_base": "https://slack.example.com/api"}),
            json!({"kind": "teams", "url": "https://example.webhook.office.com/x"}),
            json!({"kind": "discord", "url": "https://discord.com/api/webhooks/1/t"}),
            json!({"kind": "telegram", "token": "123456:ABC-def_1", "chat_id": -1001234}),
            json!({"kind": "telegram", "token": "${env:TG_TOKEN}", "chat_id": "@herald_alerts"}),
            json!({"kind": "email", "smtp_url": "smtps://u:p@mail.example.com", "from": "Herald <h@example.com>", "to": ["ops@example.com"]}),
            json!({"kind": "sms", "account_sid": format!("AC{}", "0".repeat(32)), "auth_token": "t", "from": "+15005550006", "to": "+821012345678"}),
        ] {
            assert_eq!(error_fields(v.clone()), Vec::<String>::new(), "{v}");
        }
    }

    #[test]
    fn kinds_reject_unknown_fields() {
        assert!(
            serde_json::from_value::<DestinationSpec>(
                json!({"kind": "discord", "url": "https://discord.com/x", "colour": 1})
            )
            .is_err()
        );
    }

    #[test]
    fn slack_needs_exactly_one_way_to_send() {
        assert_eq!(error_fields(json!({"kind": "slack"})), vec!["url"]);
        assert_eq!(
            error_fields(
                json!({"kind": "slack", "url": "https://h.example.com/x", "token": "t", "channel": "C"})
            ),
            vec!["url"]
        );
        assert_eq!(
            error_fields(json!({"kind": "slack", "token": "t"})),
            vec!["channel"]
        );
        assert_eq!(
            error_fields(
                json!({"kind": "slack", "url": "https://h.example.com/x", "api_base": "https://a.example.com"})
            ),
            vec!["api_base"]
        );
        assert_eq!(
            error_fields(
                json!({"kind": "slack", "url": "https://h.example.com/x", "template": "{{ x"})
            ),
            vec!["template"]
        );
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(
            error_fields(json!({"kind": "telegram", "token": "has spaces in it", "chat_id": ""})),
            vec!["token", "chat_id"]
        );
        assert_eq!(
            error_fields(
                json!({"kind": "email", "smtp_url": "smtp://m.example.com?tls=maybe", "from": "nobody", "to": ["a@example.com", "b"], "html_template": "{% if %}"})
            ),
            vec!["smtp_url", "from", "to[1]", "html_template"]
        );
        assert_eq!(
            error_fields(
                json!({"kind": "email", "smtp_url": "http://m.example.com", "from": "a@example.com", "to": []})
            ),
            vec!["smtp_url", "to"]
        );
        assert_eq!(
            error_fields(
                json!({"kind": "sms", "account_sid": "nope", "auth_token": "t", "from": "not a sender id", "to": "010-1234"})
            ),
            vec!["account_sid", "to", "from"]
        );
        assert_eq!(
            error_fields(
                json!({"kind": "sms", "account_sid": "${env:SID}", "auth_token": "${env:TOK}", "from": "Herald", "to": "+15005550006"})
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn every_secret_is_masked_and_references_stay_visible() {
        let hook = "https://hooks.slack.com/services/T000/B000/abcdefghijklmnopqrstuvwx";
        let cases = [
            (
                json!({"kind": "slack", "url": hook}),
                "url",
                "abcdefghijklmnop",
            ),
            (
                json!({"kind": "slack", "token": "xoxb-1234567890-abcdefghijkl", "channel": "C1"}),
                "token",
                "xoxb-1234567890",
            ),
            (
                json!({"kind": "teams", "url": "https://x.webhook.office.com/webhookb2/secret-part-1234"}),
                "url",
                "secret-part",
            ),
            (
                json!({"kind": "discord", "url": "https://discord.com/api/webhooks/1/tok-abcdefghijkl"}),
                "url",
                "tok-abcdefghijkl",
            ),
            (
                json!({"kind": "telegram", "token": "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZ", "chat_id": 1}),
                "token",
                "ABCDEFGHIJKLMNOP",
            ),
            (
                json!({"kind": "email", "smtp_url": "smtps://herald:hunter2hunter2@mail.example.com", "from": "a@example.com", "to": ["b@example.com"]}),
                "smtp_url",
                "hunter2",
            ),
            (
                json!({"kind": "sms", "account_sid": format!("AC{}", "1".repeat(32)), "auth_token": "twilio-auth-token-0123456789", "from": "+15005550006", "to": "+15005550009"}),
                "auth_token",
                "twilio-auth-token",
            ),
        ];
        for (v, field, secret) in cases {
            let masked = serde_json::to_value(spec(v.clone()).masked()).unwrap();
            assert!(
                !masked.to_string().contains(secret),
                "{field} leaks in {masked}"
            );
            assert!(
                looks_masked(masked[field].as_str().unwrap()),
                "{field}: {masked}"
            );
            // A masked value sent back is refused rather than stored over the secret.
            let mut back = masked.clone();
            back.as_object_mut().unwrap().remove("name");
            assert!(
                error_fields(back).contains(&field.to_string()),
                "masked {field} accepted"
            );
        }
        let r = spec(json!({"kind": "telegram", "token": "${env:TG_TOKEN}", "chat_id": 1}));
        let KindSpec::Telegram(t) = r.masked().kind else {
            panic!()
        };
        assert_eq!(t.token, "${env:TG_TOKEN}");
    }

    #[test]
    fn smtp_urls_parse_with_secure_defaults() {
        let u = parse_smtp_url("smtp://mail.example.com").unwrap();
        assert_eq!((u.port, u.security), (587, SmtpSecurity::StartTls));
        let u = parse_smtp_url("smtp://127.0.0.1:2525?tls=none").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.security),
            ("127.0.0.1", 2525, SmtpSecurity::None)
        );
        let u = parse_smtp_url("smtps://me%40example.com:p%40ss%2Fw+rd@mail.example.com").unwrap();
        assert_eq!((u.port, u.security), (465, SmtpSecurity::ImplicitTls));
        assert_eq!(u.user.as_deref(), Some("me@example.com"));
        assert_eq!(u.password.as_deref(), Some("p@ss/w+rd"));
        let u = parse_smtp_url("smtp://[::1]:25?tls=required").unwrap();
        assert_eq!(u.host, "::1");
        for bad in [
            "smtps://m.example.com?tls=none",
            "smtp://m.example.com?starttls=1",
            "smtp://m.example.com/path",
            "smtp://:pw@m.example.com",
            "imap://m.example.com",
        ] {
            let e = parse_smtp_url(bad).unwrap_err();
            assert!(!e.contains("pw@"), "{e}");
        }
    }

    #[test]
    fn mailboxes() {
        assert!(check_mailbox("ops@example.com").is_ok());
        assert!(check_mailbox("운영팀 <ops@example.com>").is_ok());
        assert!(check_mailbox("ops").is_err());
        assert!(check_mailbox("a@b\r\nBcc: x@y").is_err());
        assert!(check_mailbox("Name <ops@example.com").is_err());
    }
}
