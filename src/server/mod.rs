//! The HTTP service: an axum shell around the pure core.
//!
//! [`Application::build`] opens the store, loads the newest snapshot, starts the writer and
//! the learner, binds (port 0 allowed) and reports its address; [`Application::run`] serves
//! until a shutdown signal, then drains requests, commits what is buffered and snapshots.
//! [`router`] is separate from serving, so tests can call it directly.

pub mod admin;
pub mod api;
pub mod audit;
pub mod auth;
pub mod console;
pub mod error;
pub mod extract;
pub mod figures;
pub mod learner;
pub mod openapi;
pub mod patches;
pub mod ratelimit;
pub mod review;
pub mod routes;
pub mod rules_admin;
pub mod settings;
pub mod snapshot;
pub mod state;
pub mod writer;

use crate::abuse::guard::Protected;
use crate::engine::BUILTIN_MODEL;
use crate::events::Scope;
use crate::model::{Hyper, Model, read_model};
use crate::store::Store;
use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use error::ApiError;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use settings::Settings;
use state::{AppState, Shared};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Request bodies above this are refused with 413 (API.md).
pub const BODY_LIMIT: usize = 1 << 20;

/// Wall-clock milliseconds since the epoch: the append time of events.
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The process-wide Prometheus recorder (a recorder can be installed once per process).
fn metrics_handle() -> PrometheusHandle {
    static H: OnceLock<PrometheusHandle> = OnceLock::new();
    H.get_or_init(|| {
        use metrics_exporter_prometheus::Matcher;
        let risk = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99];
        let secs = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
        let built = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("guardrank_candidate_risk".into()), &risk)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &secs))
            .and_then(PrometheusBuilder::install_recorder);
        match built {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    })
    .clone()
}

/// Counts and times every request by matched route and status.
async fn track(req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let start = Instant::now();
    let span = tracing::info_span!("request", %method, route = %route);
    let resp = tracing::Instrument::instrument(next.run(req), span).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("guardrank_http_requests_total", "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("guardrank_http_request_duration_seconds", "route" => route)
        .record(start.elapsed().as_secs_f64());
    resp
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// Maps a timeout or overload of the service stack to problem+json.
async fn timeout_guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let limit = Duration::from_millis(state.settings.request_timeout_ms);
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => axum::response::IntoResponse::into_response(ApiError::timeout()),
    }
}

