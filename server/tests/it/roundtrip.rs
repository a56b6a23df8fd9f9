//! Property: any valid name (1 to 253 bytes of UTF-8) round-trips exactly
//! through robot-api's client, the query string and the JSON bodies.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use robot_api::wire::validate_name;
use robot_api::{Robot, RobotClient};

use crate::harness::{Serving, start};

/// Any text, with the characters that need escaping made common.
fn names() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[&#%+ =?/;:@!$'()*,\\[\\]{}\"\\\\üß日\u{0}\t\n\r]{1,40}",
        "\\PC{1,253}",
    ]
    .prop_filter("a valid name", |n| validate_name(n).is_ok())
}

fn fail(e: robot_api::Error) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

async fn round_trip(client: &RobotClient, name: &str, renamed: &str) -> Result<(), TestCaseError> {
    client.create(&Robot::new(name, "c")).await.map_err(fail)?;
    prop_assert_eq!(
        client.get(name).await.map_err(fail)?,
        Some(Robot::new(name, "c"))
    );
    let page = client.list(None, 10).await.map_err(fail)?;
    prop_assert_eq!(page.items, vec![Robot::new(name, "c")]);
    client
        .update(name, &Robot::new(renamed, "d"))
        .await
        .map_err(fail)?;
    prop_assert_eq!(
        client.get(renamed).await.map_err(fail)?,
        Some(Robot::new(renamed, "d"))
    );
    if name != renamed {
        prop_assert_eq!(client.get(name).await.map_err(fail)?, None);
    }
    prop_assert!(client.delete(renamed).await.map_err(fail)?);
    prop_assert_eq!(client.list(None, 10).await.map_err(fail)?.items, vec![]);
    Ok(())
}

#[test]
fn names_round_trip_through_the_client() {
    let server = start();
    let client = server.client();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config::with_cases(256));
    runner
        .run(&(names(), names()), |(name, renamed)| {
            runtime.block_on(round_trip(&client, &name, &renamed))
        })
        .unwrap();
}
