//! The subcommands: bring the stack up, report on it, take it down.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::components::{APISERVER_PORT, Component, https_url};
use crate::health::Probes;
use crate::layout::Layout;
use crate::process::{Recorded, group_rss_kib, port_in_use, recorded, spawn, stop};
use crate::versions::Versions;

/// One line of the `up` / `status` table.
#[derive(Debug, Clone)]
pub struct Row {
    pub component: Component,
    pub version: String,
    pub address: String,
    pub pid: Option<i32>,
    /// Resident memory of the component's processes, in KiB.
    pub rss_kib: u64,
    pub state: State,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Ready,
    NotReady(String),
    Stopped,
    Died,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Ready => write!(f, "ready"),
            State::NotReady(why) => write!(f, "not ready: {why}"),
            State::Stopped => write!(f, "stopped"),
            State::Died => write!(f, "died (run `ossature-dev up` to restart it)"),
        }
    }
}

/// Serialises `up`, `down` and `reset` across processes.
async fn lock(layout: &Layout) -> Result<std::fs::File> {
    crate::files::lock(&layout.lock())
        .await
        .context("locking the state directory")
}

/// Ports that components about to start need but someone else holds.
fn port_conflicts(components: &[Component]) -> Vec<String> {
    components
        .iter()
        .flat_map(|c| {
            c.ports().iter().filter_map(move |&port| {
                port_in_use(port)
                    .map(|holder| format!("port {port} (for {}) is held by {holder}", c.name()))
            })
        })
        .collect()
}

pub async fn up(layout: &Layout) -> Result<Vec<Row>> {
    layout.create_dirs()?;
    let _lock = lock(layout).await?;
    let versions = Versions::pinned();

    let mut to_start = Vec::new();
    for c in Component::ALL {
        match recorded(layout, c.name()) {
            Recorded::Running(_) => {}
            Recorded::Died(_) => {
                eprintln!("{} has died; starting it again", c.name());
                to_start.push(c);
            }
            Recorded::Never => to_start.push(c),
        }
    }

    let conflicts = port_conflicts(&to_start);
    if !conflicts.is_empty() {
        bail!(
            "nothing was started, because ports the stack needs are taken:\n  {}\nStop what holds them, then run `ossature-dev up` again.",
            conflicts.join("\n  ")
        );
    }

    if to_start.contains(&Component::Keycloak) {
        crate::components::java_home(crate::components::KEYCLOAK_JAVA)?;
    }

    // Obtain everything first, so a missing tool or a failed build starts nothing.
    // KEDA's CRDs are applied to a running apiserver too.
    let mut seen = BTreeSet::new();
    let artifacts: Vec<_> = to_start
        .iter()
        .map(|c| c.artifact(&versions))
        .chain([crate::keda::artifact(&versions)])
        .filter(|a| seen.insert(a.name))
        .collect();
    for artifact in artifacts.iter().filter(|a| a.missing(layout).is_some()) {
        artifact.check_tools()?;
    }
    for artifact in &artifacts {
        artifact.ensure(layout).await?;
    }
    layout.pki().ensure(&https_url(APISERVER_PORT))?;

    let probes = Probes::new(layout)?;
    let started: Arc<Mutex<Vec<Component>>> = Arc::default();
    let launcher = Launcher {
        layout,
        versions: &versions,
        probes: &probes,
        to_start: &to_start,
        started: started.clone(),
    };
    let outcome = tokio::select! {
        outcome = launcher.all() => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    if let Err(error) = outcome {
        // Leave nothing half-started behind: stop what this run started.
        let started: Vec<Component> = started.lock().expect("lock is never poisoned").clone();
        for c in started.iter().rev() {
            let _ = stop(layout, c.name()).await;
        }
        return Err(error);
    }
    Ok(status(layout).await)
}

struct Launcher<'a> {
    layout: &'a Layout,
    versions: &'a Versions,
    probes: &'a Probes,
    to_start: &'a [Component],
    started: Arc<Mutex<Vec<Component>>>,
}

