//! guardrank: an application-layer safety engine for AI code assistants.
//!
//! A plugin backend sends the candidate completions of one request; guardrank scores each
//! candidate's security risk, reranks and filters them, and learns from what users do.
//!
//! # Module map
//! The pure core (no I/O, no clocks, no async), depending only inward:
//! - [`lang`]: languages, file extensions, a cheap language guess from text.
//! - [`lexer`]: a forgiving lexer for code fragments; masks comments so rules never fire on them.
//! - [`rules`]: the rule pack (data/rules/*.toml), compiled into one `RegexSet` per language.
//! - [`features`]: hashed sparse features in namespaces, with a stable murmur3 hash.
//! - [`model`]: logistic regression trained online with FTRL-Proximal; the model file format;
//!   evaluation metrics.
//! - [`abuse`]: usage-pattern monitoring (robust z-scores against the population) that sets
//!   users' trust, and the poisoning defence of learning from feedback ([`abuse::guard`]).
//! - [`engine`]: rules + features + model → an [`engine::Assessment`] of one snippet.
//! - [`prompt`]: the request's prompt: prompt rules plus a learned two-head model (harmful
//!   request, prompt injection) trained from the multilingual prompt set of data/prompts/.
//! - [`scan`]: whole files: suppressions, baselines, windowed scoring.
//! - [`train`]: seeded multi-pass fitting; [`corpus`]: the labelled corpus and its split.
//! - [`batch`]: the retraining job's L-BFGS fit (linfa-logistic) mapped into the hashed space.
//!
//! The shell: [`cli`] (the `guardrank` command); [`registry`] (model versions in the store and
//! which is live); [`report`] (the retraining job's Markdown and SVG report).
//!
//! # Key decisions
//! - **Hashed features, stable hash.** Code vocabularies are open-ended; hashing into a fixed
//!   2^22 space needs no dictionary and lets a model learn features it has never seen. The hash
//!   is murmur3 with fixed per-namespace seeds (never std's randomly keyed SipHash), so indices
//!   are the same on every platform and release; the extractor carries a version that model
//!   files record.
//! - **FTRL-Proximal.** Per-coordinate learning rates and L1 sparsity suit sparse, heavy-tailed
//!   features learned online one event at a time, and updates are deterministic, so replaying
//!   the same log rebuilds the same weights.
//! - **Rules as priors.** Enforced rule hits add their severity's prior log-odds to the margin,
//!   so a high-severity finding is risky before any training and a new rule needs no retraining;
//!   the model learns corrections around the prior.
//! - **Linear-time matching.** Rust's `regex` guarantees linear-time search, so no rule and no
//!   input can stall a request.

#![forbid(unsafe_code)]

pub mod abuse;
pub mod batch;
pub mod cli;
pub mod corpus;
pub mod engine;
pub mod events;
pub mod features;
pub mod lang;
pub mod lexer;
pub mod model;
pub mod policy;
pub mod prompt;
pub mod rank;
pub mod registry;
pub mod report;
pub mod rules;
pub mod scan;
pub mod server;
pub mod store;
pub mod train;
