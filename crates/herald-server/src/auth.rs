//! API tokens: `hrld_<id>_<secret>`, URL-safe so they fit in a Sentry-style DSN. Only a
//! SHA-256 of the secret is stored; verification looks the token up by id and compares the
//! hashes in constant time. Scopes: `send`, `read`, `admin` (admin implies the others).

use herald_store::{Store, StoreError, TokenRecord};
use rand::Rng;
use rand::distributions::Alphanumeric;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

const PREFIX: &str = "hrld_";
const ID_LEN: usize = 12;
const SECRET_LEN: usize = 32;
/// How long a verified token is trusted before the store is asked again (revocation on
/// another node takes effect within this time; on this node at once).
const CACHE_TTL: Duration = Duration::from_secs(10);

pub use herald_core::scope::Scope;

/// Who is calling, after authentication.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: Option<String>,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// The one tenant a tenant's token sees and acts in (`None`: the operator's token).
    pub tenant: Option<String>,
}

impl Caller {
    pub fn can(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }

    /// The check of the operator's routes: the scope, and a token that is not a tenant's.
    /// A tenant's token is told the route does not exist for it (404), so it learns
    /// nothing of what lies outside its tenant.
    pub fn require(&self, scope: Scope) -> Result<(), AuthError> {
        if self.tenant.is_some() {
            return Err(AuthError::OutsideTenant);
        }
        self.require_scope(scope)
    }

    /// The check of routes that keep a tenant's token inside its tenant (the
    /// Svix-compatible API, `/tenants/{id}`): the scope only.
    pub fn require_scope(&self, scope: Scope) -> Result<(), AuthError> {
        if self.can(scope) {
            Ok(())
        } else {
            Err(AuthError::MissingScope(scope))
        }
    }

    /// Whether this caller may see the tenant `id` (the operator sees every tenant).
    pub fn sees_tenant(&self, id: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == id)
    }

    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        match &self.token_id {
            Some(id) => format!("token:{}:{id}", self.name),
            None => format!("token:{}", self.name),
        }
    }
}

/// Why a caller was turned away.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no token given")]
    NoToken,
    #[error("the token is not valid")]
    Invalid,
    #[error("this token lacks the `{}` scope", .0.as_str())]
    MissingScope(Scope),
    #[error("no such route for a tenant's token")]
    OutsideTenant,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A newly made token: the full secret is shown once.
pub struct NewToken {
    pub record: TokenRecord,
    pub token: String,
}

fn random(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Makes a token record and its secret.
pub fn new_token(name: &str, scopes: &[Scope], tenant: Option<&str>, now: i64) -> NewToken {
    let id = random(ID_LEN).to_ascii_lowercase();
    let secret = random(SECRET_LEN);
    NewToken {
        token: format!("{PREFIX}{id}_{secret}"),
        record: TokenRecord {
            id,
            name: name.to_string(),
            hash: hash_secret(&secret),
            scopes: scopes.to_vec(),
            created_at: now,
            last_used_at: None,
            revoked_at: None,
            tenant: tenant.map(str::to_string),
            expires_at: None,
        },
    }
}

/// Why a token cannot be made as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRequestError {
    #[error("1–128 characters without control characters")]
    Name,
    #[error("give at least one of send, read, admin")]
    NoScope,
}

impl TokenRequestError {
    /// The request field at fault.
    pub fn field(self) -> &'static str {
        match self {
            TokenRequestError::Name => "name",
            TokenRequestError::NoScope => "scopes",
        }
    }
}

/// A token named `name` (trimmed) with `scopes` (sorted, each once): the one rule the API
/// and the offline `herald tokens create` share.
pub fn make_token(
    name: &str,
    mut scopes: Vec<Scope>,
    tenant: Option<&str>,
    now: i64,
) -> Result<NewToken, TokenRequestError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(TokenRequestError::Name);
    }
    if scopes.is_empty() {
        return Err(TokenRequestError::NoScope);
    }
    scopes.sort_by_key(|s| s.as_str());
    scopes.dedup();
    Ok(new_token(name, &scopes, tenant, now))
}

/// Splits `hrld_<id>_<secret>`.
fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == ID_LEN && !secret.is_empty()).then_some((id, secret))
}

