//! Attachments: the checks every file passes before Herald stores it, and what channels ask
//! of a stored one.
//!
//! * Filenames are **sanitised**, not trusted: only the last path segment is kept, control
//!   and bidirectional-override characters are dropped, characters that Windows or a shell
//!   treats specially (`"<>:|?*`) become `_`, leading and trailing dots and spaces are
//!   trimmed, reserved device names (`CON`, `NUL`, …) get a leading `_`, and the name is cut
//!   to 255 bytes keeping its extension.
//! * The content is **sniffed** for the formats a magic number identifies (PNG, JPEG, GIF,
//!   WebP, TIFF, PDF, ZIP, gzip, ELF) and checked against the declared `content_type`: bytes
//!   that are one of them must be declared as it (or as a compatible type: an Office file
//!   is a ZIP, anything may be `application/octet-stream`), and a declared type from that
//!   list must have the matching bytes.
//!
//! ```
//! use herald_core::attachment::{check_content, sanitize_filename};
//! assert_eq!(sanitize_filename("C:\\reports\\..\\주간 보고서.csv").as_deref(), Some("주간 보고서.csv"));
//! assert!(check_content("image/png", b"%PDF-1.7").is_err());
//! assert!(check_content("text/csv", b"a,b\n1,2\n").is_ok());
//! ```

use crate::message::Attachment;
use base64::Engine;

/// Longest stored filename, in bytes.
pub const MAX_FILENAME: usize = 255;

/// The bytes of a stored attachment (its base64 `data`).
impl Attachment {
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        let data = self
            .data
            .as_deref()
            .ok_or_else(|| format!("attachment {:?} has no stored data", self.filename))?;
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| format!("attachment {:?}: {e}", self.filename))
    }

    /// The decoded size of the stored data, from its base64 length.
    pub fn size(&self) -> usize {
        self.data.as_deref().map_or(0, |d| {
            let d = d.trim_end();
            (d.len() / 4 * 3).saturating_sub(d.bytes().rev().take_while(|b| *b == b'=').count())
        })
    }

    /// The media type without parameters, lower-cased: `image/png`.
    pub fn essence(&self) -> String {
        essence(&self.content_type)
    }

    /// Whether chat providers show this as a picture (PNG, JPEG, GIF, WebP).
    pub fn is_image(&self) -> bool {
        matches!(
            self.essence().as_str(),
            "image/png" | "image/jpeg" | "image/gif" | "image/webp"
        )
    }
}

/// `Text/CSV; charset=utf-8` → `text/csv`, with common aliases folded.
pub fn essence(content_type: &str) -> String {
    let e = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match e.as_str() {
        "image/jpg" | "image/pjpeg" => "image/jpeg".into(),
        "application/x-pdf" => "application/pdf".into(),
        "application/x-gzip" => "application/gzip".into(),
        "application/x-zip-compressed" => "application/zip".into(),
        _ => e,
    }
}

/// A safe filename for `name`, or `None` when nothing usable is left.
pub fn sanitize_filename(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c))
        .map(|c| {
            if matches!(c, '"' | '<' | '>' | ':' | '|' | '?' | '*') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| c == '.' || c.is_whitespace());
    if trimmed.is_empty() {
        return None;
    }
    let mut out = trimmed.to_string();
    let stem = out
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.as_bytes()[3].is_ascii_digit());
    if reserved {
        out.insert(0, '_');
    }
    Some(cut_keeping_extension(&out, MAX_FILENAME))
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Cuts `name` to `max` bytes on a character boundary, keeping a short extension.
fn cut_keeping_extension(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let ext = name
        .rfind('.')
        .map(|i| &name[i..])
        .filter(|e| e.len() <= 16)
        .unwrap_or("");
    let mut end = max - ext.len();
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ext}", &name[..end])
}

/// The format the bytes' magic number names, if any.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    const TABLE: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"II*\0", "image/tiff"),
        (b"MM\0*", "image/tiff"),
        (b"%PDF-", "application/pdf"),
        (b"PK\x03\x04", "application/zip"),
        (b"PK\x05\x06", "application/zip"),
        (b"\x1f\x8b", "application/gzip"),
        (b"\x7fELF", "application/x-executable"),
    ];
    if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Some("image/webp");
    }
    TABLE
        .iter()
        .find(|(magic, _)| bytes.starts_with(magic))
        .map(|(_, t)| *t)
}

