//! Durations as users write them: `90`, `90s`, `10m`, `2h`, `1d`, `1h30m`.

/// `90`, `90s`, `10m`, `2h`, `1d`, or several of them (`1h30m`) → seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad =
        || format!("'{s}' is not a duration: use seconds (90) or a number with s, m, h or d (90s, 10m, 2h, 1h30m)");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        if num.is_empty() {
            return Err(bad());
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() {
        if total != 0 || t.chars().any(|c| !c.is_ascii_digit()) {
            // a bare number after a unit, like `1m30`
            return Err(bad());
        }
        total = num.parse().map_err(|_| bad())?;
    }
    Ok(total)
}
