//! The demo's output: plain lines when stdout is not a terminal; on a terminal, the rows of
//! the running story form a small table redrawn in place (ANSI cursor-up and clear-line,
//! nothing else) as orders come back.

use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Live rows are redrawn at most this often (a new row is drawn at once).
const REDRAW_EVERY: Duration = Duration::from_millis(80);
/// Live rows are cut to this many characters so that none wraps and breaks the redraw.
const MAX_LIVE_WIDTH: usize = 110;

/// Where the demo writes what happens.
pub struct Reporter {
    out: Box<dyn Write + Send>,
    live: bool,
    /// The rows below the last permanent line: key and text.
    rows: Vec<(String, String)>,
    /// How many rows are on the screen now (live mode).
    drawn: usize,
    last_draw: Option<Instant>,
    error: Option<io::Error>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("live", &self.live)
            .field("rows", &self.rows.len())
            .finish()
    }
}

impl Reporter {
    /// Writes to stdout: a live table when it is a terminal, plain lines otherwise.
    pub fn stdout() -> Self {
        let live = io::stdout().is_terminal();
        Self::new(Box::new(io::stdout()), live)
    }

    /// Writes plain lines to `out`.
    pub fn plain(out: impl Write + Send + 'static) -> Self {
        Self::new(Box::new(out), false)
    }

    fn new(out: Box<dyn Write + Send>, live: bool) -> Self {
        Self {
            out,
            live,
            rows: Vec::new(),
            drawn: 0,
            last_draw: None,
            error: None,
        }
    }

    /// Whether rows are redrawn in place.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// A permanent line. It ends the live table above it.
    pub fn line(&mut self, text: impl AsRef<str>) {
        self.rows.clear();
        self.drawn = 0;
        let result = writeln!(self.out, "{}", text.as_ref()).and_then(|()| self.out.flush());
        self.keep_error(result);
    }

    /// The running state of row `key` (live mode only; plain output skips it).
    pub fn progress(&mut self, key: &str, text: impl Into<String>) {
        if !self.live {
            return;
        }
        let added = self.upsert(key, text.into());
        let due = self.last_draw.is_none_or(|at| at.elapsed() >= REDRAW_EVERY);
        if added || due {
            self.redraw();
        }
    }

    /// The final state of row `key`: printed as a line in plain mode, drawn at once live.
    pub fn row(&mut self, key: &str, text: impl Into<String>) {
        let text = text.into();
        if self.live {
            self.upsert(key, text);
            self.redraw();
        } else {
            let result = writeln!(self.out, "{text}").and_then(|()| self.out.flush());
            self.keep_error(result);
        }
    }

    /// The first write error, if writing ever failed.
    pub fn take_error(&mut self) -> Option<io::Error> {
        self.error.take()
    }

    /// Returns true when the row is new.
    fn upsert(&mut self, key: &str, text: String) -> bool {
        match self.rows.iter_mut().find(|(k, _)| k == key) {
            Some((_, t)) => {
                *t = text;
                false
            }
            None => {
                self.rows.push((key.to_owned(), text));
                true
            }
        }
    }

    fn redraw(&mut self) {
        let mut frame = String::new();
        if self.drawn > 0 {
            frame.push_str(&format!("\x1b[{}A", self.drawn));
        }
        for (_, text) in &self.rows {
            frame.push_str("\r\x1b[2K");
            frame.extend(text.chars().take(MAX_LIVE_WIDTH));
            frame.push('\n');
        }
        self.drawn = self.rows.len();
        self.last_draw = Some(Instant::now());
        let result = self
            .out
            .write_all(frame.as_bytes())
            .and_then(|()| self.out.flush());
        self.keep_error(result);
    }

    fn keep_error(&mut self, result: io::Result<()>) {
        if let Err(e) = result {
            self.error.get_or_insert(e);
        }
    }
}

/// An in-memory output that can be read while the reporter writes to it (for tests).
#[derive(Debug, Clone, Default)]
pub struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    /// Everything written so far.
    pub fn contents(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_output_has_final_rows_and_no_progress_or_escapes() {
        let buf = SharedBuffer::default();
        let mut r = Reporter::plain(buf.clone());
        r.line("== canary");
        r.progress("5", "5%: 10 orders");
        r.row("5", "5%: 200 orders");
        let out = buf.contents();
        assert_eq!(out, "== canary\n5%: 200 orders\n");
    }

    #[test]
    fn live_rows_are_redrawn_in_place() {
        let buf = SharedBuffer::default();
        let mut r = Reporter::new(Box::new(buf.clone()), true);
        r.row("a", "first");
        r.row("b", "second");
        r.row("a", "first, done");
        let out = buf.contents();
        // The third frame moves up over the two rows drawn before it.
        assert!(out.contains("\x1b[2Afirst") || out.contains("\x1b[2A\r\x1b[2Kfirst, done"));
        assert!(out.ends_with("first, done\n\r\x1b[2Ksecond\n"), "{out:?}");
    }
}
