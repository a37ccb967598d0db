//! The API's OpenAPI 3.1 document, generated from the code: each handler's `#[utoipa::path]`
//! (method, path, parameters, body, responses, security), the schemas its types derive, and the
//! layers every group shares (below). Served at `GET /v1/openapi.json`; `functions/openapi.json`
//! is the committed copy, which a test keeps equal to this (`UPDATE_OPENAPI=1 cargo test -p
//! aitbc-functions openapi` rewrites it).
//!
//! Errors are reusable `application/problem+json` responses, one per status, which the handlers
//! name through the sets below: the extractors' (`AuthErrors`, `BodyErrors`), the store's
//! (`StoreErrors`) and the domain's (`Forbidden`, `NotFound`, ...).

use crate::app::Group;
use crate::error::{Problem, PROBLEM_CONTENT_TYPE};
use crate::extract::BODY_BYTES_MAX;
use crate::routes;
use aitbc_market::idempotency::IDEMPOTENCY_KEY_BYTES_MAX;
use std::collections::BTreeMap;
use utoipa::openapi::path::{HttpMethod, Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::schema::{ArrayItems, Object, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Components, ContentBuilder, HeaderBuilder, OpenApi as Document, Ref, RefOr, Required, Response, ResponseBuilder};
use utoipa::{IntoResponses, OpenApi, PartialSchema, ToSchema};

/// The security scheme the handlers' `security(("bearer" = []))` names.
pub const BEARER: &str = "bearer";

/// The header the idempotency layer (`app::idempotency`) reads.
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// The document's frame: info, tags and the problem schema; `document()` adds the groups.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "aitbc API",
        description = "GPU-compute marketplace: providers list GPUs, clients quote and submit jobs paid from escrow, workers claim and complete them with signed receipts. Money is a decimal string, never a JSON number; errors are application/problem+json with a stable `code`."
    ),
    components(schemas(Problem)),
    tags(
        (name = "registry", description = "Providers' receipt keys, GPU listings, worker heartbeats, status, earnings"),
        (name = "pricing", description = "The rate card, signed quotes, the market view, this document"),
        (name = "jobs", description = "Submit, read and cancel jobs; the worker's claim, start, heartbeat, complete, fail, release"),
        (name = "receipts", description = "Signed usage receipts, their verification, and the keys they verify against"),
        (name = "accounts", description = "Accounts, API keys, balances, ledger history, deposits and withdrawals"),
    )
)]
struct Frame;

/// One group's operations (a Lambda's routes), tagged with the group's name, which also prefixes
/// their operation ids (handler names, unique only within a group).
fn group_document(group: Group) -> Document {
    let (name, mut document) = match group {
        Group::Registry => ("registry", routes::registry::Paths::openapi().merge_from(routes::capacity::Paths::openapi()).merge_from(routes::monitoring::Paths::openapi())),
        Group::Pricing => ("pricing", routes::pricing::Paths::openapi().merge_from(routes::intelligence::Paths::openapi())),
        Group::Jobs => ("jobs", routes::jobs::Paths::openapi()),
        Group::Receipts => ("receipts", routes::receipts::Paths::openapi().merge_from(routes::explorer::Paths::openapi())),
        Group::Accounts => ("accounts", routes::accounts::Paths::openapi()),
        Group::Chat => ("chat", routes::openai::Paths::openapi()),
    };
    for (_, operation) in operations(&mut document) {
        operation.tags = Some(vec![name.to_string()]);
        operation.operation_id = operation.operation_id.take().map(|id| format!("{name}_{id}"));
    }
    document
}

/// The whole document: every group's paths and schemas, the problem responses, the bearer
/// scheme, and the idempotency layer's header and answers on the writes it covers.
pub fn document() -> Document {
    let mut document = Frame::openapi();
    for group in Group::ALL {
        document.merge(group_document(group));
    }
    let components = document.components.get_or_insert_with(Default::default);
    for (status, name, retries) in PROBLEMS {
        components.responses.insert(name.to_string(), problem_response(status, retries).into());
    }
    let bearer = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("An API key (`aitbc_sk_...`) of role client, provider or admin")).build();
    components.add_security_scheme(BEARER, SecurityScheme::Http(bearer));
    refer_page_items(components);
    document_idempotency(&mut document);
    document
}

