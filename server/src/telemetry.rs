//! Logging: one JSON object a line for log collectors, or text for people.
//!
//! The JSON lines carry `severity` and `message` at the top level, which
//! Google Cloud Logging reads as the entry's severity and summary, and
//! CloudWatch Logs indexes as fields.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON when stdout is not a terminal, else text.
    Auto,
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid log filter {filter:?}: {reason}")]
pub struct FilterError {
    filter: String,
    reason: String,
}

/// Sends `tracing` events to stdout, filtered by `filter` (an `EnvFilter`
/// directive such as `info,robot_server::access=debug`).
pub fn init(format: LogFormat, filter: &str) -> Result<(), FilterError> {
    let filter_error = |reason: String| FilterError {
        filter: filter.to_owned(),
        reason,
    };
    let env_filter = EnvFilter::builder()
        .parse(filter)
        .map_err(|e| filter_error(e.to_string()))?;
    let terminal = std::io::stdout().is_terminal();
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !terminal,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stdout);
    // A second init (tests) keeps the first subscriber; that is fine.
    let _ = if json {
        builder.event_format(CloudJson).try_init()
    } else {
        builder.with_ansi(terminal).try_init()
    };
    Ok(())
}

/// Formats an event as one JSON object: `timestamp`, `severity`,
/// `message`, `target`, then the event's own fields.
pub struct CloudJson;

/// Cloud Logging's names for the levels.
fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

impl<S, N> FormatEvent<S, N> for CloudJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or_default();
        // Written field by field so the line reads in a useful order.
        let mut text = String::with_capacity(160);
        let mut field = |key: &str, value: &Value| -> fmt::Result {
            let sep = if text.is_empty() { '{' } else { ',' };
            let key = serde_json::to_string(key).map_err(|_| fmt::Error)?;
            let value = serde_json::to_string(value).map_err(|_| fmt::Error)?;
            write!(text, "{sep}{key}:{value}")
        };
        field("timestamp", &Value::String(timestamp))?;
        field("severity", &Value::from(severity(event.metadata().level())))?;
        field("message", &message)?;
        field("target", &Value::from(event.metadata().target()))?;
        for (key, value) in &fields.0 {
            if !matches!(key.as_str(), "timestamp" | "severity" | "target") {
                field(key, value)?;
            }
        }
        text.push('}');
        writeln!(writer, "{text}")
    }
}

/// Collects an event's fields as JSON values.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_severity_and_message() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(CloudJson)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(status = 500u16, path = %"/robots", "request failed");
            tracing::info!("plain");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(text.starts_with(r#"{"timestamp":"#), "{text}");
        assert_eq!(lines[0]["severity"], "WARNING");
        assert_eq!(lines[0]["message"], "request failed");
        assert_eq!(lines[0]["status"], 500);
        assert_eq!(lines[0]["path"], "/robots");
        assert!(lines[0]["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["severity"], "INFO");
        assert_eq!(lines[1]["message"], "plain");
    }

    #[test]
    fn bad_filters_are_refused() {
        let err = init(LogFormat::Json, "info,[").unwrap_err();
        assert!(err.to_string().contains("info,["), "{err}");
    }
}
