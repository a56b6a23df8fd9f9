//! Google Secret Manager:
//! `gcp-secretmanager://projects/<p>/secrets/<s>/versions/<v|latest>[?jsonKey=]`.
//!
//! Credentials are Application Default Credentials (on Cloud Run, the
//! metadata server). The payload's CRC32C is checked when the service sends
//! one: a mismatch is refused rather than handed to kube as a kubeconfig.
//! Needs `roles/secretmanager.secretAccessor` on the one secret.
//!
//! `ROBOT_CONTROLLER_GCP_SECRETMANAGER_ENDPOINT` overrides the endpoint
//! (Private Service Connect, tests). Only a plain-http loopback endpoint is
//! called without credentials; any other http endpoint is refused, so a
//! real token never travels in clear.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicyExt};
use google_cloud_secretmanager_v1::client::SecretManagerService;
use tokio::sync::OnceCell;

use super::json_key::JsonKeySource;
use super::{FetchFuture, Fetched, SecretSource, SourceError, error_chain, query};

pub(super) const SCHEME: &str = "gcp-secretmanager://";

/// Overrides the Secret Manager endpoint.
pub const ENDPOINT_ENV: &str = "ROBOT_CONTROLLER_GCP_SECRETMANAGER_ENDPOINT";

const EXPECTED: &str = "expected gcp-secretmanager://projects/<project>/secrets/<secret>/versions/<number or latest>[?jsonKey=]";

/// Where requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Endpoint {
    /// Google's, with Application Default Credentials.
    Google,
    /// An override; `anonymous` for a plain-http loopback emulator.
    Override { url: String, anonymous: bool },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Google => f.write_str("https://secretmanager.googleapis.com"),
            Endpoint::Override { url, .. } => f.write_str(url),
        }
    }
}

pub struct GcpSecretManagerSource {
    uri: String,
    /// `projects/<p>/secrets/<s>/versions/<v>`.
    name: String,
    endpoint: Endpoint,
    client: OnceCell<SecretManagerService>,
}

impl fmt::Debug for GcpSecretManagerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpSecretManagerSource")
            .field("uri", &self.uri)
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// Parses the URI (and the endpoint override); `?jsonKey=` wraps the
/// source in a [`JsonKeySource`].
pub(super) fn parse(uri: &str) -> Result<Box<dyn SecretSource>, SourceError> {
    let endpoint =
        endpoint_from(std::env::var(ENDPOINT_ENV).ok().as_deref()).map_err(|detail| {
            SourceError::Invalid {
                source_uri: uri.to_owned(),
                detail,
            }
        })?;
    parse_with(uri, endpoint)
}

fn parse_with(uri: &str, endpoint: Endpoint) -> Result<Box<dyn SecretSource>, SourceError> {
    let rest = &uri[SCHEME.len()..];
    let (name, query) = query::split(rest);
    let params = query::parse(uri, query, &["jsonKey"])?;
    check_name(name).map_err(|detail| SourceError::BadUri {
        uri: uri.to_owned(),
        detail,
    })?;
    let source = GcpSecretManagerSource {
        uri: uri.to_owned(),
        name: name.to_owned(),
        endpoint,
        client: OnceCell::new(),
    };
    Ok(match params.get("jsonKey") {
        Some(key) => Box::new(JsonKeySource::new(Box::new(source), key)),
        None => Box::new(source),
    })
}

/// `projects/<p>/secrets/<s>/versions/<v>`, each part as Google allows it.
fn check_name(name: &str) -> Result<(), String> {
    let parts: Vec<&str> = name.split('/').collect();
    let ["projects", project, "secrets", secret, "versions", version] = parts.as_slice() else {
        return Err(format!("malformed resource name; {EXPECTED}"));
    };
    // Project ids (6-30 of a-z0-9-), project numbers, and domain-scoped
    // ids (example.com:project).
    if project.is_empty()
        || project.len() > 100
        || !project
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.:".contains(c))
    {
        return Err(format!(
            "{project:?} is not a project id or number; {EXPECTED}"
        ));
    }
    if secret.is_empty()
        || secret.len() > 255
        || !secret
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "{secret:?} is not a secret id (letters, digits, _ and -); {EXPECTED}"
        ));
    }
    let numbered = !version.is_empty()
        && version.chars().all(|c| c.is_ascii_digit())
        && !version.starts_with('0');
    if *version != "latest" && !numbered {
        return Err(format!(
            "{version:?} is not a version (a number from 1, or latest); {EXPECTED}"
        ));
    }
    Ok(())
}

