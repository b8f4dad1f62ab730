//! The `log` import of contract 0.2.0: a plugin's lines in the broker's log, under a rate
//! limit per instance so that a plugin logging on every message cannot flood the log (or spend
//! the broker's time formatting lines).

use std::time::Instant;

/// Lines a plugin may write at once, after a quiet spell.
const BURST: f64 = 20.0;
/// Lines a second, sustained.
const PER_SECOND: f64 = 10.0;
/// Longer lines are cut: the log is for people, and a plugin's memory is bigger than a line.
const MAX_LINE: usize = 1024;

/// A plugin's log level, as the WIT `level` enum has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// One instance's log: where its lines go and how many it may still write.
#[derive(Debug)]
pub struct PluginLog {
    /// The plugin's origin (a built-in's name or a file path), on every line.
    origin: String,
    /// The share name, on every line; set by `init`.
    group: String,
    /// Token bucket: lines that may be written now.
    tokens: f64,
    refilled: Instant,
    /// Dropped since the last line written: reported on the next line that gets through.
    suppressed: u64,
    /// Dropped and not yet added to the group's counters.
    dropped_unreported: u64,
    /// The last `error` line of the current call, written or not: a panic hook's message,
    /// shown with the trap that follows it.
    last_error: Option<String>,
}

impl PluginLog {
    pub fn new(origin: String) -> PluginLog {
        PluginLog {
            origin,
            group: String::new(),
            tokens: BURST,
            refilled: Instant::now(),
            suppressed: 0,
            dropped_unreported: 0,
            last_error: None,
        }
    }

    pub fn set_group(&mut self, group: &str) {
        self.group = group.to_owned();
    }

    /// A guest call begins: an error line of an earlier call does not explain this call's trap.
    pub fn start_call(&mut self) {
        self.last_error = None;
    }

    pub fn take_last_error(&mut self) -> Option<String> {
        self.last_error.take()
    }

    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped_unreported)
    }

    pub fn write(&mut self, level: PluginLevel, message: &str) {
        let line = clip(message);
        if level == PluginLevel::Error {
            self.last_error = Some(line.to_owned());
        }
        if !self.take_token() {
            self.suppressed += 1;
            self.dropped_unreported += 1;
            return;
        }
        let (group, plugin) = (&self.group, &self.origin);
        if self.suppressed > 0 {
            tracing::warn!(target: "sharq::plugin", group = %group, plugin = %plugin, suppressed = self.suppressed, "plugin log lines dropped by the rate limit ({PER_SECOND} a second)");
            self.suppressed = 0;
        }
        match level {
            PluginLevel::Error => {
                tracing::error!(target: "sharq::plugin", group = %group, plugin = %plugin, "{line}")
            }
            PluginLevel::Warn => {
                tracing::warn!(target: "sharq::plugin", group = %group, plugin = %plugin, "{line}")
            }
            PluginLevel::Info => {
                tracing::info!(target: "sharq::plugin", group = %group, plugin = %plugin, "{line}")
            }
            PluginLevel::Debug => {
                tracing::debug!(target: "sharq::plugin", group = %group, plugin = %plugin, "{line}")
            }
            PluginLevel::Trace => {
                tracing::trace!(target: "sharq::plugin", group = %group, plugin = %plugin, "{line}")
            }
        }
    }

    fn take_token(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * PER_SECOND).min(BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// `message` cut to at most [`MAX_LINE`] bytes, on a character boundary.
fn clip(message: &str) -> &str {
    if message.len() <= MAX_LINE {
        return message;
    }
    let mut end = MAX_LINE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_burst_and_counted() {
        let mut log = PluginLog::new("p".into());
        for i in 0..1000 {
            log.write(PluginLevel::Info, &format!("line {i}"));
        }
        let dropped = log.take_dropped();
        // 20 in the burst, and perhaps one refilled while the loop ran.
        assert!((979..=980).contains(&dropped), "{dropped}");
        assert_eq!(log.take_dropped(), 0);
    }

    #[test]
    fn the_last_error_is_kept_even_when_dropped_and_forgotten_per_call() {
        let mut log = PluginLog::new("p".into());
        for _ in 0..100 {
            log.write(PluginLevel::Info, "noise");
        }
        log.write(PluginLevel::Error, "panicked at src/lib.rs:3:5: boom");
        assert_eq!(
            log.take_last_error().as_deref(),
            Some("panicked at src/lib.rs:3:5: boom")
        );
        log.write(PluginLevel::Error, "again");
        log.start_call();
        assert_eq!(log.take_last_error(), None);
    }

    #[test]
    fn long_lines_are_clipped_on_a_character_boundary() {
        let long = "é".repeat(1000);
        let clipped = clip(&long);
        assert!(clipped.len() <= MAX_LINE);
        assert!(clipped.chars().all(|c| c == 'é'));
    }
}