/// The service's routes over a built state.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/rank", post(routes::rank))
        .route("/v1/feedback", post(routes::feedback))
        .route("/v1/users/{user_id}/policy", get(routes::policy))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(admin::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/admin/keys", get(admin::list_keys).post(admin::create_key))
        .route("/admin/keys/{key_id}", delete(admin::revoke_key))
        .route("/admin/users/{user_id}/policy/reset", post(admin::reset_policy))
        .route("/admin/users/{user_id}", delete(admin::erase_user))
        .route("/admin/state", get(admin::state_info))
        .route("/admin/models", get(admin::list_models))
        .route("/admin/models/reload", post(admin::reload_model))
        .route("/admin/models/{version}/activate", post(admin::activate_model))
        .route("/admin/review", get(review::list_review))
        .route("/admin/review/{id}", post(review::decide))
        .route("/admin/rules", get(rules_admin::list_rules).post(rules_admin::patch_rule))
        .route("/admin/rules/{rule_id}", delete(rules_admin::disable_rule))
        .route("/admin/audit", get(audit::list_audit))
        .route("/admin/figures", get(figures::figures))
        .route("/console", get(console::page))
        .route("/console/app.js", get(console::script))
        .route("/console/app.css", get(console::style))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&state), timeout_guard))
        .layer(middleware::from_fn(track))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Settings(#[from] settings::SettingsError),
    #[error(transparent)]
    Keys(#[from] auth::WeakKey),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("rules: {0}")]
    Rules(#[from] crate::rules::RuleError),
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("{0}")]
    Io(String),
}

/// The base model: the configured file, else the built-in baseline; `degraded` when a
/// configured file cannot be loaded (rule priors only, as the design asks).
fn base_model(settings: &Settings) -> (Model, bool) {
    if let Some(p) = &settings.model_file {
        match std::fs::File::open(p)
            .map_err(|e| e.to_string())
            .and_then(|f| read_model(std::io::BufReader::new(f)).map_err(|e| e.to_string()))
        {
            Ok(m) => return (m, false),
            Err(e) => {
                tracing::error!(path = %p.display(), error = %e, "model file not loaded; scoring with rule priors only");
                return (rule_prior_model(), true);
            }
        }
    }
    match read_model(BUILTIN_MODEL) {
        Ok(m) => (m, false),
        Err(e) => {
            tracing::error!(error = %e, "built-in model not loaded; scoring with rule priors only");
            (rule_prior_model(), true)
        }
    }
}

/// A model that knows nothing: the risk is the rule priors over a bias of -2 log-odds.
fn rule_prior_model() -> Model {
    let mut m = Model::new(Hyper::default(), "rule-priors");
    let bias = crate::features::Extractor::new(m.hyper().bits).bias_index();
    m.set_weight(bias, -2.0);
    m
}

/// A server ready to run: bound, with its background tasks started.
pub struct Application {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
    stop_learner: Arc<Notify>,
    learner: Option<std::thread::JoinHandle<()>>,
    writer_task: tokio::task::JoinHandle<()>,
    review_task: tokio::task::JoinHandle<()>,
    compactor: tokio::task::JoinHandle<()>,
    sampler: tokio::task::JoinHandle<()>,
    metrics_upkeep: tokio::task::JoinHandle<()>,
}

/// How often the recorder's histogram samples are folded into their buckets and summaries.
const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds recorded histogram samples into their distributions on a timer. The recorder keeps
/// every sample until then (it runs no upkeep of its own when installed with
/// `install_recorder`), so without this a replica that nobody scrapes would grow by every
/// sample of every request: about 50 bytes a rank call.
async fn metrics_upkeep_loop(handle: PrometheusHandle) {
    let mut tick = tokio::time::interval(METRICS_UPKEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let h = handle.clone();
        // Draining takes a lock and touches every sample since the last upkeep: off the workers.
        if tokio::task::spawn_blocking(move || h.run_upkeep()).await.is_err() {
            tracing::warn!("metrics upkeep failed");
        }
    }
}

/// Compacts on a timer: impressions that got no feedback after `impression_ttl_days`
/// (replay never reads impressions, so any may go), and feedback older than
/// `feedback_retention_days` but only up to the newest snapshot (replay needs the rest).
async fn compaction_loop(state: Arc<AppState>) {
    let every = Duration::from_secs_f64(state.settings.compaction_interval_s);
    let day_ms = 86_400_000.0;
    loop {
        tokio::time::sleep(every).await;
        let now = now_ms();
        let store = &state.store;
        let imp_cut = now - (state.settings.impression_ttl_days * day_ms) as i64;
        let fb_cut = now - (state.settings.feedback_retention_days * day_ms) as i64;
        let result = async {
            let last = store.last_seq().await?;
            let a = store.compact(imp_cut, None, last).await?;
            let snap = store.list_snapshots().await?.first().map_or(0, |s| s.seq);
            let b = store.compact(i64::MIN, Some(fb_cut), snap).await?;
            Ok::<_, crate::store::StoreError>((a.impressions, b.feedback))
        }
        .await;
        match result {
            Ok((0, 0)) => {}
            Ok((impressions, feedback)) => tracing::info!(impressions, feedback, "compacted"),
            Err(e) => tracing::warn!(error = %e, "compaction failed; will retry"),
        }
        review_upkeep(&state, now).await;
    }
}

/// Expires and bounds the review queue, and sets the oversight gauges: review items by status
/// and the incident rate (accepted candidates later judged insecure per 10,000 rank requests,
/// over the impression TTL).
pub async fn review_upkeep(state: &AppState, now: i64) {
    let day_ms = 86_400_000.0;
    let retention = (state.settings.review_retention_days * day_ms) as i64;
    let store = &state.store;
    match store.review_upkeep(now - retention, now - 2 * retention, state.settings.review_max_uncertain).await {
        Ok(u) if u == crate::store::ReviewUpkeep::default() => {}
        Ok(u) => tracing::info!(expired = u.expired, dropped = u.dropped, purged = u.purged, "review queue upkeep"),
        Err(e) => tracing::warn!(error = %e, "review queue upkeep failed; will retry"),
    }
    if let Ok(counts) = store.review_counts().await {
        for s in crate::store::ReviewStatus::ALL {
            let n = counts.iter().find(|(c, _)| *c == s).map_or(0, |(_, n)| *n);
            metrics::gauge!("guardrank_review_items", "status" => s.name()).set(n as f64);
        }
    }
    let window = (state.settings.impression_ttl_days * day_ms) as i64;
    if let Ok((incidents, interactions)) = store.incident_counts(now - window).await {
        let rate = if interactions == 0 { 0.0 } else { incidents as f64 * 10_000.0 / interactions as f64 };
        metrics::gauge!("guardrank_incident_rate_per_10k").set(rate);
    }
}

impl Application {
    /// Builds the service: settings are already validated; `admin_key`/`plugin_key` are
    /// the environment keys (if set).
    ///
    /// # Errors
    /// A weak environment key, a store that cannot open, an address that cannot be bound.
    pub async fn build(
        settings: Settings,
        admin_key: Option<&str>,
        plugin_key: Option<&str>,
    ) -> Result<Application, StartError> {
        let keys = auth::KeyRing::new(admin_key, plugin_key)?;
        std::fs::create_dir_all(&settings.data_dir)
            .map_err(|e| StartError::Io(format!("creating data dir {}: {e}", settings.data_dir.display())))?;
        let store = crate::store::open(&settings.store_url(), settings.durability).await?;
        let stored_keys = store.list_keys().await?;
        for k in &stored_keys {
            keys.upsert(k);
        }
        if stored_keys.is_empty() && !keys.has_env_keys() {
            initial_keys(store.as_ref(), &keys, &settings).await?;
        }

        let (model, degraded) = base_model(&settings);
        let mut restored = None;
        if let Some(r) = snapshot::load_newest_snapshot(store.as_ref()).await {
            tracing::info!(seq = r.seq, users = r.policies.len(), "snapshot loaded");
            restored = Some(r);
        }
        let target = store.last_seq().await?;
        // Rule patches logged before the snapshot: the learner replays only those after it.
        let applied = restored.as_ref().map_or(0, |r| r.seq);
        let mut rule_set = patches::RuleSet::new(crate::rules::builtin_specs()?);
        rule_set.restore(&store.rule_events(applied).await?);
        let pack = rule_set.pack()?;
        let mut shared = Shared {
            protected: ArcSwap::from_pointee(Protected::from_rules(
                pack.rules(),
                model.hyper().bits,
                settings.label_rule_floor,
            )),
            model: RwLock::new(model),
            policies: RwLock::new(std::collections::BTreeMap::new()),
            applied_seq: AtomicI64::new(0),
            replay_target: AtomicI64::new(target),
            ready: AtomicBool::new(false),
            policy_cfg: settings.policy(),
            label_weights: settings.label_weights(),
            keys,
            snapshot_every: settings.snapshot_every,
            snapshots_kept: settings.snapshots_kept,
            tail_interval: Duration::from_millis(100),
            abuse_cfg: settings.abuse(),
            guard_cfg: settings.guard(),
            tiers: settings.tiers(),
            key_usage: RwLock::new(std::collections::BTreeMap::new()),
            population: RwLock::new(crate::abuse::Population::reference()),
            log_ms: AtomicI64::new(0),
            rules: ArcSwap::from_pointee(pack),
            rule_set: RwLock::new(rule_set),
            figures: figures::Figures::default(),
        };
        if let Some(r) = restored {
            if !degraded {
                shared.protected = ArcSwap::from_pointee(Protected::from_rules(
                    shared.rules.load().rules(),
                    r.model.hyper().bits,
                    settings.label_rule_floor,
                ));
                shared.model = RwLock::new(r.model);
            }
            shared.policies = RwLock::new(r.policies);
            shared.key_usage = RwLock::new(r.keys);
            shared.population = RwLock::new(r.population);
            shared.log_ms = AtomicI64::new(r.log_ms);
            shared.applied_seq = AtomicI64::new(r.seq);
        }
        let shared = Arc::new(shared);
        let committed = Arc::new(Notify::new());
        let (writer, writer_task) = writer::spawn(
            Arc::clone(&store),
            Duration::from_millis(settings.impression_flush_ms),
            Arc::clone(&committed),
            now_ms,
        );
        let (review, review_task) = review::spawn(Arc::clone(&store), Arc::clone(&shared));
        let stop_learner = Arc::new(Notify::new());
        let learner = learner::spawn(
            Arc::clone(&shared),
            Arc::clone(&store),
            Arc::clone(&committed),
            Arc::clone(&stop_learner),
            tokio::runtime::Handle::current(),
        )
        .map_err(|e| StartError::Io(format!("starting the learner thread: {e}")))?;
        let state = Arc::new(AppState {
            shared,
            key_limiter: ratelimit::TieredLimiter::new(
                settings.rate_limit_key_per_s,
                settings.rate_limit_key_burst,
                settings.tiers(),
                settings.rate_limit_replicas,
            )
            .at_most(ratelimit::Tier::Reduced),
            user_limiter: ratelimit::TieredLimiter::new(
                settings.rate_limit_user_per_s,
                settings.rate_limit_user_burst,
                settings.tiers(),
                settings.rate_limit_replicas,
            ),
            prompt: crate::prompt::PromptScorer::builtin()
                .map_err(|e| StartError::Io(format!("prompt scorer: {e}")))?,
            committed,
            writer,
            review,
            store,
            metrics: metrics_handle(),
            degraded,
            started: Instant::now(),
            anomalies: std::sync::Mutex::new(std::collections::HashMap::new()),
            settings: settings.clone(),
        });
        let listener =
            tokio::net::TcpListener::bind(settings.addr).await.map_err(|e| StartError::Bind(settings.addr, e))?;
        let addr = listener.local_addr().map_err(|e| StartError::Bind(settings.addr, e))?;
        let version = state.shared.model.read().map(|m| m.version.clone()).unwrap_or_default();
        metrics::gauge!("guardrank_model_info", "version" => version).set(1.0);
        // Build every rule matcher now, off the request path.
        if settings.warm_rules {
            let warm = Arc::clone(&state);
            tokio::task::spawn_blocking(move || {
                warm.shared.rules.load().warm_up();
                warm.prompt.rules.warm_up();
            });
        }
        let compactor = tokio::spawn(compaction_loop(Arc::clone(&state)));
        let sampler = tokio::spawn(figures::sample_loop(Arc::clone(&state)));
        let metrics_upkeep = tokio::spawn(metrics_upkeep_loop(state.metrics.clone()));
        Ok(Application {
            listener,
            addr,
            state,
            stop_learner,
            learner: Some(learner),
            writer_task,
            review_task,
            compactor,
            sampler,
            metrics_upkeep,
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (for tests and tools).
    #[must_use]
    pub fn state(&self) -> Arc<AppState> {
        Arc::clone(&self.state)
    }

    /// Serves until `shutdown` completes; then stops accepting, finishes in-flight requests,
    /// commits buffered impressions, lets the learner catch up and writes a snapshot.
    ///
    /// # Errors
    /// The server failed.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        tracing::info!(addr = %self.addr, "guardrank listening");
        let app = router(Arc::clone(&self.state));
        let served = axum::serve(self.listener, app.into_make_service()).with_graceful_shutdown(shutdown).await;
        self.compactor.abort();
        self.sampler.abort();
        self.metrics_upkeep.abort();
        tracing::info!("draining: committing buffered impressions");
        self.state.writer.flush().await;
        let state = self.state;
        drop(state);
        let _ = (&mut self.writer_task).await;
        // The review queue's last items; bounded, as it is best effort.
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.review_task).await;
        self.stop_learner.notify_one();
        if let Some(l) = self.learner.take() {
            let _ = tokio::task::spawn_blocking(move || l.join()).await;
        }
        tracing::info!("stopped");
        served.map_err(|e| StartError::Io(e.to_string()))
    }
}

/// Creates one admin and one plugin key on first start, prints them once, and writes them to
/// `<data-dir>/initial-keys.txt` (mode 0600) for the operator to read and delete.
async fn initial_keys(store: &dyn Store, ring: &auth::KeyRing, settings: &Settings) -> Result<(), StartError> {
    let now = now_ms();
    let (admin, admin_key) = auth::new_key(Scope::Admin, now);
    let (plugin, plugin_key) = auth::new_key(Scope::Plugin, now);
    store.insert_key(&admin).await?;
    store.insert_key(&plugin).await?;
    ring.upsert(&admin);
    ring.upsert(&plugin);
    let text = format!(
        "# guardrank initial keys, created at first start. Store them safely and delete this file.\n\
         admin  {admin_key}\nplugin {plugin_key}\n"
    );
    let path = settings.data_dir.join("initial-keys.txt");
    write_private(&path, &text).map_err(|e| StartError::Io(format!("writing {}: {e}", path.display())))?;
    // Printed once, to the terminal, never through the log.
    println!("{text}(also written to {})", path.display());
    Ok(())
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received");
}

/// Used by tests: resolves when `flag` is notified.
pub async fn flag_shutdown(flag: Arc<Notify>) {
    flag.notified().await;
}

#[doc(hidden)]
pub fn is_ready(state: &AppState) -> bool {
    state.shared.ready.load(Ordering::Acquire)
}
