//! The receiving end: applies a sender's STAT stream to a destination directory and
//! requests the file contents it needs.
//!
//! The destination may hold an earlier copy. Its entries are compared with the incoming
//! ones in fsutil order: an entry whose metadata matches is left alone (so an unchanged
//! tree transfers no file data), a different one is replaced, and destination entries
//! the sender does not have are deleted (unless [`ReceiveOptions::merge`]).
//!
//! All file system work happens on one blocking thread that owns the destination; the
//! async side only moves packets. Paths are validated ([`super::validate`]) before any
//! use, and every operation is confined to the destination ([`super::root`]).

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

use proto::fsutil_types::packet::PacketType;
use proto::fsutil_types::{Packet, Stat};
use rustix::fs::FileType;
use tokio::sync::mpsc;

use super::mode::{FileKind, file_kind, is_dir, posix_permissions};
use super::path::{Validator, compare_path};
use super::root::Root;
use super::stat::join_dev;
use super::walk::{Filter, walk};
use super::{Error, PacketConn, PacketSender, join, packet, packet_type};

/// How a receiver decides that an existing entry is already up to date.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Differ {
    /// Same type, size, modification time, mode, owner, link target and device numbers
    /// (fsutil's `DiffMetadata`, the default).
    #[default]
    Metadata,
    /// Never: every file is transferred again (`local.differ=none`).
    None,
}

/// Options of [`receive`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// Keep destination entries the sender does not have (no deletions, and no
    /// comparison: everything received is written).
    pub merge: bool,
    /// How existing entries are compared.
    pub differ: Differ,
    /// Give every entry this owner (uid, gid) instead of the sender's, as the client
    /// does for exported files.
    pub owner: Option<(u32, u32)>,
}

/// What a receive did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// STAT entries received.
    pub entries: u64,
    /// Regular files whose contents were requested.
    pub files_requested: u64,
    /// File content bytes received in DATA packets.
    pub bytes_received: u64,
    /// Destination entries deleted (a deleted directory counts once).
    pub deleted: u64,
}

enum Command {
    Stat(Box<Stat>),
    End,
    Data(u32, Vec<u8>),
}

/// Receives a transfer into `dest` (created if missing) and returns what it did.
pub async fn receive(
    mut conn: PacketConn,
    dest: &Path,
    opts: ReceiveOptions,
) -> Result<Stats, Error> {
    let (cmd_tx, cmd_rx) = mpsc::channel::<Command>(128);
    let out = conn.outbound.clone();
    let dest = dest.to_path_buf();
    let worker = tokio::task::spawn_blocking(move || disk_worker(&dest, opts, cmd_rx, out));
    let pumped = pump(&mut conn, &cmd_tx).await;
    drop(cmd_tx);
    let written = join(worker).await;
    let result = match (pumped, written) {
        (Ok(()), Ok(stats)) => return Ok(stats),
        // The worker stopped first: its error is the cause.
        (Err(Error::Closed), Err(e)) | (Ok(()), Err(e)) => e,
        (Err(e), _) => e,
    };
    if !matches!(result, Error::Peer(_)) {
        conn.send_err(&result).await;
    }
    Err(result)
}

/// Moves packets from the stream to the disk worker until the sender's FIN.
async fn pump(conn: &mut PacketConn, cmds: &mpsc::Sender<Command>) -> Result<(), Error> {
    loop {
        let next = tokio::select! {
            next = conn.recv() => next?,
            () = cmds.closed() => return Err(Error::Closed),
        };
        let Some(p) = next else {
            return Err(Error::UnexpectedEof);
        };
        let cmd = match packet_type(&p)? {
            PacketType::PacketErr => {
                return Err(Error::Peer(String::from_utf8_lossy(&p.data).into_owned()));
            }
            PacketType::PacketStat => match p.stat {
                Some(stat) => Command::Stat(Box::new(stat)),
                None => Command::End,
            },
            PacketType::PacketData => Command::Data(p.id, p.data),
            PacketType::PacketFin => {
                // The sender is done. Whatever follows until the stream ends is ignored;
                // a sender that never half-closes (upstream's exporter) ends by error.
                while let Ok(Some(_)) = conn.recv().await {}
                return Ok(());
            }
            PacketType::PacketReq => {
                return Err(Error::Unexpected("REQ sent to a receiver".into()));
            }
        };
        cmds.send(cmd).await.map_err(|_| Error::Closed)?;
    }
}

