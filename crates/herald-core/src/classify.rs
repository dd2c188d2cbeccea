//! How an HTTP answer is classified (DESIGN §5). Channels refine this per provider.

/// What to do after an HTTP answer with this status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 2xx.
    Delivered,
    /// 408, 425, 429, 5xx: try again later.
    Retry,
    /// 410: the receiver is gone for good; dead-letter and disable the destination.
    Gone,
    /// Every other 3xx/4xx (redirects are never followed): dead-letter now.
    Permanent,
}

pub fn classify_status(status: u16) -> StatusClass {
    match status {
        200..=299 => StatusClass::Delivered,
        408 | 425 | 429 | 500..=599 => StatusClass::Retry,
        410 => StatusClass::Gone,
        _ => StatusClass::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert_eq!(classify_status(200), StatusClass::Delivered);
        assert_eq!(classify_status(204), StatusClass::Delivered);
        for s in [408, 425, 429, 500, 502, 503, 599] {
            assert_eq!(classify_status(s), StatusClass::Retry, "{s}");
        }
        assert_eq!(classify_status(410), StatusClass::Gone);
        for s in [301, 302, 400, 401, 403, 404, 409, 422] {
            assert_eq!(classify_status(s), StatusClass::Permanent, "{s}");
        }
    }
}
