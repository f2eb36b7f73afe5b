use clap::Parser;
use simgate::cli::{Cli, Command, Emulate};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        // First Ctrl-C: orderly shutdown; second: exit at once.
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    match cli.command {
        Command::Modem(a) => a.run(cancel).await,
        Command::Modems(a) => a.run(cancel).await,
        Command::Emulate(e) => match e.what {
            Emulate::Modem(a) => a.run(cancel).await,
        },
    }
}
