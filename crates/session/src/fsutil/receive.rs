//! The receiving end: applies a sender's STAT stream to a destination directory and
//! requests the file contents it needs.
//!
//! The destination may hold an earlier copy. Its entries are compared with the incoming
//! ones in fsutil order: an entry whose metadata matches is left alone (so an unchanged
//! tree transfers no file data), a different one is replaced, and destination entries
//! the sender does not have are deleted (unless [`ReceiveOptions::merge`]).
//!
//! When merging there is no listing of the destination, and every file is requested,
//! unless [`ReceiveOptions::keep_unchanged`] is set: then a regular file the
//! destination already holds with the incoming type, permissions, owner, size and
//! modification time is kept without asking for its contents, as the sender's own
//! later copy of it. With [`ReceiveOptions::previous`], the entries a previous receive
//! wrote ([`receive_tracked`] returns them) that the sender no longer has are removed,
//! if they still are as that receive left them (anything changed since, or added
//! inside a directory, stays). A requested regular
//! file the destination already has (an export over the previous export) is compared
//! with the data as it arrives and kept, with the new metadata applied, when it holds
//! the same bytes. Only a file that differs is written, into a temporary file renamed
//! over it at the end. The result is the same as writing every file anew, without the
//! writes, and without replacing every inode (which file systems that hold back freed
//! inodes for a while, such as ext4 without a journal, make very slow). A file with
//! several paths, or with extended attributes the new one would not have, is always
//! replaced.
//!
//! All file system work happens on one blocking thread that owns the destination; the
//! async side only moves packets. Paths are validated ([`super::validate`]) before any
//! use, and every operation is confined to the destination ([`super::root`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proto::fsutil_types::packet::PacketType;
use proto::fsutil_types::{Packet, Stat};
use rustix::fs::FileType;
use tokio::sync::mpsc;

use super::mode::{
    FileKind, MODE_SOCKET, file_kind, go_mode_from_posix, is_dir, posix_permissions,
};
use super::path::{Validator, check_relative, compare_path};
use super::root::{Root, xattr_names};
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
    /// Merging: keep a regular file that is already there with the incoming
    /// permissions, owner, size and modification time, without its contents.
    pub keep_unchanged: bool,
    /// Merging: what an earlier receive into the destination wrote (from
    /// [`receive_tracked`]); its entries the sender no longer has are removed, when
    /// they are still as written.
    pub previous: Option<Arc<Vec<Written>>>,
}

/// An entry a receive wrote: what [`ReceiveOptions::previous`] needs to recognise it
/// later.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Written {
    /// Path relative to the destination.
    pub path: String,
    /// fsutil (Go) file mode.
    pub mode: u32,
    /// Size of a regular file (0 for others).
    pub size: i64,
    /// Modification time in Unix nanoseconds.
    pub mod_time: i64,
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
pub async fn receive(conn: PacketConn, dest: &Path, opts: ReceiveOptions) -> Result<Stats, Error> {
    receive_inner(conn, dest, opts, false)
        .await
        .map(|(stats, _)| stats)
}

/// [`receive`], also returning every entry the sender had, as written: the
/// [`ReceiveOptions::previous`] of the next receive into `dest`.
pub async fn receive_tracked(
    conn: PacketConn,
    dest: &Path,
    opts: ReceiveOptions,
) -> Result<(Stats, Vec<Written>), Error> {
    receive_inner(conn, dest, opts, true).await
}

