//! Evaluation metrics for probabilistic binary classifiers: ROC-AUC, PR-AUC (average
//! precision), log loss, Brier score, expected calibration error, and the confusion figures
//! at a threshold. Labels are `true` for insecure.

use serde::Serialize;

/// The figures of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Report {
    pub n: usize,
    pub positives: usize,
    pub roc_auc: f64,
    pub pr_auc: f64,
    pub log_loss: f64,
    pub brier: f64,
    pub calibration_error: f64,
    pub threshold: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// The best precision among thresholds whose recall is at least 0.85.
    pub precision_at_recall_85: f64,
}

/// Evaluates `scores` (probabilities) against `labels` at `threshold` (`score ≥ threshold`
/// counts as flagged). Empty input gives a zeroed report; a single-class input has
/// ROC-AUC and PR-AUC of NaN (undefined), which JSON output shows as null.
#[must_use]
pub fn evaluate(scores: &[f64], labels: &[bool], threshold: f64) -> Report {
    let n = scores.len().min(labels.len());
    let (scores, labels) = (&scores[..n], &labels[..n]);
    if n == 0 {
        return Report { threshold, ..Report::default() };
    }
    let positives = labels.iter().filter(|l| **l).count();
    let (tp, fp) = scores.iter().zip(labels).fold((0usize, 0usize), |(tp, fp), (s, l)| {
        if *s >= threshold { if *l { (tp + 1, fp) } else { (tp, fp + 1) } } else { (tp, fp) }
    });
    let precision = if tp + fp == 0 { 0.0 } else { tp as f64 / (tp + fp) as f64 };
    let recall = if positives == 0 { 0.0 } else { tp as f64 / positives as f64 };
    let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
    Report {
        n,
        positives,
        roc_auc: roc_auc(scores, labels),
        pr_auc: average_precision(scores, labels),
        log_loss: log_loss(scores, labels),
        brier: scores.iter().zip(labels).map(|(s, l)| (s - f64::from(u8::from(*l))).powi(2)).sum::<f64>() / n as f64,
        calibration_error: calibration_error(scores, labels, 10),
        threshold,
        precision,
        recall,
        f1,
        precision_at_recall_85: precision_at_recall(scores, labels, 0.85),
    }
}

/// Area under the ROC curve (Mann–Whitney U, ties counted one half).
#[must_use]
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut v: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let pos = v.iter().filter(|x| x.1).count() as f64;
    let neg = v.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    // Sum of (average) ranks of positives.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += avg_rank * v[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Points of the precision-recall curve, one per distinct threshold, from the highest score.
fn pr_points(scores: &[f64], labels: &[bool]) -> Vec<(f64, f64, f64)> {
    let mut v: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let pos = v.iter().filter(|x| x.1).count();
    let mut out = Vec::new();
    if pos == 0 {
        return out;
    }
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < v.len() {
        let t = v[i].0;
        while i < v.len() && v[i].0 == t {
            if v[i].1 {
                tp += 1
            } else {
                fp += 1
            }
            i += 1;
        }
        out.push((t, tp as f64 / (tp + fp) as f64, tp as f64 / pos as f64));
    }
    out
}

/// The ROC curve as (false-positive rate, true-positive rate) points, one per distinct threshold
/// from the highest score down, starting at (0, 0) and ending at (1, 1). Empty when the labels
/// hold a single class (the curve is undefined).
#[must_use]
pub fn roc_curve(scores: &[f64], labels: &[bool]) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let pos = v.iter().filter(|x| x.1).count();
    let neg = v.len() - pos;
    if pos == 0 || neg == 0 {
        return Vec::new();
    }
    let mut out = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0usize, 0usize);
    for group in v.chunk_by(|a, b| a.0 == b.0) {
        tp += group.iter().filter(|x| x.1).count();
        fp += group.iter().filter(|x| !x.1).count();
        out.push((fp as f64 / neg as f64, tp as f64 / pos as f64));
    }
    out
}

/// The precision-recall curve as (recall, precision) points, one per distinct threshold from
/// the highest score down. Empty when there is no positive. Joining the points as steps (the
/// precision of a point holds from the previous recall to its own) gives the area that
/// [`average_precision`] computes.
#[must_use]
pub fn pr_curve(scores: &[f64], labels: &[bool]) -> Vec<(f64, f64)> {
    pr_points(scores, labels).into_iter().map(|(_, p, r)| (r, p)).collect()
}

/// Average precision: the step-wise area under the precision-recall curve.
#[must_use]
pub fn average_precision(scores: &[f64], labels: &[bool]) -> f64 {
    let pts = pr_points(scores, labels);
    if pts.is_empty() {
        return f64::NAN;
    }
    let mut prev_recall = 0.0;
    let mut ap = 0.0;
    for (_, p, r) in pts {
        ap += (r - prev_recall) * p;
        prev_recall = r;
    }
    ap
}

/// The best precision over thresholds that keep recall at or above `min_recall`.
#[must_use]
pub fn precision_at_recall(scores: &[f64], labels: &[bool], min_recall: f64) -> f64 {
    pr_points(scores, labels).into_iter().filter(|(_, _, r)| *r >= min_recall).map(|(_, p, _)| p).fold(0.0, f64::max)
}

