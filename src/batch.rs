//! The batch fit of the offline retraining job: a logistic regression solved with L-BFGS
//! (linfa-logistic, L2) on a dense design matrix of bounded width, mapped back into the hashed
//! weight space the service scores with.
//!
//! linfa-logistic takes dense matrices only, so the job cannot hand it 2^22 hashed
//! coordinates. It chooses columns instead: the features of every rule seen in the data, then
//! the most frequent other hashed features, up to a width; plus two columns that summarise what
//! the columns leave out:
//!
//! - the rule-prior *offset* (its coefficient rescales the severity priors), and
//! - in the default [`Method::Stacked`], the out-of-fold margin of a multi-pass FTRL model over
//!   every hashed feature (its coefficient rescales the FTRL weights). Out-of-fold means each
//!   example's margin comes from an FTRL model that did not see it, so the L-BFGS fit learns
//!   how far to trust FTRL on unseen data, not on data it memorised.
//!
//! Everything the solver learns is linear in the hashed features, so it maps back exactly:
//! `w_i = c * w_ftrl_i + beta_i`, the intercept lands on the bias feature, and the offset
//! coefficient `a` lands on each rule's own feature as `(a - 1) * prior` (a rule's feature is
//! present exactly when its prior is in the offset). The model keeps the FTRL accumulators, so
//! online learning continues from it with settled per-coordinate learning rates.
//!
//! linfa-logistic has no sample weights. Implicit feedback carries small weights (an accepted
//! candidate is weak evidence of safe), so rows enter the matrix with probability equal to their
//! weight (rejection sampling, as in "costing", Zadrozny et al. 2003): the expected loss is the
//! weighted loss. The FTRL fit uses the weights directly.
//!
//! Two pitfalls of linfa-logistic are handled here: `predict_probabilities` and the signs of the
//! coefficients refer to the *more frequent* class of the training data, not to `true`
//! (linfa issue #393), so the fitted labels are checked and the signs flipped when the positive
//! class is "safe"; and L-BFGS can panic ("Search direction must be a descent direction",
//! issue #334), which is caught and retried with a stronger L2 term, then given up in favour of
//! the FTRL model, with a note.

use crate::features::Features;
use crate::model::{Hyper, Model};
use crate::train::{Example, SplitMix64, fit};
use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2, ShapeBuilder};
use std::collections::HashMap;

/// How the batch model is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Multi-pass FTRL over every hashed feature, then L-BFGS over the selected columns plus
    /// the out-of-fold FTRL margin and the rule-prior offset.
    #[default]
    Stacked,
    /// L-BFGS over the selected columns and the rule-prior offset only.
    Linfa,
    /// Multi-pass FTRL alone (no L-BFGS step), for comparison.
    Ftrl,
}

impl Method {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Method::Stacked => "stacked",
            Method::Linfa => "linfa",
            Method::Ftrl => "ftrl",
        }
    }
}

/// Settings of the batch fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchConfig {
    pub method: Method,
    /// FTRL hyperparameters and width of the hashed space.
    pub hyper: Hyper,
    /// FTRL passes.
    pub epochs: usize,
    /// Probability of learning an example without its rule features in FTRL passes.
    pub rule_dropout: f64,
    pub seed: u64,
    /// Most selected hashed columns (rule features first, then the most frequent).
    pub max_columns: usize,
    /// A non-rule feature needs this many rows to be a column.
    pub min_count: u32,
    /// Bound on rows × columns of the dense matrix (8 bytes each); rows are subsampled to fit.
    pub max_cells: usize,
    /// L2 strength of the L-BFGS fit per row: linfa's loss is a sum over rows, so its `alpha`
    /// is this times the number of rows (the same strength for 3,000 rows or 1,000,000).
    pub l2: f64,
    pub max_iterations: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            method: Method::Stacked,
            hyper: Hyper::default(),
            epochs: 8,
            rule_dropout: 0.5,
            seed: 0x6775_6172_6472_6e6b,
            max_columns: 1024,
            min_count: 5,
            max_cells: 64 << 20,
            l2: 0.1,
            max_iterations: 200,
        }
    }
}

