//! Owners of what actions create: `ChownOpt` resolved to numeric ids, names looked up in
//! `/etc/passwd` and `/etc/group` read inside a root.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use proto::pb;
use proto::pb::user_opt::User;
use rustix::fs::{FileType, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result, io_err};
use crate::root::{Root, clean};

/// Largest `/etc/passwd` or `/etc/group` read (as upstream).
const MAX_USER_FILE: u64 = 10 << 20;

/// A numeric owner for created entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl Owner {
    /// `uid:gid`, refusing `4294967295` (which chown reads as "leave unchanged").
    pub fn new(uid: u32, gid: u32) -> Result<Owner> {
        if uid == u32::MAX || gid == u32::MAX {
            return Err(Error::InvalidOwner { uid, gid });
        }
        Ok(Owner { uid, gid })
    }
}

/// Resolves an action's `owner` to ids.
///
/// - user `byID`: that uid, and the same number as gid unless a group is given (as
///   BuildKit does);
/// - user `byName`: looked up in `<user_db_root>/etc/passwd` (read inside that root:
///   symlinks cannot leave it), giving the uid and the user's primary gid; a name that is
///   not in the file but is a number is taken as a uid;
/// - group `byID` / `byName` (in `/etc/group`) overrides the gid; a user left unset is
///   uid 0.
///
/// Returns `None` when neither user nor group is set. Unknown names are errors naming
/// them (upstream silently uses 0 for them).
pub fn resolve_owner(chown: &pb::ChownOpt, user_db_root: Option<&Path>) -> Result<Option<Owner>> {
    let user = chown.user.as_ref().and_then(|u| u.user.as_ref());
    let group = chown.group.as_ref().and_then(|g| g.user.as_ref());
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let mut db = UserDb {
        root: user_db_root,
        passwd: None,
        group: None,
    };
    let (uid, mut gid) = match user {
        None => (0, 0),
        Some(User::ById(id)) => (*id, *id),
        Some(User::ByName(named)) => db.user(&named.name)?,
    };
    match group {
        None => {}
        Some(User::ById(id)) => gid = *id,
        Some(User::ByName(named)) => gid = db.group(&named.name)?,
    }
    Owner::new(uid, gid).map(Some)
}

/// The user database of a root, read on first use.
struct UserDb<'a> {
    root: Option<&'a Path>,
    passwd: Option<String>,
    group: Option<String>,
}

impl UserDb<'_> {
    /// `(uid, primary gid)` of user `name`.
    fn user(&mut self, name: &str) -> Result<(u32, u32)> {
        if self.passwd.is_none() {
            self.passwd = Some(self.read("user", "passwd", name)?);
        }
        let passwd = self.passwd.as_deref().unwrap_or_default();
        if let Some((uid, gid)) = passwd_entries(passwd)
            .find(|e| e.0 == name)
            .map(|e| (e.1, e.2))
        {
            return Ok((uid, gid));
        }
        if let Ok(uid) = name.parse::<u32>() {
            let gid = passwd_entries(passwd)
                .find(|e| e.1 == uid)
                .map_or(uid, |e| e.2);
            return Ok((uid, gid));
        }
        Err(Error::UnknownUser {
            name: name.to_string(),
        })
    }

    /// The gid of group `name`.
    fn group(&mut self, name: &str) -> Result<u32> {
        if self.group.is_none() {
            self.group = Some(self.read("group", "group", name)?);
        }
        let group = self.group.as_deref().unwrap_or_default();
        let found = fields(group)
            .filter(|f| f.len() >= 3 && f[0] == name)
            .find_map(|f| f[2].parse::<u32>().ok());
        if let Some(gid) = found {
            return Ok(gid);
        }
        name.parse::<u32>().map_err(|_| Error::UnknownGroup {
            name: name.to_string(),
        })
    }

    /// Reads `/etc/<file>` of the root; a missing file reads as empty.
    fn read(&self, what: &'static str, file: &'static str, name: &str) -> Result<String> {
        let shown = format!("/etc/{file}");
        let Some(root_path) = self.root else {
            // A numeric name needs no database.
            if name.parse::<u32>().is_ok() {
                return Ok(String::new());
            }
            return Err(Error::NoUserDb {
                what,
                what_file: file,
                name: name.to_string(),
            });
        };
        let root = Root::open(root_path).map_err(io_err("chown", &shown, "open root"))?;
        let fd = match open_file(&root, &shown) {
            Ok(fd) => fd,
            Err(e)
                if [Errno::NOENT, Errno::NOTDIR]
                    .iter()
                    .any(|n| e.raw_os_error() == Some(n.raw_os_error())) =>
            {
                return Ok(String::new());
            }
            Err(e) => return Err(io_err("chown", &shown, "open")(e)),
        };
        let mut data = Vec::new();
        std::fs::File::from(fd)
            .take(MAX_USER_FILE + 1)
            .read_to_end(&mut data)
            .map_err(io_err("chown", &shown, "read"))?;
        if data.len() as u64 > MAX_USER_FILE {
            return Err(Error::Invalid {
                action: "chown",
                path: shown,
                reason: format!("larger than {MAX_USER_FILE} bytes"),
            });
        }
        Ok(String::from_utf8_lossy(&data).into_owned())
    }
}

