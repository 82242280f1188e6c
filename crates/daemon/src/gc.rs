//! Disk usage, pruning and automatic garbage collection of the build cache
//! (`DiskUsage`, `Prune`, `[worker.oci] gc` and `[[worker.oci.gcpolicy]]`).
//!
//! Automatic GC runs the policies in order after builds (at most once per
//! `gc-interval`, one minute by default as upstream, with a run at the end of the
//! interval when builds finished meanwhile), at start-up, and every ten minutes; it
//! logs what it freed.
//!
//! Content-store blobs are not cache records: at start-up, before any build can use
//! them, the blobs that no lease holds and no remaining snapshot was made from or
//! exported as are removed ([`collect_unused_blobs`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cache::{CacheManager, PruneOptions};
use proto::control::{PruneRequest, UsageRecord};
use tonic::Status;

/// How often GC runs without builds.
const TIMER: Duration = Duration::from_secs(600);

fn timestamp(t: Option<SystemTime>) -> Option<prost_types::Timestamp> {
    let d = t?.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    Some(prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    })
}

/// A cache record on the wire.
pub(crate) fn usage_record(r: &cache::UsageRecord) -> UsageRecord {
    UsageRecord {
        id: r.id.clone(),
        mutable: r.mutable,
        in_use: r.in_use,
        size: i64::try_from(r.size).unwrap_or(i64::MAX),
        #[allow(deprecated)]
        parent: r.parents.first().cloned().unwrap_or_default(),
        created_at: timestamp(r.created),
        last_used_at: timestamp(r.last_used),
        usage_count: i64::try_from(r.usage_count).unwrap_or(i64::MAX),
        description: r.description.clone(),
        record_type: r.record_type.as_str().to_string(),
        shared: r.shared,
        parents: r.parents.clone(),
    }
}

fn non_negative(v: i64, what: &str) -> Result<u64, Status> {
    u64::try_from(v).map_err(|_| Status::invalid_argument(format!("prune: {what} {v} is negative")))
}

/// The options of a `Prune` request.
pub(crate) fn prune_options(req: &PruneRequest) -> Result<PruneOptions, Status> {
    for f in &req.filter {
        cache::Filter::parse(f).map_err(|e| Status::invalid_argument(format!("prune: {e}")))?;
    }
    Ok(PruneOptions {
        all: req.all,
        filters: req.filter.clone(),
        keep_duration: (req.keep_duration != 0)
            .then(|| non_negative(req.keep_duration, "keepDuration").map(Duration::from_nanos))
            .transpose()?,
        reserved_space: non_negative(req.reserved_space, "reservedSpace")?,
        max_used_space: non_negative(req.max_used_space, "maxUsedSpace")?,
        min_free_space: non_negative(req.min_free_space, "minFreeSpace")?,
    })
}

/// Removes the content-store blobs nothing needs any more: held by no lease, and not
/// the pulled or exported blob of a snapshot that still exists (`registry.layer_blobs`,
/// `exporter.layer_blobs`). Only safe while no build runs (a build's blobs are not all
/// leased): the daemon calls it at start-up. Blocking.
pub(crate) fn collect_unused_blobs(worker: &worker::Worker) -> Result<content::GcReport, String> {
    let snapshots: std::collections::HashSet<String> = worker
        .snapshotter
        .list()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|i| i.key)
        .collect();
    let mut roots = std::collections::HashSet::new();
    for key in &snapshots {
        for b in registry::layer_blobs(&worker.content, key).map_err(|e| e.to_string())? {
            roots.insert(b.digest);
        }
    }
    let rows = worker
        .metadata
        .scan(exporter::LAYER_BLOBS_TABLE, b"")
        .map_err(|e| e.to_string())?;
    for (k, v) in rows {
        let snapshot = k.split(|b| *b == 0).next().unwrap_or_default();
        let Ok(snapshot) = std::str::from_utf8(snapshot) else {
            continue;
        };
        if !snapshots.contains(snapshot) {
            continue;
        }
        if let Some(d) = serde_json::from_slice::<serde_json::Value>(&v)
            .ok()
            .and_then(|v| v["digest"].as_str().and_then(|d| d.parse().ok()))
        {
            roots.insert(d);
        }
    }
    worker.content.gc(&roots).map_err(|e| e.to_string())
}