/// A rule the pack knows: the coordinate of its id feature and its severity prior (enforced
/// rules only: monitor-mode rules add no prior).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleColumn {
    pub index: u32,
    pub prior: f32,
}

/// What the fit did, for the report.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct FitSummary {
    pub method: String,
    pub examples: usize,
    /// Rows of the dense matrix (after weight sampling and the cell bound).
    pub rows: usize,
    /// Selected hashed columns (besides offset and FTRL margin).
    pub columns: usize,
    /// Of those, rule features.
    pub rule_columns: usize,
    /// The L2 strength (linfa's `alpha`, for the whole sum) the solver finally succeeded with.
    pub l2: f64,
    /// Coefficient of the out-of-fold FTRL margin (stacked only).
    pub ftrl_scale: Option<f64>,
    /// Coefficient of the rule-prior offset.
    pub prior_scale: Option<f64>,
    /// Whether linfa's positive class was "insecure" (if not, signs were flipped).
    pub positive_is_insecure: Option<bool>,
    /// Anything that went differently from the plan (solver failures, fallbacks).
    pub notes: Vec<String>,
}

/// Builds the batch model. `rules` lists every enforced rule of the pack the features were
/// extracted with; `bias_index` is the coordinate of the always-on bias feature.
/// `stage` is told when each long step starts.
#[must_use]
pub fn fit_batch(
    examples: &[Example],
    rules: &[RuleColumn],
    bias_index: u32,
    cfg: &BatchConfig,
    version: &str,
    stage: &mut dyn FnMut(&str),
) -> (Model, FitSummary) {
    let mut summary =
        FitSummary { method: cfg.method.name().into(), examples: examples.len(), ..FitSummary::default() };
    stage("FTRL passes over every hashed feature");
    let (mut full, _) = fit(examples, cfg.hyper, cfg.epochs, cfg.seed, cfg.rule_dropout, version);
    if cfg.method == Method::Ftrl {
        return (full, summary);
    }
    let stacked = cfg.method == Method::Stacked;
    let oof = if stacked {
        stage("out-of-fold FTRL margins");
        out_of_fold_margins(examples, cfg, version)
    } else {
        Vec::new()
    };
    stage("dense design matrix");
    let design = Design::build(examples, rules, bias_index, cfg, (!oof.is_empty()).then_some(&oof[..]));
    summary.rows = design.rows.len();
    summary.columns = design.columns.len();
    summary.rule_columns = design.rule_columns;
    stage(&format!("L-BFGS (linfa-logistic) on {} rows × {} columns", design.x.nrows(), design.x.ncols()));
    let Some(fitted) = solve(&design, cfg, &mut summary) else {
        summary.notes.push("the L-BFGS fit failed; the model is the FTRL fit alone".into());
        summary.method = Method::Ftrl.name().into();
        return (full, summary);
    };
    // Map back into the hashed space.
    let extra = usize::from(stacked) + 1;
    let prior_scale = fitted.coef[0];
    let ftrl_scale = if stacked { fitted.coef[1] } else { 0.0 };
    summary.prior_scale = Some(prior_scale);
    summary.ftrl_scale = stacked.then_some(ftrl_scale);
    let mut add: HashMap<u32, f64> = HashMap::with_capacity(design.columns.len() + rules.len() + 1);
    for (j, idx) in design.columns.iter().enumerate() {
        *add.entry(*idx).or_default() += fitted.coef[extra + j];
    }
    *add.entry(bias_index).or_default() += fitted.intercept;
    for r in rules {
        *add.entry(r.index).or_default() += (prior_scale - 1.0) * f64::from(r.prior);
    }
    full.reweight(|i, w| {
        let base = if stacked { ftrl_scale * f64::from(w) } else { 0.0 };
        let extra = u32::try_from(i).ok().and_then(|i| add.get(&i)).copied().unwrap_or(0.0);
        (base + extra) as f32
    });
    full.version = version.to_string();
    (full, summary)
}

