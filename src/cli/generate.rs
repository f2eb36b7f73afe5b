//! `simgate generate man|completions SHELL`: the man pages and shell completions, made
//! from the same clap definition the binary parses with, so they never drift from it.
//! Hidden: `make deb` calls it; people read the results.
//!
//! clap_mangen writes NAME, SYNOPSIS, DESCRIPTION, OPTIONS and SUBCOMMANDS; what a man
//! page holds beyond `--help` (man-pages(7): EXIT STATUS, ENVIRONMENT, FILES, EXAMPLES,
//! SEE ALSO) is added here, and simgate.toml(5) is made from the commented template
//! (config/simgate.toml), key by key with its comment.

use clap::{CommandFactory, Subcommand};
use clap_mangen::roff::{bold, italic, roman, Roff};
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum Generate {
    /// The man page, simgate(1), in roff on stdout; with --dir, simgate(1), one page
    /// per subcommand (simgate-run(1), ...) and simgate.toml(5) written there.
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
            Generate::Man { dir: None } => {
                cmd.build();
                out.write_all(&page(&cmd)?)?;
            }
            Generate::Man { dir: Some(dir) } => {
                let mut cmd = cmd.disable_help_subcommand(true);
                cmd.build();
                pages(&cmd, &dir)?;
                std::fs::write(dir.join("simgate.toml.5"), config_page())?;
            }
            Generate::Completions { shell } => {
                clap_complete::generate(shell, &mut cmd, "simgate", &mut out)
            }
        }
        out.flush()?;
        Ok(ExitCode::SUCCESS)
    }
}

/// `cmd`'s page and those of its visible subcommands, into `dir`.
fn pages(cmd: &clap::Command, dir: &std::path::Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages(sub, dir)?;
    }
    let man = clap_mangen::Man::new(cmd.clone());
    std::fs::write(dir.join(man.get_filename()), page(cmd)?)
}

/// One command's page: clap_mangen's sections, then ours before VERSION.
fn page(cmd: &clap::Command) -> std::io::Result<Vec<u8>> {
    let mut text = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut text)?;
    let text = String::from_utf8_lossy(&text).into_owned();
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    let ours = sections(&name).to_roff();
    Ok(match text.find("\n.SH VERSION") {
        Some(at) => format!("{}\n{}{}", &text[..at], ours, &text[at + 1..]),
        None => text + &ours,
    }
    .into_bytes())
}

/// Examples per page (by its name): what a person types, then what it does.
const EXAMPLES: &[(&str, &[(&str, &str)])] = &[
    (
        "simgate",
        &[
            ("simgate readers", "the PC/SC readers and whether each holds a card"),
            ("simgate read --json | jq -r '.[].iccid'", "the ICCID of every card in a reader"),
            ("simgate config check", "validate /etc/simgate/simgate.toml and its drop-ins; say where each value comes from"),
            ("systemctl reload simgate", "apply the keys that change without a restart (SIGHUP)"),
        ],
    ),
    (
        "simgate-run",
        &[
            ("simgate run --broker mqtt://127.0.0.1:1883 --agent-id gw-1 --state-dir /tmp/sg --modem /dev/ttyUSB2", "a gateway with one modem, in the foreground"),
            ("simgate run --http 8080 --metrics", "with the station page, /health and /metrics on 127.0.0.1:8080"),
        ],
    ),
    (
        "simgate-read",
        &[("simgate read --reader 'ACS ACR39U 00 00' --json", "identify the card in one reader, as JSON")],
    ),
    (
        "simgate-station",
        &[("simgate station --label batch-7 --company Acme --csv batch-7.csv --http 8080", "a reader station: every card inserted is read, checked and appended to the CSV")],
    ),
    (
        "simgate-watch",
        &[
            ("simgate watch --broker mqtt://mq:1883 --agent-id gw-1", "the SIM table gw-1 publishes, live"),
            ("simgate watch --broker mqtt://mq:1883 --agent-id gw-1 --once --json", "the table once, as JSON, for a script"),
        ],
    ),
    (
        "simgate-refill",
        &[("simgate refill --broker mqtt://mq:1883 --agent-id gw-1 --iccid 8988211000000430010 --mb 500 --json", "ask the platform for 500 MB for a SIM")],
    ),
    (
        "simgate-esim",
        &[
            ("simgate esim list", "the profiles of the eUICC in the one reader holding a card"),
            ("simgate esim enable 8949440000000000016 --port /dev/ttyUSB2", "switch the modem's eUICC to a profile (0 when it is enabled already)"),
        ],
    ),
    (
        "simgate-config",
        &[
            ("simgate config check", "validate the configuration and its drop-ins, each value with its file and line"),
            ("simgate config path", "the configuration file and drop-ins the other commands read"),
        ],
    ),
];

