//! The Helm chart's checks: helm and kubeconform from the tool cache
//! (`ossature-dev tool`), the chart rendered into objects, and JSON schemas
//! for kubeconform made from the apiserver's own OpenAPI (kubeconform has no
//! built-in schemas offline).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};
use ossature_bootstrap::tools::ChartTool;
use serde_json::{Value, json};

/// The chart, in this repository.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ossature")
}

/// Values the chart's checks install it with (backends by address,
/// credentials by Secret).
pub fn test_values() -> PathBuf {
    chart_dir().join("ci/test-values.yaml")
}

/// A tool of the chart's checks, built into the cache first if needed.
pub async fn tool(tool: ChartTool) -> Result<PathBuf> {
    let layout = ossature_bootstrap::Layout::from_env()?;
    tool.ensure(&layout).await
}

/// `helm` against the stack's apiserver, with its own cache and config
/// directories (nothing of the user's).
pub struct Helm {
    binary: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Helm {
    pub async fn new(kubeconfig: &Path) -> Result<Helm> {
        let home = std::env::temp_dir().join(format!("ossature-helm-{}", std::process::id()));
        std::fs::create_dir_all(&home)?;
        Ok(Helm {
            binary: tool(ChartTool::Helm).await?,
            kubeconfig: kubeconfig.to_path_buf(),
            home,
        })
    }

    /// Runs helm with `args`, whatever its outcome.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.binary)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.binary.display()))
    }

