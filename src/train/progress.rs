//! What a run prints while it trains: a progress bar on a terminal, plain lines otherwise,
//! nothing under `--quiet`.
use super::metrics::{EpochRecord, StepRecord};

pub(super) fn progress_bar(enabled: bool, steps: u64) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(steps);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// A line above the bar, or on stderr when there is no terminal to draw one (indicatif drops
/// the lines of a hidden bar), or nowhere under `--quiet`.
pub(super) fn say(bar: &indicatif::ProgressBar, progress: bool, line: &str) {
    if !progress {
        return;
    }
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

pub(super) fn report_step(
    bar: &indicatif::ProgressBar,
    progress: bool,
    r: &StepRecord,
    epochs: usize,
) {
    if !progress {
        return;
    }
    let mut msg = format!(
        "epoch {}/{epochs}  loss {:.4}  lr {:.2e}  {:.0} img/s  data wait {:.1}s",
        r.epoch, r.loss, r.lr, r.images_per_s, r.data_wait_s
    );
    if let Some(e) = r.exchange {
        msg += &format!("  exchanges {:.1}s", e.wait_s + e.host_s);
    }
    if bar.is_hidden() {
        // Not a terminal (CI, a log file): plain lines instead of a redrawn bar.
        eprintln!("step {}  {msg}", r.step);
    } else {
        bar.set_message(msg);
    }
}

pub(super) fn epoch_line(r: &EpochRecord) -> String {
    let val = match (r.val_loss, r.val_top1_error, r.val_top5_error) {
        (Some(l), Some(t1), Some(t5)) => format!(
            "  val loss {l:.4}  top-1 error {:.2}%  top-5 error {:.2}%",
            t1 * 100.0,
            t5 * 100.0
        ),
        _ => String::new(),
    };
    format!(
        "epoch {} done (step {}): train loss {:.4}{val}  {:.0}s",
        r.epoch, r.step, r.train_loss, r.seconds
    )
}