fn disk_worker(
    dest: &Path,
    opts: ReceiveOptions,
    mut cmds: mpsc::Receiver<Command>,
    out: PacketSender,
) -> Result<Stats, Error> {
    let mut w = DiskWriter::new(dest, opts)?;
    let send = |p: Packet| out.blocking_send(Ok(p)).map_err(|_| Error::Closed);
    let mut fin_sent = false;
    while let Some(cmd) = cmds.blocking_recv() {
        if fin_sent {
            return Err(Error::Unexpected(
                "packet after the transfer finished".into(),
            ));
        }
        match cmd {
            Command::Stat(stat) => {
                if let Some(id) = w.handle_stat(*stat)? {
                    send(Packet {
                        id,
                        ..packet(PacketType::PacketReq)
                    })?;
                }
            }
            Command::End => w.handle_end()?,
            Command::Data(id, data) => w.handle_data(id, &data)?,
        }
        if w.done() {
            w.finish()?;
            send(packet(PacketType::PacketFin))?;
            fin_sent = true;
        }
    }
    if !fin_sent {
        return Err(Error::UnexpectedEof);
    }
    Ok(w.stats)
}

/// A regular file whose contents were requested.
struct Wanted {
    path: String,
    stat: Stat,
    file: Option<std::fs::File>,
}

/// Applies STATs and DATA to the destination (fsutil's `DiskWriter` plus the diffing
/// against what is already there).
struct DiskWriter {
    root: Root,
    opts: ReceiveOptions,
    validator: Validator,
    /// The destination's entries as found before the transfer, in fsutil order.
    existing: VecDeque<Stat>,
    /// Destination entries below this prefix went with a removed directory.
    removed_prefix: Option<String>,
    next_id: u32,
    wanted: HashMap<u32, Wanted>,
    /// Directory modification times, set last (writing inside changes them).
    dir_times: Vec<(String, i64)>,
    end: bool,
    stats: Stats,
}

impl DiskWriter {
    fn new(dest: &Path, opts: ReceiveOptions) -> Result<DiskWriter, Error> {
        let root = Root::open(dest)?;
        let mut existing = VecDeque::new();
        if !opts.merge {
            walk(root.path(), &Filter::none(), &mut |stat| {
                existing.push_back(stat);
                Ok(())
            })?;
        }
        Ok(DiskWriter {
            root,
            opts,
            validator: Validator::default(),
            existing,
            removed_prefix: None,
            next_id: 0,
            wanted: HashMap::new(),
            dir_times: Vec::new(),
            end: false,
            stats: Stats::default(),
        })
    }

    fn done(&self) -> bool {
        self.end && self.wanted.is_empty()
    }

    /// Applies one entry; returns the id to request when its contents are needed.
    fn handle_stat(&mut self, mut stat: Stat) -> Result<Option<u32>, Error> {
        if self.end {
            return Err(Error::Unexpected(format!(
                "STAT {:?} after the end",
                stat.path
            )));
        }
        let id = self.next_id;
        self.next_id = self
            .next_id
            .checked_add(1)
            .ok_or_else(|| Error::Unexpected("too many entries".into()))?;
        self.stats.entries += 1;
        if let Some((uid, gid)) = self.opts.owner {
            stat.uid = uid;
            stat.gid = gid;
        }
        self.validator.check(&stat)?;

        // Destination entries sorting before this one are gone from the sender.
        while let Some(old) = self.existing.front() {
            if compare_path(&old.path, &stat.path).is_ge() {
                break;
            }
            let old = self.existing.pop_front().unwrap_or_default();
            self.delete(&old)?;
        }
        let old = match self.existing.front() {
            Some(old) if old.path == stat.path => self.existing.pop_front(),
            _ => None,
        };
        if let Some(old) = &old {
            if self.same(old, &stat) {
                if is_dir(stat.mode) {
                    self.dir_times.push((stat.path.clone(), stat.mod_time));
                }
                return Ok(None);
            }
        }
        self.apply(id, stat, old.as_ref())
    }

    fn same(&self, old: &Stat, new: &Stat) -> bool {
        if self.opts.differ == Differ::None {
            return false;
        }
        if !is_dir(old.mode) && (old.size != new.size || old.mod_time != new.mod_time) {
            return false;
        }
        old.mode == new.mode
            && old.uid == new.uid
            && old.gid == new.gid
            && old.devmajor == new.devmajor
            && old.devminor == new.devminor
            && old.linkname == new.linkname
    }

    /// Deletes a destination entry the sender does not have.
    fn delete(&mut self, old: &Stat) -> Result<(), Error> {
        if let Some(prefix) = &self.removed_prefix {
            if old.path.starts_with(prefix.as_str()) {
                return Ok(());
            }
        }
        self.removed_prefix = None;
        self.root.remove_all(&old.path)?;
        self.stats.deleted += 1;
        if is_dir(old.mode) {
            self.removed_prefix = Some(format!("{}/", old.path));
        }
        Ok(())
    }

