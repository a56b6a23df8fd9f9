//! Hostile input: names, external names and colors that break naive
//! encoders round-trip exactly; ProviderConfig endpoints that cannot work
//! fail with a clear message, without a crash and without sending a
//! request anywhere it should not go.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use robot_api::Robot;
use robot_controller::api::Family;
use robot_controller::managed::meta;
use serde_json::json;
use testenv::faultproxy::{Answer, FaultProxy};
use testenv::process::free_port;
use testenv::{CrdSet, wait_for};

use crate::faults::{held, wait_converged};
use crate::support::{CONVERGE, Env, condition};

const FAST: &[&str] = &["--poll-interval", "2s", "--max-backoff", "2s"];

/// Every printable ASCII character, space to tilde.
fn printable_ascii() -> String {
    (0x20u8..=0x7e).map(char::from).collect()
}

/// (Robot name, external name or none, color).
fn hostile_robots() -> Vec<(String, Option<String>, String)> {
    // The longest legal object name: 253 characters, dots and dashes.
    let mut longest = "a".repeat(63);
    while longest.len() + 64 <= 253 {
        longest.push('.');
        longest.push_str(&"b-c".repeat(21));
    }
    while longest.len() < 253 {
        longest.push('9');
    }
    assert_eq!(longest.len(), 253);
    vec![
        (longest, None, "plain".into()),
        ("0".into(), None, String::new()),
        (
            "a.b".into(),
            None,
            "with \"quotes\" and 'apostrophes'".into(),
        ),
        (
            "x--y".into(),
            None,
            "line one\nline two\r\nline three\n".into(),
        ),
        ("ascii".into(), Some(printable_ascii()), printable_ascii()),
        (
            "utf8".into(),
            // 252 bytes: the server's limit is 253 bytes, not characters.
            Some("ü🤖".repeat(42)),
            "rot 🟥, grün 🟩, \u{0}nul, \u{7f}del, \u{200b}zero-width".into(),
        ),
        ("spaces".into(), Some(" padded name ".into()), "  ".into()),
        (
            "query".into(),
            Some("name=x&name=y".into()),
            "a+b%20c".into(),
        ),
        (
            "fragment".into(),
            Some("#top?x=1".into()),
            "\\u0000 \\\\".into(),
        ),
        ("dots".into(), Some("..".into()), "</script><script>".into()),
        (
            "slash".into(),
            Some("/robots".into()),
            "{\"name\":\"evil\"}".into(),
        ),
        ("percent".into(), Some("100%".into()), "%%%%".into()),
    ]
}

#[tokio::test]
async fn odd_names_external_names_and_colors_round_trip_exactly() {
    let env = Env::start().await;
    let mut controller = env.controller(FAST);
    controller.wait_ready().await;
    let robots = hostile_robots();
    for (name, external, color) in &robots {
        let extra = match external {
            Some(e) => json!({ "metadata": { "annotations": { meta::EXTERNAL_NAME: e } } }),
            None => json!({}),
        };
        env.create_robot(name, color, extra).await;
    }
    wait_converged(&env, &[&controller], "hostile Robots created").await;

    // Exactly these, byte for byte, and each found again by its own name.
    let want: BTreeMap<String, String> = robots
        .iter()
        .map(|(n, e, c)| (e.clone().unwrap_or_else(|| n.clone()), c.clone()))
        .collect();
    assert_eq!(held(env.server.url()).await.expect("listing"), want);
    for (name, color) in &want {
        assert_eq!(
            env.server_robot(name).await,
            Some(Robot::new(name.clone(), color.clone())),
            "GET {name:?}"
        );
    }

    // Updated to other odd colors, then deleted: every one found by name.
    for (i, (name, _, _)) in robots.iter().enumerate() {
        env.set_color(name, &format!("\"{i}\"\n\t{}", printable_ascii()))
            .await;
    }
    wait_converged(&env, &[&controller], "hostile Robots updated").await;
    for (name, _, _) in &robots {
        env.delete_robot(name).await;
    }
    for (name, _, _) in &robots {
        env.wait_gone(name).await;
    }
    assert_eq!(
        held(env.server.url()).await.expect("listing"),
        BTreeMap::new()
    );
}

