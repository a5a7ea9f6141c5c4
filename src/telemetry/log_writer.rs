//! [`StderrLog`]: where log lines go. A log line that cannot be written (stderr is a pipe whose
//! reader went away, a full disk, `/dev/full`) is dropped and counted in
//! `botpipe_log_write_errors_total`; the write reports success to `tracing` either way.
//!
//! Why not `std::io::stderr` directly: `tracing-subscriber` answers a failed write by printing a
//! complaint with `eprintln!`, which panics when stderr itself is the thing that failed. The
//! panic then ends whichever task was logging (a puller, the signal watcher), silently, since
//! the panic message cannot be printed either. Logging must never stop the pipeline, so a
//! failure ends here. The counter is the one way an operator can still see it.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

use super::metrics::LOG_WRITE_ERRORS_TOTAL;

/// Makes a [`StderrLogWriter`] per log line.
#[derive(Debug, Clone, Copy, Default)]
pub struct StderrLog;

impl<'a> MakeWriter<'a> for StderrLog {
    type Writer = StderrLogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        StderrLogWriter(Sink(io::stderr()))
    }
}

/// Writes one log line to stderr; a failure is counted and swallowed.
#[derive(Debug)]
pub struct StderrLogWriter(Sink<io::Stderr>);

impl Write for StderrLogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Any writer whose failures are counted and swallowed (generic so tests can break it).
#[derive(Debug)]
struct Sink<W>(W);

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // write_all, not write: a short write would otherwise have the caller loop on a
        // writer that keeps failing. What did not go out of this line is dropped.
        if self.0.write_all(buf).is_err() {
            count_failure();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.0.flush().is_err() {
            count_failure();
        }
        Ok(())
    }
}

fn count_failure() {
    metrics::counter!(LOG_WRITE_ERRORS_TOTAL).increment(1);
}

/// Writes `text` and a newline to stderr, for the few messages printed outside `tracing` (the
/// final error of `main`); a failure is counted like a failed log line, never a panic as with
/// `eprintln!`.
pub fn eprint_line(text: &str) {
    let mut w = Sink(io::stderr());
    // Sink never fails: it counts instead.
    let _never_fails = writeln!(w, "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
    }

    #[test]
    fn a_broken_writer_reports_success_so_logging_goes_on() {
        let mut w = Sink(Broken);
        assert_eq!(w.write(b"a line\n").unwrap(), 7);
        w.write_all(b"another\n").unwrap();
        w.flush().unwrap();
    }
}
