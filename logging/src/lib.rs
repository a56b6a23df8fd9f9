//! Logging for both binaries, to stdout: one JSON object a line for log
//! collectors, or text for people.
//!
//! The JSON lines carry `timestamp`, `severity` (Cloud Logging's names),
//! `message`, `target` and the event's own fields at the top level, which
//! Google Cloud Logging reads as the entry's time, severity and summary and
//! CloudWatch Logs Insights indexes as fields.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

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
/// directive such as `info,robot_server::access=debug`). A second call
/// (tests) keeps the first logger.
pub fn init(format: LogFormat, filter: &str) -> Result<(), FilterError> {
    let env_filter = EnvFilter::builder()
        .parse(filter)
        .map_err(|e| FilterError {
            filter: filter.to_owned(),
            reason: e.to_string(),
        })?;
    let terminal = std::io::stdout().is_terminal();
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !terminal,
    };
    let registry = tracing_subscriber::registry().with(env_filter);
    let _ = if json {
        registry.with(json_layer(std::io::stdout)).try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(terminal)
                    .with_writer(std::io::stdout),
            )
            .try_init()
    };
    Ok(())
}

/// The JSON layer, writing to `writer`.
pub fn json_layer<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let mut layer = json_subscriber::JsonLayer::new(writer);
    layer
        .with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime)
        .with_flattened_event()
        .with_target("target");
    layer.add_dynamic_field("severity", |event, _| {
        Some(severity(event.metadata().level()))
    });
    layer
}

/// Cloud Logging's names for the levels (it has no TRACE, and says WARNING).
fn severity(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::ERROR => "ERROR",
        tracing::Level::WARN => "WARNING",
        tracing::Level::INFO => "INFO",
        tracing::Level::DEBUG | tracing::Level::TRACE => "DEBUG",
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
        let subscriber = tracing_subscriber::registry().with(json_layer(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(status = 500u16, path = %"/robots", "request failed");
            tracing::info!("plain");
            tracing::trace!("fine detail");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["severity"], "WARNING");
        assert_eq!(lines[0]["message"], "request failed");
        assert_eq!(lines[0]["status"], 500);
        assert_eq!(lines[0]["path"], "/robots");
        assert_eq!(lines[0]["target"], module_path!());
        assert!(
            lines[0]["timestamp"].as_str().unwrap().ends_with('Z'),
            "{text}"
        );
        assert_eq!(lines[1]["severity"], "INFO");
        assert_eq!(lines[2]["severity"], "DEBUG");
    }

    #[test]
    fn bad_filters_are_refused() {
        let err = init(LogFormat::Json, "info,[").unwrap_err();
        assert!(err.to_string().contains("info,["), "{err}");
    }
}
