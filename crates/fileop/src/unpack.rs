//! `ADD` of a local archive (`attemptUnpackDockerCompatibility`): a source that is a tar
//! (plain, gzip or zstd) is extracted into the destination directory instead of being
//! copied.
//!
//! A source counts as an archive when it is a regular file whose decompressed stream
//! starts with a valid tar header, as upstream decides. Extraction is the `archive`
//! crate's safe `apply_layer` (nothing lands outside the destination; whiteouts are
//! applied as deletions). Entries keep the tar's owners unless the copy has an owner,
//! which then goes to every entry. `mode`, `modeStr` and `timestamp` do not apply to
//! extracted entries (as upstream); the timestamp goes to directories created for the
//! destination.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::os::fd::AsFd;

use archive::{ApplyOptions, Decoder, WhiteoutMode};
use rustix::fs::{FileType, OFlags};
use rustix::io::Errno;

use crate::copy::{CopyStats, Options};
use crate::error::{Error, Result, io_err};
use crate::meta::{self, Attrs};
use crate::root::{Comps, Root, clean, display, proc_path};

/// Unpacks source `s` into `dest_comps` if it is an archive; `None` when it is not (the
/// caller copies it then). Directories created for the destination are added to
/// `created`.
pub(crate) fn try_unpack(
    src: &Root,
    s: &Comps,
    dst: &Root,
    dest_comps: &Comps,
    opts: &Options,
    shown: &str,
    created: &mut Vec<Comps>,
) -> Result<Option<CopyStats>> {
    // Anything that keeps us from reading the source makes it "not an archive"; the
    // copy then reports the problem.
    let Ok(comps) = src.resolve(s, true) else {
        return Ok(None);
    };
    let Ok(fd) = src.open_at(&comps, OFlags::RDONLY | OFlags::NOFOLLOW) else {
        return Ok(None);
    };
    match rustix::fs::fstat(&fd) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {}
        _ => return Ok(None),
    }
    let mut file = File::from(fd);
    if !is_archive(&file) {
        return Ok(None);
    }
    let dest_shown = display(dest_comps);
    let rewind = |file: &mut File| {
        file.seek(SeekFrom::Start(0))
            .map(drop)
            .map_err(io_err("copy", shown, "seek"))
    };
    rewind(&mut file)?;
    let names = if opts.owner.is_some() {
        let names = entry_names(&file);
        rewind(&mut file)?;
        names
    } else {
        Vec::new()
    };

    let dest = dst.resolve(dest_comps, true).map_err(io_err(
        "copy",
        &dest_shown,
        "resolve destination",
    ))?;
    let attrs = Attrs {
        mode: 0o755,
        owner: opts.owner,
        time: opts.time,
    };
    created.extend(
        dst.mkdir_all(&dest, &attrs)
            .map_err(io_err("copy", &dest_shown, "mkdir"))?,
    );
    let dir = dst
        .open_dir(&dest)
        .map_err(io_err("copy", &dest_shown, "open destination"))?;
    // apply_layer takes a path; the /proc/self/fd link of the directory we resolved
    // names exactly it, whatever happens to the path meanwhile.
    let target = proc_path(dir.as_fd(), b".");
    let applied = archive::apply_layer(file, &target, &ApplyOptions::new(WhiteoutMode::Delete))
        .map_err(|source| Error::Unpack {
            src: shown.to_string(),
            dest: dest_shown.clone(),
            source,
        })?;
    if let Some(owner) = opts.owner {
        let inner = Root::from_fd(dir, dst.path().join(dest_shown.trim_start_matches('/')));
        for name in &names {
            let comps = clean(name);
            let Some((last, parent)) = comps.split_last() else {
                continue;
            };
            if last.starts_with(b".wh.") {
                continue;
            }
            let entry = inner.resolve(parent, true).and_then(|p| {
                let mut p = p;
                p.push(last.clone());
                inner.entry(&p)
            });
            let result = entry.and_then(|e| meta::chown(e.dir.as_fd(), &e.name, owner));
            match result {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {}
                Err(e) => return Err(io_err("copy", &display(&comps), "chown")(e)),
            }
        }
    }
    tracing::debug!(
        src = shown, dest = %dest_shown, compression = %applied.compression,
        entries = applied.entries, "unpacked archive"
    );
    Ok(Some(CopyStats {
        files: applied.entries,
        dirs: 0,
        bytes: applied.content_bytes,
    }))
}

/// Whether `file` decompresses (gzip, zstd or nothing) to a stream starting with a valid
/// tar header.
fn is_archive(file: &File) -> bool {
    let Ok((_, decoder)) = Decoder::detect(BufReader::new(file)) else {
        return false;
    };
    let mut tar = tar::Archive::new(decoder);
    let Ok(mut entries) = tar.entries() else {
        return false;
    };
    matches!(entries.next(), Some(Ok(_)))
}

/// The names of the entries of the archive in `file`, as far as it can be read.
fn entry_names(file: &File) -> Vec<Vec<u8>> {
    let mut names = Vec::new();
    let Ok((_, decoder)) = Decoder::detect(BufReader::new(file)) else {
        return names;
    };
    let mut tar = tar::Archive::new(decoder);
    let Ok(entries) = tar.entries() else {
        return names;
    };
    for entry in entries {
        let Ok(entry) = entry else { break };
        names.push(entry.path_bytes().into_owned());
    }
    names
}