/// utoipa inlines a generic's argument in the generic's schema: a page's items refer to their
/// type's schema instead (a client then has one type for a job, listed or not).
fn refer_page_items(components: &mut Components) {
    for (name, schema) in components.schemas.iter_mut() {
        let Some(item) = name.strip_prefix(PAGE_SCHEMA_PREFIX) else { continue };
        if let RefOr::T(Schema::Object(page)) = schema {
            if let Some(RefOr::T(Schema::Array(items))) = page.properties.get_mut("items") {
                items.items = ArrayItems::RefOrSchema(Box::new(Ref::from_schema_name(item).into()));
            }
        }
    }
}

/// The names utoipa gives `PageOut<T>`'s schemas: `PageOut_<T's name>`.
const PAGE_SCHEMA_PREFIX: &str = "PageOut_";

/// The document as served and committed: [`document`] with what utoipa's types cannot say
/// added in JSON ([`constrain`]).
pub fn document_json() -> serde_json::Value {
    let mut value = serde_json::to_value(document()).expect("the document serializes");
    constrain(&mut value);
    value
}

/// The committed form: pretty-printed, keys in a stable order (serde_json's maps are sorted),
/// with a final newline.
pub fn to_pretty_json(document: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(document).expect("the document serializes");
    text.push('\n');
    text
}

/// What the server enforces beyond utoipa's derived schemas, so that a client generated from
/// the document (or a fuzzer) sends what the server takes and nothing it refuses:
/// - unsigned integers get their real upper bound: utoipa writes `u32` and `u64` as `int32`
///   and `int64` with `minimum: 0`, whose formats imply the signed maxima;
/// - a quote names a `region` or a `gpu_id` (JSON Schema's `anyOf` of the two requirements);
/// - an earnings period has the grammar and range the market parses (a pattern that is not a
///   literal, which utoipa's attributes need);
/// - links, so that a client (or a stateful fuzzer) can follow a job from submission to its
///   receipt, a listing from creation to its status, and an account from signup to its ledger.
fn constrain(document: &mut serde_json::Value) {
    bound_unsigned_integers(document, JSON_DEPTH_MAX);
    if let Some(quote) = document.pointer_mut("/components/schemas/QuoteInput").and_then(serde_json::Value::as_object_mut) {
        let named = |field: &str| serde_json::json!({"required": [field], "properties": {field: {"type": "string"}}});
        quote.insert("anyOf".into(), serde_json::json!([named("region"), named("gpu_id")]));
    }
    let earnings = document.pointer_mut("/paths/~1v1~1listings~1{gpu_id}~1earnings/get/parameters").and_then(serde_json::Value::as_array_mut);
    let period = earnings.into_iter().flatten().find(|p| p["name"] == "period").expect("the earnings period parameter");
    period["schema"]["pattern"] = aitbc_market::registry::EARNINGS_PERIOD_PATTERN.into();
    let analytics = document.pointer_mut("/paths/~1v1~1listings~1{gpu_id}~1analytics/get/parameters").and_then(serde_json::Value::as_array_mut);
    let period = analytics.into_iter().flatten().find(|p| p["name"] == "period").expect("the analytics period parameter");
    period["schema"]["pattern"] = aitbc_market::registry::EARNINGS_PERIOD_PATTERN.into();
    for (path, method, status, links) in links() {
        let pointer = format!("/paths/{}/{method}/responses/{status}", path.replace('~', "~0").replace('/', "~1"));
        let response = document.pointer_mut(&pointer).unwrap_or_else(|| panic!("no response at {pointer} to link from"));
        let map = response.as_object_mut().expect("a response object");
        let entries = map.entry("links").or_insert_with(|| serde_json::json!({}));
        for (name, operation_id, parameter, expression) in links {
            entries[name] = serde_json::json!({"operationId": operation_id, "parameters": {parameter: expression}});
        }
    }
}

