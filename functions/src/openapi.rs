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
        Group::Registry => ("registry", routes::registry::Paths::openapi()),
        Group::Pricing => ("pricing", routes::pricing::Paths::openapi()),
        Group::Jobs => ("jobs", routes::jobs::Paths::openapi()),
        Group::Receipts => ("receipts", routes::receipts::Paths::openapi().merge_from(routes::explorer::Paths::openapi())),
        Group::Accounts => ("accounts", routes::accounts::Paths::openapi()),
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

/// The committed form: pretty-printed, keys in a stable order (utoipa's maps are sorted), with a
/// final newline.
pub fn to_pretty_json(document: &Document) -> String {
    let mut text = document.to_pretty_json().expect("the document serializes");
    text.push('\n');
    text
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
        503 => "`unavailable`: the store or queue is unavailable, retry after `Retry-After` seconds; `no_capacity`: no listing can take the job now".into(),
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
        let generated = to_pretty_json(&document());
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
            ("pricing", include_str!("routes/pricing.rs")),
            ("jobs", include_str!("routes/jobs.rs")),
            ("receipts", include_str!("routes/receipts.rs")),
            // The explorer's routes are merged into the receipts group.
            ("receipts", include_str!("routes/explorer.rs")),
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
        let value = serde_json::to_value(document()).unwrap();
        let mut found = Vec::new();
        refs(&value, &mut found);
        assert!(found.len() > 100, "only {} references", found.len());
        for r in found {
            let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r} is not local"));
            assert!(value.pointer(pointer).is_some(), "{r} names nothing in the document");
        }
    }
}
