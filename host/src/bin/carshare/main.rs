//! The `carshare` binary: the command line (`cli`), where the server's settings come from
//! (`settings`), the admin client (`client`), `carshare new` (`new`), `carshare dev run`
//! (`dev_run`), and the allocator (`alloc`). Everything else is
//! the `carshare_host` library; this file only dispatches.

mod alloc;
mod cli;
mod client;
mod dev_run;
mod fill;
mod new;
mod ops;
mod settings;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use cli::{Cli, Command, DevCommand, EventsCommand, NewCommand};

fn main() -> ExitCode {
    forget_empty_variables();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Serve(args) => {
            let sub = matches.subcommand_matches("serve").expect("the serve subcommand");
            match settings::settings(&args, sub) {
                Ok(s) => {
                    init_logging(s.log_format);
                    serve(s.config)
                }
                Err(e) => {
                    eprintln!("carshare: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Contexts(args) => admin_command(|token| async move { client::contexts(&args, token).await }),
        Command::Cluster(cmd) => admin_command(|token| async move { ops::cluster(&cmd, token).await }),
        Command::Backup(args) => admin_command(|token| async move { ops::backup(&args, token).await }),
        Command::Restore(args) => match ops::restore(&args) {
            Ok(out) => {
                println!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("carshare restore: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Events(EventsCommand::Tail(args)) => {
            admin_command(|token| async move { client::tail(&args, token).await.map(|()| String::new()) })
        }
        Command::New(NewCommand::Context(args)) => match new::context(&args) {
            Ok(out) => {
                println!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("carshare new context: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Dev(DevCommand::Run(args)) => {
            init_logging(cli::LogFormat::Text);
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("carshare: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(dev_run::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("carshare dev run: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Dev(DevCommand::Fill(args)) => {
            init_logging(cli::LogFormat::Text);
            dev_fill(args)
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "carshare", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

/// Log records go to stderr, as text or JSON lines, at the level RUST_LOG sets (info if unset).
fn init_logging(format: cli::LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .init(),
        cli::LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
}

/// An empty `CARSHARE_*` variable counts as unset (as `CARSHARE_CACHE_DIR=` in a shell means
/// "no cache dir of my own"), rather than as an empty value clap would refuse.
fn forget_empty_variables() {
    let empty: Vec<_> = std::env::vars_os()
        .filter(|(k, v)| k.to_string_lossy().starts_with("CARSHARE_") && v.is_empty())
        .map(|(k, _)| k)
        .collect();
    for k in empty {
        // SAFETY: called first thing in main, before any other thread exists that could read
        // the environment concurrently.
        #[allow(unsafe_code)]
        unsafe {
            std::env::remove_var(k)
        };
    }
}

fn serve(config: carshare_host::Config) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("carshare: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        match carshare_host::start(config).await {
            Ok(server) => match server.run(shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("carshare: stopped: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("carshare: could not start: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// `carshare dev fill`.
fn dev_fill(args: cli::FillArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("carshare: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fill::run(args)) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("carshare dev fill: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A command that talks to a server (or the cluster) and prints what it answered.
fn admin_command<F, Fut>(run: F) -> ExitCode
where
    F: FnOnce(Option<String>) -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("carshare: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let token = std::env::var("CARSHARE_ADMIN_TOKEN").ok();
    match rt.block_on(run(token)) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("carshare: {e}");
            ExitCode::FAILURE
        }
    }
}