/// Nesting that [`bound_unsigned_integers`] follows, at most (the document nests far less).
const JSON_DEPTH_MAX: usize = 64;

fn bound_unsigned_integers(value: &mut serde_json::Value, depth_left: usize) {
    assert!(depth_left > 0, "the document nests deeper than {JSON_DEPTH_MAX}");
    match value {
        serde_json::Value::Object(map) => {
            let is_integer = match map.get("type") {
                Some(serde_json::Value::String(t)) => t == "integer",
                Some(serde_json::Value::Array(types)) => types.iter().any(|t| t == "integer"),
                _ => false,
            };
            let unsigned = map.get("minimum").and_then(serde_json::Value::as_u64) == Some(0);
            if is_integer && unsigned && !map.contains_key("maximum") {
                let (format, maximum) = match map.get("format").and_then(serde_json::Value::as_str) {
                    Some("int32") => ("uint32", u64::from(u32::MAX)),
                    // `usize` (no format) is 64 bits wide on every target the server runs on.
                    Some("int64") | None => ("uint64", u64::MAX),
                    Some(_) => return,
                };
                map.insert("format".into(), format.into());
                map.insert("maximum".into(), maximum.into());
            }
            map.values_mut().for_each(|v| bound_unsigned_integers(v, depth_left - 1));
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| bound_unsigned_integers(v, depth_left - 1)),
        _ => {}
    }
}

/// A link: its name, the operation it leads to, and that operation's parameter with the runtime
/// expression that fills it.
type Link = (&'static str, &'static str, &'static str, &'static str);

