//! Turns kubeconfig bytes from a source into a client configuration and
//! the credential it uses, with errors that say what is wrong without ever
//! quoting the content (a YAML parser quoting "the offending line" would
//! quote a token).
//!
//! A kubeconfig from a secret is data, never instructions: what it would
//! make the controller run or read (an exec plugin, an auth provider,
//! token or certificate files, a proxy, no TLS verification) is refused
//! unless the operator opted in with an `--insecure-...` flag. The exec
//! plugins real control planes hand out are recognised and done natively
//! instead, with no binary: Upbound's `up organization token`, `aws eks
//! get-token` / `aws-iam-authenticator token`, `gke-gcloud-auth-plugin`.

use std::collections::HashMap;

use kube::config::{AuthInfo, ExecConfig, KubeConfigOptions, Kubeconfig};

use crate::source::SecretBytes;

#[derive(Debug, thiserror::Error)]
#[error("{source_uri}: {problem}")]
pub struct KubeconfigError {
    pub source_uri: String,
    pub problem: String,
}

/// What a kubeconfig from a secret may ask for beyond data, each by its
/// own opt-in (`--insecure-...`). The default refuses all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Run an exec plugin the kubeconfig names (other than those done natively).
    pub exec: bool,
    /// Use an `auth-provider` (oidc, gcp): it runs commands or reads files.
    pub auth_provider: bool,
    /// Read local files it names: `tokenFile`, `client-certificate`,
    /// `client-key`, `certificate-authority` (the `-data` forms are data).
    pub files: bool,
    /// Send the control-plane traffic through its `proxy-url`.
    pub proxy: bool,
    /// Skip TLS verification (`insecure-skip-tls-verify`).
    pub skip_tls_verify: bool,
}

/// How the client authenticates.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Credential {
    /// What the kubeconfig holds: a bearer token, client certificate data,
    /// basic auth, or what an opted-in exec plugin or auth provider gives.
    AsWritten,
    /// `up organization token`: an org-scoped token from Upbound's token
    /// exchange, for the Upbound token of `--upbound-token-source`.
    Upbound { organization: String },
    /// `aws eks get-token` / `aws-iam-authenticator token`: a presigned STS
    /// GetCallerIdentity from the default AWS credential chain.
    Eks {
        cluster: String,
        region: Option<String>,
        profile: Option<String>,
    },
    /// `gke-gcloud-auth-plugin`: an access token from Application Default
    /// Credentials.
    Gke,
}

impl Credential {
    /// For logs and `/readyz`.
    pub fn describe(&self) -> &'static str {
        match self {
            Credential::AsWritten => "the kubeconfig's own credentials",
            Credential::Upbound { .. } => "an Upbound org-scoped token (token exchange)",
            Credential::Eks { .. } => "an EKS token (presigned STS GetCallerIdentity)",
            Credential::Gke => "a Google access token (Application Default Credentials)",
        }
    }
}

/// A kubeconfig ready to build a client from.
pub struct Parsed {
    pub config: kube::Config,
    pub credential: Credential,
}

