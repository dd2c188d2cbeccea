//! Attachments as channels see them: decoded files, `multipart/form-data` bodies for the
//! providers that take uploads (Discord, Telegram), the notes an attempt records about files
//! a channel cannot carry, and the memory of steps already done so that a retry of a
//! several-request attempt does not repeat them.

use herald_core::attachment::human_size;
use herald_core::delivery::{ErrorClass, MAX_EXCERPT, SendReport, Verdict, truncate_chars};
use herald_core::message::{Attachment, Message};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

/// One decoded attachment of a message.
#[derive(Debug, Clone)]
pub struct File<'a> {
    /// Its position in the message's `attachments`.
    pub index: usize,
    pub meta: &'a Attachment,
    pub bytes: Vec<u8>,
}

impl File<'_> {
    pub fn filename(&self) -> &str {
        &self.meta.filename
    }

    pub fn content_type(&self) -> &str {
        &self.meta.content_type
    }

    /// The address the file was fetched from: public, so a provider can load it.
    pub fn url(&self) -> Option<&str> {
        self.meta.url.as_deref()
    }

    pub fn is_image(&self) -> bool {
        self.meta.is_image()
    }

    /// `report.csv (text/csv, 1.2 KB)`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, {})",
            self.filename(),
            self.meta.essence(),
            human_size(self.bytes.len())
        )
    }
}

/// The message's attachments, decoded. Stored data that no longer decodes is a permanent
/// failure (no retry can fix it).
pub fn files(message: &Message) -> Result<Vec<File<'_>>, SendReport> {
    message
        .body
        .attachments
        .iter()
        .enumerate()
        .map(|(index, meta)| {
            meta.bytes()
                .map(|bytes| File { index, meta, bytes })
                .map_err(|e| SendReport::failed(Verdict::permanent(), ErrorClass::Attachment, e))
        })
        .collect()
}

/// A `multipart/form-data` body (RFC 7578). Filenames go into `filename="…"` as UTF-8,
/// as browsers send them, with `"`, CR and LF percent-encoded.
pub struct Multipart {
    boundary: String,
    body: Vec<u8>,
}

impl Default for Multipart {
    fn default() -> Self {
        Self::new()
    }
}

impl Multipart {
    pub fn new() -> Self {
        Multipart {
            boundary: format!("herald-{}", herald_core::ids::unique_hex()),
            body: Vec::new(),
        }
    }

    fn head(&mut self, disposition: &str, content_type: &str) {
        self.body.extend_from_slice(
            format!(
                "--{}\r\nContent-Disposition: form-data; {disposition}\r\nContent-Type: {content_type}\r\n\r\n",
                self.boundary
            )
            .as_bytes(),
        );
    }

