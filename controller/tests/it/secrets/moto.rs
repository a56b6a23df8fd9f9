//! moto: AWS Secrets Manager (and IAM, STS) on loopback.

use super::*;

/// moto's server on a free loopback port: AWS Secrets Manager (and IAM).
pub(crate) struct Moto {
    _moto: testenv::moto::Moto,
    pub(crate) url: String,
    pub(crate) client: aws_sdk_secretsmanager::Client,
    pub(crate) bin: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    pub(crate) async fn start() -> Moto {
        Self::start_with(&[]).await
    }

    /// `env` goes to moto, e.g. `INITIAL_NO_AUTH_ACTION_COUNT` to make it
    /// check IAM after that many calls.
    pub(crate) async fn start_with(env: &[(&str, &str)]) -> Moto {
        // Installed by `cargo xtask tools`; a test never installs.
        let bin = testenv::python::AWS
            .find()
            .unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap();
        let moto = testenv::moto::Moto::start(&bin, env, &dir.path().join("moto.log"))
            .await
            .unwrap_or_else(|e| panic!("moto: {e}"));
        let url = moto.url.clone();
        let conf = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(&url)
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .build();
        Moto {
            _moto: moto,
            client: aws_sdk_secretsmanager::Client::from_conf(conf),
            url,
            bin,
            _dir: dir,
        }
    }

    /// What the controller needs to talk to this moto, and nothing from
    /// the machine's own AWS set-up.
    pub(crate) fn controller_env(&self) -> Vars {
        [
            ("AWS_ENDPOINT_URL", self.url.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", REGION),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    pub(crate) async fn create(&self, name: &str, value: &str) {
        self.client
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
    }

    /// Rotation as AWS's rotation Lambdas do it: the new value goes in as
    /// AWSPENDING, then AWSCURRENT moves to it (and the old version
    /// becomes AWSPREVIOUS).
    pub(crate) async fn rotate(&self, name: &str, value: &str) {
        let old = self
            .client
            .describe_secret()
            .secret_id(name)
            .send()
            .await
            .unwrap();
        let current = old
            .version_ids_to_stages()
            .into_iter()
            .flatten()
            .find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT"))
            .map(|(id, _)| id.clone())
            .expect("a current version");
        let new = self
            .client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .version_stages("AWSPENDING")
            .send()
            .await
            .unwrap();
        self.client
            .update_secret_version_stage()
            .secret_id(name)
            .version_stage("AWSCURRENT")
            .move_to_version_id(new.version_id().unwrap())
            .remove_from_version_id(current)
            .send()
            .await
            .unwrap();
    }

    /// The aws CLI against this moto, for the APIs the SDK here lacks (IAM).
    pub(crate) fn aws(&self, args: &[&str], key: (&str, &str)) -> Value {
        let out = Command::new(self.bin.join("aws"))
            .args([
                "--endpoint-url",
                &self.url,
                "--region",
                REGION,
                "--output",
                "json",
            ])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", key.0)
            .env("AWS_SECRET_ACCESS_KEY", key.1)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .output()
            .expect("run aws");
        assert!(
            out.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }
}
