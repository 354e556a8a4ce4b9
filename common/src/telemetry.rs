//! Logging setup shared by the binaries: `tracing` to stderr, filtered by `PITR_LOG`
//! (same syntax as `RUST_LOG`; default `warn`, since PostgreSQL copies the stderr of
//! archive_command and restore_command into its own log for every call).
//!
//! `PITR_LOG_FORMAT=json` writes one JSON object per line instead (with a timestamp, the
//! level, the message and the event's fields at the top level), for log shippers; anything
//! else, or unset, is the plain `LEVEL message key=value` format.

use std::io::IsTerminal;

/// Installs the global subscriber; `verbose` raises the default to `info`.
pub fn init(verbose: bool) {
    // aws-config warns once per credential provider it tries; the final error says it all.
    let default = if verbose { "info,aws_config=warn" } else { "warn,aws_config=error" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PITR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    if json_format(std::env::var("PITR_LOG_FORMAT").ok().as_deref()) {
        let _ = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}

/// Whether `PITR_LOG_FORMAT` asks for JSON lines.
fn json_format(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_opt_in() {
        assert!(json_format(Some("json")) && json_format(Some("JSON ")));
        assert!(!json_format(None) && !json_format(Some("text")) && !json_format(Some("")));
    }
}