/// Automatic garbage collection.
pub(crate) struct Gc {
    cache: Arc<CacheManager>,
    policies: Vec<PruneOptions>,
    enabled: bool,
    interval: Duration,
    state: Mutex<GcState>,
}

#[derive(Default)]
struct GcState {
    last: Option<Instant>,
    /// A run is scheduled for the end of the interval.
    pending: bool,
}

impl Gc {
    pub(crate) fn new(
        cache: Arc<CacheManager>,
        policies: Vec<PruneOptions>,
        enabled: bool,
        interval: Duration,
    ) -> Arc<Gc> {
        Arc::new(Gc {
            cache,
            policies,
            enabled,
            interval,
            state: Mutex::new(GcState::default()),
        })
    }

    /// The policies, in order.
    pub(crate) fn policies(&self) -> &[PruneOptions] {
        &self.policies
    }

    /// Runs every policy once now (blocking); returns the bytes freed.
    fn run_now(&self) -> u64 {
        let started = Instant::now();
        let mut freed = 0;
        let mut records = 0;
        for (i, p) in self.policies.iter().enumerate() {
            match self.cache.prune(p, &mut |_| {}) {
                Ok(report) => {
                    freed += report.bytes_freed;
                    records += report.removed.len();
                }
                Err(e) => tracing::warn!(policy = i, error = %e, "garbage collection failed"),
            }
        }
        if records > 0 {
            tracing::info!(
                records,
                bytes = freed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "garbage collection freed build cache"
            );
        } else {
            tracing::debug!("garbage collection: nothing to free");
        }
        freed
    }

    /// Starts the timer (and a first run now).
    pub(crate) fn start(self: &Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        if !self.enabled {
            return;
        }
        let gc = self.clone();
        tokio::spawn(async move {
            let mut timer = tokio::time::interval(TIMER.max(gc.interval));
            loop {
                tokio::select! {
                    _ = timer.tick() => gc.trigger(),
                    () = shutdown.cancelled() => return,
                }
            }
        });
    }

    /// Asks for a run (after a build): now when the last one is older than the
    /// interval, else once at its end.
    pub(crate) fn trigger(self: &Arc<Self>) {
        if !self.enabled || self.policies.is_empty() {
            return;
        }
        let wait = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if s.pending {
                return;
            }
            s.pending = true;
            match s.last {
                Some(last) => self.interval.saturating_sub(last.elapsed()),
                None => Duration::ZERO,
            }
        };
        let gc = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            {
                let mut s = gc.state.lock().unwrap_or_else(|e| e.into_inner());
                s.pending = false;
                s.last = Some(Instant::now());
            }
            let run = gc.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || run.run_now()).await {
                tracing::warn!(error = %e, "garbage collection task failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_requests_become_options() {
        let o = prune_options(&PruneRequest {
            filter: vec!["type==regular".into()],
            all: true,
            keep_duration: 3_600_000_000_000,
            reserved_space: 1,
            max_used_space: 2,
            min_free_space: 3,
        })
        .unwrap();
        assert!(o.all);
        assert_eq!(o.keep_duration, Some(Duration::from_secs(3600)));
        assert_eq!(
            (o.reserved_space, o.max_used_space, o.min_free_space),
            (1, 2, 3)
        );
        let bad = prune_options(&PruneRequest {
            max_used_space: -1,
            ..PruneRequest::default()
        });
        assert!(bad.unwrap_err().message().contains("maxUsedSpace"));
        let bad = prune_options(&PruneRequest {
            filter: vec!["nope".into()],
            ..PruneRequest::default()
        });
        assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
