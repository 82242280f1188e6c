//! Snapshot records in the metadata store: the truth about which snapshots exist.
//!
//! Each backend has its own tables, so two snapshotters can share one database:
//! - `snapshots.<backend>`: key → JSON [`Record`] (id, kind, parent key, parent id chain,
//!   creation time);
//! - `snapshots.<backend>.children`: `<parent>\0<child>` → empty, so that `remove` finds
//!   children with one prefix scan;
//! - `snapshots.<backend>.seq`: the next directory id, never reused.
//!
//! Every change is one metadata transaction; callers create directories before the
//! record that points at them and delete records before the directories.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use metadata::{MetadataStore, Txn};
use serde::{Deserialize, Serialize};

use crate::{Error, Info, Kind, Result};

/// What the store keeps about one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Directory id: `<root>/snapshots/<id>`.
    pub id: u64,
    pub kind: Kind,
    /// Key of the committed parent.
    pub parent: Option<String>,
    /// Directory ids of the parent chain, nearest first. Committed snapshots never change
    /// key or id, so the chain stays valid for as long as this record exists.
    pub parents: Vec<u64>,
    /// Unix seconds.
    pub created: u64,
}

impl Record {
    /// The public view of this record.
    pub fn info(&self, key: &str) -> Info {
        Info {
            key: key.to_string(),
            parent: self.parent.clone(),
            kind: self.kind,
            created: self.created,
        }
    }
}

const NEXT_ID: &[u8] = b"next";

/// Records of one backend.
#[derive(Debug)]
pub(crate) struct Records {
    md: Arc<dyn MetadataStore>,
    records: String,
    children: String,
    seq: String,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Keys are opaque strings, but the children index separates parent and child with NUL.
pub(crate) fn check_key(key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        "empty key"
    } else if key.contains('\0') {
        "key contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(Error::Invalid {
        key: key.to_string(),
        reason: reason.into(),
    })
}

fn child_key(parent: &str, child: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(parent.len() + child.len() + 1);
    k.extend_from_slice(parent.as_bytes());
    k.push(0);
    k.extend_from_slice(child.as_bytes());
    k
}

fn md_err(key: &str) -> impl Fn(metadata::Error) -> Error + '_ {
    move |source| Error::Record {
        key: key.to_string(),
        source,
    }
}

fn decode(key: &str, bytes: &[u8]) -> Result<Record> {
    serde_json::from_slice(bytes).map_err(|e| Error::Invalid {
        key: key.to_string(),
        reason: format!("corrupt snapshot record: {e}"),
    })
}

fn encode(key: &str, rec: &Record) -> Result<Vec<u8>> {
    serde_json::to_vec(rec).map_err(|e| Error::Invalid {
        key: key.to_string(),
        reason: format!("cannot encode snapshot record: {e}"),
    })
}

fn get_in(t: &dyn Txn, table: &str, key: &str) -> Result<Option<Record>> {
    match t.get(table, key.as_bytes()).map_err(md_err(key))? {
        Some(bytes) => decode(key, &bytes).map(Some),
        None => Ok(None),
    }
}

/// The chain of directory ids a child of `parent` stacks on, after checking that the
/// parent exists and is committed.
fn chain_of(key: &str, parent: &str, rec: Option<Record>) -> Result<Vec<u64>> {
    let rec = rec.ok_or_else(|| Error::NotFound(parent.to_string()))?;
    if rec.kind != Kind::Committed {
        return Err(Error::Invalid {
            key: key.to_string(),
            reason: format!("parent {parent:?} is {}, not committed", rec.kind),
        });
    }
    let mut chain = Vec::with_capacity(rec.parents.len() + 1);
    chain.push(rec.id);
    chain.extend_from_slice(&rec.parents);
    Ok(chain)
}

impl Records {
    /// The records of backend `backend` (`overlayfs`, `native`) in `md`.
    pub fn new(md: Arc<dyn MetadataStore>, backend: &str) -> Records {
        Records {
            md,
            records: format!("snapshots.{backend}"),
            children: format!("snapshots.{backend}.children"),
            seq: format!("snapshots.{backend}.seq"),
        }
    }

