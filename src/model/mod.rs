//! The risk model: logistic regression over hashed features, trained online with
//! FTRL-Proximal (McMahan et al., "Ad Click Prediction: a View from the Trenches", KDD 2013).
//!
//! FTRL keeps per-coordinate learning rates (rare features learn fast, frequent ones settle)
//! and its L1 term drives unused coordinates to exactly zero, which suits a 2^22 hashed space
//! where most coordinates never see data. The weight of each coordinate is a closed form of
//! its two accumulators `z` and `n`; we keep it materialised in `w` so scoring is one sparse
//! dot product. Updates are deterministic: the same events in the same order give the same
//! weights, bit for bit.
//!
//! The three numbers of a coordinate live together in one [`Cell`] (12 bytes; 87.5% of cells
//! lie within one cache line). With three parallel arrays an update touched three cache lines
//! per coordinate of a 48 MiB table, each a likely miss; now the scoring pass that precedes an
//! update brings in the line the update then writes (issue 5).

mod file;
pub mod metrics;

pub use file::{FORMAT_VERSION, MAGIC, ModelFileError, read_model, write_model};

use crate::features::{DEFAULT_BITS, Features};
use serde::{Deserialize, Serialize};

/// FTRL-Proximal hyperparameters and the width of the weight space.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    pub alpha: f32,
    pub beta: f32,
    pub l1: f32,
    pub l2: f32,
    /// The weight space has `2^bits` coordinates.
    pub bits: u8,
}

impl Default for Hyper {
    fn default() -> Self {
        Hyper { alpha: 0.15, beta: 1.0, l1: 0.05, l2: 1.0, bits: DEFAULT_BITS }
    }
}

/// `1 / (1 + e^-x)`, computed without overflow for large |x|.
#[must_use]
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// One coordinate: FTRL's accumulators and the weight they give.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Cell {
    z: f32,
    n: f32,
    w: f32,
}

/// A logistic model over a hashed weight space, trained with FTRL-Proximal.
#[derive(Clone, PartialEq)]
pub struct Model {
    hyper: Hyper,
    cells: Vec<Cell>,
    /// Number of updates applied (weighted examples count once each).
    pub examples: u64,
    /// A name for this set of weights (`baseline-…`, `risk-…`).
    pub version: String,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("hyper", &self.hyper)
            .field("examples", &self.examples)
            .field("version", &self.version)
            .field("nonzero", &self.nonzero())
            .finish()
    }
}

impl Model {
    /// An untrained model: every weight zero, so it predicts 0.5 for features without offset.
    #[must_use]
    pub fn new(hyper: Hyper, version: impl Into<String>) -> Model {
        let bits = hyper.bits.clamp(8, 28);
        let hyper = Hyper { bits, ..hyper };
        let size = 1usize << bits;
        Model { hyper, cells: vec![Cell::default(); size], examples: 0, version: version.into() }
    }

    #[must_use]
    pub fn hyper(&self) -> Hyper {
        self.hyper
    }

    /// The margin `w·x + offset` (log-odds of insecure).
    #[must_use]
    pub fn margin(&self, x: &Features) -> f64 {
        let mut s = f64::from(x.offset);
        for (i, v) in x.idx.iter().zip(&x.val) {
            if let Some(c) = self.cells.get(*i as usize) {
                s += f64::from(c.w) * f64::from(*v);
            }
        }
        s
    }

    /// The probability that `x` is insecure, in [0, 1].
    #[must_use]
    pub fn score(&self, x: &Features) -> f64 {
        let p = sigmoid(self.margin(x));
        if p.is_finite() { p } else { 0.5 }
    }

    /// One FTRL-Proximal step on example `x` with `label` (true = insecure) and importance
    /// `weight` (≥ 0; 0 changes nothing). Returns the prediction made *before* the update,
    /// which is what progressive validation scores.
    pub fn update(&mut self, x: &Features, label: bool, weight: f32) -> f64 {
        let p = self.score(x);
        if !(weight.is_finite() && weight > 0.0) {
            return p;
        }
        let y = if label { 1.0 } else { 0.0 };
        let g_base = ((p - y) as f32) * weight;
        let Hyper { alpha, beta, l1, l2, .. } = self.hyper;
        for (i, v) in x.idx.iter().zip(&x.val) {
            let Some(c) = self.cells.get_mut(*i as usize) else {
                continue;
            };
            let Cell { z, n, w } = *c;
            let g = g_base * v;
            let n_new = n + g * g;
            // `sqrt(n_new)` once for both uses: the same value `ftrl_weight` would compute.
            let root = n_new.sqrt();
            let sigma = (root - n.sqrt()) / alpha;
            let z_new = z + g - sigma * w;
            *c = Cell { z: z_new, n: n_new, w: weight_of(z_new, root, alpha, beta, l1, l2) };
        }
        self.examples += 1;
        p
    }

