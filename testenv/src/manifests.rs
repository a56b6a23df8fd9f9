//! Applying multi-document YAML (CRDs, RBAC, objects) with server-side
//! apply, as `kubectl apply --server-side` would.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use kube::runtime::wait::{await_condition, conditions};

use crate::{Error, wait_for};

/// The field manager our applies are recorded under.
pub const FIELD_MANAGER: &str = "testenv";

/// How long a CRD may take to become Established, and a new kind to show
/// up in discovery.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// One object from a YAML stream, with where it came from for errors.
#[derive(Debug, Clone)]
pub struct Document {
    /// `<source> #<n>` (1-based document number).
    pub origin: String,
    pub object: DynamicObject,
    pub gvk: GroupVersionKind,
}

impl Document {
    fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }

    fn describe(&self) -> String {
        format!("{} {} ({})", self.gvk.kind, self.name(), self.origin)
    }
}

/// Parses a YAML stream into objects; empty documents are skipped. Every
/// object needs `apiVersion`, `kind` and `metadata.name`.
pub fn parse(yaml: &str, source: &str) -> Result<Vec<Document>, Error> {
    let mut docs = Vec::new();
    // Empty documents are skipped by the parser; its errors say the line.
    let values: Vec<serde_saphyr::Spanned<serde_json::Value>> =
        serde_saphyr::from_multiple(yaml).map_err(|e| Error::Manifest(format!("{source}: {e}")))?;
    for spanned in values {
        let origin = format!("{source}:{}", spanned.defined.line());
        let json = spanned.value;
        let bad = |why: String| Error::Manifest(format!("{origin}: {why}"));
        if !json.is_object() {
            return Err(bad("not a mapping".into()));
        }
        let object: DynamicObject =
            serde_json::from_value(json).map_err(|e| bad(format!("not an object: {e}")))?;
        let types = object
            .types
            .as_ref()
            .ok_or_else(|| bad("missing apiVersion or kind".into()))?;
        if types.api_version.is_empty() || types.kind.is_empty() {
            return Err(bad("empty apiVersion or kind".into()));
        }
        let parts: Vec<&str> = types.api_version.split('/').collect();
        if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
            return Err(bad(format!("malformed apiVersion {:?}", types.api_version)));
        }
        let gvk = GroupVersionKind::try_from(types).map_err(|e| bad(e.to_string()))?;
        if object
            .metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            return Err(bad("missing metadata.name".into()));
        }
        docs.push(Document {
            origin,
            object,
            gvk,
        });
    }
    Ok(docs)
}

/// The `*.yaml` and `*.yml` files in `dir`, sorted by name.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::path(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::path(dir, e))?.path();
        let is_yaml = path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml");
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads and parses every file, failing on the first bad one.
pub fn read_files(paths: &[PathBuf]) -> Result<Vec<Document>, Error> {
    let mut docs = Vec::new();
    for path in paths {
        let yaml = std::fs::read_to_string(path).map_err(|e| Error::path(path, e))?;
        docs.extend(parse(&yaml, &path.display().to_string())?);
    }
    Ok(docs)
}

/// Applies the documents: CRDs and Namespaces first (waiting until the CRDs
/// are Established and served), then the rest in order.
pub async fn apply(client: &kube::Client, docs: &[Document]) -> Result<(), Error> {
    let is_foundation = |d: &&Document| {
        (d.gvk.group == "apiextensions.k8s.io" && d.gvk.kind == "CustomResourceDefinition")
            || (d.gvk.group.is_empty() && d.gvk.kind == "Namespace")
    };
    let (first, rest): (Vec<&Document>, Vec<&Document>) = docs.iter().partition(is_foundation);
    for doc in &first {
        apply_one(client, doc).await?;
    }
    let crds: Vec<&str> = first
        .iter()
        .filter(|d| d.gvk.kind == "CustomResourceDefinition")
        .map(|d| d.name())
        .collect();
    wait_established(client, &crds).await?;
    for doc in &rest {
        apply_one(client, doc).await?;
    }
    Ok(())
}