/// Margins (without the offset) of each example under an FTRL model trained on the other half.
fn out_of_fold_margins(examples: &[Example], cfg: &BatchConfig, version: &str) -> Vec<f64> {
    // Folds by group: twins of one task share most tokens with opposite labels, and a split
    // through a group would make its out-of-fold margins point the wrong way.
    let fold: Vec<bool> = examples.iter().map(|e| SplitMix64(e.group ^ cfg.seed).next_u64() & 1 == 1).collect();
    let part = |f: bool| -> Vec<Example> {
        examples.iter().zip(&fold).filter(|(_, g)| **g == f).map(|(e, _)| e.clone()).collect()
    };
    let (m0, _) = fit(&part(false), cfg.hyper, cfg.epochs, cfg.seed, cfg.rule_dropout, version);
    let (m1, _) = fit(&part(true), cfg.hyper, cfg.epochs, cfg.seed, cfg.rule_dropout, version);
    examples
        .iter()
        .zip(&fold)
        .map(|(e, f)| {
            let other = if *f { &m0 } else { &m1 };
            other.margin(&e.features) - f64::from(e.features.offset)
        })
        .collect()
}

/// The dense problem: which examples are rows, which hashed coordinates are columns.
struct Design {
    /// Example indices.
    rows: Vec<usize>,
    /// Hashed coordinates, one per column after the leading offset (and margin) columns.
    columns: Vec<u32>,
    rule_columns: usize,
    x: Array2<f64>,
    y: Array1<bool>,
}

impl Design {
    fn build(
        examples: &[Example],
        rules: &[RuleColumn],
        bias_index: u32,
        cfg: &BatchConfig,
        margins: Option<&[f64]>,
    ) -> Design {
        // Rows: each example with probability equal to its weight (weights above 1 count once).
        let mut rng = SplitMix64(cfg.seed ^ 0x5a3b_1e00);
        let mut rows: Vec<usize> = (0..examples.len())
            .filter(|&i| {
                let w = f64::from(examples[i].weight);
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                w.is_finite() && w > 0.0 && u < w
            })
            .collect();
        // Columns: rule features seen in the data first, then the most frequent others.
        let mut count: HashMap<u32, u32> = HashMap::new();
        for &i in &rows {
            for idx in &examples[i].features.idx {
                *count.entry(*idx).or_default() += 1;
            }
        }
        let rule_set: std::collections::HashSet<u32> = rules.iter().map(|r| r.index).collect();
        let mut rule_cols: Vec<u32> = count.keys().copied().filter(|i| rule_set.contains(i)).collect();
        rule_cols.sort_unstable();
        rule_cols.truncate(cfg.max_columns);
        let mut others: Vec<(u32, u32)> = count
            .iter()
            .filter(|(i, n)| !rule_set.contains(*i) && **i != bias_index && **n >= cfg.min_count)
            .map(|(i, n)| (*i, *n))
            .collect();
        // Most frequent first; ties by index, so the choice is deterministic.
        others.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let lead = 1 + usize::from(margins.is_some());
        let width_budget = (cfg.max_cells / rows.len().max(1)).saturating_sub(lead).max(rule_cols.len().min(64));
        let room = cfg.max_columns.min(width_budget).saturating_sub(rule_cols.len());
        let mut columns = rule_cols.clone();
        columns.extend(others.iter().take(room).map(|(i, _)| *i));
        let rule_columns = rule_cols.len();
        // Rows beyond the cell bound: a deterministic uniform subsample.
        let width = lead + columns.len();
        let max_rows = (cfg.max_cells / width.max(1)).max(1);
        if rows.len() > max_rows {
            rng.shuffle(&mut rows);
            rows.truncate(max_rows);
            rows.sort_unstable();
        }
        let col_of: HashMap<u32, usize> = columns.iter().enumerate().map(|(j, i)| (*i, lead + j)).collect();
        // Column-major: linfa's gradient computes `x.t().dot(r)`, which ndarray (without BLAS)
        // runs row by row of `x.t()`; column-major makes those rows contiguous (about 20× faster
        // on a 60,000 × 1,026 matrix than the row-major layout's strided walk), while `x.dot(w)`
        // goes through matrixmultiply, which takes either layout.
        let mut x = Array2::<f64>::zeros((rows.len(), width).f());
        let mut y = Array1::<bool>::from_elem(rows.len(), false);
        for (r, &i) in rows.iter().enumerate() {
            let e = &examples[i];
            x[[r, 0]] = f64::from(e.features.offset);
            if let Some(m) = margins {
                x[[r, 1]] = m[i];
            }
            for (idx, v) in e.features.idx.iter().zip(&e.features.val) {
                if let Some(&c) = col_of.get(idx) {
                    x[[r, c]] = f64::from(*v);
                }
            }
            y[r] = e.insecure;
        }
        Design { rows, columns, rule_columns, x, y }
    }
}

