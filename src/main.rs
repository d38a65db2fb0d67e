//! Wiring only: configuration, logging, signals, and the server loop.

use std::process::ExitCode;
use std::time::Duration;

use diva_signal::{Command, Config, Server};
use log::{error, info, warn};

fn main() -> ExitCode {
    let config = match Config::parse(std::env::args().skip(1), |name| std::env::var(name).ok()) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Healthcheck(config)) => {
            let addr = diva_signal::healthcheck::target(&config);
            return match diva_signal::healthcheck::check(addr, Duration::from_secs(3), config.tls()) {
                Ok(body) => {
                    println!("healthy: {body}");
                    ExitCode::SUCCESS
                }
                Err(why) => {
                    eprintln!("unhealthy: {why}");
                    ExitCode::FAILURE
                }
            };
        }
        Ok(Command::Help) => {
            print!("{}", diva_signal::config::help_text());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("diva-signal {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(why) => {
            eprintln!("diva-signal: {why}");
            return ExitCode::from(2);
        }
    };
    // Unreadable, invalid or mismatched TLS files: a mistake in the configuration.
    #[cfg(feature = "tls")]
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key)
        && let Err(why) = diva_signal::tls::load(cert, key)
    {
        eprintln!("diva-signal: {why}");
        return ExitCode::from(2);
    }
    // Likewise the files of a rediss:// link.
    #[cfg(feature = "tls")]
    if let Err(why) = diva_signal::tls::redis_settings(&config) {
        eprintln!("diva-signal: {why}");
        return ExitCode::from(2);
    }
    if let Err(err) = config.log_level.logger().init() {
        eprintln!("diva-signal: cannot start logging: {err}");
    }
    for warning in &config.warnings {
        warn!("{warning}");
    }
    match serve(*config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(target: diva_signal::logging::FATAL, "{err}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> std::io::Result<()> {
    let server = Server::bind(config)?;
    let handle = server.shutdown_handle()?;
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::low_level::pipe::register(signal, handle.signal_pipe()?)?;
    }
    // SIGHUP: read the TLS certificate and key and --turn-secret-file again, in the loop
    // (certbot's deploy hook and `systemctl reload` send it).
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGHUP, handle.reload_pipe()?)?;
    info!(
        "diva-signal {} listening on {}{} (up to {} connections)",
        env!("CARGO_PKG_VERSION"),
        server.local_addr(),
        if server.speaks_tls() { " with TLS" } else { "" },
        server.max_connections()
    );
    server.run()
}
