//! The sending end: walks a directory, sends its STATs, then the contents of the files
//! the receiver asks for, until the receiver's FIN.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prost::Message;
use proto::fsutil_types::Packet;
use proto::fsutil_types::packet::PacketType;
use rustix::fs::{FileType, Mode, OFlags};
use tokio::sync::mpsc;

use super::mode::can_request_data;
use super::walk::{Filter, FilterOptions, walk};
use super::{CHUNK_SIZE, Error, PacketConn, PacketSender, join, packet, packet_type};

/// Requestable files by STAT id (regular files only), shared by the walker, which fills
/// it, and the reader of REQs, which takes from it (so each file is sent at most once).
type Files = Arc<Mutex<HashMap<u32, String>>>;

/// What a [`send`] sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// STAT entries.
    pub entries: u64,
    /// Files whose contents the receiver asked for.
    pub files: u64,
    /// File content bytes (in DATA packets).
    pub data_bytes: u64,
    /// Every packet sent, encoded: the transfer's size on the wire, framing aside.
    pub wire_bytes: u64,
}

#[derive(Default)]
struct Counters {
    entries: AtomicU64,
    files: AtomicU64,
    data_bytes: AtomicU64,
    wire_bytes: AtomicU64,
}

impl Counters {
    fn packet(&self, p: &Packet) {
        self.wire_bytes
            .fetch_add(p.encoded_len() as u64, Ordering::Relaxed);
    }

