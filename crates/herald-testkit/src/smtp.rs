//! A real SMTP server on 127.0.0.1 for email tests: speaks enough ESMTP for lettre (EHLO,
//! HELO, AUTH PLAIN/LOGIN, MAIL FROM, RCPT TO, DATA with dot-unstuffing, RSET, NOOP, QUIT),
//! records every accepted message with its envelope, and can be scripted to answer a
//! failure (or to stall) at MAIL, RCPT or the end of DATA.
//!
//! ```no_run
//! # async fn demo() {
//! use herald_testkit::smtp::{SmtpSink, Stage};
//! let sink = SmtpSink::start().await;
//! sink.push(Stage::Rcpt, 450, "4.2.1 mailbox busy");
//! // smtp_url = sink.url()  →  "smtp://127.0.0.1:<port>?tls=none"
//! # }
//! ```

use base64::Engine;
use mail_parser::{MessageParser, PartType};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Where in the conversation a scripted answer is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Mail,
    Rcpt,
    /// After the message content (the final `.`).
    Data,
}

/// A scripted answer, used once, at the next command of its stage.
#[derive(Debug, Clone)]
pub struct SmtpReply {
    pub stage: Stage,
    pub code: u16,
    pub text: String,
    /// Wait this long before answering (to make the client time out).
    pub delay: Duration,
}

/// A message the sink accepted.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub from: String,
    pub to: Vec<String>,
    /// The user name of `AUTH`, when the client logged in.
    pub auth: Option<(String, String)>,
    /// The message as transmitted, dot-unstuffed, CRLF line ends.
    pub raw: Vec<u8>,
}

impl ReceivedMail {
    fn parsed(&self) -> mail_parser::Message<'_> {
        MessageParser::default()
            .parse(&self.raw)
            .unwrap_or_else(|| panic!("unparseable mail: {}", self.raw_text()))
    }

    pub fn raw_text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    /// The decoded subject (RFC 2047 undone).
    pub fn subject(&self) -> Option<String> {
        self.parsed().subject().map(str::to_string)
    }

    /// The decoded first `text/plain` part.
    pub fn text(&self) -> Option<String> {
        let m = self.parsed();
        match &m.text_part(0)?.body {
            PartType::Text(t) => Some(t.to_string()),
            _ => None,
        }
    }

    /// The decoded first `text/html` part (`None` for a text-only email).
    pub fn html(&self) -> Option<String> {
        let m = self.parsed();
        match &m.html_part(0)?.body {
            PartType::Html(h) => Some(h.to_string()),
            _ => None,
        }
    }

    /// Every leaf MIME part (text, HTML, attachments, inline images), decoded.
    pub fn parts(&self) -> Vec<crate::mime::Part> {
        crate::mime::parts(&self.raw)
    }

    /// A header's raw value, e.g. `Message-ID`.
    pub fn header(&self, name: &str) -> Option<String> {
        self.parsed().header_raw(name).map(|v| v.trim().to_string())
    }
}

#[derive(Default)]
struct Inner {
    script: Mutex<VecDeque<SmtpReply>>,
    mails: Mutex<Vec<ReceivedMail>>,
    connections: Mutex<usize>,
}

impl Inner {
    fn scripted(&self, stage: Stage) -> Option<SmtpReply> {
        let mut script = self.script.lock().unwrap();
        let i = script.iter().position(|r| r.stage == stage)?;
        script.remove(i)
    }
}

/// The sink; dropped, it stops accepting connections.
#[derive(Clone)]
pub struct SmtpSink {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    _shutdown: Arc<tokio::sync::oneshot::Sender<()>>,
}

