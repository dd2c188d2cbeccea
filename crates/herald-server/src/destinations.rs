//! Destinations as the server holds them: validated, sealed at rest, and cached decrypted
//! in memory for routing and dispatching.

use crate::api::problem::ApiError;
use crate::state::AppState;
use herald_core::breaker::Breaker;
use herald_core::crypto::SecretBox;
use herald_core::destination::{DestinationSpec, KindSpec};
use herald_store::{DestinationRow, DestinationState, Store, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// A destination ready to use, with its live dispatch state.
#[derive(Debug)]
pub struct DestinationEntry {
    pub name: String,
    pub spec: DestinationSpec,
    /// The circuit breaker as last read from or written to the store (the stored state is
    /// the truth, shared by every node; this copy is refreshed at every claim).
    pub breaker: Mutex<Breaker>,
    enabled: AtomicBool,
    disabled_reason: RwLock<Option<String>>,
    /// Epoch ms until which no attempt is made (Retry-After); 0 when not paused.
    paused_until: AtomicI64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl DestinationEntry {
    fn from_row(row: DestinationRow, secrets: &SecretBox) -> Result<Self, String> {
        let plain = secrets
            .open(&row.sealed_spec)
            .map_err(|e| format!("destination {}: {e}", row.name))?;
        let spec: DestinationSpec = serde_json::from_slice(&plain)
            .map_err(|e| format!("destination {}: stored settings unreadable: {e}", row.name))?;
        let breaker = row
            .breaker
            .as_deref()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or_default();
        Ok(DestinationEntry {
            name: row.name,
            spec,
            breaker: Mutex::new(breaker),
            enabled: AtomicBool::new(row.enabled),
            disabled_reason: RwLock::new(row.disabled_reason),
            paused_until: AtomicI64::new(row.paused_until.unwrap_or(0)),
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn disabled_reason(&self) -> Option<String> {
        self.disabled_reason
            .read()
            .expect("destination lock")
            .clone()
    }

    pub fn paused_until(&self) -> Option<i64> {
        Some(self.paused_until.load(Ordering::Relaxed)).filter(|p| *p > 0)
    }

    pub fn is_paused(&self, now: i64) -> bool {
        self.paused_until.load(Ordering::Relaxed) > now
    }

    pub fn pause_until(&self, until: i64) {
        self.paused_until.fetch_max(until, Ordering::Relaxed);
    }

    /// Takes on the shared state the store holds (what other nodes decided).
    pub fn observe(&self, state: &DestinationState) {
        if state.enabled != self.enabled() {
            self.enabled.store(state.enabled, Ordering::Relaxed);
            *self.disabled_reason.write().expect("destination lock") =
                state.disabled_reason.clone();
        }
        if let Some(p) = state.paused_until {
            self.pause_until(p);
        }
        self.set_breaker(state.breaker.as_deref());
    }

    /// Replaces the breaker copy with a stored state (JSON); `None` is closed.
    pub fn set_breaker(&self, stored: Option<&str>) {
        let b = stored
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        *self.breaker.lock().expect("breaker lock") = b;
    }

    pub fn disable(&self, reason: String) {
        self.enabled.store(false, Ordering::Relaxed);
        *self.disabled_reason.write().expect("destination lock") = Some(reason);
    }

    /// The spec as shown on read, `enabled` as it is now: how much of it depends on who
    /// reads ([`Exposure`]).
    pub fn public_spec(&self, exposure: Exposure) -> DestinationSpec {
        let mut s = match exposure {
            Exposure::Nothing => self.spec.masked_all(),
            Exposure::Settings => self.spec.masked(),
            Exposure::Secrets => self.spec.clone(),
        };
        s.name = Some(self.name.clone());
        s.enabled = self.enabled();
        s
    }
}

/// How much of a destination a reader sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// `read` tokens: no secret, and nothing that could be one (header values, URL paths,
    /// queries and user-info).
    Nothing,
    /// Admins: the settings, inline secrets masked.
    Settings,
    /// Admins who asked with `?reveal=true` (audited): the stored secrets themselves.
    Secrets,
}

impl Exposure {
    /// What `caller` sees of destinations, without asking to reveal.
    pub fn for_caller(caller: &crate::auth::Caller) -> Self {
        if caller.can(crate::auth::Scope::Admin) {
            Exposure::Settings
        } else {
            Exposure::Nothing
        }
    }
}

/// Every destination, decrypted, by name.
#[derive(Default)]
pub struct DestinationCache {
    map: RwLock<HashMap<String, Arc<DestinationEntry>>>,
}

impl DestinationCache {
    /// Replaces the cache with what the store holds.
    pub async fn reload(&self, store: &dyn Store, secrets: &SecretBox) -> Result<(), String> {
        let rows = store.list_destinations().await.map_err(|e| e.to_string())?;
        let mut map = HashMap::with_capacity(rows.len());
        for row in rows {
            let e = DestinationEntry::from_row(row, secrets)?;
            map.insert(e.name.clone(), Arc::new(e));
        }
        *self.map.write().expect("destination cache lock") = map;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<Arc<DestinationEntry>> {
        self.map
            .read()
            .expect("destination cache lock")
            .get(name)
            .cloned()
    }

    /// All destinations, sorted by name.
    pub fn all(&self) -> Vec<Arc<DestinationEntry>> {
        let mut v: Vec<_> = self
            .map
            .read()
            .expect("destination cache lock")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn insert(&self, e: DestinationEntry) -> Arc<DestinationEntry> {
        let e = Arc::new(e);
        self.map
            .write()
            .expect("destination cache lock")
            .insert(e.name.clone(), e.clone());
        e
    }

    fn remove(&self, name: &str) {
        self.map
            .write()
            .expect("destination cache lock")
            .remove(name);
    }
}

/// The result of a put.
pub struct PutOutcome {
    pub created: bool,
    pub entry: Arc<DestinationEntry>,
    /// A webhook secret generated for this destination, shown once.
    pub generated_secret: Option<String>,
    /// What will go wrong at the first attempt although the settings are valid (an
    /// address the SSRF guard blocks), one line per field.
    pub warnings: Vec<String>,
}

/// Addresses of `spec` that the SSRF guard would refuse, as `field: why`.
fn blocked_addresses(state: &AppState, name: &str, spec: &DestinationSpec) -> Vec<String> {
    let warnings: Vec<String> = spec
        .kind
        .outbound_urls()
        .into_iter()
        .filter_map(|(field, url)| {
            state
                .channels
                .http
                .would_block(url)
                .map(|why| format!("{field}: {why}"))
        })
        .collect();
    for w in &warnings {
        tracing::warn!(destination = %name, warning = %w, "destination saved with an address the SSRF guard blocks");
    }
    warnings
}

/// Validates and stores a destination, then refreshes the cache and wakes the dispatcher.
pub async fn put(
    state: &AppState,
    name: &str,
    mut spec: DestinationSpec,
    actor: &str,
) -> Result<PutOutcome, ApiError> {
    spec.validate(name, &state.channels.templates)
        .map_err(ApiError::Validation)?;
    check_fallback(state, name, &spec)?;
    herald_channels::secrets::check_kind(&spec.kind, &state.channels.secrets)
        .map_err(|(field, why)| ApiError::field(&field, why))?;
    let warnings = blocked_addresses(state, name, &spec);
    let generated_secret = spec.complete();
    spec.name = None;
    let now = herald_core::clock::now_ms();
    let created_at = state
        .destinations
        .get(name)
        .map(|e| e.created_at)
        .unwrap_or(now);
    let json = serde_json::to_vec(&spec).map_err(|e| ApiError::Internal(e.to_string()))?;
    let row = DestinationRow {
        name: name.to_string(),
        kind: spec.kind.name().to_string(),
        sealed_spec: state.secrets.seal(&json),
        enabled: spec.enabled,
        disabled_reason: None,
        paused_until: None,
        breaker: None,
        failing_since: None,
        last_success_at: None,
        created_at,
        updated_at: now,
    };
    let created = state.store.put_destination(row.clone(), actor).await?;
    // Re-read: the row keeps its live state (pause, breaker) across a replace.
    let stored = state.store.get_destination(name).await?.unwrap_or(row);
    let entry = DestinationEntry::from_row(stored, &state.secrets).map_err(ApiError::Internal)?;
    let entry = state.destinations.insert(entry);
    state.dispatch.dispatcher.wake();
    Ok(PutOutcome {
        created,
        entry,
        generated_secret,
        warnings,
    })
}

/// The fallback must exist and the chain it starts must not come back to `name`.
fn check_fallback(state: &AppState, name: &str, spec: &DestinationSpec) -> Result<(), ApiError> {
    let Some(f) = &spec.fallback else {
        return Ok(());
    };
    let mut chain = vec![name.to_string()];
    let mut next = Some(f.destination.clone());
    while let Some(d) = next {
        if chain.contains(&d) {
            chain.push(d);
            return Err(ApiError::field(
                "fallback.destination",
                format!("fallback cycle: {}", chain.join(" → ")),
            ));
        }
        let entry = state.destinations.get(&d).ok_or_else(|| {
            ApiError::field(
                "fallback.destination",
                format!("no destination {d:?} (create the fallback first)"),
            )
        })?;
        chain.push(d);
        next = entry.spec.fallback.as_ref().map(|f| f.destination.clone());
    }
    Ok(())
}

/// Destinations whose fallback is `name`.
pub fn fallback_referrers(state: &AppState, name: &str) -> Vec<String> {
    state
        .destinations
        .all()
        .iter()
        .filter(|e| {
            e.spec
                .fallback
                .as_ref()
                .is_some_and(|f| f.destination == name)
        })
        .map(|e| e.name.clone())
        .collect()
}

/// Re-enables a destination and refreshes its cached state.
pub async fn enable(state: &AppState, name: &str, actor: &str) -> Result<bool, ApiError> {
    if !state
        .store
        .enable_destination(name, actor, herald_core::clock::now_ms())
        .await?
    {
        return Ok(false);
    }
    if let Some(row) = state.store.get_destination(name).await? {
        state
            .destinations
            .insert(DestinationEntry::from_row(row, &state.secrets).map_err(ApiError::Internal)?);
    }
    state.dispatch.dispatcher.wake();
    Ok(true)
}

/// Deletes a destination (its unfinished deliveries are discarded).
pub async fn delete(state: &AppState, name: &str, actor: &str) -> Result<bool, StoreError> {
    let deleted = state
        .store
        .delete_destination(name, actor, herald_core::clock::now_ms())
        .await?;
    if deleted {
        state.destinations.remove(name);
    }
    Ok(deleted)
}

/// Applies the destinations declared in the configuration file, writing only those that
/// changed.
pub async fn apply_config(state: &AppState) -> Result<(), String> {
    // A destination is applied after the one it falls back to.
    let mut order: Vec<&String> = Vec::new();
    let declared = &state.config.destinations;
    while order.len() < declared.len() {
        let before = order.len();
        for (name, spec) in declared {
            let ready = spec.fallback.as_ref().is_none_or(|f| {
                !declared.contains_key(&f.destination) || order.contains(&&f.destination)
            });
            if !order.contains(&name) && ready {
                order.push(name);
            }
        }
        if order.len() == before {
            return Err("destinations in the configuration form a fallback cycle".into());
        }
    }
    for name in order {
        let spec = &declared[name];
        let mut spec = spec.clone();
        spec.name = None;
        let existing = state.destinations.get(name);
        // A secret generated on an earlier start is kept, not generated anew.
        if let (KindSpec::Webhook(w), Some(e)) = (&mut spec.kind, &existing)
            && let (None, KindSpec::Webhook(old)) = (&w.secret, &e.spec.kind)
        {
            w.secret = old.secret.clone();
        }
        if existing.is_some_and(|e| e.spec == spec) {
            continue;
        }
        put(state, name, spec, "config")
            .await
            .map_err(|e| match e {
                ApiError::Validation(v) => format!("destination {name}: {}", v.summary()),
                other => format!("destination {name}: {other}"),
            })?;
    }
    Ok(())
}
