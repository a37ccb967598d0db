//! A function group's Lambda handler, fed API Gateway HTTP API (v2) events as Lambda delivers
//! them (`samples/requests/`), answering API Gateway v2 responses: the same router as locally,
//! behind `lambda_http`'s adapter, without the Lambda runtime.

use aitbc_core::config::MarketConfig;
use aitbc_core::signing::NamedSigningKey;
use aitbc_core::values::KeyId;
use aitbc_functions::{router_for, AppState, Group};
use aitbc_market::auth::Role;
use aitbc_market::{Market, Settings, SystemClock};
use lambda_http::lambda_runtime::{Context, LambdaEvent};
use lambda_http::request::LambdaRequest;
use lambda_http::Adapter;
use serde_json::Value;
use std::sync::Arc;
use tower::{Service, ServiceExt};

async fn market() -> (Market, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = aitbc_store::provision::sqlite(dir.path().join("m.db"), &[], aitbc_store::queue_spec()).await.unwrap();
    let key = NamedSigningKey::from_seed(KeyId::parse("aitbc-market-test").unwrap(), [5; 32]);
    let market = Market::new(Arc::new(store), Arc::new(queue), MarketConfig::default(), Settings::default(), key, Arc::new(SystemClock));
    market.bootstrap().await.unwrap();
    (market, dir)
}

async fn invoke(group: Group, market: &Market, event: &str) -> Value {
    let router = router_for(group, AppState { market: market.clone() });
    let mut handler = Adapter::from(router);
    let payload: LambdaRequest = serde_json::from_str(event).expect("an API Gateway v2 event");
    let event = LambdaEvent::new(payload, Context::default());
    let response = handler.ready().await.unwrap().call(event).await.unwrap();
    serde_json::to_value(response).unwrap()
}

fn sample(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../samples/requests/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[tokio::test]
async fn the_pricing_function_answers_api_gateway_v2_events() {
    let (m, _dir) = market().await;
    let response = invoke(Group::Pricing, &m, &sample("apigw-v2-rate-card.json")).await;
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["models"].as_array().unwrap().len(), 5, "the guide's four models and smollm2:135m");
    assert_eq!(response["headers"]["content-type"], "application/json");

    // A quote on a real listing, through the event's JSON body.
    let provider = m.open_account_with_key(None, Role::Provider, None).await.unwrap();
    let p = m.authenticate(&provider.api_key).await.unwrap();
    let new = serde_json::from_value(serde_json::json!({
        "name": "My-GPU", "memory_gib": 24, "cuda_version": "12.1", "base_price": "0.05", "region": "us-west", "models": ["llama3.2"]
    }))
    .unwrap();
    let listing = m.create_listing(&p, new).await.unwrap();
    let event = sample("apigw-v2-quote.json").replace("GPU_ID", listing.gpu_id.as_str());
    let response = invoke(Group::Pricing, &m, &event).await;
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["terms"]["gpu_id"], listing.gpu_id.as_str());
    assert_eq!(body["terms"]["max_price"], "4");
}

#[tokio::test]
async fn a_group_serves_only_its_own_routes_and_errors_stay_problems() {
    let (m, _dir) = market().await;
    // The receipts function does not serve the rate card: API Gateway routes it elsewhere.
    let response = invoke(Group::Receipts, &m, &sample("apigw-v2-rate-card.json")).await;
    assert_eq!(response["statusCode"], 404);
    assert_eq!(response["headers"]["content-type"], "application/problem+json");
    let bad = sample("apigw-v2-quote.json").replace("GPU_ID", "not-a-gpu");
    let response = invoke(Group::Pricing, &m, &bad).await;
    assert_eq!(response["statusCode"], 400, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["code"], "invalid_request");
}