/// The endpoint the override names, refusing plain http off loopback.
fn endpoint_from(value: Option<&str>) -> Result<Endpoint, String> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(Endpoint::Google);
    };
    let bad = |why: &str| format!("{ENDPOINT_ENV}={value:?}: {why}");
    let url = url::Url::parse(value).map_err(|e| bad(&e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err(bad("must be a plain scheme://host[:port] URL"));
    }
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => return Err(bad("has no host")),
    };
    let url_text = value.trim_end_matches('/').to_owned();
    match url.scheme() {
        "https" => Ok(Endpoint::Override {
            url: url_text,
            anonymous: false,
        }),
        "http" if loopback => Ok(Endpoint::Override {
            url: url_text,
            anonymous: true,
        }),
        "http" => Err(bad(
            "plain http is allowed on loopback only (an emulator); use https so credentials are not sent in clear",
        )),
        other => Err(bad(&format!("scheme {other:?} is not http or https"))),
    }
}

impl GcpSecretManagerSource {
    async fn connect(&self) -> Result<SecretManagerService, SourceError> {
        let mut builder = SecretManagerService::builder()
            // The default retries for a minute; a start-up error should
            // come sooner, and the refresh loop retries anyway.
            .with_retry_policy(
                Aip194Strict
                    .with_attempt_limit(3)
                    .with_time_limit(Duration::from_secs(20)),
            )
            .with_attempt_timeout(Duration::from_secs(10));
        if let Endpoint::Override { url, anonymous } = &self.endpoint {
            builder = builder.with_endpoint(url);
            if *anonymous {
                builder = builder.with_credentials(
                    google_cloud_auth::credentials::anonymous::Builder::new().build(),
                );
            }
        }
        builder.build().await.map_err(|e| SourceError::Unavailable {
            source_uri: self.uri.clone(),
            // Only the top-level message: a cause could quote a malformed
            // credentials file.
            detail: format!(
                "cannot set up the Secret Manager client at {} ({e}); check Application Default Credentials",
                self.endpoint
            ),
        })
    }

    /// Says what went wrong without the secret: status messages never
    /// carry the value, and undecodable answers (which might) are not quoted.
    fn describe(&self, e: &google_cloud_gax::error::Error) -> SourceError {
        let source_uri = self.uri.clone();
        let at = format!("at {}", self.endpoint);
        if let Some(status) = e.status() {
            let said = format!(
                "Secret Manager {at} answered {}: {}",
                status.code.name(),
                status.message
            );
            return match status.code {
                Code::NotFound => SourceError::NotFound {
                    source_uri,
                    place: Some(at),
                },
                Code::PermissionDenied | Code::Unauthenticated => SourceError::PermissionDenied {
                    source_uri,
                    detail: format!(
                        "{said} (needs roles/secretmanager.secretAccessor on this secret)"
                    ),
                },
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Internal
                | Code::Aborted
                | Code::Unknown
                | Code::Cancelled => SourceError::Unavailable {
                    source_uri,
                    detail: said,
                },
                // FAILED_PRECONDITION: a disabled or destroyed version.
                _ => SourceError::Invalid {
                    source_uri,
                    detail: said,
                },
            };
        }
        let detail = if e.is_authentication() {
            format!("cannot get Google credentials for Secret Manager {at}: {e}")
        } else if e.is_deserialization() {
            format!("the answer of Secret Manager {at} is not an AccessSecretVersionResponse")
        } else if e.is_timeout() {
            format!("Secret Manager {at} did not answer in time")
        } else if let Some(code) = e.http_status_code() {
            format!("Secret Manager {at} answered HTTP {code}")
        } else {
            format!("cannot reach Secret Manager {at}: {}", error_chain(e))
        };
        SourceError::Unavailable { source_uri, detail }
    }
}

