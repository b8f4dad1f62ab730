//! How long a group's strategy takes to choose: a fixed-bucket histogram of atomics, cheap
//! enough to update on every selection and read by `/metrics` without a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in nanoseconds. A Rust or C guest chooses in about a
/// microsecond, Python and JavaScript in tens; the deadline is milliseconds.
pub const BOUNDS_NS: [u64; 12] = [
    500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 250_000, 1_000_000, 5_000_000,
    25_000_000,
];

#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); the last one is above every bound.
    buckets: [AtomicU64; BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

/// A copy of the histogram, per bucket as `prometheus-client`'s encoder takes it (it writes
/// the cumulative counts).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// (upper bound in seconds, observations above the previous bound and at or below this
    /// one), the last bound being +Inf.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    pub fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let index = BOUNDS_NS.partition_point(|bound| *bound < ns);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        let mut count = 0;
        let mut buckets = Vec::with_capacity(BOUNDS_NS.len() + 1);
        for (index, bucket) in self.buckets.iter().enumerate() {
            let observed = bucket.load(Ordering::Relaxed);
            count += observed;
            let bound = BOUNDS_NS
                .get(index)
                .map_or(f64::INFINITY, |ns| *ns as f64 / 1e9);
            buckets.push((bound, observed));
        }
        LatencySnapshot {
            buckets,
            count,
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }

    /// Adds `other`'s observations to this one (summing groups under `_other`).
    pub fn absorb(into: &mut LatencySnapshot, other: &LatencySnapshot) {
        if into.buckets.is_empty() {
            *into = other.clone();
            return;
        }
        for (mine, theirs) in into.buckets.iter_mut().zip(&other.buckets) {
            mine.1 += theirs.1;
        }
        into.count += other.count;
        into.sum_seconds += other.sum_seconds;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_covers_them() {
        let histogram = LatencyHistogram::default();
        histogram.observe(Duration::from_nanos(500));
        histogram.observe(Duration::from_nanos(501));
        histogram.observe(Duration::from_micros(3));
        histogram.observe(Duration::from_secs(1));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 4);
        assert_eq!(snapshot.buckets[0], (500e-9, 1));
        assert_eq!(snapshot.buckets[1], (1e-6, 1));
        assert_eq!(snapshot.buckets[2].1, 0);
        assert_eq!(snapshot.buckets[3].1, 1);
        assert_eq!(snapshot.buckets[11].1, 0);
        assert_eq!(snapshot.buckets[12], (f64::INFINITY, 1));
        assert!((snapshot.sum_seconds - 1.000_004_001).abs() < 1e-9);
    }

    #[test]
    fn absorbing_sums_bucket_by_bucket() {
        let a = LatencyHistogram::default();
        a.observe(Duration::from_nanos(100));
        let b = LatencyHistogram::default();
        b.observe(Duration::from_millis(2));
        let mut total = LatencySnapshot {
            buckets: Vec::new(),
            count: 0,
            sum_seconds: 0.0,
        };
        LatencyHistogram::absorb(&mut total, &a.snapshot());
        LatencyHistogram::absorb(&mut total, &b.snapshot());
        assert_eq!(total.count, 2);
        assert_eq!(total.buckets[0].1, 1);
        assert_eq!(total.buckets[12].1, 0);
        assert_eq!(total.buckets[10].1, 1);
    }
}
