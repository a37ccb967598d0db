//! The worker never links the DynamoDB SDK: a provider's machine holds no marketplace database
//! credentials and should not carry the code to use them (DESIGN.md). Checked on the worker's
//! own dependency graph, as `cargo build -p aitbc-worker` resolves it.

use std::process::Command;

#[test]
fn the_worker_does_not_depend_on_the_dynamodb_sdk() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let output = Command::new(cargo)
        .args(["tree", "--offline", "-e", "normal", "--prefix", "none", "--manifest-path", manifest, "-p", "aitbc-worker"])
        .output()
        .expect("run cargo tree");
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(tree.contains("aws-sdk-sqs"), "the tree should show the SQS SDK the worker does use:\n{tree}");
    assert!(!tree.contains("aws-sdk-dynamodb"), "the worker links the DynamoDB SDK:\n{tree}");
    assert!(!tree.contains("serde_dynamo"), "the worker links serde_dynamo");
}
