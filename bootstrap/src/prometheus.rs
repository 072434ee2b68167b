//! The stack's Prometheus: its configuration, the chart's alert rules it
//! loads, and the scrape targets tests and local runs add.
//!
//! Targets are files: Prometheus watches `<state>/data/prometheus/targets/<job>/*.json`
//! (file-based service discovery), so whoever runs an operator or a control
//! plane on the stack drops a file naming its metrics address there and
//! removes it when done ([`ScrapeTarget`] does both, and gives the target a
//! job of its own, so a test's queries select its own process). The
//! operator's and the control plane's default addresses (`127.0.0.1:9464`
//! and `127.0.0.1:8080`, plain `--local-stack` runs) are listed from the
//! start, as jobs `ossature-operator` and `ossature-control-plane`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::components::{LOOPBACK, PROMETHEUS_PORT};
use crate::layout::{Layout, create};

/// The alert rules, as the chart ships them (one source for both).
pub const ALERT_RULES: &str = include_str!("../../charts/ossature/files/alerts.yaml");

/// How often the stack scrapes and evaluates rules: short, so that tests see
/// an alert's `for:` run out soon after it starts; the rules are unchanged.
pub const INTERVAL_SECONDS: u64 = 2;

/// The operator's `--metrics-addr` default.
const OPERATOR_DEFAULT_METRICS: &str = "127.0.0.1:9464";
/// The control plane's `--listen` default (it serves `/metrics` there).
const CONTROL_PLANE_DEFAULT_METRICS: &str = "127.0.0.1:8080";

/// What a target is, which is its `job` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    Operator,
    ControlPlane,
}

impl Job {
    pub const ALL: [Job; 2] = [Job::Operator, Job::ControlPlane];

    pub fn name(self) -> &'static str {
        match self {
            Job::Operator => "ossature-operator",
            Job::ControlPlane => "ossature-control-plane",
        }
    }
}

/// The directory whose `*.json` files list the targets of `job`.
pub fn targets_dir(layout: &Layout, job: Job) -> PathBuf {
    layout.data("prometheus").join("targets").join(job.name())
}

fn rules_file(layout: &Layout) -> PathBuf {
    layout.data("prometheus").join("alerts.yaml")
}

/// Writes the configuration, the rules and the default targets; returns the
/// configuration file.
pub fn write_config(layout: &Layout) -> Result<PathBuf> {
    let data = layout.data("prometheus");
    for job in Job::ALL {
        create(&targets_dir(layout, job))?;
    }
    std::fs::write(rules_file(layout), ALERT_RULES)?;
    write_targets(
        &targets_dir(layout, Job::Operator).join("default.json"),
        OPERATOR_DEFAULT_METRICS,
        None,
    )?;
    write_targets(
        &targets_dir(layout, Job::ControlPlane).join("default.json"),
        CONTROL_PLANE_DEFAULT_METRICS,
        None,
    )?;
    let config = data.join("prometheus.yml");
    std::fs::write(&config, serde_norway::to_string(&config_value(layout))?)?;
    Ok(config)
}

fn config_value(layout: &Layout) -> serde_json::Value {
    let interval = format!("{INTERVAL_SECONDS}s");
    let mut scrapes: Vec<serde_json::Value> = Job::ALL
        .iter()
        .map(|&job| {
            serde_json::json!({
                "job_name": job.name(),
                "file_sd_configs": [{
                    "files": [targets_dir(layout, job).join("*.json")],
                    // Files are watched; this only catches a missed change.
                    "refresh_interval": "30s",
                }],
            })
        })
        .collect();
    scrapes.push(serde_json::json!({
        "job_name": "prometheus",
        "static_configs": [{"targets": [format!("{LOOPBACK}:{PROMETHEUS_PORT}")]}],
    }));
    serde_json::json!({
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": [rules_file(layout)],
        "scrape_configs": scrapes,
    })
}

