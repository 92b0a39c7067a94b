//! Fitting the online model in passes over a labelled set (used to build the baseline from
//! the corpus). Pure: examples in, model out; the order is a seeded shuffle, so the same data
//! and seed give the same model on every machine.

use crate::features::Features;
use crate::model::metrics::Progressive;
use crate::model::{Hyper, Model};

/// One labelled, weighted training example.
#[derive(Debug, Clone)]
pub struct Example {
    pub features: Features,
    /// The same example without its rule features and prior (for rule dropout), if any.
    pub without_rules: Option<Features>,
    pub insecure: bool,
    pub weight: f32,
    /// Examples of one group (a corpus family: the insecure and secure twins of one task) are
    /// never split across cross-validation folds.
    pub group: u64,
}

/// SplitMix64: a tiny, well-known generator, fixed so shuffles are reproducible everywhere.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Trains a fresh model with `epochs` shuffled passes. Returns the model and the progressive
/// validation of the first pass (each example scored before it was learned).
///
/// Rule dropout: with probability `rule_dropout` an example is learned without its rule
/// features and prior. Rules catch most insecure training snippets, so without dropout the
/// model learns "no rule hit means safe" and leaves the token features idle; real code has
/// weaknesses no rule names, and dropout makes the rest of the features carry signal too.
#[must_use]
pub fn fit(
    examples: &[Example],
    hyper: Hyper,
    epochs: usize,
    seed: u64,
    rule_dropout: f64,
    version: &str,
) -> (Model, Progressive) {
    let mut model = Model::new(hyper, version);
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut rng = SplitMix64(seed);
    let mut progressive = Progressive::default();
    for epoch in 0..epochs.max(1) {
        rng.shuffle(&mut order);
        for &i in &order {
            let e = &examples[i];
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let drop = rule_dropout > 0.0 && u < rule_dropout;
            let x = match (&e.without_rules, drop) {
                (Some(alt), true) => alt,
                _ => &e.features,
            };
            let p = model.update(x, e.insecure, e.weight);
            if epoch == 0 {
                progressive.record(p, e.insecure);
            }
        }
    }
    (model, progressive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitting_is_deterministic_and_learns() {
        let ex: Vec<Example> = (0..200u32)
            .map(|k| Example {
                features: Features { idx: vec![k % 2, 10 + k % 17], val: vec![1.0, 1.0], offset: 0.0 },
                without_rules: None,
                insecure: k % 2 == 0,
                weight: 1.0,
                group: u64::from(k),
            })
            .collect();
        let h = Hyper { bits: 10, ..Hyper::default() };
        let (a, pa) = fit(&ex, h, 3, 42, 0.0, "t");
        let (b, _) = fit(&ex, h, 3, 42, 0.0, "t");
        assert!(a == b);
        assert!(pa.report(0.5).roc_auc > 0.9);
        assert!(a.score(&ex[0].features) > 0.8);
        assert!(a.score(&ex[1].features) < 0.2);
    }

    #[test]
    fn splitmix_matches_its_reference_sequence() {
        // First outputs of SplitMix64 seeded with 0 (Vigna's reference implementation).
        let mut r = SplitMix64(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }
}
