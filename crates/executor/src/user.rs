//! Resolving a build step's `user` (`name`, `uid`, `name:group`, `uid:gid`) to ids, with
//! the container's own `/etc/passwd` and `/etc/group`, following the rules of BuildKit's
//! `oci.GetUser` (which uses `moby/sys/user.GetExecUser`):
//!
//! - `uid:gid` with both sides numeric (or `root`) is taken as is, without reading files;
//! - a name must exist in `/etc/passwd`; a numeric uid need not (its gid is then 0);
//! - without an explicit group, the primary gid comes from the passwd entry and the
//!   supplementary groups are those listing the user's name as a member;
//! - with an explicit group, that group (by name, or any number) is the primary gid and
//!   there are no supplementary groups;
//! - the primary gid is always among the additional gids (`ensureAdditionalGids`);
//! - an empty user is root, and a failed lookup of that default is not an error.

use std::path::{Path, PathBuf};

use crate::rootfs::Root;

/// Largest passwd or group file we read (as BuildKit).
const MAX_USER_FILE_BYTES: u64 = 10 << 20;

/// Largest uid or gid accepted (as `moby/sys/user`).
const MAX_ID: u32 = i32::MAX as u32;

/// Why a user could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    /// The name is in neither the passwd file nor a number.
    #[error("unable to find user {user}: no matching entries in passwd file")]
    UnknownUser { user: String },
    /// An explicit group name is not in the group file.
    #[error("unable to find group {group} (for user {user:?}): no matching entries in group file")]
    UnknownGroup { user: String, group: String },
    /// A numeric id is out of range.
    #[error("user {user:?}: id {value} is out of range (0..=2147483647)")]
    OutOfRange { user: String, value: String },
    /// A passwd or group file exists but cannot be read.
    #[error("user {user:?}: reading {} in the container: {source}", path.display())]
    File {
        user: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The ids a process runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, always including `gid`.
    pub additional_gids: Vec<u32>,
}

impl ResolvedUser {
    fn new(uid: u32, gid: u32, mut sgids: Vec<u32>) -> ResolvedUser {
        if !sgids.contains(&gid) {
            sgids.insert(0, gid);
        }
        ResolvedUser {
            uid,
            gid,
            additional_gids: sgids,
        }
    }
}

/// Resolves `user` against the files of the rootfs mounted at `rootfs`.
pub fn resolve_in_rootfs(rootfs: &Path, user: &str) -> Result<ResolvedUser, UserError> {
    if let Some(fast) = numeric_pair(user) {
        return fast;
    }
    let file_err = |path: &str, source| UserError::File {
        user: user.to_string(),
        path: PathBuf::from(path),
        source,
    };
    let root = Root::open(rootfs).map_err(|e| file_err("/", e))?;
    let read = |path: &'static str| -> Result<Option<String>, UserError> {
        let bytes = root
            .read_file(Path::new(path), MAX_USER_FILE_BYTES)
            .map_err(|e| file_err(path, e))?;
        Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
    };
    let passwd = read("/etc/passwd")?;
    let group = read("/etc/group")?;
    resolve(user, passwd.as_deref(), group.as_deref())
}

/// Resolves `user` against the contents of `/etc/passwd` and `/etc/group` (`None`: the
/// file does not exist).
pub fn resolve(
    user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, UserError> {
    if let Some(fast) = numeric_pair(user) {
        return fast;
    }
    let is_default = user.is_empty();
    match lookup(if is_default { "0" } else { user }, passwd, group) {
        Ok(u) => Ok(u),
        Err(_) if is_default => Ok(ResolvedUser::new(0, 0, Vec::new())),
        Err(e) => Err(e),
    }
}

/// The `uid:gid` fast path; `None` unless both sides are numbers (or `root`).
fn numeric_pair(user: &str) -> Option<Result<ResolvedUser, UserError>> {
    let (u, g) = user.split_once(':')?;
    let parse = |s: &str| {
        if s == "root" {
            Some(Ok(0))
        } else {
            parse_id(user, s)
        }
    };
    let uid = parse(u)?;
    let gid = parse(g)?;
    Some(uid.and_then(|uid| gid.map(|gid| ResolvedUser::new(uid, gid, Vec::new()))))
}

/// `None` if `s` is not a number; an error if it is one out of range.
fn parse_id(user: &str, s: &str) -> Option<Result<u32, UserError>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(match s.parse::<u64>() {
        Ok(v) if v <= u64::from(MAX_ID) => Ok(v as u32),
        _ => Err(UserError::OutOfRange {
            user: user.to_string(),
            value: s.to_string(),
        }),
    })
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let mut f = line.trim().split(':');
        let name = f.next().filter(|n| !n.is_empty())?;
        let _password = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some(PasswdEntry { name, uid, gid })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let mut f = line.trim().split(':');
        let name = f.next().filter(|n| !n.is_empty())?;
        let _password = f.next()?;
        let gid = f.next()?.parse().ok()?;
        let members = f
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect();
        Some(GroupEntry { name, gid, members })
    })
}