#[tokio::test]
async fn an_external_name_the_server_cannot_take_is_a_clear_error() {
    let env = Env::start().await;
    let mut controller = env.controller(FAST);
    controller.wait_ready().await;
    // 254 bytes: over the server's limit. Refused before any request.
    env.create_robot(
        "too-long",
        "red",
        json!({ "metadata": { "annotations": { meta::EXTERNAL_NAME: "n".repeat(254) } } }),
    )
    .await;
    let robot = env
        .wait_condition("too-long", "Synced", "False", Some("ReconcileError"))
        .await;
    let message = condition(&robot, "Synced")
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains("more than the limit of 253"), "{message}");
    assert_eq!(held(env.server.url()).await.expect("listing").len(), 0);
}

#[tokio::test]
async fn unusable_endpoints_fail_clearly_and_send_nothing_astray() {
    // The reference CRDs, whose schema lets any string through: what
    // reaches the controller is refused there too.
    let env = Env::start_with(CrdSet::Crossplane, Family::Crossplane, &[]).await;
    // Whatever reaches this one went where it must not: it counts
    // connections, and forwards to the real server so a wrong request
    // would even succeed.
    let elsewhere = FaultProxy::start(env.server.addr()).expect("counting proxy");
    let nothing = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("free port");
    let mut redirectors = Vec::new();
    for status in [301, 302, 307, 308] {
        redirectors.push(
            FaultProxy::answering(Answer::redirect(
                status,
                &format!("{}/robots?name=stolen", elsewhere.http_url()),
            ))
            .expect("redirecting server"),
        );
    }
    let secret = "hunter2-in-the-url";
    let elsewhere_port = elsewhere.addr().port();
    let mut cases: Vec<(String, String, String)> = vec![
        (
            "not-a-url".into(),
            "this is not a URL".into(),
            "invalid robot server endpoint".into(),
        ),
        (
            "nobody-listens".into(),
            format!("http://127.0.0.1:{nothing}"),
            "Connection refused".into(),
        ),
        (
            "ftp".into(),
            format!("ftp://127.0.0.1:{elsewhere_port}/"),
            "scheme \"ftp\" is not supported".into(),
        ),
        (
            "file".into(),
            "file:///etc/passwd".into(),
            "scheme \"file\" is not supported".into(),
        ),
        (
            "unix".into(),
            "unix:///run/robot.sock".into(),
            "scheme \"unix\" is not supported".into(),
        ),
        (
            "credentials".into(),
            format!("http://robot:{secret}@127.0.0.1:{elsewhere_port}"),
            "credentials in the URL are not supported".into(),
        ),
        (
            "query".into(),
            format!("http://127.0.0.1:{elsewhere_port}/?next=evil"),
            "must not have a query".into(),
        ),
        (
            "blank".into(),
            "   ".into(),
            "the ProviderConfig has no spec.endpoint".into(),
        ),
    ];
    for r in &redirectors {
        cases.push((
            format!("redirect-{}", r.addr().port()),
            r.http_url(),
            "redirects are not followed".into(),
        ));
    }

    // Any endpoint passes the allowlist here: what is checked is that each
    // is refused anyway, before anything is sent.
    let mut args = FAST.to_vec();
    args.extend(["--allowed-endpoints", "*"]);
    let mut controller = env.controller(&args);
    controller.wait_ready().await;
    for (name, endpoint, _) in &cases {
        env.provider_config(name, endpoint).await;
        env.create_robot(
            name,
            "red",
            json!({ "spec": { "providerConfigRef": { "name": name } } }),
        )
        .await;
    }
    for (name, _, expected) in &cases {
        let robot = env
            .wait_condition(name, "Synced", "False", Some("ReconcileError"))
            .await;
        let message = condition(&robot, "Synced")
            .and_then(|c| c.message.clone())
            .unwrap_or_default();
        assert!(message.contains(expected), "{name}: {message}");
        assert!(
            !message.contains(secret),
            "{name}: the URL's password shown"
        );
    }
    // Still serving, and retrying (a redirect was asked more than once).
    let (status, _) = healthz(&controller).await;
    assert_eq!(status, 200);
    wait_for("retries", CONVERGE, || async {
        redirectors.iter().all(|r| r.answered() >= 2).then_some(())
    })
    .await
    .expect("each redirecting server asked again");
    assert_eq!(
        elsewhere.connections(),
        0,
        "a request went where no endpoint pointed"
    );
    assert!(
        !controller.log().contains(secret),
        "the URL's password is in the log"
    );

    // Fixed: the same Robot converges.
    env.provider_config("ftp", env.server.url()).await;
    env.wait_ready("ftp").await;
    assert_eq!(
        env.server_robot("ftp").await,
        Some(Robot::new("ftp", "red"))
    );
    assert_eq!(elsewhere.connections(), 0);
    // Only the fixed one reached the server; nothing else is half done.
    assert_eq!(
        held(env.server.url()).await.expect("listing"),
        BTreeMap::from([("ftp".to_owned(), "red".to_owned())])
    );
}

