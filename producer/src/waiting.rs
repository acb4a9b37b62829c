//! While an attached job waits for a runner: on a terminal, a spinner on stderr with how long
//! it has waited and why (indicatif); after [`NOTICE_AFTER`], in any case, the "still waiting"
//! notice as a status line.
//!
//! No spinner when stderr is not a terminal, with `--quiet` or `--json`, nor in the first
//! [`SPINNER_AFTER`] (a local job is taken at once, and a spinner would only flicker). It
//! decides when; asking the broker why is `runners::waiting_notice`'s.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

use crate::printer::{Printer, Style};

/// How long a job waits before the spinner shows.
const SPINNER_AFTER: Duration = Duration::from_secs(1);

/// How long a job may wait for a runner before the CLI says where it waits.
const NOTICE_AFTER: Duration = Duration::from_secs(3);

/// How often the spinner's reason is asked again while the job still waits.
const REASON_EVERY: Duration = Duration::from_secs(5);

/// How long a job of a concurrency group waits before the CLI says who holds the group (a held
/// group is no fault, so it is said sooner)...
const GROUP_NOTICE_AFTER: Duration = Duration::from_secs(1);

/// ...and how often it looks again, to say so when another job took the group over.
const GROUP_RECHECK: Duration = Duration::from_secs(3);

/// What is due next while the job waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Show the spinner.
    Spinner,
    /// Ask why it waits and print the notice.
    Notice,
    /// Ask why it still waits, for the spinner only.
    Reason,
}

/// The waiting state of one attached job, from queued until a runner takes it.
#[derive(Debug)]
pub struct Waiting {
    spinner: Option<ProgressBar>,
    next: Option<(Instant, Due)>,
    queued_at: Instant,
    /// When the notice comes after the job is due.
    notice_after: Duration,
    /// A group's job asks again who holds the group, with or without a spinner.
    recheck: Option<Duration>,
}

impl Waiting {
    /// The job was just queued, due in `delay` (a delayed job waits for its time first, and
    /// nothing is said meanwhile); `style` says whether a spinner may show; a job of a
    /// concurrency group (`in_group`) says sooner, and again, who holds its group.
    pub fn queued(style: Style, delay: Duration, in_group: bool) -> Waiting {
        let spinner_allowed = style == (Style::Human { quiet: false }) && std::io::stderr().is_terminal();
        let queued_at = Instant::now() + delay;
        let (notice_after, recheck) =
            if in_group { (GROUP_NOTICE_AFTER, Some(GROUP_RECHECK)) } else { (NOTICE_AFTER, None) };
        let next = if spinner_allowed && SPINNER_AFTER < notice_after {
            (queued_at + SPINNER_AFTER, Due::Spinner)
        } else {
            (queued_at + notice_after, Due::Notice)
        };
        Waiting { spinner: None, next: Some(next), queued_at, notice_after, recheck }
    }

    /// Whether anything is still due (the job still waits).
    pub fn is_waiting(&self) -> bool {
        self.next.is_some()
    }

    /// Wait until the next thing is due and say what it is; never ends once the job is taken.
    pub async fn due(&self) -> Due {
        match self.next {
            Some((at, due)) => {
                tokio::time::sleep_until(at).await;
                due
            }
            None => std::future::pending().await,
        }
    }

    /// Show the spinner; the notice follows.
    pub fn show_spinner(&mut self) {
        let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} waiting for a runner for {elapsed}: {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        spinner.set_style(style);
        spinner.set_message("queued");
        // Count from when the job was queued, not from when the spinner showed.
        spinner.set_elapsed(self.queued_at.elapsed());
        spinner.enable_steady_tick(Duration::from_millis(120));
        self.spinner = Some(spinner);
        self.next = Some((self.queued_at + self.notice_after, Due::Notice));
    }

    /// Print `notice` (the "still waiting" status line) and give the spinner its reason.
    pub fn notice(&mut self, notice: &str, printer: &mut Printer) {
        self.suspend(|| printer.status(notice));
        self.reason(notice);
    }

    /// Give the spinner the reason the job still waits; a group's job asks again who holds it.
    pub fn reason(&mut self, notice: &str) {
        if let Some(spinner) = &self.spinner {
            let reason = notice.strip_prefix("still waiting for a runner: ").unwrap_or(notice);
            spinner.set_message(reason.to_owned());
        }
        self.next = match (self.recheck, &self.spinner) {
            (Some(every), _) => Some((Instant::now() + every, Due::Notice)),
            (None, Some(_)) => Some((Instant::now() + REASON_EVERY, Due::Reason)),
            (None, None) => None,
        };
    }

    /// Print something while the spinner is hidden, so the two never share a line.
    pub fn suspend<R>(&self, print: impl FnOnce() -> R) -> R {
        match &self.spinner {
            Some(spinner) => spinner.suspend(print),
            None => print(),
        }
    }

    /// A runner took the job (or following it ended): nothing more is due, the spinner goes.
    pub fn taken(&mut self) {
        self.next = None;
        if let Some(spinner) = self.spinner.take() {
            spinner.finish_and_clear();
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.taken();
    }
}
