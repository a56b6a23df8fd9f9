//! Turns kubeconfig bytes from a source into a client configuration, with
//! errors that say what is wrong without ever quoting the content (a YAML
//! parser quoting "the offending line" would quote a token).

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::source::SecretBytes;

#[derive(Debug, thiserror::Error)]
#[error("{source_uri}: {problem}")]
pub struct KubeconfigError {
    pub source_uri: String,
    pub problem: String,
}

/// Parses and checks a kubeconfig: YAML, a current context that resolves to
/// a cluster with a server URL, and a user.
pub async fn parse(bytes: &SecretBytes, source_uri: &str) -> Result<kube::Config, KubeconfigError> {
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
    let kubeconfig = Kubeconfig::from_yaml(text)
        .map_err(|_| fail("the payload is not a valid kubeconfig (a field has the wrong type)"))?;
    if kubeconfig
        .current_context
        .as_deref()
        .is_none_or(str::is_empty)
    {
        return Err(fail("the kubeconfig has no current-context"));
    }
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| fail(&describe(&e)))
}

/// kube's messages for structural problems name contexts and clusters,
/// never credentials; parse errors are replaced wholesale.
fn describe(e: &kube::config::KubeconfigError) -> String {
    use kube::config::KubeconfigError as K;
    match e {
        K::Parse(_) => "the payload is not a valid kubeconfig".into(),
        K::LoadClientCertificate(_) | K::LoadClientKey(_) | K::ParseCertificates(_) => {
            "the kubeconfig's client certificate or key cannot be read".into()
        }
        other => format!("the kubeconfig cannot be used: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "sha256~TOPSECRETTOKEN";

    fn kubeconfig(current_context: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: {current_context}\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\ncontexts:\n- name: ctx\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    token: {TOKEN}\n"
        )
    }

    async fn check(text: &str) -> Result<kube::Config, KubeconfigError> {
        parse(&SecretBytes::new(text.as_bytes().to_vec()), "env:KC").await
    }

    #[tokio::test]
    async fn a_good_kubeconfig_parses() {
        let config = check(&kubeconfig("ctx")).await.unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");
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
            (kubeconfig("missing"), "cannot be used"),
            (
                format!("clusters: {TOKEN}\ncontexts: []\ncurrent-context: x"),
                "wrong type",
            ),
        ];
        for (text, needle) in cases {
            let e = check(&text).await.unwrap_err();
            let shown = format!("{e} {e:?}");
            assert!(shown.contains(needle), "{text:?}: {shown}");
            assert!(shown.starts_with("env:KC: "), "{shown}");
            assert!(!shown.contains("TOPSECRET"), "leaks: {shown}");
        }
        let not_utf8 = parse(&SecretBytes::new(vec![0xff, 0xfe]), "env:KC")
            .await
            .unwrap_err();
        assert!(not_utf8.to_string().contains("not UTF-8"));
    }
}
