//! KEDA's CRDs in the apiserver, so that workloads' ScaledObjects are
//! checked against KEDA's own schemas. They come from KEDA's Go module
//! (`config/crd/bases`), cached by version like every component, and are
//! part of the apiserver's readiness: `up` applies them when one is missing
//! or of another version. No KEDA controller or metrics adapter runs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};

use crate::health::Probes;
use crate::layout::Layout;
use crate::obtain::{Artifact, Recipe};
use crate::versions::Versions;

pub const MODULE: &str = "github.com/kedacore/keda/v2";
/// Where the module keeps its generated CRDs, one file each.
const CRD_DIR: &str = "config/crd/bases";
const FIELD_MANAGER: &str = "ossature-dev";
/// Says which KEDA release a CRD in the apiserver comes from.
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";

pub fn artifact(v: &Versions) -> Artifact {
    Artifact {
        name: "keda-crds",
        version: v.keda.version.clone(),
        recipe: Recipe::GoModuleFiles {
            module: MODULE,
            dir: CRD_DIR,
            suffix: ".yaml",
        },
    }
}

/// The CRD files of the cached artifact, sorted.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

/// A CRD as the file has it, labelled with the release it comes from.
pub fn read(file: &Path, version: &str) -> Result<CustomResourceDefinition> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut crd: CustomResourceDefinition = serde_norway::from_str(&text)
        .with_context(|| format!("{} is not a CustomResourceDefinition", file.display()))?;
    crd.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(VERSION_LABEL.into(), version.into());
    Ok(crd)
}

/// The name a CRD file stands for: `keda.sh_scaledobjects.yaml` is
/// `scaledobjects.keda.sh`.
pub fn crd_name(file: &Path) -> Option<String> {
    let stem = file.file_stem()?.to_str()?;
    let (group, plural) = stem.split_once('_')?;
    Some(format!("{plural}.{group}"))
}

/// A CRD of KEDA's release as the apiserver has it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Live {
    Missing,
    /// Of another release (the label's value), or not labelled by us.
    OtherVersion(String),
    /// Applied, not yet served.
    NotEstablished,
    Ready,
}

impl Live {
    fn of(live: Option<&CustomResourceDefinition>, version: &str) -> Live {
        let Some(live) = live else {
            return Live::Missing;
        };
        let labels = live.metadata.labels.as_ref();
        let live_version = labels.and_then(|l| l.get(VERSION_LABEL));
        if live_version.map(String::as_str) != Some(version) {
            return Live::OtherVersion(live_version.cloned().unwrap_or_else(|| "unknown".into()));
        }
        let established = live
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if established {
            Live::Ready
        } else {
            Live::NotEstablished
        }
    }

    /// Whether it must be applied.
    fn stale(&self) -> bool {
        matches!(self, Live::Missing | Live::OtherVersion(_))
    }

    fn problem(&self) -> Option<String> {
        match self {
            Live::Missing => Some("missing".into()),
            Live::OtherVersion(v) => Some(format!("of version {v}")),
            Live::NotEstablished => Some("not established yet".into()),
            Live::Ready => None,
        }
    }
}

impl Probes {
    fn keda_dir(&self) -> (PathBuf, String) {
        let artifact = artifact(&Versions::pinned());
        (artifact.dir(self.layout()), artifact.version)
    }

    /// Whether every CRD of KEDA's release is in the apiserver, established.
    pub(crate) async fn keda_crds_ready(&self) -> Result<(), String> {
        let (dir, version) = self.keda_dir();
        let files = files(&dir)
            .map_err(|_| "KEDA's CRDs are not obtained yet (run `ossature-dev up`)".to_string())?;
        let crds: Api<CustomResourceDefinition> =
            Api::all(self.kube().await.map_err(|e| format!("{e:#}"))?);
        for name in files.iter().filter_map(|f| crd_name(f)) {
            let live = crds.get_opt(&name).await.map_err(|e| e.to_string())?;
            if let Some(problem) = Live::of(live.as_ref(), &version).problem() {
                return Err(format!(
                    "KEDA's CRD {name} is {problem} (`ossature-dev up` applies KEDA {version}'s)"
                ));
            }
        }
        Ok(())
    }

    /// Applies each CRD of KEDA's release that is missing or of another
    /// version (server-side: `scaledjobs` is too large for kubectl's
    /// client-side annotation).
    pub(crate) async fn ensure_keda_crds(&self) -> Result<()> {
        let (dir, version) = self.keda_dir();
        let crds: Api<CustomResourceDefinition> = Api::all(self.kube().await?);
        for file in files(&dir)? {
            let crd = read(&file, &version)?;
            let name = crd.metadata.name.clone().unwrap_or_default();
            let live = crds.get_opt(&name).await?;
            if !Live::of(live.as_ref(), &version).stale() {
                continue;
            }
            crds.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await
            .with_context(|| format!("applying KEDA's CRD {name}"))?;
        }
        Ok(())
    }
}

/// The cached CRDs of the pinned release, obtained if missing.
pub async fn ensure_obtained(layout: &Layout) -> Result<PathBuf> {
    artifact(&Versions::pinned()).ensure(layout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crd_file_names_its_crd() {
        assert_eq!(
            crd_name(Path::new("/c/keda.sh_scaledobjects.yaml")).as_deref(),
            Some("scaledobjects.keda.sh")
        );
        assert_eq!(
            crd_name(Path::new("eventing.keda.sh_cloudeventsources.yaml")).as_deref(),
            Some("cloudeventsources.eventing.keda.sh")
        );
        assert_eq!(crd_name(Path::new("kustomization.yaml")), None);
    }

    #[test]
    fn a_crd_of_another_release_or_not_established_is_not_ready() {
        let crd = |version: &str, established: &str| -> CustomResourceDefinition {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "scaledobjects.keda.sh", "labels": {VERSION_LABEL: version}},
                "spec": {"group": "keda.sh", "names": {"kind": "ScaledObject", "plural": "scaledobjects"},
                         "scope": "Namespaced", "versions": []},
                "status": {"conditions": [{"type": "Established", "status": established}],
                           "acceptedNames": {"kind": "ScaledObject", "plural": "scaledobjects"}},
            }))
            .unwrap()
        };
        let live = |crd: Option<&CustomResourceDefinition>| Live::of(crd, "v2.21.0");
        assert_eq!(live(Some(&crd("v2.21.0", "True"))), Live::Ready);
        let older = live(Some(&crd("v2.20.0", "True")));
        assert_eq!(older.problem().as_deref(), Some("of version v2.20.0"));
        assert!(older.stale(), "applied again");
        let pending = live(Some(&crd("v2.21.0", "False")));
        assert_eq!(pending.problem().as_deref(), Some("not established yet"));
        assert!(!pending.stale(), "applied already: waited for");
        assert_eq!(live(None).problem().as_deref(), Some("missing"));
        assert!(live(None).stale());
    }

    #[test]
    fn keda_is_taken_from_its_go_module_at_the_pinned_version() {
        let a = artifact(&Versions::pinned());
        assert_eq!(a.version, "v2.21.0");
        assert!(matches!(
            a.recipe,
            Recipe::GoModuleFiles {
                module: MODULE,
                dir: "config/crd/bases",
                ..
            }
        ));
    }
}
