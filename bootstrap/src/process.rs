//! Starting components as detached process groups, recognising them again
//! later (pid plus start time, so a recycled pid is never mistaken for ours),
//! and stopping only those.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::layout::Layout;

/// Start time of a process in clock ticks since boot, from `/proc/<pid>/stat`.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let state = rest.split(' ').next()?;
    if state == "Z" {
        return None;
    }
    rest.split(' ').nth(19)?.parse().ok()
}

/// A process we started, as recorded in its pid file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    pub pid: i32,
    start: u64,
}

impl Started {
    fn parse(text: &str) -> Option<Self> {
        let (pid, start) = text.trim().split_once(' ')?;
        Some(Self {
            pid: pid.parse().ok()?,
            start: start.parse().ok()?,
        })
    }

    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// What the pid file of a component says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Never,
    Running(Started),
    Died(Started),
}

pub fn recorded(layout: &Layout, component: &str) -> Recorded {
    match std::fs::read_to_string(layout.pidfile(component))
        .ok()
        .and_then(|t| Started::parse(&t))
    {
        None => Recorded::Never,
        Some(s) if s.alive() => Recorded::Running(s),
        Some(s) => Recorded::Died(s),
    }
}

/// Starts `command` in a process group of its own, output appended to the
/// component's log, and records it.
pub fn spawn(layout: &Layout, component: &str, mut command: Command) -> Result<Started> {
    use std::os::unix::process::CommandExt;
    let log_path = layout.log(component);
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    let child = command
        .spawn()
        .with_context(|| format!("starting {component}: {command:?}"))?;
    let pid = child.id() as i32;
    // The child outlives us on purpose; it is tracked by its pid file.
    drop(child);
    let start = start_time(pid)
        .with_context(|| format!("{component} exited at once; see {}", log_path.display()))?;
    let started = Started { pid, start };
    std::fs::write(layout.pidfile(component), format!("{pid} {start}\n"))?;
    Ok(started)
}

/// Stops the process group of a component we started; `false` if it was not running.
pub async fn stop(layout: &Layout, component: &str) -> Result<bool> {
    let pidfile = layout.pidfile(component);
    let Recorded::Running(started) = recorded(layout, component) else {
        let _ = std::fs::remove_file(&pidfile);
        return Ok(false);
    };
    let group = Pid::from_raw(started.pid);
    let _ = killpg(group, Signal::SIGTERM);
    // Wait for every member: a launcher script may exit before the JVM it
    // started has shut down cleanly.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while group_alive(started.pid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = killpg(group, Signal::SIGKILL);
    let _ = std::fs::remove_file(&pidfile);
    Ok(true)
}

/// Process ids of the live (not zombie) members of a process group.
fn group_members(group: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // Fields after the command name: state, ppid, pgrp.
            let mut fields = stat[stat.rfind(')')? + 2..].split(' ');
            let state = fields.next()?;
            let pgrp: i32 = fields.nth(1)?.parse().ok()?;
            (pgrp == group && state != "Z").then_some(pid)
        })
        .collect()
}

fn group_alive(group: i32) -> bool {
    !group_members(group).is_empty()
}

/// Resident memory of every process in a group, in KiB.
pub fn group_rss_kib(group: i32) -> u64 {
    group_members(group)
        .into_iter()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// Who listens on a TCP port of 127.0.0.1 (or any address), if anyone.
pub fn port_in_use(port: u16) -> Option<String> {
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => None,
        Err(_) => Some(port_holder(port).unwrap_or_else(|| "an unknown process".into())),
    }
}

/// Finds the process owning a listening socket through /proc.
fn port_holder(port: u16) -> Option<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let listening = *state == "0A";
            let on_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                == Some(port);
            if listening && on_port {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| Path::new(i) == target)
            {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                return Some(format!("pid {pid} ({})", comm.trim()));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_port_names_its_holder() {
        // Below the ephemeral range: once freed, no other process's
        // outgoing connection takes it before the last check.
        let start = 20_000 + (std::process::id() % 5_000) as u16;
        let (listener, port) = (start..start + 5_000)
            .find_map(|port| {
                std::net::TcpListener::bind(("127.0.0.1", port))
                    .ok()
                    .map(|l| (l, port))
            })
            .expect("a free port below the ephemeral range");
        let holder = port_in_use(port).expect("port is held");
        assert!(
            holder.contains(&format!("pid {}", std::process::id())),
            "{holder}"
        );
        drop(listener);
        assert_eq!(port_in_use(port), None);
    }

    #[test]
    fn pid_file_records_are_checked_against_start_time() {
        let me = std::process::id() as i32;
        let started = Started {
            pid: me,
            start: start_time(me).unwrap(),
        };
        assert!(started.alive());
        let recycled = Started {
            pid: me,
            start: started.start + 1,
        };
        assert!(!recycled.alive());
        assert_eq!(
            Started::parse(&format!("{me} {}\n", started.start)),
            Some(started)
        );
        assert_eq!(Started::parse("garbage"), None);
    }

    fn scratch_layout(tag: &str) -> Layout {
        let root =
            std::env::temp_dir().join(format!("ossature-process-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let layout = Layout {
            cache: root.join("cache"),
            state: root.join("state"),
        };
        layout.create_dirs().unwrap();
        layout
    }

    #[tokio::test]
    async fn a_spawned_group_is_recorded_then_stopped_with_its_children() {
        let layout = scratch_layout("stop");
        let mut command = Command::new("sh");
        // A child of the leader too: stopping must take the whole group.
        command.args(["-c", "sleep 60 & echo $!; wait"]);
        let started = spawn(&layout, "sleeper", command).unwrap();
        assert_eq!(recorded(&layout, "sleeper"), Recorded::Running(started));
        let mut child = None;
        for _ in 0..50 {
            let log = std::fs::read_to_string(layout.log("sleeper")).unwrap();
            child = log.trim().parse::<i32>().ok();
            if child.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let child = child.expect("the shell reports its child");
        assert!(group_rss_kib(started.pid) > 0, "shell and sleep use memory");
        assert!(start_time(child).is_some());
        assert!(stop(&layout, "sleeper").await.unwrap());
        assert!(!started.alive());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(start_time(child), None, "the group's other members go too");
        assert_eq!(group_rss_kib(started.pid), 0);
        assert_eq!(recorded(&layout, "sleeper"), Recorded::Never);
        assert!(!stop(&layout, "sleeper").await.unwrap());
        std::fs::remove_dir_all(layout.state.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn a_process_that_exits_is_reported_as_died() {
        let layout = scratch_layout("died");
        let mut command = Command::new("sleep");
        command.arg("0.2");
        spawn(&layout, "brief", command).unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(matches!(recorded(&layout, "brief"), Recorded::Died(_)));
        std::fs::remove_dir_all(layout.state.parent().unwrap()).unwrap();
    }
}
