//! Money: integer amounts, rates and metered units, with exact decimal parsing and printing.
//!
//! No floating point touches money. Three integer quantities and their fixed units:
//!
//! | type | unit | why |
//! | --- | --- | --- |
//! | [`Amount`] | 1 nano-AITBC (1e-9 AITBC), `u64` | A 1 ms slice of a 0.05 AITBC/GPU-hour listing costs 13.9 nano; nano resolves it to within 0.5 nano (a 4% error on one lone ms, 0.004% on one GPU-second, 0.000001% on an hour). `u64` holds 18.4 billion AITBC. |
//! | [`Rate`] | 1 pico-AITBC (1e-12 AITBC) per GPU-second, `u64` | The rate card is per unit (a GPU-second). A per-hour price is divided by 3600, which no decimal unit divides exactly, so a per-hour price is rounded once, half up, to the pico per second: 0.05/h becomes 0.000013888889/s, 0.0500000004/h, off by 8 parts per billion. |
//! | [`GpuMillis`] | 1 GPU-millisecond, `u64` | Metering is in milliseconds; receipts print GPU-seconds with three decimals. |
//!
//! Rounding rules (each one is tested below):
//! 1. Parsing a decimal never rounds: more fraction digits than the unit holds is an error.
//! 2. Per-hour to per-second: `rate_pico_per_s = round_half_up(amount_nano_per_hour * 1000 / 3600)`.
//! 3. Price of metered units: `price_nano = round_half_up(units_ms * rate_pico_per_s / 1_000_000)`
//!    (ms x pico/s = 1e-15 AITBC; 1e6 of those are one nano). So `price = units x unit_price`,
//!    rounded half up to 9 decimals, reproducible by anyone from the receipt.
//! 4. A multiplier in basis points: `round_half_up(value * bps / 10_000)`; a chain of multipliers
//!    is multiplied out exactly first and rounded once (see `pricing`).
//! 5. A share in basis points (platform fee, SLA penalty): `floor(amount * bps / 10_000)`, so a
//!    fee never exceeds its rate and the remainder goes to the provider.
//!
//! Printing is canonical: the shortest decimal that is exact ("5", "0.05", "2.5"), so a value
//! printed and parsed again is the same integer.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Decimal places of an [`Amount`]: nano-AITBC.
pub const AMOUNT_DECIMALS: u32 = 9;
/// Decimal places of a [`Rate`]: pico-AITBC per GPU-second.
pub const RATE_DECIMALS: u32 = 12;
/// Decimal places of [`GpuMillis`] printed as GPU-seconds.
pub const UNITS_DECIMALS: u32 = 3;
/// One AITBC in nano.
pub const NANO_PER_AITBC: u64 = 1_000_000_000;
/// Basis points in one whole (100%).
pub const BPS_ONE: u32 = 10_000;
/// The longest decimal string accepted: u64::MAX has 20 digits, plus a point and 12 decimals.
pub const DECIMAL_LEN_MAX: usize = 40;

const SECONDS_PER_HOUR: u128 = 3_600;
const MILLIS_PER_SECOND: u128 = 1_000;
/// `units_ms * rate_pico_per_s` is in 1e-15 AITBC; this many of those make one nano.
const FEMTO_PER_NANO: u128 = 1_000_000;

/// Why a money value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("not a decimal number: {0:?} (write digits with an optional '.', e.g. \"0.05\")")]
    Syntax(String),
    #[error("{value:?} has more than {decimals} decimal places")]
    TooPrecise { value: String, decimals: u32 },
    #[error("{0:?} is too large")]
    TooLarge(String),
    #[error("arithmetic overflow")]
    Overflow,
    #[error("arithmetic underflow: the result would be negative")]
    Underflow,
}

/// The largest raw count of every fixed-point type: 19 nines, whatever the decimals (see
/// [`whole_digits_max`]), below u64::MAX and above what the store's i64 holds.
pub const RAW_MAX: u64 = 9_999_999_999_999_999_999;

/// Digits before the point, at most, of a value with `decimals` places: the most for which
/// every such value fits a u64 (u64::MAX has 20 digits, so `19 - decimals`). A plain digit
/// count, unlike a numeric bound, is what a schema's pattern can say exactly, so the API's
/// document and this parser accept the same strings (`schema::decimal`).
pub const fn whole_digits_max(decimals: u32) -> usize {
    assert!(decimals < 19);
    19 - decimals as usize
}