/// The links of the document: the response (path, method, status) they start from.
fn links() -> [(&'static str, &'static str, &'static str, Vec<Link>); 8] {
    const JOB: &str = "$response.body#/job_id";
    const LISTING: &str = "$response.body#/gpu_id";
    const ADDRESS: &str = "$response.body#/address";
    const JOB_IN_PATH: &str = "$request.path.job_id";
    [
        ("/v1/accounts", "post", "201", vec![
            ("GetBalance", "accounts_balance", "address", ADDRESS),
            ("GetLedger", "accounts_ledger", "address", ADDRESS),
            ("Deposit", "accounts_deposit", "address", ADDRESS),
            ("Withdraw", "accounts_withdraw", "address", ADDRESS),
        ]),
        ("/v1/jobs", "post", "201", vec![
            ("GetJob", "jobs_get_one", "job_id", JOB),
            ("GetResult", "jobs_result", "job_id", JOB),
            ("Cancel", "jobs_cancel", "job_id", JOB),
            ("Claim", "jobs_claim", "job_id", JOB),
        ]),
        ("/v1/jobs/{job_id}/claim", "post", "200", vec![
            ("Start", "jobs_start", "job_id", JOB_IN_PATH),
            ("Heartbeat", "jobs_heartbeat", "job_id", JOB_IN_PATH),
            ("Complete", "jobs_complete", "job_id", JOB_IN_PATH),
            ("Fail", "jobs_fail", "job_id", JOB_IN_PATH),
            ("Release", "jobs_release", "job_id", JOB_IN_PATH),
        ]),
        ("/v1/jobs/{job_id}", "get", "200", vec![("GetReceipt", "receipts_get_one", "receipt_id", "$response.body#/receipt_id")]),
        ("/v1/jobs", "get", "200", vec![("GetJob", "jobs_get_one", "job_id", "$response.body#/items/0/job_id")]),
        ("/v1/listings", "post", "201", vec![
            ("GetListing", "registry_get_one", "gpu_id", LISTING),
            ("GetStatus", "registry_status", "gpu_id", LISTING),
            ("GetEarnings", "registry_earnings", "gpu_id", LISTING),
            ("Update", "registry_update", "gpu_id", LISTING),
            ("Heartbeat", "registry_heartbeat", "gpu_id", LISTING),
            ("Delete", "registry_delete", "gpu_id", LISTING),
        ]),
        ("/v1/listings", "get", "200", vec![
            ("GetListing", "registry_get_one", "gpu_id", "$response.body#/items/0/gpu_id"),
            ("GetStatus", "registry_status", "gpu_id", "$response.body#/items/0/gpu_id"),
        ]),
        ("/v1/receipts", "get", "200", vec![("GetReceipt", "receipts_get_one", "receipt_id", "$response.body#/items/0/receipt_id")]),
    ]
}

/// Every operation of `document` with its method.
fn operations(document: &mut Document) -> impl Iterator<Item = (HttpMethod, &mut Operation)> {
    document.paths.paths.values_mut().flat_map(|item| {
        [
            (HttpMethod::Get, &mut item.get),
            (HttpMethod::Post, &mut item.post),
            (HttpMethod::Put, &mut item.put),
            (HttpMethod::Patch, &mut item.patch),
            (HttpMethod::Delete, &mut item.delete),
        ]
        .into_iter()
        .filter_map(|(method, operation)| operation.as_mut().map(|o| (method, o)))
    })
}

/// The idempotency layer replays, refuses (422) or holds off (409) an authenticated write that
/// carries an `Idempotency-Key`, whatever its handler: so every write that takes a key gets the
/// header, its grammar and those answers here (job submission declares the header itself: it
/// requires one).
fn document_idempotency(document: &mut Document) {
    let bearer = SecurityRequirement::new(BEARER, Vec::<String>::new());
    for (method, operation) in operations(document) {
        let is_write = matches!(method, HttpMethod::Post | HttpMethod::Put | HttpMethod::Patch | HttpMethod::Delete);
        let takes_key = operation.security.iter().flatten().any(|requirement| *requirement == bearer);
        if !is_write || !takes_key {
            continue;
        }
        let parameters = operation.parameters.get_or_insert_with(Vec::new);
        if let Some(declared) = parameters.iter_mut().find(|p| p.name == IDEMPOTENCY_KEY) {
            declared.schema = Some(idempotency_key_schema().into());
        } else {
            parameters.push(
                ParameterBuilder::new()
                    .name(IDEMPOTENCY_KEY)
                    .parameter_in(ParameterIn::Header)
                    .required(Required::False)
                    .description(Some("Makes a retry safe: the same key and body replay the first answer (`Idempotent-Replayed: true`); another body is 422; while the first runs, 409. Scoped to the caller."))
                    .schema(Some(idempotency_key_schema()))
                    .build(),
            );
        }
        for status in [409, 422] {
            operation.responses.responses.entry(status.to_string()).or_insert_with(|| problem_ref(status));
        }
    }
}

/// The operations (method, route) that take an `Idempotency-Key`: the idempotency layer
/// (`app::idempotency`) applies to exactly these, the writes this document declares the header
/// on. A method a route does not serve is left to the 405 fallback.
pub fn idempotent_operations() -> &'static std::collections::HashSet<(axum::http::Method, String)> {
    static OPERATIONS: std::sync::LazyLock<std::collections::HashSet<(axum::http::Method, String)>> = std::sync::LazyLock::new(|| {
        let mut document = document();
        let mut found = std::collections::HashSet::new();
        for (path, item) in document.paths.paths.iter_mut() {
            for (method, operation) in [
                (axum::http::Method::POST, &item.post),
                (axum::http::Method::PUT, &item.put),
                (axum::http::Method::PATCH, &item.patch),
                (axum::http::Method::DELETE, &item.delete),
            ] {
                let declares = operation.as_ref().is_some_and(|o| o.parameters.iter().flatten().any(|p| p.name == IDEMPOTENCY_KEY));
                if declares {
                    found.insert((method, path.clone()));
                }
            }
        }
        found
    });
    &OPERATIONS
}

