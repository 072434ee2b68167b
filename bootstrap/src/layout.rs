//! Where things live: a cache of obtained components (kept across resets)
//! and a state directory (data, keys, logs, pid files) that `reset` wipes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::pki::Pki;

#[derive(Clone, Debug)]
pub struct Layout {
    pub cache: PathBuf,
    pub state: PathBuf,
}

fn from_env(own: &str, xdg: &str, fallback: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(own).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os(xdg).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir).join("ossature"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .with_context(|| format!("neither {own}, {xdg} nor HOME is set"))?;
    Ok(PathBuf::from(home).join(fallback).join("ossature"))
}

impl Layout {
    /// `OSSATURE_CACHE_DIR` / `OSSATURE_STATE_DIR` win, then the XDG base directories.
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            cache: from_env("OSSATURE_CACHE_DIR", "XDG_CACHE_HOME", ".cache")?,
            state: from_env("OSSATURE_STATE_DIR", "XDG_STATE_HOME", ".local/state")?,
        })
    }

    /// Installed artifact of one component version.
    pub fn artifact(&self, name: &str, version: &str) -> PathBuf {
        self.cache
            .join("artifacts")
            .join(format!("{name}-{version}"))
    }
    /// Go work modules and downloaded archives.
    pub fn work(&self, name: &str) -> PathBuf {
        self.cache.join("work").join(name)
    }
    pub fn data(&self, component: &str) -> PathBuf {
        self.state.join("data").join(component)
    }
    pub fn log(&self, component: &str) -> PathBuf {
        self.state.join("logs").join(format!("{component}.log"))
    }
    pub fn pidfile(&self, component: &str) -> PathBuf {
        self.state.join("run").join(format!("{component}.pid"))
    }
    pub fn pki(&self) -> Pki {
        Pki::new(self.state.join("pki"))
    }
    pub fn secret(&self, name: &str) -> PathBuf {
        self.state.join("secrets").join(name)
    }
    pub fn lock(&self) -> PathBuf {
        self.state.join("lock")
    }

    pub fn create_dirs(&self) -> Result<()> {
        for dir in [
            self.cache.join("artifacts"),
            self.cache.join("work"),
            self.state.join("data"),
            self.state.join("logs"),
            self.state.join("run"),
            self.state.join("secrets"),
        ] {
            create(&dir)?;
        }
        Ok(())
    }
}

pub fn create(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}
