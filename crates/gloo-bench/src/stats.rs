//! Summaries of timing samples.

use serde::{Deserialize, Serialize};

/// Min / p50 / p99 / mean of a set of durations, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Latency {
    /// Number of samples.
    pub(crate) n: u64,
    /// Fastest sample.
    pub(crate) min: f64,
    /// Median (the sample at index n/2 of the sorted samples, as the C reference tools do).
    pub(crate) p50: f64,
    /// 99th percentile (index ⌊0.99·n⌋).
    pub(crate) p99: f64,
    /// Mean.
    pub(crate) mean: f64,
}

impl Latency {
    /// Summarise `samples` (sorted in place). No samples give all zeros.
    pub(crate) fn from_samples(samples: &mut [f64]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let p99 = ((n as f64 * 0.99) as usize).min(n - 1);
        Latency {
            n: n as u64,
            min: samples[0],
            p50: samples[n / 2],
            p99: samples[p99],
            mean: samples.iter().sum::<f64>() / n as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_the_reference_tools() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let l = Latency::from_samples(&mut v);
        assert_eq!((l.n, l.min, l.p50, l.p99, l.mean), (100, 1.0, 51.0, 100.0, 50.5));
        assert_eq!(Latency::from_samples(&mut []), Latency::default());
        let one = Latency::from_samples(&mut [7.0]);
        assert_eq!((one.min, one.p50, one.p99), (7.0, 7.0, 7.0));
    }
}