fn lookup(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, UserError> {
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g).filter(|g| !g.is_empty())),
        None => (spec, None),
    };
    let numeric_uid = parse_id(spec, user_arg).transpose()?;
    let found = passwd.and_then(|p| {
        passwd_entries(p).find(|e| match numeric_uid {
            Some(uid) => e.uid == uid,
            None => e.name == user_arg,
        })
    });
    let (uid, mut gid, matched_name) = match (found, numeric_uid) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name)),
        (None, Some(uid)) => (uid, 0, None),
        (None, None) => {
            return Err(UserError::UnknownUser {
                user: user_arg.to_string(),
            });
        }
    };
    let mut sgids = Vec::new();
    match group_arg {
        Some(group_arg) => {
            let numeric_gid = parse_id(spec, group_arg).transpose()?;
            let found = group.and_then(|g| {
                group_entries(g).find(|e| match numeric_gid {
                    Some(gid) => e.gid == gid,
                    None => e.name == group_arg,
                })
            });
            gid = match (found, numeric_gid) {
                (Some(e), _) => e.gid,
                (None, Some(g)) => g,
                (None, None) => {
                    return Err(UserError::UnknownGroup {
                        user: spec.to_string(),
                        group: group_arg.to_string(),
                    });
                }
            };
        }
        None => {
            if let (Some(name), Some(group)) = (matched_name, group) {
                sgids = group_entries(group)
                    .filter(|e| e.members.contains(&name))
                    .map(|e| e.gid)
                    .collect();
            }
        }
    }
    Ok(ResolvedUser::new(uid, gid, sgids))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        user:x:1000:1000:User:/home/user:/bin/sh\n\
        \n\
        broken line\n\
        other:x:1001:1001::/:/bin/sh\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:user,other\nuser:x:1000:\nstaff:x:50: other , user\nnogroup:x:65534:\n";

    fn r(spec: &str) -> Result<ResolvedUser, UserError> {
        resolve(spec, Some(PASSWD), Some(GROUP))
    }

    fn ids(uid: u32, gid: u32, sgids: &[u32]) -> ResolvedUser {
        ResolvedUser {
            uid,
            gid,
            additional_gids: sgids.to_vec(),
        }
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(r("").unwrap(), ids(0, 0, &[0]));
        assert_eq!(r("root").unwrap(), ids(0, 0, &[0]));
        assert_eq!(r("user").unwrap(), ids(1000, 1000, &[1000, 10, 50]));
        assert_eq!(r("1000").unwrap(), ids(1000, 1000, &[1000, 10, 50]));
        assert_eq!(r("nobody").unwrap(), ids(65534, 65534, &[65534]));
        // A uid without an entry runs with gid 0.
        assert_eq!(r("4242").unwrap(), ids(4242, 0, &[0]));
    }

    #[test]
    fn explicit_groups_replace_supplementary_ones() {
        assert_eq!(r("user:wheel").unwrap(), ids(1000, 10, &[10]));
        assert_eq!(r("user:4000").unwrap(), ids(1000, 4000, &[4000]));
        assert_eq!(r("other:staff").unwrap(), ids(1001, 50, &[50]));
        // The fast path does not read the files.
        assert_eq!(
            resolve("1000:1000", None, None).unwrap(),
            ids(1000, 1000, &[1000])
        );
        assert_eq!(resolve("root:root", None, None).unwrap(), ids(0, 0, &[0]));
        assert_eq!(resolve("5:root", None, None).unwrap(), ids(5, 0, &[0]));
        // An empty group part is no group.
        assert_eq!(r("user:").unwrap(), ids(1000, 1000, &[1000, 10, 50]));
    }

    #[test]
    fn unknown_names_are_errors_naming_them() {
        let e = r("nosuchuser").unwrap_err();
        assert!(matches!(e, UserError::UnknownUser { .. }));
        assert!(e.to_string().contains("nosuchuser"), "{e}");
        let e = r("user:nosuchgroup").unwrap_err();
        assert!(e.to_string().contains("nosuchgroup"), "{e}");
        assert!(e.to_string().contains("user:nosuchgroup"), "{e}");
        // Without a passwd file only numbers work.
        assert!(resolve("user", None, None).is_err());
        assert_eq!(resolve("7", None, None).unwrap(), ids(7, 0, &[0]));
        assert_eq!(resolve("", None, None).unwrap(), ids(0, 0, &[0]));
    }

    #[test]
    fn out_of_range_ids_are_rejected() {
        let e = r("2147483648").unwrap_err();
        assert!(matches!(e, UserError::OutOfRange { .. }), "{e}");
        let e = resolve("1:99999999999", None, None).unwrap_err();
        assert!(e.to_string().contains("99999999999"), "{e}");
        assert_eq!(r("2147483647").unwrap().uid, 2_147_483_647);
    }

    #[test]
    fn files_are_read_from_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(dir.path().join("etc/group"), GROUP).unwrap();
        assert_eq!(
            resolve_in_rootfs(dir.path(), "other").unwrap(),
            ids(1001, 1001, &[1001, 10, 50])
        );
        // A passwd symlinked to a file outside the rootfs is not followed out.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(
            outside.path().join("passwd"),
            "evil:x:4242:4242::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::remove_file(dir.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("passwd"), dir.path().join("etc/passwd"))
            .unwrap();
        let e = resolve_in_rootfs(dir.path(), "evil").unwrap_err();
        assert!(matches!(e, UserError::UnknownUser { .. }), "{e}");
    }
}
