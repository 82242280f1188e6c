//! Byte counts as upstream's progress output shows them (decimal units, two decimals:
//! `123B`, `1.23kB`, `45.60MB`), so transfer lines read the same as upstream's.

const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];

pub fn bytes(n: i64) -> String {
    let magnitude = n.unsigned_abs();
    if magnitude < 1000 {
        return format!("{n}B");
    }
    let mut unit = 0;
    let mut base = 1u64;
    while unit + 1 < UNITS.len() && magnitude / base >= 1000 {
        base *= 1000;
        unit += 1;
    }
    format!("{:.2}{}", n as f64 / base as f64, UNITS[unit])
}

/// `current / total` when the total is known, else `current` when non-zero.
pub(crate) fn progress(current: i64, total: i64) -> Option<String> {
    if total != 0 {
        Some(format!("{} / {}", bytes(current), bytes(total)))
    } else if current != 0 {
        Some(bytes(current))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_upstream() {
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(999), "999B");
        assert_eq!(bytes(1000), "1.00kB");
        assert_eq!(bytes(1234), "1.23kB");
        assert_eq!(bytes(45_600_000), "45.60MB");
        assert_eq!(bytes(-2500), "-2.50kB");
        assert_eq!(bytes(i64::MAX), "9.22EB");
        assert_eq!(bytes(i64::MIN), "-9.22EB");
        assert_eq!(progress(0, 0), None);
        assert_eq!(progress(5, 0).as_deref(), Some("5B"));
        assert_eq!(progress(1500, 3000).as_deref(), Some("1.50kB / 3.00kB"));
    }
}
