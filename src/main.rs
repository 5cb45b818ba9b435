//! The `yrd-gateway` binary: parses the command line, loads config, sets up logging and
//! signals, then hands over to the library.

use std::collections::HashMap;
use std::process::ExitCode;

use clap::Parser;
use tokio::net::TcpListener;
use yrd_gateway::cli::{self, CertsCommand, Cli, Command};
use yrd_gateway::config::{Config, LogFormat};
use yrd_gateway::gateway::{Gateway, GatewayError};

/// Exit code for a configuration error (EX_CONFIG would be 78; 64 is EX_USAGE, as linkerd uses).
const EXIT_CONFIG: u8 = 64;

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
}

fn env_overrides() -> HashMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("YRD_"))
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve { config } => {
            let config = match Config::load(&config, &env_overrides()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            init_logging(config.log.format, &config.log.level);
            runtime.block_on(async {
                let addr = config.listen_grpc;
                let admin_addr = config.admin_listen;
                // Open store and TLS files before binding: a bad file never leaves a port open.
                let gateway = match Gateway::open(config).await {
                    Ok(g) => g,
                    Err(e @ GatewayError::Tls(_)) => {
                        tracing::error!(error = %e, "cannot start the gateway: check the [tls] paths");
                        return ExitCode::from(EXIT_CONFIG);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the gateway");
                        return ExitCode::FAILURE;
                    }
                };
                let listener = match TcpListener::bind(addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(addr = %addr, error = %e, "cannot bind listen.grpc");
                        return ExitCode::FAILURE;
                    }
                };
                let admin = match TcpListener::bind(admin_addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(addr = %admin_addr, error = %e, "cannot bind admin.listen");
                        return ExitCode::FAILURE;
                    }
                };
                match gateway.serve(listener, Some(admin), shutdown_signal()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!(error = %e, "gateway failed");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Dev(mut args) => match args.action.take() {
            Some(cli::DevAction::AddParty {
                id,
                display_name,
                province,
                division_code,
            }) => report(cli::dev_add_party(
                &args,
                yrd_gateway::domain::PartyInfo {
                    id,
                    display_name,
                    province,
                    division_code,
                    suspended: false,
                },
            )),
            None => {
                init_logging(LogFormat::Text, "info");
                report(runtime.block_on(cli::run_dev(args, shutdown_signal())))
            }
        },
        Command::Certs {
            command:
                CertsCommand::Init {
                    dir,
                    trust_domain,
                    parties,
                    profile,
                },
        } => report(cli::certs_init(&dir, &trust_domain, &parties, profile)),
        Command::Client(args) => report(runtime.block_on(cli::run_client(*args))),
        Command::Health { config, service } => {
            let config = match Config::load(&config, &env_overrides()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match runtime.block_on(cli::check_health(&config, &service)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Audit(command) => {
            init_logging(LogFormat::Text, "warn");
            match runtime.block_on(cli::audit::run(command, &env_overrides())) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Keys(command) => {
            init_logging(LogFormat::Text, "warn");
            report(cli::keys::run(command, &env_overrides()))
        }
        Command::Store(command) => {
            init_logging(LogFormat::Text, "warn");
            report(runtime.block_on(cli::store::run(command, &env_overrides())))
        }
        Command::Bench(command) => {
            init_logging(LogFormat::Text, "error");
            report(runtime.block_on(cli::bench::run(command)))
        }
        Command::Openapi => match yrd_gateway::http_json::api() {
            Ok(_) => {
                print!("{}", yrd_gateway::http_json::openapi::document());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