/// 1..=255 of letters, digits, '-', '_', '.', ':' (`idempotency::validate_key`).
fn idempotency_key_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(IDEMPOTENCY_KEY_BYTES_MAX))
        .pattern(Some("^[A-Za-z0-9._:-]+$"))
        .build()
}

/// The problem responses: status, component name, and whether it carries `Retry-After`.
const PROBLEMS: [(u16, &str, bool); 12] = [
    (400, "BadRequest", false),
    (401, "Unauthenticated", false),
    (402, "PaymentRequired", false),
    (403, "Forbidden", false),
    (404, "NotFound", false),
    (409, "Conflict", false),
    (413, "PayloadTooLarge", false),
    (415, "UnsupportedMediaType", false),
    (422, "IdempotencyKeyReused", false),
    (429, "RateLimited", true),
    (500, "Internal", false),
    (503, "Unavailable", true),
];

/// When each problem status is sent: its codes (`MarketError::code` and the edge's own).
fn problem_description(status: u16) -> String {
    match status {
        400 => "`invalid_request`: a parameter, header or body field is invalid; `field` names it".into(),
        401 => "`unauthenticated`: no API key, or not one this marketplace issued".into(),
        402 => "`insufficient_funds`: too little available balance; `spending_limit_exceeded`: the hold would pass the account's spending limit".into(),
        403 => "`forbidden`: the key's role or account may not do this (another account's resource, another worker's lease)".into(),
        404 => "`not_found`: no such resource".into(),
        409 => "`conflict`: the request conflicts with the resource's current state (read it again); `idempotency_key_in_progress`: a request with this Idempotency-Key is still running".into(),
        413 => format!("`payload_too_large`: the body exceeds {BODY_BYTES_MAX} bytes"),
        415 => "`unsupported_media_type`: the body is not Content-Type application/json".into(),
        422 => "`idempotency_key_reused`: this Idempotency-Key was used with a different request".into(),
        429 => "`rate_limited`: over the key's request rate (without a key: the caller's network address's); retry after `Retry-After` seconds".into(),
        500 => "`internal`: an internal error (logged; no detail is sent)".into(),
        503 => "`unavailable`: the store or queue is unavailable, retry after `Retry-After` seconds; `no_capacity`: no listing can take the job now; `queue_full`: the listing's queue holds its `max_queue_size` jobs (nothing was held; retry later)".into(),
        other => unreachable!("no problem response for {other}"),
    }
}

fn problem_response(status: u16, retries: bool) -> Response {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name(Problem::name()))).build();
    let description = format!("{status}: {}", problem_description(status));
    let mut response = ResponseBuilder::new().description(description).content(PROBLEM_CONTENT_TYPE, content);
    if retries {
        let seconds = HeaderBuilder::new().schema(u64::schema()).description(Some("Seconds to wait before retrying")).build();
        response = response.header("Retry-After", seconds);
    }
    response.build()
}

fn problem_ref(status: u16) -> RefOr<Response> {
    let (_, name, _) = PROBLEMS.iter().find(|(s, ..)| *s == status).unwrap_or_else(|| panic!("no problem response for {status}"));
    RefOr::Ref(Ref::from_response_name(*name))
}