/// Opens the regular file `path` of `root`, symlinks resolved inside the root.
fn open_file(root: &Root, path: &str) -> std::io::Result<OwnedFd> {
    let comps = root.resolve(&clean(path.as_bytes()), true)?;
    let fd = root.open_at(&comps, OFlags::RDONLY | OFlags::NOFOLLOW)?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(fd)
}

/// The `:`-separated fields of each non-blank, non-comment line.
fn fields(content: &str) -> impl Iterator<Item = Vec<&str>> {
    content
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
}

/// `(name, uid, gid)` of each well-formed `/etc/passwd` line.
fn passwd_entries(content: &str) -> impl Iterator<Item = (&str, u32, u32)> {
    fields(content).filter_map(|f| {
        if f.len() < 4 {
            return None;
        }
        Some((f[0], f[2].parse().ok()?, f[3].parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::pb::{ChownOpt, NamedUserOpt, UserOpt};

    fn by_name(name: &str) -> Option<UserOpt> {
        Some(UserOpt {
            user: Some(User::ByName(NamedUserOpt {
                name: name.to_string(),
                input: 0,
            })),
        })
    }

    fn by_id(id: u32) -> Option<UserOpt> {
        Some(UserOpt {
            user: Some(User::ById(id)),
        })
    }

    fn chown(user: Option<UserOpt>, group: Option<UserOpt>) -> ChownOpt {
        ChownOpt { user, group }
    }

    #[test]
    fn numeric_owners_need_no_database() {
        let o = resolve_owner(&chown(by_id(1000), None), None).unwrap();
        assert_eq!(
            o,
            Some(Owner {
                uid: 1000,
                gid: 1000
            })
        );
        let o = resolve_owner(&chown(by_id(5), by_id(7)), None).unwrap();
        assert_eq!(o, Some(Owner { uid: 5, gid: 7 }));
        let o = resolve_owner(&chown(None, by_id(7)), None).unwrap();
        assert_eq!(o, Some(Owner { uid: 0, gid: 7 }));
        assert_eq!(resolve_owner(&chown(None, None), None).unwrap(), None);
        assert!(resolve_owner(&chown(by_id(u32::MAX), None), None).is_err());
        let o = resolve_owner(&chown(by_name("42"), by_name("43")), None).unwrap();
        assert_eq!(o, Some(Owner { uid: 42, gid: 43 }));
    }

    #[test]
    fn names_without_a_root_are_errors_naming_them() {
        let err = resolve_owner(&chown(by_name("alice"), None), None).unwrap_err();
        assert!(err.to_string().contains("\"alice\""), "{err}");
    }

    #[test]
    fn passwd_and_group_lines() {
        let passwd = "# comment\nroot:x:0:0:root:/root:/bin/sh\n\nbad line\nbob:x:1000:100::/home/bob:/bin/sh\n";
        let entries: Vec<_> = passwd_entries(passwd).collect();
        assert_eq!(entries, [("root", 0, 0), ("bob", 1000, 100)]);
    }
}