impl SmtpSink {
    /// Starts on a random port of 127.0.0.1.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let inner = Arc::new(Inner::default());
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let state = inner.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        *state.connections.lock().unwrap() += 1;
                        let state = state.clone();
                        tokio::spawn(async move {
                            let _ = session(stream, state).await;
                        });
                    }
                }
            }
        });
        SmtpSink {
            addr,
            inner,
            _shutdown: Arc::new(tx),
        }
    }

    /// `smtp://127.0.0.1:<port>?tls=none`: the sink speaks plain SMTP only.
    pub fn url(&self) -> String {
        format!("smtp://{}?tls=none", self.addr)
    }

    /// Queues a failure answer for the next command of `stage`.
    pub fn push(&self, stage: Stage, code: u16, text: &str) {
        self.push_reply(SmtpReply {
            stage,
            code,
            text: text.into(),
            delay: Duration::ZERO,
        });
    }

    pub fn push_reply(&self, reply: SmtpReply) {
        self.inner.script.lock().unwrap().push_back(reply);
    }

    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.inner.mails.lock().unwrap().clone()
    }

    /// TCP connections accepted so far (pooling keeps this low).
    pub fn connections(&self) -> usize {
        *self.inner.connections.lock().unwrap()
    }

    /// Waits until at least `n` messages were accepted.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        crate::eventually(timeout, &format!("{n} mails at the sink"), || async {
            let m = self.mails();
            (m.len() >= n).then_some(m)
        })
        .await
    }
}

const MAX_LINE: usize = 64 * 1024;
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

async fn session(stream: TcpStream, inner: Arc<Inner>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write.write_all(b"220 herald-sink ESMTP ready\r\n").await?;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let mut auth: Option<(String, String)> = None;
    loop {
        let Some(line) = read_line(&mut read).await? else {
            return Ok(());
        };
        let upper = line.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or("").to_string();
        let answer = match verb.as_str() {
            "EHLO" => "250-herald-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-SIZE 16777216\r\n250 AUTH PLAIN LOGIN".to_string(),
            "HELO" => "250 herald-sink".to_string(),
            "NOOP" => "250 2.0.0 ok".to_string(),
            "RSET" => {
                from = None;
                to.clear();
                "250 2.0.0 reset".to_string()
            }
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            "AUTH" => {
                let parts: Vec<&str> = line.split_whitespace().collect();
                let decode = |s: &str| {
                    base64::engine::general_purpose::STANDARD
                        .decode(s.trim())
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default()
                };
                match parts.get(1).map(|m| m.to_ascii_uppercase()).as_deref() {
                    Some("PLAIN") => {
                        let initial = match parts.get(2) {
                            Some(i) => i.to_string(),
                            None => {
                                write.write_all(b"334 \r\n").await?;
                                read_line(&mut read).await?.unwrap_or_default()
                            }
                        };
                        let decoded = decode(&initial);
                        let mut fields = decoded.split('\0').skip(1);
                        auth = Some((
                            fields.next().unwrap_or_default().to_string(),
                            fields.next().unwrap_or_default().to_string(),
                        ));
                        "235 2.7.0 authenticated".to_string()
                    }
                    Some("LOGIN") => {
                        write.write_all(b"334 VXNlcm5hbWU6\r\n").await?;
                        let user = decode(&read_line(&mut read).await?.unwrap_or_default());
                        write.write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
                        let pass = decode(&read_line(&mut read).await?.unwrap_or_default());
                        auth = Some((user, pass));
                        "235 2.7.0 authenticated".to_string()
                    }
                    _ => "504 5.5.4 unrecognized authentication type".to_string(),
                }
            }
            "MAIL" => match scripted(&inner, Stage::Mail).await {
                Some(a) => a,
                None => {
                    from = Some(angle(&line));
                    to.clear();
                    "250 2.1.0 sender ok".to_string()
                }
            },
            "RCPT" if from.is_none() => "503 5.5.1 need MAIL first".to_string(),
            "RCPT" => match scripted(&inner, Stage::Rcpt).await {
                Some(a) => a,
                None => {
                    to.push(angle(&line));
                    "250 2.1.5 recipient ok".to_string()
                }
            },
            "DATA" if to.is_empty() => "503 5.5.1 need RCPT first".to_string(),
            "DATA" => {
                write
                    .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let Some(raw) = read_data(&mut read).await? else {
                    return Ok(());
                };
                let answer = match scripted(&inner, Stage::Data).await {
                    Some(a) => a,
                    None => {
                        let mut mails = inner.mails.lock().unwrap();
                        mails.push(ReceivedMail {
                            from: from.clone().unwrap_or_default(),
                            to: to.clone(),
                            auth: auth.clone(),
                            raw,
                        });
                        format!("250 2.0.0 ok: queued as {}", mails.len())
                    }
                };
                from = None;
                to.clear();
                answer
            }
            "STARTTLS" => "454 4.7.0 TLS not available".to_string(),
            _ => "502 5.5.2 command not recognized".to_string(),
        };
        write.write_all(answer.as_bytes()).await?;
        write.write_all(b"\r\n").await?;
    }
}

