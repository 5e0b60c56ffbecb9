//! Formatting for people: sizes, times, tables, job summaries.

use podder_core::api::Job;
use podder_core::{Entry, EntryKind};

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// `1 file`, `2 files`: a count with its noun, plural when it is not 1.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// A duration for people: `12ms` under a second, `4.2s`, `3m07s`, `2h05m`.
pub fn duration_ms(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms as f64 / 1000.0;
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{}h{:02}m", (s / 3600.0) as u64, ((s % 3600.0) / 60.0) as u64)
    }
}

/// How long ago, for a creation time: whole seconds (`0s ago` when just now).
pub fn ago(ts: i64) -> String {
    let ms = (now_ms() - ts).max(0);
    if ms < 60_000 {
        return format!("{}s ago", ms / 1000);
    }
    format!("{} ago", duration_ms(ms))
}

/// How long the job ran, or has been running.
pub fn runtime(job: &Job) -> String {
    match (job.started_at, job.finished_at) {
        (Some(s), Some(f)) => duration_ms(f - s),
        (Some(s), None) => duration_ms(now_ms() - s),
        _ => "-".into(),
    }
}

/// Prints rows with columns padded to the widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// A word as a user would type it in a shell: quoted only when it needs to be.
pub fn shell_word(w: &str) -> String {
    let plain = !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c));
    if plain { w.to_string() } else { format!("'{}'", w.replace('\'', "'\\''")) }
}

pub fn command_line(job: &Job) -> String {
    job.spec.command.join(" ")
}

pub fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A manifest's entries as a MODE / SIZE / PATH table.
pub fn entries(entries: &[Entry]) {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| match &e.kind {
            EntryKind::File { mode, size, .. } => vec![format!("{mode:o}"), bytes(*size), e.path.clone()],
            EntryKind::Dir { .. } => vec!["dir".into(), "-".into(), format!("{}/", e.path)],
            EntryKind::Symlink { target } => vec!["link".into(), "-".into(), format!("{} -> {target}", e.path)],
        })
        .collect();
    table(&["MODE", "SIZE", "PATH"], &rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_durations_read_well() {
        assert_eq!(count(1, "file"), "1 file");
        assert_eq!(count(0, "file"), "0 files");
        assert_eq!(count(7, "chunk"), "7 chunks");
        assert_eq!(duration_ms(0), "0ms");
        assert_eq!(duration_ms(12), "12ms");
        assert_eq!(duration_ms(999), "999ms");
        assert_eq!(duration_ms(4200), "4.2s");
        assert_eq!(duration_ms(187_000), "3m07s");
        assert_eq!(duration_ms(7_500_000), "2h05m");
    }
}
