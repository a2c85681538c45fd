//! The command line (contract: "Command line"): `serve` (default), `migrate`, `healthcheck`, `--help`.

use std::{process::ExitCode, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{config::Config, logging, migration, startup::App};

/// What the user asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Serve,
    Migrate,
    Healthcheck,
    Help,
    Version,
}

/// Parses `argv[1..]`; an unknown word is an error naming it.
pub fn parse(args: &[String]) -> Result<Command, String> {
    match args.first().map(String::as_str) {
        None | Some("serve") => Ok(Command::Serve),
        Some("migrate") => Ok(Command::Migrate),
        Some("healthcheck") => Ok(Command::Healthcheck),
        Some("-h" | "--help" | "help") => Ok(Command::Help),
        Some("-V" | "--version") => Ok(Command::Version),
        Some(other) => Err(format!("unknown command `{other}`; try `aside --help`")),
    }
}

/// The `--help` text, including the environment table.
pub fn help() -> String {
    let mut s = format!(
        "aside {} — cache-aside JSON data API\n\n\
         USAGE:\n  aside [COMMAND]\n\n\
         COMMANDS:\n  \
         serve        run the HTTP server (default); applies migrations first\n  \
         migrate      apply database migrations and exit\n  \
         healthcheck  GET /health on the local server (port from BIND_ADDR); exit 0 if 200, else 1\n  \
         help         print this text (also -h, --help)\n\n\
         ENVIRONMENT:\n",
        env!("CARGO_PKG_VERSION")
    );
    for (name, default, meaning) in crate::config::ENV_HELP {
        s.push_str(&format!("  {name:<35} {default:<28} {meaning}\n"));
    }
    s.push_str("\nOnce serving: Swagger UI at /docs, OpenAPI at /openapi.json, metrics at /metrics.\n");
    s
}

/// Runs a parsed command to completion.
pub async fn run(cmd: Command) -> ExitCode {
    match cmd {
        Command::Help => {
            print!("{}", help());
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("aside {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("aside: {e}");
            return ExitCode::from(2);
        }
    };
    if cmd == Command::Healthcheck {
        return healthcheck(&config).await;
    }
    let _log_flush = logging::init(config.log_format);
    let result = match cmd {
        Command::Migrate => migration::run(&config).await.map_err(|e| format!("migration failed: {e}")),
        _ => serve(config).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "aside stopped with an error");
            eprintln!("aside: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), String> {
    tracing::info!(?config, "starting");
    let app = App::build(config.clone()).await.map_err(|e| e.to_string())?;
    let host =
        if config.bind_addr.ip().is_unspecified() { "localhost".into() } else { config.bind_addr.ip().to_string() };
    let base = format!("http://{host}:{}", app.port());
    tracing::info!(swagger_ui = %format!("{base}/docs"), openapi = %format!("{base}/openapi.json"), "listening");
    if config.log_format.for_this_stdout() == crate::config::LogFormat::Json {
        // The one line a person running `cargo run` looks for, outside the JSON stream.
        eprintln!("aside listening on {base} — Swagger UI: {base}/docs");
    }
    app.run_until_stopped().await.map_err(|e| e.to_string())
}

/// A probe for images without a shell or curl.
async fn healthcheck(config: &Config) -> ExitCode {
    let mut addr = config.bind_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    let probe = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await?;
        Ok::<bool, std::io::Error>(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
    };
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => {
            eprintln!("aside healthcheck: /health did not answer 200");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("aside healthcheck: {addr}: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("aside healthcheck: {addr}: no answer within 2 s");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_unknown_words_are_errors() {
        let a = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(parse(&a(&[])), Ok(Command::Serve));
        assert_eq!(parse(&a(&["migrate"])), Ok(Command::Migrate));
        assert_eq!(parse(&a(&["healthcheck"])), Ok(Command::Healthcheck));
        assert_eq!(parse(&a(&["--help"])), Ok(Command::Help));
        assert!(parse(&a(&["srve"])).is_err());
    }

    #[test]
    fn help_documents_commands_and_every_variable() {
        let h = help();
        for word in ["serve", "migrate", "healthcheck"] {
            assert!(h.contains(word), "{word}");
        }
        // Every variable of the contract's configuration table, each as a whole word.
        let words: Vec<&str> = h.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).collect();
        for var in [
            "DATABASE_URL",
            "DATABASE_POOLER",
            "REDIS_URL",
            "CACHE_TTL_SECONDS",
            "CACHE_ENABLED",
            "CACHE_TIMEOUT_MS",
            "BIND_ADDR",
            "API_TOKEN",
            "SHUTDOWN_DRAIN_SECONDS",
            "MAX_BODY_BYTES",
            "LOG_FORMAT",
            "RUST_LOG",
        ] {
            assert!(words.contains(&var), "--help documents {var}");
        }
    }
}
