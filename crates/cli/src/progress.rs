//! Progress on stderr: a bar per file on a terminal, plain lines otherwise.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use upsession_client_reqwest::{ProgressEvent, ProgressKind, ProgressSink};

/// Shows the progress events of every upload of one command.
#[derive(Clone)]
pub(crate) struct Display {
    inner: Arc<Mutex<Inner>>,
}

enum Mode {
    Bars(MultiProgress),
    Lines,
}

struct Inner {
    mode: Mode,
    bars: HashMap<Arc<str>, ProgressBar>,
    /// For plain lines: when each upload last printed, and at which tenth.
    last_line: HashMap<Arc<str>, (Instant, u64)>,
}

fn mib(bytes: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)] // for people to read
    let b = bytes as f64;
    b / f64::from(1 << 20)
}

impl Display {
    pub(crate) fn new(_json: bool) -> Self {
        let mode = if stderr_is_terminal() {
            Mode::Bars(MultiProgress::new())
        } else {
            Mode::Lines
        };
        Self {
            inner: Arc::new(Mutex::new(Inner {
                mode,
                bars: HashMap::new(),
                last_line: HashMap::new(),
            })),
        }
    }

    /// A sink that feeds this display.
    pub(crate) fn sink(&self) -> ProgressSink {
        let this = self.clone();
        ProgressSink::callback(move |event| this.show(event))
    }

    fn show(&self, event: &ProgressEvent) {
        let mut inner = self.inner.lock().expect("progress lock");
        let inner = &mut *inner;
        let label = event.label.clone();
        match &inner.mode {
            Mode::Bars(multi) => {
                let bar = inner.bars.entry(label.clone()).or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new(0));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{msg:24!} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                        )
                        .expect("a valid template")
                        .progress_chars("=> "),
                    );
                    bar.set_message(label.to_string());
                    bar
                });
                match &event.kind {
                    ProgressKind::Started { total } => bar.set_length(*total),
                    ProgressKind::Acknowledged {
                        acknowledged,
                        total,
                    } => {
                        bar.set_length(*total);
                        bar.set_position(*acknowledged);
                    }
                    // Bytes on the wire move the bar smoothly; acknowledgements
                    // (above) set it back where a resend starts.
                    ProgressKind::Sent { sent, total } => {
                        bar.set_length(*total);
                        bar.set_position(*sent);
                    }
                    ProgressKind::Completed { .. } => bar.finish(),
                    ProgressKind::Failed { .. } => bar.abandon(),
                    _ => {
                        let _ = multi.println(event.to_string());
                    }
                }
            }
            Mode::Lines => {
                let line = match &event.kind {
                    ProgressKind::Acknowledged {
                        acknowledged,
                        total,
                    } => {
                        let tenth = if *total == 0 {
                            10
                        } else {
                            acknowledged * 10 / total
                        };
                        let now = Instant::now();
                        let last = inner.last_line.entry(label.clone()).or_insert((now, 0));
                        // A line per tenth, or every 2 s, so logs stay short.
                        if tenth == last.1
                            && now.duration_since(last.0) < Duration::from_secs(2)
                            && acknowledged < total
                        {
                            return;
                        }
                        *last = (now, tenth);
                        format!(
                            "{label}: {:.1}/{:.1} MiB ({}%)",
                            mib(*acknowledged),
                            mib(*total),
                            tenth * 10
                        )
                    }
                    // The result says it, once, when the upload ends; plain lines
                    // follow acknowledged bytes only.
                    ProgressKind::Failed { .. } | ProgressKind::Sent { .. } => return,
                    _ => event.to_string(),
                };
                crate::print_err(&line);
            }
        }
    }

    /// Clears the bars before results are printed.
    pub(crate) fn finish(&self) {
        let inner = self.inner.lock().expect("progress lock");
        if let Mode::Bars(multi) = &inner.mode {
            let _ = multi.clear();
        }
    }
}

/// Whether stderr is a terminal (progress bars) or not (plain lines).
pub(crate) fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}
