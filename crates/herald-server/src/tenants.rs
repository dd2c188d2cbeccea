//! Tenants (Svix: applications): the customers of a platform that runs Herald. A tenant
//! owns destinations (keyed `<tenant id>.<name>`), messages and tokens; a tenant's token
//! sees and acts only inside it. The native API (`/api/v1/tenants`) and the
//! Svix-compatible API (`/api/v1/app`) both go through here.

use crate::auth::Caller;
use crate::state::AppState;
use herald_core::ValidationErrors;
use herald_core::ids::TenantId;
use herald_core::rate_limit::{RateLimit, TokenBucket};
use herald_store::{StoreError, TenantPut, TenantRecord};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// What a tenant is made or replaced from.
#[derive(Debug, Clone, Default)]
pub struct TenantInput {
    pub name: String,
    pub uid: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub rate_limit: Option<u32>,
}

/// Why a tenant could not be made, found or changed.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("{0}")]
    Invalid(ValidationErrors),
    /// Unknown, or not the caller's to see (the same answer: no existence oracle).
    #[error("no tenant {0:?}")]
    NotFound(String),
    #[error("another tenant has the uid {0:?}")]
    UidTaken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The longest name, uid and metadata a tenant takes.
const MAX_NAME: usize = 256;
const MAX_UID: usize = 256;
const MAX_METADATA: usize = 64;

impl TenantInput {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        let name = self.name.trim();
        if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
            errs.push(
                "name",
                format!("1–{MAX_NAME} characters without control characters"),
            );
        }
        if let Some(uid) = &self.uid
            && !valid_uid(uid)
        {
            errs.push(
                "uid",
                format!(
                    "1–{MAX_UID} characters of a-z, A-Z, 0-9, _ . - (and not of the shape app_<32 hex>, which is an id)"
                ),
            );
        }
        if self.metadata.len() > MAX_METADATA
            || self
                .metadata
                .iter()
                .any(|(k, v)| k.is_empty() || k.len() > 256 || v.len() > 1024)
        {
            errs.push(
                "metadata",
                format!(
                    "at most {MAX_METADATA} entries, keys of 1–256 bytes, values of at most 1024"
                ),
            );
        }
        if self.rate_limit == Some(0) {
            errs.push(
                "rate_limit",
                "at least 1 message per second (omit it for none)",
            );
        }
        errs.into_result()
    }
}

fn valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= MAX_UID
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && TenantId::parse(uid).is_none()
}

/// Makes a tenant.
pub async fn create(
    state: &AppState,
    input: TenantInput,
    actor: &str,
) -> Result<TenantRecord, TenantError> {
    input.validate().map_err(TenantError::Invalid)?;
    let now = herald_core::clock::now_ms();
    let t = TenantRecord {
        id: TenantId::new().into_string(),
        uid: input.uid,
        name: input.name.trim().to_string(),
        metadata: input.metadata,
        rate_limit: input.rate_limit,
        created_at: now,
        updated_at: now,
    };
    store_put(state, t, actor).await
}

/// Replaces what `input` gives of a tenant found before.
pub async fn replace(
    state: &AppState,
    existing: TenantRecord,
    input: TenantInput,
    actor: &str,
) -> Result<TenantRecord, TenantError> {
    input.validate().map_err(TenantError::Invalid)?;
    let t = TenantRecord {
        uid: input.uid,
        name: input.name.trim().to_string(),
        metadata: input.metadata,
        rate_limit: input.rate_limit,
        updated_at: herald_core::clock::now_ms(),
        ..existing
    };
    store_put(state, t, actor).await
}

async fn store_put(
    state: &AppState,
    t: TenantRecord,
    actor: &str,
) -> Result<TenantRecord, TenantError> {
    match state.store.put_tenant(t.clone(), actor).await? {
        TenantPut::UidTaken => Err(TenantError::UidTaken(t.uid.unwrap_or_default())),
        TenantPut::Created | TenantPut::Updated => Ok(t),
    }
}

/// A tenant by id or uid, if `caller` may see it; otherwise (or when unknown) `NotFound`.
pub async fn find(
    state: &AppState,
    caller: &Caller,
    id_or_uid: &str,
) -> Result<TenantRecord, TenantError> {
    match state.store.get_tenant(id_or_uid).await? {
        Some(t) if caller.sees_tenant(&t.id) => Ok(t),
        _ => Err(TenantError::NotFound(id_or_uid.to_string())),
    }
}

