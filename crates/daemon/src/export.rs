//! Exporters that send results to the client over its session: `local` (the files, by
//! the fsutil protocol) and `tar` (one tar stream).

use std::collections::BTreeMap;
use std::sync::Arc;

use ops::{OpsContext, Ref};
use proto::control::Exporter;
use tonic::Status;

use crate::errors::unimplemented;

/// Sends `result` to every exporter, in order; exporter `i` is the client's target `i`.
pub(crate) async fn export(
    ops: &Arc<OpsContext>,
    caller: &session::Caller,
    exporters: &[Exporter],
    result: &Ref,
) -> Result<(), Status> {
    for (i, e) in exporters.iter().enumerate() {
        let id = i as u64;
        let (ctx, r) = (ops.clone(), result.clone());
        let view = tokio::task::spawn_blocking(move || ops::mount_view(&ctx, &r))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|err| Status::internal(format!("exporter {}: {}", e.r#type, err.message)))?;
        match e.r#type.as_str() {
            "local" => {
                session::filesend::copy_to_caller(caller, id, view.path())
                    .await
                    .map_err(|err| Status::unknown(format!("exporter local: {err}")))?;
            }
            "tar" => {
                let dir = view.path().to_path_buf();
                let tar = tokio::task::spawn_blocking(move || {
                    let empty = tempfile::tempdir()?;
                    let mut out = Vec::new();
                    archive::diff_dirs(
                        empty.path(),
                        &dir,
                        &mut out,
                        &archive::DiffOptions::default(),
                    )
                    .map_err(std::io::Error::other)?;
                    Ok::<_, std::io::Error>(out)
                })
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|err| Status::internal(format!("exporter tar: {err}")))?;
                let mut w = session::filesend::copy_file_writer(caller, id, &BTreeMap::new())
                    .await
                    .map_err(|err| Status::unknown(format!("exporter tar: {err}")))?;
                w.write(&tar)
                    .await
                    .map_err(|err| Status::unknown(format!("exporter tar: {err}")))?;
                w.finish()
                    .await
                    .map_err(|err| Status::unknown(format!("exporter tar: {err}")))?;
            }
            other => return Err(unimplemented(&format!("exporter {other:?}"))),
        }
        drop(view);
    }
    Ok(())
}
