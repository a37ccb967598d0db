//! The market's configuration: fee, quote lifetime, rate card and regions. Parsed from TOML
//! text (reading the file is the caller's business); the defaults are `config/market.toml`,
//! embedded at build time so every binary starts without a file.

use crate::money::BPS_ONE;
use crate::pricing::RateCard;
use crate::values::{Region, ValueError};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The embedded defaults.
pub const MARKET_TOML_DEFAULT: &str = include_str!("../../config/market.toml");
/// A quote lives at least a second and at most a day.
pub const QUOTE_TTL_S_MAX: u32 = 86_400;
/// At most this many regions.
pub const REGIONS_MAX: usize = 256;
/// The platform fee is at most 50%.
pub const FEE_BPS_MAX: u32 = BPS_ONE / 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("market config: {0}")]
    Invalid(String),
}

/// The market's configuration.
#[derive(Debug, Clone)]
pub struct MarketConfig {
    pub fee_bps: u32,
    pub quote_ttl_s: u32,
    pub rate_card: RateCard,
    pub regions: BTreeMap<Region, chrono_tz::Tz>,
}

impl MarketConfig {
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RateCardFile {
            models: BTreeMap<String, String>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            fee_bps: u32,
            quote_ttl_s: u32,
            rate_card: RateCardFile,
            regions: BTreeMap<String, String>,
        }
        let invalid = |e: String| ConfigError::Invalid(e);
        let file: File = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if file.fee_bps > FEE_BPS_MAX {
            return Err(invalid(format!("fee_bps {} exceeds {FEE_BPS_MAX}", file.fee_bps)));
        }
        if !(1..=QUOTE_TTL_S_MAX).contains(&file.quote_ttl_s) {
            return Err(invalid(format!("quote_ttl_s must be 1..={QUOTE_TTL_S_MAX}")));
        }
        let rate_card = RateCard::from_entries(file.rate_card.models.iter().map(|(m, r)| (m.as_str(), r.as_str())))
            .map_err(|e| invalid(e.to_string()))?;
        if file.regions.is_empty() || file.regions.len() > REGIONS_MAX {
            return Err(invalid(format!("needs 1..={REGIONS_MAX} regions")));
        }
        let mut regions = BTreeMap::new();
        for (name, zone) in &file.regions {
            let region = Region::parse(name).map_err(|e| invalid(e.to_string()))?;
            let tz: chrono_tz::Tz = zone.parse().map_err(|_| invalid(format!("region {name}: unknown time zone {zone:?}")))?;
            regions.insert(region, tz);
        }
        Ok(Self { fee_bps: file.fee_bps, quote_ttl_s: file.quote_ttl_s, rate_card, regions })
    }

    /// A region the market knows, or a clear error naming the known ones.
    pub fn region(&self, name: &str) -> Result<(Region, chrono_tz::Tz), ValueError> {
        let region = Region::parse(name)?;
        match self.regions.get(&region) {
            Some(tz) => Ok((region, *tz)),
            None => {
                let known: Vec<&str> = self.regions.keys().map(Region::as_str).collect();
                Err(ValueError::new("region", format!("unknown region {name:?}; known: {}", known.join(", "))))
            }
        }
    }
}

impl Default for MarketConfig {
    fn default() -> Self {
        Self::from_toml(MARKET_TOML_DEFAULT).expect("config/market.toml is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Rate;
    use crate::values::ModelName;

    #[test]
    fn the_committed_defaults_parse_with_the_seed_rates() {
        let config = MarketConfig::default();
        assert_eq!(config.fee_bps, 250);
        let rate = |m: &str| config.rate_card.rate(&ModelName::parse(m).unwrap()).unwrap();
        assert_eq!(rate("llama3.2"), Rate::parse("2.0").unwrap());
        assert_eq!(rate("llama3.2:1b"), Rate::parse("0.5").unwrap());
        assert_eq!(rate("codellama"), Rate::parse("2.5").unwrap());
        assert_eq!(rate("stable-diffusion"), Rate::parse("5.0").unwrap());
        assert_eq!(config.region("us-west").unwrap().1, chrono_tz::America::Los_Angeles);
        let err = config.region("mars-north").unwrap_err();
        assert!(err.reason.contains("known: ap-northeast"), "{err}");
    }

    #[test]
    fn bad_configs_are_refused() {
        let good = MARKET_TOML_DEFAULT;
        for (from, to) in [
            ("fee_bps = 250", "fee_bps = 9000"),
            ("quote_ttl_s = 300", "quote_ttl_s = 0"),
            ("us-west = \"America/Los_Angeles\"", "us-west = \"Mars/Olympus\""),
            ("\"codellama\" = \"2.5\"", "\"codellama\" = \"-2.5\""),
            ("fee_bps = 250", "fee_bps = 250\nsurprise = 1"),
        ] {
            let bad = good.replace(from, to);
            assert_ne!(bad, good);
            assert!(MarketConfig::from_toml(&bad).is_err(), "{to}");
        }
    }
}
