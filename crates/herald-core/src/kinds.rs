//! The kind-specific part of a destination: one settings struct per kind, each able to
//! validate, complete and mask itself. Adding a kind means adding a variant here and a
//! module in `herald-channels`.

use crate::error::ValidationErrors;
use crate::secret_ref::{has_reference, is_sensitive_header, mask, parse_references};
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
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl KindSpec {
    pub fn name(&self) -> &'static str {
        match self {
            KindSpec::Webhook(_) => "webhook",
            KindSpec::Http(_) => "http",
        }
    }

    /// Checks the kind's own fields, pushing errors named by field.
    pub fn validate(&self, templates: &TemplateEngine, errs: &mut ValidationErrors) {
        match self {
            KindSpec::Webhook(w) => w.validate(errs),
            KindSpec::Http(h) => h.validate(templates, errs),
        }
    }

    /// Fills in generated values; returns a generated secret to show once.
    pub fn complete(&mut self) -> Option<String> {
        match self {
            KindSpec::Webhook(w) => w.complete(),
            KindSpec::Http(_) => None,
        }
    }

    /// Masks inline secrets for display.
    pub fn mask(&mut self) {
        match self {
            KindSpec::Webhook(w) => w.mask(),
            KindSpec::Http(h) => mask_headers(&mut h.headers),
        }
    }
}

impl WebhookSpec {
    fn validate(&self, errs: &mut ValidationErrors) {
        check_url(&self.url, "url", errs);
        check_headers(&self.headers, "headers", errs);
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