    /// Runs helm with `args` and returns its standard output; fails with
    /// what it said when it fails.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let output = self.run(args)?;
        if !output.status.success() {
            bail!(
                "helm {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// What helm says when it refuses `args` (its standard error); fails
    /// when it does not refuse them.
    pub fn refused(&self, args: &[&str]) -> Result<String> {
        let output = self.run(args)?;
        if output.status.success() {
            bail!("helm {} was expected to fail and did not", args.join(" "));
        }
        Ok(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The objects of a YAML stream, empty documents left out.
pub fn documents(yaml: &str) -> Result<Vec<Value>> {
    use serde::Deserialize;
    let mut objects = Vec::new();
    for document in serde_norway::Deserializer::from_str(yaml) {
        let value = Value::deserialize(document).context("a YAML document of the stream")?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// The objects of `kind` among `objects`.
pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// Every rule of the rendered Roles and ClusterRoles that has a wildcard
/// (`*`) verb, resource or API group, described.
pub fn wildcard_rules(objects: &[Value]) -> Vec<String> {
    let mut found = Vec::new();
    for role in objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
    {
        for rule in role["rules"].as_array().into_iter().flatten() {
            let wild = ["verbs", "resources", "apiGroups"].iter().any(|field| {
                rule[field]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|v| v.as_str().is_some_and(|s| s.contains('*')))
            });
            if wild {
                found.push(format!(
                    "{} {}: {rule}",
                    role["kind"], role["metadata"]["name"]
                ));
            }
        }
    }
    found
}

/// Where kubeconform finds a kind's schema under a directory written by
/// [`write_schemas`]: `<group or v1>/<version>/<kind, lowercase>.json`.
pub const SCHEMA_LOCATION: &str = "{{ .Group }}/{{ .ResourceAPIVersion }}/{{ .ResourceKind }}.json";

/// Writes a standalone JSON schema (draft 4, as kubeconform reads them) for
/// every kind among `objects`, from the apiserver's OpenAPI v3 document of
/// its group and version. Objects get `additionalProperties: false` unless
/// they keep unknown fields, so a misspelt field fails as it would on
/// `kubectl apply --validate=strict`.
pub async fn write_schemas(client: &kube::Client, objects: &[Value], dir: &Path) -> Result<()> {
    let mut kinds: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for object in objects {
        let api_version = object["apiVersion"]
            .as_str()
            .context("an object without apiVersion")?;
        let kind = object["kind"].as_str().context("an object without kind")?;
        kinds
            .entry(api_version.to_string())
            .or_default()
            .insert(kind.to_string());
    }
    for (api_version, kinds) in kinds {
        let (group, version) = match api_version.split_once('/') {
            Some((group, version)) => (group.to_string(), version.to_string()),
            None => (String::new(), api_version.clone()),
        };
        let path = if group.is_empty() {
            format!("/openapi/v3/api/{version}")
        } else {
            format!("/openapi/v3/apis/{group}/{version}")
        };
        let request = http::Request::get(&path).body(Vec::new())?;
        let text = client
            .request_text(request)
            .await
            .with_context(|| format!("reading {path} from the apiserver"))?;
        let document: Value = serde_json::from_str(&text)?;
        let schemas = document["components"]["schemas"]
            .as_object()
            .with_context(|| format!("{path} has no components.schemas"))?;
        let definitions = strict(&refs_to_definitions(&Value::Object(schemas.clone())));
        for kind in kinds {
            let name = schemas
                .iter()
                .find(|(_, schema)| {
                    schema["x-kubernetes-group-version-kind"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|gvk| {
                            gvk["group"] == group
                                && gvk["version"] == version
                                && gvk["kind"] == kind
                        })
                })
                .map(|(name, _)| name.clone())
                .with_context(|| format!("the apiserver serves no {kind} in {api_version}"))?;
            let schema = json!({
                "$schema": "http://json-schema.org/draft-04/schema#",
                "allOf": [{"$ref": format!("#/definitions/{name}")}],
                "definitions": definitions,
            });
            let group_dir = if group.is_empty() {
                version.as_str()
            } else {
                group.as_str()
            };
            let file = dir
                .join(group_dir)
                .join(&version)
                .join(format!("{}.json", kind.to_lowercase()));
            std::fs::create_dir_all(file.parent().expect("a schema file has a folder"))?;
            std::fs::write(&file, serde_json::to_vec(&schema)?)?;
        }
    }
    Ok(())
}

/// OpenAPI's `#/components/schemas/X` references as `#/definitions/X`.
fn refs_to_definitions(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let value = match (key.as_str(), value.as_str()) {
                        ("$ref", Some(target)) => {
                            Value::String(target.replace("#/components/schemas/", "#/definitions/"))
                        }
                        _ => refs_to_definitions(value),
                    };
                    (key.clone(), value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(refs_to_definitions).collect()),
        other => other.clone(),
    }
}

/// Every schema with properties, closed to others unless it keeps unknown
/// fields or says what others may be.
fn strict(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out: serde_json::Map<String, Value> =
                map.iter().map(|(k, v)| (k.clone(), strict(v))).collect();
            let open = map.contains_key("additionalProperties")
                || map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            if map.get("properties").is_some_and(Value::is_object) && !open {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(strict).collect()),
        other => other.clone(),
    }
}

/// Runs kubeconform over `files` with the schemas of `schemas` (see
/// [`write_schemas`]), strictly, no schema missing; fails with its report.
pub async fn kubeconform(schemas: &Path, files: &[&Path]) -> Result<String> {
    let binary = tool(ChartTool::Kubeconform).await?;
    let location = schemas.join(SCHEMA_LOCATION);
    let output = Command::new(&binary)
        .args(["-strict", "-summary", "-output", "text", "-schema-location"])
        .arg(&location)
        .args(files)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        bail!("kubeconform refused the manifests:\n{report}");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_made_standalone_and_strict() {
        let schemas = json!({
            "io.k8s.X": {"properties": {"a": {"$ref": "#/components/schemas/io.k8s.Y"}}},
            "io.k8s.Y": {"properties": {"b": {}}, "x-kubernetes-preserve-unknown-fields": true},
            "io.k8s.Z": {"properties": {"c": {}}, "additionalProperties": {"type": "string"}},
        });
        let out = strict(&refs_to_definitions(&schemas));
        assert_eq!(
            out["io.k8s.X"]["properties"]["a"]["$ref"],
            "#/definitions/io.k8s.Y"
        );
        assert_eq!(out["io.k8s.X"]["additionalProperties"], false);
        assert!(out["io.k8s.Y"].get("additionalProperties").is_none());
        assert_eq!(out["io.k8s.Z"]["additionalProperties"]["type"], "string");
    }

    #[test]
    fn wildcards_are_found_in_any_part_of_a_rule() {
        let objects = documents(
            "kind: ClusterRole\nmetadata: {name: a}\nrules:\n- {apiGroups: [''], resources: [pods], verbs: [get]}\n---\n---\nkind: Role\nmetadata: {name: b}\nrules:\n- {apiGroups: [apps], resources: ['*'], verbs: [get]}\n",
        )
        .unwrap();
        assert_eq!(objects.len(), 2);
        let found = wildcard_rules(&objects);
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("\"b\""), "{found:?}");
    }
}