/// Whether a file sniffed as `sniffed` may be declared as `declared` (both essences).
fn compatible(sniffed: &str, declared: &str) -> bool {
    if sniffed == declared || declared == "application/octet-stream" {
        return true;
    }
    match sniffed {
        // Office, OpenDocument, EPUB, JAR, APK… are ZIP files.
        "application/zip" => {
            declared.contains("zip")
                || declared.starts_with("application/vnd.")
                || declared == "application/java-archive"
        }
        "application/gzip" => {
            declared.contains("gzip") || declared.contains("tar") || declared.contains("compressed")
        }
        _ => false,
    }
}

/// Checks the bytes against the declared type (see the module docs).
pub fn check_content(declared: &str, bytes: &[u8]) -> Result<(), String> {
    let declared = essence(declared);
    match sniff(bytes) {
        Some(s) if compatible(s, &declared) => Ok(()),
        Some(s) => Err(format!("the content is {s}, not the declared {declared}")),
        None if SNIFFABLE.contains(&declared.as_str()) => Err(format!(
            "the content is not {declared} (its first bytes are not a {declared} signature)"
        )),
        None => Ok(()),
    }
}

/// Declared types whose content must carry their signature.
const SNIFFABLE: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/tiff",
    "application/pdf",
    "application/zip",
    "application/gzip",
];

/// `Content-Disposition: attachment` with an ASCII `filename` fallback and the exact
/// name as RFC 5987 `filename*` (RFC 6266), e.g. for `보고서.csv`:
/// `attachment; filename="___.csv"; filename*=UTF-8''%EB%B3%B4...`.
pub fn content_disposition(filename: &str) -> String {
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' && c != '%' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(filename, ATTR_CHAR).to_string();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// Everything but RFC 5987 `attr-char` is percent-encoded.
const ATTR_CHAR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// The media type of a file name's extension (for clients that attach files from disk);
/// `application/octet-stream` when unknown.
pub fn guess_content_type(filename: &str) -> &'static str {
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "csv" => "text/csv",
        "txt" | "log" => "text/plain",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        _ => "application/octet-stream",
    }
}

/// `12 B`, `3.4 KB`, `1.2 MB`.
pub fn human_size(n: usize) -> String {
    match n {
        0..1000 => format!("{n} B"),
        1000..1_000_000 => format!("{:.1} KB", n as f64 / 1000.0),
        _ => format!("{:.1} MB", n as f64 / 1_000_000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_are_sanitised() {
        let s = |n: &str| sanitize_filename(n);
        assert_eq!(s("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(s("a\u{202e}gpj.exe").as_deref(), Some("agpj.exe"));
        assert_eq!(s("re:port?.csv\r\n").as_deref(), Some("re_port_.csv"));
        assert_eq!(s("  .hidden. ").as_deref(), Some("hidden"));
        assert_eq!(s("con.txt").as_deref(), Some("_con.txt"));
        assert_eq!(s("COM1").as_deref(), Some("_COM1"));
        assert_eq!(s("console.log").as_deref(), Some("console.log"));
        assert_eq!(s("dir/"), None);
        assert_eq!(s(".."), None);
        let long = format!("{}.csv", "보".repeat(200));
        let cut = s(&long).unwrap();
        assert!(
            cut.len() <= MAX_FILENAME && cut.ends_with("보.csv"),
            "{cut}"
        );
    }

    #[test]
    fn content_is_checked_against_the_declared_type() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert!(check_content("image/png", png).is_ok());
        assert!(check_content("IMAGE/PNG; x=y", png).is_ok());
        assert!(check_content("application/octet-stream", png).is_ok());
        assert!(
            check_content("image/jpeg", png)
                .unwrap_err()
                .contains("image/png")
        );
        assert!(check_content("text/csv", png).is_err());
        assert!(check_content("image/png", b"a,b\n").is_err());
        assert!(check_content("image/jpg", b"\xff\xd8\xff\xe0").is_ok());
        assert!(check_content("text/plain", b"\x7fELF\x02").is_err());
        let docx = b"PK\x03\x04rest";
        assert!(
            check_content(
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                docx
            )
            .is_ok()
        );
        assert!(check_content("image/webp", b"RIFF\0\0\0\0WEBPVP8 ").is_ok());
        assert!(check_content("text/csv", "이름,값\n".as_bytes()).is_ok());
    }

    #[test]
    fn content_disposition_carries_korean_names() {
        assert_eq!(
            content_disposition("주간 보고서.csv"),
            "attachment; filename=\"__ ___.csv\"; filename*=UTF-8''%EC%A3%BC%EA%B0%84%20%EB%B3%B4%EA%B3%A0%EC%84%9C.csv"
        );
        assert_eq!(
            content_disposition("a\"b%.png"),
            "attachment; filename=\"a_b_.png\"; filename*=UTF-8''a%22b%25.png"
        );
    }
}