/// Parses and checks a kubeconfig: YAML, a current context that resolves
/// to a cluster with a server URL, and a user. With `permissions` (a
/// kubeconfig from a secret), fields it did not grant are refused.
pub async fn parse(
    bytes: &SecretBytes,
    source_uri: &str,
    permissions: Option<Permissions>,
) -> Result<Parsed, KubeconfigError> {
    let fail = |problem: &str| KubeconfigError {
        source_uri: source_uri.to_owned(),
        problem: problem.to_owned(),
    };
    if bytes.is_empty() {
        return Err(fail("the kubeconfig is empty"));
    }
    let text = std::str::from_utf8(bytes.expose())
        .map_err(|_| fail("the payload is not UTF-8 text, so not a kubeconfig"))?;
    // A first pass into a generic value, so that the parser's own message
    // (which may quote the input) is never shown.
    let value: serde_json::Value = serde_saphyr::from_str(text)
        .map_err(|_| fail("the payload is not valid YAML or JSON, so not a kubeconfig"))?;
    let Some(map) = value.as_object() else {
        return Err(fail(
            "the payload is not a kubeconfig: expected a mapping with clusters, contexts and users",
        ));
    };
    if !map.contains_key("clusters") && !map.contains_key("contexts") {
        return Err(fail(
            "the payload is not a kubeconfig: it has no clusters and no contexts",
        ));
    }
    let mut kubeconfig = Kubeconfig::from_yaml(text)
        .map_err(|_| fail("the payload is not a valid kubeconfig (a field has the wrong type)"))?;
    let Some(current) = kubeconfig.current_context.clone().filter(|c| !c.is_empty()) else {
        return Err(fail("the kubeconfig has no current-context"));
    };
    let context = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.clone())
        .ok_or_else(|| {
            fail(&format!(
                "the current-context {current:?} is not among its contexts"
            ))
        })?;
    let user_name = context.user.clone().unwrap_or_default();

    // The user: a recognised plugin is replaced by its native credential.
    let mut credential = Credential::AsWritten;
    if let Some(user) = kubeconfig
        .auth_infos
        .iter_mut()
        .find(|u| u.name == user_name)
        .and_then(|u| u.auth_info.as_mut())
    {
        if let Some(exec) = &user.exec
            && let Some(native) = recognise(exec).map_err(|e| fail(&e))?
        {
            credential = native;
            user.exec = None;
        }
        if let Some(p) = permissions {
            check_user(&user_name, user, p).map_err(|e| fail(&e))?;
        }
    }
    if let Some(p) = permissions
        && let Some(cluster) = kubeconfig
            .clusters
            .iter()
            .find(|c| c.name == context.cluster)
            .and_then(|c| c.cluster.as_ref())
    {
        check_cluster(&context.cluster, cluster, p).map_err(|e| fail(&e))?;
    }

    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| fail(&describe(&e)))?;
    Ok(Parsed { config, credential })
}

fn refused(field: &str, what: &str, flag: &str) -> String {
    format!(
        "{field} {what}, which is refused for a kubeconfig from a secret; allow it with {flag} (dangerous)"
    )
}

fn check_user(name: &str, user: &AuthInfo, p: Permissions) -> Result<(), String> {
    let field = |f: &str| format!("users[{name:?}].user.{f}");
    if user.exec.is_some() && !p.exec {
        return Err(refused(
            &field("exec"),
            "would run a command the secret names",
            "--insecure-kubeconfig-exec",
        ));
    }
    if user.auth_provider.is_some() && !p.auth_provider {
        return Err(refused(
            &field("auth-provider"),
            "would run commands or read files the secret names",
            "--insecure-kubeconfig-auth-provider",
        ));
    }
    if !p.files {
        for (f, set) in [
            ("tokenFile", user.token_file.is_some()),
            ("client-certificate", user.client_certificate.is_some()),
            ("client-key", user.client_key.is_some()),
        ] {
            if set {
                return Err(refused(
                    &field(f),
                    "names a local file to read (use the -data form, or an inline token)",
                    "--insecure-kubeconfig-files",
                ));
            }
        }
    }
    Ok(())
}

fn check_cluster(
    name: &str,
    cluster: &kube::config::Cluster,
    p: Permissions,
) -> Result<(), String> {
    let field = |f: &str| format!("clusters[{name:?}].cluster.{f}");
    if cluster.certificate_authority.is_some() && !p.files {
        return Err(refused(
            &field("certificate-authority"),
            "names a local file to read (use certificate-authority-data)",
            "--insecure-kubeconfig-files",
        ));
    }
    if cluster.proxy_url.is_some() && !p.proxy {
        return Err(refused(
            &field("proxy-url"),
            "would send the control-plane traffic through a proxy the secret names",
            "--insecure-kubeconfig-proxy",
        ));
    }
    if cluster.insecure_skip_tls_verify == Some(true) && !p.skip_tls_verify {
        return Err(refused(
            &field("insecure-skip-tls-verify"),
            "turns off the check of the control plane's identity",
            "--insecure-skip-tls-verify",
        ));
    }
    Ok(())
}

