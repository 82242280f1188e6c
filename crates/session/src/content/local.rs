//! An OCI image layout directory as a content store: committed blobs under
//! `blobs/sha256/<hex>`, ingests in progress under `ingest/<sha256 of the ref>/` (`data`,
//! `ref`, `total`, `startedat`, `updatedat`, as containerd's local store keeps them, so
//! either can resume the other's ingests). Blocking; the server calls it on blocking
//! threads. Every path is built from a validated digest or a hash, never from a name
//! the peer chose.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};
use tonic::Status;

use super::{digest_hex, invalid_digest};

const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_JSON: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// A committed blob.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlobInfo {
    pub(crate) size: u64,
    pub(crate) created: Option<SystemTime>,
    pub(crate) updated: Option<SystemTime>,
}

/// The state of an ingest.
#[derive(Clone, Debug)]
pub(crate) struct IngestStatus {
    pub(crate) r#ref: String,
    pub(crate) offset: u64,
    pub(crate) total: i64,
    pub(crate) started_at: SystemTime,
    pub(crate) updated_at: SystemTime,
}

/// One layout directory.
#[derive(Debug)]
pub(crate) struct LayoutStore {
    root: PathBuf,
    /// Refs with an open writer, and since when.
    locks: Mutex<HashMap<String, SystemTime>>,
}

/// An I/O failure as a gRPC status, with what was being done.
pub(crate) fn io_status(what: &str, e: &io::Error) -> Status {
    let msg = format!("{what}: {e}");
    match e.kind() {
        io::ErrorKind::NotFound => Status::not_found(msg),
        io::ErrorKind::PermissionDenied => Status::permission_denied(msg),
        io::ErrorKind::AlreadyExists => Status::already_exists(msg),
        _ => Status::internal(msg),
    }
}

fn checked_hex(digest: &str) -> Result<&str, Status> {
    digest_hex(digest).ok_or_else(|| Status::invalid_argument(invalid_digest(digest)))
}

impl LayoutStore {
    pub(crate) fn new(root: PathBuf) -> LayoutStore {
        LayoutStore {
            root,
            locks: Mutex::default(),
        }
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.root.join("blobs").join("sha256").join(hex)
    }

    fn ingest_root(&self) -> PathBuf {
        self.root.join("ingest")
    }