/// The scripted answer for `stage`, after its delay.
async fn scripted(inner: &Inner, stage: Stage) -> Option<String> {
    let r = inner.scripted(stage)?;
    if !r.delay.is_zero() {
        tokio::time::sleep(r.delay).await;
    }
    Some(format!("{} {}", r.code, r.text))
}

/// The address inside `<…>` of `MAIL FROM:<a>` / `RCPT TO:<a>`.
fn angle(line: &str) -> String {
    match (line.find('<'), line.find('>')) {
        (Some(a), Some(b)) if a < b => line[a + 1..b].to_string(),
        _ => String::new(),
    }
}

/// One line without its CRLF; `None` at end of stream.
async fn read_line<R: AsyncBufReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// The message content up to the lone `.`, dot-unstuffed; `None` if the stream ended.
async fn read_data<R: AsyncBufReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = (&mut *r)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(None);
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(Some(out));
        }
        let content = if line.starts_with(b"..") {
            &line[1..]
        } else {
            &line[..]
        };
        if out.len() + content.len() <= MAX_MESSAGE {
            out.extend_from_slice(content);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn speaks_smtp_and_unstuffs_dots() {
        let sink = SmtpSink::start().await;
        let stream = TcpStream::connect(sink.addr).await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        let mut expect = async |prefix: &str| {
            let mut got = read_line(&mut r).await.unwrap().unwrap();
            while got.as_bytes().get(3) == Some(&b'-') {
                got = read_line(&mut r).await.unwrap().unwrap();
            }
            assert!(got.starts_with(prefix), "{got}");
        };
        expect("220").await;
        for (cmd, code) in [
            ("EHLO test\r\n", "250"),
            ("MAIL FROM:<a@example.com>\r\n", "250"),
            ("RCPT TO:<b@example.com>\r\n", "250"),
            ("DATA\r\n", "354"),
            ("Subject: x\r\n\r\n..leading dot\r\nline\r\n.\r\n", "250"),
            ("QUIT\r\n", "221"),
        ] {
            w.write_all(cmd.as_bytes()).await.unwrap();
            expect(code).await;
        }
        let mails = sink.mails();
        assert_eq!(mails[0].from, "a@example.com");
        assert_eq!(mails[0].to, vec!["b@example.com"]);
        assert_eq!(
            mails[0].raw_text(),
            "Subject: x\r\n\r\n.leading dot\r\nline\r\n"
        );
    }

    #[tokio::test]
    async fn scripted_failures_are_used_once() {
        let sink = SmtpSink::start().await;
        sink.push(Stage::Rcpt, 550, "5.1.1 no such user");
        let inner = sink.inner.clone();
        assert_eq!(
            scripted(&inner, Stage::Rcpt).await.as_deref(),
            Some("550 5.1.1 no such user")
        );
        assert_eq!(scripted(&inner, Stage::Rcpt).await, None);
    }
}
