//! Garbage collection policies: upstream's `[[worker.oci.gcpolicy]]` entries, the
//! defaults it computes from the disk size, and how much a policy lets the cache keep.

use std::time::Duration;

use crate::Error;

/// What one prune (manual or by policy) removes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// Also `internal` and `frontend` records.
    pub all: bool,
    /// Only records that match one of these (containerd syntax; all when empty).
    pub filters: Vec<String>,
    /// Keep records used within this long.
    pub keep_duration: Option<Duration>,
    /// Never shrink the cache below this many bytes.
    pub reserved_space: u64,
    /// Shrink the cache to at most this many bytes (0: no bound).
    pub max_used_space: u64,
    /// Shrink the cache until the disk has this many bytes free (0: no bound).
    pub min_free_space: u64,
}

impl PruneOptions {
    /// Whether sizes drive the prune (otherwise every candidate goes).
    pub fn size_driven(&self) -> bool {
        self.max_used_space > 0 || self.min_free_space > 0 || self.reserved_space > 0
    }

    /// The bytes the cache may keep, given its size `total` and the disk's free bytes
    /// (`None`: unknown), as upstream computes it: `max_used_space`, lowered by what
    /// the disk lacks of `min_free_space` free, never below `reserved_space`. 0: no
    /// bound (every candidate goes).
    pub fn keep_bytes(&self, total: u64, disk_free: Option<u64>) -> u64 {
        if !self.size_driven() {
            return 0;
        }
        let mut keep = self.max_used_space;
        let excess = disk_free.map_or(0, |free| self.min_free_space.saturating_sub(free));
        if excess > 0 {
            let allowed = total.saturating_sub(excess);
            keep = if keep == 0 {
                allowed
            } else {
                keep.min(allowed)
            };
        } else if self.min_free_space != 0 && keep == 0 {
            // Enough free space and no other bound: nothing to do.
            keep = total;
        }
        keep.max(self.reserved_space)
    }
}

/// Bytes of `pct` percent of a disk of `total` bytes, as upstream rounds it: whole GiB
/// plus one, counted in decimal GB.
pub fn percent_of_disk(total: u64, pct: u64) -> u64 {
    if total == 0 {
        return 2_000_000_000;
    }
    (total / 100 * pct / (1 << 30) + 1) * 1_000_000_000
}

/// Upstream's default policies for a disk of `total` bytes, given the worker's own
/// bounds (`None`: the defaults, 10 % (at most 10 GB) reserved, 20 % free, 80 % (at
/// most 100 GB) used).
pub fn default_policies(
    total: u64,
    reserved: Option<u64>,
    max_used: Option<u64>,
    min_free: Option<u64>,
) -> Vec<PruneOptions> {
    let reserved = reserved.unwrap_or_else(|| percent_of_disk(total, 10).min(10_000_000_000));
    let min_free = min_free.unwrap_or_else(|| percent_of_disk(total, 20));
    let max_used = max_used.unwrap_or_else(|| percent_of_disk(total, 80).min(100_000_000_000));
    let caps = PruneOptions {
        reserved_space: reserved,
        max_used_space: max_used,
        min_free_space: min_free,
        ..PruneOptions::default()
    };
    vec![
        // Contexts, cache mounts and git checkouts unused for two days, over 512 MB.
        PruneOptions {
            filters: vec![
                "type==source.local".into(),
                "type==exec.cachemount".into(),
                "type==source.git.checkout".into(),
            ],
            keep_duration: Some(Duration::from_secs(48 * 3600)),
            max_used_space: 512_000_000,
            ..PruneOptions::default()
        },
        // Anything unused for 60 days, over the bounds.
        PruneOptions {
            keep_duration: Some(Duration::from_secs(60 * 24 * 3600)),
            ..caps.clone()
        },
        // Anything over the bounds.
        caps.clone(),
        // Internal records too.
        PruneOptions { all: true, ..caps },
    ]
}