/// The exec plugins done natively; `Ok(None)` for any other plugin.
fn recognise(exec: &ExecConfig) -> Result<Option<Credential>, String> {
    let command = exec.command.as_deref().unwrap_or_default();
    let base = command.rsplit(['/', '\\']).next().unwrap_or(command);
    let base = base.strip_suffix(".exe").unwrap_or(base);
    let args: Vec<&str> = exec.args.iter().flatten().map(String::as_str).collect();
    let env: HashMap<&str, &str> = exec
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.get("name")?.as_str(), e.get("value")?.as_str())))
        .collect();
    match base {
        // `up organization token [org]`, as `up ctx ... -f -` writes it.
        "up" if matches!(args.as_slice(), ["organization" | "org", "token", ..]) => {
            let organization = env
                .get("ORGANIZATION")
                .copied()
                .or(args.get(2).copied())
                .filter(|o| !o.is_empty() && !o.starts_with('-'))
                .ok_or(
                    "the kubeconfig's `up organization token` plugin names no organization \
                     (ORGANIZATION or its third argument)",
                )?;
            Ok(Some(Credential::Upbound {
                organization: organization.to_owned(),
            }))
        }
        "aws" if args.contains(&"eks") && args.contains(&"get-token") => {
            if flag(&args, &["--role-arn"]).is_some() {
                return Err(
                    "the kubeconfig's `aws eks get-token` assumes a role (--role-arn), which is not \
                     done natively: give the controller's own identity access instead"
                        .into(),
                );
            }
            let cluster = flag(&args, &["--cluster-name", "--cluster-id"])
                .ok_or("the kubeconfig's `aws eks get-token` names no --cluster-name")?;
            Ok(Some(Credential::Eks {
                cluster: cluster.to_owned(),
                region: flag(&args, &["--region"])
                    .or(env.get("AWS_REGION").copied())
                    .or(env.get("AWS_DEFAULT_REGION").copied())
                    .map(str::to_owned),
                profile: env.get("AWS_PROFILE").map(|p| (*p).to_owned()),
            }))
        }
        "aws-iam-authenticator" if args.first() == Some(&"token") => {
            if flag(&args, &["-r", "--role"]).is_some() {
                return Err(
                    "the kubeconfig's `aws-iam-authenticator token` assumes a role (-r), which is \
                     not done natively: give the controller's own identity access instead"
                        .into(),
                );
            }
            let cluster = flag(&args, &["-i", "--cluster-id"])
                .ok_or("the kubeconfig's `aws-iam-authenticator token` names no -i cluster")?;
            Ok(Some(Credential::Eks {
                cluster: cluster.to_owned(),
                region: flag(&args, &["--region"])
                    .or(env.get("AWS_REGION").copied())
                    .map(str::to_owned),
                profile: env.get("AWS_PROFILE").map(|p| (*p).to_owned()),
            }))
        }
        "gke-gcloud-auth-plugin" => {
            if args
                .iter()
                .any(|a| a.starts_with("--impersonate_service_account"))
            {
                return Err(
                    "the kubeconfig's gke-gcloud-auth-plugin impersonates a service account, which \
                     is not done natively: give the controller's own identity access instead"
                        .into(),
                );
            }
            Ok(Some(Credential::Gke))
        }
        _ => Ok(None),
    }
}

/// The value of the first of `names` in `args` (`--x v` or `--x=v`).
fn flag<'a>(args: &[&'a str], names: &[&str]) -> Option<&'a str> {
    for (i, a) in args.iter().enumerate() {
        for n in names {
            if a == n {
                return args.get(i + 1).copied().filter(|v| !v.starts_with('-'));
            }
            if let Some(v) = a.strip_prefix(n).and_then(|r| r.strip_prefix('=')) {
                return Some(v);
            }
        }
    }
    None
}

