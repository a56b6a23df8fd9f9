//! Kubeconfigs shaped like the one `up ctp kubeconfig get` writes: one
//! cluster (server URL + CA data), one user with a bearer token, one context.

use std::path::Path;

use base64::Engine;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Serialize;

use crate::Error;

#[derive(Serialize)]
struct File<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'a str,
    clusters: [Named<'a, Cluster<'a>>; 1],
    users: [Named<'a, User<'a>>; 1],
    contexts: [Named<'a, Context<'a>>; 1],
    #[serde(rename = "current-context")]
    current_context: &'a str,
    preferences: Empty,
}

#[derive(Serialize)]
struct Named<'a, T> {
    name: &'a str,
    #[serde(flatten)]
    value: T,
}

#[derive(Serialize)]
struct Cluster<'a> {
    cluster: ClusterFields<'a>,
}

#[derive(Serialize)]
struct ClusterFields<'a> {
    server: &'a str,
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: String,
}

#[derive(Serialize)]
struct User<'a> {
    user: UserFields<'a>,
}

#[derive(Serialize)]
struct UserFields<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    #[serde(
        rename = "client-certificate-data",
        skip_serializing_if = "Option::is_none"
    )]
    client_certificate_data: Option<String>,
    #[serde(rename = "client-key-data", skip_serializing_if = "Option::is_none")]
    client_key_data: Option<String>,
}

/// How a kubeconfig's user authenticates.
pub enum UserCredential<'a> {
    Token(&'a str),
    /// A client certificate and key, PEM (written as the `-data` forms).
    Certificate {
        cert_pem: &'a str,
        key_pem: &'a str,
    },
}

#[derive(Serialize)]
struct Context<'a> {
    context: ContextFields<'a>,
}

#[derive(Serialize)]
struct ContextFields<'a> {
    cluster: &'a str,
    user: &'a str,
}

#[derive(Serialize)]
struct Empty {}

/// The kubeconfig YAML for `user` with `token` on `server`.
pub fn render(server: &str, ca_pem: &str, user: &str, token: &str) -> String {
    render_with_user(server, ca_pem, user, UserCredential::Token(token))
}

/// The kubeconfig YAML for `user` authenticating with `credential`.
pub fn render_with_user(
    server: &str,
    ca_pem: &str,
    user: &str,
    credential: UserCredential<'_>,
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let fields = match credential {
        UserCredential::Token(token) => UserFields {
            token: Some(token),
            client_certificate_data: None,
            client_key_data: None,
        },
        UserCredential::Certificate { cert_pem, key_pem } => UserFields {
            token: None,
            client_certificate_data: Some(b64(cert_pem)),
            client_key_data: Some(b64(key_pem)),
        },
    };
    let cluster = "testenv";
    let context = format!("{user}@{cluster}");
    let file = File {
        api_version: "v1",
        kind: "Config",
        clusters: [Named {
            name: cluster,
            value: Cluster {
                cluster: ClusterFields {
                    server,
                    certificate_authority_data: base64::engine::general_purpose::STANDARD
                        .encode(ca_pem),
                },
            },
        }],
        users: [Named {
            name: user,
            value: User { user: fields },
        }],
        contexts: [Named {
            name: &context,
            value: Context {
                context: ContextFields { cluster, user },
            },
        }],
        current_context: &context,
        preferences: Empty {},
    };
    // Plain strings and maps: serialization cannot fail.
    serde_saphyr::to_string(&file).unwrap_or_default()
}

/// A client for the kubeconfig `yaml`.
pub async fn client_from_yaml(yaml: &str, what: &str) -> Result<kube::Client, Error> {
    crate::install_crypto_provider();
    let kubeconfig = Kubeconfig::from_yaml(yaml).map_err(|e| Error::Kube {
        what: format!("{what}: reading the kubeconfig"),
        source: kube::Error::InferKubeconfig(e),
    })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| {
            Error::kube(
                format!("{what}: loading the kubeconfig"),
                kube::Error::InferKubeconfig(e),
            )
        })?;
    kube::Client::try_from(config).map_err(|e| Error::kube(format!("{what}: building a client"), e))
}

/// A client for the kubeconfig file at `path`.
pub async fn client_from_file(path: &Path, what: &str) -> Result<kube::Client, Error> {
    let yaml = std::fs::read_to_string(path).map_err(|e| Error::path(path, e))?;
    client_from_yaml(&yaml, what).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_the_managed_control_plane_shape() {
        let yaml = render("https://127.0.0.1:6443", "PEM", "robot-controller", "tok");
        let parsed = Kubeconfig::from_yaml(&yaml).expect("kube reads it");
        let cluster = parsed.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("UEVN"));
        assert_eq!(parsed.auth_infos[0].name, "robot-controller");
        assert_eq!(
            parsed.current_context.as_deref(),
            Some("robot-controller@testenv")
        );
        assert!(yaml.contains("token: tok"), "{yaml}");
    }
}