/// A page of the tenants `caller` sees, by id after `after`; a tenant's token sees only
/// its own.
pub async fn list(
    state: &AppState,
    caller: &Caller,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<TenantRecord>, TenantError> {
    match &caller.tenant {
        Some(own) => Ok(state
            .store
            .get_tenant(own)
            .await?
            .filter(|t| after.is_none_or(|a| t.id.as_str() > a))
            .into_iter()
            .collect()),
        None => Ok(state.store.list_tenants(after, limit).await?),
    }
}

/// Deletes a tenant with its destinations, and drops them from the cache.
pub async fn delete(state: &AppState, t: &TenantRecord, actor: &str) -> Result<(), TenantError> {
    let now = herald_core::clock::now_ms();
    if !state.store.delete_tenant(&t.id, actor, now).await? {
        return Err(TenantError::NotFound(t.id.clone()));
    }
    for e in state.destinations.of_tenant(Some(&t.id)) {
        state.destinations.remove(&e.name);
    }
    Ok(())
}

/// A portal access link: a token confined to the tenant, good for `ttl`, and the URL
/// that turns it into a portal session. Audited (`token.created`); revoking the token
/// (`DELETE /tokens/{id}`) ends the sessions it opened.
pub struct PortalAccess {
    pub url: String,
    pub token: String,
    pub token_id: String,
    pub expires_at: i64,
}

pub async fn portal_access(
    state: &AppState,
    t: &TenantRecord,
    actor: &str,
    base_url: &str,
) -> Result<PortalAccess, TenantError> {
    let now = herald_core::clock::now_ms();
    let ttl = state.config.portal.access_ttl.0.as_millis() as i64;
    let mut made = crate::auth::new_token("portal", &[crate::auth::Scope::Admin], Some(&t.id), now);
    made.record.expires_at = Some(now + ttl);
    state.store.create_token(made.record.clone(), actor).await?;
    let base = state
        .config
        .portal
        .public_url
        .as_deref()
        .unwrap_or(base_url)
        .trim_end_matches('/');
    Ok(PortalAccess {
        url: format!("{base}/portal/access?token={}", made.token),
        token: made.token,
        token_id: made.record.id,
        expires_at: now + ttl,
    })
}

/// The base URL a request was made to (`Host`, or what a proxy reports), for links.
pub fn base_url_of(headers: &axum::http::HeaderMap) -> String {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    let host = get("x-forwarded-host")
        .or_else(|| get("host"))
        .unwrap_or("127.0.0.1:8080");
    let scheme = get("x-forwarded-proto").unwrap_or("http");
    format!("{scheme}://{host}")
}

/// Tenants' message quotas (`rate_limit`, messages per second with a burst of as many),
/// kept by this node: on top of each destination's limit, which holds cluster-wide.
#[derive(Default)]
pub struct Quotas {
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

/// More tenants than this with a quota in use at once, and the buckets start over full
/// (memory stays bounded; a tenant gains at most one burst).
const MAX_BUCKETS: usize = 100_000;

impl Quotas {
    /// Takes one message from the tenant's quota, or says when the next one fits (epoch
    /// ms). Tenants without a quota always pass.
    pub fn admit(&self, t: &TenantRecord, now: i64) -> Result<(), i64> {
        let Some(rate) = t.rate_limit.filter(|r| *r > 0) else {
            return Ok(());
        };
        let limit = RateLimit {
            per_ms: f64::from(rate) / 1000.0,
            burst: f64::from(rate),
        };
        let mut buckets = self.buckets.lock().expect("quota lock");
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&t.id) {
            buckets.clear();
        }
        let bucket = buckets
            .entry(t.id.clone())
            .or_insert_with(|| TokenBucket::full(&limit, now));
        if bucket.available(&limit, now) >= 1 {
            bucket.take(&limit, 1, now);
            Ok(())
        } else {
            Err(bucket.next_token_at(&limit).max(now + 1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_checked_field_by_field() {
        let ok = TenantInput {
            name: "Acme".into(),
            uid: Some("acme-1".into()),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        let bad = TenantInput {
            name: " ".into(),
            uid: Some(TenantId::new().into_string()),
            rate_limit: Some(0),
            ..Default::default()
        };
        let errs = bad.validate().unwrap_err();
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "uid", "rate_limit"]);
    }

    #[test]
    fn a_quota_admits_its_rate_and_says_when_the_next_fits() {
        let q = Quotas::default();
        let t = TenantRecord {
            id: "app_1".into(),
            uid: None,
            name: "t".into(),
            metadata: BTreeMap::new(),
            rate_limit: Some(2),
            created_at: 0,
            updated_at: 0,
        };
        assert!(q.admit(&t, 1_000).is_ok() && q.admit(&t, 1_000).is_ok());
        let next = q.admit(&t, 1_000).unwrap_err();
        assert!(next > 1_000 && next <= 1_500, "{next}");
        assert!(q.admit(&t, 1_500).is_ok(), "refilled");
        let free = TenantRecord {
            rate_limit: None,
            ..t
        };
        assert!((0..100).all(|_| q.admit(&free, 1_000).is_ok()));
    }
}