/// Coefficients in the orientation "positive means insecure".
struct Fitted {
    coef: Vec<f64>,
    intercept: f64,
}

/// Runs L-BFGS, catching its panics; retries with 10× the L2 strength up to three times.
fn solve(design: &Design, cfg: &BatchConfig, summary: &mut FitSummary) -> Option<Fitted> {
    if design.rows.is_empty() {
        summary.notes.push("no rows for the L-BFGS fit".into());
        return None;
    }
    let positives = design.y.iter().filter(|y| **y).count();
    if positives == 0 || positives == design.y.len() {
        summary.notes.push("the L-BFGS rows hold a single class".into());
        return None;
    }
    let dataset = Dataset::new(design.x.clone(), design.y.clone());
    let mut l2 = (cfg.l2 * design.rows.len() as f64).max(1e-6);
    for _ in 0..4 {
        let params = LogisticRegression::default().alpha(l2).max_iterations(cfg.max_iterations);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| params.fit(&dataset)));
        match outcome {
            Ok(Ok(model)) => {
                let coef: Vec<f64> = model.params().iter().copied().collect();
                if coef.iter().any(|c| !c.is_finite()) || !model.intercept().is_finite() {
                    summary.notes.push(format!("L-BFGS with L2 {l2} gave non-finite coefficients"));
                } else {
                    // linfa's positive class is the more frequent one, which may be "safe".
                    let positive_is_insecure = model.labels().pos.class;
                    let sign = if positive_is_insecure { 1.0 } else { -1.0 };
                    summary.positive_is_insecure = Some(positive_is_insecure);
                    summary.l2 = l2;
                    return Some(Fitted {
                        coef: coef.into_iter().map(|c| sign * c).collect(),
                        intercept: sign * model.intercept(),
                    });
                }
            }
            Ok(Err(e)) => summary.notes.push(format!("L-BFGS with L2 {l2} failed: {e}")),
            Err(_) => summary.notes.push(format!("L-BFGS with L2 {l2} panicked (linfa issue #334); retrying")),
        }
        l2 *= 10.0;
    }
    None
}

