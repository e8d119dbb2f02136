//! The fields of a text log line, written as `tracing_subscriber`'s default formatter
//! writes them, byte for byte, at a fraction of its cost.
//!
//! The default formatter wraps every field name in a colour style and goes through
//! `core::fmt` three times per field, even when the log is a file without colour; with
//! three lines per message, that was a sixth of the gateway's user-space instructions
//! (callgrind, `benches/e2e-vs-postfix.sh`). Here the common cases are written directly:
//! a plain-ASCII string field, a short message, and a `Display` or `Debug` value (which
//! needs `core::fmt` once). Anything else (escapes, `r#` names, errors, colour) is handed
//! to the default visitor for that field, so the output never differs.

use std::cell::RefCell;
use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// Formats event fields like `tracing_subscriber`'s `DefaultFields`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LogFields;

impl<'a> MakeVisitor<Writer<'a>> for LogFields {
    type Visitor = LogVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> LogVisitor<'a> {
        if target.has_ansi_escapes() {
            LogVisitor::Default(DefaultVisitor::new(target, true))
        } else {
            LogVisitor::Plain(Plain {
                writer: target,
                is_empty: true,
                result: Ok(()),
            })
        }
    }
}

/// The visitor of [`LogFields`]: the default one for a terminal, else the direct writer.
#[derive(Debug)]
pub(crate) enum LogVisitor<'a> {
    Default(DefaultVisitor<'a>),
    Plain(Plain<'a>),
}

/// The direct writer of fields to a line without colour.
#[derive(Debug)]
pub(crate) struct Plain<'a> {
    writer: Writer<'a>,
    /// No field written yet: no separating space.
    is_empty: bool,
    result: fmt::Result,
}

thread_local! {
    /// A formatted message, checked for characters the default formatter escapes.
    static MESSAGE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Whether the default formatter would write `name` as it is.
fn plain_name(name: &str) -> bool {
    !name.starts_with("r#")
}

/// A field that `tracing-log` adds to a `log` record and the default formatter leaves
/// out (without the space before it).
fn log_metadata(name: &str) -> bool {
    name.starts_with("log.")
}

/// Whether `Debug` for `str` writes `s` between quotes unchanged.
fn plain_str(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// Whether the default formatter's terminal-escape guard leaves a message unchanged.
fn plain_message(s: &str) -> bool {
    s.bytes()
        .all(|b| b < 0x80 && !matches!(b, 0x1b | 0x07 | 0x08 | 0x0c | 0x7f))
}

impl Plain<'_> {
    /// Hands one field to the default visitor, which writes it (and the space before
    /// it) exactly as it would have.
    fn delegate(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut v = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut v);
        self.result = v.finish();
        self.is_empty = false;
    }

    /// Writes the separating space, then `name=` unless this is the message.
    fn start(&mut self, name: Option<&str>) {
        if !self.is_empty {
            self.result = self.writer.write_char(' ');
        }
        self.is_empty = false;
        if let Some(name) = name
            && self.result.is_ok()
        {
            self.result = self
                .writer
                .write_str(name)
                .and_then(|()| self.writer.write_char('='));
        }
    }
}

impl Visit for Plain<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let name = field.name();
        if self.result.is_err() || log_metadata(name) {
            return;
        }
        let plain = if name == "message" {
            plain_message(value)
        } else {
            plain_name(name) && plain_str(value)
        };
        if !plain {
            return self.delegate(|v| v.record_str(field, value));
        }
        if name == "message" {
            self.start(None);
            if self.result.is_ok() {
                self.result = self.writer.write_str(value);
            }
        } else {
            self.start(Some(name));
            if self.result.is_ok() {
                self.result = self
                    .writer
                    .write_char('"')
                    .and_then(|()| self.writer.write_str(value))
                    .and_then(|()| self.writer.write_char('"'));
            }
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !log_metadata(field.name()) {
            self.delegate(|v| v.record_error(field, value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if self.result.is_err() || log_metadata(name) {
            return;
        }
        if name == "message" {
            // Usually `format_args!` of a literal: formatted once, checked, written.
            let written = MESSAGE.with(|m| {
                let Ok(mut m) = m.try_borrow_mut() else {
                    return false;
                };
                m.clear();
                if write!(m, "{value:?}").is_err() || !plain_message(&m) {
                    return false;
                }
                self.start(None);
                if self.result.is_ok() {
                    self.result = self.writer.write_str(&m);
                }
                true
            });
            if !written {
                self.delegate(|v| v.record_debug(field, value));
            }
            return;
        }
        if !plain_name(name) {
            return self.delegate(|v| v.record_debug(field, value));
        }
        self.start(Some(name));
        if self.result.is_ok() {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}

impl Visit for LogVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match self {
            LogVisitor::Default(v) => v.record_str(field, value),
            LogVisitor::Plain(p) => p.record_str(field, value),
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        match self {
            LogVisitor::Default(v) => v.record_error(field, value),
            LogVisitor::Plain(p) => p.record_error(field, value),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match self {
            LogVisitor::Default(v) => v.record_debug(field, value),
            LogVisitor::Plain(p) => p.record_debug(field, value),
        }
    }
}

impl VisitOutput<fmt::Result> for LogVisitor<'_> {
    fn finish(self) -> fmt::Result {
        match self {
            LogVisitor::Default(v) => v.finish(),
            LogVisitor::Plain(p) => p.result,
        }
    }
}

impl VisitFmt for LogVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        match self {
            LogVisitor::Default(v) => v.writer(),
            LogVisitor::Plain(p) => &mut p.writer,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::LogFields;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::ErrorKind::Other)?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[derive(Debug)]
    struct Failure;
    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("disk \"full\"")
        }
    }
    impl std::error::Error for Failure {}

    /// Every kind of field the gateway logs, and the ones that need escaping.
    fn events() {
        let odd = "tab\there \"quoted\" back\\slash é \u{1b}[31m";
        tracing::info!("plain message");
        tracing::info!(
            queue_id = "1K2223R350XXEZDX",
            rcpt = "346user@example.com",
            size = 4439u64,
            recipients = 1,
            "recipient"
        );
        tracing::warn!(client = %"127.0.0.1:50792", delay_ms = 12u64, ok = true, ratio = 0.5f64, signed = -3i64, "delivery {} of {}", 1, 2);
        tracing::info!(detail = odd, shown = %odd, debug = ?odd, "message with \u{1b}[1m escape");
        tracing::info!(r#type = "mx", empty = "", unicode = "café", "kinds");
        tracing::error!(
            error = &Failure as &(dyn std::error::Error + 'static),
            "failed"
        );
        tracing::info!(message = odd);
        tracing::info!(only = "fields", quoted = "say \"hi\"", slash = "a\\b");
        tracing::info!(c1 = "\u{85}", "c1 \u{85} control");
        tracing::info!("log.target" = "skipped", after = 1, "log.line" = 3);
    }

    fn render(custom: bool) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(move || out.clone());
        if custom {
            tracing::subscriber::with_default(builder.fmt_fields(LogFields).finish(), events);
        } else {
            tracing::subscriber::with_default(builder.finish(), events);
        }
        let bytes = buf.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8(bytes).unwrap_or_default()
    }

    #[test]
    fn lines_are_the_default_formatters_byte_for_byte() {
        let want = render(false);
        assert_eq!(want.lines().count(), 10, "{want}");
        assert!(
            want.contains(r#"rcpt="346user@example.com" size=4439"#),
            "{want}"
        );
        assert_eq!(render(true), want);
    }
}
