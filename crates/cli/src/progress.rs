//! Progress bars for transfers: drawn on a terminal, silent otherwise.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use podder_client::transfer::Progress;

pub struct Bar {
    bar: Option<ProgressBar>,
    label: String,
}

impl Bar {
    pub fn new(label: &str) -> Bar {
        Bar { bar: None, label: label.to_string() }
    }
}

/// A bar that shows itself only on a terminal and only for a real transfer.
pub struct TermBar {
    inner: std::sync::Mutex<Bar>,
}

impl TermBar {
    pub fn new(label: &str) -> TermBar {
        TermBar { inner: std::sync::Mutex::new(Bar::new(label)) }
    }
}

impl Progress for TermBar {
    fn start(&self, total: u64) {
        if total == 0 || !std::io::stderr().is_terminal() {
            return;
        }
        let mut b = self.inner.lock().unwrap();
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {prefix}{binary_bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(b.label.clone());
        b.bar = Some(bar);
    }
    fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.inner.lock().unwrap().bar {
            bar.inc(bytes);
        }
    }
    fn files(&self, done: u64, total: u64) {
        if let Some(bar) = &self.inner.lock().unwrap().bar {
            bar.set_prefix(format!("{done}/{total} files "));
        }
    }
    fn finish(&self) {
        if let Some(bar) = self.inner.lock().unwrap().bar.take() {
            bar.finish_and_clear();
        }
    }
}