impl Launcher<'_> {
    /// Independent groups start together; within a group, in dependency order.
    async fn all(&self) -> Result<()> {
        let on_etcd = async {
            self.bring(Component::Etcd).await?;
            let kubernetes = async {
                self.bring(Component::KubeApiserver).await?;
                tokio::try_join!(
                    self.bring(Component::KubeControllerManager),
                    self.bring(Component::KubeScheduler),
                    self.bring(Component::Kwok),
                )?;
                Ok::<_, anyhow::Error>(())
            };
            // Pulsar keeps its metadata in etcd too, and OpenBao signs its
            // tokens. OpenBao starts at once but is ready only once its
            // Kubernetes auth is configured, which `settle` retries until the
            // apiserver and the controller-manager serve.
            let pulsar = async {
                self.bring(Component::Openbao).await?;
                self.bring(Component::Pulsar).await
            };
            tokio::try_join!(kubernetes, pulsar)?;
            Ok::<_, anyhow::Error>(())
        };
        let acme = async {
            self.bring(Component::Challtestsrv).await?;
            self.bring(Component::Pebble).await
        };
        tokio::try_join!(
            on_etcd,
            acme,
            self.bring(Component::Caddy),
            self.bring(Component::Prometheus),
            self.bring(Component::Keycloak),
        )?;
        Ok(())
    }

    /// Starts a component if it is not running, then waits until it serves.
    async fn bring(&self, c: Component) -> Result<()> {
        let name = c.name();
        if self.to_start.contains(&c) {
            let dir = c.artifact(self.versions).dir(self.layout);
            let command = c.command(self.layout, &dir)?;
            self.probes.prepare(c).await?;
            spawn(self.layout, name, command)?;
            self.started.lock().expect("lock is never poisoned").push(c);
            eprintln!("started {name}");
        }
        let begun = Instant::now();
        let mut why = String::new();
        while begun.elapsed() < c.start_timeout() {
            if let Recorded::Died(_) = recorded(self.layout, name) {
                bail!(
                    "{name} exited while starting ({why}); last lines of {}:\n{}",
                    self.layout.log(name).display(),
                    tail(&self.layout.log(name), 15)
                );
            }
            let settled = self.probes.settle(c).await.err();
            match (self.probes.probe(c).await, settled) {
                (Ok(()), _) => {
                    eprintln!("{name} is ready ({:.1}s)", begun.elapsed().as_secs_f64());
                    return Ok(());
                }
                (Err(e), None) => why = e,
                (Err(e), Some(s)) => why = format!("{e} ({s:#})"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!(
            "{name} was not ready after {}s: {why}; see {}",
            c.start_timeout().as_secs(),
            self.layout.log(name).display()
        )
    }
}

/// The state of every component, probed concurrently.
pub async fn status(layout: &Layout) -> Vec<Row> {
    let versions = Versions::pinned();
    let probes = Probes::new(layout).ok();
    let rows = Component::ALL.map(|c| {
        let probes = probes.clone();
        let versions = &versions;
        async move {
            let (pid, state) = match recorded(layout, c.name()) {
                Recorded::Never => (None, State::Stopped),
                Recorded::Died(s) => (Some(s.pid), State::Died),
                Recorded::Running(s) => {
                    let state = match &probes {
                        Some(p) => match p.probe(c).await {
                            Ok(()) => State::Ready,
                            Err(why) => State::NotReady(why),
                        },
                        None => State::NotReady("local certificates are missing".into()),
                    };
                    (Some(s.pid), state)
                }
            };
            Row {
                component: c,
                version: c.artifact(versions).version,
                address: c.address(),
                rss_kib: pid.map(group_rss_kib).unwrap_or(0),
                pid,
                state,
            }
        }
    });
    futures::future::join_all(rows).await
}

pub async fn down(layout: &Layout) -> Result<Vec<Component>> {
    layout.create_dirs()?;
    let _lock = lock(layout).await?;
    let mut stopped = Vec::new();
    for c in Component::ALL.iter().rev() {
        if stop(layout, c.name()).await? {
            stopped.push(*c);
        }
    }
    Ok(stopped)
}

pub async fn reset(layout: &Layout) -> Result<Vec<Component>> {
    let stopped = down(layout).await?;
    if layout.state.exists() {
        std::fs::remove_dir_all(&layout.state)
            .with_context(|| format!("removing {}", layout.state.display()))?;
    }
    Ok(stopped)
}

/// The last `lines` lines of a file, or a note that there is none.
pub fn tail(path: &std::path::Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(_) => format!("(no log at {})", path.display()),
    }
}

pub fn table(rows: &[Row]) -> String {
    const COLUMNS: usize = 6;
    let header = ["COMPONENT", "VERSION", "ADDRESS", "PID", "RSS", "STATE"];
    let mib = |kib: u64| format!("{:.0} MiB", kib as f64 / 1024.0);
    let mut cells: Vec<[String; COLUMNS]> = rows
        .iter()
        .map(|r| {
            [
                r.component.name().to_string(),
                r.version.clone(),
                r.address.clone(),
                r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                if r.rss_kib > 0 {
                    mib(r.rss_kib)
                } else {
                    "-".into()
                },
                r.state.to_string(),
            ]
        })
        .collect();
    let total: u64 = rows.iter().map(|r| r.rss_kib).sum();
    cells.push([
        "total".into(),
        String::new(),
        String::new(),
        String::new(),
        mib(total),
        String::new(),
    ]);
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cols: [&str; COLUMNS]| {
        let mut s = String::new();
        for (i, col) in cols.iter().enumerate() {
            s.push_str(&format!("{col:<w$}  ", w = widths[i]));
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header);
    for row in &cells {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            Row {
                component: Component::Etcd,
                version: "v3.6.16".into(),
                address: "http://127.0.0.1:2379".into(),
                pid: Some(42),
                rss_kib: 2048,
                state: State::Ready,
            },
            Row {
                component: Component::Keycloak,
                version: "26.5.6".into(),
                address: "http://127.0.0.1:8180".into(),
                pid: None,
                rss_kib: 0,
                state: State::Stopped,
            },
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        let col = lines[0].find("VERSION").unwrap();
        assert_eq!(lines[1].find("v3.6.16"), Some(col));
        assert_eq!(lines[2].find("26.5.6"), Some(col));
        assert!(lines[2].ends_with("stopped"));
        assert!(lines[1].contains("2 MiB"));
        assert!(lines[3].starts_with("total") && lines[3].ends_with("2 MiB"));
    }

    #[test]
    fn a_taken_port_is_reported_with_its_holder() {
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", crate::components::CADDY_ADMIN_PORT));
        // Another process may already hold it; either way it must be reported.
        let conflicts = port_conflicts(&[Component::Caddy]);
        assert!(
            conflicts
                .iter()
                .any(|c| c.starts_with("port 2019 (for caddy) is held by")),
            "{conflicts:?}"
        );
        drop(listener);
    }
}