/// Checks the payload against the checksum the service computed.
fn verify_crc32c(data: &[u8], expected: Option<i64>, uri: &str) -> Result<(), SourceError> {
    match expected {
        Some(expected) => {
            let actual = i64::from(crc32c::crc32c(data));
            if actual != expected {
                return Err(SourceError::Invalid {
                    source_uri: uri.to_owned(),
                    detail: format!(
                        "the payload's CRC32C is {actual} but Secret Manager sent {expected}: corrupted in transit or at rest; refusing it"
                    ),
                });
            }
            Ok(())
        }
        None => {
            tracing::debug!(
                source = uri,
                "no payload.dataCrc32c in the answer (emulators omit it); accepting the payload unchecked"
            );
            Ok(())
        }
    }
}

impl SecretSource for GcpSecretManagerSource {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let client = self.client.get_or_try_init(|| self.connect()).await?;
            let response = client
                .access_secret_version()
                .set_name(&self.name)
                .send()
                .await
                .map_err(|e| self.describe(&e))?;
            let version = response
                .name
                .rsplit_once("/versions/")
                .map(|(_, v)| v.to_owned());
            let Some(payload) = response.payload else {
                return Err(SourceError::Empty {
                    source_uri: self.uri.clone(),
                });
            };
            verify_crc32c(&payload.data, payload.data_crc32c, &self.uri)?;
            Fetched::non_empty(payload.data.to_vec(), version, &self.uri)
        })
    }
}

#[cfg(test)]
mod tests {
    use google_cloud_gax::error::rpc::Status;

    use super::*;

    const URI: &str = "gcp-secretmanager://projects/p1/secrets/kc/versions/latest";

    #[test]
    fn uris_parse_strictly() {
        for uri in [
            URI,
            "gcp-secretmanager://projects/123456789/secrets/robot_kc-1/versions/7",
            "gcp-secretmanager://projects/example.com:proj/secrets/kc/versions/latest?jsonKey=k",
        ] {
            let s = parse_with(uri, Endpoint::Google).unwrap_or_else(|e| panic!("{uri}: {e}"));
            assert_eq!(s.uri(), uri);
        }
        for (uri, needle) in [
            (
                "gcp-secretmanager://",
                "malformed resource name; expected gcp-secretmanager://projects/<project>",
            ),
            (
                "gcp-secretmanager://projects/p1/secrets/kc",
                "malformed resource name",
            ),
            (
                "gcp-secretmanager://p1/kc/latest",
                "malformed resource name",
            ),
            (
                "gcp-secretmanager://projects/p1/secrets/kc/versions/latest/",
                "malformed resource name",
            ),
            (
                "gcp-secretmanager://projects/P 1/secrets/kc/versions/1",
                "not a project id",
            ),
            (
                "gcp-secretmanager://projects/p1/secrets/k.c/versions/1",
                "not a secret id",
            ),
            (
                "gcp-secretmanager://projects/p1/secrets/kc/versions/newest",
                "not a version",
            ),
            (
                "gcp-secretmanager://projects/p1/secrets/kc/versions/0",
                "not a version",
            ),
            (
                "gcp-secretmanager://projects/p1/secrets/kc/versions/1?region=x",
                "unknown parameter \"region\"; expected jsonKey",
            ),
        ] {
            let e = parse_with(uri, Endpoint::Google).unwrap_err().to_string();
            assert!(e.contains(needle), "{uri}: {e}");
            assert!(e.contains(&format!("{uri:?}")), "names the source: {e}");
        }
    }

