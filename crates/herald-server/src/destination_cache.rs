//! The destination cache: every destination decrypted in memory with its live dispatch
//! state, for routing and dispatching. It knows nothing of the server around it.

use herald_core::breaker::Breaker;
use herald_core::crypto::SecretBox;
use herald_core::destination::DestinationSpec;
use herald_core::ids::{TENANT_SEPARATOR, destination_key, split_destination_key};
use herald_store::{DestinationRow, DestinationState, Store};
use std::collections::BTreeMap;
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
    /// The last claim round got fewer deliveries than it asked for because the rate limit
    /// ran out (what `waiting` tells a pending delivery).
    rate_limited: AtomicBool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl DestinationEntry {
    pub(crate) fn from_row(row: DestinationRow, secrets: &SecretBox) -> Result<Self, String> {
        let plain = secrets
            .open(&row.sealed_spec)
            .map_err(|e| format!("destination {}: {e}", row.name))?;
        let spec: DestinationSpec = serde_json::from_slice(&plain)
            .map_err(|e| format!("destination {}: stored settings unreadable: {e}", row.name))?;
        let breaker = Breaker::from_stored(row.breaker.as_deref());
        Ok(DestinationEntry {
            name: row.name,
            spec,
            breaker: Mutex::new(breaker),
            enabled: AtomicBool::new(row.enabled),
            disabled_reason: RwLock::new(row.disabled_reason),
            paused_until: AtomicI64::new(row.paused_until.unwrap_or(0)),
            rate_limited: AtomicBool::new(false),
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

    pub fn rate_limited(&self) -> bool {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// What the last claim round found: whether the rate limit held deliveries back.
    pub fn set_rate_limited(&self, limited: bool) {
        self.rate_limited.store(limited, Ordering::Relaxed);
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
        *self.breaker.lock().expect("breaker lock") = Breaker::from_stored(stored);
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

type Map = BTreeMap<String, Arc<DestinationEntry>>;

/// Every destination, decrypted, by key: the operator's and the tenants' apart, so routing
/// an operator's message never walks the tenants' destinations, and a tenant's are one
/// range of keys (`<tenant>.`…).
#[derive(Default)]
pub struct DestinationCache {
    map: RwLock<Maps>,
}

#[derive(Default)]
struct Maps {
    operator: Map,
    tenants: Map,
}

impl Maps {
    fn of(&mut self, key: &str) -> &mut Map {
        if split_destination_key(key).0.is_some() {
            &mut self.tenants
        } else {
            &mut self.operator
        }
    }
}

impl DestinationCache {
    /// Replaces the cache with what the store holds.
    pub async fn reload(&self, store: &dyn Store, secrets: &SecretBox) -> Result<(), String> {
        let rows = store.list_destinations().await.map_err(|e| e.to_string())?;
        let mut maps = Maps::default();
        for row in rows {
            let e = DestinationEntry::from_row(row, secrets)?;
            maps.of(&e.name).insert(e.name.clone(), Arc::new(e));
        }
        *self.map.write().expect("destination cache lock") = maps;
        Ok(())
    }

    /// A destination by key.
    pub fn get(&self, key: &str) -> Option<Arc<DestinationEntry>> {
        let maps = self.map.read().expect("destination cache lock");
        if split_destination_key(key).0.is_some() {
            maps.tenants.get(key).cloned()
        } else {
            maps.operator.get(key).cloned()
        }
    }

    /// Every destination, the operator's and every tenant's, sorted by key.
    pub fn all(&self) -> Vec<Arc<DestinationEntry>> {
        let maps = self.map.read().expect("destination cache lock");
        let mut v: Vec<_> = maps
            .operator
            .values()
            .chain(maps.tenants.values())
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// One tenant's destinations (`None`: the operator's), sorted by key.
    pub fn of_tenant(&self, tenant: Option<&str>) -> Vec<Arc<DestinationEntry>> {
        let maps = self.map.read().expect("destination cache lock");
        match tenant {
            None => maps.operator.values().cloned().collect(),
            Some(t) => {
                let from = destination_key(Some(t), "");
                let to = format!("{t}{}", (TENANT_SEPARATOR as u8 + 1) as char);
                maps.tenants
                    .range::<str, _>((
                        std::ops::Bound::Included(from.as_str()),
                        std::ops::Bound::Excluded(to.as_str()),
                    ))
                    .map(|(_, e)| e.clone())
                    .collect()
            }
        }
    }

    pub(crate) fn insert(&self, e: DestinationEntry) -> Arc<DestinationEntry> {
        let e = Arc::new(e);
        self.map
            .write()
            .expect("destination cache lock")
            .of(&e.name)
            .insert(e.name.clone(), e.clone());
        e
    }

    pub(crate) fn remove(&self, key: &str) {
        self.map
            .write()
            .expect("destination cache lock")
            .of(key)
            .remove(key);
    }
}
