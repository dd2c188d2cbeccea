//! Identifiers: a short type prefix and a UUIDv7 (time-ordered, so ids sort by creation and
//! serve as stable paging cursors).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const MESSAGE: &str = "msg";
pub const DELIVERY: &str = "dlv";
pub const TOKEN: &str = "tok";
pub const ERROR_GROUP: &str = "grp";
pub const LEASE: &str = "lease";
/// Tenants share Svix's prefix for applications; their endpoints (destinations made
/// through the Svix-compatible API) Svix's for endpoints.
pub const TENANT: &str = "app";
pub const ENDPOINT: &str = "ep";

/// A newtype per kind of id: a delivery id cannot be passed where a message id is meant,
/// and an id from outside (a URL path) becomes one only through [`parse`](MessageId::parse).
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh, time-ordered id.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                $name(new_id($prefix))
            }

            /// `s` as this kind of id, if it has its shape (prefix and 32 hex digits).
            pub fn parse(s: &str) -> Option<Self> {
                is_valid($prefix, s).then(|| $name(s.to_string()))
            }

            /// An id as the store keeps it: made by [`new`](Self::new) when it was written,
            /// so it is not checked again on the way back.
            pub fn stored(s: String) -> Self {
                $name(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// Hashes and compares as its text, so maps keyed by the id can be read with a `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

id_type!(
    /// `msg_…`: one accepted message.
    MessageId,
    MESSAGE
);
id_type!(
    /// `dlv_…`: one message's delivery to one destination.
    DeliveryId,
    DELIVERY
);
id_type!(
    /// `grp_…`: an error group.
    ErrorGroupId,
    ERROR_GROUP
);
id_type!(
    /// `app_…`: a tenant (a Svix application).
    TenantId,
    TENANT
);
id_type!(
    /// `lease_…`: one claim's (or one accept's) lease; a finish must present it.
    LeaseToken,
    LEASE
);

/// 32 hex digits, unique and time-ordered, for a name that is not an id (a multipart
/// boundary, say).
pub fn unique_hex() -> String {
    Uuid::now_v7().simple().to_string()
}

/// A fresh id such as `msg_0192f3c4a1b27c3d8e9f00112233aabb`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::now_v7().simple())
}

/// Whether `s` has the shape of an id made by [`new_id`] with this prefix.
pub fn is_valid(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Separates a tenant's id from a destination's name in the destination's key
/// (`app_….orders`): never part of a name, so the operator's names (no separator) and each
/// tenant's keys never meet.
pub const TENANT_SEPARATOR: char = '.';

/// The key a destination is stored and routed under: its name, prefixed with its tenant's
/// id when it belongs to one.
pub fn destination_key(tenant: Option<&str>, name: &str) -> String {
    match tenant {
        Some(t) => format!("{t}{TENANT_SEPARATOR}{name}"),
        None => name.to_string(),
    }
}

/// A destination key's tenant (if any) and name.
pub fn split_destination_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once(TENANT_SEPARATOR) {
        Some((t, n)) => (Some(t), n),
        None => (None, key),
    }
}

/// Whether `s` is a valid destination name: `[a-z0-9][a-z0-9_-]{0,63}`.
pub fn is_valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_keys_keep_tenants_apart() {
        let t = TenantId::new();
        let key = destination_key(Some(t.as_str()), "orders");
        assert_eq!(split_destination_key(&key), (Some(t.as_str()), "orders"));
        assert_eq!(split_destination_key("orders"), (None, "orders"));
        assert!(!is_valid_name(&key), "a key is never an operator's name");
    }

    #[test]
    fn ids_round_trip_and_sort_by_time() {
        let a = new_id(MESSAGE);
        let b = new_id(MESSAGE);
        assert!(is_valid(MESSAGE, &a));
        assert!(!is_valid(DELIVERY, &a));
        assert!(a < b);
        assert!(!is_valid(MESSAGE, "msg_xyz"));
    }

    #[test]
    fn typed_ids_take_only_their_own_prefix() {
        let m = MessageId::new();
        assert!(m.as_str().starts_with("msg_"));
        assert_eq!(MessageId::parse(m.as_str()), Some(m.clone()));
        assert_eq!(DeliveryId::parse(m.as_str()), None);
        assert_eq!(LeaseToken::parse("lease_xyz"), None);
        assert!(LeaseToken::new() < LeaseToken::new());
        assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));
        assert_eq!(unique_hex().len(), 32);
    }

    #[test]
    fn names() {
        assert!(is_valid_name("ops-email"));
        assert!(is_valid_name("0rise_bot"));
        assert!(!is_valid_name("-x"));
        assert!(!is_valid_name("Ops"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name(&"a".repeat(65)));
    }
}