/// Parses and applies a YAML stream.
pub async fn apply_yaml(client: &kube::Client, yaml: &str, source: &str) -> Result<(), Error> {
    apply(client, &parse(yaml, source)?).await
}

async fn apply_one(client: &kube::Client, doc: &Document) -> Result<(), Error> {
    // A kind whose CRD was just established may take a moment to be served.
    let (resource, caps) = wait_for(
        &format!("the API to serve {} ({})", doc.gvk.kind, doc.origin),
        ESTABLISH_TIMEOUT,
        || async {
            match kube::discovery::pinned_kind(client, &doc.gvk).await {
                Ok(found) => Some(Ok(found)),
                Err(kube::Error::Api(status)) if status.code == 404 => None,
                Err(e) => Some(Err(e)),
            }
        },
    )
    .await?
    .map_err(|e| Error::kube(format!("looking up {}", doc.describe()), e))?;
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => {
            let ns = doc
                .object
                .metadata
                .namespace
                .as_deref()
                .unwrap_or("default");
            Api::namespaced_with(client.clone(), ns, &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        doc.name(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&doc.object),
    )
    .await
    .map_err(|e| Error::kube(format!("applying {}", doc.describe()), e))?;
    Ok(())
}

/// Waits until each named CRD has condition Established=True.
pub async fn wait_established(client: &kube::Client, names: &[&str]) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in names {
        let established = await_condition(api.clone(), name, conditions::is_crd_established());
        match tokio::time::timeout(ESTABLISH_TIMEOUT, established).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(Error::Crds(format!("watching CRD {name}: {e}")));
            }
            Err(_) => {
                return Err(Error::Timeout {
                    what: format!("CRD {name} to become Established"),
                    after: ESTABLISH_TIMEOUT,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stream_and_skips_empty_documents() {
        let docs = parse(
            "---\n# comment only\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: r\n  namespace: a\n",
            "test.yaml",
        )
        .expect("parse");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].gvk.kind, "Namespace");
        assert_eq!(docs[0].gvk.group, "");
        assert_eq!(docs[1].gvk.group, "rbac.authorization.k8s.io");
        assert_eq!(docs[1].origin, "test.yaml:9");
    }

    #[test]
    fn every_malformed_document_is_named_in_the_error() {
        let cases = [
            (
                "kind: Namespace\nmetadata:\n  name: a\n",
                "missing apiVersion or kind",
            ),
            ("apiVersion: v1\nkind: Namespace\n", "missing metadata.name"),
            (
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ''\n",
                "missing metadata.name",
            ),
            ("- just\n- a list\n", "not a mapping"),
            ("apiVersion: v1\nkind: [x\n", "line 2 column 7"),
            (
                "apiVersion: a/b/c\nkind: X\nmetadata:\n  name: a\n",
                "malformed apiVersion",
            ),
            (
                "apiVersion: /v1\nkind: X\nmetadata:\n  name: a\n",
                "malformed apiVersion",
            ),
            (
                "apiVersion: v1\nkind: ''\nmetadata:\n  name: a\n",
                "empty apiVersion or kind",
            ),
        ];
        for (yaml, expected) in cases {
            let error = parse(yaml, "test.yaml").expect_err(yaml);
            let text = error.to_string();
            assert!(text.contains(expected), "{yaml:?}: {text}");
            assert!(text.contains("test.yaml"), "{yaml:?}: {text}");
        }
    }

    #[test]
    fn lists_only_yaml_files_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["b.yaml", "a.yml", "notes.txt", "c.yaml.txt"] {
            std::fs::write(dir.path().join(name), "").expect("write");
        }
        let names: Vec<String> = yaml_files(dir.path())
            .expect("list")
            .iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, ["a.yml", "b.yaml"]);
    }
}
