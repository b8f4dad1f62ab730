//! The `sharq` binary: serve (the default), `sharq reload`, `sharq passwd`,
//! `sharq plugin check`, `sharq plugin test` and `sharq plugin new`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::sync::mpsc;
use tracing_subscriber::EnvFilter;

use sharq::config::LogFormat;
use sharq::config::{
    DEFAULT_PLUGIN_DEADLINE_MS, DEFAULT_PLUGIN_INIT_DEADLINE_MS, DEFAULT_PLUGIN_MEMORY_MIB,
};
use sharq::reload::{self, Trigger};
use sharq::strategy::scenario::{self, Scenario};
use sharq::strategy::{check, SandboxLimits};
use sharq::{Broker, Config};

/// How long connections get to say goodbye on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(
    name = "sharq",
    version,
    about = "MQTT 3.1.1 / 5.0 broker with programmable shared-subscription dispatch"
)]
struct Cli {
    /// TOML configuration file; without it the embedded default serves on 127.0.0.1:1883.
    // Not global: the plugin subcommands read no configuration, and their help must not
    // describe serving.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask a running broker to reload its shared-subscription strategies (sends SIGHUP to the
    /// process named by --pid, or by `server.pid_file` of --config).
    Reload {
        #[arg(long)]
        pid: Option<u32>,
        /// The broker's configuration file, whose `server.pid_file` names the process (also
        /// accepted before `reload`).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Add a user to a password file, or change its password (argon2id, plus SCRAM-SHA-256
    /// keys). Prompts twice on a terminal; otherwise reads one line from standard input.
    Passwd {
        /// The password file; created (mode 0600) if missing. Other lines are kept.
        file: PathBuf,
        /// The user name (no ':' and no control characters).
        user: String,
    },
    /// Work with strategy plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Validate a strategy component and run it on a simulated group.
    Check(CheckArgs),
    /// Replay a scenario (steps and expectations, see docs/plugins.md) against a strategy
    /// component; exits 0 when every step passes, 1 when one fails, 2 when the scenario or the
    /// component is unusable.
    Test(TestArgs),
    /// Create a strategy project from a template: ./NAME with sources, the WIT, a one-command
    /// build, a README and a test scenario.
    New(NewArgs),
}

#[derive(Debug, Args)]
struct NewArgs {
    /// The project's name: its directory and component file (letters, digits, `-`, `_`).
    name: String,
    /// The language of the template.
    #[arg(long, value_enum)]
    lang: sharq::scaffold::Lang,
    /// Where to create the project's directory.
    #[arg(long, value_name = "PARENT", default_value = ".")]
    dir: PathBuf,
}

// No doc comment: clap would take it for the subcommand's help, which the variant gives.
#[derive(Debug, Args)]
struct CheckArgs {
    /// The component (.wasm) to check.
    file: PathBuf,
    /// Members in the simulated group.
    #[arg(long, default_value_t = 8)]
    members: u32,
    /// Messages to dispatch.
    #[arg(long, default_value_t = 100_000)]
    messages: u32,
    /// Params handed to `init`, as key=value (repeatable).
    #[arg(long = "params", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// The share name handed to `init`.
    #[arg(long, default_value = "check")]
    group: String,
    /// After the simulation, also replay this scenario (as `sharq plugin test` does).
    #[arg(long, value_name = "FILE.toml")]
    scenario: Option<PathBuf>,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

#[derive(Debug, Args)]
struct TestArgs {
    /// The component (.wasm) to test.
    file: PathBuf,
    /// The scenario: group, params and `[[step]]`s with expectations.
    scenario: PathBuf,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

/// The sandbox a plugin is tried in; the defaults are the broker's, so what passes here runs
/// the same there.
#[derive(Debug, Args)]
struct SandboxArgs {
    /// Memory limit for the instance, in MiB (the broker's `shared.plugin_memory_mib`).
    #[arg(long, default_value_t = DEFAULT_PLUGIN_MEMORY_MIB)]
    memory_mib: u32,
    /// Deadline per call, in milliseconds (the broker's `shared.plugin_deadline_ms`).
    #[arg(long, default_value_t = DEFAULT_PLUGIN_DEADLINE_MS)]
    deadline_ms: u64,
    /// Deadline for instantiation and `init` together, in milliseconds (the broker's
    /// `shared.plugin_init_deadline_ms`).
    #[arg(long, default_value_t = DEFAULT_PLUGIN_INIT_DEADLINE_MS)]
    init_deadline_ms: u64,
    /// Serve the plugin's WASI imports from an empty context, like `wasi = true` in a
    /// `[[shared.groups]]` rule (Python and JavaScript components need it).
    #[arg(long)]
    wasi: bool,
}

impl SandboxArgs {
    fn limits(&self) -> SandboxLimits {
        SandboxLimits::from_mib_and_ms(self.memory_mib, self.deadline_ms, self.init_deadline_ms)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.config),
        Some(Command::Reload { pid, config }) => send_reload(config.or(cli.config).as_deref(), pid),
        Some(Command::Passwd { file, user }) => passwd(&file, &user),
        Some(Command::Plugin {
            command: PluginCommand::Check(args),
        }) => plugin_check(args),
        Some(Command::Plugin {
            command: PluginCommand::Test(args),
        }) => plugin_test(args),
        Some(Command::Plugin {
            command: PluginCommand::New(args),
        }) => plugin_new(args),
    }
}

fn load_config(path: Option<&Path>) -> Result<Config, String> {
    match path {
        Some(path) => Config::from_file(path),
        None => Config::embedded_default(),
    }
    .map_err(|e| e.to_string())
}

fn serve(config_path: Option<PathBuf>) -> ExitCode {
    let config = match load_config(config_path.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sharq: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    match &config_path {
        None => {
            tracing::info!(listeners = ?config.server.listeners, "no --config given: using the embedded default configuration")
        }
        Some(path) => tracing::info!(config = %path.display(), "configuration loaded"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sharq: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let pid_file = config.server.pid_file.clone();
        // Before the listeners open: a SIGTERM sent as soon as the broker says it listens must
        // find the handler, not the default action that kills the process without a goodbye.
        let signals = match Signals::install() {
            Ok(signals) => signals,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for signals");
                eprintln!("sharq: cannot listen for signals: {e}");
                return ExitCode::FAILURE;
            }
        };
        let broker = match Broker::start(config).await {
            Ok(broker) => broker,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("sharq: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(pid_file) = &pid_file {
            if let Err(e) = std::fs::write(pid_file, format!("{}\n", std::process::id())) {
                tracing::warn!(file = %pid_file.display(), error = %e, "cannot write pid file");
            }
        }
        let (reload_requests, reload_rx) = mpsc::channel(4);
        match &config_path {
            Some(path) => {
                tokio::spawn(reload::run(broker.state().clone(), path.clone(), reload_rx));
            }
            None => drop(reload_rx),
        }
        signals
            .wait_for_shutdown(&reload_requests, config_path.is_some())
            .await;
        tracing::info!("shutting down: disconnecting clients");
        broker.shutdown(SHUTDOWN_GRACE).await;
        if let Some(pid_file) = &pid_file {
            let _ = std::fs::remove_file(pid_file);
        }
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// Logs to stderr (stdout is for what a command prints) in `server.log_format`. Colours only
/// when stderr is a terminal, and not when `NO_COLOR` asks for none: escape codes in a file or
/// a journal are noise.
fn init_logging(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.server.log));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match config.server.log_format {
        LogFormat::Text => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            builder
                .with_ansi(std::io::stderr().is_terminal() && !no_color)
                .init()
        }
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// The signals the broker acts on, registered before it starts listening.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for SIGTERM or SIGINT; SIGHUP asks for a reload meanwhile.
    async fn wait_for_shutdown(
        mut self,
        reload_requests: &mpsc::Sender<Trigger>,
        reloadable: bool,
    ) {
        loop {
            tokio::select! {
                _ = self.terminate.recv() => {
                    tracing::info!("SIGTERM received");
                    return;
                }
                _ = self.interrupt.recv() => {
                    tracing::info!("SIGINT received");
                    return;
                }
                _ = self.hangup.recv() => {
                    if reloadable {
                        let _ = reload_requests.try_send(Trigger::Signal);
                    } else {
                        tracing::warn!("SIGHUP ignored: started without --config, nothing to reload");
                    }
                }
            }
        }
    }
}

fn send_reload(config_path: Option<&Path>, pid: Option<u32>) -> ExitCode {
    let pid = match pid {
        Some(pid) => pid,
        None => {
            let config = match load_config(config_path) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("sharq: {e}");
                    return ExitCode::from(2);
                }
            };
            let Some(pid_file) = config.server.pid_file else {
                eprintln!("sharq reload: give --pid, or a --config whose server.pid_file names the running broker's pid file");
                return ExitCode::from(2);
            };
            match std::fs::read_to_string(&pid_file).map(|s| s.trim().parse::<u32>()) {
                Ok(Ok(pid)) => pid,
                _ => {
                    eprintln!(
                        "sharq reload: cannot read a pid from {}",
                        pid_file.display()
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    match std::process::Command::new("kill")
        .arg("-HUP")
        .arg(pid.to_string())
        .status()
    {
        Ok(status) if status.success() => {
            println!("reload requested from sharq (pid {pid})");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("sharq reload: cannot signal pid {pid}");
            ExitCode::FAILURE
        }
    }
}

fn passwd(file: &Path, user: &str) -> ExitCode {
    use sharq::broker::password_file;
    // Before asking for a password: a name the file cannot hold should not cost typing one.
    if let Err(e) = password_file::validate_user_name(user) {
        eprintln!("sharq passwd: {e}");
        return ExitCode::from(2);
    }
    let password = match read_new_password() {
        Ok(password) => password,
        Err(e) => {
            eprintln!("sharq passwd: {e}");
            return ExitCode::FAILURE;
        }
    };
    match password_file::upsert(file, user, password.as_bytes()) {
        Ok(()) => {
            eprintln!(
                "sharq passwd: {user} written to {}; `sharq reload` (or SIGHUP) applies it",
                file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sharq passwd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The new password: typed twice without echo on a terminal, else the first line of stdin
/// (without its line ending), so scripts can pipe it in.
fn read_new_password() -> Result<String, String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("Password again: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the passwords do not match".to_owned());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        let trimmed = line.strip_suffix('\n').unwrap_or(&line);
        trimmed.strip_suffix('\r').unwrap_or(trimmed).to_owned()
    };
    if password.is_empty() {
        return Err("empty password".to_owned());
    }
    Ok(password)
}

fn plugin_new(args: NewArgs) -> ExitCode {
    match sharq::scaffold::create(&args.dir, &args.name, args.lang) {
        Ok(dir) => {
            for note in sharq::scaffold::notes(args.lang) {
                eprintln!("sharq plugin new: note: {note}");
            }
            println!(
                "created {}: see its README.md; build with `cd {} && ./build.sh`",
                dir.display(),
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sharq plugin new: {e}");
            ExitCode::from(2)
        }
    }
}

fn plugin_check(args: CheckArgs) -> ExitCode {
    const CMD: &str = "sharq plugin check";
    let mut parsed = Vec::new();
    for param in &args.params {
        match param.split_once('=') {
            Some((key, value)) => parsed.push((key.to_owned(), value.to_owned())),
            None => {
                eprintln!("{CMD}: --params takes key=value, got `{param}`");
                return ExitCode::from(2);
            }
        }
    }
    // Before the simulation: an unusable scenario should not wait for 100000 messages.
    let scenario = match args
        .scenario
        .as_deref()
        .map(Scenario::from_file)
        .transpose()
    {
        Ok(scenario) => scenario,
        Err(e) => {
            eprintln!("{CMD}: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(bytes) = read_component(CMD, &args.file) else {
        return ExitCode::from(2);
    };
    let options = check::CheckOptions {
        members: args.members,
        messages: args.messages,
        params: parsed,
        group: args.group,
        limits: args.sandbox.limits(),
        wasi: args.sandbox.wasi,
    };
    match check::run(&args.file.display().to_string(), &bytes, &options) {
        Ok(report) => print!("{}", report.render()),
        Err(e) => {
            eprintln!("{CMD}: FAILED: {e}");
            return ExitCode::FAILURE;
        }
    }
    match (&scenario, &args.scenario) {
        (Some(scenario), Some(path)) => {
            println!("\nscenario {}:", path.display());
            replay(CMD, &args.file, &bytes, scenario, &args.sandbox)
        }
        _ => ExitCode::SUCCESS,
    }
}

fn plugin_test(args: TestArgs) -> ExitCode {
    const CMD: &str = "sharq plugin test";
    let scenario = match Scenario::from_file(&args.scenario) {
        Ok(scenario) => scenario,
        Err(e) => {
            eprintln!("{CMD}: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(bytes) = read_component(CMD, &args.file) else {
        return ExitCode::from(2);
    };
    replay(CMD, &args.file, &bytes, &scenario, &args.sandbox)
}

fn read_component(cmd: &str, file: &Path) -> Option<Vec<u8>> {
    match std::fs::read(file) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            eprintln!("{cmd}: cannot read {}: {e}", file.display());
            None
        }
    }
}

/// Replays `scenario` and prints a line per step and the summary: exit 0 when all pass, 1
/// when a step failed, 2 when nothing could be tested.
fn replay(
    cmd: &str,
    file: &Path,
    bytes: &[u8],
    scenario: &Scenario,
    sandbox: &SandboxArgs,
) -> ExitCode {
    let origin = file.display().to_string();
    match scenario::run(&origin, bytes, scenario, sandbox.limits(), sandbox.wasi) {
        Ok(report) => {
            println!(
                "plugin {origin} (contract {}), group {}",
                report.contract, scenario.group
            );
            print!("{}", report.render());
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                eprintln!("{cmd}: FAILED: {} of {} steps", report.failed, report.steps);
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("{cmd}: {e}");
            ExitCode::from(2)
        }
    }
}
