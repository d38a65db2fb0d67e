//! A log-bucketed latency histogram in the manner of HdrHistogram: values below 128 are
//! exact; above, each power of two is split into 64 buckets, so any value is reported within
//! 1/64 (1.6 %) of the truth. Recording is one array increment.

const LINEAR: usize = 128;
const PER_OCTAVE: usize = 64;
const BUCKETS: usize = LINEAR + 57 * PER_OCTAVE;

pub struct Hist {
    counts: Vec<u64>,
    n: u64,
    sum: u128,
    max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist { counts: vec![0; BUCKETS], n: 0, sum: 0, max: 0 }
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR as u64 {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros() as usize; // >= 7
    let shift = msb - 6;
    let mant = (v >> shift) as usize; // 64..=127
    LINEAR + (shift - 1) * PER_OCTAVE + (mant - PER_OCTAVE)
}

/// The largest value that falls in bucket `i`.
fn upper(i: usize) -> u64 {
    if i < LINEAR {
        return i as u64;
    }
    let k = i - LINEAR;
    let shift = k / PER_OCTAVE + 1;
    let mant = (k % PER_OCTAVE + PER_OCTAVE) as u64;
    ((mant + 1) << shift) - 1
}

impl Hist {
    #[inline]
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.n += 1;
        self.sum += v as u128;
        if v > self.max {
            self.max = v;
        }
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn mean(&self) -> u64 {
        if self.n == 0 { 0 } else { (self.sum / self.n as u128) as u64 }
    }

    /// The value at quantile `q` (0..=1): the upper edge of its bucket, capped at the max.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let target = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return upper(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut prev = 0;
        for v in [0u64, 1, 127, 128, 129, 255, 256, 1000, 123_456, 10_000_000, u64::MAX / 2] {
            let i = index(v);
            assert!(i >= prev && i < BUCKETS);
            prev = i;
            assert!(upper(i) >= v);
            assert!(upper(i) - v <= v / 64 + 1, "{v} -> {}", upper(i));
            if i > 0 {
                assert!(upper(i - 1) < v);
            }
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Hist::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5);
        assert!((500_000..=508_000).contains(&p50), "{p50}");
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!(h.max(), 1_000_000);
    }
}
