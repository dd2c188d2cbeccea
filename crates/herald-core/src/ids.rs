//! Identifiers: a short type prefix and a UUIDv7 (time-ordered, so ids sort by creation and
//! serve as stable paging cursors).

use uuid::Uuid;

pub const MESSAGE: &str = "msg";
pub const DELIVERY: &str = "dlv";
pub const TOKEN: &str = "tok";

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
    fn ids_round_trip_and_sort_by_time() {
        let a = new_id(MESSAGE);
        let b = new_id(MESSAGE);
        assert!(is_valid(MESSAGE, &a));
        assert!(!is_valid(DELIVERY, &a));
        assert!(a < b);
        assert!(!is_valid(MESSAGE, "msg_xyz"));
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