    #[test]
    fn plain_http_endpoints_are_for_loopback_only() {
        assert_eq!(endpoint_from(None).unwrap(), Endpoint::Google);
        assert_eq!(endpoint_from(Some(" ")).unwrap(), Endpoint::Google);
        for (value, anonymous) in [
            ("http://127.0.0.1:8085", true),
            ("http://[::1]:8085/", true),
            ("http://localhost:8085", true),
            ("https://secretmanager.p.googleapis.com", false),
        ] {
            match endpoint_from(Some(value)).unwrap() {
                Endpoint::Override { anonymous: a, .. } => assert_eq!(a, anonymous, "{value}"),
                Endpoint::Google => panic!("{value}"),
            }
        }
        for (value, needle) in [
            ("http://10.0.0.5:8085", "loopback only"),
            ("http://secretmanager.example.com", "loopback only"),
            ("ftp://127.0.0.1", "not http or https"),
            ("https://user:pw@host", "plain scheme://host"),
            ("not a url", "ROBOT_CONTROLLER_GCP_SECRETMANAGER_ENDPOINT"),
        ] {
            let e = endpoint_from(Some(value)).unwrap_err();
            assert!(e.contains(needle), "{value}: {e}");
        }
    }

    #[test]
    fn a_checksum_mismatch_is_refused() {
        let data = b"apiVersion: v1";
        let good = i64::from(crc32c::crc32c(data));
        verify_crc32c(data, Some(good), URI).unwrap();
        verify_crc32c(data, None, URI).unwrap();
        let e = verify_crc32c(data, Some(good + 1), URI)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(URI) && e.contains("CRC32C"), "{e}");
        // The checksum the service documents for a known payload (RFC 3720's
        // check value for "123456789").
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    fn source() -> GcpSecretManagerSource {
        GcpSecretManagerSource {
            uri: URI.into(),
            name: "projects/p1/secrets/kc/versions/latest".into(),
            endpoint: Endpoint::Google,
            client: OnceCell::new(),
        }
    }

    /// drongo has no IAM, so the refusals are mapped here, from the
    /// statuses Secret Manager documents.
    #[test]
    fn statuses_map_to_what_a_user_can_act_on() {
        let src = source();
        let cases = [
            (
                Code::NotFound,
                "Secret [projects/p1/secrets/kc] not found or has no versions.",
                "the secret does not exist at https://secretmanager.googleapis.com",
                false,
            ),
            (
                Code::PermissionDenied,
                "Permission 'secretmanager.versions.access' denied",
                "permission denied: Secret Manager at https://secretmanager.googleapis.com answered PERMISSION_DENIED: Permission 'secretmanager.versions.access' denied (needs roles/secretmanager.secretAccessor",
                false,
            ),
            (
                Code::Unauthenticated,
                "Request had invalid authentication credentials.",
                "permission denied",
                false,
            ),
            (
                Code::FailedPrecondition,
                "is in DISABLED state",
                "FAILED_PRECONDITION: ",
                false,
            ),
            (
                Code::Unavailable,
                "try again",
                "cannot read the secret",
                true,
            ),
        ];
        for (code, message, needle, transient) in cases {
            let e = google_cloud_gax::error::Error::service(
                Status::default().set_code(code).set_message(message),
            );
            let mapped = src.describe(&e);
            let shown = mapped.to_string();
            assert!(shown.contains(needle), "{code:?}: {shown}");
            assert!(shown.starts_with(URI), "{shown}");
            assert_eq!(mapped.is_transient(), transient, "{shown}");
        }
        let e = google_cloud_gax::error::Error::deser("invalid type: string \"tok-5ecret\"");
        let shown = src.describe(&e).to_string();
        assert!(!shown.contains("tok-5ecret"), "{shown}");
        assert!(
            shown.contains("not an AccessSecretVersionResponse"),
            "{shown}"
        );
    }

    #[test]
    fn debug_shows_where_not_what() {
        let shown = format!("{:?}", source());
        assert!(
            shown.contains("projects/p1/secrets/kc/versions/latest"),
            "{shown}"
        );
    }
}
