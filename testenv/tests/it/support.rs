//! Shared helpers for the integration tests.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Api, PostParams};

/// Who the apiserver says `client` is: (user name, groups).
pub async fn whoami(client: &kube::Client) -> Result<(String, Vec<String>), kube::Error> {
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    let user = review.status.and_then(|s| s.user_info).unwrap_or_default();
    Ok((
        user.username.unwrap_or_default(),
        user.groups.unwrap_or_default(),
    ))
}

/// The HTTP status of a failed API call, if it was an API error.
pub fn api_status(result: Result<impl Sized, kube::Error>) -> Option<u16> {
    match result {
        Err(kube::Error::Api(status)) => Some(status.code),
        _ => None,
    }
}

/// Waits until none of `pids` runs.
pub async fn wait_gone(pids: &[u32]) {
    let pids = pids.to_vec();
    testenv::wait_for("the processes to exit", Duration::from_secs(15), || {
        let alive: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| testenv::process::is_running(*p))
            .collect();
        async move { alive.is_empty().then_some(()) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: still running: {pids:?}"));
}