/// What [`parse_fixed`] accepts for `decimals` places, as a regular expression: the API
/// document's pattern for money and metering strings (a property test checks they agree).
pub fn decimal_pattern(decimals: u32) -> String {
    format!(r"^[0-9]{{1,{whole}}}(\.[0-9]{{1,{decimals}}})?$", whole = whole_digits_max(decimals))
}

/// Parses an unsigned decimal string into an integer count of `10^-decimals` units, exactly.
fn parse_fixed(text: &str, decimals: u32) -> Result<u64, MoneyError> {
    // Errors echo at most DECIMAL_LEN_MAX characters of the input. Characters, not bytes: a
    // byte slice could split a multi-byte character and panic on input anyone can send.
    let echo = || text.chars().take(DECIMAL_LEN_MAX).collect::<String>();
    let syntax = || MoneyError::Syntax(echo());
    if text.is_empty() {
        return Err(syntax());
    }
    if text.len() > DECIMAL_LEN_MAX {
        return Err(MoneyError::TooLarge(echo()));
    }
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return Err(syntax());
    }
    let fraction = fraction.unwrap_or("");
    if whole.len() > whole_digits_max(decimals) {
        return Err(MoneyError::TooLarge(echo()));
    }
    if fraction.len() > decimals as usize {
        return Err(MoneyError::TooPrecise { value: text.into(), decimals });
    }
    let too_large = || MoneyError::TooLarge(text.into());
    let mut value: u128 = 0;
    for b in whole.bytes() {
        value = value * 10 + u128::from(b - b'0');
        if value > u128::from(u64::MAX) {
            return Err(too_large());
        }
    }
    value *= 10u128.pow(decimals);
    let mut fraction_value: u128 = 0;
    for b in fraction.bytes() {
        fraction_value = fraction_value * 10 + u128::from(b - b'0');
    }
    value += fraction_value * 10u128.pow(decimals - fraction.len() as u32);
    debug_assert!(value <= u128::from(RAW_MAX), "whole_digits_max bounds every parsed value");
    u64::try_from(value).map_err(|_| too_large())
}

/// Prints `value * 10^-decimals` as the shortest exact decimal.
fn format_fixed(value: u64, decimals: u32, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let scale = 10u64.pow(decimals);
    let whole = value / scale;
    let fraction = value % scale;
    if fraction == 0 {
        return write!(f, "{whole}");
    }
    let mut digits = format!("{fraction:0width$}", width = decimals as usize);
    while digits.ends_with('0') {
        digits.pop();
    }
    write!(f, "{whole}.{digits}")
}

/// `round_half_up(numerator / denominator)` for non-negative integers.
pub(crate) fn div_round_half_up(numerator: u128, denominator: u128) -> u128 {
    assert!(denominator > 0);
    numerator / denominator + u128::from(numerator % denominator >= denominator.div_ceil(2))
}

macro_rules! fixed_point {
    ($name:ident, $decimals:expr, $what:literal) => {
        impl $name {
            pub const ZERO: Self = Self(0);
            /// The largest value: every value prints as a decimal that `parse` takes back
            /// ([`whole_digits_max`]); arithmetic past it is an overflow.
            pub const MAX: Self = Self(RAW_MAX);

            /// Parses an exact decimal string (no rounding; see the module's rules).
            pub fn parse(text: &str) -> Result<Self, MoneyError> {
                parse_fixed(text, $decimals).map(Self)
            }
            pub const fn from_raw(raw: u64) -> Self {
                Self(raw)
            }
            pub const fn raw(self) -> u64 {
                self.0
            }
            pub const fn is_zero(self) -> bool {
                self.0 == 0
            }
            /// A raw count, refused past [`Self::MAX`].
            pub fn checked_from_raw(raw: u64) -> Result<Self, MoneyError> {
                if raw > RAW_MAX {
                    return Err(MoneyError::Overflow);
                }
                Ok(Self(raw))
            }
            pub fn checked_add(self, other: Self) -> Result<Self, MoneyError> {
                self.0.checked_add(other.0).ok_or(MoneyError::Overflow).and_then(Self::checked_from_raw)
            }
            pub fn checked_sub(self, other: Self) -> Result<Self, MoneyError> {
                self.0.checked_sub(other.0).map(Self).ok_or(MoneyError::Underflow)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                format_fixed(self.0, $decimals, f)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }
        impl FromStr for $name {
            type Err = MoneyError;
            fn from_str(s: &str) -> Result<Self, MoneyError> {
                Self::parse(s)
            }
        }
        /// Serialized as a decimal string: JSON numbers are doubles in most clients.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "{} as a decimal string, e.g. \"0.05\"", $what)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::parse(v).map_err(E::custom)
                    }
                }
                d.deserialize_str(Visitor)
            }
        }
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                crate::schema::decimal($what, $decimals, DECIMAL_LEN_MAX)
            }
        }
        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