/// kube's messages for structural problems name contexts and clusters,
/// never credentials; anything else is replaced wholesale.
fn describe(e: &kube::config::KubeconfigError) -> String {
    use kube::config::KubeconfigError as K;
    match e {
        K::CurrentContextNotSet => "the kubeconfig has no current-context".into(),
        K::KindMismatch | K::ApiVersionMismatch => {
            "the kubeconfig's kind or apiVersion is not a kubeconfig's".into()
        }
        K::LoadContext(_) | K::LoadClusterOfContext(_) | K::FindPath => {
            "the kubeconfig's current context does not resolve to a cluster and a user".into()
        }
        K::ParseClusterUrl(_) | K::MissingClusterUrl => {
            "the kubeconfig's cluster has no valid server URL".into()
        }
        K::LoadClientCertificate(_) | K::LoadClientKey(_) | K::ParseCertificates(_) => {
            "the kubeconfig's client certificate or key cannot be read".into()
        }
        _ => "the kubeconfig cannot be used (an invalid or unreadable field)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "sha256~TOPSECRETTOKEN";

    fn kubeconfig(current_context: &str) -> String {
        with_user(
            current_context,
            &format!("token: {TOKEN}"),
            "server: https://127.0.0.1:6443",
        )
    }

    fn with_user(current_context: &str, user: &str, cluster: &str) -> String {
        let user = user.replace('\n', "\n    ");
        let cluster = cluster.replace('\n', "\n    ");
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: {current_context}\nclusters:\n- name: c\n  cluster:\n    {cluster}\ncontexts:\n- name: ctx\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    {user}\n"
        )
    }

    async fn check(text: &str) -> Result<Parsed, KubeconfigError> {
        parse(
            &SecretBytes::new(text.as_bytes().to_vec()),
            "env:KC",
            Some(Permissions::default()),
        )
        .await
    }

    #[tokio::test]
    async fn a_good_kubeconfig_parses() {
        let parsed = check(&kubeconfig("ctx")).await.unwrap();
        assert_eq!(
            parsed.config.cluster_url.to_string(),
            "https://127.0.0.1:6443/"
        );
        assert_eq!(parsed.credential, Credential::AsWritten);
    }

    #[tokio::test]
    async fn bad_payloads_get_clear_errors_without_content() {
        let cases = [
            (String::new(), "is empty"),
            ("\u{0}\u{ff}".to_owned(), "not valid YAML"),
            (format!("{TOKEN}: [unclosed"), "not valid YAML"),
            (format!("just a string {TOKEN}"), "expected a mapping"),
            (format!("token: {TOKEN}"), "no clusters and no contexts"),
            (kubeconfig(""), "no current-context"),
            (kubeconfig("missing"), "is not among its contexts"),
            (
                format!("clusters: {TOKEN}\ncontexts: []\ncurrent-context: x"),
                "wrong type",
            ),
        ];
        for (text, needle) in cases {
            let e = check(&text).await.err().unwrap();
            let shown = format!("{e} {e:?}");
            assert!(shown.contains(needle), "{text:?}: {shown}");
            assert!(shown.starts_with("env:KC: "), "{shown}");
            assert!(!shown.contains("TOPSECRET"), "leaks: {shown}");
        }
        let not_utf8 = parse(&SecretBytes::new(vec![0xff, 0xfe]), "env:KC", None)
            .await
            .err()
            .unwrap();
        assert!(not_utf8.to_string().contains("not UTF-8"));
    }

    #[tokio::test]
    async fn what_would_run_or_read_something_is_refused_by_default() {
        let exec = "exec:\n  apiVersion: client.authentication.k8s.io/v1\n  command: /bin/sh\n  args: [-c, 'cat /etc/shadow']";
        let provider = "auth-provider:\n  name: oidc\n  config: {client-id: x}";
        let server = "server: https://127.0.0.1:6443";
        let cases = [
            (
                with_user("ctx", exec, server),
                "users[\"u\"].user.exec",
                "--insecure-kubeconfig-exec",
            ),
            (
                with_user("ctx", provider, server),
                "user.auth-provider",
                "--insecure-kubeconfig-auth-provider",
            ),
            (
                with_user("ctx", "tokenFile: /var/run/secrets/token", server),
                "user.tokenFile",
                "--insecure-kubeconfig-files",
            ),
            (
                with_user(
                    "ctx",
                    "client-certificate: /etc/c.pem\nclient-key: /etc/k.pem",
                    server,
                ),
                "user.client-certificate",
                "--insecure-kubeconfig-files",
            ),
            (
                with_user(
                    "ctx",
                    &format!("token: {TOKEN}"),
                    "server: https://x:1\ncertificate-authority: /etc/ca.pem",
                ),
                "clusters[\"c\"].cluster.certificate-authority",
                "--insecure-kubeconfig-files",
            ),
            (
                with_user(
                    "ctx",
                    &format!("token: {TOKEN}"),
                    "server: https://x:1\nproxy-url: http://evil:3128",
                ),
                "cluster.proxy-url",
                "--insecure-kubeconfig-proxy",
            ),
            (
                with_user(
                    "ctx",
                    &format!("token: {TOKEN}"),
                    "server: https://x:1\ninsecure-skip-tls-verify: true",
                ),
                "cluster.insecure-skip-tls-verify",
                "--insecure-skip-tls-verify",
            ),
        ];
        for (text, field, flag) in &cases {
            let e = check(text).await.err().unwrap().to_string();
            assert!(e.contains(field) && e.contains(flag), "{field}: {e}");
            assert!(
                e.contains("refused") && !e.contains("TOPSECRET") && !e.contains("shadow"),
                "{e}"
            );
        }
        // Each opt-in lets exactly its field through.
        let all = Permissions {
            exec: true,
            auth_provider: true,
            files: true,
            proxy: true,
            skip_tls_verify: true,
        };
        let text = &cases[5].0;
        let ok = parse(
            &SecretBytes::new(text.as_bytes().to_vec()),
            "env:KC",
            Some(all),
        )
        .await;
        assert!(ok.is_ok());
        let only_proxy = Permissions {
            proxy: true,
            ..Permissions::default()
        };
        assert!(
            parse(
                &SecretBytes::new(text.as_bytes().to_vec()),
                "env:KC",
                Some(only_proxy)
            )
            .await
            .is_ok()
        );
        let text = &cases[6].0;
        assert!(
            parse(
                &SecretBytes::new(text.as_bytes().to_vec()),
                "env:KC",
                Some(only_proxy)
            )
            .await
            .is_err()
        );
        // The -data forms are data.
        let data = with_user(
            "ctx",
            "client-certificate-data: Zm9v\nclient-key-data: YmFy",
            "server: https://x:1\ncertificate-authority-data: Zm9v",
        );
        let e = check(&data)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.contains("refused"), "{e}");
    }

    fn exec_user(command: &str, args: &[&str], env: &[(&str, &str)]) -> String {
        let args: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
        let env: Vec<String> = env
            .iter()
            .map(|(k, v)| format!("{{name: {k}, value: \"{v}\"}}"))
            .collect();
        format!(
            "exec:\n  apiVersion: client.authentication.k8s.io/v1\n  command: {command}\n  args: [{}]\n  env: [{}]\n  interactiveMode: IfAvailable\n  provideClusterInfo: false",
            args.join(", "),
            env.join(", ")
        )
    }

    #[tokio::test]
    async fn the_plugins_real_control_planes_hand_out_are_done_natively() {
        let server = "server: https://x:1";
        let cases = [
            (
                exec_user(
                    "up",
                    &["organization", "token"],
                    &[("ORGANIZATION", "acme"), ("UP_PROFILE", "default")],
                ),
                Credential::Upbound {
                    organization: "acme".into(),
                },
            ),
            (
                exec_user("/usr/local/bin/up", &["org", "token", "argorg"], &[]),
                Credential::Upbound {
                    organization: "argorg".into(),
                },
            ),
            (
                exec_user(
                    "aws",
                    &[
                        "--region",
                        "eu-west-1",
                        "eks",
                        "get-token",
                        "--cluster-name",
                        "prod",
                        "--output",
                        "json",
                    ],
                    &[("AWS_PROFILE", "ops")],
                ),
                Credential::Eks {
                    cluster: "prod".into(),
                    region: Some("eu-west-1".into()),
                    profile: Some("ops".into()),
                },
            ),
            (
                exec_user("aws-iam-authenticator", &["token", "-i", "dev"], &[]),
                Credential::Eks {
                    cluster: "dev".into(),
                    region: None,
                    profile: None,
                },
            ),
            (
                exec_user("gke-gcloud-auth-plugin", &[], &[]),
                Credential::Gke,
            ),
        ];
        for (user, want) in cases {
            let parsed = check(&with_user("ctx", &user, server)).await.unwrap();
            assert_eq!(parsed.credential, want);
            // Nothing left to run.
            assert!(parsed.config.auth_info.exec.is_none());
        }
        for (user, needle) in [
            (
                exec_user("up", &["organization", "token"], &[]),
                "names no organization",
            ),
            (
                exec_user("aws", &["eks", "get-token"], &[]),
                "names no --cluster-name",
            ),
            (
                exec_user(
                    "aws",
                    &[
                        "eks",
                        "get-token",
                        "--cluster-name",
                        "c",
                        "--role-arn",
                        "arn:x",
                    ],
                    &[],
                ),
                "assumes a role",
            ),
            (
                exec_user(
                    "gke-gcloud-auth-plugin",
                    &["--impersonate_service_account=sa@x"],
                    &[],
                ),
                "impersonates",
            ),
        ] {
            let e = check(&with_user("ctx", &user, server))
                .await
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(needle), "{e}");
        }
        // Any other plugin is an exec to refuse.
        let e = check(&with_user(
            "ctx",
            &exec_user("kubelogin", &["get-token"], &[]),
            server,
        ))
        .await
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("--insecure-kubeconfig-exec"), "{e}");
    }
}
