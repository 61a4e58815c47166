//! A progress bar on stderr for long runs: messages delivered so far, of
//! how many, and the current rate. Redrawn in place on a terminal; a plain
//! line every few seconds otherwise (logs, CI).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counts deliveries; cloned into every receiving task.
pub type Counter = Arc<AtomicUsize>;

/// A running progress display; stops when dropped.
pub struct Progress {
    task: tokio::task::JoinHandle<()>,
}

const WIDTH: usize = 30;

impl Progress {
    /// Starts drawing `label`: `done` counts up to `total`.
    pub fn watch(label: &str, total: usize, done: Counter) -> Self {
        let label = label.to_owned();
        let terminal = std::io::stderr().is_terminal();
        let every = if terminal { Duration::from_millis(250) } else { Duration::from_secs(5) };
        let task = tokio::spawn(async move {
            let began = Instant::now();
            let mut ticker = tokio::time::interval(every);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let count = done.load(Ordering::Relaxed);
                let line = bar(&label, count, total, began.elapsed());
                let mut stderr = std::io::stderr().lock();
                let _ = if terminal { write!(stderr, "\r{line}") } else { writeln!(stderr, "{line}") };
            }
        });
        Self { task }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
    }
}

fn bar(label: &str, count: usize, total: usize, elapsed: Duration) -> String {
    let filled = (count * WIDTH).checked_div(total).unwrap_or(WIDTH).min(WIDTH);
    let rate = count as f64 / elapsed.as_secs_f64().max(1e-3);
    format!(
        "{label} [{}{}] {count}/{total} ({rate:.0} msg/s)",
        "#".repeat(filled),
        " ".repeat(WIDTH - filled)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_count() {
        let line = bar("throughput", 50, 100, Duration::from_secs(2));
        assert_eq!(line, format!("throughput [{}{}] 50/100 (25 msg/s)", "#".repeat(15), " ".repeat(15)));
        assert!(bar("drain", 0, 0, Duration::ZERO).contains(&"#".repeat(WIDTH)));
    }
}
