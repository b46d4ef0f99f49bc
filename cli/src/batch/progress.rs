//! Where a run stands, shown while it works: a bar on a terminal, else a `progress:` line per
//! change.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Where the rows of a run stand. A run's rows are the CSV's rows less those an earlier run
/// finished; each ends registered (new), already registered (sent again, the device existed) or
/// failed (refused by the CSV check, the key or CSR step, or the server). Updated from several
/// tasks at once.
#[derive(Debug, Default)]
struct Tally {
    total: usize,
    registered: AtomicUsize,
    already: AtomicUsize,
    failed: AtomicUsize,
}

/// A snapshot of a [`Tally`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub total: usize,
    pub registered: usize,
    pub already: usize,
    pub failed: usize,
}

impl Tally {
    fn new(total: usize) -> Tally {
        Tally {
            total,
            ..Tally::default()
        }
    }

    fn counts(&self) -> Counts {
        Counts {
            total: self.total,
            registered: self.registered.load(Ordering::SeqCst),
            already: self.already.load(Ordering::SeqCst),
            failed: self.failed.load(Ordering::SeqCst),
        }
    }
}

impl Counts {
    /// Rows of this run that have an outcome.
    fn done(&self) -> usize {
        self.registered + self.already + self.failed
    }

    /// `2 registered, 0 already registered, 3 failed`.
    fn outcomes(&self) -> String {
        format!(
            "{} registered, {} already registered, {} failed",
            self.registered, self.already, self.failed
        )
    }
}

/// The tally, shown as a bar on a terminal, else as a `progress:` line per change.
pub struct Progress {
    tally: Tally,
    view: View,
}

enum View {
    Bar(indicatif::ProgressBar),
    Lines { start: Instant },
}

impl Progress {
    /// A run of `to_send` rows to send and `refused` rows the CSV check already failed.
    pub fn for_run(to_send: usize, refused: usize) -> Progress {
        let tally = Tally::new(to_send + refused);
        tally.failed.store(refused, Ordering::SeqCst);
        Progress::new(tally)
    }

    fn new(tally: Tally) -> Progress {
        let view = if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(tally.total as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} rows  {rate}  ETA {eta}  {msg}",
            ) {
                bar.set_style(style.with_key(
                    "rate",
                    |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.0}/s", s.per_sec());
                    },
                ));
            }
            View::Bar(bar)
        } else {
            View::Lines {
                start: Instant::now(),
            }
        };
        let p = Progress { tally, view };
        if let View::Bar(bar) = &p.view {
            let c = p.tally.counts();
            bar.set_position(c.done() as u64);
            bar.set_message(c.outcomes());
        }
        p
    }

    pub fn counts(&self) -> Counts {
        self.tally.counts()
    }

    /// Rows the server answered with a device ready to ship: `created` new, `existing` found.
    pub fn registered(&self, created: usize, existing: usize) {
        self.tally.registered.fetch_add(created, Ordering::SeqCst);
        self.tally.already.fetch_add(existing, Ordering::SeqCst);
        self.show();
    }

    pub fn failed(&self, n: usize) {
        self.tally.failed.fetch_add(n, Ordering::SeqCst);
        self.show();
    }

    fn show(&self) {
        let c = self.tally.counts();
        match &self.view {
            View::Bar(bar) => {
                bar.set_position(c.done() as u64);
                bar.set_message(c.outcomes());
            }
            View::Lines { start } => {
                let secs = start.elapsed().as_secs_f64().max(1e-3);
                eprintln!("{}", progress_line(&c, secs));
            }
        }
    }

    pub fn note(&self, msg: String) {
        match &self.view {
            View::Bar(b) => b.println(msg),
            View::Lines { .. } => eprintln!("{msg}"),
        }
    }

    pub fn finish(&self) {
        if let View::Bar(b) = &self.view {
            b.finish_and_clear();
        }
    }
}

/// `progress: 5/8 rows (2 registered, 0 already registered, 3 failed; 40 rows/s)`.
fn progress_line(c: &Counts, secs: f64) -> String {
    format!(
        "progress: {}/{} rows ({}; {:.0} rows/s)",
        c.done(),
        c.total,
        c.outcomes(),
        c.done() as f64 / secs
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_this_runs_rows_by_outcome() {
        // 8 rows: 2 done by an earlier run (not this run's), 3 refused by the CSV check, 1
        // refused by the server, 2 registered: this run has 6 rows.
        let tally = Tally::new(8 - 2);
        tally.failed.store(3, Ordering::SeqCst);
        let p = Progress {
            tally,
            view: View::Lines {
                start: Instant::now(),
            },
        };
        assert_eq!(p.tally.counts().done(), 3);
        p.failed(1);
        p.registered(2, 0);
        let c = p.tally.counts();
        assert_eq!(
            c,
            Counts {
                total: 6,
                registered: 2,
                already: 0,
                failed: 4
            }
        );
        assert_eq!(
            progress_line(&c, 2.0),
            "progress: 6/6 rows (2 registered, 0 already registered, 4 failed; 3 rows/s)"
        );
        // A chunk found already registered, and one with a refused device.
        let p = Progress::new(Tally::new(5));
        p.registered(0, 3);
        p.failed(1);
        p.registered(1, 0);
        let c = p.tally.counts();
        assert_eq!((c.done(), c.total, c.already), (5, 5, 3));
        assert_eq!(c.outcomes(), "1 registered, 3 already registered, 1 failed");
    }
}
