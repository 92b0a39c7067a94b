//! `guardrank models list|rollback`: the registry from the command line.

use super::serve::{ServeArgs, load_settings};
use crate::events::ActivationReason;
use crate::server::admin::rfc3339;
use anyhow::Context;
use std::process::ExitCode;

fn open(args: &ServeArgs) -> anyhow::Result<(tokio::runtime::Runtime, std::sync::Arc<dyn crate::store::Store>)> {
    let settings = load_settings(args)?;
    if settings.store.is_none() && !settings.data_dir.join("guardrank.db").exists() {
        anyhow::bail!(
            "{} holds no guardrank store (guardrank.db); pass --data-dir or --store",
            settings.data_dir.display()
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    let store =
        rt.block_on(crate::store::open(&settings.store_url(), settings.durability)).context("opening the store")?;
    Ok((rt, store))
}

fn figure(m: &serde_json::Value, path: &[&str]) -> String {
    let mut v = m;
    for p in path {
        v = &v[*p];
    }
    v.as_f64().map_or_else(|| "-".to_string(), |x| format!("{x:.4}"))
}

/// Lists the registry's versions, newest first, marking the live one.
pub fn list(args: &ServeArgs, json: bool) -> anyhow::Result<ExitCode> {
    let (rt, store) = open(args)?;
    let (entries, live) = rt.block_on(crate::registry::list(store.as_ref())).context("reading the registry")?;
    if json {
        let v = serde_json::json!({
            "live": live.as_ref().map(|(_, a)| a.version.clone()),
            "models": entries,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        println!("the registry is empty: the service serves its built-in or configured model");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<2} {:<28} {:<24} {:>9} {:>12} {:>12} {:>12} {:>12}",
        "", "version", "created", "through", "corpus AUC", "corpus LL", "events AUC", "events LL"
    );
    for e in &entries {
        println!(
            "{:<2} {:<28} {:<24} {:>9} {:>12} {:>12} {:>12} {:>12}",
            if e.live { "*" } else { "" },
            e.version,
            rfc3339(e.created_at_ms),
            e.trained_through_seq,
            figure(&e.metrics, &["holdout", "corpus", "candidate", "roc_auc"]),
            figure(&e.metrics, &["holdout", "corpus", "candidate", "log_loss"]),
            figure(&e.metrics, &["holdout", "events", "candidate", "roc_auc"]),
            figure(&e.metrics, &["holdout", "events", "candidate", "log_loss"]),
        );
    }
    if let Some((seq, a)) = &live {
        println!("live: {} ({} by {}, event {seq})", a.version, a.reason.name(), a.actor);
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes an earlier version live again.
pub fn rollback(version: &str, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let (rt, store) = open(args)?;
    let seq = rt.block_on(async {
        // Refuse a version whose file no longer decodes: the replicas could not switch to it.
        crate::registry::load(store.as_ref(), version).await?;
        crate::registry::activate(store.as_ref(), version, ActivationReason::Rollback, "cli", crate::server::now_ms())
            .await
    })?;
    eprintln!("{version} is live (activation event {seq}); running services switch within their tail interval");
    Ok(ExitCode::SUCCESS)
}
