//! Programs the Helm chart's checks run: `helm`, `kubeconform`, `crane`, and
//! `promtool` for its alert rules.
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
    /// Prometheus' promtool: checks and unit-tests the alert rules. Built
    /// with the stack's Prometheus, from the same module.
    Promtool,
}

impl ChartTool {
    pub const ALL: [ChartTool; 4] = [
        ChartTool::Helm,
        ChartTool::Kubeconform,
        ChartTool::Crane,
        ChartTool::Promtool,
    ];

    /// The binary's name.
    pub fn name(self) -> &'static str {
        match self {
            ChartTool::Helm => "helm",
            ChartTool::Kubeconform => "kubeconform",
            ChartTool::Crane => "crane",
            ChartTool::Promtool => "promtool",
        }
    }

    pub fn artifact(self, v: &Versions) -> Artifact {
        let (version, module, packages): (_, _, &'static [&'static str]) = match self {
            ChartTool::Promtool => return crate::components::prometheus_artifact(v),
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
                tags: &[],
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
            match a.recipe {
                Recipe::GoInstall {
                    module, packages, ..
                } => {
                    // The binary is one of the packages built.
                    let binary = format!("/{}", tool.name());
                    let built = packages.iter().find(|p| p.ends_with(&binary));
                    assert!(built.is_some_and(|p| p.starts_with(module)), "{packages:?}");
                }
                other => panic!("{} is built by {other:?}", tool.name()),
            }
        }
        assert_eq!(ChartTool::Helm.artifact(&v).version, v.helm.version);
        let promtool = ChartTool::Promtool.artifact(&v);
        assert_eq!(
            (promtool.name, promtool.version),
            ("prometheus", v.prometheus.version)
        );
    }
}
