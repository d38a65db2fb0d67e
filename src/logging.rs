//! Log levels by the names the original's `LOG_LEVEL` takes (pino's), and the logger they
//! set up: our own lines at the level asked for, our dependencies' at `warn` at most, so
//! that `trace` shows what the server does rather than what mio does per connection.

use log::LevelFilter;
use simple_logger::SimpleLogger;

/// The target of lines about what stops the server: the only ones `fatal` shows.
pub const FATAL: &str = "diva_signal::fatal";

/// Log targets of this crate (library and binary) start with this; others are dependencies'.
const OURS: &str = "diva_signal";

/// The most our dependencies may log: their debug and trace lines are about their own
/// internals (mio logs every event source it registers).
const DEPENDENCIES_AT_MOST: LevelFilter = LevelFilter::Warn;

/// How much the server logs, from nothing to everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Nothing at all.
    Silent,
    /// Only the line saying why the server stopped.
    Fatal,
    Error,
    Warn,
    Info,
    Debug,
    /// As `debug`: the server has no lines more detailed than its debug lines.
    Trace,
}

impl std::str::FromStr for LogLevel {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Ok(match text.trim().to_ascii_lowercase().as_str() {
            // "off" is what `log` calls it, and what earlier versions accepted.
            "silent" | "off" => LogLevel::Silent,
            "fatal" => LogLevel::Fatal,
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return Err("must be one of fatal, error, warn, info, debug, trace, silent".into()),
        })
    }
}

impl LogLevel {
    /// The logger for this level, not yet installed (`init()` installs it).
    pub fn logger(self) -> SimpleLogger {
        let (ours, fatal) = match self {
            LogLevel::Silent => (LevelFilter::Off, LevelFilter::Off),
            LogLevel::Fatal => (LevelFilter::Off, LevelFilter::Error),
            LogLevel::Error => (LevelFilter::Error, LevelFilter::Error),
            LogLevel::Warn => (LevelFilter::Warn, LevelFilter::Error),
            LogLevel::Info => (LevelFilter::Info, LevelFilter::Error),
            LogLevel::Debug => (LevelFilter::Debug, LevelFilter::Error),
            LogLevel::Trace => (LevelFilter::Trace, LevelFilter::Error),
        };
        // A dependency's error stops nothing by itself, so `fatal` hides it.
        let dependencies =
            if self == LogLevel::Fatal { LevelFilter::Off } else { ours.min(DEPENDENCIES_AT_MOST) };
        SimpleLogger::new()
            .with_level(dependencies)
            .with_module_level(OURS, ours)
            .with_module_level(FATAL, fatal)
            .with_utc_timestamps()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::{Level, Log, Metadata};

    fn shows(level: LogLevel, target: &str, line: Level) -> bool {
        level.logger().enabled(&Metadata::builder().target(target).level(line).build())
    }

    #[test]
    fn all_of_pinos_levels_are_accepted() {
        let names = ["silent", "fatal", "error", "warn", "info", "debug", "trace"];
        let levels: Vec<LogLevel> = names.iter().map(|name| name.parse().expect(name)).collect();
        assert!(levels.windows(2).all(|pair| pair[0] < pair[1]), "{levels:?}");
        assert_eq!("FATAL".parse(), Ok(LogLevel::Fatal));
        assert_eq!(" Silent ".parse(), Ok(LogLevel::Silent));
        assert_eq!("off".parse(), Ok(LogLevel::Silent));
        assert!("loud".parse::<LogLevel>().is_err());
        assert!("".parse::<LogLevel>().is_err());
    }

    #[test]
    fn silent_shows_nothing_and_fatal_only_what_stops_the_server() {
        for target in [OURS, "diva_signal::server", FATAL, "mio::poll"] {
            assert!(!shows(LogLevel::Silent, target, Level::Error), "{target}");
        }
        assert!(shows(LogLevel::Fatal, FATAL, Level::Error));
        for target in [OURS, "diva_signal::server", "mio::poll", "tungstenite::protocol"] {
            assert!(!shows(LogLevel::Fatal, target, Level::Error), "{target}");
        }
        assert!(shows(LogLevel::Error, "diva_signal::server", Level::Error));
        assert!(!shows(LogLevel::Error, "diva_signal::server", Level::Warn));
        assert!(shows(LogLevel::Error, FATAL, Level::Error));
    }

    #[test]
    fn dependencies_log_at_warn_at_most() {
        assert!(shows(LogLevel::Trace, "diva_signal::server", Level::Trace));
        assert!(shows(LogLevel::Trace, "diva_signal", Level::Debug));
        assert!(shows(LogLevel::Trace, FATAL, Level::Error));
        for dependency in ["mio::poll", "tungstenite::protocol"] {
            assert!(!shows(LogLevel::Trace, dependency, Level::Trace), "{dependency}");
            assert!(!shows(LogLevel::Debug, dependency, Level::Debug), "{dependency}");
            assert!(!shows(LogLevel::Info, dependency, Level::Info), "{dependency}");
            assert!(shows(LogLevel::Trace, dependency, Level::Warn), "{dependency}");
            assert!(!shows(LogLevel::Error, dependency, Level::Warn), "{dependency}");
        }
        assert!(shows(LogLevel::Info, "diva_signal::server", Level::Info));
        assert!(!shows(LogLevel::Info, "diva_signal::server", Level::Debug));
    }
}
