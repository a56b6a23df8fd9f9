//! AWS Secrets Manager:
//! `aws-secretsmanager://<secret-id or ARN>?region=&versionStage=&versionId=&jsonKey=`.
//!
//! Credentials and region come from aws-config's default chain (env, profile,
//! ECS task role, Lambda role, instance role); `?region=` (or the ARN's
//! region) wins over the chain's. The endpoint follows the standard
//! `AWS_ENDPOINT_URL_SECRETS_MANAGER` / `AWS_ENDPOINT_URL` overrides.
//! Needs `secretsmanager:GetSecretValue` on the one secret (and
//! `kms:Decrypt` on its key when that is a customer-managed key).

use std::fmt;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use tokio::sync::OnceCell;

use super::json_key::JsonKeySource;
use super::{FetchFuture, Fetched, SecretSource, SourceError, error_chain, query};

pub(super) const SCHEME: &str = "aws-secretsmanager://";

/// What AWS error messages may add to ours: enough to name the missing
/// permission, not enough to flood a log line.
const MAX_AWS_MESSAGE: usize = 300;

/// Which version to read. Always explicit: a get without a stage can
/// return the previous value for a while after a stage moves.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Version {
    Stage(String),
    Id(String),
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Stage(s) => write!(f, "versionStage {s}"),
            Version::Id(id) => write!(f, "versionId {id}"),
        }
    }
}

pub struct AwsSecretsManagerSource {
    uri: String,
    secret_id: String,
    /// From `?region=` or the ARN; else the default chain decides.
    region: Option<String>,
    version: Version,
    connection: OnceCell<Connection>,
}

/// A client, built at the first fetch (aws-config's chain is async).
struct Connection {
    client: aws_sdk_secretsmanager::Client,
    region: String,
    endpoint: String,
}

impl fmt::Debug for AwsSecretsManagerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSecretsManagerSource")
            .field("uri", &self.uri)
            .field("secret_id", &self.secret_id)
            .field("region", &self.region)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Parses the URI; `?jsonKey=` wraps the source in a [`JsonKeySource`].
pub(super) fn parse(uri: &str) -> Result<Box<dyn SecretSource>, SourceError> {
    let bad = |detail: String| SourceError::BadUri {
        uri: uri.to_owned(),
        detail,
    };
    let rest = &uri[SCHEME.len()..];
    let (secret_id, query) = query::split(rest);
    let params = query::parse(
        uri,
        query,
        &["region", "versionStage", "versionId", "jsonKey"],
    )?;
    let arn_region = if secret_id.starts_with("arn:") {
        Some(arn_region(secret_id).map_err(bad)?)
    } else {
        check_name(secret_id).map_err(bad)?;
        None
    };
    let region = match (params.get("region"), arn_region) {
        (Some(given), Some(arn)) if *given != arn => {
            return Err(bad(format!(
                "region={given} contradicts the ARN's region {arn}; drop ?region="
            )));
        }
        (Some(given), _) => Some(given.clone()),
        (None, arn) => arn,
    };
    if let Some(region) = &region {
        check_region(region).map_err(bad)?;
    }
    let version = match (params.get("versionStage"), params.get("versionId")) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "give versionStage or versionId, not both (a versionId names one version)".into(),
            ));
        }
        (Some(stage), None) => Version::Stage(stage.clone()),
        (None, Some(id)) => {
            if !(32..=64).contains(&id.len())
                || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(bad(
                    "versionId must be a version's id (32 to 64 letters, digits or '-')".into(),
                ));
            }
            Version::Id(id.clone())
        }
        (None, None) => Version::Stage("AWSCURRENT".into()),
    };
    let source = AwsSecretsManagerSource {
        uri: uri.to_owned(),
        secret_id: secret_id.to_owned(),
        region,
        version,
        connection: OnceCell::new(),
    };
    Ok(match params.get("jsonKey") {
        Some(key) => Box::new(JsonKeySource::new(Box::new(source), key)),
        None => Box::new(source),
    })
}

/// A secret name as Secrets Manager allows it.
fn check_name(name: &str) -> Result<(), String> {
    const EXPECTED: &str = "expected aws-secretsmanager://<secret name or ARN>[?region=&versionStage=&versionId=&jsonKey=]";
    if name.is_empty() {
        return Err(format!("no secret name; {EXPECTED}"));
    }
    if name.len() > 512 {
        return Err("the secret name is longer than 512 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/_+=.@-".contains(*c)))
    {
        return Err(format!(
            "the secret name holds {c:?}; names use letters, digits and /_+=.@- ({EXPECTED})"
        ));
    }
    Ok(())
}