async fn receive_inner(
    mut conn: PacketConn,
    dest: &Path,
    opts: ReceiveOptions,
    track: bool,
) -> Result<(Stats, Vec<Written>), Error> {
    let (cmd_tx, cmd_rx) = mpsc::channel::<Command>(super::QUEUE);
    let out = conn.outbound.clone();
    let dest = dest.to_path_buf();
    let worker = tokio::task::spawn_blocking(move || disk_worker(&dest, opts, track, cmd_rx, out));
    let pumped = pump(&mut conn, &cmd_tx).await;
    drop(cmd_tx);
    let written = join(worker).await;
    let result = match (pumped, written) {
        (Ok(()), Ok(done)) => return Ok(done),
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
    track: bool,
    mut cmds: mpsc::Receiver<Command>,
    out: PacketSender,
) -> Result<(Stats, Vec<Written>), Error> {
    let mut w = DiskWriter::new(dest, opts)?;
    w.track = track || w.opts.previous.is_some();
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
    let written = if track {
        std::mem::take(&mut w.written)
    } else {
        Vec::new()
    };
    Ok((w.stats, written))
}

/// A regular file whose contents were requested.
struct Wanted {
    path: String,
    stat: Stat,
    sink: Sink,
    /// Hard links made to `path` while its data was pending: made again if the file
    /// is replaced.
    links: Vec<String>,
}

/// Where a requested file's data goes.
enum Sink {
    /// Into the new empty file created for it (opened at the first chunk).
    Fresh(Option<File>),
    /// An existing regular file, which may hold the data already: rewriting a file
    /// with the same contents (an export into a directory that holds the previous
    /// export) would only cost writes, and file systems that delay reusing freed
    /// inodes (ext4 without a journal) pay heavily for replacing many files. The data
    /// is compared as it comes, and nothing is written while it matches.
    Check(Check),
    /// Into a temporary file renamed over the path at the end.
    Replace { temp: String, file: File },
}

/// An existing file being compared with the incoming data.
#[derive(Default)]
struct Check {
    /// Opened at the first chunk (`None` before, and if it cannot be used).
    file: Option<File>,
    opened: bool,
    /// Bytes found equal so far.
    matched: u64,
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
    /// The ids of requested files with a [`Sink::Check`], by path (hard links to
    /// them are noted there).
    checked: HashMap<String, u32>,
    /// Scratch space for reading what an existing file holds.
    scratch: Vec<u8>,
    /// Directory modification times, set last (writing inside changes them).
    dir_times: Vec<(String, i64)>,
    end: bool,
    stats: Stats,
    /// Whether to note every entry in `written`.
    track: bool,
    /// The sender's entries, as written (when tracking).
    written: Vec<Written>,
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
            checked: HashMap::new(),
            scratch: Vec::new(),
            dir_times: Vec::new(),
            end: false,
            stats: Stats::default(),
            track: false,
            written: Vec::new(),
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
        if self.track {
            self.written.push(Written {
                path: stat.path.clone(),
                mode: stat.mode,
                size: if file_kind(stat.mode) == FileKind::Regular {
                    stat.size
                } else {
                    0
                },
                mod_time: stat.mod_time,
            });
        }

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
        if old.is_none() && self.opts.merge && self.opts.keep_unchanged && self.unchanged(&stat)? {
            return Ok(None);
        }
        self.apply(id, stat, old.as_ref())
    }

    /// Whether the destination holds `stat`'s regular file already, by metadata.
    fn unchanged(&mut self, stat: &Stat) -> Result<bool, Error> {
        if file_kind(stat.mode) != FileKind::Regular || !stat.linkname.is_empty() {
            return Ok(false);
        }
        let Some(st) = self.root.lstat(&stat.path)? else {
            return Ok(false);
        };
        let mod_time = stat_mtime_ns(&st);
        Ok(FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
            && go_mode_from_posix(st.st_mode) & !MODE_SOCKET == stat.mode
            && st.st_uid == stat.uid
            && st.st_gid == stat.gid
            && st.st_size == stat.size
            && mod_time == stat.mod_time)
    }

    /// Removes what the previous receive wrote and this one did not, where it is still
    /// as written: files (and links and other non-directories) with the same type,
    /// size and modification time, and directories left empty.
    fn remove_previous(&mut self) -> Result<(), Error> {
        let Some(previous) = self.opts.previous.take() else {
            return Ok(());
        };
        let now: HashSet<&str> = self.written.iter().map(|w| w.path.as_str()).collect();
        let mut gone: Vec<&Written> = previous
            .iter()
            .filter(|p| !now.contains(p.path.as_str()) && check_relative(&p.path).is_ok())
            .collect();
        // Children before their parents.
        gone.sort_by(|a, b| compare_path(&b.path, &a.path));
        for p in gone {
            let st = match self.root.lstat(&p.path) {
                Ok(Some(st)) => st,
                // Gone already, or a parent is no longer a directory of ours.
                Ok(None) | Err(_) => continue,
            };
            let mode = go_mode_from_posix(st.st_mode) & !MODE_SOCKET;
            if file_kind(mode) != file_kind(p.mode) {
                continue;
            }
            if is_dir(p.mode) {
                if self.root.remove_empty_dir(&p.path)? {
                    self.stats.deleted += 1;
                }
                continue;
            }
            let mod_time = stat_mtime_ns(&st);
            let size = if file_kind(p.mode) == FileKind::Regular {
                st.st_size
            } else {
                0
            };
            if size == p.size && mod_time == p.mod_time {
                self.root.remove_all(&p.path)?;
                self.stats.deleted += 1;
            }
        }
        Ok(())
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
                Some(st) => match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => true,
                    FileType::RegularFile
                        if kind == FileKind::Regular && stat.linkname.is_empty() =>
                    {
                        self.checked.insert(rel.clone(), id);
                        return Ok(Some(self.want(
                            id,
                            rel,
                            stat,
                            Sink::Check(Check::default()),
                        )));
                    }
                    _ => {
                        self.root.remove_all(&rel)?;
                        false
                    }
                },
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
                if let Some(w) = self
                    .checked
                    .get(&stat.linkname)
                    .and_then(|target| self.wanted.get_mut(target))
                {
                    w.links.push(rel);
                }
            }
            FileKind::Regular => {
                self.root.create_file(&rel)?;
                self.root.chown(&rel, stat.uid, stat.gid)?;
                self.root.set_xattrs(&rel, &stat.xattrs);
                return Ok(Some(self.want(id, rel, stat, Sink::Fresh(None))));
            }
            FileKind::Socket | FileKind::Irregular => {
                return Err(Error::invalid_path(&rel, "unsupported file type"));
            }
        }
        Ok(None)
    }

    /// Registers a requested file; returns the id to request.
    fn want(&mut self, id: u32, path: String, stat: Stat, sink: Sink) -> u32 {
        self.stats.files_requested += 1;
        self.wanted.insert(
            id,
            Wanted {
                path,
                stat,
                sink,
                links: Vec::new(),
            },
        );
        id
    }

    /// Owner, xattrs and mode (in that order: `chown` clears setuid bits).
    fn metadata(&mut self, stat: &Stat) -> Result<(), Error> {
        self.metadata_at(&stat.path, stat)
    }

    /// [`DiskWriter::metadata`] applied to `rel`.
    fn metadata_at(&mut self, rel: &str, stat: &Stat) -> Result<(), Error> {
        self.root.chown(rel, stat.uid, stat.gid)?;
        self.root.set_xattrs(rel, &stat.xattrs);
        self.root.chmod(rel, posix_permissions(stat.mode))
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
            return self.finish_file(id);
        }
        let DiskWriter {
            root,
            wanted,
            scratch,
            stats,
            ..
        } = self;
        let w = wanted.get_mut(&id).ok_or(Error::UnknownId(id))?;
        stats.bytes_received += data.len() as u64;
        let write_err = |path: &str| {
            let path = PathBuf::from(path);
            move |e| Error::io("write", path, e)
        };
        match &mut w.sink {
            Sink::Fresh(file) => {
                if file.is_none() {
                    *file = Some(root.open_write(&w.path)?);
                }
                if let Some(file) = file.as_mut() {
                    file.write_all(data).map_err(write_err(&w.path))?;
                }
                return Ok(());
            }
            Sink::Replace { file, temp } => {
                return file.write_all(data).map_err(write_err(temp));
            }
            Sink::Check(check) => {
                if !check.opened {
                    check.opened = true;
                    check.file = usable(root, &w.path, &w.stat)?;
                }
                if let Some(file) = check.file.as_mut()
                    && holds(file, data, scratch).map_err(|e| Error::io("read", &w.path, e))?
                {
                    check.matched += data.len() as u64;
                    return Ok(());
                }
            }
        }
        // The existing file differs: the data goes to a new file.
        let (temp, mut file) = replacement(root, w)?;
        file.write_all(data).map_err(write_err(&temp))?;
        w.sink = Sink::Replace { temp, file };
        Ok(())
    }

    /// The last (empty) chunk of a requested file: its metadata goes on, and a
    /// replacement takes its place.
    fn finish_file(&mut self, id: u32) -> Result<(), Error> {
        let mut w = self.wanted.remove(&id).ok_or(Error::UnknownId(id))?;
        if self.checked.get(&w.path) == Some(&id) {
            self.checked.remove(&w.path);
        }
        let perm = posix_permissions(w.stat.mode);
        match std::mem::replace(&mut w.sink, Sink::Fresh(None)) {
            Sink::Fresh(file) => {
                drop(file);
                self.root.chmod(&w.path, perm)?;
                self.root.set_times(&w.path, w.stat.mod_time)
            }
            Sink::Check(mut check) => {
                if !check.opened {
                    check.file = usable(&mut self.root, &w.path, &w.stat)?;
                }
                // Equal so far; also equal if it ends here too.
                let same_length = match &check.file {
                    Some(file) => {
                        let st = rustix::fs::fstat(file)
                            .map_err(|e| Error::io("stat", &w.path, e.into()))?;
                        u64::try_from(st.st_size).is_ok_and(|n| n == check.matched)
                    }
                    None => false,
                };
                if same_length {
                    drop(check);
                    self.metadata_at(&w.path, &w.stat)?;
                    return self.root.set_times(&w.path, w.stat.mod_time);
                }
                w.sink = Sink::Check(check);
                let (temp, file) = replacement(&mut self.root, &mut w)?;
                self.replace(w, temp, file)
            }
            Sink::Replace { temp, file } => self.replace(w, temp, file),
        }
    }

    /// Puts the written temporary file in place of the requested one, and the hard
    /// links made to the old file meanwhile on it.
    fn replace(&mut self, w: Wanted, temp: String, file: File) -> Result<(), Error> {
        drop(file);
        self.metadata_at(&temp, &w.stat)?;
        self.root.set_times(&temp, w.stat.mod_time)?;
        self.root.rename(&temp, &w.path)?;
        for link in &w.links {
            self.root.remove_all(link)?;
            self.root.hardlink(&w.path, link)?;
        }
        Ok(())
    }

    /// Removes what is gone since the previous receive, then sets directory times, now
    /// that nothing changes inside them any more.
    fn finish(&mut self) -> Result<(), Error> {
        self.remove_previous()?;
        for (rel, mtime) in std::mem::take(&mut self.dir_times) {
            self.root.set_times(&rel, mtime)?;
        }
        Ok(())
    }
}

