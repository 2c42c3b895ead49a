//! Progress over many cases or studies on stderr: a bar redrawn in place when
//! stderr is a terminal, one plain line per item when it is not (a log file,
//! a pipe, a CI job), so a redirected run stays readable.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Progress over `total` items ("case", "study").
pub struct Progress {
    what: &'static str,
    total: usize,
    /// Items begun so far (the current one included).
    current: usize,
    name: String,
    detail: String,
    /// Fraction of the current item done (0 to 1).
    within: f64,
    bar: bool,
    started: Instant,
    last_draw: Option<Instant>,
}

/// Bar width in characters.
const WIDTH: usize = 30;

impl Progress {
    /// A bar when `bar_wanted` and stderr is a terminal, plain lines otherwise.
    pub fn new(what: &'static str, total: usize, bar_wanted: bool) -> Self {
        Progress {
            what,
            total,
            current: 0,
            name: String::new(),
            detail: String::new(),
            within: 0.0,
            bar: bar_wanted && std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_draw: None,
        }
    }

    /// The next item begins (`name` may be empty: the number alone).
    pub fn begin(&mut self, name: &str) {
        self.current += 1;
        self.name = name.to_string();
        self.detail.clear();
        self.within = 0.0;
        if self.bar {
            self.draw();
        } else {
            let sep = if name.is_empty() { "" } else { ": " };
            eprintln!("edgeseg: {} {} of {}{sep}{name}", self.what, self.current, self.total);
        }
    }

    /// How far the current item is (`within` from 0 to 1) and what it does;
    /// redrawn at most ten times a second, silent without a bar.
    pub fn step(&mut self, within: f64, detail: &str) {
        if !self.bar {
            return;
        }
        self.within = within.clamp(0.0, 1.0);
        self.detail = detail.to_string();
        if self.last_draw.is_none_or(|t| t.elapsed() >= Duration::from_millis(100)) {
            self.draw();
        }
    }

    /// Runs `f` (which prints a line) with the bar cleared, then redraws it.
    pub fn suspend<T>(&mut self, f: impl FnOnce() -> T) -> T {
        self.clear();
        let r = f();
        if self.bar {
            self.draw();
        }
        r
    }

    /// The bar goes (nothing to do for plain lines).
    pub fn finish(&mut self) {
        self.clear();
    }

    fn clear(&self) {
        if self.bar {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }

    fn draw(&mut self) {
        let done = (self.current.saturating_sub(1) as f64 + self.within) / self.total.max(1) as f64;
        let filled = ((done * WIDTH as f64) as usize).min(WIDTH);
        let secs = self.started.elapsed().as_secs();
        let sep = if self.detail.is_empty() { "" } else { ": " };
        eprint!(
            "\r\x1b[2K[{}{}] {}/{} {} {}{sep}{} {}:{:02}",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            self.current,
            self.total,
            self.what,
            self.name,
            self.detail,
            secs / 60,
            secs % 60
        );
        let _ = std::io::stderr().flush();
        self.last_draw = Some(Instant::now());
    }
}