/// The region of `arn:<partition>:secretsmanager:<region>:<account>:secret:<name>`.
fn arn_region(arn: &str) -> Result<String, String> {
    const EXPECTED: &str =
        "expected an ARN like arn:aws:secretsmanager:<region>:<account>:secret:<name>";
    let parts: Vec<&str> = arn.splitn(7, ':').collect();
    match parts.as_slice() {
        [
            "arn",
            partition,
            "secretsmanager",
            region,
            account,
            "secret",
            name,
        ] if !partition.is_empty()
            && account.len() == 12
            && account.chars().all(|c| c.is_ascii_digit()) =>
        {
            check_region(region)?;
            check_name(name)?;
            Ok((*region).to_owned())
        }
        _ => Err(format!("malformed ARN; {EXPECTED}")),
    }
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`, …
fn check_region(region: &str) -> Result<(), String> {
    let parts: Vec<&str> = region.split('-').collect();
    let shaped = parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    if shaped {
        Ok(())
    } else {
        Err(format!(
            "{region:?} is not an AWS region name (like us-east-1)"
        ))
    }
}

impl AwsSecretsManagerSource {
    async fn connect(&self) -> Result<Connection, SourceError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        );
        if let Some(region) = &self.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        let Some(region) = sdk.region().map(ToString::to_string) else {
            return Err(SourceError::Invalid {
                source_uri: self.uri.clone(),
                detail: "no AWS region: add ?region= to the URI or set AWS_REGION".into(),
            });
        };
        // What the SDK resolves too (service variable, then the global one
        // or the profile's), for messages.
        let endpoint = std::env::var("AWS_ENDPOINT_URL_SECRETS_MANAGER")
            .ok()
            .filter(|e| !e.is_empty())
            .or_else(|| sdk.endpoint_url().map(str::to_owned))
            .unwrap_or_else(|| format!("https://secretsmanager.{region}.amazonaws.com"));
        Ok(Connection {
            client: aws_sdk_secretsmanager::Client::new(&sdk),
            region,
            endpoint,
        })
    }

    /// Says what went wrong without the secret: AWS error codes and
    /// messages never carry the value, and response-parsing errors (which
    /// might) are not quoted.
    fn describe(&self, e: &SdkError<GetSecretValueError>, conn: &Connection) -> SourceError {
        let source_uri = self.uri.clone();
        let place = format!(
            "for {} in region {} (endpoint {})",
            self.version, conn.region, conn.endpoint
        );
        match e {
            SdkError::ServiceError(service) if e.code().is_none() => {
                // An answer without an error code: a proxy in front, or an
                // emulator's auth layer answering in XML. The status says
                // enough to act on.
                let status = service.raw().status().as_u16();
                let detail = format!("AWS answered HTTP {status} without an error code {place}");
                match status {
                    401 | 403 => SourceError::PermissionDenied {
                        source_uri,
                        detail: format!(
                            "{detail} (needs secretsmanager:GetSecretValue on this secret)"
                        ),
                    },
                    404 => SourceError::NotFound {
                        source_uri,
                        place: Some(place),
                    },
                    s if s >= 500 || s == 429 => SourceError::Unavailable { source_uri, detail },
                    _ => SourceError::Invalid { source_uri, detail },
                }
            }
            SdkError::ServiceError(_) => {
                let code = e.code().unwrap_or("an unnamed error");
                let message = e
                    .message()
                    .map(|m| format!(": {}", shorten(m)))
                    .unwrap_or_default();
                match code {
                    "ResourceNotFoundException" => SourceError::NotFound {
                        source_uri,
                        place: Some(place),
                    },
                    "AccessDeniedException"
                    | "AccessDenied"
                    | "UnrecognizedClientException"
                    | "InvalidClientTokenId"
                    | "InvalidSignatureException"
                    | "SignatureDoesNotMatch"
                    | "IncompleteSignature"
                    | "MissingAuthenticationToken"
                    | "ExpiredTokenException"
                    | "ExpiredToken" => SourceError::PermissionDenied {
                        source_uri,
                        detail: format!(
                            "AWS answered {code} {place}{message} (needs secretsmanager:GetSecretValue on this secret)"
                        ),
                    },
                    "DecryptionFailure" => SourceError::PermissionDenied {
                        source_uri,
                        detail: format!(
                            "AWS answered {code} {place}{message} (needs kms:Decrypt on the secret's KMS key)"
                        ),
                    },
                    "InternalServiceError"
                    | "InternalFailure"
                    | "ServiceUnavailable"
                    | "ThrottlingException"
                    | "Throttling"
                    | "RequestLimitExceeded" => SourceError::Unavailable {
                        source_uri,
                        detail: format!("AWS answered {code} {place}{message}"),
                    },
                    _ => SourceError::Invalid {
                        source_uri,
                        detail: format!("AWS answered {code} {place}{message}"),
                    },
                }
            }
            SdkError::TimeoutError(_) => SourceError::Unavailable {
                source_uri,
                detail: format!("AWS Secrets Manager did not answer in time {place}"),
            },
            SdkError::DispatchFailure(failure) => {
                // Missing credentials surface here too, before any request.
                let chain = error_chain(e);
                let detail = if failure.is_user() || chain.contains("credentials") {
                    format!(
                        "no usable AWS credentials {place} (environment, profile, ECS/Lambda role): {chain}"
                    )
                } else {
                    format!("cannot reach AWS Secrets Manager {place}: {chain}")
                };
                SourceError::Unavailable { source_uri, detail }
            }
            SdkError::ResponseError(_) => SourceError::Unavailable {
                source_uri,
                detail: format!("the answer of AWS Secrets Manager {place} cannot be read"),
            },
            SdkError::ConstructionFailure(_) => SourceError::Invalid {
                source_uri,
                detail: format!("cannot build the request {place}: {}", error_chain(e)),
            },
            _ => SourceError::Unavailable {
                source_uri,
                detail: format!("AWS Secrets Manager failed {place}"),
            },
        }
    }
}

fn shorten(message: &str) -> String {
    let message = message.trim();
    match message.char_indices().nth(MAX_AWS_MESSAGE) {
        Some((cut, _)) => format!("{}...", &message[..cut]),
        None => message.to_owned(),
    }
}

impl SecretSource for AwsSecretsManagerSource {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let conn = self.connection.get_or_try_init(|| self.connect()).await?;
            let request = conn.client.get_secret_value().secret_id(&self.secret_id);
            let request = match &self.version {
                Version::Stage(stage) => request.version_stage(stage),
                Version::Id(id) => request.version_id(id),
            };
            let out = request.send().await.map_err(|e| self.describe(&e, conn))?;
            let version = out.version_id().map(str::to_owned);
            let bytes = match (out.secret_string, out.secret_binary) {
                (Some(text), _) => text.into_bytes(),
                (None, Some(blob)) => blob.into_inner(),
                (None, None) => Vec::new(),
            };
            Fetched::non_empty(bytes, version, &self.uri)
        })
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_secretsmanager::error::ErrorMetadata;
    use aws_smithy_runtime_api::http::StatusCode;

    use super::*;

    fn source(uri: &str) -> AwsSecretsManagerSource {
        AwsSecretsManagerSource {
            uri: uri.to_owned(),
            secret_id: "kc".into(),
            region: Some("eu-west-1".into()),
            version: Version::Stage("AWSCURRENT".into()),
            connection: OnceCell::new(),
        }
    }

    #[test]
    fn uris_parse_strictly() {
        let ok = [
            "aws-secretsmanager://robot/kubeconfig",
            "aws-secretsmanager://kc?region=eu-west-1&versionStage=AWSPREVIOUS",
            "aws-secretsmanager://kc?versionId=EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE",
            "aws-secretsmanager://arn:aws:secretsmanager:us-east-1:123456789012:secret:kc-AbCdEf",
            "aws-secretsmanager://arn:aws:secretsmanager:us-east-1:123456789012:secret:kc-AbCdEf?region=us-east-1",
            "aws-secretsmanager://kc?jsonKey=kubeconfig",
        ];
        for uri in ok {
            let s = super::super::parse(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
            assert_eq!(s.uri(), uri);
        }
        let bad = [
            ("aws-secretsmanager://", "no secret name"),
            ("aws-secretsmanager://?region=us-east-1", "no secret name"),
            ("aws-secretsmanager://a b", "holds ' '"),
            ("aws-secretsmanager://kc?region=Mars", "not an AWS region"),
            (
                "aws-secretsmanager://kc?stage=AWSCURRENT",
                "unknown parameter \"stage\"",
            ),
            (
                "aws-secretsmanager://kc?versionStage=AWSCURRENT&versionId=EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE",
                "not both",
            ),
            ("aws-secretsmanager://kc?versionId=1", "versionId must be"),
            ("aws-secretsmanager://arn:aws:s3:::bucket", "malformed ARN"),
            (
                "aws-secretsmanager://arn:aws:secretsmanager:us-east-1:123456789012:secret:kc?region=eu-west-1",
                "contradicts the ARN's region us-east-1",
            ),
        ];
        for (uri, needle) in bad {
            let e = super::super::parse(uri).unwrap_err().to_string();
            assert!(e.contains(needle), "{uri}: {e}");
            assert!(e.contains(&format!("{uri:?}")), "names the source: {e}");
        }
    }

    #[test]
    fn the_arn_gives_the_region_and_the_stage_defaults_to_awscurrent() {
        let arn = "arn:aws:secretsmanager:ap-southeast-2:123456789012:secret:a/b-AbCdEf";
        assert_eq!(arn_region(arn).unwrap(), "ap-southeast-2");
        for region in ["us-east-1", "us-gov-west-1", "cn-north-1", "eu-central-2"] {
            check_region(region).unwrap();
        }
        for region in ["us-east", "US-EAST-1", "us--1", "east-1"] {
            assert!(check_region(region).is_err(), "{region}");
        }
    }

    fn service_error(code: &str, message: &str) -> SdkError<GetSecretValueError> {
        let meta = ErrorMetadata::builder().code(code).message(message).build();
        answer(400, meta)
    }

    fn answer(status: u16, meta: ErrorMetadata) -> SdkError<GetSecretValueError> {
        let raw = aws_smithy_runtime_api::http::Response::new(
            StatusCode::try_from(status).unwrap(),
            aws_smithy_types::body::SdkBody::empty(),
        );
        SdkError::service_error(GetSecretValueError::generic(meta), raw)
    }

    #[test]
    fn answers_without_a_code_map_by_status() {
        let src = source("aws-secretsmanager://kc?region=eu-west-1");
        let conn = connection();
        for (status, needle, transient) in [
            (
                403,
                "permission denied: AWS answered HTTP 403 without an error code",
                false,
            ),
            (401, "permission denied", false),
            (404, "the secret does not exist", false),
            (503, "cannot read the secret: AWS answered HTTP 503", true),
            (400, "AWS answered HTTP 400", false),
        ] {
            let e = src.describe(&answer(status, ErrorMetadata::builder().build()), &conn);
            assert!(e.to_string().contains(needle), "{status}: {e}");
            assert_eq!(e.is_transient(), transient, "{status}: {e}");
        }
    }

    fn connection() -> Connection {
        let conf = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(aws_config::Region::new("eu-west-1"))
            .build();
        Connection {
            client: aws_sdk_secretsmanager::Client::from_conf(conf),
            region: "eu-west-1".into(),
            endpoint: "https://secretsmanager.eu-west-1.amazonaws.com".into(),
        }
    }

    /// moto cannot refuse by IAM policy in server mode without its own
    /// IAM set-up for every call, so the mapping of AWS's refusals is
    /// checked here with the codes AWS documents for GetSecretValue.
    #[test]
    fn aws_errors_map_to_what_a_user_can_act_on() {
        let src = source("aws-secretsmanager://kc?region=eu-west-1");
        let conn = connection();
        let cases = [
            (
                "AccessDeniedException",
                "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: secretsmanager:GetSecretValue",
                "permission denied: AWS answered AccessDeniedException for versionStage AWSCURRENT in region eu-west-1",
            ),
            (
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
                "permission denied: AWS answered UnrecognizedClientException",
            ),
            ("InvalidSignatureException", "", "permission denied"),
            ("ExpiredTokenException", "", "permission denied"),
            ("DecryptionFailure", "", "kms:Decrypt"),
            (
                "ResourceNotFoundException",
                "Secrets Manager can't find the specified secret.",
                "the secret does not exist for versionStage AWSCURRENT in region eu-west-1 (endpoint https://secretsmanager.eu-west-1.amazonaws.com)",
            ),
            (
                "InternalServiceError",
                "",
                "cannot read the secret: AWS answered InternalServiceError",
            ),
            (
                "InvalidRequestException",
                "You can't perform this operation on the secret because it was marked for deletion.",
                "marked for deletion",
            ),
        ];
        for (code, message, needle) in cases {
            let e = src.describe(&service_error(code, message), &conn);
            let shown = e.to_string();
            assert!(shown.contains(needle), "{code}: {shown}");
            assert!(
                shown.starts_with("aws-secretsmanager://kc?region=eu-west-1: "),
                "{shown}"
            );
            assert_eq!(
                e.is_transient(),
                code == "InternalServiceError",
                "{code}: {shown}"
            );
        }
        let long = "x".repeat(1000);
        let e = src.describe(&service_error("AccessDeniedException", &long), &conn);
        assert!(e.to_string().len() < 700, "{e}");
    }

    #[test]
    fn debug_never_shows_a_client_or_secret() {
        let src = source("aws-secretsmanager://kc?region=eu-west-1");
        let shown = format!("{src:?}");
        assert!(shown.contains("secret_id: \"kc\""), "{shown}");
    }
}
