//! The `carshare` binary: parse the command line, start the server, stop on SIGTERM or Ctrl-C.

use carshare_host::config::{Command, USAGE, parse_args};

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse_args(&args) {
        Ok(Command::Serve(c)) => c,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return std::process::ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("carshare {}", env!("CARGO_PKG_VERSION"));
            return std::process::ExitCode::SUCCESS;
        }
        Ok(Command::Contexts(cmd)) => return contexts(cmd),
        Err(e) => {
            eprintln!("carshare: {e}\n\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("carshare: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        match carshare_host::start(*config).await {
            Ok(server) => {
                server.run(shutdown_signal()).await;
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                carshare_host::log::error(&format!("carshare could not start: {e}"));
                std::process::ExitCode::FAILURE
            }
        }
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
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

/// `carshare contexts ...`: one request to a running server.
fn contexts(cmd: carshare_host::config::ContextsCommand) -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("carshare: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let token = std::env::var("CARSHARE_ADMIN_TOKEN").ok();
    match rt.block_on(carshare_host::client::run(cmd, token)) {
        Ok(out) => {
            println!("{out}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("carshare: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