    fn apply(&mut self, id: u32, stat: Stat, old: Option<&Stat>) -> Result<Option<u32>, Error> {
        let rel = stat.path.clone();
        let kind = file_kind(stat.mode);
        let existing_dir = match old {
            Some(old) => is_dir(old.mode),
            // Merging (no listing) or a racing writer: ask the file system.
            None => match self.root.lstat(&rel)? {
                Some(st) => {
                    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                        self.root.remove_all(&rel)?;
                        false
                    } else {
                        true
                    }
                }
                None => false,
            },
        };
        if existing_dir && kind == FileKind::Dir {
            self.metadata(&stat)?;
            self.dir_times.push((rel, stat.mod_time));
            return Ok(None);
        }
        if old.is_some() || existing_dir {
            self.root.remove_all(&rel)?;
            if existing_dir {
                self.removed_prefix = Some(format!("{rel}/"));
            }
        }
        match kind {
            FileKind::Dir => {
                self.root.mkdir(&rel)?;
                self.metadata(&stat)?;
                self.dir_times.push((rel, stat.mod_time));
            }
            FileKind::Symlink => {
                self.root.symlink(&stat.linkname, &rel)?;
                self.root.chown(&rel, stat.uid, stat.gid)?;
                self.root.set_times(&rel, stat.mod_time)?;
            }
            FileKind::BlockDevice | FileKind::CharDevice | FileKind::NamedPipe => {
                let file_type = match kind {
                    FileKind::BlockDevice => FileType::BlockDevice,
                    FileKind::CharDevice => FileType::CharacterDevice,
                    _ => FileType::Fifo,
                };
                let major = u64::try_from(stat.devmajor).unwrap_or(0);
                let minor = u64::try_from(stat.devminor).unwrap_or(0);
                self.root
                    .mknod(&rel, file_type, 0o600, join_dev(major, minor))?;
                self.metadata(&stat)?;
                self.root.set_times(&rel, stat.mod_time)?;
            }
            FileKind::Regular if !stat.linkname.is_empty() => {
                self.root.hardlink(&stat.linkname, &rel)?;
            }
            FileKind::Regular => {
                self.root.create_file(&rel)?;
                self.root.chown(&rel, stat.uid, stat.gid)?;
                self.root.set_xattrs(&rel, &stat.xattrs);
                self.stats.files_requested += 1;
                self.wanted.insert(
                    id,
                    Wanted {
                        path: rel,
                        stat,
                        file: None,
                    },
                );
                return Ok(Some(id));
            }
            FileKind::Socket | FileKind::Irregular => {
                return Err(Error::invalid_path(&rel, "unsupported file type"));
            }
        }
        Ok(None)
    }

    /// Owner, xattrs and mode (in that order: `chown` clears setuid bits).
    fn metadata(&mut self, stat: &Stat) -> Result<(), Error> {
        self.root.chown(&stat.path, stat.uid, stat.gid)?;
        self.root.set_xattrs(&stat.path, &stat.xattrs);
        self.root.chmod(&stat.path, posix_permissions(stat.mode))
    }

    fn handle_end(&mut self) -> Result<(), Error> {
        if self.end {
            return Err(Error::Unexpected("second end of walk".into()));
        }
        self.end = true;
        while let Some(old) = self.existing.pop_front() {
            self.delete(&old)?;
        }
        Ok(())
    }

    fn handle_data(&mut self, id: u32, data: &[u8]) -> Result<(), Error> {
        if data.is_empty() {
            let wanted = self.wanted.remove(&id).ok_or(Error::UnknownId(id))?;
            drop(wanted.file);
            self.root
                .chmod(&wanted.path, posix_permissions(wanted.stat.mode))?;
            return self.root.set_times(&wanted.path, wanted.stat.mod_time);
        }
        let wanted = self.wanted.get_mut(&id).ok_or(Error::UnknownId(id))?;
        if wanted.file.is_none() {
            wanted.file = Some(self.root.open_write(&wanted.path)?);
        }
        if let Some(file) = wanted.file.as_mut() {
            file.write_all(data)
                .map_err(|e| Error::io("write", PathBuf::from(&wanted.path), e))?;
        }
        self.stats.bytes_received += data.len() as u64;
        Ok(())
    }

    /// Sets directory times, now that nothing changes inside them any more.
    fn finish(&mut self) -> Result<(), Error> {
        for (rel, mtime) in std::mem::take(&mut self.dir_times) {
            self.root.set_times(&rel, mtime)?;
        }
        Ok(())
    }
}
