//! Our CRDs: the files in infra/crds are what the Rust types generate (both
//! families, both generations), and each legacy one is a compatible
//! superset of provider-dummy's reference CRD: it accepts everything the
//! reference accepts, with the same defaults, the same names, columns and
//! categories.

use std::path::{Path, PathBuf};

use robot_controller::api::{Family, Generation};
use robot_controller::{crd, kinds};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn infra_dir(family: Family) -> PathBuf {
    match family {
        Family::Crossplane => root().join("infra/crds"),
        Family::Upbound => root().join("infra/crds/upbound.io"),
    }
}

fn reference_dir(family: Family) -> PathBuf {
    let name = match family {
        Family::Crossplane => "crds-crossplane.io",
        Family::Upbound => "crds-upbound.io",
    };
    root().join("testdata/provider-dummy").join(name)
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn infra_crds_are_generated_from_the_types() {
    for family in Family::ALL {
        let mut expected = Vec::new();
        for generation in Generation::ALL {
            for crd in crd::crds(kinds::ALL, family, generation) {
                let path = infra_dir(family).join(crd::file_name(&crd));
                let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
                assert_eq!(
                    on_disk,
                    crd::to_yaml(&crd).unwrap(),
                    "{} is stale: regenerate with `robot-controller crds --api-group {family} --out-dir {}`",
                    path.display(),
                    infra_dir(family).display()
                );
                expected.push(path);
            }
        }
        // Nothing else: a file no type generates is a leftover.
        let mut on_disk: Vec<PathBuf> = std::fs::read_dir(infra_dir(family))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        on_disk.sort();
        expected.sort();
        assert_eq!(
            on_disk,
            expected,
            "{family}: files in {}",
            infra_dir(family).display()
        );
    }
}

#[test]
fn every_reference_crd_has_a_compatible_superset() {
    for family in Family::ALL {
        let ours: Vec<Value> = crd::crds(kinds::ALL, family, Generation::Legacy)
            .iter()
            .map(|c| serde_json::to_value(c).unwrap())
            .collect();
        let mut checked = 0;
        for entry in std::fs::read_dir(reference_dir(family)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let reference = yaml(&path);
            let name = reference["metadata"]["name"].as_str().unwrap();
            let mine = ours
                .iter()
                .find(|c| c["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("no CRD of ours named {name}"));
            let mut problems = Vec::new();
            compare_crd(&reference, mine, &mut problems);
            assert!(problems.is_empty(), "{name}:\n{}", problems.join("\n"));
            checked += 1;
        }
        assert_eq!(checked, 4, "{family}: expected 4 reference CRDs");
    }
}

fn compare_crd(reference: &Value, ours: &Value, problems: &mut Vec<String>) {
    let (r, o) = (&reference["spec"], &ours["spec"]);
    for key in ["group", "scope"] {
        if r[key] != o[key] {
            problems.push(format!("spec.{key}: {} != {}", r[key], o[key]));
        }
    }
    for key in ["kind", "listKind", "plural", "singular"] {
        if r["names"][key] != o["names"][key] {
            problems.push(format!(
                "names.{key}: {} != {}",
                r["names"][key], o["names"][key]
            ));
        }
    }
    for category in r["names"]["categories"].as_array().into_iter().flatten() {
        if !o["names"]["categories"]
            .as_array()
            .is_some_and(|c| c.contains(category))
        {
            problems.push(format!("category {category} missing"));
        }
    }
    for rv in r["versions"].as_array().unwrap() {
        let Some(ov) = o["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == rv["name"])
        else {
            problems.push(format!("version {} missing", rv["name"]));
            continue;
        };
        // `subresources: {}` and no subresources mean the same.
        let norm = |v: &Value| {
            if v.is_null() {
                serde_json::json!({})
            } else {
                v.clone()
            }
        };
        for key in ["served", "storage", "subresources"] {
            if norm(&rv[key]) != norm(&ov[key]) {
                problems.push(format!(
                    "version {}: {key} {} != {}",
                    rv["name"], rv[key], ov[key]
                ));
            }
        }
        let columns = |v: &Value| -> Vec<(Value, Value, Value, Value)> {
            v["additionalPrinterColumns"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    (
                        c["name"].clone(),
                        c["type"].clone(),
                        c["jsonPath"].clone(),
                        c.get("priority").cloned().unwrap_or(Value::from(0)),
                    )
                })
                .collect()
        };
        if columns(rv) != columns(ov) {
            problems.push(format!(
                "printer columns differ: {:?} != {:?}",
                columns(rv),
                columns(ov)
            ));
        }
        compare_schema(
            "",
            &rv["schema"]["openAPIV3Schema"],
            &ov["schema"]["openAPIV3Schema"],
            problems,
        );
    }
}

/// Ours must accept every value the reference accepts and default alike.
fn compare_schema(path: &str, r: &Value, o: &Value, problems: &mut Vec<String>) {
    if o.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    // Where we validate more than the reference, on purpose.
    const TIGHTENED: &[(&str, &str)] = &[(
        ".spec.endpoint",
        "an endpoint that is not an http(s) URL can never work; refused at apply time",
    )];
    if o.get("pattern") != r.get("pattern") && !TIGHTENED.iter().any(|(p, _)| *p == path) {
        problems.push(format!(
            "{path}: pattern {:?} != {:?}",
            r.get("pattern"),
            o.get("pattern")
        ));
    }
    for key in ["type", "format", "default"] {
        if r.get(key) != o.get(key) {
            problems.push(format!(
                "{path}: {key} {:?} != {:?}",
                r.get(key),
                o.get(key)
            ));
        }
    }
    if let Some(values) = r.get("enum").and_then(Value::as_array) {
        let ours = o.get("enum").and_then(Value::as_array);
        for v in values {
            if !ours.is_some_and(|e| e.contains(v)) {
                problems.push(format!("{path}: enum value {v} not accepted"));
            }
        }
    }
    for req in o
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let theirs = r.get("required").and_then(Value::as_array);
        if !theirs.is_some_and(|t| t.contains(req)) {
            problems.push(format!("{path}: we require {req}, the reference does not"));
        }
    }
    if let Some(props) = r.get("properties").and_then(Value::as_object) {
        for (name, rp) in props {
            // The API server accepts these at the root of every object.
            if path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&name.as_str()) {
                continue;
            }
            match o.get("properties").and_then(|p| p.get(name)) {
                Some(op) => compare_schema(&format!("{path}.{name}"), rp, op, problems),
                None => problems.push(format!("{path}.{name}: missing")),
            }
        }
    }
    if let Some(ri) = r.get("items") {
        compare_schema(&format!("{path}[]"), ri, &o["items"], problems);
    }
    if let Some(ra) = r.get("additionalProperties") {
        compare_schema(
            &format!("{path}{{}}"),
            ra,
            &o["additionalProperties"],
            problems,
        );
    }
}