/// An amount of money in nano-AITBC (1e-9). Never negative; arithmetic is checked.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(u64);
fixed_point!(Amount, AMOUNT_DECIMALS, "an amount in AITBC");

/// A price per unit: pico-AITBC (1e-12) per GPU-second.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rate(u64);
fixed_point!(Rate, RATE_DECIMALS, "a rate in AITBC per GPU-second");

/// Metered compute in GPU-milliseconds; printed and parsed as GPU-seconds ("2.5").
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GpuMillis(u64);
fixed_point!(GpuMillis, UNITS_DECIMALS, "GPU-seconds");

impl Amount {
    pub fn from_aitbc(whole: u64) -> Self {
        Self(whole.checked_mul(NANO_PER_AITBC).expect("whole AITBC within u64 nano"))
    }

    /// `floor(self * bps / 10_000)`: a share such as the platform fee (rule 5).
    pub fn share_bps(self, bps: u32) -> Amount {
        assert!(bps <= BPS_ONE, "a share is at most 100%");
        let share = u128::from(self.0) * u128::from(bps) / u128::from(BPS_ONE);
        Amount(u64::try_from(share).expect("a share never exceeds the whole"))
    }

    pub fn checked_sum<I: IntoIterator<Item = Amount>>(amounts: I) -> Result<Amount, MoneyError> {
        amounts.into_iter().try_fold(Amount::ZERO, Amount::checked_add)
    }
}

impl Rate {
    /// A per-hour price (an [`Amount`] per GPU-hour) as a per-second rate (rule 2).
    pub fn per_hour(per_hour: Amount) -> Rate {
        let pico = div_round_half_up(u128::from(per_hour.0) * 1_000, SECONDS_PER_HOUR);
        Rate(u64::try_from(pico).expect("nano/h * 1000/3600 is below the input"))
    }

    /// Parses a decimal per-hour price ("0.05" AITBC per GPU-hour) into a per-second rate.
    pub fn parse_per_hour(text: &str) -> Result<Rate, MoneyError> {
        Amount::parse(text).map(Rate::per_hour)
    }

    /// This rate per GPU-hour, in pico-AITBC (exact: 3600 x pico per second).
    pub fn pico_per_hour(self) -> u128 {
        u128::from(self.0) * SECONDS_PER_HOUR
    }

