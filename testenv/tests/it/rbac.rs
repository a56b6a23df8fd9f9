//! The controller's identity gets exactly what infra/rbac grants.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, ObjectReference, Pod, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind, ObjectMeta};
use testenv::{ControlPlane, CrdSet, Options};

use crate::support::{api_status, whoami};

fn robots(client: &kube::Client, group: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(&format!("iam.{group}"), "v1alpha1", "Robot");
    Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk))
}

#[tokio::test]
async fn the_controller_is_a_plain_authenticated_user_and_the_admin_a_master() {
    let cp = ControlPlane::start(Options {
        crds: CrdSet::None,
        ..Options::default()
    })
    .await
    .expect("control plane");
    let controller = cp.controller_client().await.expect("client");
    let (user, groups) = whoami(&controller).await.expect("whoami");
    assert_eq!(user, "robot-controller");
    assert_eq!(groups, ["system:authenticated"]);
    let admin = cp.admin_client().await.expect("client");
    let (_, groups) = whoami(&admin).await.expect("whoami");
    assert!(groups.iter().any(|g| g == "system:masters"), "{groups:?}");
}

#[tokio::test]
async fn the_controller_can_do_its_job_and_nothing_more() {
    let cp = ControlPlane::start(Options {
        crds: CrdSet::Crossplane,
        ..Options::default()
    })
    .await
    .expect("control plane");
    cp.apply_yaml(
        "apiVersion: iam.dummy.crossplane.io/v1alpha1\nkind: Robot\nmetadata:\n  name: example\n\
         spec:\n  forProvider:\n    color: yellow\n",
    )
    .await
    .expect("apply a Robot as admin");
    let client = cp.controller_client().await.expect("client");
    let robots = robots(&client, "dummy.crossplane.io");

    // Granted: watch/list Robots, write their status, finalize them.
    assert_eq!(
        robots
            .list(&ListParams::default())
            .await
            .expect("list robots")
            .items
            .len(),
        1
    );
    let status = serde_json::json!({"status": {"atProvider": {}, "conditions": [{
        "type": "Ready", "status": "False", "reason": "Creating",
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    robots
        .patch_status("example", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("patch robot status");
    let finalizer = serde_json::json!({"metadata": {"finalizers": ["finalizer.managedresource.crossplane.io"]}});
    robots
        .patch(
            "example",
            &PatchParams::default(),
            &Patch::Merge(&finalizer),
        )
        .await
        .expect("add a finalizer");
    // Granted: events, a Lease in `default`, Secrets by name.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some("example-".into()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("iam.dummy.crossplane.io/v1alpha1".into()),
            kind: Some("Robot".into()),
            name: Some("example".into()),
            ..ObjectReference::default()
        },
        reason: Some("CreatedExternalResource".into()),
        type_: Some("Normal".into()),
        ..Event::default()
    };
    events
        .create(&PostParams::default(), &event)
        .await
        .expect("create an event");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("robot-controller".into()),
            ..ObjectMeta::default()
        },
        ..Lease::default()
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create the lease");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    assert_eq!(
        api_status(secrets.get("nope").await),
        Some(404),
        "get secret is granted"
    );

    // Denied: everything else.
    assert_eq!(
        api_status(robots.delete("example", &DeleteParams::default()).await),
        Some(403)
    );
    let robot: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "iam.dummy.crossplane.io/v1alpha1", "kind": "Robot",
        "metadata": {"name": "other"}, "spec": {"forProvider": {"color": "red"}}}))
    .expect("robot");
    assert_eq!(
        api_status(robots.create(&PostParams::default(), &robot).await),
        Some(403)
    );
    let pods: Api<Pod> = Api::all(client.clone());
    assert_eq!(
        api_status(pods.list(&ListParams::default()).await),
        Some(403)
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("sneaky".into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    assert_eq!(
        api_status(namespaces.create(&PostParams::default(), &ns).await),
        Some(403)
    );
    assert_eq!(
        api_status(secrets.list(&ListParams::default()).await),
        Some(403)
    );
    let other_leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    assert_eq!(
        api_status(other_leases.create(&PostParams::default(), &lease).await),
        Some(403)
    );
}

/// What the apiserver's authorizer says about one request of the controller.
async fn may(
    client: &kube::Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_owned())),
        None => (resource, None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource,
                namespace: namespace.map(str::to_owned),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    reviews
        .create(&PostParams::default(), &review)
        .await
        .expect("access review")
        .status
        .is_some_and(|s| s.allowed)
}

#[tokio::test]
async fn the_cluster_role_covers_both_api_groups_and_no_more() {
    let cp = ControlPlane::start(Options {
        crds: CrdSet::None,
        ..Options::default()
    })
    .await
    .expect("control plane");
    let c = cp.controller_client().await.expect("client");
    for group in [
        "dummy.crossplane.io",
        "dummy.upbound.io",
        "dummy.m.crossplane.io",
        "dummy.m.upbound.io",
    ] {
        let iam = format!("iam.{group}");
        for verb in ["get", "list", "watch", "patch"] {
            assert!(
                may(&c, verb, &iam, "robots", None).await,
                "{verb} robots.{iam}"
            );
            assert!(
                may(&c, verb, group, "providerconfigs", None).await,
                "{verb} providerconfigs.{group}"
            );
        }
        assert!(
            may(&c, "patch", &iam, "robots/status", None).await,
            "patch robots/status.{iam}"
        );
        // Every write is a patch: `update` is granted nowhere.
        for (resource, sub) in [
            ("robots", &iam),
            ("robots/status", &iam),
            ("providerconfigs", &group.to_owned()),
        ] {
            assert!(
                !may(&c, "update", sub, resource, None).await,
                "update {resource}.{sub} must be denied"
            );
        }
        for verb in ["create", "delete", "list"] {
            assert!(
                may(&c, verb, group, "providerconfigusages", None).await,
                "{verb} providerconfigusages"
            );
        }
        for verb in ["create", "delete", "deletecollection"] {
            assert!(
                !may(&c, verb, &iam, "robots", None).await,
                "{verb} robots.{iam} must be denied"
            );
            assert!(
                !may(&c, verb, group, "providerconfigs", None).await,
                "{verb} providerconfigs must be denied"
            );
        }
        assert!(
            !may(&c, "get", group, "storeconfigs", None).await,
            "storeconfigs must be denied"
        );
    }
    let denied = [
        ("list", "", "secrets", Some("default")),
        ("watch", "", "secrets", Some("default")),
        ("list", "", "pods", None),
        ("create", "", "namespaces", None),
        ("get", "", "configmaps", Some("default")),
        ("create", "apps", "deployments", Some("default")),
        (
            "create",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            None,
        ),
        (
            "escalate",
            "rbac.authorization.k8s.io",
            "clusterroles",
            None,
        ),
        (
            "create",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
        ),
        (
            "create",
            "coordination.k8s.io",
            "leases",
            Some("kube-system"),
        ),
        ("impersonate", "", "users", None),
    ];
    for (verb, group, resource, ns) in denied {
        assert!(
            !may(&c, verb, group, resource, ns).await,
            "{verb} {resource}.{group} in {ns:?} must be denied"
        );
    }
    for (verb, group, resource, ns) in [
        ("create", "", "events", Some("default")),
        ("patch", "events.k8s.io", "events", Some("default")),
        ("get", "", "secrets", Some("crossplane-system")),
        ("create", "", "secrets", Some("crossplane-system")),
        ("update", "coordination.k8s.io", "leases", Some("default")),
    ] {
        assert!(
            may(&c, verb, group, resource, ns).await,
            "{verb} {resource}.{group} in {ns:?}"
        );
    }
}