    /// Runs `f` in one write transaction; errors `f` returns come back unchanged, errors of
    /// the store itself name `key`.
    fn txn<T>(&self, key: &str, mut f: impl FnMut(&mut dyn Txn) -> Result<T>) -> Result<T> {
        let mut out: Option<Result<T>> = None;
        let r = self.md.update(&mut |t| match f(t) {
            Ok(v) => {
                out = Some(Ok(v));
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                out = Some(Err(e));
                Err(metadata::Error::Aborted(msg))
            }
        });
        match (r, out) {
            (Ok(()), Some(Ok(v))) => Ok(v),
            (Err(_), Some(Err(e))) => Err(e),
            (Err(source), _) => Err(Error::Record {
                key: key.to_string(),
                source,
            }),
            (Ok(()), _) => Err(Error::Record {
                key: key.to_string(),
                source: metadata::Error::Storage("transaction ended without a result".into()),
            }),
        }
    }

    /// The record of `key`, if any.
    pub fn get(&self, key: &str) -> Result<Option<Record>> {
        match self
            .md
            .get(&self.records, key.as_bytes())
            .map_err(md_err(key))?
        {
            Some(bytes) => decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The record of `key`, or [`Error::NotFound`].
    pub fn require(&self, key: &str) -> Result<Record> {
        self.get(key)?
            .ok_or_else(|| Error::NotFound(key.to_string()))
    }

    /// All records, in key order.
    pub fn list(&self) -> Result<Vec<(String, Record)>> {
        let rows = self.md.scan(&self.records, b"").map_err(md_err("*"))?;
        rows.into_iter()
            .map(|(k, v)| {
                let key = String::from_utf8_lossy(&k).into_owned();
                let rec = decode(&key, &v)?;
                Ok((key, rec))
            })
            .collect()
    }

    /// The directory ids that records point at (their own; parents have records too).
    pub fn ids(&self) -> Result<BTreeSet<u64>> {
        Ok(self.list()?.into_iter().map(|(_, r)| r.id).collect())
    }

    /// Checks that `key` is free and `parent` (if any) is committed; returns the parent
    /// chain. Advisory: [`Records::create`] checks again in its transaction.
    pub fn precheck(&self, key: &str, parent: Option<&str>) -> Result<Vec<u64>> {
        check_key(key)?;
        if self.get(key)?.is_some() {
            return Err(Error::AlreadyExists(key.to_string()));
        }
        match parent {
            Some(p) => chain_of(key, p, self.get(p)?),
            None => Ok(Vec::new()),
        }
    }

    /// Allocates a directory id that was never handed out before.
    pub fn allocate_id(&self, key: &str) -> Result<u64> {
        let seq = self.seq.clone();
        self.txn(key, |t| {
            let id = match t.get(&seq, NEXT_ID).map_err(md_err(key))? {
                Some(v) => decode_u64(key, &v)?,
                None => 1,
            };
            t.put(&seq, NEXT_ID, &(id + 1).to_be_bytes())
                .map_err(md_err(key))?;
            Ok(id)
        })
    }

    /// Makes sure ids handed out from now on are above `max_existing` (directories that
    /// outlived their database must not be reused).
    pub fn reserve_ids_through(&self, max_existing: u64) -> Result<()> {
        let seq = self.seq.clone();
        self.txn("*", |t| {
            let next = match t.get(&seq, NEXT_ID).map_err(md_err("*"))? {
                Some(v) => decode_u64("*", &v)?,
                None => 1,
            };
            if next <= max_existing {
                t.put(&seq, NEXT_ID, &(max_existing + 1).to_be_bytes())
                    .map_err(md_err("*"))?;
            }
            Ok(())
        })
    }

    /// Writes the record of a new snapshot whose directory `id` already exists.
    pub fn create(&self, key: &str, kind: Kind, parent: Option<&str>, id: u64) -> Result<Record> {
        check_key(key)?;
        let (records, children) = (self.records.clone(), self.children.clone());
        self.txn(key, |t| {
            if t.get(&records, key.as_bytes())
                .map_err(md_err(key))?
                .is_some()
            {
                return Err(Error::AlreadyExists(key.to_string()));
            }
            let parents = match parent {
                Some(p) => chain_of(key, p, get_in(t, &records, p)?)?,
                None => Vec::new(),
            };
            let rec = Record {
                id,
                kind,
                parent: parent.map(str::to_string),
                parents,
                created: now(),
            };
            t.put(&records, key.as_bytes(), &encode(key, &rec)?)
                .map_err(md_err(key))?;
            if let Some(p) = parent {
                t.put(&children, &child_key(p, key), b"")
                    .map_err(md_err(key))?;
            }
            Ok(rec)
        })
    }

    /// Turns active `key` into committed `name`, keeping its id and parent.
    pub fn commit(&self, name: &str, key: &str) -> Result<Record> {
        check_key(name)?;
        let (records, children) = (self.records.clone(), self.children.clone());
        self.txn(key, |t| {
            let mut rec = get_in(t, &records, key)?.ok_or_else(|| Error::NotFound(key.into()))?;
            if rec.kind != Kind::Active {
                return Err(Error::Invalid {
                    key: key.to_string(),
                    reason: format!("is {}; only active snapshots can be committed", rec.kind),
                });
            }
            if name != key && get_in(t, &records, name)?.is_some() {
                return Err(Error::AlreadyExists(name.to_string()));
            }
            t.delete(&records, key.as_bytes()).map_err(md_err(key))?;
            rec.kind = Kind::Committed;
            t.put(&records, name.as_bytes(), &encode(name, &rec)?)
                .map_err(md_err(name))?;
            if let Some(p) = &rec.parent {
                t.delete(&children, &child_key(p, key))
                    .map_err(md_err(key))?;
                t.put(&children, &child_key(p, name), b"")
                    .map_err(md_err(name))?;
            }
            Ok(rec.clone())
        })
    }

    /// Deletes the record of `key`, refusing while any snapshot has it as parent.
    pub fn remove(&self, key: &str) -> Result<Record> {
        let (records, children) = (self.records.clone(), self.children.clone());
        self.txn(key, |t| {
            let rec = get_in(t, &records, key)?.ok_or_else(|| Error::NotFound(key.into()))?;
            if !t
                .scan(&children, &child_key(key, ""))
                .map_err(md_err(key))?
                .is_empty()
            {
                return Err(Error::HasChildren(key.to_string()));
            }
            t.delete(&records, key.as_bytes()).map_err(md_err(key))?;
            if let Some(p) = &rec.parent {
                t.delete(&children, &child_key(p, key))
                    .map_err(md_err(key))?;
            }
            Ok(rec.clone())
        })
    }
}

fn decode_u64(key: &str, v: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = v.try_into().map_err(|_| Error::Invalid {
        key: key.to_string(),
        reason: "corrupt snapshot id counter".into(),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use metadata::MemStore;

    fn records() -> Records {
        Records::new(Arc::new(MemStore::default()), "test")
    }

    #[test]
    fn ids_are_never_reused() {
        let r = records();
        assert_eq!(r.allocate_id("a").unwrap(), 1);
        assert_eq!(r.allocate_id("b").unwrap(), 2);
        r.reserve_ids_through(10).unwrap();
        assert_eq!(r.allocate_id("c").unwrap(), 11);
        r.reserve_ids_through(3).unwrap();
        assert_eq!(r.allocate_id("d").unwrap(), 12);
    }

    #[test]
    fn chain_is_recorded_nearest_first() {
        let r = records();
        r.create("a", Kind::Active, None, 1).unwrap();
        r.commit("A", "a").unwrap();
        r.create("b", Kind::Active, Some("A"), 2).unwrap();
        r.commit("B", "b").unwrap();
        let c = r.create("c", Kind::Active, Some("B"), 3).unwrap();
        assert_eq!(c.parents, vec![2, 1]);
        assert_eq!(c.parent.as_deref(), Some("B"));
        assert_eq!(r.require("B").unwrap().kind, Kind::Committed);
        assert!(r.get("b").unwrap().is_none(), "commit renames the record");
        let keys: Vec<_> = r.list().unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["A", "B", "c"]);
        assert_eq!(r.ids().unwrap().into_iter().collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn parents_must_exist_and_be_committed() {
        let r = records();
        let e = r.create("x", Kind::Active, Some("nope"), 1).unwrap_err();
        assert!(matches!(&e, Error::NotFound(k) if k == "nope"), "{e}");
        r.create("a", Kind::Active, None, 1).unwrap();
        let e = r.create("x", Kind::Active, Some("a"), 2).unwrap_err();
        assert!(
            e.to_string().contains("\"a\" is active, not committed"),
            "{e}"
        );
        assert!(matches!(
            r.precheck("a", None),
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(
            r.create("a", Kind::View, None, 3),
            Err(Error::AlreadyExists(_))
        ));
        assert!(
            r.get("x").unwrap().is_none(),
            "a failed create writes nothing"
        );
    }

    #[test]
    fn commit_rules() {
        let r = records();
        r.create("a", Kind::Active, None, 1).unwrap();
        r.create("v", Kind::View, None, 2).unwrap();
        r.create("taken", Kind::Active, None, 3).unwrap();
        let e = r.commit("V", "v").unwrap_err();
        assert!(e.to_string().contains("only active"), "{e}");
        assert!(matches!(r.commit("taken", "a"), Err(Error::AlreadyExists(k)) if k == "taken"));
        assert!(matches!(r.commit("X", "missing"), Err(Error::NotFound(k)) if k == "missing"));
        // same name: just changes kind
        r.commit("a", "a").unwrap();
        assert_eq!(r.require("a").unwrap().kind, Kind::Committed);
    }

    #[test]
    fn remove_refuses_parents_until_children_go() {
        let r = records();
        r.create("a", Kind::Active, None, 1).unwrap();
        r.commit("A", "a").unwrap();
        r.create("child", Kind::Active, Some("A"), 2).unwrap();
        r.commit("C", "child").unwrap();
        r.create("view", Kind::View, Some("A"), 3).unwrap();
        assert!(matches!(r.remove("A"), Err(Error::HasChildren(k)) if k == "A"));
        r.remove("C").unwrap();
        assert!(matches!(r.remove("A"), Err(Error::HasChildren(_))));
        r.remove("view").unwrap();
        assert_eq!(r.remove("A").unwrap().id, 1);
        assert!(matches!(r.remove("A"), Err(Error::NotFound(_))));
        assert!(r.list().unwrap().is_empty());
    }

    #[test]
    fn a_key_that_prefixes_another_is_not_its_parent() {
        let r = records();
        r.create("a", Kind::Active, None, 1).unwrap();
        r.commit("A", "a").unwrap();
        r.create("A2", Kind::Active, None, 2).unwrap();
        r.commit("AB", "A2").unwrap();
        r.create("kid", Kind::Active, Some("AB"), 3).unwrap();
        r.remove("A").unwrap();
    }

    #[test]
    fn bad_keys_and_corrupt_records_are_errors() {
        let md = Arc::new(MemStore::default());
        let r = Records::new(md.clone(), "test");
        assert!(matches!(r.precheck("", None), Err(Error::Invalid { .. })));
        assert!(matches!(
            r.precheck("a\0b", None),
            Err(Error::Invalid { .. })
        ));
        md.put("snapshots.test", b"junk", b"{not json").unwrap();
        let e = r.require("junk").unwrap_err();
        assert!(
            e.to_string().contains("\"junk\": corrupt snapshot record"),
            "{e}"
        );
        md.put("snapshots.test.seq", b"next", b"x").unwrap();
        assert!(r.allocate_id("k").is_err());
    }
}
