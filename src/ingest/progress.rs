//! Progress: an indicatif bar (images/s, ETA) on a terminal, plain periodic lines otherwise.
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Reports how many inputs are done.
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    start: Instant,
    last_line: Instant,
    enabled: bool,
}

const LINE_EVERY: Duration = Duration::from_secs(10);

impl Progress {
    /// A reporter for `total` inputs; silent when `enabled` is false.
    pub fn new(total: u64, enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:40} {pos}/{len} images  {rate}  ETA {eta}  {msg}",
            ) {
                bar.set_style(style.with_key(
                    "rate",
                    |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = w.write_str(&rate(s.per_sec()));
                    },
                ));
            }
            bar
        });
        Self {
            bar,
            total,
            done: 0,
            start: Instant::now(),
            last_line: Instant::now(),
            enabled,
        }
    }

    /// Marks `n` more inputs done.
    pub fn add(&mut self, n: u64) {
        self.done += n;
        if let Some(bar) = &self.bar {
            bar.inc(n);
        } else if self.enabled && self.last_line.elapsed() >= LINE_EVERY {
            self.last_line = Instant::now();
            let rate = self.done as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
            let eta = (self.total - self.done.min(self.total)) as f64 / rate.max(1e-9);
            eprintln!(
                "ingest: {}/{} images, {:.1} images/s, ETA {:.0} s",
                self.done, self.total, rate, eta
            );
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A rate as the bars show it: whole images per second (indicatif's `{per_sec}` prints four
/// decimals, `597.8175/s`).
fn rate(per_sec: f64) -> String {
    format!("{per_sec:.0} images/s")
}

#[cfg(test)]
mod rate_tests {
    #[test]
    fn rates_are_whole_images_per_second() {
        assert_eq!(super::rate(597.8175), "598 images/s");
        assert_eq!(super::rate(0.4), "0 images/s");
    }
}
