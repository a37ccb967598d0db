//! AWS configuration shared by the DynamoDB and SQS adapters: endpoint, region, the name
//! prefix of the table and queues, retries and timeouts, and the HTTP client.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Most attempts of one request, the first included: the SDK retries throttling and transient
/// errors with exponential backoff and jitter between these bounds.
pub const RETRY_ATTEMPTS_MAX: u32 = 6;
/// First backoff before a retry.
pub const RETRY_BACKOFF_INITIAL_MS: u64 = 25;
/// Longest backoff between two attempts (the backoff doubles up to it).
pub const RETRY_BACKOFF_MAX_MS: u64 = 2_000;
/// Longest wait to open a connection.
pub const CONNECT_TIMEOUT_MS: u64 = 3_000;
/// Longest single attempt: above the longest long poll (20 s) so that receives can wait.
pub const ATTEMPT_TIMEOUT_MS: u64 = 30_000;
/// Longest name prefix: `<prefix>-<queue>-dlq` must fit SQS's 80 characters with queue names
/// of up to `queue::QUEUE_NAME_BYTES_MAX` bytes.
pub const PREFIX_BYTES_MAX: usize = 24;
/// SQS's longest queue name.
pub const SQS_QUEUE_NAME_BYTES_MAX: usize = 80;
const _: () = assert!(PREFIX_BYTES_MAX + 1 + crate::queue::QUEUE_NAME_BYTES_MAX + 4 <= SQS_QUEUE_NAME_BYTES_MAX);
/// The region when the environment names none.
pub const REGION_DEFAULT: &str = "us-east-1";
/// The name prefix when the environment names none.
pub const PREFIX_DEFAULT: &str = "aitbc";

/// Where the AWS resources are and what they are called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsConfig {
    /// An endpoint to use instead of AWS's (an emulator such as moto_server, `http://...`).
    pub endpoint_url: Option<String>,
    /// The region.
    pub region: String,
    /// Prefix of every resource name: the table is `<prefix>-main`, a queue `<prefix>-<name>`.
    pub prefix: String,
    /// Sign with fixed dummy credentials instead of the default credential chain: for
    /// emulators, which accept anything, so that nothing probes instance metadata.
    pub dummy_credentials: bool,
}

impl AwsConfig {
    /// From the environment: `AWS_ENDPOINT_URL` (optional), `AWS_REGION` or
    /// `AWS_DEFAULT_REGION` (default `us-east-1`), `AITBC_TABLE_PREFIX` (default `aitbc`; it
    /// prefixes queue names too). Credentials come from the SDK's default chain, except for a
    /// plain-http endpoint without `AWS_ACCESS_KEY_ID`, taken for an emulator (dummy ones).
    pub fn from_env() -> Result<Self, String> {
        AwsConfig::from_vars(|name| std::env::var(name).ok())
    }

