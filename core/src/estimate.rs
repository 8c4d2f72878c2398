//! How many survivors a sieve will keep, estimated before anything is published.
//!
//! Under the null model a random seed's outputs are independent and uniform, so each draw
//! matches its output mod `M` with probability `p = 1/M`, and a skip's match count is
//! `Binomial(k, p)`. A pass keeps a seed when its best skip reaches `need` matches:
//!
//! * constant skip over `S` skips: `P = 1 - (1 - tail)^S` with `tail = P[Bin(k, p) >= need]`
//!   (skips compare different outputs, so they are treated as independent; this matched a
//!   measured 531 survivors in 1.6M mt19937 seeds at the pipeline's default shape against 530
//!   predicted);
//! * variable skip: a strategy with tolerance `T` tests up to `w = min(2T+1, span)` skips per
//!   draw, so a draw matches with probability at most `1 - (1-p)^w`; a strategy's count is
//!   bounded by `Bin(k, that)` (ignoring that it may end early), and the union over strategies
//!   by the sum: an upper bound;
//! * bidirectional: the reverse pass runs on forward survivors, `P = P_forward * P_reverse`.
//!
//! The real generators are not random on every window (a structured window can keep more), so
//! this sizes jobs and refuses hopeless ones; it is not a guarantee.

use crate::spec::{Direction, SieveSpec, SkipMode};

/// The survivor estimate of a sieve spec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SurvivorEstimate {
    /// Probability that a random seed survives the whole sieve (both passes if bidirectional).
    pub rate: f64,
    /// Probability that it survives the forward pass (1 when the forward pass does not run).
    pub forward_rate: f64,
    /// Probability that it survives the reverse pass (1 when the reverse pass does not run).
    pub reverse_rate: f64,
    /// Whether `rate` is an upper bound (variable skip) rather than an estimate.
    pub upper_bound: bool,
}

impl SurvivorEstimate {
    /// Expected survivors among `seeds` seeds.
    pub fn survivors(&self, seeds: u128) -> f64 {
        self.rate * seeds as f64
    }
}

/// Estimates the survival rate of `spec` (which should be valid).
pub fn survivors(spec: &SieveSpec) -> SurvivorEstimate {
    let k = spec.k() as u64;
    let p = 1.0 / spec.modulus.max(1) as f64;
    let span = (spec.skip_max as u64).saturating_sub(spec.skip_min as u64) + 1;
    let pass = |reverse: bool| -> f64 {
        let need = spec.min_matches(reverse) as u64;
        match &spec.skip_mode {
            SkipMode::Constant => {
                let tail = binomial_tail(k, p, need);
                // 1 - (1 - tail)^S, computed without cancellation for tiny tails.
                -(span as f64 * (-tail).ln_1p()).exp_m1()
            }
            SkipMode::Variable { strategies } => {
                let sum: f64 = strategies
                    .iter()
                    .map(|s| {
                        let w = (2 * s.skip_tolerance as u64 + 1).min(span);
                        let p_draw = -(w as f64 * (-p).ln_1p()).exp_m1();
                        binomial_tail(k, p_draw, need)
                    })
                    .sum();
                sum.min(1.0)
            }
        }
    };
    let (forward_rate, reverse_rate) = match spec.direction {
        Direction::Forward => (pass(false), 1.0),
        Direction::Reverse => (1.0, pass(true)),
        Direction::Bidirectional => (pass(false), pass(true)),
    };
    SurvivorEstimate {
        rate: forward_rate * reverse_rate,
        forward_rate,
        reverse_rate,
        upper_bound: matches!(spec.skip_mode, SkipMode::Variable { .. }),
    }
}