    /// Sets one coordinate to weight `w` with no learning history (its accumulator `n` is 0),
    /// for priors such as the bias of a rule-priors-only model.
    pub fn set_weight(&mut self, index: u32, w: f32) {
        let i = index as usize;
        if i >= self.cells.len() || !w.is_finite() {
            return;
        }
        let Hyper { alpha, beta, l1, l2, .. } = self.hyper;
        let z = z_for(w, 0.0, self.hyper);
        self.cells[i] = Cell { z, n: 0.0, w: ftrl_weight(z, 0.0, alpha, beta, l1, l2) };
    }

    /// Replaces every weight by `f(index, weight)`, keeping each coordinate's accumulated
    /// squared gradients `n` (so online learning continues with settled learning rates) and
    /// setting `z` to the value that gives exactly the new weight. Non-finite results are 0.
    pub fn reweight(&mut self, f: impl Fn(usize, f32) -> f32) {
        let Hyper { alpha, beta, l1, l2, .. } = self.hyper;
        for (i, c) in self.cells.iter_mut().enumerate() {
            let w = f(i, c.w);
            let w = if w.is_finite() { w } else { 0.0 };
            let z = z_for(w, c.n, self.hyper);
            c.z = z;
            c.w = ftrl_weight(z, c.n, alpha, beta, l1, l2);
        }
    }

    /// The state `(z, n, w)` of the given coordinates, to undo an update with
    /// [`Model::restore`].
    #[must_use]
    pub fn save(&self, idx: &[u32]) -> Vec<(f32, f32, f32)> {
        idx.iter().map(|&i| self.cells.get(i as usize).map_or((0.0, 0.0, 0.0), |c| (c.z, c.n, c.w))).collect()
    }

    /// Puts back coordinates saved by [`Model::save`] and uncounts the update made since.
    pub fn restore(&mut self, idx: &[u32], saved: &[(f32, f32, f32)]) {
        for (&i, &(z, n, w)) in idx.iter().zip(saved) {
            if let Some(c) = self.cells.get_mut(i as usize) {
                *c = Cell { z, n, w };
            }
        }
        self.examples = self.examples.saturating_sub(1);
    }

    /// Raises one coordinate's weight to `floor` if it is below, keeping its accumulated
    /// squared gradients (as [`Model::reweight`] does), so learning continues from the floor.
    pub fn raise_to(&mut self, index: u32, floor: f32) {
        let Hyper { alpha, beta, l1, l2, .. } = self.hyper;
        let Some(c) = self.cells.get_mut(index as usize) else {
            return;
        };
        if !floor.is_finite() || c.w >= floor {
            return;
        }
        let z = z_for(floor, c.n, self.hyper);
        c.z = z;
        c.w = ftrl_weight(z, c.n, alpha, beta, l1, l2);
    }

    /// The learned weight of one coordinate.
    #[must_use]
    pub fn weight(&self, index: u32) -> f32 {
        self.cells.get(index as usize).map_or(0.0, |c| c.w)
    }

    /// Number of coordinates with any state.
    #[must_use]
    pub fn nonzero(&self) -> usize {
        self.cells.iter().filter(|c| c.n != 0.0).count()
    }

    /// Sparse state `(index, z, n)` of every touched coordinate, in index order.
    #[must_use]
    pub fn sparse_state(&self) -> Vec<(u32, f32, f32)> {
        self.cells
            .iter()
            .enumerate()
            .filter(|(_, c)| c.z != 0.0 || c.n != 0.0)
            .map(|(i, c)| (i as u32, c.z, c.n))
            .collect()
    }

    /// Rebuilds a model from sparse state; out-of-range indices are an error.
    ///
    /// # Errors
    /// An index beyond the weight space, or a non-finite accumulator.
    pub fn from_sparse_state(
        hyper: Hyper,
        version: String,
        examples: u64,
        state: &[(u32, f32, f32)],
    ) -> Result<Model, String> {
        let mut m = Model::new(hyper, version);
        m.examples = examples;
        let size = m.cells.len();
        for &(i, z, n) in state {
            let iu = i as usize;
            if iu >= size {
                return Err(format!("weight index {i} is outside a space of {size}"));
            }
            if !z.is_finite() || !n.is_finite() || n < 0.0 {
                return Err(format!("weight {i} has a non-finite or negative accumulator"));
            }
            let Hyper { alpha, beta, l1, l2, .. } = m.hyper;
            m.cells[iu] = Cell { z, n, w: ftrl_weight(z, n, alpha, beta, l1, l2) };
        }
        Ok(m)
    }
}

