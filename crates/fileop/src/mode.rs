//! Symbolic modes (`modeStr` of a copy): `chmod(1)` syntax as BSD's `setmode` reads it,
//! with a zero umask, which is what BuildKit applies to every copied entry.
//!
//! A mode is either octal (`755`, at most `07777`) or comma-separated clauses
//! `[ugoa]*([-+=]([rwxXst]*|[ugo]))+`. No "who" means all classes. `X` sets execute
//! bits only on directories and on entries that had an execute bit to begin with; `s`
//! and `t` are ignored for "other" alone; `u`/`g`/`o` after the operator copy that
//! class's current bits (`g=u`).

const SETUID: u32 = 0o4000;
const SETGID: u32 = 0o2000;
const STICKY: u32 = 0o1000;
const USER: u32 = 0o700;
const GROUP: u32 = 0o070;
const OTHER: u32 = 0o007;
/// What "a" (or `=` without "who") covers: every bit but sticky.
const STANDARD: u32 = SETUID | SETGID | USER | GROUP | OTHER;
const EXEC: u32 = 0o111;

/// One step of a mode change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Clear these bits.
    Clear(u32),
    /// Set these bits.
    Set(u32),
    /// Set these bits on a directory or an entry that had any execute bit (`X`).
    SetIfExecutable(u32),
    /// Copy the permission triplet at bit `from` (6, 3 or 0) onto the classes in
    /// `to` (user, group, other), adding (`+`), removing (`-`) or replacing (`=`).
    Copy { from: u32, to: [bool; 3], op: u8 },
}

/// A parsed mode change, applied to each copied entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ModeSet {
    steps: Vec<Step>,
}

/// Why a mode string is refused.
pub(crate) type ParseError = &'static str;

impl ModeSet {
    /// Parses `s` (octal or symbolic).
    pub(crate) fn parse(s: &str) -> Result<ModeSet, ParseError> {
        if s.is_empty() {
            return Err("empty mode");
        }
        if s.as_bytes()[0].is_ascii_digit() {
            let v = u32::from_str_radix(s, 8).map_err(|_| "not an octal number")?;
            if v & !(STANDARD | STICKY) != 0 {
                return Err("octal mode out of range (at most 07777)");
            }
            return Ok(ModeSet {
                steps: vec![Step::Clear(STANDARD | STICKY), Step::Set(v)],
            });
        }
        let mut steps = Vec::new();
        for clause in s.split(',') {
            parse_clause(clause.as_bytes(), &mut steps)?;
        }
        Ok(ModeSet { steps })
    }

    /// The new permission bits (`0o7777` part) of an entry with bits `mode`.
    pub(crate) fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let original = mode & 0o7777;
        let mut m = original;
        for step in &self.steps {
            match *step {
                Step::Clear(bits) => m &= !bits,
                Step::Set(bits) => m |= bits,
                Step::SetIfExecutable(bits) => {
                    if is_dir || original & EXEC != 0 {
                        m |= bits;
                    }
                }
                Step::Copy { from, to, op } => {
                    let value = (m >> from) & 0o7;
                    for (shift, on) in [6, 3, 0].into_iter().zip(to) {
                        if !on {
                            continue;
                        }
                        match op {
                            b'-' => m &= !(value << shift),
                            b'+' => m |= value << shift,
                            _ => m = (m & !(0o7 << shift)) | (value << shift),
                        }
                    }
                }
            }
        }
        m
    }
}

