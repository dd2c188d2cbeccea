//! MIME parsed back by a real parser (mail-parser): the parts of an email the SMTP sink got,
//! and the fields of a `multipart/form-data` request a fake provider got (RFC 7578 bodies
//! are MIME multiparts too, so the same parser reads what Discord and Telegram would).

use crate::receiver::Received;
use mail_parser::{MessageParser, MimeHeaders, PartType};

/// One leaf part.
#[derive(Debug, Clone)]
pub struct Part {
    /// `image/png`.
    pub content_type: String,
    /// The `multipart/*` type that holds it, e.g. `multipart/related`.
    pub parent: String,
    /// `attachment`, `inline` or `form-data`.
    pub disposition: Option<String>,
    /// The form field name (`name=`).
    pub name: Option<String>,
    /// The decoded filename (RFC 2231 `filename*` undone).
    pub filename: Option<String>,
    /// `Content-ID` without the angle brackets.
    pub content_id: Option<String>,
    /// The decoded content.
    pub bytes: Vec<u8>,
}

impl Part {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

fn mime_type(ct: Option<&mail_parser::ContentType<'_>>) -> String {
    match ct {
        Some(c) => match c.subtype() {
            Some(s) => format!("{}/{s}", c.ctype()).to_ascii_lowercase(),
            None => c.ctype().to_ascii_lowercase(),
        },
        None => "text/plain".into(),
    }
}

/// Every leaf part of a MIME message, in order.
pub fn parts(raw: &[u8]) -> Vec<Part> {
    let m = MessageParser::default()
        .parse(raw)
        .unwrap_or_else(|| panic!("unparseable MIME: {}", String::from_utf8_lossy(raw)));
    let mut parent = vec![String::new(); m.parts.len()];
    for p in &m.parts {
        if let PartType::Multipart(children) = &p.body {
            let t = mime_type(p.content_type());
            for c in children {
                parent[*c as usize] = t.clone();
            }
        }
    }
    m.parts
        .iter()
        .enumerate()
        .filter(|(_, p)| !matches!(p.body, PartType::Multipart(_)))
        .map(|(i, p)| Part {
            content_type: mime_type(p.content_type()),
            parent: parent[i].clone(),
            disposition: p
                .content_disposition()
                .map(|d| d.ctype().to_ascii_lowercase()),
            name: p
                .content_disposition()
                .and_then(|d| d.attribute("name"))
                .map(str::to_string),
            filename: p.attachment_name().map(str::to_string),
            content_id: p
                .content_id()
                .map(|c| c.trim_matches(['<', '>']).to_string()),
            bytes: p.contents().to_vec(),
        })
        .collect()
}

/// The fields of a `multipart/form-data` request, parsed as the MIME multipart it is.
pub fn form_data(r: &Received) -> Vec<Part> {
    let ct = r
        .header("content-type")
        .filter(|c| c.starts_with("multipart/form-data"))
        .unwrap_or_else(|| panic!("not multipart/form-data: {:?}", r.header("content-type")));
    let mut raw = format!("Content-Type: {ct}\r\n\r\n").into_bytes();
    raw.extend_from_slice(&r.body);
    parts(&raw)
}

/// The form field `name`, panicking with the field list when it is missing.
pub fn field<'a>(parts: &'a [Part], name: &str) -> &'a Part {
    parts
        .iter()
        .find(|p| p.name.as_deref() == Some(name))
        .unwrap_or_else(|| {
            let names: Vec<_> = parts.iter().map(|p| p.name.clone()).collect();
            panic!("no form field {name:?}; fields: {names:?}")
        })
}