    /// This rate per GPU-hour as a decimal string (up to 12 decimals, exact).
    pub fn display_per_hour(self) -> String {
        let pico = self.pico_per_hour();
        let scale = 10u128.pow(RATE_DECIMALS);
        let (whole, fraction) = (pico / scale, pico % scale);
        if fraction == 0 {
            return whole.to_string();
        }
        let digits = format!("{fraction:012}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }

    /// The price of `units` at this rate (rule 3).
    pub fn price(self, units: GpuMillis) -> Result<Amount, MoneyError> {
        let femto = u128::from(units.0) * u128::from(self.0);
        let nano = div_round_half_up(femto, FEMTO_PER_NANO);
        u64::try_from(nano).map_err(|_| MoneyError::Overflow).and_then(Amount::checked_from_raw)
    }

    /// `round_half_up(self * bps / 10_000)` (rule 4).
    pub fn scale_bps(self, bps: u32) -> Result<Rate, MoneyError> {
        let scaled = div_round_half_up(u128::from(self.0) * u128::from(bps), u128::from(BPS_ONE));
        u64::try_from(scaled).map_err(|_| MoneyError::Overflow).and_then(Rate::checked_from_raw)
    }
}

impl GpuMillis {
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }
    pub const fn millis(self) -> u64 {
        self.0
    }
    pub fn from_seconds(seconds: u64) -> Self {
        Self(seconds.checked_mul(MILLIS_PER_SECOND as u64).expect("seconds within u64 ms"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_exact_decimals() {
        let cases = [
            ("0.05", 50_000_000, "0.05"),
            ("2.5", 2_500_000_000, "2.5"),
            ("5.0", 5_000_000_000, "5"),
            ("0", 0, "0"),
            ("007", 7_000_000_000, "7"),
            ("0.000000001", 1, "0.000000001"),
            ("9999999999.999999999", 9_999_999_999_999_999_999, "9999999999.999999999"),
        ];
        for (text, raw, printed) in cases {
            let amount = Amount::parse(text).unwrap();
            assert_eq!(amount.raw(), raw, "{text}");
            assert_eq!(amount.to_string(), printed, "{text}");
            assert_eq!(Amount::parse(printed).unwrap(), amount, "round trip {text}");
        }
    }

    #[test]
    fn refuses_what_is_not_an_exact_unsigned_decimal() {
        for bad in ["", ".5", "5.", "-1", "+1", "1e3", " 1", "1 ", "1,5", "0x10", "1.2.3", "NaN", "١"] {
            assert!(matches!(Amount::parse(bad), Err(MoneyError::Syntax(_))), "{bad:?}");
        }
        assert!(matches!(Amount::parse("0.0000000001"), Err(MoneyError::TooPrecise { decimals: 9, .. })));
        assert!(matches!(Amount::parse("18446744073.709551615"), Err(MoneyError::TooLarge(_))));
        assert!(matches!(Amount::parse("10000000000"), Err(MoneyError::TooLarge(_))));
        assert!(Amount::parse("0000000001").is_ok());
        assert!(matches!(Rate::parse("10000000"), Err(MoneyError::TooLarge(_))));
        assert!(matches!(GpuMillis::parse("10000000000000000"), Err(MoneyError::TooLarge(_))));
        // A multi-byte character where a byte slice at the length limit would split it.
        let long = format!("{}é", "1".repeat(DECIMAL_LEN_MAX - 1));
        assert!(matches!(Amount::parse(&long), Err(MoneyError::TooLarge(_))));
        assert!(matches!(Amount::parse("99999999999999999999999"), Err(MoneyError::TooLarge(_))));
        assert!(matches!(Amount::parse(&"1".repeat(100)), Err(MoneyError::TooLarge(_))));
        assert!(Rate::parse("0.000000000001").is_ok());
        assert!(matches!(Rate::parse("0.0000000000001"), Err(MoneyError::TooPrecise { decimals: 12, .. })));
    }

    #[test]
    fn json_is_a_decimal_string_and_never_a_float() {
        let amount = Amount::parse("0.05").unwrap();
        assert_eq!(serde_json::to_string(&amount).unwrap(), "\"0.05\"");
        assert_eq!(serde_json::from_str::<Amount>("\"0.05\"").unwrap(), amount);
        assert!(serde_json::from_str::<Amount>("0.05").is_err());
        assert!(serde_json::from_str::<Amount>("5").is_err());
        assert!(serde_json::from_str::<Amount>("\"-5\"").is_err());
    }

    #[test]
    fn per_hour_rates_round_half_up_to_the_pico_per_second() {
        // 0.05 AITBC/h = 50_000_000 nano/h -> 13_888_888.9 pico/s -> 13_888_889.
        let rate = Rate::parse_per_hour("0.05").unwrap();
        assert_eq!(rate.raw(), 13_888_889);
        assert_eq!(rate.to_string(), "0.000013888889");
        assert_eq!(rate.display_per_hour(), "0.0500000004");
        // 0.1/h -> 27_777_777.8 -> 27_777_778; 7.2/h -> exactly 2_000_000_000 pico/s (0.002/s).
        assert_eq!(Rate::parse_per_hour("0.1").unwrap().raw(), 27_777_778);
        assert_eq!(Rate::parse_per_hour("7.2").unwrap(), Rate::parse("0.002").unwrap());
        // Exactly half rounds up: 9 nano/h -> 2.5 pico/s -> 3; 3 nano/h -> 0.8333 -> 1.
        assert_eq!(Rate::per_hour(Amount::from_raw(9)).raw(), 3);
        assert_eq!(Rate::per_hour(Amount::from_raw(3)).raw(), 1);
        assert_eq!(Rate::per_hour(Amount::from_raw(1)).raw(), 0);
    }

    #[test]
    fn price_is_units_times_rate_rounded_half_up_to_the_nano() {
        // The seed's receipt: 2.5 GPU-seconds of llama3.2 at 2.0 per unit costs 5.0.
        let units = GpuMillis::parse("2.5").unwrap();
        assert_eq!(units.millis(), 2_500);
        assert_eq!(Rate::parse("2.0").unwrap().price(units).unwrap(), Amount::parse("5").unwrap());
        // One ms at 0.05/h: 13_888_889 pico/s x 1 ms = 13_888_889 femto = 13.888889 nano -> 14.
        let cheap = Rate::parse_per_hour("0.05").unwrap();
        assert_eq!(cheap.price(GpuMillis::from_millis(1)).unwrap().raw(), 14);
        // One hour at 0.05/h costs 0.0500000004 -> rounded to the nano: 0.05.
        assert_eq!(cheap.price(GpuMillis::from_seconds(3_600)).unwrap(), Amount::parse("0.05").unwrap());
        // Half a nano rounds up, just under half rounds down.
        assert_eq!(Rate::from_raw(500).price(GpuMillis::from_millis(1_000)).unwrap().raw(), 1);
        assert_eq!(Rate::from_raw(499).price(GpuMillis::from_millis(1_000)).unwrap().raw(), 0);
        assert_eq!(Rate::MAX.price(GpuMillis::MAX), Err(MoneyError::Overflow));
    }

    #[test]
    fn shares_round_down_and_scaling_rounds_half_up() {
        let price = Amount::parse("5").unwrap();
        assert_eq!(price.share_bps(250), Amount::parse("0.125").unwrap()); // the 2.5% platform fee
        assert_eq!(Amount::from_raw(39).share_bps(250).raw(), 0); // 0.975 nano -> 0
        assert_eq!(Amount::from_raw(41).share_bps(250).raw(), 1); // 1.025 -> 1
        assert_eq!(Rate::from_raw(3).scale_bps(15_000).unwrap().raw(), 5); // 4.5 -> 5
        assert_eq!(Rate::from_raw(3).scale_bps(8_000).unwrap().raw(), 2); // 2.4 -> 2
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Amount::MAX.checked_add(Amount::from_raw(1)), Err(MoneyError::Overflow));
        assert_eq!(Amount::ZERO.checked_sub(Amount::from_raw(1)), Err(MoneyError::Underflow));
        assert_eq!(Amount::checked_sum([Amount::MAX, Amount::from_raw(1)]), Err(MoneyError::Overflow));
        assert_eq!(
            Amount::checked_sum([Amount::from_raw(2), Amount::from_raw(3)]),
            Ok(Amount::from_raw(5))
        );
    }

    #[test]
    fn units_print_as_gpu_seconds() {
        assert_eq!(GpuMillis::from_millis(2_500).to_string(), "2.5");
        assert_eq!(GpuMillis::from_millis(1).to_string(), "0.001");
        assert_eq!(GpuMillis::from_millis(60_000).to_string(), "60");
        assert!(GpuMillis::parse("0.0001").is_err());
    }

    proptest::proptest! {
        #[test]
        fn printing_then_parsing_is_the_identity(raw in 0..=RAW_MAX) {
            let amount = Amount::from_raw(raw);
            proptest::prop_assert_eq!(Amount::parse(&amount.to_string()).unwrap(), amount);
            let rate = Rate::from_raw(raw);
            proptest::prop_assert_eq!(Rate::parse(&rate.to_string()).unwrap(), rate);
        }

        #[test]
        fn price_matches_exact_rational_arithmetic(ms in 0u64..1u64 << 40, pico in 0u64..1u64 << 40) {
            let price = Rate::from_raw(pico).price(GpuMillis::from_millis(ms)).unwrap().raw();
            let exact_times_2 = 2 * u128::from(ms) * u128::from(pico);
            // |price - exact| <= 1/2, ties up: 2*price*1e6 in (exact*2 - 1e6, exact*2 + 1e6].
            let twice = 2 * u128::from(price) * 1_000_000;
            proptest::prop_assert!(twice + 1_000_000 > exact_times_2 && twice <= exact_times_2 + 1_000_000);
        }
    }
}