    /// A text field.
    pub fn text(mut self, name: &str, value: &str) -> Self {
        self.head(
            &format!("name=\"{}\"", quote(name)),
            "text/plain; charset=utf-8",
        );
        self.body.extend_from_slice(value.as_bytes());
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// A JSON field such as Discord's `payload_json`.
    pub fn json(mut self, name: &str, value: &serde_json::Value) -> Self {
        self.head(&format!("name=\"{}\"", quote(name)), "application/json");
        self.body.extend_from_slice(value.to_string().as_bytes());
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// A file field.
    pub fn file(mut self, name: &str, filename: &str, content_type: &str, bytes: &[u8]) -> Self {
        let ct = if content_type.chars().any(char::is_control) {
            "application/octet-stream"
        } else {
            content_type
        };
        self.head(
            &format!("name=\"{}\"; filename=\"{}\"", quote(name), quote(filename)),
            ct,
        );
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// The `Content-Type` header and the body.
    pub fn finish(mut self) -> (String, Vec<u8>) {
        self.body
            .extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        (
            format!("multipart/form-data; boundary={}", self.boundary),
            self.body,
        )
    }
}

fn quote(s: &str) -> String {
    s.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Adds a note to what the attempt records: to the excerpt when delivered, to the error
/// otherwise — e.g. which files a channel could not carry, or which steps were already done.
pub fn with_note(mut report: SendReport, note: &str) -> SendReport {
    if note.is_empty() {
        return report;
    }
    let joined = if report.response_excerpt.is_empty() {
        note.to_string()
    } else {
        format!("{note}\n{}", report.response_excerpt)
    };
    report.response_excerpt = truncate_chars(&joined, MAX_EXCERPT).to_string();
    if report.verdict != Verdict::Delivered {
        report.error = Some(match report.error {
            Some(e) => format!("{e} ({note})"),
            None => note.to_string(),
        });
    }
    report
}

/// Names the step of a several-request attempt that failed, e.g.
/// `files.completeUploadExternal: Slack error internal_error`.
pub fn step_error(mut report: SendReport, step: &str) -> SendReport {
    report.error = Some(format!(
        "{step}: {}",
        report.error.as_deref().unwrap_or("failed")
    ));
    report
}

/// The note for files a channel sends only as a mention.
pub fn not_sent_note(kind: &str, why: &str, files: &[&File<'_>]) -> String {
    if files.is_empty() {
        return String::new();
    }
    let list: Vec<String> = files.iter().map(|f| f.describe()).collect();
    format!(
        "{kind}: {} not uploaded ({why}); listed in the message instead: {}",
        if files.len() == 1 { "1 file" } else { "files" },
        list.join(", ")
    )
}

/// Most attempts whose progress is remembered at once.
const MAX_TRACKED: usize = 10_000;

/// Which provider requests of a several-request attempt (one Telegram message per file,
/// Slack's post before its files) already succeeded, per message and destination, so that
/// a retry in this process sends only the rest. Kept in memory: after a restart a retry
/// starts over, and the attempt says so when that may repeat something.
#[derive(Default)]
pub struct Progress {
    inner: Mutex<ProgressInner>,
}

#[derive(Default)]
struct ProgressInner {
    done: HashMap<String, HashSet<String>>,
    order: VecDeque<String>,
}

impl Progress {
    fn key(message: &Message, destination: &str) -> String {
        format!("{}\u{0}{destination}", message.id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn is_done(&self, message: &Message, destination: &str, step: &str) -> bool {
        self.lock()
            .done
            .get(&Self::key(message, destination))
            .is_some_and(|s| s.contains(step))
    }

    pub fn mark(&self, message: &Message, destination: &str, step: &str) {
        let key = Self::key(message, destination);
        let mut g = self.lock();
        if !g.done.contains_key(&key) {
            g.order.push_back(key.clone());
            while g.order.len() > MAX_TRACKED {
                if let Some(old) = g.order.pop_front() {
                    g.done.remove(&old);
                }
            }
        }
        g.done.entry(key).or_default().insert(step.to_string());
    }

    /// The channel id a `chat.postMessage` step answered with, if that step is done.
    pub fn posted_channel(
        &self,
        message: &Message,
        destination: &str,
        step: &str,
    ) -> Option<String> {
        let g = self.lock();
        let done = g.done.get(&Self::key(message, destination))?;
        let prefix = format!("{step}=");
        done.iter()
            .find_map(|s| s.strip_prefix(&prefix).map(str::to_string))
    }

    /// Records that a post step is done, with the channel id it answered.
    pub fn remember_channel(&self, message: &Message, destination: &str, step: &str, id: &str) {
        self.mark(message, destination, &format!("{step}={id}"));
    }

    /// Forgets an attempt that finished (delivered or given up).
    pub fn clear(&self, message: &Message, destination: &str) {
        let key = Self::key(message, destination);
        let mut g = self.lock();
        if g.done.remove(&key).is_some() {
            g.order.retain(|k| k != &key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_fields_and_files() {
        let (ct, body) = Multipart::new()
            .json("payload_json", &serde_json::json!({"content": "hi"}))
            .file("files[0]", "보고서 \"1\".csv", "text/csv", b"a,b\r\n")
            .finish();
        let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.contains(
            "Content-Disposition: form-data; name=\"files[0]\"; filename=\"보고서 %221%22.csv\"\r\nContent-Type: text/csv\r\n\r\na,b\r\n\r\n"
        ));
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
    }
}
