//! Go's `time.Duration` text: parsing (`5s`, `1m30s`, `500ms`, `1.5h`) and printing as
//! `Duration.String()` does (`48h0m0s`, `1m30s`, `1.5s`, `500ms`), for Dockerfile
//! HEALTHCHECK flags, config files and what the CLI prints.

/// Parses a Go duration (`5s`, `1m30s`, `500ms`; `0` alone) into nanoseconds.
pub fn parse(s: &str) -> Result<i64, String> {
    if s == "0" {
        return Ok(0);
    }
    let bad = || format!("invalid duration {s:?}");
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += n * mult;
        rest = &rest[unit_len..];
    }
    Ok(total as i64)
}

/// Go's `time.Duration.String()` of `ns` nanoseconds.
pub fn format(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let mut u = ns.unsigned_abs();
    let frac = |v: u64, scale: u64| {
        let whole = v / scale;
        let rest = v % scale;
        if rest == 0 {
            whole.to_string()
        } else {
            let digits = scale.to_string().len() - 1;
            let f = format!("{rest:0digits$}");
            format!("{whole}.{}", f.trim_end_matches('0'))
        }
    };
    let out = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", frac(u, 1_000))
    } else if u < 1_000_000_000 {
        format!("{}ms", frac(u, 1_000_000))
    } else {
        let mut s = String::new();
        let h = u / 3_600_000_000_000;
        u %= 3_600_000_000_000;
        let m = u / 60_000_000_000;
        u %= 60_000_000_000;
        if h > 0 {
            s.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            s.push_str(&format!("{m}m"));
        }
        s.push_str(&format!("{}s", frac(u, 1_000_000_000)));
        s
    };
    if neg { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_as_go() {
        assert_eq!(parse("5s"), Ok(5_000_000_000));
        assert_eq!(parse("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse("500ms"), Ok(500_000_000));
        assert_eq!(parse("0"), Ok(0));
        for bad in ["", "h", "5x", "1h-2m", "10"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(format(48 * 3_600_000_000_000), "48h0m0s");
        assert_eq!(format(90_000_000_000), "1m30s");
        assert_eq!(format(1_500_000_000), "1.5s");
        assert_eq!(format(500_000_000), "500ms");
        assert_eq!(format(-2_000_000_000), "-2s");
        assert_eq!(format(0), "0s");
    }
}
