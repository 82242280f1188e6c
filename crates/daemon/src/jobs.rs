//! Progress of running and recent jobs by ref, so that `Status(ref)` can be asked before,
//! during or after `Solve(ref)` and still see every message in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::control::StatusResponse;
use tokio::sync::Notify;

/// How long a finished job's progress stays available.
const KEEP_FINISHED: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub(crate) struct JobProgress {
    history: Mutex<Vec<StatusResponse>>,
    notify: Notify,
    done: AtomicBool,
}

impl JobProgress {
    pub(crate) fn push(&self, msg: StatusResponse) {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(msg);
        self.notify.notify_waiters();
    }

    pub(crate) fn finish(&self) {
        self.done.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Messages from `from` on, waiting for more; `None` once the job is done and all were
    /// read.
    pub(crate) async fn next(&self, from: usize) -> Option<Vec<StatusResponse>> {
        loop {
            let notified = self.notify.notified();
            {
                let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
                if h.len() > from {
                    return Some(h[from..].to_vec());
                }
                if self.done.load(Ordering::SeqCst) {
                    return None;
                }
            }
            notified.await;
        }
    }
}

/// All jobs' progress by ref.
#[derive(Debug, Default, Clone)]
pub(crate) struct Jobs {
    map: Arc<Mutex<HashMap<String, Arc<JobProgress>>>>,
}

impl Jobs {
    /// The progress of `r`, created if this is the first to ask.
    pub(crate) fn get(&self, r: &str) -> Arc<JobProgress> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(r.to_string())
            .or_default()
            .clone()
    }

    /// Marks `r` finished and forgets it a while later.
    pub(crate) fn finish(&self, r: &str) {
        self.get(r).finish();
        let map = self.map.clone();
        let r = r.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(KEEP_FINISHED).await;
            map.lock().unwrap_or_else(|e| e.into_inner()).remove(&r);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn late_and_early_readers_see_everything() {
        let jobs = Jobs::default();
        let early = jobs.get("r");
        let reader = tokio::spawn(async move {
            let mut got = 0;
            while let Some(batch) = early.next(got).await {
                got += batch.len();
            }
            got
        });
        let p = jobs.get("r");
        p.push(StatusResponse::default());
        p.push(StatusResponse::default());
        jobs.finish("r");
        assert_eq!(reader.await.unwrap(), 2);
        let late = jobs.get("r");
        assert_eq!(late.next(0).await.map(|v| v.len()), Some(2));
        assert_eq!(late.next(2).await, None);
    }
}