    /// `from_env` over any source of variables (tests pass a map).
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let var = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let endpoint_url = var("AWS_ENDPOINT_URL");
        let region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")).unwrap_or_else(|| REGION_DEFAULT.into());
        let prefix = var("AITBC_TABLE_PREFIX").unwrap_or_else(|| PREFIX_DEFAULT.into());
        let plain_http = endpoint_url.as_deref().is_some_and(|e| e.starts_with("http://"));
        let config = AwsConfig {
            endpoint_url,
            region,
            prefix,
            dummy_credentials: plain_http && var("AWS_ACCESS_KEY_ID").is_none(),
        };
        config.validate()?;
        Ok(config)
    }

    /// For an emulator at `endpoint_url` (region us-east-1, dummy credentials).
    pub fn emulator(endpoint_url: &str, prefix: &str) -> Self {
        let config = AwsConfig {
            endpoint_url: Some(endpoint_url.to_string()),
            region: REGION_DEFAULT.into(),
            prefix: prefix.to_string(),
            dummy_credentials: true,
        };
        config.validate().expect("a valid emulator configuration");
        config
    }

    /// Checks the prefix (letters, digits, `-`, `_`; what both table and queue names accept).
    pub fn validate(&self) -> Result<(), String> {
        let prefix = &self.prefix;
        if prefix.is_empty() || prefix.len() > PREFIX_BYTES_MAX {
            return Err(format!("prefix must have 1..={PREFIX_BYTES_MAX} bytes"));
        }
        if !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(format!("prefix {prefix:?} has characters other than [A-Za-z0-9_-]"));
        }
        if self.region.is_empty() {
            return Err("empty region".into());
        }
        Ok(())
    }

    /// The table's name.
    pub fn table_name(&self) -> String {
        format!("{}-{}", self.prefix, crate::spec::table_spec().name_suffix)
    }

    /// A queue's physical name.
    pub fn queue_name(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// The SDK configuration: region, endpoint, credentials, retries, timeouts, HTTP client.
    pub async fn sdk_config(&self) -> Result<SdkConfig, String> {
        self.validate()?;
        let retry = RetryConfig::standard()
            .with_max_attempts(RETRY_ATTEMPTS_MAX)
            .with_initial_backoff(Duration::from_millis(RETRY_BACKOFF_INITIAL_MS))
            .with_max_backoff(Duration::from_millis(RETRY_BACKOFF_MAX_MS));
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .operation_attempt_timeout(Duration::from_millis(ATTEMPT_TIMEOUT_MS))
            .build();
        let loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .retry_config(retry)
            .timeout_config(timeouts);
        let mut loader = self.with_http_client(loader)?;
        if let Some(endpoint) = &self.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        if self.dummy_credentials {
            loader = loader.test_credentials();
        }
        Ok(loader.load().await)
    }

    /// Plain HTTP for an `http://` endpoint; HTTPS (rustls) with the `aws-https` feature.
    fn with_http_client(&self, loader: aws_config::ConfigLoader) -> Result<aws_config::ConfigLoader, String> {
        let plain_http = self.endpoint_url.as_deref().is_some_and(|e| e.starts_with("http://"));
        if plain_http {
            // `build_http` is public but doc-hidden in aws-smithy-http-client 1.x: it is the
            // TLS-free hyper client, all an emulator on loopback needs.
            return Ok(loader.http_client(aws_smithy_http_client::Builder::new().build_http()));
        }
        #[cfg(feature = "aws-https")]
        {
            use aws_smithy_http_client::tls;
            Ok(loader.http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
                    .build_https(),
            ))
        }
        #[cfg(not(feature = "aws-https"))]
        Err("an https endpoint needs aitbc-store's `aws-https` feature".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefix_rules() {
        let config = AwsConfig::emulator("http://127.0.0.1:1", "t-1");
        assert_eq!(config.table_name(), "t-1-main");
        assert_eq!(config.queue_name("jobs"), "t-1-jobs");
        let bad = AwsConfig { prefix: "a b".into(), ..config };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn from_vars_reads_endpoint_region_and_prefix() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let local = AwsConfig::from_vars(vars(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"), ("AITBC_TABLE_PREFIX", "dev")]))
            .unwrap();
        assert_eq!(local.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!((local.region.as_str(), local.table_name().as_str()), (REGION_DEFAULT, "dev-main"));
        assert!(local.dummy_credentials, "an emulator without keys gets dummy ones");
        let aws = AwsConfig::from_vars(vars(&[("AWS_REGION", "eu-west-1"), ("AWS_ACCESS_KEY_ID", "x")])).unwrap();
        assert_eq!((aws.endpoint_url, aws.region.as_str(), aws.prefix.as_str()), (None, "eu-west-1", PREFIX_DEFAULT));
        assert!(!aws.dummy_credentials);
        assert!(AwsConfig::from_vars(vars(&[("AITBC_TABLE_PREFIX", "no spaces")])).is_err());
    }
}