#[inline]
fn ftrl_weight(z: f32, n: f32, alpha: f32, beta: f32, l1: f32, l2: f32) -> f32 {
    weight_of(z, n.sqrt(), alpha, beta, l1, l2)
}

/// The `z` that gives weight `w` with accumulator `n` (the inverse of [`ftrl_weight`]).
#[inline]
fn z_for(w: f32, n: f32, hyper: Hyper) -> f32 {
    let Hyper { alpha, beta, l1, l2, .. } = hyper;
    let d = (beta + n.sqrt()) / alpha + l2;
    if w < 0.0 {
        l1 - w * d
    } else if w > 0.0 {
        -w * d - l1
    } else {
        0.0
    }
}

/// The weight of accumulators `z` and `n`, given `root` = `sqrt(n)`.
#[inline]
fn weight_of(z: f32, root: f32, alpha: f32, beta: f32, l1: f32, l2: f32) -> f32 {
    if z.abs() <= l1 { 0.0 } else { -(z - z.signum() * l1) / ((beta + root) / alpha + l2) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(idx: &[u32]) -> Features {
        Features { idx: idx.to_vec(), val: vec![1.0; idx.len()], offset: 0.0 }
    }

    fn small() -> Hyper {
        Hyper { bits: 10, ..Hyper::default() }
    }

    #[test]
    fn an_empty_model_predicts_one_half() {
        let m = Model::new(small(), "t");
        assert_eq!(m.score(&x(&[1, 2, 3])), 0.5);
        let with_offset = Features { offset: 2.0, ..x(&[1]) };
        assert!((m.score(&with_offset) - sigmoid(2.0)).abs() < 1e-12);
    }

    #[test]
    fn first_update_matches_the_closed_form() {
        // One step from zero with p = 0.5, y = 1: g = -0.5, n = 0.25, sigma = 0.5/alpha,
        // z = g = -0.5, w = (0.5 - l1) / ((beta + 0.5)/alpha + l2).
        let h = small();
        let mut m = Model::new(h, "t");
        let p = m.update(&x(&[7]), true, 1.0);
        assert_eq!(p, 0.5);
        let want = (0.5 - h.l1) / ((h.beta + 0.5) / h.alpha + h.l2);
        assert!((m.weight(7) - want).abs() < 1e-6, "{} vs {want}", m.weight(7));
    }

    #[test]
    fn learns_a_separable_problem_and_l1_zeroes_noise() {
        let mut m = Model::new(small(), "t");
        for k in 0..400 {
            m.update(&x(&[1, 100 + (k % 7)]), true, 1.0);
            m.update(&x(&[2, 100 + (k % 7)]), false, 1.0);
        }
        assert!(m.score(&x(&[1])) > 0.9);
        assert!(m.score(&x(&[2])) < 0.1);
        let mut m = Model::new(Hyper { l1: 5.0, ..small() }, "t");
        m.update(&x(&[3]), true, 1.0);
        assert_eq!(m.weight(3), 0.0);
    }

    #[test]
    fn zero_or_invalid_weights_change_nothing_and_updates_are_deterministic() {
        let mut a = Model::new(small(), "t");
        let before = a.clone();
        a.update(&x(&[1]), true, 0.0);
        a.update(&x(&[1]), true, f32::NAN);
        assert!(a.sparse_state().is_empty());
        assert_eq!(a.examples, before.examples);
        let mut b = Model::new(small(), "t");
        let mut c = Model::new(small(), "t");
        for k in 0..50u32 {
            let f = x(&[k % 5, 9]);
            b.update(&f, k % 3 == 0, 0.5);
            c.update(&f, k % 3 == 0, 0.5);
        }
        assert!(b == c);
    }

    #[test]
    fn set_weight_sets_exactly_that_weight() {
        let mut m = Model::new(small(), "t");
        m.set_weight(4, -2.0);
        m.set_weight(5, 1.5);
        assert!((m.weight(4) + 2.0).abs() < 1e-5 && (m.weight(5) - 1.5).abs() < 1e-5);
        m.set_weight(u32::MAX, 1.0);
    }

    #[test]
    fn out_of_range_indices_are_ignored_not_a_panic() {
        let mut m = Model::new(small(), "t");
        let f = x(&[5, u32::MAX]);
        let _ = m.score(&f);
        m.update(&f, true, 1.0);
        assert!(m.weight(5) > 0.0);
        assert!(Model::from_sparse_state(small(), "t".into(), 0, &[(1 << 20, 1.0, 1.0)]).is_err());
    }
}
