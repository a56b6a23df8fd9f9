//! Sources and secrets that cannot work: one clear error at start-up, never the content.

use super::*;

/// Each bad source stops the start with exit code 2 and one error line
/// that names the source and never holds the secret.
#[tokio::test]
async fn bad_sources_fail_at_start_up_with_one_clear_error() {
    let moto = Moto::start().await;
    let drongo = Drongo::start().await;
    let secret = distinctive("tok-bad-input");
    let kubeconfig = testenv::kubeconfig::render("https://127.0.0.1:1", "ca", "u", &secret);
    let no_context: String = kubeconfig
        .lines()
        .filter(|l| !l.starts_with("current-context"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(no_context, kubeconfig);

    moto.create("kc/not-a-kubeconfig", &format!("token: {secret}\n"))
        .await;
    moto.create("kc/no-context", &no_context).await;
    moto.create("kc/blank", " \n").await;
    moto.create("kc/json", &json!({ "other": secret }).to_string())
        .await;
    drongo.create("blank").await;
    drongo.add_version("blank", "").await;
    drongo.create("no-context").await;
    drongo.add_version("no-context", &no_context).await;
    drongo.create("revoked").await;
    let v1 = drongo.add_version("revoked", &kubeconfig).await;
    drongo.disable("revoked", &v1).await;
    let (crc_url, _fake) = fake_secret_manager(&kubeconfig, crc32c_of(&kubeconfig) ^ 1).await;
    let closed_port = free_port(LOOPBACK).unwrap();

    let aws = moto.controller_env();
    let gcp = drongo.controller_env();
    let with = |base: &[(String, String)], k: &str, v: &str| {
        let mut e = base.to_vec();
        e.retain(|(key, _)| key != k);
        e.push((k.to_owned(), v.to_owned()));
        e
    };
    let unreachable = format!("http://127.0.0.1:{closed_port}");
    let cases: Vec<(&str, &str, Vars, String)> = vec![
        (
            "--kubeconfig-source",
            "aws-secretsmanager://kc/missing",
            aws.clone(),
            format!("the secret does not exist for versionStage AWSCURRENT in region us-east-1 (endpoint {})", moto.url),
        ),
        (
            // The secret exists, in us-east-1.
            "--kubeconfig-source",
            "aws-secretsmanager://kc/no-context?region=eu-west-1",
            aws.clone(),
            "the secret does not exist for versionStage AWSCURRENT in region eu-west-1".into(),
        ),
        (
            "--kubeconfig-source",
            "aws-secretsmanager://kc/no-context",
            with(&aws, "AWS_ENDPOINT_URL", &unreachable),
            format!("cannot reach AWS Secrets Manager for versionStage AWSCURRENT in region us-east-1 (endpoint {unreachable})"),
        ),
        (
            "--kubeconfig-source",
            "aws-secretsmanager://kc/blank",
            aws.clone(),
            "the secret is empty".into(),
        ),
        (
            "--kubeconfig-source",
            "aws-secretsmanager://kc/not-a-kubeconfig",
            aws.clone(),
            "the payload is not a kubeconfig".into(),
        ),
        (
            "--kubeconfig-source",
            "aws-secretsmanager://kc/no-context",
            aws.clone(),
            "the kubeconfig has no current-context".into(),
        ),
        (
            "--kubeconfig-source",
            "aws-secretsmanager://kc/json?jsonKey=kubeconfig",
            aws.clone(),
            "the secret's JSON object has no key \"kubeconfig\"".into(),
        ),
        (
            "--kubeconfig-source",
            "aws-secretsmanager://kc/blank?versionStage=AWSCURRENT&versionId=EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE",
            aws.clone(),
            "give versionStage or versionId, not both".into(),
        ),
        (
            "--server-token-source",
            "aws-secretsmanager://srv/missing",
            aws.clone(),
            "robot server token: aws-secretsmanager://srv/missing: the secret does not exist".into(),
        ),
        (
            "--kubeconfig-source",
            "gcp-secretmanager://projects/p1/secrets/missing/versions/latest",
            gcp.clone(),
            format!("the secret does not exist at {}", drongo.url),
        ),
        (
            "--kubeconfig-source",
            "gcp-secretmanager://projects/p1/secrets/blank/versions/latest",
            gcp.clone(),
            "the secret is empty".into(),
        ),
        (
            "--kubeconfig-source",
            "gcp-secretmanager://projects/p1/secrets/no-context/versions/1",
            gcp.clone(),
            "the kubeconfig has no current-context".into(),
        ),
        (
            "--kubeconfig-source",
            "gcp-secretmanager://projects/p1/secrets/revoked/versions/1",
            gcp.clone(),
            "answered FAILED_PRECONDITION: Cannot access secret version in state DISABLED".into(),
        ),
        (
            "--kubeconfig-source",
            "gcp-secretmanager://projects/p1/secrets/kc/versions/latest",
            with(&gcp, "ROBOT_CONTROLLER_GCP_SECRETMANAGER_ENDPOINT", &crc_url),
            "the payload's CRC32C is".into(),
        ),
        (
            "--kubeconfig-source",
            "gcp-secretmanager://projects/p1/secrets/kc/versions/latest",
            with(&gcp, "ROBOT_CONTROLLER_GCP_SECRETMANAGER_ENDPOINT", "http://192.0.2.10:8080"),
            "plain http is allowed on loopback only".into(),
        ),
        (
            "--kubeconfig-source",
            "gcp-secretmanager://projects/p1/kubeconfig",
            gcp.clone(),
            "malformed resource name; expected gcp-secretmanager://projects/<project>/secrets/<secret>/versions/<number or latest>".into(),
        ),
        (
            "--kubeconfig-source",
            "vault://secret/kubeconfig",
            vec![],
            "unknown scheme \"vault\"".into(),
        ),
    ];
    for (flag, uri, env, needle) in cases {
        // What may pass is retried, then exit 1; what cannot, exit 2 at once.
        // Only the retried case waits out --start-timeout: long enough for
        // the AWS SDK's own retries and one of ours on a loaded machine. The
        // others get room for a slow emulator, and exit long before it.
        let transient = needle.starts_with("cannot reach");
        let start_timeout = if transient { "8s" } else { "60s" };
        let (code, output) = once(&[flag, uri, "--start-timeout", start_timeout], &env).await;
        let errors: Vec<&str> = output.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(code, Some(if transient { 1 } else { 2 }), "{uri}: {output}");
        if transient {
            assert!(
                output.contains("retrying")
                    && output.contains("still failing after --start-timeout"),
                "{output}"
            );
        }
        assert_eq!(errors.len(), 1, "{uri}: one error: {output}");
        assert!(errors[0].contains(uri), "{uri}: names the source: {output}");
        assert!(
            errors[0].contains(&needle),
            "{uri}: wants {needle:?}: {output}"
        );
        assert!(
            !output.contains(&secret),
            "{uri}: the secret is in the output"
        );
    }

    // --server-auth gcp-id-token: its flags are checked at start-up too.
    for (args, env, needle) in [
        (
            vec![
                "--server-auth",
                "gcp-id-token",
                "--server-token-source",
                "env:TOKEN",
            ],
            vec![],
            "takes its tokens from the metadata server; drop --server-token-source",
        ),
        (
            vec!["--server-auth", "gcp-id-token"],
            vec![(
                "GCE_METADATA_HOST".to_owned(),
                "metadata/computeMetadata".to_owned(),
            )],
            "GCE_METADATA_HOST=\"metadata/computeMetadata\" must be a host[:port] only",
        ),
    ] {
        let mut args = args;
        args.extend(["--kubeconfig-source", "env:ROBOT_TEST_UNSET"]);
        let (code, output) = once(&args, &env).await;
        assert_eq!(code, Some(2), "{output}");
        assert!(output.contains(needle), "{output}");
    }

    // The fake's answer with the right checksum is accepted: the start goes
    // past the source (and fails later, at the unreachable control plane).
    let (good_url, _good) = fake_secret_manager(&kubeconfig, crc32c_of(&kubeconfig)).await;
    let (code, output) = once(
        &[
            "--kubeconfig-source",
            "gcp-secretmanager://projects/p1/secrets/kc/versions/latest",
        ],
        &with(
            &gcp,
            "ROBOT_CONTROLLER_GCP_SECRETMANAGER_ENDPOINT",
            &good_url,
        ),
    )
    .await;
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("pass failed"), "{output}");
    assert!(!output.contains(&secret));
}

/// moto checks IAM once told to (after `INITIAL_NO_AUTH_ACTION_COUNT`
/// unchecked calls): a user without a policy is refused GetSecretValue and
/// an unknown access key is refused outright, both permission errors at
/// start-up; a user with the documented policy gets through.
#[tokio::test]
async fn aws_refusals_are_permission_errors() {
    // Six unchecked calls set the stage; every later call is checked.
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "6")]).await;
    let setup = (
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    );
    let mut keys = Vec::new();
    for user in ["no-policy", "reader"] {
        moto.aws(&["iam", "create-user", "--user-name", user], setup);
        let key = moto.aws(&["iam", "create-access-key", "--user-name", user], setup);
        let field = |f: &str| key["AccessKey"][f].as_str().unwrap().to_owned();
        keys.push((field("AccessKeyId"), field("SecretAccessKey")));
    }
    // The action the README asks for. The README scopes it to the one
    // secret; moto authorizes Secrets Manager calls against resource "*",
    // so only "*" can be granted here.
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": "*",
        }],
    });
    moto.aws(
        &[
            "iam",
            "put-user-policy",
            "--user-name",
            "reader",
            "--policy-name",
            "read-kubeconfig",
            "--policy-document",
            &policy.to_string(),
        ],
        setup,
    );
    let secret = distinctive("tok-denied");
    let kubeconfig = testenv::kubeconfig::render("https://127.0.0.1:1", "ca", "u", &secret);
    moto.aws(
        &[
            "secretsmanager",
            "create-secret",
            "--name",
            "kc/denied",
            "--secret-string",
            &kubeconfig,
        ],
        setup,
    );

    let uri = "aws-secretsmanager://kc/denied";
    let run = |key_id: String, key_secret: String| {
        let mut env = moto.controller_env();
        env.retain(|(k, _)| k != "AWS_ACCESS_KEY_ID" && k != "AWS_SECRET_ACCESS_KEY");
        env.push(("AWS_ACCESS_KEY_ID".into(), key_id));
        env.push(("AWS_SECRET_ACCESS_KEY".into(), key_secret));
        async move { once(&["--kubeconfig-source", uri], &env).await }
    };
    let (no_policy, reader) = (keys[0].clone(), keys[1].clone());
    // moto answers these in XML, which a JSON-protocol client cannot read
    // a code from: the status decides.
    for (key, who) in [
        (no_policy.clone(), "a user without a policy"),
        (
            ("AKIAUNKNOWNKEY000000".into(), "wrong".into()),
            "an unknown key",
        ),
    ] {
        let (code, output) = run(key.0, key.1.clone()).await;
        assert_eq!(code, Some(2), "{who}: {output}");
        let errors: Vec<&str> = output.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "{who}: {output}");
        assert!(
            errors[0].contains(uri)
                && errors[0].contains("permission denied: AWS answered HTTP 403")
                && errors[0].contains("secretsmanager:GetSecretValue"),
            "{who}: {output}"
        );
        assert!(
            !output.contains(&secret) && !output.contains(&key.1),
            "{who}"
        );
    }
    // With the policy the source is read; the start fails later, at the
    // control plane the kubeconfig names (nothing listens there).
    let (code, output) = run(reader.0, reader.1.clone()).await;
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("pass failed"), "{output}");
    assert!(!output.contains(&secret) && !output.contains(&reader.1));
}

fn crc32c_of(text: &str) -> u32 {
    crc32c::crc32c(text.as_bytes())
}
