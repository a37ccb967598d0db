//! The Lambda side: build the shared state once from the environment (clients in `main`, shared
//! through router state), then hand one group's router to `lambda_http`: buffered behind API
//! Gateway, or streamed behind a function URL for the group whose answers stream (chat). The
//! router is the same one the local server and the tests use; only this glue is Lambda's.
//!
//! Environment: the AWS adapters' (`AWS_REGION`, `AWS_ENDPOINT_URL`, `AITBC_TABLE_PREFIX`), the
//! marketplace's signing key file contents in `AITBC_SIGNING_KEY` (JSON, from a secret), and
//! the market settings (`AITBC_MARKET_CONFIG`, `AITBC_FEE_BPS`, `AITBC_OPEN_SIGNUP`, `AITBC_FAUCET`).

use aitbc_core::config::MarketConfig;
use aitbc_core::signing::{NamedSigningKey, SigningKeyFile};
use aitbc_market::Settings;
#[cfg(feature = "aws")]
use {
    crate::app::{router_for, AppState, Group},
    aitbc_market::{Market, SystemClock},
    std::sync::Arc,
};

/// The market configuration: `AITBC_MARKET_CONFIG` (a TOML file) or the embedded defaults, with
/// `AITBC_FEE_BPS` overriding the fee.
pub fn market_config_from_env() -> Result<MarketConfig, String> {
    let mut config = match std::env::var("AITBC_MARKET_CONFIG") {
        Ok(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("AITBC_MARKET_CONFIG {path}: {e}"))?;
            MarketConfig::from_toml(&text).map_err(|e| e.to_string())?
        }
        Err(_) => MarketConfig::default(),
    };
    if let Ok(fee) = std::env::var("AITBC_FEE_BPS") {
        let fee: u32 = fee.parse().map_err(|_| format!("AITBC_FEE_BPS {fee:?} is not a whole number"))?;
        if fee > aitbc_core::config::FEE_BPS_MAX {
            return Err(format!("AITBC_FEE_BPS exceeds {}", aitbc_core::config::FEE_BPS_MAX));
        }
        config.fee_bps = fee;
    }
    Ok(config)
}

fn flag(name: &str, default: bool) -> Result<bool, String> {
    match std::env::var(name).as_deref() {
        Err(_) => Ok(default),
        Ok("true" | "1") => Ok(true),
        Ok("false" | "0") => Ok(false),
        Ok(other) => Err(format!("{name} must be true or false, not {other:?}")),
    }
}

/// Settings for a deployment: closed signup and no faucet unless the environment says so.
pub fn settings_from_env() -> Result<Settings, String> {
    Ok(Settings { open_signup: flag("AITBC_OPEN_SIGNUP", false)?, faucet: flag("AITBC_FAUCET", false)?, ..Settings::default() })
}

/// The marketplace's signing key from `AITBC_SIGNING_KEY` (the key file's JSON).
pub fn signing_key_from_env() -> Result<NamedSigningKey, String> {
    let text = std::env::var("AITBC_SIGNING_KEY").map_err(|_| "AITBC_SIGNING_KEY is not set".to_string())?;
    let file: SigningKeyFile = serde_json::from_str(&text).map_err(|e| format!("AITBC_SIGNING_KEY: {e}"))?;
    NamedSigningKey::from_file(&file).map_err(|e| format!("AITBC_SIGNING_KEY: {e}"))
}

/// The state on DynamoDB and SQS, built once per Lambda instance.
#[cfg(feature = "aws")]
pub async fn state_from_env() -> Result<AppState, String> {
    let aws = aitbc_store::AwsConfig::from_env()?;
    let store = aitbc_store::DynamoStore::connect(&aws).await.map_err(|e| e.to_string())?;
    let queue = aitbc_store::SqsQueue::connect(&aws).await.map_err(|e| e.to_string())?;
    let market = Market::new(
        Arc::new(store),
        Arc::new(queue),
        market_config_from_env()?,
        settings_from_env()?,
        signing_key_from_env()?,
        Arc::new(SystemClock),
    );
    // The platform's fee account: one conditional put, a no-op once it exists.
    market.bootstrap().await.map_err(|e| e.to_string())?;
    Ok(AppState { market })
}

/// A function group's Lambda `main`: JSON logs, state from the environment, then the runtime.
#[cfg(feature = "aws")]
pub async fn serve(group: Group) -> Result<(), lambda_http::Error> {
    crate::telemetry::init(true);
    let state = state_from_env().await.map_err(|e| {
        tracing::error!(error = %e, "cannot start");
        lambda_http::Error::from(e)
    })?;
    run(group, router_for(group, state)).await
}

/// Hands `router` to the Lambda runtime as `group` is deployed: API Gateway's buffered
/// request/response, or, for a group that [`Group::streams`], response streaming behind a
/// function URL. Streaming sends the status and headers first, then each body frame as the
/// router yields it (server-sent events reach the client as the worker produces tokens).
pub async fn run(group: crate::app::Group, router: axum::Router) -> Result<(), lambda_http::Error> {
    if group.streams() {
        lambda_http::run_with_streaming_response(router).await
    } else {
        lambda_http::run(router).await
    }
}