#[tokio::test]
async fn our_crds_refuse_endpoints_that_are_not_http_urls() {
    let env = Env::start().await;
    let api = env.dynamic(&env.res.provider_config);
    for bad in [
        "this is not a URL",
        "ftp://127.0.0.1/",
        "file:///etc/passwd",
        "   ",
        "http://",
        "http://a b",
    ] {
        let pc: kube::core::DynamicObject = serde_json::from_value(json!({
            "apiVersion": env.res.provider_config.api_version,
            "kind": "ProviderConfig",
            "metadata": { "name": "bad" },
            "spec": { "endpoint": bad },
        }))
        .unwrap();
        let e = api
            .create(&kube::api::PostParams::default(), &pc)
            .await
            .expect_err(bad);
        assert!(
            matches!(&e, kube::Error::Api(s) if s.code == 422 && s.message.contains("spec.endpoint")),
            "{bad:?}: {e}"
        );
    }
    for good in ["http://robots.internal:9090", "https://r.example/api"] {
        env.provider_config("good", good).await;
    }
}

async fn healthz(controller: &crate::support::Controller) -> (u16, String) {
    let addr = controller.health;
    tokio::task::spawn_blocking(move || {
        testenv::http::get(addr, "/healthz", std::time::Duration::from_secs(2))
    })
    .await
    .expect("task")
    .map(|r| (r.status, r.body))
    .expect("controller /healthz")
}

/// A 404 that does not come from the robots API (a path prefix typo, another
/// service on the port) says nothing about the robot: deleting through it
/// must not let the Robot go while its robot lives on.
#[tokio::test]
async fn a_404_from_something_else_never_reads_as_robot_gone() {
    let env = Env::start().await;
    let html = FaultProxy::answering(Answer::new(
        404,
        "text/html",
        "<html><body><h1>404 Not Found</h1></body></html>",
    ))
    .expect("a web server that is not a robot server");
    // Allowed: what is tested is how its 404 is read.
    env.allow(&html.http_url());
    let mut controller = env.controller(FAST);
    controller.wait_ready().await;
    let wrong = [
        ("typo", format!("{}/api", env.server.url())),
        ("website", html.http_url()),
    ];
    for (name, _) in &wrong {
        env.provider_config(name, env.server.url()).await;
        env.create_robot(
            name,
            "red",
            json!({ "spec": { "providerConfigRef": { "name": name } } }),
        )
        .await;
        env.wait_ready(name).await;
    }

    // Pointed at something that answers 404 to everything, then deleted.
    for (name, endpoint) in &wrong {
        env.provider_config(name, endpoint).await;
        env.delete_robot(name).await;
    }
    for (name, _) in &wrong {
        // Either the 404 is reported, or (the bug) the Robot is let go.
        let seen = wait_for("the 404 reported or the Robot gone", CONVERGE, || async {
            let Some(robot) = env.robot(name).await else {
                return Some(None);
            };
            let c = condition(&robot, "Synced")?;
            let m = c.message.clone().unwrap_or_default();
            (c.status == "False" && m.contains("404")).then_some(Some(m))
        })
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let Some(message) = seen else {
            panic!(
                "{name}: the Robot was let go while the server still holds {:?}",
                env.server_robot(name).await
            );
        };
        assert!(message.contains("answered 404"), "{name}: {message}");
        assert!(
            env.robot(name)
                .await
                .is_some_and(|r| meta::has_finalizer(&r.metadata, meta::FINALIZER)),
            "{name}: the finalizer went while the robot lives"
        );
        assert_eq!(env.server_robot(name).await, Some(Robot::new(*name, "red")));
    }

    // Pointed back: the deletion completes, robot and all.
    for (name, _) in &wrong {
        env.provider_config(name, env.server.url()).await;
    }
    for (name, _) in &wrong {
        env.wait_gone(name).await;
        assert_eq!(env.server_robot(name).await, None);
    }
}