/// Verifies bearer tokens, with a short cache and batched last-used updates.
pub struct Authenticator {
    admin_token: Option<String>,
    cache: Mutex<HashMap<String, (TokenRecord, Instant)>>,
    last_used: Mutex<HashMap<String, i64>>,
}

impl Authenticator {
    pub fn new(admin_token: Option<String>) -> Self {
        Authenticator {
            admin_token,
            cache: Mutex::new(HashMap::new()),
            last_used: Mutex::new(HashMap::new()),
        }
    }

    /// The one token check every route uses (API, dashboard sign-in, Sentry and Apprise
    /// keys). An empty key is refused before anything is compared.
    pub async fn authenticate(&self, store: &dyn Store, token: &str) -> Result<Caller, AuthError> {
        if token.is_empty() {
            return Err(AuthError::NoToken);
        }
        if let Some(admin) = self.admin_token.as_ref().filter(|a| !a.is_empty())
            && bool::from(admin.as_bytes().ct_eq(token.as_bytes()))
        {
            return Ok(Caller {
                token_id: None,
                name: "admin".into(),
                scopes: vec![Scope::Admin],
                tenant: None,
            });
        }
        let (id, secret) = split_token(token).ok_or(AuthError::Invalid)?;
        let cached = self
            .cache
            .lock()
            .expect("auth cache lock")
            .get(id)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(r, _)| r.clone());
        let record = match cached {
            Some(r) => r,
            None => {
                let r = store.get_token(id).await?.ok_or(AuthError::Invalid)?;
                self.cache
                    .lock()
                    .expect("auth cache lock")
                    .insert(id.to_string(), (r.clone(), Instant::now()));
                r
            }
        };
        let presented = hash_secret(secret);
        if !bool::from(presented.as_bytes().ct_eq(record.hash.as_bytes()))
            || record.revoked_at.is_some()
            || record
                .expires_at
                .is_some_and(|e| e <= herald_core::clock::now_ms())
        {
            return Err(AuthError::Invalid);
        }
        self.last_used
            .lock()
            .expect("auth last-used lock")
            .insert(record.id.clone(), herald_core::clock::now_ms());
        Ok(Caller {
            token_id: Some(record.id),
            name: record.name,
            scopes: record.scopes,
            tenant: record.tenant,
        })
    }

    /// Forgets every cached token (another node revoked one).
    pub fn forget_all(&self) {
        self.cache.lock().expect("auth cache lock").clear();
    }

    /// Forgets a token at once (after revocation).
    pub fn forget(&self, id: &str) {
        self.cache.lock().expect("auth cache lock").remove(id);
    }

    /// Writes last-used times gathered since the previous flush.
    pub async fn flush_last_used(&self, store: &dyn Store) {
        let used: Vec<(String, i64)> =
            std::mem::take(&mut *self.last_used.lock().expect("auth last-used lock"))
                .into_iter()
                .collect();
        if !used.is_empty()
            && let Err(e) = store.touch_tokens(used).await
        {
            tracing::warn!(error = %e, "could not record token use");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_documented_shape() {
        let t = new_token("ci", &[Scope::Send], None, 0);
        assert!(t.token.starts_with("hrld_"));
        assert!(
            t.token[5..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        );
        let (id, secret) = split_token(&t.token).unwrap();
        assert_eq!(id, t.record.id);
        assert_eq!(hash_secret(secret), t.record.hash);
        assert!(split_token("hrld_short_x").is_none());
        assert!(split_token("Bearer x").is_none());
    }

    #[test]
    fn admin_implies_every_scope() {
        let c = Caller {
            token_id: None,
            name: "a".into(),
            scopes: vec![Scope::Admin],
            tenant: None,
        };
        assert!(c.can(Scope::Send) && c.can(Scope::Read));
        let r = Caller {
            token_id: None,
            name: "r".into(),
            scopes: vec![Scope::Read],
            tenant: None,
        };
        assert!(r.require(Scope::Send).is_err());
        let t = Caller {
            tenant: Some("app_1".into()),
            scopes: vec![Scope::Admin],
            ..r
        };
        assert!(matches!(
            t.require(Scope::Read),
            Err(AuthError::OutsideTenant)
        ));
        assert!(t.require_scope(Scope::Admin).is_ok());
        assert!(t.sees_tenant("app_1") && !t.sees_tenant("app_2"));
    }
}
