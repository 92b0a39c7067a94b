//! `guardrank serve` and `guardrank keys create`.

use crate::events::Scope;
use crate::server::settings::{LogFormat, Settings};
use crate::server::{Application, auth, now_ms, shutdown_signal};
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Command-line overrides of settings (they win over the file and the environment).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Listen address (default 127.0.0.1:8080).
    #[arg(long)]
    pub addr: Option<std::net::SocketAddr>,
    /// Data directory of the embedded store (default ./guardrank-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Store URL, e.g. sqlite:///var/lib/guardrank/guardrank.db.
    #[arg(long)]
    pub store: Option<String>,
    /// Settings file (default: ./guardrank.toml when it exists).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

fn env_map() -> BTreeMap<String, String> {
    std::env::vars().filter(|(k, _)| k.starts_with("GUARDRANK_")).collect()
}

/// Loads settings: file, environment, then these arguments.
pub fn load_settings(args: &ServeArgs) -> anyhow::Result<Settings> {
    let default_file = Path::new("guardrank.toml");
    let file = args.config.as_deref().or_else(|| default_file.exists().then_some(default_file));
    let mut s = Settings::load(file, &env_map()).context("invalid settings")?;
    if let Some(a) = args.addr {
        s.addr = a;
    }
    if let Some(d) = &args.data_dir {
        s.data_dir = d.clone();
    }
    if let Some(u) = &args.store {
        s.store = Some(u.clone());
    }
    Ok(s)
}

fn init_tracing(s: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&s.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match s.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

pub fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let settings = load_settings(args)?;
    init_tracing(&settings);
    let admin = std::env::var("GUARDRANK_ADMIN_KEY").ok();
    let plugin = std::env::var("GUARDRANK_PLUGIN_KEY").ok();
    runtime()?.block_on(async move {
        let app =
            Application::build(settings, admin.as_deref(), plugin.as_deref()).await.context("starting the service")?;
        // One machine-readable line, for scripts and tests that bind port 0.
        println!("guardrank listening on http://{}", app.addr());
        app.run(shutdown_signal()).await.context("serving")?;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn create_key(scope: &str, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let scope: Scope = scope.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let settings = load_settings(args)?;
    runtime()?.block_on(async move {
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
        let store =
            crate::store::open(&settings.store_url(), settings.durability).await.context("opening the store")?;
        let (rec, key) = auth::new_key(scope, now_ms());
        store.insert_key(&rec).await.context("storing the key")?;
        eprintln!(
            "created {} key {} (shown once; a running server accepts it after its next key refresh)",
            scope.name(),
            rec.id
        );
        println!("{key}");
        Ok(ExitCode::SUCCESS)
    })
}
