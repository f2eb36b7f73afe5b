//! `simgate generate man|completions SHELL`: the man page and shell completions, made
//! from the same clap definition the binary parses with, so they never drift from it.
//! Hidden: `make deb` calls it; people read the results.

use clap::{CommandFactory, Subcommand};
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum Generate {
    /// The man page, simgate(1), in roff on stdout; with --dir, simgate(1) and one page
    /// per subcommand (simgate-run(1), ...) written there.
    Man {
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Shell completions for SHELL (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

impl Generate {
    pub(super) fn run(self) -> anyhow::Result<ExitCode> {
        let mut cmd = super::Cli::command();
        let mut out = std::io::stdout().lock();
        match self {
            Generate::Man { dir: None } => clap_mangen::Man::new(cmd).render(&mut out)?,
            Generate::Man { dir: Some(dir) } => clap_mangen::generate_to(cmd, dir)?,
            Generate::Completions { shell } => {
                clap_complete::generate(shell, &mut cmd, "simgate", &mut out)
            }
        }
        out.flush()?;
        Ok(ExitCode::SUCCESS)
    }
}