/// Declares unit types that handlers name in `responses(...)`, each standing for problem
/// responses of the given statuses.
macro_rules! problem_sets {
    ($($(#[doc = $doc:literal])* $name:ident => [$($status:literal),+];)+) => {
        $(
            $(#[doc = $doc])*
            pub(crate) struct $name;

            impl IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    [$($status),+].into_iter().map(|status| (status.to_string(), problem_ref(status))).collect()
                }
            }
        )+
    };
}

problem_sets! {
    /// A handler that reads or writes the store: it may fail inside (500) or find the store or
    /// queue unavailable (503).
    StoreErrors => [500, 503];
    /// The `Auth` extractor: no or unknown key (401), over the key's rate limit (429).
    AuthErrors => [401, 429];
    /// The `ApiJson` extractor: a body that does not parse (400), too large (413), not JSON (415).
    BodyErrors => [400, 413, 415];
    /// A path or query parameter that does not parse, or a rule the request breaks.
    BadRequest => [400];
    /// A public read over its caller's rate limit (`extract::Public`).
    RateLimited => [429];
    /// Funds or the spending limit fall short.
    PaymentRequired => [402];
    /// The caller's role or account may not do this.
    Forbidden => [403];
    /// The resource does not exist.
    NotFound => [404];
    /// The resource's state does not allow it (or changed meanwhile).
    Conflict => [409];
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

    #[test]
    fn openapi_committed_copy_is_current() {
        let generated = to_pretty_json(&document_json());
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(COMMITTED, &generated).expect("write functions/openapi.json");
            return;
        }
        let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
        assert!(
            committed == generated,
            "functions/openapi.json is not the document the code generates; refresh it with\n  UPDATE_OPENAPI=1 cargo test -p aitbc-functions openapi\nand commit the result"
        );
    }

    #[test]
    fn openapi_is_version_3_1() {
        let value = serde_json::to_value(document()).unwrap();
        assert!(value["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "{}", value["openapi"]);
    }

    /// `(METHOD, path)` of each `.route("<path>", get(..).post(..))` in a router's source.
    fn source_routes(src: &str) -> Vec<(String, String)> {
        let mut routes = Vec::new();
        let mut rest = src;
        while let Some(at) = rest.find(".route(\"") {
            rest = &rest[at + ".route(\"".len()..];
            let (path, after) = rest.split_once('"').expect("the path's closing quote");
            // The method router runs to the parenthesis that closes `.route(`.
            let mut depth = 1;
            let close = after
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map(|(i, _)| i)
                .expect("the closing parenthesis of .route(");
            let methods = &after[..close];
            for method in ["get", "post", "put", "patch", "delete"] {
                let call = format!("{method}(");
                let calls = methods.match_indices(&call).filter(|(i, _)| {
                    !methods[..*i].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_')
                });
                routes.extend(calls.map(|_| (method.to_uppercase(), path.to_string())));
            }
            rest = &after[close..];
        }
        routes
    }

    #[test]
    fn openapi_documents_every_route_the_routers_serve_and_no_other() {
        let sources = [
            ("registry", include_str!("routes/registry.rs")),
            // Contracts and reservations are merged into the registry group.
            ("registry", include_str!("routes/capacity.rs")),
            // Provider insight's routes are merged into the registry and pricing groups.
            ("registry", include_str!("routes/monitoring.rs")),
            ("pricing", include_str!("routes/intelligence.rs")),
            ("pricing", include_str!("routes/pricing.rs")),
            ("jobs", include_str!("routes/jobs.rs")),
            ("receipts", include_str!("routes/receipts.rs")),
            // The explorer's routes are merged into the receipts group.
            ("receipts", include_str!("routes/explorer.rs")),
            ("chat", include_str!("routes/openai.rs")),
            ("accounts", include_str!("routes/accounts.rs")),
        ];
        let groups: BTreeSet<&str> = sources.iter().map(|(g, _)| *g).collect();
        assert_eq!(groups.len(), crate::FUNCTION_GROUPS.len(), "a router's source is missing here");
        let mut document = document();
        let mut documented = BTreeSet::new();
        for (path, item) in &document.paths.paths {
            let methods = [("GET", &item.get), ("POST", &item.post), ("PUT", &item.put), ("PATCH", &item.patch), ("DELETE", &item.delete)];
            for (method, operation) in methods.into_iter().filter_map(|(m, o)| o.as_ref().map(|o| (m, o))) {
                let group = operation.tags.as_deref().unwrap_or_default().join(",");
                documented.insert((group, method.to_string(), path.clone()));
            }
        }
        let served: BTreeSet<(String, String, String)> =
            sources.iter().flat_map(|(group, src)| source_routes(src).into_iter().map(|(m, p)| (group.to_string(), m, p))).collect();
        assert!(served.len() >= 30, "the route reader found only {} routes", served.len());
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "routes served without a #[utoipa::path] in their group's `Paths` (group, method, path): {undocumented:?}\n\
             documented but not served: {unserved:?}"
        );
        let mut ids = BTreeSet::new();
        for (_, operation) in operations(&mut document) {
            assert!(!operation.responses.responses.is_empty(), "{:?} has no responses", operation.operation_id);
            let id = operation.operation_id.clone().expect("an operation id");
            assert!(ids.insert(id.clone()), "operation id {id} appears twice");
        }
    }

    /// Merging keeps the first schema of a name, so two types of one name (in two groups) would
    /// silently share one schema.
    #[test]
    fn openapi_schema_names_are_unique() {
        let mut seen: BTreeMap<String, RefOr<Schema>> = BTreeMap::new();
        for group in Group::ALL {
            for (name, schema) in group_document(group).components.unwrap_or_default().schemas {
                if let Some(first) = seen.get(&name) {
                    assert!(*first == schema, "two different schemas are named {name} ({group:?} has one)");
                }
                seen.insert(name, schema);
            }
        }
    }

    /// Every link leads to an operation of the document and fills one of its parameters.
    #[test]
    fn openapi_links_name_operations_and_their_parameters() {
        let value = document_json();
        let mut parameters_of = BTreeMap::new();
        for item in value["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                let names: BTreeSet<String> = operation["parameters"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str().map(String::from)).collect();
                parameters_of.insert(operation["operationId"].as_str().unwrap().to_string(), names);
            }
        }
        let mut count = 0;
        for (_, _, _, links) in links() {
            for (name, operation_id, parameter, _) in links {
                let names = parameters_of.get(operation_id).unwrap_or_else(|| panic!("link {name} leads to no operation {operation_id}"));
                assert!(names.contains(parameter), "link {name}: {operation_id} has no parameter {parameter}");
                count += 1;
            }
        }
        assert!(count >= 20, "only {count} links");
    }

    /// The document's bound on a receipt's version is the versions this build verifies.
    #[test]
    fn openapi_receipt_version_bound_is_the_build_s() {
        let value = document_json();
        let version = &value["components"]["schemas"]["Receipt"]["properties"]["version"];
        assert_eq!(version["minimum"], aitbc_core::receipt::RECEIPT_VERSION_MIN);
        assert_eq!(version["maximum"], aitbc_core::receipt::RECEIPT_VERSION);
    }

    /// The job spec's documented bounds are the ones `JobSpec::validate` applies.
    #[test]
    fn openapi_job_spec_bounds_are_the_validator_s() {
        use aitbc_core::jobspec::{GEMM_DIM_MAX, VECTOR_ELEMENTS_MAX};
        let value = document_json();
        let kinds = value["components"]["schemas"]["JobSpec"]["oneOf"].as_array().expect("JobSpec is a oneOf");
        let kind = |name: &str| kinds.iter().find(|k| k["properties"]["kind"]["enum"][0] == name).unwrap_or_else(|| panic!("no {name}"));
        for name in ["vector_add", "reduction"] {
            assert_eq!(kind(name)["properties"]["n"]["maximum"], VECTOR_ELEMENTS_MAX, "{name}");
        }
        for dim in ["m", "n", "k"] {
            assert_eq!(kind("gemm")["properties"][dim]["maximum"], GEMM_DIM_MAX, "{dim}");
            assert_eq!(kind("gemm")["properties"][dim]["minimum"], 1, "{dim}");
        }
    }

    /// Every `$ref` names a component of the document.
    #[test]
    fn openapi_references_resolve() {
        fn refs(value: &serde_json::Value, out: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                        out.push(r.clone());
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let value = document_json();
        let mut found = Vec::new();
        refs(&value, &mut found);
        assert!(found.len() > 100, "only {} references", found.len());
        for r in found {
            let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r} is not local"));
            assert!(value.pointer(pointer).is_some(), "{r} names nothing in the document");
        }
    }
}
