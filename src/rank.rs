//! Ranking the candidates of one request: generator preference, risk penalty, blocking.
//!
//! `preference` is the generator's preference normalised within the request (softmax of the
//! log-probabilities, or weights 1, 1/2, 1/3, … by input order), so it lives on [0, 1] and sums
//! to 1; `score = preference − risk_penalty × risk`. Candidates whose risk reaches the block
//! threshold are blocked and come after every unblocked one.

/// One candidate's place in the ranking.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// Index in the request's input order.
    pub index: usize,
    pub preference: f64,
    pub score: f64,
    pub blocked: bool,
}

/// Normalised preferences of `n` candidates: the softmax of `logprobs` when every candidate
/// has a finite one, else input-order weights 1/k normalised.
#[must_use]
pub fn preferences(logprobs: &[Option<f64>]) -> Vec<f64> {
    let n = logprobs.len();
    if n == 0 {
        return Vec::new();
    }
    let all: Option<Vec<f64>> = logprobs.iter().map(|l| l.filter(|x| x.is_finite())).collect();
    let raw: Vec<f64> = match all {
        Some(lp) => {
            let max = lp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            lp.iter().map(|l| (l - max).exp()).collect()
        }
        None => (1..=n).map(|k| 1.0 / k as f64).collect(),
    };
    let sum: f64 = raw.iter().sum();
    if sum > 0.0 && sum.is_finite() { raw.iter().map(|r| r / sum).collect() } else { vec![1.0 / n as f64; n] }
}

/// Ranks candidates given their risks and preferences: unblocked first by score (highest
/// first), then blocked ones by score; ties keep input order.
#[must_use]
pub fn rank(risks: &[f64], prefs: &[f64], risk_penalty: f64, block_threshold: f64) -> Vec<Ranked> {
    let mut out: Vec<Ranked> = risks
        .iter()
        .zip(prefs)
        .enumerate()
        .map(|(index, (r, p))| Ranked {
            index,
            preference: *p,
            score: p - risk_penalty * r,
            blocked: *r >= block_threshold,
        })
        .collect();
    out.sort_by(|a, b| a.blocked.cmp(&b.blocked).then(b.score.total_cmp(&a.score)).then(a.index.cmp(&b.index)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_of_logprobs_and_order_weights() {
        let p = preferences(&[Some(0.0), Some(0.0)]);
        assert_eq!(p, [0.5, 0.5]);
        let p = preferences(&[Some(-2.0), Some(-2.0 - 2f64.ln())]);
        assert!((p[0] - 2.0 / 3.0).abs() < 1e-12 && (p[1] - 1.0 / 3.0).abs() < 1e-12);
        // Missing on one: input order for all (1, 1/2, 1/3 normalised by 11/6).
        let p = preferences(&[Some(-1.0), None, Some(-3.0)]);
        assert!((p[0] - 6.0 / 11.0).abs() < 1e-12 && (p[2] - 2.0 / 11.0).abs() < 1e-12);
        // Huge logprobs do not overflow.
        let p = preferences(&[Some(1e308), Some(-1e308)]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(preferences(&[]).is_empty());
    }

    #[test]
    fn blocked_candidates_come_last_and_scores_order_the_rest() {
        // b preferred by the generator but risky; c blocked.
        let r = rank(&[0.04, 0.5, 0.95], &[0.3, 0.6, 0.1], 1.0, 0.9);
        let order: Vec<usize> = r.iter().map(|x| x.index).collect();
        assert_eq!(order, [0, 1, 2]);
        assert!(r[2].blocked && !r[0].blocked);
        assert!((r[1].score - (0.6 - 0.5)).abs() < 1e-12);
        // A higher penalty can only push risky candidates down.
        let r = rank(&[0.0, 0.2], &[0.4, 0.6], 0.5, 0.9);
        assert_eq!(r[0].index, 1);
        let r = rank(&[0.0, 0.2], &[0.4, 0.6], 2.0, 0.9);
        assert_eq!(r[0].index, 0);
    }
}
