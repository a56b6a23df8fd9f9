//! The CRD sets are installed, Established and served.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use testenv::{ControlPlane, CrdSet, Options};

/// Starts a control plane with `crds`, then checks each of `groups`.
async fn served(crds: CrdSet, groups: &[&str]) {
    let cp = ControlPlane::start(Options {
        crds,
        ..Options::default()
    })
    .await
    .expect("control plane");
    for group in groups {
        check_group(&cp, group).await;
    }
}

/// Lists Robots and ProviderConfigs of `group` through discovery, as the
/// controller would, and round-trips a Robot.
async fn check_group(cp: &ControlPlane, group: &str) {
    let admin = cp.admin_client().await.expect("admin client");
    let all: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let names: Vec<String> = all
        .list(&ListParams::default())
        .await
        .expect("list CRDs")
        .items
        .into_iter()
        .filter_map(|crd| crd.metadata.name)
        .collect();
    for expected in [
        format!("robots.iam.{group}"),
        format!("providerconfigs.{group}"),
        format!("providerconfigusages.{group}"),
    ] {
        assert!(names.contains(&expected), "{expected} not in {names:?}");
    }
    for gvk in [
        GroupVersionKind::gvk(&format!("iam.{group}"), "v1alpha1", "Robot"),
        GroupVersionKind::gvk(group, "v1alpha1", "ProviderConfig"),
    ] {
        let (resource, _) = kube::discovery::pinned_kind(&admin, &gvk)
            .await
            .unwrap_or_else(|e| panic!("{gvk:?} not served: {e}"));
        let api: Api<DynamicObject> = Api::all_with(admin.clone(), &resource);
        let list = api.list(&ListParams::default()).await.expect("list");
        assert!(list.items.is_empty());
    }
    // An object of the served kind round-trips.
    cp.apply_yaml(&format!(
        "apiVersion: iam.{group}/v1alpha1\nkind: Robot\nmetadata:\n  name: example\n\
         spec:\n  forProvider:\n    color: yellow\n"
    ))
    .await
    .expect("apply a Robot");
    let output = cp
        .kubectl()
        .args([
            "get",
            &format!("robots.iam.{group}"),
            "example",
            "-o",
            "jsonpath={.spec.forProvider.color}",
        ])
        .output()
        .expect("kubectl");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "yellow");
}

#[tokio::test]
async fn the_crossplane_reference_crds_are_served() {
    served(CrdSet::Crossplane, &["dummy.crossplane.io"]).await;
}

#[tokio::test]
async fn the_upbound_reference_crds_are_served() {
    served(CrdSet::Upbound, &["dummy.upbound.io"]).await;
}

/// The groups of the Robot CRDs in a set of ours.
fn robot_groups(set: CrdSet) -> Vec<String> {
    let files = set
        .files()
        .unwrap_or_else(|missing| panic!("our CRDs are missing: {missing}"));
    let docs = testenv::manifests::read_files(&files).expect("our CRDs parse");
    docs.iter()
        .filter(|d| d.object.data["spec"]["names"]["kind"] == "Robot")
        .filter_map(|d| d.object.data["spec"]["group"].as_str())
        .filter_map(|g| g.strip_prefix("iam.").map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn our_crds_are_served_in_the_crossplane_groups() {
    assert_eq!(
        robot_groups(CrdSet::Ours),
        ["dummy.crossplane.io", "dummy.m.crossplane.io"]
    );
    served(CrdSet::Ours, &["dummy.crossplane.io"]).await;
}

#[tokio::test]
async fn our_crds_are_served_in_the_upbound_groups() {
    assert_eq!(
        robot_groups(CrdSet::OursUpbound),
        ["dummy.m.upbound.io", "dummy.upbound.io"]
    );
    served(CrdSet::OursUpbound, &["dummy.upbound.io"]).await;
}