impl Drop for DiskWriter {
    /// A transfer that stops half way leaves no temporary files behind.
    fn drop(&mut self) {
        for w in self.wanted.values() {
            if let Sink::Replace { temp, .. } = &w.sink
                && let Err(e) = self.root.remove_all(temp)
            {
                tracing::debug!(path = temp, error = %e, "removing a temporary file failed");
            }
        }
    }
}

/// The modification time of `st` in Unix nanoseconds (as the wire `Stat` has it).
fn stat_mtime_ns(st: &rustix::fs::Stat) -> i64 {
    st.st_mtime
        .saturating_mul(1_000_000_000)
        .saturating_add(st.st_mtime_nsec as i64)
}

/// The existing file at `path`, opened, if keeping it can give what a new file would:
/// a regular file that no other path shares (keeping it would change the others too),
/// without extended attributes that the new one would not get.
fn usable(root: &mut Root, path: &str, stat: &Stat) -> Result<Option<File>, Error> {
    let Some((file, st)) = root.open_read(path)? else {
        return Ok(None);
    };
    if st.st_nlink != 1 {
        return Ok(None);
    }
    let names = xattr_names(file.as_fd()).map_err(|e| Error::io("listxattr", path, e))?;
    let covered = names
        .iter()
        .all(|n| std::str::from_utf8(n).is_ok_and(|n| stat.xattrs.contains_key(n)));
    Ok(covered.then_some(file))
}