/// Mean log loss with probabilities clipped to [1e-15, 1 - 1e-15].
#[must_use]
pub fn log_loss(scores: &[f64], labels: &[bool]) -> f64 {
    if scores.is_empty() {
        return 0.0;
    }
    let sum: f64 = scores
        .iter()
        .zip(labels)
        .map(|(s, l)| {
            let p = s.clamp(1e-15, 1.0 - 1e-15);
            if *l { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum();
    sum / scores.len().min(labels.len()) as f64
}

/// Reliability bins: (mean predicted, observed rate, count) for `bins` equal-width bins.
#[must_use]
pub fn reliability(scores: &[f64], labels: &[bool], bins: usize) -> Vec<(f64, f64, usize)> {
    let bins = bins.max(1);
    let mut acc = vec![(0.0f64, 0.0f64, 0usize); bins];
    for (s, l) in scores.iter().zip(labels) {
        let b = ((s.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        acc[b].0 += s;
        acc[b].1 += f64::from(u8::from(*l));
        acc[b].2 += 1;
    }
    acc.into_iter().map(|(s, y, c)| if c == 0 { (0.0, 0.0, 0) } else { (s / c as f64, y / c as f64, c) }).collect()
}

/// Expected calibration error over `bins` equal-width bins.
#[must_use]
pub fn calibration_error(scores: &[f64], labels: &[bool], bins: usize) -> f64 {
    let n = scores.len().min(labels.len());
    if n == 0 {
        return 0.0;
    }
    reliability(scores, labels, bins).into_iter().map(|(p, y, c)| (p - y).abs() * c as f64).sum::<f64>() / n as f64
}

/// Progressive validation: each prediction is made before the model learns from its example,
/// so the running figures estimate performance on unseen data without a holdout.
#[derive(Debug, Clone, Default)]
pub struct Progressive {
    scores: Vec<f64>,
    labels: Vec<bool>,
}

impl Progressive {
    pub fn record(&mut self, prediction: f64, label: bool) {
        self.scores.push(prediction);
        self.labels.push(label);
    }

    #[must_use]
    pub fn report(&self, threshold: f64) -> Report {
        evaluate(&self.scores, &self.labels, threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_figures() {
        let s = [0.9, 0.8, 0.3, 0.2];
        let l = [true, false, true, false];
        // Pairs (pos, neg): (0.9,0.8) ok, (0.9,0.2) ok, (0.3,0.8) bad, (0.3,0.2) ok -> 3/4.
        assert!((roc_auc(&s, &l) - 0.75).abs() < 1e-12);
        // AP: at 0.9 p=1 r=.5; at 0.8 p=.5 r=.5; at 0.3 p=2/3 r=1 -> .5*1 + .5*2/3.
        assert!((average_precision(&s, &l) - (0.5 + 1.0 / 3.0)).abs() < 1e-12);
        let r = evaluate(&s, &l, 0.5);
        assert_eq!((r.precision, r.recall), (0.5, 0.5));
        assert!((r.brier - (0.01 + 0.64 + 0.49 + 0.04) / 4.0).abs() < 1e-12);
        assert!((precision_at_recall(&s, &l, 0.85) - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn ties_and_degenerate_inputs() {
        assert!((roc_auc(&[0.5, 0.5], &[true, false]) - 0.5).abs() < 1e-12);
        assert!(roc_auc(&[0.1, 0.2], &[true, true]).is_nan());
        let r = evaluate(&[], &[], 0.9);
        assert_eq!(r.n, 0);
        // Clipped, so a confident mistake costs about -ln(1e-15) ≈ 34.5, not infinity.
        assert!((log_loss(&[1.0], &[false]) - 34.5).abs() < 0.2);
    }

    #[test]
    fn roc_curve_walks_thresholds_from_the_top() {
        let s = [0.9, 0.8, 0.3, 0.2];
        let l = [true, false, true, false];
        assert_eq!(roc_curve(&s, &l), vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]);
        // Tied scores move both rates in one step.
        assert_eq!(roc_curve(&[0.5, 0.5], &[true, false]), vec![(0.0, 0.0), (1.0, 1.0)]);
        assert!(roc_curve(&[0.1, 0.2], &[true, true]).is_empty());
        assert!(roc_curve(&[], &[]).is_empty());
    }

    #[test]
    fn pr_curve_steps_sum_to_average_precision() {
        let s = [0.9, 0.8, 0.3, 0.2];
        let l = [true, false, true, false];
        let pts = pr_curve(&s, &l);
        assert_eq!(pts.len(), 4);
        assert_eq!(pts[0], (0.5, 1.0));
        assert_eq!(pts[1], (0.5, 0.5));
        let (mut prev, mut area) = (0.0, 0.0);
        for (r, p) in &pts {
            area += (r - prev) * p;
            prev = *r;
        }
        assert!((area - average_precision(&s, &l)).abs() < 1e-12);
        assert!(pr_curve(&[0.1, 0.2], &[false, false]).is_empty());
    }

    #[test]
    fn perfectly_calibrated_bins_have_no_error() {
        let s = [0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75];
        let l = [true, false, false, false, true, true, true, false];
        assert!(calibration_error(&s, &l, 10) < 1e-12);
    }
}
