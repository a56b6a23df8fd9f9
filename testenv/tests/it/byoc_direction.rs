//! The BYOC property: traffic goes out of the private network, never in.
//!
//! The robot server runs in a private network namespace behind a stateful
//! firewall (outbound only, as behind a NAT gateway); the control plane runs
//! outside. A process inside reaches both; nothing outside, the apiserver
//! included, can open a connection in.

use std::net::TcpStream;
use std::time::Duration;

use testenv::netns::PrivateNetwork;
use testenv::{ControlPlane, CrdSet, Options, RobotServer};

#[tokio::test]
async fn connections_go_out_of_the_private_network_and_never_in() {
    if let Some(reason) = testenv::netns::unsupported_reason() {
        eprintln!("SKIPPED: this machine refuses network namespaces: {reason}");
        return;
    }
    let net = PrivateNetwork::create().expect("private network");
    let cp = ControlPlane::start_on(
        Options {
            crds: CrdSet::Crossplane,
            ..Options::default()
        },
        net.gateway_address().into(),
    )
    .await
    .expect("control plane on the gateway address");
    let server = RobotServer::start_in(&net, &[])
        .await
        .expect("robot server inside");
    let inside = server.addr();
    assert_eq!(inside.ip(), net.private_address());

    // Inside, the server answers on its private address...
    let answer = net
        .run(move || testenv::http::get(inside, "/healthz", Duration::from_secs(5)))
        .expect("run inside")
        .expect("the server answers from inside");
    assert_eq!(answer.status, 200);

    // ...and a process inside reaches the control plane as the controller.
    let kubectl = testenv::kubectl_path().expect("kubectl");
    let output = net
        .command(kubectl)
        .arg(format!(
            "--kubeconfig={}",
            cp.controller_kubeconfig_path().display()
        ))
        .args(["get", "robots.iam.dummy.crossplane.io", "-o", "name"])
        .output()
        .expect("kubectl inside");
    assert!(
        output.status.success(),
        "kubectl from inside: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Outside, where the control plane runs, a connection to the same
    // address and port goes nowhere: the firewall drops it.
    let dropped_before = net.dropped_inbound_connections().expect("counter");
    let error = TcpStream::connect_timeout(&inside, Duration::from_secs(2))
        .expect_err("a connection from outside got in");
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "{error}");
    let dropped_after_probe = net.dropped_inbound_connections().expect("counter");
    assert!(dropped_after_probe > dropped_before);

    // The apiserver itself cannot call in either: told to call a webhook in
    // the private network, its connection is dropped at the same firewall.
    cp.apply_yaml(&format!(
        "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: call-into-the-private-network
webhooks:
  - name: robots.private.example
    clientConfig:
      url: https://{inside}/validate
    rules:
      - apiGroups: ['']
        apiVersions: [v1]
        operations: [CREATE]
        resources: [configmaps]
    failurePolicy: Fail
    sideEffects: None
    admissionReviewVersions: [v1]
    timeoutSeconds: 2
"
    ))
    .await
    .expect("webhook configuration");
    // The webhook takes effect a moment after it is stored; until then
    // creates pass.
    let mut attempt = 0;
    let error = testenv::wait_for("the webhook to be called", Duration::from_secs(60), || {
        attempt += 1;
        let yaml = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe-{attempt}\n  namespace: default\n"
        );
        let cp = &cp;
        async move { cp.apply_yaml(&yaml).await.err() }
    })
    .await
    .expect("the apiserver reached into the private network");
    assert!(
        error.to_string().contains("failed calling webhook"),
        "{error}"
    );
    let dropped_after_webhook = net.dropped_inbound_connections().expect("counter");
    assert!(
        dropped_after_webhook > dropped_after_probe,
        "the apiserver's attempt never reached the firewall: {error}"
    );
}