/// A size: bytes, a number with a unit (`512MB`, `10GiB`, `1.5g`; binary units, as
/// upstream's config reads them), or `N%` of a disk of `disk_total` bytes.
pub fn parse_size(s: &str, disk_total: Option<u64>) -> Result<u64, Error> {
    let bad = |reason: &str| Error::Config(format!("size {s:?}: {reason}"));
    let t = s.trim();
    if let Some(pct) = t.strip_suffix('%') {
        let pct: u64 = pct
            .trim()
            .parse()
            .map_err(|_| bad("expected a whole percentage"))?;
        if pct > 100 {
            return Err(bad("more than 100%"));
        }
        let total = disk_total.ok_or_else(|| bad("the disk size is unknown"))?;
        return Ok(percent_of_disk(total, pct));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| bad("expected a number of bytes, with an optional unit"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return Err(bad("unknown unit (B, KB, MB, GB, TB, PB)")),
    };
    let bytes = num * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad("out of range"));
    }
    Ok(bytes as u64)
}

/// A duration: Go's syntax (`48h`, `1h30m`, `90s`, `500ms`), or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, Error> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let ns = llb::duration::parse(t).map_err(|e| Error::Config(format!("duration {s:?}: {e}")))?;
    u64::try_from(ns)
        .map(Duration::from_nanos)
        .map_err(|_| Error::Config(format!("duration {s:?}: out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024", None).unwrap(), 1024);
        assert_eq!(parse_size("512MB", None).unwrap(), 512 << 20);
        assert_eq!(parse_size("10GiB", None).unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5k", None).unwrap(), 1536);
        assert_eq!(
            parse_size("10%", Some(100 << 30)).unwrap(),
            11_000_000_000,
            "10% of 100 GiB: 10 GiB rounded up to 11 GB, as upstream"
        );
        for bad in ["", "MB", "12 parsecs", "-1", "101%"] {
            assert!(parse_size(bad, Some(1 << 30)).is_err(), "{bad}");
        }
        assert!(parse_size("10%", None).is_err(), "no disk size");
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("48h").unwrap(),
            Duration::from_secs(48 * 3600)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("172800").unwrap(),
            Duration::from_secs(172800)
        );
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        for bad in ["", "h", "10", "10x", "1h-2m"] {
            if bad == "10" {
                continue;
            }
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keep_bytes_as_upstream() {
        let o = PruneOptions {
            max_used_space: 1000,
            ..PruneOptions::default()
        };
        assert_eq!(o.keep_bytes(5000, None), 1000);
        let free_only = PruneOptions {
            min_free_space: 700,
            ..PruneOptions::default()
        };
        assert_eq!(
            free_only.keep_bytes(5000, Some(500)),
            4800,
            "200 bytes short"
        );
        assert_eq!(free_only.keep_bytes(5000, Some(900)), 5000, "enough free");
        let o = PruneOptions {
            max_used_space: 1000,
            min_free_space: 700,
            reserved_space: 100,
            ..PruneOptions::default()
        };
        assert_eq!(o.keep_bytes(5000, Some(500)), 1000);
        assert_eq!(o.keep_bytes(150, Some(0)), 100, "never below the reserve");
        let reserve_only = PruneOptions {
            reserved_space: 300,
            ..PruneOptions::default()
        };
        assert_eq!(reserve_only.keep_bytes(5000, None), 300);
        assert_eq!(
            PruneOptions::default().keep_bytes(5000, None),
            0,
            "no bound"
        );
    }

    #[test]
    fn defaults_follow_the_disk() {
        let p = default_policies(200 << 30, None, None, None);
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].max_used_space, 512_000_000);
        assert_eq!(p[0].filters.len(), 3);
        assert_eq!(p[1].keep_duration, Some(Duration::from_secs(60 * 86400)));
        assert_eq!(p[2].reserved_space, 10_000_000_000, "10% capped at 10 GB");
        assert_eq!(p[2].min_free_space, 41_000_000_000);
        assert_eq!(p[2].max_used_space, 100_000_000_000, "80% capped at 100 GB");
        assert!(p[3].all);
    }
}
