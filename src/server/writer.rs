//! The writer: one task that owns appends to the store and commits in groups.
//!
//! Rank handlers hand impressions (with the review items they raise) over without waiting;
//! they are written at most `impression_flush_ms` later, together with whatever else is
//! queued. Feedback handlers hand over a group and wait for its commit; every group queued
//! while a commit is in flight goes into the next one (group commit), so many concurrent
//! clients share each transaction. Because a batch writes its impressions before its
//! feedback, feedback for an impression still in the buffer works. Review items ride in the
//! same transaction as their impression: a separate transaction per handful of items cost the
//! rank path a third of its throughput (BENCHMARKS.md).
//!
//! Crash window: an impression that is still buffered when the process dies (at most
//! `impression_flush_ms` after its rank response, and only if no feedback for it arrived in
//! between) is lost, with its review items; later feedback for it gets a clear 404.
//! Acknowledged feedback is never lost: it is answered only after its commit.

use crate::events::{FeedbackIn, Impression};
use crate::store::{GroupOutcome, NewReviewItem, Store, WriteBatch};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

/// Impressions kept for retry while the store is failing, before the oldest are dropped.
const MAX_PENDING_IMPRESSIONS: usize = 100_000;
/// Feedback groups per transaction at most.
const MAX_GROUPS_PER_COMMIT: usize = 512;

pub type FeedbackReply = Result<GroupOutcome, String>;

enum Cmd {
    Impression(Box<Impression>, Vec<NewReviewItem>),
    Feedback(Vec<FeedbackIn>, oneshot::Sender<FeedbackReply>),
    Flush(oneshot::Sender<()>),
}

/// A cheap handle to the writer task.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Cmd>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

impl WriterHandle {
    /// Queues an impression and the review items of its candidates (waits only if the queue
    /// is full).
    pub async fn impression(&self, imp: Impression, review: Vec<NewReviewItem>) {
        let items = review.len() as u64;
        if self.tx.send(Cmd::Impression(Box::new(imp), review)).await.is_err() {
            tracing::warn!("writer stopped; impression dropped");
            metrics::counter!("guardrank_impressions_dropped_total").increment(1);
            metrics::counter!("guardrank_review_items_dropped_total").increment(items);
        }
    }

    /// Queues a feedback group and waits for its commit.
    ///
    /// # Errors
    /// The writer stopped or the store failed.
    pub async fn feedback(&self, events: Vec<FeedbackIn>) -> FeedbackReply {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::Feedback(events, tx)).await.map_err(|_| "writer stopped".to_string())?;
        rx.await.map_err(|_| "writer stopped".to_string())?
    }

    /// Writes everything queued so far.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the writer. It stops, after a last commit, when every handle is dropped.
pub fn spawn(
    store: Arc<dyn Store>,
    flush_every: Duration,
    committed: Arc<Notify>,
    now_ms: fn() -> i64,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(8192);
    let task = tokio::spawn(run(rx, store, flush_every, committed, now_ms));
    (WriterHandle { tx }, task)
}

type Group = (Vec<FeedbackIn>, oneshot::Sender<FeedbackReply>);

/// What the writer holds for its next commit.
#[derive(Default)]
struct Pending {
    impressions: Vec<Impression>,
    review: Vec<NewReviewItem>,
    groups: Vec<Group>,
    flushes: Vec<oneshot::Sender<()>>,
    /// When the buffered impressions are due.
    deadline: Option<Instant>,
}

impl Pending {
    fn take(&mut self, c: Cmd, flush_every: Duration) {
        match c {
            Cmd::Impression(i, mut review) => {
                self.impressions.push(*i);
                self.review.append(&mut review);
                self.deadline.get_or_insert_with(|| Instant::now() + flush_every);
            }
            Cmd::Feedback(e, tx) => self.groups.push((e, tx)),
            Cmd::Flush(tx) => self.flushes.push(tx),
        }
    }

    fn holds_writes(&self) -> bool {
        !self.impressions.is_empty() || !self.review.is_empty() || !self.groups.is_empty()
    }
}

/// Drops the oldest elements beyond `max`; returns how many.
fn drop_oldest<T>(v: &mut Vec<T>, max: usize) -> u64 {
    let n = v.len().saturating_sub(max);
    v.drain(..n);
    n as u64
}

async fn run(
    mut rx: mpsc::Receiver<Cmd>,
    store: Arc<dyn Store>,
    flush_every: Duration,
    committed: Arc<Notify>,
    now_ms: fn() -> i64,
) {
    let mut p = Pending::default();
    let mut open = true;
    while open || p.holds_writes() {
        let cmd = match p.deadline {
            _ if !open => None,
            None => rx.recv().await,
            Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                Ok(c) => c,
                Err(_) => Some(Cmd::Flush(oneshot::channel().0)),
            },
        };
        match cmd {
            Some(c) => p.take(c, flush_every),
            None => open = false,
        }
        while p.groups.len() < MAX_GROUPS_PER_COMMIT {
            match rx.try_recv() {
                Ok(c) => p.take(c, flush_every),
                Err(_) => break,
            }
        }
        let due = p.deadline.is_some_and(|d| Instant::now() >= d);
        if p.groups.is_empty() && p.flushes.is_empty() && !due && open && p.impressions.len() < 4096 {
            continue;
        }
        // The groups move into the batch; their reply channels wait beside it, in the same order.
        let (feedback, replies): (Vec<_>, Vec<_>) = p.groups.drain(..).unzip();
        let batch = WriteBatch {
            at_ms: now_ms(),
            impressions: std::mem::take(&mut p.impressions),
            feedback,
            review: std::mem::take(&mut p.review),
        };
        match store.commit(&batch).await {
            Ok(outcomes) => {
                for (tx, o) in replies.into_iter().zip(outcomes) {
                    let _ = tx.send(Ok(o));
                }
                super::review::count_queued(&batch.review);
                p.deadline = None;
                committed.notify_one();
            }
            Err(e) => {
                tracing::error!(error = %e, impressions = batch.impressions.len(), "commit failed");
                for tx in replies {
                    let _ = tx.send(Err(e.to_string()));
                }
                // Keep the impressions and review items for the next attempt, within a bound.
                p.impressions = batch.impressions;
                p.review = batch.review;
                let dropped = drop_oldest(&mut p.impressions, MAX_PENDING_IMPRESSIONS);
                metrics::counter!("guardrank_impressions_dropped_total").increment(dropped);
                let dropped = drop_oldest(&mut p.review, MAX_PENDING_IMPRESSIONS);
                metrics::counter!("guardrank_review_items_dropped_total").increment(dropped);
                p.deadline = Some(Instant::now() + flush_every.max(Duration::from_millis(200)));
                if !open {
                    tracing::error!(
                        lost = p.impressions.len(),
                        review_items = p.review.len(),
                        "store failing at shutdown; buffered impressions lost"
                    );
                    let dropped = drop_oldest(&mut p.impressions, 0);
                    metrics::counter!("guardrank_impressions_dropped_total").increment(dropped);
                    let dropped = drop_oldest(&mut p.review, 0);
                    metrics::counter!("guardrank_review_items_dropped_total").increment(dropped);
                }
            }
        }
        for f in p.flushes.drain(..) {
            let _ = f.send(());
        }
    }
}
