//! An EKS token, as `aws eks get-token` and `aws-iam-authenticator token`
//! make it: an STS `GetCallerIdentity` request presigned with the default
//! AWS credential chain (ECS task role, Lambda role, instance role, env),
//! with the `x-k8s-aws-id: <cluster>` header signed, base64url-encoded
//! without padding and prefixed `k8s-aws-v1.`. The cluster's
//! authenticator makes the request and maps the identity to a user.
//!
//! The STS endpoint follows the standard `AWS_ENDPOINT_URL_STS` /
//! `AWS_ENDPOINT_URL` overrides.

use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use super::{CredentialError, Fresh, TokenSource, cut};

const WHAT: &str = "EKS token";
pub const PREFIX: &str = "k8s-aws-v1.";
pub const CLUSTER_HEADER: &str = "x-k8s-aws-id";
/// What `aws eks get-token` gives a token (the URL itself is good for 15).
const LIFETIME: Duration = Duration::from_secs(14 * 60);

pub struct EksTokens {
    cluster: String,
    region: Option<String>,
    profile: Option<String>,
    loaded: OnceCell<Loaded>,
}

struct Loaded {
    credentials: SharedCredentialsProvider,
    region: String,
    sts: String,
}

impl EksTokens {
    pub fn new(cluster: &str, region: Option<String>, profile: Option<String>) -> Self {
        Self {
            cluster: cluster.to_owned(),
            region,
            profile,
            loaded: OnceCell::new(),
        }
    }

    fn error(&self, detail: String, transient: bool) -> CredentialError {
        CredentialError {
            what: WHAT,
            detail,
            transient,
        }
    }

    async fn load(&self) -> Result<&Loaded, CredentialError> {
        self.loaded
            .get_or_try_init(|| async {
                let mut loader = aws_config::defaults(BehaviorVersion::latest());
                if let Some(p) = &self.profile {
                    loader = loader.profile_name(p);
                }
                if let Some(r) = &self.region {
                    loader = loader.region(aws_config::Region::new(r.clone()));
                }
                let config = loader.load().await;
                let region = config
                    .region()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "us-east-1".into());
                let credentials = config.credentials_provider().ok_or_else(|| {
                    self.error("the AWS SDK found no credential provider".into(), false)
                })?;
                Ok(Loaded {
                    sts: sts_endpoint(&region),
                    credentials,
                    region,
                })
            })
            .await
    }

    /// The presigned URL, for `cluster`.
    async fn presign(&self) -> Result<(String, Duration), CredentialError> {
        let loaded = self.load().await?;
        let creds = loaded
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| {
                self.error(
                    format!(
                        "no AWS credentials from the default chain: {}",
                        cut(&crate::source::error_chain(&e), 300)
                    ),
                    true,
                )
            })?;
        let mut lifetime = LIFETIME;
        if let Some(expiry) = creds.expiry() {
            // Session credentials end the token's use too.
            let left = expiry.duration_since(SystemTime::now()).unwrap_or_default();
            lifetime = lifetime.min(left);
        }
        let identity = creds.into();
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(60));
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&loaded.region)
            .name("sts")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| self.error(format!("cannot sign: {e}"), false))?
            .into();
        let url = format!(
            "{}/?Action=GetCallerIdentity&Version=2011-06-15",
            loaded.sts
        );
        let request = SignableRequest::new(
            "GET",
            url.clone(),
            [(CLUSTER_HEADER, self.cluster.as_str())].into_iter(),
            SignableBody::Bytes(&[]),
        )
        .map_err(|e| self.error(format!("cannot sign: {e}"), false))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| self.error(format!("cannot sign: {e}"), false))?
            .into_parts();
        let mut http_request = http::Request::get(&url)
            .body(())
            .map_err(|e| self.error(format!("cannot sign: {e}"), false))?;
        instructions.apply_to_request_http1x(&mut http_request);
        Ok((http_request.uri().to_string(), lifetime))
    }
}

/// STS in `region`, unless the standard overrides say otherwise.
fn sts_endpoint(region: &str) -> String {
    for var in ["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"] {
        if let Ok(url) = std::env::var(var)
            && !url.trim().is_empty()
        {
            return url.trim().trim_end_matches('/').to_owned();
        }
    }
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://sts.{region}.{domain}")
}

/// The token of a presigned URL.
pub fn token_of(presigned: &str) -> String {
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(presigned)
    )
}

impl TokenSource for EksTokens {
    fn what(&self) -> &'static str {
        WHAT
    }

    fn fetch(&self) -> BoxFuture<'_, Result<Fresh, CredentialError>> {
        Box::pin(async move {
            let (url, lifetime) = self.presign().await?;
            Ok(Fresh {
                token: zeroize::Zeroizing::new(token_of(&url)),
                lifetime,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_are_presigned_get_caller_identity_urls() {
        // Static credentials from the environment, as a task role's would be.
        let tokens = EksTokens::new("prod", Some("eu-west-1".into()), None);
        // SAFETY-free: credentials given directly instead of the env chain.
        let provider = SharedCredentialsProvider::new(aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "SECRETKEYEXAMPLE",
            Some("SESSIONTOKENEXAMPLE".into()),
            None,
            "test",
        ));
        tokens
            .loaded
            .set(Loaded {
                credentials: provider,
                region: "eu-west-1".into(),
                sts: "https://sts.eu-west-1.amazonaws.com".into(),
            })
            .ok()
            .unwrap();
        let fresh = tokens.fetch().await.unwrap();
        let token = fresh.token.as_str();
        assert!(token.starts_with(PREFIX));
        assert!(!token.contains('='), "no padding");
        let url = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&token[PREFIX.len()..])
                .unwrap(),
        )
        .unwrap();
        let parsed = url::Url::parse(&url).unwrap();
        assert_eq!(parsed.host_str(), Some("sts.eu-west-1.amazonaws.com"));
        assert_eq!(parsed.path(), "/");
        let q: std::collections::HashMap<String, String> =
            parsed.query_pairs().into_owned().collect();
        assert_eq!(q["Action"], "GetCallerIdentity");
        assert_eq!(q["Version"], "2011-06-15");
        assert_eq!(q["X-Amz-Expires"], "60");
        assert!(
            q["X-Amz-SignedHeaders"]
                .split(';')
                .any(|h| h == CLUSTER_HEADER),
            "{url}"
        );
        assert!(q["X-Amz-Credential"].starts_with("AKIDEXAMPLE/"));
        assert!(q.contains_key("X-Amz-Security-Token") && q.contains_key("X-Amz-Signature"));
        assert!(!url.contains("SECRETKEYEXAMPLE"));
        assert_eq!(fresh.lifetime, LIFETIME);
    }

    #[test]
    fn sts_endpoints_per_partition() {
        assert_eq!(
            sts_endpoint("cn-north-1"),
            "https://sts.cn-north-1.amazonaws.com.cn"
        );
    }
}