/// `P[Binomial(n, p) >= need]`, accurate for tiny tails (summed in log space from `need`
/// upward) and for large ones (one minus the lower sum). O(n) at most.
pub fn binomial_tail(n: u64, p: f64, need: u64) -> f64 {
    if need == 0 || p >= 1.0 {
        return 1.0;
    }
    if need > n || p <= 0.0 {
        return 0.0;
    }
    let (lp, lq) = (p.ln(), (-p).ln_1p());
    // ln C(n, j) advanced from j = 0.
    let log_pmf = |j: u64, log_c: f64| log_c + j as f64 * lp + (n - j) as f64 * lq;
    let mean = n as f64 * p;
    if (need as f64) > mean {
        let mut log_c = 0.0;
        for i in 0..need {
            log_c += ((n - i) as f64).ln() - ((i + 1) as f64).ln();
        }
        let first = log_pmf(need, log_c);
        let mut sum = 0.0;
        let mut j = need;
        loop {
            let term = (log_pmf(j, log_c) - first).exp();
            sum += term;
            if j == n || term < sum * 1e-17 {
                break;
            }
            log_c += ((n - j) as f64).ln() - ((j + 1) as f64).ln();
            j += 1;
        }
        (first + sum.ln()).exp().min(1.0)
    } else {
        // 1 - P[X < need], the lower sum scaled by its largest term (at need - 1 or below).
        let mut logs = Vec::with_capacity(need as usize);
        let mut log_c = 0.0;
        for j in 0..need {
            logs.push(log_pmf(j, log_c));
            log_c += ((n - j) as f64).ln() - ((j + 1) as f64).ln();
        }
        let top = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lower = top.exp() * logs.iter().map(|l| (l - top).exp()).sum::<f64>();
        (1.0 - lower).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::{Family, FamilyConfig};
    use crate::spec::{SieveSpec, Strategy, Threshold};

    fn exact_tail(n: u64, p: f64, need: u64) -> f64 {
        // Straight sum with f64 binomials (small n only).
        let mut total = 0.0;
        for j in need..=n {
            let mut c = 1.0;
            for i in 0..j {
                c *= (n - i) as f64 / (i + 1) as f64;
            }
            total += c * p.powi(j as i32) * (1.0 - p).powi((n - j) as i32);
        }
        total
    }

    #[test]
    fn binomial_tail_matches_the_straight_sum() {
        for (n, p, need) in [
            (10u64, 0.1, 3u64),
            (10, 0.5, 5),
            (20, 0.05, 1),
            (20, 0.05, 0),
            (30, 0.3, 25),
            (50, 0.02, 7),
            (12, 0.9, 12),
        ] {
            let (a, b) = (binomial_tail(n, p, need), exact_tail(n, p, need));
            assert!(
                (a - b).abs() <= 1e-12 + 1e-9 * b,
                "n {n} p {p} need {need}: {a} vs {b}"
            );
        }
        assert_eq!(binomial_tail(5, 0.5, 6), 0.0);
        // Tiny tails stay accurate in log space: P[Bin(512, 1e-3) >= 6] ~ 1.57e-5 (Poisson).
        let t = binomial_tail(512, 1e-3, 6);
        assert!((1.5e-5..1.65e-5).contains(&t), "{t}");
        // Huge n with a mean far below need does not underflow to garbage.
        let t = binomial_tail(65_536, 0.5, 40_000);
        assert!((0.0..1e-300).contains(&t) || t == 0.0, "{t}");
        let t = binomial_tail(65_536, 0.5, 30_000);
        assert!(t > 0.999_999, "{t}");
    }

    fn spec(window: usize, modulus: u64, skips: (u32, u32), threshold: &str) -> SieveSpec {
        SieveSpec {
            family: FamilyConfig::new(Family::Mt19937),
            draws: vec![0; window],
            modulus,
            offset: 0,
            offset_max: None,
            skip_min: skips.0,
            skip_max: skips.1,
            threshold: Threshold::parse(threshold).unwrap(),
            reverse_threshold: None,
            direction: Direction::Forward,
            skip_mode: SkipMode::Constant,
        }
    }

    #[test]
    fn the_pipeline_default_keeps_about_3e_4() {
        // 512 draws mod 1000, skips 0..20, threshold 0.01 (need 6): ~3.3e-4 of random seeds.
        let e = survivors(&spec(512, 1000, (0, 20), "0.01"));
        assert!((3.1e-4..3.5e-4).contains(&e.rate), "{e:?}");
        assert!(!e.upper_bound);
        // Window 2 at threshold 0.5 mod 1000 with 250 skips keeps roughly 40% of all seeds.
        let e = survivors(&spec(2, 1000, (0, 250), "0.5"));
        assert!((0.35..0.45).contains(&e.rate), "{e:?}");
    }

    #[test]
    fn directions_and_variable_skip() {
        let mut s = spec(8, 4, (0, 3), "0.5");
        let forward = survivors(&s).rate;
        s.direction = Direction::Bidirectional;
        let both = survivors(&s);
        assert!((both.rate - forward * forward).abs() < 1e-12, "{both:?}");
        s.direction = Direction::Reverse;
        s.reverse_threshold = Some(Threshold::parse("1").unwrap());
        let reverse = survivors(&s);
        assert!(reverse.rate < forward && reverse.forward_rate == 1.0);
        s.skip_mode = SkipMode::Variable {
            strategies: Strategy::presets(),
        };
        let variable = survivors(&s);
        assert!(variable.upper_bound && variable.rate > 0.0 && variable.rate <= 1.0);
    }
}
