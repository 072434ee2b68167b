//! Programs the Helm chart's checks run: `helm`, `kubeconform` and `crane`.
//! They are tools, not components of the stack (nothing of them keeps
//! running): built from their Go modules and cached by version like the
//! components, so a developer and CI get the same ones with nothing
//! installed by hand. `ossature-dev tool NAME` prints where one is.

use std::path::PathBuf;

use anyhow::Result;

use crate::layout::{Layout, create};
use crate::obtain::{Artifact, Recipe};
use crate::versions::Versions;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChartTool {
    /// Helm 4: lints, renders, installs and upgrades the chart.
    Helm,
    /// Checks rendered manifests against JSON schemas, offline.
    Kubeconform,
    /// go-containerregistry's crane: assembles and inspects OCI images
    /// without a container daemon.
    Crane,
}

impl ChartTool {
    pub const ALL: [ChartTool; 3] = [ChartTool::Helm, ChartTool::Kubeconform, ChartTool::Crane];

    /// The binary's name, which is also the artifact's.
    pub fn name(self) -> &'static str {
        match self {
            ChartTool::Helm => "helm",
            ChartTool::Kubeconform => "kubeconform",
            ChartTool::Crane => "crane",
        }
    }

    pub fn artifact(self, v: &Versions) -> Artifact {
        let (version, module, packages): (_, _, &'static [&'static str]) = match self {
            ChartTool::Helm => (&v.helm, "helm.sh/helm/v4", &["helm.sh/helm/v4/cmd/helm"]),
            ChartTool::Kubeconform => (
                &v.kubeconform,
                "github.com/yannh/kubeconform",
                &["github.com/yannh/kubeconform/cmd/kubeconform"],
            ),
            ChartTool::Crane => (
                &v.crane,
                "github.com/google/go-containerregistry",
                &["github.com/google/go-containerregistry/cmd/crane"],
            ),
        };
        Artifact {
            name: self.name(),
            version: version.version.clone(),
            recipe: Recipe::GoInstall {
                module,
                packages,
                copy: &[],
            },
        }
    }

    /// The tool's binary, built first when the cache has no whole copy of
    /// the pinned version. Processes that ask at once build it once.
    pub async fn ensure(self, layout: &Layout) -> Result<PathBuf> {
        let artifact = self.artifact(&Versions::pinned());
        if artifact.missing(layout).is_some() {
            create(&layout.cache.join("work"))?;
            let lock = layout
                .work(&format!("{}-{}", artifact.name, artifact.version))
                .with_extension("lock");
            let _held = crate::files::lock(&lock).await?;
            artifact.ensure(layout).await?;
        }
        Ok(artifact.dir(layout).join(self.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_a_go_install_of_its_pinned_version() {
        let v = Versions::pinned();
        for tool in ChartTool::ALL {
            let a = tool.artifact(&v);
            assert_eq!(a.name, tool.name());
            match a.recipe {
                Recipe::GoInstall {
                    module, packages, ..
                } => {
                    assert_eq!(packages.len(), 1);
                    assert!(packages[0].starts_with(module), "{}", packages[0]);
                    assert!(packages[0].ends_with(&format!("/{}", tool.name())));
                }
                other => panic!("{} is built by {other:?}", tool.name()),
            }
        }
        assert_eq!(ChartTool::Helm.artifact(&v).version, v.helm.version);
    }
}