/// Appends the steps of one clause (`ug+rw-x`, `a=`, `go=u-w`).
fn parse_clause(mut s: &[u8], steps: &mut Vec<Step>) -> Result<(), ParseError> {
    // Who: None means "all", with the subtleties BSD gives it.
    let mut who: Option<u32> = None;
    while let Some((&c, rest)) = s.split_first() {
        let bits = match c {
            b'u' => SETUID | USER,
            b'g' => SETGID | GROUP,
            b'o' => OTHER,
            b'a' => STANDARD,
            _ => break,
        };
        who = Some(who.unwrap_or(0) | bits);
        s = rest;
    }
    if s.is_empty() {
        return Err("missing operator (+, - or =)");
    }
    while let Some((&op, rest)) = s.split_first() {
        if !matches!(op, b'+' | b'-' | b'=') {
            return Err("expected +, - or =");
        }
        s = rest;
        // `t` may widen who for this operator only.
        let mut who = who;
        let special_ok = who.is_none_or(|w| w & !OTHER != 0);
        let mut perm = 0;
        let mut perm_x = 0;
        let mut equal_done = false;
        while let Some((&c, rest)) = s.split_first() {
            match c {
                b'r' => perm |= 0o444,
                b'w' => perm |= 0o222,
                b'x' => perm |= EXEC,
                b'X' if op == b'-' => perm |= EXEC,
                b'X' => perm_x = EXEC,
                b's' if special_ok => perm |= SETUID | SETGID,
                b't' if special_ok => {
                    who = who.map(|w| w | STICKY);
                    perm |= STICKY;
                }
                b's' | b't' => {}
                b'u' | b'g' | b'o' => {
                    if perm != 0 {
                        push_op(steps, op, who, perm);
                        perm = 0;
                    }
                    if op == b'=' {
                        equal_done = true;
                    }
                    if perm_x != 0 {
                        push_op(steps, b'X', who, perm_x);
                        perm_x = 0;
                    }
                    let from = match c {
                        b'u' => 6,
                        b'g' => 3,
                        _ => 0,
                    };
                    let to = match who {
                        None => [true; 3],
                        Some(w) => [w & 0o400 != 0, w & 0o040 != 0, w & 0o004 != 0],
                    };
                    steps.push(Step::Copy { from, to, op });
                }
                _ => break,
            }
            s = rest;
        }
        if perm != 0 || (op == b'=' && !equal_done) {
            push_op(steps, op, who, perm);
        }
        if perm_x != 0 {
            push_op(steps, b'X', who, perm_x);
        }
    }
    Ok(())
}

fn push_op(steps: &mut Vec<Step>, op: u8, who: Option<u32>, perm: u32) {
    let bits = who.map_or(perm, |w| w & perm);
    match op {
        b'=' => {
            steps.push(Step::Clear(who.unwrap_or(STANDARD)));
            steps.push(Step::Set(bits));
        }
        b'+' => steps.push(Step::Set(bits)),
        b'-' => steps.push(Step::Clear(bits)),
        _ => steps.push(Step::SetIfExecutable(bits)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(s: &str, mode: u32, is_dir: bool) -> u32 {
        ModeSet::parse(s).unwrap().apply(mode, is_dir)
    }

    #[test]
    fn chmod_examples() {
        let cases: &[(&str, u32, bool, u32)] = &[
            ("u+x", 0o644, false, 0o744),
            ("+x", 0o644, false, 0o755),
            ("a=r", 0o755, false, 0o444),
            ("go-w", 0o666, false, 0o644),
            ("u=rwx,go=rx", 0o000, false, 0o755),
            ("u=rwx,go=u-w", 0o000, false, 0o755),
            ("go=", 0o777, false, 0o700),
            ("=rw,+X", 0o751, false, 0o777),
            ("=rw,+X", 0o640, false, 0o666),
            ("+X", 0o644, true, 0o755),
            ("+X", 0o644, false, 0o644),
            ("+X", 0o600, false, 0o600),
            ("a+X", 0o700, false, 0o711),
            ("u-X", 0o755, false, 0o655),
            ("g=u", 0o640, false, 0o660),
            ("o=g", 0o650, false, 0o655),
            ("u+s", 0o755, false, 0o4755),
            ("g+s", 0o755, true, 0o2755),
            ("+s", 0o755, false, 0o6755),
            ("o+s", 0o755, false, 0o755),
            ("+t", 0o777, true, 0o1777),
            ("o+t", 0o777, true, 0o777),
            ("a=rw", 0o1777, true, 0o1666),
            ("u+x-w", 0o644, false, 0o544),
            ("ug+rw,o-rwx", 0o604, false, 0o660),
            ("755", 0o1644, false, 0o755),
            ("0600", 0o777, false, 0o600),
            ("4755", 0o644, false, 0o4755),
        ];
        for &(s, mode, is_dir, want) in cases {
            assert_eq!(
                apply(s, mode, is_dir),
                want,
                "{s} on {mode:o} (dir: {is_dir})"
            );
        }
    }

    #[test]
    fn bad_modes_are_refused() {
        for bad in [
            "", "u", "u+x,", ",u+x", "z+x", "u+q", "8", "17777", "u*x", "+x;",
        ] {
            assert!(ModeSet::parse(bad).is_err(), "{bad:?}");
        }
    }
}