/// A file-SD target list of one address, written aside then renamed, so that
/// Prometheus never reads half a file (it reads only `*.json`).
fn write_targets(file: &Path, address: &str, job: Option<&str>) -> Result<()> {
    let mut group = serde_json::json!({"targets": [address]});
    if let Some(job) = job {
        // A target group's `job` wins over the scrape configuration's.
        group["labels"] = serde_json::json!({"job": job});
    }
    let text = serde_json::to_string(&[group])?;
    let partial = file.with_extension("json.partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, file).with_context(|| format!("writing {}", file.display()))
}

/// A target the stack's Prometheus scrapes while this value lives.
#[derive(Debug)]
pub struct ScrapeTarget {
    file: PathBuf,
    job: String,
}

impl ScrapeTarget {
    /// Adds `address` (`host:port` of a `/metrics`) to `job`'s targets under
    /// `name`, which must be unique among them (a test's unique name). Its
    /// `job` label is `<job>-<name>`.
    pub fn add(layout: &Layout, job: Job, name: &str, address: &str) -> Result<Self> {
        let fine = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if name.is_empty() || !name.chars().all(fine) {
            bail!("scrape target name {name:?} must be letters, digits, '-' or '_'");
        }
        address
            .parse::<std::net::SocketAddr>()
            .with_context(|| format!("scrape target address {address:?} is not host:port"))?;
        let dir = targets_dir(layout, job);
        create(&dir)?;
        let file = dir.join(format!("{name}.json"));
        let job = format!("{}-{name}", job.name());
        write_targets(&file, address, Some(&job))?;
        Ok(Self { file, job })
    }

    /// The `job` label of the target's series.
    pub fn job(&self) -> &str {
        &self.job
    }
}

impl Drop for ScrapeTarget {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(tag: &str) -> Layout {
        let root = std::env::temp_dir().join(format!("ossature-prom-{tag}-{}", std::process::id()));
        Layout {
            cache: root.join("cache"),
            state: root.join("state"),
        }
    }

    #[test]
    fn the_config_scrapes_each_job_from_its_target_files_and_loads_the_rules() {
        let layout = layout("config");
        let file = write_config(&layout).unwrap();
        let config: serde_json::Value =
            serde_norway::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        assert_eq!(config["global"]["evaluation_interval"], "2s");
        let rules = config["rule_files"][0].as_str().unwrap();
        assert_eq!(std::fs::read_to_string(rules).unwrap(), ALERT_RULES);
        let operator = &config["scrape_configs"][0];
        assert_eq!(operator["job_name"], "ossature-operator");
        let glob = operator["file_sd_configs"][0]["files"][0].as_str().unwrap();
        assert!(glob.ends_with("targets/ossature-operator/*.json"), "{glob}");
        assert_eq!(
            config["scrape_configs"][1]["job_name"],
            "ossature-control-plane"
        );
        let default: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(targets_dir(&layout, Job::Operator).join("default.json"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(default[0]["targets"][0], "127.0.0.1:9464");
        let default: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(targets_dir(&layout, Job::ControlPlane).join("default.json"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(default[0]["targets"][0], "127.0.0.1:8080");
        std::fs::remove_dir_all(layout.state.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_target_is_listed_while_it_lives_and_bad_names_are_refused() {
        let layout = layout("target");
        let target =
            ScrapeTarget::add(&layout, Job::ControlPlane, "t-1", "127.0.0.1:4000").unwrap();
        let file = targets_dir(&layout, Job::ControlPlane).join("t-1.json");
        let listed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(listed[0]["targets"][0], "127.0.0.1:4000");
        assert_eq!(listed[0]["labels"]["job"], "ossature-control-plane-t-1");
        assert_eq!(target.job(), "ossature-control-plane-t-1");
        drop(target);
        assert!(!file.exists());
        let err = ScrapeTarget::add(&layout, Job::Operator, "../x", "127.0.0.1:1").unwrap_err();
        assert!(err.to_string().contains("must be letters"), "{err}");
        let err = ScrapeTarget::add(&layout, Job::Operator, "x", "localhost").unwrap_err();
        assert!(err.to_string().contains("is not host:port"), "{err}");
        std::fs::remove_dir_all(layout.state.parent().unwrap()).unwrap();
    }
}