/// EXIT STATUS, ENVIRONMENT, FILES, EXAMPLES (when the page has some) and SEE ALSO.
fn sections(name: &str) -> Roff {
    let mut r = Roff::new();
    let item = |r: &mut Roff, term: &str, text: &str| {
        r.control("TP", []).text([bold(term)]).text([roman(text)]);
    };
    r.control("SH", ["EXIT STATUS"]);
    item(&mut r, "0", "Success (also: the reader of stdout closed the pipe early; an eSIM profile already in the state asked for).");
    item(&mut r, "1", "The work failed: no card, pcscd or the modem unreachable, the card or the platform refused.");
    item(&mut r, "2", "A usage or configuration error: the message names the file, line and key, or the argument (a reader name that names no reader too). systemd does not restart the service on it.");

    r.control("SH", ["ENVIRONMENT"]);
    r.text([roman("Flags override the environment, which overrides the configuration files, which override the defaults.")]);
    for (var, what) in [
        ("SIMGATE_CONFIG", "the configuration file (--config)"),
        (
            "SIMGATE_BROKER, SIMGATE_AGENT_ID, SIMGATE_STATE_DIR",
            "broker.url, agent.id, agent.state_dir",
        ),
        (
            "SIMGATE_READERS, SIMGATE_MODEMS",
            "readers.names, modems.ports (comma-separated)",
        ),
        ("SIMGATE_HTTP, SIMGATE_METRICS", "http.listen, http.metrics"),
        (
            "SIMGATE_LOG_FORMAT, RUST_LOG",
            "log.format, log.level (RUST_LOG wins)",
        ),
        (
            "SIMGATE_CONFIRMATION_CODE",
            "an eSIM download's confirmation code (never on the command line)",
        ),
        (
            "NO_COLOR, CLICOLOR, CLICOLOR_FORCE",
            "colour off (any value), off (0), on (1)",
        ),
        (
            "XDG_STATE_HOME",
            "where watch and station write their log while they draw on the terminal",
        ),
        (
            "PCSCLITE_CSOCK_NAME",
            "pcscd's socket (the PC/SC library's own variable)",
        ),
    ] {
        item(&mut r, var, what);
    }

    r.control("SH", ["FILES"]);
    for (file, what) in [
        (
            "/etc/simgate/simgate.toml",
            "the configuration: every key commented out with its default; see simgate.toml(5)",
        ),
        (
            "/etc/simgate/conf.d/*.toml",
            "drop-ins, read in name order after it, each overriding what came before",
        ),
        (
            "/etc/simgate/broker-password",
            "the broker's password alone (broker.password_file), mode 0640 root:simgate",
        ),
        (
            "/var/lib/simgate",
            "the durable store: SIM rows, the outbox, command ids, usage (agent.state_dir)",
        ),
        (
            "/usr/share/doc/simgate/MQTT.md",
            "the platform contract; its JSON Schemas in schema/ beside it",
        ),
    ] {
        item(&mut r, file, what);
    }

    if let Some((_, examples)) = EXAMPLES.iter().find(|(n, _)| *n == name) {
        r.control("SH", ["EXAMPLES"]);
        for (command, what) in *examples {
            r.control("TP", [])
                .text([bold(*command)])
                .text([roman(*what)]);
        }
    }

    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("simgate"),
        roman("(1), "),
        bold("simgate.toml"),
        roman("(5), "),
        bold("systemctl"),
        roman("(1), "),
        italic("/usr/share/doc/simgate/README.md"),
    ]);
    r
}

/// simgate.toml(5): the template's head comment as the description, then each section
/// and key with its default and comment.
fn config_page() -> String {
    let mut r = Roff::new();
    let version = env!("CARGO_PKG_VERSION");
    r.control(
        "TH",
        [
            "simgate.toml",
            "5",
            "",
            &format!("simgate {version}"),
            "simgate",
        ],
    );
    r.control("SH", ["NAME"]);
    r.text([roman("simgate.toml - the configuration of simgate")]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([
        bold("/etc/simgate/simgate.toml"),
        roman(", "),
        bold("/etc/simgate/conf.d/*.toml"),
    ]);
    r.control("SH", ["DESCRIPTION"]);
    let mut comment: Vec<&str> = Vec::new();
    let mut in_head = true;
    for line in crate::config::TEMPLATE.lines() {
        if let Some(text) = line.strip_prefix("# ").or((line == "#").then_some("")) {
            comment.push(text);
        } else if let Some(section) = line.strip_prefix('[') {
            if in_head {
                r.text([roman(comment.join(" "))]);
                in_head = false;
            }
            comment.clear();
            r.control("SH", [format!("[{section}").to_uppercase().as_str()]);
        } else if let Some(key) = line.strip_prefix('#') {
            r.control("TP", []).text([bold(key)]);
            r.text([roman(comment.join(" "))]);
            comment.clear();
        } else if line.is_empty() && in_head {
            r.text([roman(comment.join(" "))]);
            r.control("PP", []);
            comment.clear();
        }
    }
    r.control("SH", ["FILES"]);
    r.control("TP", [])
        .text([bold("/etc/simgate/simgate.toml")])
        .text([roman(
            "As shipped: sets nothing. Keep it so: upgrades then never ask about it.",
        )]);
    r.control("TP", [])
        .text([bold("/etc/simgate/conf.d/*.toml")])
        .text([roman("Your settings, e.g. 50-site.toml; a key set again replaces the earlier value (an array whole).")]);
    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("simgate"),
        roman("(1), "),
        bold("simgate-config"),
        roman("(1)"),
    ]);
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = r.to_writer(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
