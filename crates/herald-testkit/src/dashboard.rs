//! A browser-like client of the dashboard (`/ui`): signs in with a token, keeps the session
//! cookie, reads the CSRF token from pages and posts forms as a same-origin page would.

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};

pub struct Dashboard {
    pub base: String,
    pub http: reqwest::Client,
    /// `herald_session=…`, once signed in.
    pub cookie: Option<String>,
    /// The raw `Set-Cookie` of the sign-in answer.
    pub set_cookie: Option<String>,
}

/// An answer: status, `Location` and body.
pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
}

impl Page {
    /// The value of the first `name="csrf"` hidden field.
    pub fn csrf(&self) -> Option<String> {
        let at = self.body.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
        let rest = &self.body[at..];
        Some(rest[..rest.find('"')?].to_string())
    }
}

fn form_body(fields: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(fields).expect("form fields encode")
}

impl Dashboard {
    /// A client that does not follow redirects (tests look at them).
    pub fn new(base: &str) -> Self {
        Dashboard {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http client"),
            cookie: None,
            set_cookie: None,
        }
    }

    /// Posts the sign-in form; on success keeps the session cookie.
    pub async fn sign_in(&mut self, token: &str) -> Page {
        let resp = self
            .http
            .post(format!("{}/ui/signin", self.base))
            .header(ORIGIN, &self.base)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&[("token", token)]))
            .send()
            .await
            .expect("herald answers");
        if let Some(c) = resp.headers().get(SET_COOKIE).and_then(|v| v.to_str().ok()) {
            self.set_cookie = Some(c.to_string());
            self.cookie = c.split(';').next().map(str::to_string);
        }
        Self::page(resp).await
    }

    async fn page(resp: reqwest::Response) -> Page {
        Page {
            status: resp.status(),
            location: resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: resp.text().await.unwrap_or_default(),
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header(COOKIE, c);
        }
        Self::page(req.send().await.expect("herald answers")).await
    }

    /// Posts a form with the session cookie and the given `Origin` (None: no header).
    pub async fn post_from(
        &self,
        origin: Option<&str>,
        path: &str,
        fields: &[(&str, &str)],
    ) -> Page {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(fields));
        if let Some(c) = &self.cookie {
            req = req.header(COOKIE, c);
        }
        if let Some(o) = origin {
            req = req.header(ORIGIN, o);
        }
        Self::page(req.send().await.expect("herald answers")).await
    }

    /// Posts a form as a page of this Herald would.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.post_from(Some(&self.base.clone()), path, fields).await
    }
}