/// The margin of `x` under a model, without the offset (for tests and diagnostics).
#[must_use]
pub fn margin_without_offset(model: &Model, x: &Features) -> f64 {
    model.margin(x) - f64::from(x.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(idx: &[u32], offset: f32, insecure: bool, weight: f32) -> Example {
        Example {
            features: Features { idx: idx.to_vec(), val: vec![1.0; idx.len()], offset },
            without_rules: None,
            insecure,
            weight,
            group: u64::from(idx.iter().sum::<u32>()),
        }
    }

    const BIAS: u32 = 1;
    const RULE: u32 = 2;

    /// Feature 10 marks insecure, 11 marks safe; rule 2 hits half the time with prior 3 but
    /// is right only as often as chance (its hits are safe in this data).
    fn data(n: usize, insecure_share: f64) -> Vec<Example> {
        let mut rng = SplitMix64(7);
        (0..n)
            .map(|k| {
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                let insecure = u < insecure_share;
                let tok = if insecure { 10 } else { 11 };
                let noise = 100 + (k % 13) as u32;
                if k % 2 == 0 && !insecure {
                    ex(&[BIAS, RULE, tok, noise], 3.0, insecure, 1.0)
                } else {
                    ex(&[BIAS, tok, noise], 0.0, insecure, 1.0)
                }
            })
            .collect()
    }

    fn cfg(method: Method) -> BatchConfig {
        BatchConfig {
            method,
            hyper: Hyper { bits: 10, ..Hyper::default() },
            epochs: 3,
            min_count: 2,
            ..BatchConfig::default()
        }
    }

    fn score(m: &Model, idx: &[u32], offset: f32) -> f64 {
        m.score(&Features { idx: idx.to_vec(), val: vec![1.0; idx.len()], offset })
    }

    #[test]
    fn stacked_fit_learns_tokens_and_discounts_a_wrong_rule_prior() {
        for share in [0.2, 0.8] {
            // 0.2: "safe" is the more frequent class, so linfa's positive class is "safe" and
            // the coefficients must be flipped; 0.8: the other way round.
            let d = data(600, share);
            let rules = [RuleColumn { index: RULE, prior: 3.0 }];
            let (m, s) = fit_batch(&d, &rules, BIAS, &cfg(Method::Stacked), "t", &mut |_| {});
            assert_eq!(s.positive_is_insecure, Some(share > 0.5), "{s:?}");
            assert!(score(&m, &[BIAS, 10], 0.0) > 0.8, "insecure token: {}", score(&m, &[BIAS, 10], 0.0));
            assert!(score(&m, &[BIAS, 11], 0.0) < 0.2, "safe token: {}", score(&m, &[BIAS, 11], 0.0));
            // The rule's hits were all safe: with its prior in the offset, the fitted model
            // still calls them safe.
            assert!(score(&m, &[BIAS, RULE, 11], 3.0) < 0.5, "rule hit: {}", score(&m, &[BIAS, RULE, 11], 3.0));
            assert!(s.notes.is_empty(), "{:?}", s.notes);
        }
    }

    #[test]
    fn mapped_weights_reproduce_the_solver_probabilities() {
        // The linfa-only model scores every training row as the solver's own prediction does.
        let d = data(400, 0.4);
        let rules = [RuleColumn { index: RULE, prior: 3.0 }];
        let c = cfg(Method::Linfa);
        let design = Design::build(&d, &rules, BIAS, &c, None);
        let mut s = FitSummary::default();
        let f = solve(&design, &c, &mut s).expect("fits");
        let (m, _) = fit_batch(&d, &rules, BIAS, &c, "t", &mut |_| {});
        for (r, &i) in design.rows.iter().enumerate().take(50) {
            let row = design.x.row(r);
            let z: f64 = f.intercept + row.iter().zip(&f.coef).map(|(x, c)| x * c).sum::<f64>();
            let p = crate::model::sigmoid(z);
            assert!((m.score(&d[i].features) - p).abs() < 1e-4, "row {r}: {} vs {p}", m.score(&d[i].features));
        }
    }

    #[test]
    fn weights_become_sampling_rates_and_single_class_falls_back_to_ftrl() {
        let mut d = data(1000, 0.5);
        for e in d.iter_mut().filter(|e| !e.insecure) {
            e.weight = 0.1;
        }
        let design = Design::build(&d, &[], BIAS, &cfg(Method::Linfa), None);
        let safe_rows = design.y.iter().filter(|y| !**y).count();
        assert!((20..90).contains(&safe_rows), "about 10% of ~500 safe rows: {safe_rows}");
        let one_class: Vec<Example> = d.iter().filter(|e| e.insecure).cloned().collect();
        let (_, s) = fit_batch(&one_class, &[], BIAS, &cfg(Method::Stacked), "t", &mut |_| {});
        assert_eq!(s.method, "ftrl");
        assert!(!s.notes.is_empty());
    }

    #[test]
    fn the_cell_bound_limits_rows_and_columns() {
        let d = data(1000, 0.5);
        let c = BatchConfig { max_cells: 2000, ..cfg(Method::Linfa) };
        let design = Design::build(&d, &[], BIAS, &c, None);
        assert!(design.x.len() <= 2000 + design.x.ncols(), "{:?}", design.x.dim());
        assert!(!design.rows.is_empty() && !design.columns.is_empty());
    }
}
