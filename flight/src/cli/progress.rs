//! Progress of long operator commands on standard error: a bar redrawn in place on a terminal
//! (rows, rows/s, ETA), plain lines every few seconds otherwise (logs, CI).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// One operation's progress.
pub(crate) struct Progress {
    label: String,
    unit: &'static str,
    start: Instant,
    drawn: Option<Instant>,
    tty: bool,
}

impl Progress {
    /// Starts reporting `label`, counting `unit`s (none: only the time taken).
    pub(crate) fn new(label: impl Into<String>, unit: &'static str) -> Progress {
        Progress {
            label: label.into(),
            unit,
            start: Instant::now(),
            drawn: None,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// `done` units so far, `fraction` of the whole where it is known.
    pub(crate) fn update(&mut self, done: u64, fraction: Option<f64>) {
        let every = if self.tty {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(2)
        };
        if self.drawn.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.drawn = Some(Instant::now());
        self.draw(done, fraction, false);
    }

    /// The last report: `done` units in all.
    pub(crate) fn finish(&mut self, done: u64) {
        self.draw(done, Some(1.0), true);
    }

    fn draw(&self, done: u64, fraction: Option<f64>, last: bool) {
        let secs = self.start.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        // Over a few milliseconds a rate says nothing (and reads as billions per second).
        let rate = if secs >= 0.05 {
            format!(", {} {}/s", thousands(rate as u64), self.unit)
        } else {
            String::new()
        };
        let mut line = format!(
            "{}: {} {}{rate}, {:.1} s",
            self.label,
            thousands(done),
            self.unit,
            secs
        );
        if self.unit.is_empty() {
            line = format!("{}: {:.1} s", self.label, secs);
        }
        if let Some(f) = fraction.filter(|f| *f > 0.0 && !last) {
            let f = f.min(1.0);
            let eta = secs * (1.0 - f) / f;
            let bar = if self.tty {
                let filled = (f * 24.0) as usize;
                format!(" [{}{}]", "#".repeat(filled), "-".repeat(24 - filled))
            } else {
                String::new()
            };
            line = format!("{line}{bar} {:.0}%, ETA {:.0} s", f * 100.0, eta);
        } else if last {
            line.push_str(", done");
        }
        if self.tty {
            eprint!("\r\x1b[2K{line}");
            if last {
                eprintln!();
            }
        } else {
            eprintln!("{line}");
        }
    }
}

/// Runs `work` on another thread, reporting the time it has taken until it returns.
pub(crate) fn ticking<T: Send>(label: &str, work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let handle = s.spawn(work);
        let mut progress = Progress::new(label, "");
        let start = Instant::now();
        while !handle.is_finished() {
            std::thread::sleep(Duration::from_millis(50));
            progress.update(start.elapsed().as_secs(), None);
        }
        progress.finish(start.elapsed().as_secs());
        match handle.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

/// `n` with thousands separators.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1_234_567), "1,234,567");
    }
}