    fn sent(&self) -> Sent {
        Sent {
            entries: self.entries.load(Ordering::Relaxed),
            files: self.files.load(Ordering::Relaxed),
            data_bytes: self.data_bytes.load(Ordering::Relaxed),
            wire_bytes: self.wire_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Sends the directory `root` with `filter` applied, until the receiver's FIN, which it
/// answers with FIN. A failure is reported to the receiver with ERR and returned.
///
/// A sender serving an RPC returns right away (ending the RPC is what closes the
/// stream); a sender that made the call should then [`PacketConn::close`] it.
pub async fn send(
    conn: &mut PacketConn,
    root: &Path,
    filter: &FilterOptions,
) -> Result<Sent, Error> {
    let root = std::fs::canonicalize(root).map_err(|e| Error::io("resolve", root, e))?;
    let files: Files = Arc::default();
    let cancel = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());

    let mut walker = {
        let (root, filter) = (root.clone(), filter.clone());
        let (files, cancel, out) = (files.clone(), cancel.clone(), conn.outbound.clone());
        let counters = counters.clone();
        tokio::task::spawn_blocking(move || {
            send_stats(&root, &filter, &files, &cancel, &out, &counters)
        })
    };
    let (req_tx, req_rx) = mpsc::unbounded_channel::<(u32, String)>();
    let data = {
        let (root, cancel, out) = (root.clone(), cancel.clone(), conn.outbound.clone());
        let counters = counters.clone();
        tokio::task::spawn_blocking(move || send_files(&root, req_rx, &cancel, &out, &counters))
    };

    let mut walker_done = false;
    let result = loop {
        tokio::select! {
            walked = &mut walker, if !walker_done => {
                walker_done = true;
                match walked {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Err(e),
                    Err(e) => break Err(Error::Internal(format!("walker failed: {e}"))),
                }
            }
            next = conn.recv() => match next {
                Err(e) => break Err(e),
                Ok(None) => break Err(Error::UnexpectedEof),
                Ok(Some(p)) => match handle(&p, &files, &req_tx) {
                    Ok(true) => break Ok(()),
                    Ok(false) => {}
                    Err(e) => break Err(e),
                },
            },
        }
    };

    // After FIN (or a failure) nothing more is queued; a walker still running was
    // stopped early by the receiver and its result no longer matters.
    drop(req_tx);
    if result.is_err() || !walker_done {
        cancel.store(true, Ordering::Relaxed);
    }
    let sent = join(data).await;
    if !walker_done {
        let _ = walker.await;
    }
    let mut result = result.and(sent);
    // "Closed" only says that the RPC ended; its status says why.
    if matches!(result, Err(Error::Closed))
        && let Some(e) = conn.why_closed().await
    {
        result = Err(e);
    }
    match &result {
        Ok(()) => conn.send(packet(PacketType::PacketFin)).await?,
        Err(Error::Peer(_)) => {}
        Err(e) => conn.send_err(e).await,
    }
    result.map(|()| counters.sent())
}

/// Handles one packet from the receiver; `true` on FIN.
fn handle(
    p: &Packet,
    files: &Files,
    requests: &mpsc::UnboundedSender<(u32, String)>,
) -> Result<bool, Error> {
    match packet_type(p)? {
        PacketType::PacketErr => Err(Error::Peer(String::from_utf8_lossy(&p.data).into_owned())),
        PacketType::PacketReq => {
            let path = files
                .lock()
                .map_err(|_| Error::Internal("file table poisoned".into()))?
                .remove(&p.id)
                .ok_or(Error::UnknownId(p.id))?;
            requests.send((p.id, path)).map_err(|_| Error::Closed)?;
            Ok(false)
        }
        PacketType::PacketFin => Ok(true),
        PacketType::PacketStat | PacketType::PacketData => {
            Err(Error::Unexpected("STAT or DATA sent to a sender".into()))
        }
    }
}

/// The walker thread: one STAT per entry, then the empty STAT.
fn send_stats(
    root: &Path,
    opts: &FilterOptions,
    files: &Files,
    cancel: &AtomicBool,
    out: &PacketSender,
    counters: &Counters,
) -> Result<(), Error> {
    let filter = Filter::new(root, opts)?;
    let mut id: u32 = 0;
    walk(root, &filter, &mut |stat| {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        if can_request_data(stat.mode) {
            files
                .lock()
                .map_err(|_| Error::Internal("file table poisoned".into()))?
                .insert(id, stat.path.clone());
        }
        id = id
            .checked_add(1)
            .ok_or_else(|| Error::Internal("more than 2^32 entries".into()))?;
        let p = Packet {
            stat: Some(stat),
            ..packet(PacketType::PacketStat)
        };
        counters.entries.fetch_add(1, Ordering::Relaxed);
        counters.packet(&p);
        out.blocking_send(Ok(p)).map_err(|_| Error::Closed)
    })?;
    out.blocking_send(Ok(packet(PacketType::PacketStat)))
        .map_err(|_| Error::Closed)
}

/// The data thread: the contents of each requested file, then an empty DATA.
fn send_files(
    root: &Path,
    mut requests: mpsc::UnboundedReceiver<(u32, String)>,
    cancel: &AtomicBool,
    out: &PacketSender,
    counters: &Counters,
) -> Result<(), Error> {
    let mut buf = vec![0u8; CHUNK_SIZE];
    while let Some((id, rel)) = requests.blocking_recv() {
        counters.files.fetch_add(1, Ordering::Relaxed);
        let data = |chunk: &[u8]| {
            let p = Packet {
                id,
                data: chunk.to_vec(),
                ..packet(PacketType::PacketData)
            };
            counters
                .data_bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            counters.packet(&p);
            p
        };
        let path = root.join(&rel);
        // As upstream, a file that cannot be opened any more is sent empty.
        if let Some(mut file) = open_regular(&path) {
            loop {
                if cancel.load(Ordering::Relaxed) {
                    return Err(Error::Closed);
                }
                let n = match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::io("read", PathBuf::from(rel), e)),
                };
                out.blocking_send(Ok(data(&buf[..n])))
                    .map_err(|_| Error::Closed)?;
            }
        }
        out.blocking_send(Ok(data(&[])))
            .map_err(|_| Error::Closed)?;
    }
    Ok(())
}

/// Opens `path` for reading if it is (still) a regular file: never through a final
/// symlink, and never blocking on a FIFO that replaced a file after the walk.
fn open_regular(path: &Path) -> Option<std::fs::File> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    (FileType::from_raw_mode(st.st_mode) == FileType::RegularFile).then(|| std::fs::File::from(fd))
}