/// Whether `file` holds `data` at its current position (reading past it).
fn holds(file: &mut File, data: &[u8], scratch: &mut Vec<u8>) -> std::io::Result<bool> {
    scratch.resize(data.len(), 0);
    let mut filled = 0;
    while filled < data.len() {
        match file.read(&mut scratch[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(scratch[..] == *data)
}

/// A new temporary file for `w`'s data, starting with the part of the existing file
/// found equal so far.
fn replacement(root: &mut Root, w: &mut Wanted) -> Result<(String, File), Error> {
    let (temp, mut out) = root.create_temp(&w.path)?;
    if let Sink::Check(check) = &mut w.sink
        && check.matched > 0
        && let Some(existing) = check.file.as_mut()
    {
        existing
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("seek", &w.path, e))?;
        // `copy_file_range` underneath: no copy through memory, a reflink where the
        // file system can.
        let copied = std::io::copy(&mut existing.take(check.matched), &mut out)
            .map_err(|e| Error::io("copy", &w.path, e))?;
        if copied != check.matched {
            return Err(Error::io(
                "copy",
                &w.path,
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            ));
        }
    }
    Ok((temp, out))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use futures::StreamExt;
    use tokio_stream::wrappers::ReceiverStream;

    use super::*;
    use crate::fsutil::{CHUNK_SIZE, FilterOptions, send};

    /// Sends `src` into `dest` as an export does (merged, owned by us).
    /// Sends `src` into `dest` as the client's FileSend receiver does (merged, owned by
    /// us), with `incremental` options on top; returns the stats and the record.
    async fn transfer(
        src: &Path,
        dest: &Path,
        incremental: Option<Option<Vec<Written>>>,
    ) -> (Stats, Vec<Written>) {
        let (to_recv_tx, to_recv_rx) = mpsc::channel(16);
        let (to_send_tx, to_send_rx) = mpsc::channel(16);
        let inbound = ReceiverStream::new(to_recv_rx)
            .map(|p: Result<Packet, tonic::Status>| p.map_err(Error::from));
        let receiver = PacketConn::new(inbound, to_send_tx);
        let mut sender = PacketConn::new(
            ReceiverStream::new(to_send_rx).map(|p| p.map_err(Error::from)),
            to_recv_tx,
        );
        let src = src.to_path_buf();
        let sent =
            tokio::spawn(async move { send(&mut sender, &src, &FilterOptions::default()).await });
        let mut opts = ReceiveOptions {
            merge: true,
            owner: Some((
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            )),
            ..ReceiveOptions::default()
        };
        if let Some(previous) = incremental {
            opts.keep_unchanged = true;
            opts.previous = previous.map(Arc::new);
        }
        let out = receive_tracked(receiver, dest, opts)
            .await
            .expect("receive");
        let sent = sent.await.unwrap().expect("send");
        assert_eq!(
            sent.data_bytes, out.0.bytes_received,
            "both ends count alike"
        );
        out
    }

    /// Sends `src` into `dest` as an export does (merged, owned by us).
    async fn export(src: &Path, dest: &Path) -> Stats {
        transfer(src, dest, None).await.0
    }

    fn put(root: &Path, rel: &str, data: &[u8]) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    fn ino(root: &Path, rel: &str) -> u64 {
        std::fs::symlink_metadata(root.join(rel)).unwrap().ino()
    }

    fn set_mtime(path: &Path, secs: u64) {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let f = std::fs::File::open(path).unwrap();
        f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
            .unwrap();
    }

    /// Every entry of a tree with its type, permissions, mtime and contents.
    fn listing(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                let md = std::fs::symlink_metadata(&p).unwrap();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                let what = if md.is_dir() {
                    pending.push(p.clone());
                    "dir".to_string()
                } else if md.file_type().is_symlink() {
                    format!("-> {}", std::fs::read_link(&p).unwrap().display())
                } else {
                    let data = std::fs::read(&p).unwrap();
                    format!(
                        "{} bytes, sum {}",
                        data.len(),
                        data.iter().map(|&b| b as u64).sum::<u64>()
                    )
                };
                let mtime = if md.is_dir() { 0 } else { md.mtime() };
                out.push(format!("{rel} {:o} {mtime} {what}", md.mode()));
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn an_export_over_an_earlier_one_keeps_identical_files_and_replaces_the_rest() {
        use std::os::unix::fs::PermissionsExt;
        let src_dir = tempfile::tempdir().unwrap();
        let dest_dir = tempfile::tempdir().unwrap();
        let (src, dest) = (src_dir.path(), dest_dir.path());
        let big: Vec<u8> = (0..CHUNK_SIZE * 2 + 100).map(|i| (i % 253) as u8).collect();
        put(src, "same.txt", b"same");
        put(src, "big.bin", &big);
        put(src, "big-changed.bin", &big);
        put(src, "sub/changed.txt", b"new!");
        put(src, "shorter.txt", b"abc");
        put(src, "longer.txt", b"abcdef");
        put(src, "linked.txt", b"linked");
        put(src, "was-link", b"a file now");
        put(src, "empty", b"");
        put(src, "empty-was-full", b"");
        put(src, "xattr.txt", b"x");
        put(src, "hard/one", b"hard");
        std::fs::hard_link(src.join("hard/one"), src.join("hard/two")).unwrap();
        std::fs::set_permissions(src.join("same.txt"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        set_mtime(&src.join("same.txt"), 1_000_000_000);

        // What an earlier export left (and something else next to it).
        put(dest, "same.txt", b"same");
        put(dest, "big.bin", &big);
        let mut other = big.clone();
        other[CHUNK_SIZE + 7] ^= 1;
        put(dest, "big-changed.bin", &other);
        put(dest, "sub/changed.txt", b"old!");
        put(dest, "shorter.txt", b"abcd");
        put(dest, "longer.txt", b"abc");
        put(dest, "linked.txt", b"linked");
        std::fs::hard_link(dest.join("linked.txt"), dest.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink("same.txt", dest.join("was-link")).unwrap();
        put(dest, "empty", b"");
        put(dest, "empty-was-full", b"full");
        put(dest, "xattr.txt", b"x");
        let stray_xattr = rustix::fs::setxattr(
            dest.join("xattr.txt").as_path(),
            "user.stray",
            b"1",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        put(dest, "hard/one", b"HARD");
        put(dest, "hard/two", b"HARD");
        put(dest, "unrelated.txt", b"kept");
        let kept = ["same.txt", "big.bin", "empty"].map(|p| (p, ino(dest, p)));
        let replaced =
            ["big-changed.bin", "sub/changed.txt", "linked.txt"].map(|p| (p, ino(dest, p)));

        let stats = export(src, dest).await;
        assert_eq!(
            stats.bytes_received,
            (4 + big.len() * 2 + 4 + 3 + 6 + 6 + 10 + 1 + 4) as u64
        );

        let mut want = listing(src);
        let unrelated = format!(
            "unrelated.txt {:o} {} 4 bytes, sum {}",
            std::fs::symlink_metadata(dest.join("unrelated.txt"))
                .unwrap()
                .mode(),
            std::fs::symlink_metadata(dest.join("unrelated.txt"))
                .unwrap()
                .mtime(),
            b"kept".iter().map(|&b| b as u64).sum::<u64>()
        );
        let elsewhere = format!(
            "elsewhere {:o} {} 6 bytes, sum {}",
            std::fs::symlink_metadata(dest.join("elsewhere"))
                .unwrap()
                .mode(),
            std::fs::symlink_metadata(dest.join("elsewhere"))
                .unwrap()
                .mtime(),
            b"linked".iter().map(|&b| b as u64).sum::<u64>()
        );
        want.push(unrelated);
        want.push(elsewhere);
        want.sort();
        assert_eq!(listing(dest), want);

        for (p, before) in kept {
            assert_eq!(ino(dest, p), before, "{p}: identical, kept");
        }
        for (p, before) in replaced {
            assert_ne!(ino(dest, p), before, "{p}: replaced");
        }
        assert_eq!(
            std::fs::read(dest.join("elsewhere")).unwrap(),
            b"linked",
            "another path of a replaced file is left alone"
        );
        assert_eq!(
            ino(dest, "hard/one"),
            ino(dest, "hard/two"),
            "hard links of the export are links"
        );
        if stray_xattr {
            let names = xattr_names(File::open(dest.join("xattr.txt")).unwrap().as_fd()).unwrap();
            assert!(
                names.is_empty(),
                "a file with other xattrs is replaced: {names:?}"
            );
        }
        let leftovers: Vec<_> = std::fs::read_dir(dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".fsutil-tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        // Again, with nothing changed: every file is kept, except the hard links (a
        // file with several paths is always replaced).
        let paths = ["same.txt", "big.bin", "big-changed.bin", "sub/changed.txt"];
        let before = paths.map(|p| ino(dest, p));
        let link_before = ino(dest, "hard/one");
        export(src, dest).await;
        assert_eq!(listing(dest), want);
        assert_eq!(paths.map(|p| ino(dest, p)), before);
        assert_ne!(ino(dest, "hard/one"), link_before);
        assert_eq!(ino(dest, "hard/one"), ino(dest, "hard/two"));
    }

    /// Sends `src` into `dest` as an incremental export does (kept by metadata, what is
    /// gone since `previous` removed); returns the stats and the new record.
    async fn export_recorded(
        src: &Path,
        dest: &Path,
        previous: Option<Vec<Written>>,
    ) -> (Stats, Vec<Written>) {
        transfer(src, dest, Some(previous)).await
    }

    #[tokio::test]
    async fn an_incremental_export_asks_only_for_changes_and_removes_what_is_gone() {
        let src_dir = tempfile::tempdir().unwrap();
        let dest_dir = tempfile::tempdir().unwrap();
        let (src, dest) = (src_dir.path(), dest_dir.path());
        let big = vec![7u8; CHUNK_SIZE * 3];
        put(src, "big.bin", &big);
        put(src, "a/small.txt", b"one");
        put(src, "a/gone.txt", b"soon gone");
        put(src, "gone-dir/x", b"x");
        put(src, "gone-dir/y/z", b"z");
        put(src, "keep-dir/user-adds-here/f", b"f");
        put(src, "edited-by-user.txt", b"orig");
        std::os::unix::fs::symlink("big.bin", src.join("link")).unwrap();
        put(dest, "users-own.txt", b"mine");

        let (first, record) = export_recorded(src, dest, None).await;
        assert_eq!(
            first.bytes_received,
            (big.len() + 3 + 9 + 1 + 1 + 1 + 4) as u64
        );
        assert_eq!(record.len(), first.entries as usize);
        assert!(
            record
                .iter()
                .any(|w| w.path == "a/small.txt" && w.size == 3)
        );

        // Nothing changed: no file is asked for, nothing removed.
        let before = ino(dest, "big.bin");
        let (again, record) = export_recorded(src, dest, Some(record)).await;
        assert_eq!(
            (again.files_requested, again.bytes_received, again.deleted),
            (0, 0, 0)
        );
        assert_eq!(ino(dest, "big.bin"), before);

        // One small change, removals, and changes by the user in the destination.
        std::thread::sleep(std::time::Duration::from_millis(20));
        put(src, "a/small.txt", b"two!");
        std::fs::remove_file(src.join("a/gone.txt")).unwrap();
        std::fs::remove_dir_all(src.join("gone-dir")).unwrap();
        std::fs::remove_dir_all(src.join("keep-dir/user-adds-here")).unwrap();
        std::fs::remove_file(src.join("edited-by-user.txt")).unwrap();
        put(dest, "keep-dir/user-adds-here/user-file", b"u");
        put(dest, "edited-by-user.txt", b"changed by the user");
        let (third, _) = export_recorded(src, dest, Some(record)).await;
        assert_eq!(
            (third.files_requested, third.bytes_received),
            (1, 4),
            "only the changed file is sent"
        );
        assert_eq!(std::fs::read(dest.join("a/small.txt")).unwrap(), b"two!");
        assert_eq!(ino(dest, "big.bin"), before);
        for gone in ["a/gone.txt", "gone-dir"] {
            assert!(
                std::fs::symlink_metadata(dest.join(gone)).is_err(),
                "{gone} removed"
            );
        }
        // "keep-dir/user-adds-here/f" went; the directory holds the user's file.
        assert!(!dest.join("keep-dir/user-adds-here/f").exists());
        assert_eq!(
            std::fs::read(dest.join("keep-dir/user-adds-here/user-file")).unwrap(),
            b"u"
        );
        assert_eq!(
            std::fs::read(dest.join("edited-by-user.txt")).unwrap(),
            b"changed by the user",
            "a file changed since the export is not the export's any more"
        );
        assert_eq!(std::fs::read(dest.join("users-own.txt")).unwrap(), b"mine");

        // What is left of the export is what a fresh export gives.
        let fresh_dir = tempfile::tempdir().unwrap();
        export_recorded(src, fresh_dir.path(), None).await;
        let mut got = listing(dest);
        got.retain(|l| {
            !l.starts_with("users-own.txt ")
                && !l.starts_with("edited-by-user.txt ")
                && !l.starts_with("keep-dir/user-adds-here")
        });
        let mut want = listing(fresh_dir.path());
        want.retain(|l| !l.starts_with("keep-dir/user-adds-here"));
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn a_record_naming_paths_outside_is_ignored() {
        let src_dir = tempfile::tempdir().unwrap();
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("dest");
        put(src_dir.path(), "f", b"f");
        put(outer.path(), "victim", b"v");
        let t = std::fs::symlink_metadata(outer.path().join("victim")).unwrap();
        let bad = ["../victim", "/victim", "a/../../victim"].map(|p| Written {
            path: p.to_string(),
            mode: 0o644,
            size: 1,
            mod_time: t.mtime() * 1_000_000_000 + t.mtime_nsec(),
        });
        export_recorded(src_dir.path(), &dest, Some(bad.to_vec())).await;
        assert_eq!(std::fs::read(outer.path().join("victim")).unwrap(), b"v");
    }

    /// A hard link sent while its target is being compared ends on the target's final
    /// contents, whichever way the comparison goes.
    #[tokio::test]
    async fn links_to_a_replaced_file_follow_it() {
        let src_dir = tempfile::tempdir().unwrap();
        let dest_dir = tempfile::tempdir().unwrap();
        let (src, dest) = (src_dir.path(), dest_dir.path());
        put(src, "a", b"new contents");
        std::fs::hard_link(src.join("a"), src.join("b")).unwrap();
        put(dest, "a", b"old contents");
        export(src, dest).await;
        assert_eq!(std::fs::read(dest.join("a")).unwrap(), b"new contents");
        assert_eq!(std::fs::read(dest.join("b")).unwrap(), b"new contents");
        assert_eq!(ino(dest, "a"), ino(dest, "b"));
    }
}