    fn ingest_dir(&self, r#ref: &str) -> PathBuf {
        self.ingest_root()
            .join(hex::encode(Sha256::digest(r#ref.as_bytes())))
    }

    /// The blob `digest`, if the store has it.
    pub(crate) fn info(&self, digest: &str) -> Result<Option<BlobInfo>, Status> {
        let hex = checked_hex(digest)?;
        match fs::metadata(self.blob_path(hex)) {
            Ok(md) if md.is_file() => Ok(Some(BlobInfo {
                size: md.len(),
                created: md.modified().ok(),
                updated: md.accessed().ok(),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_status(&format!("blob {digest}"), &e)),
        }
    }

    /// Opens the blob `digest` for reading, with its size.
    pub(crate) fn open(&self, digest: &str) -> Result<Option<(File, u64)>, Status> {
        let hex = checked_hex(digest)?;
        match File::open(self.blob_path(hex)) {
            Ok(f) => {
                let md = f
                    .metadata()
                    .map_err(|e| io_status(&format!("blob {digest}"), &e))?;
                if !md.is_file() {
                    return Ok(None);
                }
                Ok(Some((f, md.len())))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_status(&format!("blob {digest}"), &e)),
        }
    }

    /// Removes the blob `digest`; false when there was none.
    pub(crate) fn delete(&self, digest: &str) -> Result<bool, Status> {
        let hex = checked_hex(digest)?;
        match fs::remove_file(self.blob_path(hex)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_status(&format!("delete blob {digest}"), &e)),
        }
    }

    /// Every committed blob (files under `blobs/sha256` named by a valid digest).
    pub(crate) fn list(&self) -> Result<Vec<(String, BlobInfo)>, Status> {
        let dir = self.root.join("blobs").join("sha256");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_status("list blobs", &e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_status("list blobs", &e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let digest = format!("sha256:{name}");
            if digest_hex(&digest).is_none() {
                continue;
            }
            if let Some(info) = self.info(&digest)? {
                out.push((digest, info));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The ingest `ref`, if there is one.
    pub(crate) fn status(&self, r#ref: &str) -> Result<Option<IngestStatus>, Status> {
        read_status(&self.ingest_dir(r#ref))
            .map_err(|e| io_status(&format!("status of ingest {ref:?}"), &e))
    }

    /// Every ingest in progress.
    pub(crate) fn list_statuses(&self) -> Result<Vec<IngestStatus>, Status> {
        let entries = match fs::read_dir(self.ingest_root()) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_status("list ingests", &e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_status("list ingests", &e))?;
            match read_status(&entry.path()) {
                Ok(Some(s)) => out.push(s),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(path = %entry.path().display(), error = %e, "skipping unreadable ingest");
                }
            }
        }
        out.sort_by(|a, b| a.r#ref.cmp(&b.r#ref));
        Ok(out)
    }

    /// Drops the ingest `ref`; false when there was none.
    pub(crate) fn abort(&self, r#ref: &str) -> Result<bool, Status> {
        match fs::remove_dir_all(self.ingest_dir(r#ref)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_status(&format!("abort ingest {ref:?}"), &e)),
        }
    }

    fn lock(&self, r#ref: &str) -> Result<(), Status> {
        let mut locks = self
            .locks
            .lock()
            .map_err(|_| Status::internal("ingest locks poisoned"))?;
        if let Some(since) = locks.get(r#ref) {
            let held = SystemTime::now().duration_since(*since).unwrap_or_default();
            return Err(Status::unavailable(format!(
                "ref {ref} locked for {:.1}s by another writer",
                held.as_secs_f64()
            )));
        }
        locks.insert(r#ref.to_string(), SystemTime::now());
        Ok(())
    }

    fn unlock(&self, r#ref: &str) {
        if let Ok(mut locks) = self.locks.lock() {
            locks.remove(r#ref);
        }
    }

    /// Starts, or resumes, the ingest `ref`. `AlreadyExists` when `expected` is
    /// committed already; `Unavailable` while another writer holds the ref.
    pub(crate) fn writer(
        self: &Arc<Self>,
        r#ref: &str,
        total: i64,
        expected: Option<&str>,
    ) -> Result<Ingest, Status> {
        if r#ref.is_empty() {
            return Err(Status::invalid_argument("ref must not be empty"));
        }
        if let Some(expected) = expected {
            if self.info(expected)?.is_some() {
                return Err(Status::already_exists(format!(
                    "content {expected}: already exists"
                )));
            }
        }
        self.lock(r#ref)?;
        let opened = self.open_ingest(r#ref, total);
        match opened {
            Ok(ingest) => Ok(ingest),
            Err(e) => {
                self.unlock(r#ref);
                Err(io_status(&format!("open ingest {ref:?}"), &e))
            }
        }
    }

    /// With the ref locked: resumes a valid ingest, or sets up a new one.
    fn open_ingest(self: &Arc<Self>, r#ref: &str, total: i64) -> io::Result<Ingest> {
        let dir = self.ingest_dir(r#ref);
        fs::create_dir_all(self.ingest_root())?;
        let resumed = match fs::create_dir(&dir) {
            Ok(()) => None,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                match resume(&dir, r#ref, total) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::debug!(r#ref, error = %e, "cannot resume ingest, starting over");
                        None
                    }
                }
            }
            Err(e) => return Err(e),
        };
        let ingest = match resumed {
            Some((status, hasher)) => {
                let mut file = OpenOptions::new().write(true).open(dir.join("data"))?;
                file.seek(SeekFrom::Start(status.offset))?;
                Ingest {
                    store: self.clone(),
                    r#ref: r#ref.to_string(),
                    dir,
                    file: Some(file),
                    hasher,
                    offset: status.offset,
                    total: status.total,
                    started_at: status.started_at,
                    updated_at: status.updated_at,
                }
            }
            None => {
                let now = SystemTime::now();
                fs::write(dir.join("ref"), r#ref)?;
                fs::write(dir.join("startedat"), format_rfc3339(now))?;
                fs::write(dir.join("updatedat"), format_rfc3339(now))?;
                let total_file = dir.join("total");
                if total > 0 {
                    fs::write(&total_file, total.to_string())?;
                } else if let Err(e) = fs::remove_file(&total_file) {
                    if e.kind() != io::ErrorKind::NotFound {
                        return Err(e);
                    }
                }
                let file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(dir.join("data"))?;
                Ingest {
                    store: self.clone(),
                    r#ref: r#ref.to_string(),
                    dir,
                    file: Some(file),
                    hasher: Sha256::new(),
                    offset: 0,
                    total: total.max(0),
                    started_at: now,
                    updated_at: now,
                }
            }
        };
        Ok(ingest)
    }

    /// Writes the `oci-layout` marker unless the directory has one.
    fn ensure_layout_file(&self) -> io::Result<()> {
        let path = self.root.join(LAYOUT_FILE);
        if path.exists() {
            return Ok(());
        }
        let temp = self
            .root
            .join(format!(".{LAYOUT_FILE}.tmp{}", std::process::id()));
        let result = fs::write(&temp, LAYOUT_JSON).and_then(|()| fs::rename(&temp, &path));
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }
}

/// Reads the status files of the ingest in `dir`; `None` when there is no ingest.
fn read_status(dir: &Path) -> io::Result<Option<IngestStatus>> {
    let data = match fs::metadata(dir.join("data")) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let r#ref = match fs::read_to_string(dir.join("ref")) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mtime = data.modified().unwrap_or_else(|_| SystemTime::now());
    let timestamp = |name: &str| {
        fs::read_to_string(dir.join(name))
            .ok()
            .and_then(|s| parse_rfc3339(s.trim()))
            .unwrap_or(mtime)
    };
    let total = fs::read_to_string(dir.join("total"))
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0);
    Ok(Some(IngestStatus {
        r#ref,
        offset: data.len(),
        total,
        started_at: timestamp("startedat"),
        updated_at: timestamp("updatedat"),
    }))
}

/// The status of an existing ingest and the hash of its data so far.
fn resume(dir: &Path, r#ref: &str, total: i64) -> io::Result<(IngestStatus, Sha256)> {
    let status = read_status(dir)?.ok_or_else(|| io::Error::other("incomplete ingest"))?;
    if status.r#ref != r#ref {
        return Err(io::Error::other(format!(
            "ref key does not match: {ref:?} != {:?}",
            status.r#ref
        )));
    }
    if total > 0 && status.total > 0 && total != status.total {
        return Err(io::Error::other(format!(
            "total differs from the ingest's: {total} != {}",
            status.total
        )));
    }
    let mut hasher = Sha256::new();
    let mut file = File::open(dir.join("data"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    let total = if status.total > 0 {
        status.total
    } else {
        total.max(0)
    };
    Ok((
        IngestStatus {
            offset,
            total,
            ..status
        },
        hasher,
    ))
}

/// An open ingest; holds its ref's lock until dropped or committed.
#[derive(Debug)]
pub(crate) struct Ingest {
    store: Arc<LayoutStore>,
    r#ref: String,
    dir: PathBuf,
    file: Option<File>,
    hasher: Sha256,
    offset: u64,
    total: i64,
    started_at: SystemTime,
    updated_at: SystemTime,
}

impl Ingest {
    pub(crate) fn status(&self) -> IngestStatus {
        IngestStatus {
            r#ref: self.r#ref.clone(),
            offset: self.offset,
            total: self.total,
            started_at: self.started_at,
            updated_at: self.updated_at,
        }
    }

    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// The expected size, if the writer gave one.
    pub(crate) fn set_total(&mut self, total: i64) {
        if total > 0 {
            self.total = total;
        }
    }

    /// `sha256:` digest of the bytes written so far.
    pub(crate) fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }

    fn file(&mut self) -> Result<&mut File, Status> {
        self.file
            .as_mut()
            .ok_or_else(|| Status::failed_precondition("ingest already closed"))
    }

    /// Drops what was written so far.
    pub(crate) fn truncate(&mut self) -> Result<(), Status> {
        let file = self.file()?;
        let done = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(drop));
        done.map_err(|e| io_status("truncate ingest", &e))?;
        self.offset = 0;
        self.hasher = Sha256::new();
        self.updated_at = SystemTime::now();
        Ok(())
    }

    /// Appends `data`.
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<(), Status> {
        let file = self.file()?;
        file.write_all(data)
            .map_err(|e| io_status("write ingest", &e))?;
        self.hasher.update(data);
        self.offset += data.len() as u64;
        self.updated_at = SystemTime::now();
        Ok(())
    }

    /// Verifies size (when `total` > 0) and digest (when given) and moves the data to
    /// its blob path. A verification failure drops the ingest. Returns the digest.
    pub(crate) fn commit(mut self, total: i64, expected: Option<&str>) -> Result<String, Status> {
        let file = self
            .file
            .take()
            .ok_or_else(|| Status::failed_precondition("cannot commit a closed ingest"))?;
        file.sync_all().map_err(|e| io_status("sync ingest", &e))?;
        let size = file
            .metadata()
            .map_err(|e| io_status("stat ingest", &e))?
            .len();
        drop(file);
        let digest = self.digest();
        if total > 0 && u64::try_from(total).ok() != Some(size) {
            self.discard();
            return Err(Status::failed_precondition(format!(
                "unexpected commit size {size}, expected {total}"
            )));
        }
        if let Some(expected) = expected {
            if expected != digest {
                self.discard();
                return Err(Status::failed_precondition(format!(
                    "unexpected commit digest {digest}, expected {expected}"
                )));
            }
        }
        let hex = checked_hex(&digest)?.to_string();
        let target = self.store.blob_path(&hex);
        let parent = target.parent().map(Path::to_path_buf).unwrap_or_default();
        fs::create_dir_all(&parent).map_err(|e| io_status("create blobs directory", &e))?;
        if target.exists() {
            self.discard();
            return Err(Status::already_exists(format!(
                "content {digest}: already exists"
            )));
        }
        self.store
            .ensure_layout_file()
            .map_err(|e| io_status("write oci-layout", &e))?;
        let data = self.dir.join("data");
        // Read-only, as containerd leaves committed blobs.
        fs::set_permissions(&data, fs::Permissions::from_mode(0o444))
            .map_err(|e| io_status("commit ingest", &e))?;
        fs::rename(&data, &target).map_err(|e| io_status("commit ingest", &e))?;
        if let Ok(dir) = File::open(&parent) {
            let _ = dir.sync_all();
        }
        self.discard();
        Ok(digest)
    }

    /// Removes the ingest directory (the lock goes on drop).
    fn discard(&mut self) {
        self.file = None;
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove ingest");
            }
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            // Left for a later writer to resume.
            let _ = file.sync_data();
            let _ = fs::write(self.dir.join("updatedat"), format_rfc3339(self.updated_at));
        }
        self.store.unlock(&self.r#ref);
    }
}

/// Reads up to `len` bytes of `file` at `offset`.
pub(crate) fn read_chunk(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let n = file.read_at(&mut buf[filled..], offset + filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
}

// Ingest timestamps are written as Go's `time.Time.MarshalText` writes them (RFC 3339
// with nanoseconds, trailing zeros trimmed), here always in UTC.

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `t` as RFC 3339 in UTC with Go's trimmed nanoseconds.
pub(crate) fn format_rfc3339(t: SystemTime) -> String {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let mut secs = -(d.as_secs() as i64);
            let mut nanos = d.subsec_nanos();
            if nanos > 0 {
                secs -= 1;
                nanos = 1_000_000_000 - nanos;
            }
            (secs, nanos)
        }
    };
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let mut out = format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Parses RFC 3339 (`Z` or a `±hh:mm` offset, optional fraction).
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let kept = &frac[..digits.min(9)];
        nanos = format!("{kept:0<9}").parse().ok()?;
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || rb[3] != b':' {
                return None;
            }
            let sign = match rb[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    let base = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    Some(base + Duration::from_nanos(u64::from(nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn rfc3339_as_go_writes_it() {
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // 2024-02-29T23:59:58.5Z
        let t = at(1_709_251_198, 500_000_000);
        assert_eq!(format_rfc3339(t), "2024-02-29T23:59:58.5Z");
        assert_eq!(parse_rfc3339("2024-02-29T23:59:58.5Z"), Some(t));
        assert_eq!(parse_rfc3339("2024-03-01T01:59:58.500+02:00"), Some(t));
        let t = at(4_102_444_800, 123_456_789); // 2100-01-01
        assert_eq!(format_rfc3339(t), "2100-01-01T00:00:00.123456789Z");
        assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        for bad in [
            "",
            "2024-02-29",
            "2024-13-01T00:00:00Z",
            "2024-02-29T00:00:00",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn write_resume_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(LayoutStore::new(tmp.path().join("layout")));
        let data = b"hello, layout".to_vec();
        let digest = super::super::sha256_digest(&data);

        let mut w = store
            .writer("r1", data.len() as i64, Some(&digest))
            .unwrap();
        // The ref is held while the writer is open.
        assert_eq!(
            store.writer("r1", 0, None).unwrap_err().code(),
            tonic::Code::Unavailable
        );
        w.write(&data[..5]).unwrap();
        drop(w);

        // Resumed where it stopped, with the hash so far.
        let st = store.status("r1").unwrap().unwrap();
        assert_eq!((st.offset, st.total), (5, data.len() as i64));
        let mut w = store.writer("r1", 0, Some(&digest)).unwrap();
        assert_eq!(w.offset(), 5);
        w.write(&data[5..]).unwrap();
        assert_eq!(w.commit(data.len() as i64, Some(&digest)).unwrap(), digest);

        let info = store.info(&digest).unwrap().unwrap();
        assert_eq!(info.size, data.len() as u64);
        assert!(store.status("r1").unwrap().is_none());
        assert_eq!(
            fs::read_to_string(tmp.path().join("layout/oci-layout")).unwrap(),
            LAYOUT_JSON
        );
        assert_eq!(
            store.writer("r2", 0, Some(&digest)).unwrap_err().code(),
            tonic::Code::AlreadyExists
        );

        // A wrong digest leaves neither blob nor ingest.
        let other = super::super::sha256_digest(b"other");
        let mut w = store.writer("r3", 0, Some(&other)).unwrap();
        w.write(b"not other").unwrap();
        let err = w.commit(0, Some(&other)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(
            err.message().contains("unexpected commit digest"),
            "{err:?}"
        );
        assert!(store.info(&other).unwrap().is_none());
        assert!(store.status("r3").unwrap().is_none());
        assert!(store.list_statuses().unwrap().is_empty());
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(store.delete(&digest).unwrap());
        assert!(!store.delete(&digest).unwrap());
    }
}
