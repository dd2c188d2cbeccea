//! Submitted → delivered, on the client's clock: the instant each message was submitted
//! (before its request was sent) against the instant the sink first saw its `webhook-id`.

use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::time::Instant;

/// What happened to a set of submitted messages at the sink.
pub struct Delivered {
    /// Submitted → delivered of each delivered message, µs.
    pub latency: Histogram<u64>,
    pub submitted: usize,
    pub delivered: usize,
    /// When each delivered message arrived, in order.
    arrivals: Vec<Instant>,
}

impl Delivered {
    /// Matches `(message id, submitted at)` against the sink's first arrivals.
    pub fn of(
        sent: &[(String, Instant)],
        arrivals: &HashMap<String, Instant>,
    ) -> Result<Self, String> {
        let mut latency =
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
        let mut at = Vec::with_capacity(sent.len());
        for (id, t) in sent {
            if let Some(a) = arrivals.get(id) {
                latency
                    .record(a.saturating_duration_since(*t).as_micros().max(1) as u64)
                    .map_err(|e| e.to_string())?;
                at.push(*a);
            }
        }
        at.sort();
        Ok(Delivered {
            latency,
            submitted: sent.len(),
            delivered: at.len(),
            arrivals: at,
        })
    }

    /// p50, p99 and p99.9 of submitted → delivered, ms.
    pub fn quantiles_ms(&self) -> [f64; 3] {
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        [ms(0.5), ms(0.99), ms(0.999)]
    }

    /// Deliveries per second while these messages arrived: arrivals over the time from
    /// the first to the last of them, leaving out the first and last 1 % so that one
    /// straggler does not stretch the span. The sink saw other messages in that span too
    /// (submitted before or after), about as many at each end, so in a steady state this
    /// is the sink's delivery rate.
    pub fn rate(&self) -> f64 {
        let n = self.arrivals.len();
        if n < 2 {
            return f64::NAN;
        }
        let trim = n / 100;
        let (lo, hi) = (trim, n - 1 - trim);
        let span = self.arrivals[hi]
            .saturating_duration_since(self.arrivals[lo])
            .as_secs_f64();
        (hi - lo) as f64 / span
    }
}
