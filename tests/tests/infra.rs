//! The AWS deployment (`infra/`) checked against the code it deploys:
//!
//! - `cfn-lint` passes on `infra/template.yaml`;
//! - the template's table, indexes, TTL, billing and queue settings are those of
//!   `aitbc_store::table_spec()` / `queue_spec()` (and the check fails on each kind of drift);
//! - the API routes in the template are exactly the routes of `functions/src/routes/*.rs`, each
//!   aimed at the function group whose router serves it;
//! - the template's table and queues, created through CloudFormation on moto_server, serve the
//!   API flow over HTTP, dispatched per route to each group's router as API Gateway would, and
//!   every DynamoDB and SQS call each group makes is allowed by that group's IAM role in the
//!   template (a small evaluator of the policy forms the template uses; it refuses forms it does
//!   not know rather than allow them);
//! - the session policy of the workers' queue credentials (infra/queue-access.md) grants the
//!   four worker actions on the named queues only, and fits STS's size limit.
//!
//! Python tools come from `$AITBC_TEST_PYTHON`'s virtual environment and the emulator from
//! `$AITBC_TEST_AWS_ENDPOINT` (scripts/test.sh sets both). Under `CI=true` a missing tool or
//! endpoint fails the test; elsewhere the test prints `skipped: ...` and returns.

use aitbc_core::config::MarketConfig;
use aitbc_core::money::GpuMillis;
use aitbc_core::signing::NamedSigningKey;
use aitbc_core::values::KeyId;
use aitbc_functions::{router_for, AppState, Group};
use aitbc_market::{Market, Settings, SystemClock};
use aitbc_store::{
    queue_spec, table_spec, AwsConfig, Condition, DynamoStore, Item, Key, Message, Page, Query, Queue, QueueError, SqsQueue, Store,
    StoreError, TxWrite, Update,
};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use aitbc_store::spec::INDEXES;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A tool or endpoint the test needs is missing: fail under CI, skip (with the reason) elsewhere.
fn missing(what: &str) {
    if under_ci() {
        panic!("{what}; CI=true requires it (scripts/test.sh sets it up)");
    }
    eprintln!("skipped: {what}");
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

/// The virtual environment's Python, from `AITBC_TEST_PYTHON`.
fn python() -> Option<PathBuf> {
    let python = PathBuf::from(std::env::var("AITBC_TEST_PYTHON").ok().filter(|p| !p.is_empty())?);
    python.exists().then_some(python)
}

/// A tool installed beside `AITBC_TEST_PYTHON` in its virtual environment's `bin`.
fn venv_tool(name: &str) -> Option<PathBuf> {
    let tool = python()?.parent()?.join(name);
    tool.exists().then_some(tool)
}

fn aws_endpoint() -> Option<String> {
    std::env::var("AITBC_TEST_AWS_ENDPOINT").ok().filter(|e| !e.is_empty())
}

fn template_path() -> PathBuf {
    repo().join("infra/template.yaml")
}

/// The template as JSON values (it is written in long form: no CloudFormation short tags).
fn template() -> Value {
    let text = std::fs::read_to_string(template_path()).expect("infra/template.yaml");
    serde_norway::from_str(&text).expect("the template parses as plain YAML")
}

fn resources_of_type<'a>(t: &'a Value, ty: &str) -> Vec<(&'a String, &'a Value)> {
    t["Resources"].as_object().expect("Resources").iter().filter(|(_, r)| r["Type"] == ty).collect()
}

/// Resolves the intrinsic functions the template's settings use (`Fn::FindInMap`, and the
/// variables map of the list form of `Fn::Sub`), leaving `${Prefix}`-style references in place.
fn resolve_maps(t: &Value, v: &Value) -> Value {
    if let Some(args) = v.get("Fn::FindInMap").and_then(Value::as_array) {
        let path: Vec<&str> = args.iter().map(|a| a.as_str().expect("FindInMap takes names")).collect();
        return t["Mappings"][path[0]][path[1]][path[2]].clone();
    }
    if let Some(args) = v.get("Fn::Sub").and_then(Value::as_array) {
        let mut text = args[0].as_str().expect("Sub text").to_string();
        for (name, value) in args[1].as_object().expect("Sub variables") {
            let value = resolve_maps(t, value);
            let value = value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
            text = text.replace(&format!("${{{name}}}"), &value);
        }
        return json!({ "Fn::Sub": text });
    }
    v.clone()
}

fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

// ---------------------------------------------------------------------------------------------
// The template against the store's specs
// ---------------------------------------------------------------------------------------------

/// Every way the template's table and queue settings differ from `table_spec()` and
/// `queue_spec()`; empty when they agree.
fn spec_mismatches(t: &Value) -> Vec<String> {
    let spec = table_spec();
    let qs = queue_spec();
    let mut bad = Vec::new();
    let mut expect = |what: &str, got: &Value, want: Value| {
        if *got != want {
            bad.push(format!("{what}: template has {got}, the spec says {want}"));
        }
    };

    let tables = resources_of_type(t, "AWS::DynamoDB::Table");
    if tables.len() != 1 {
        return vec![format!("expected one AWS::DynamoDB::Table, found {}", tables.len())];
    }
    let p = &tables[0].1["Properties"];
    expect("TableName", &p["TableName"], json!({ "Fn::Sub": format!("${{Prefix}}-{}", spec.name_suffix) }));
    expect("BillingMode", &p["BillingMode"], json!(spec.billing_mode));
    expect(
        "KeySchema",
        &p["KeySchema"],
        json!([{ "AttributeName": spec.pk_attr, "KeyType": "HASH" }, { "AttributeName": spec.sk_attr, "KeyType": "RANGE" }]),
    );
    // Attribute definitions as a set (their order means nothing to DynamoDB), all strings.
    let mut got: Vec<Value> = p["AttributeDefinitions"].as_array().cloned().unwrap_or_default();
    got.sort_by_key(|a| a["AttributeName"].to_string());
    let mut want: Vec<Value> = spec.attribute_definitions.iter().map(|a| json!({ "AttributeName": a, "AttributeType": "S" })).collect();
    want.sort_by_key(|a| a["AttributeName"].to_string());
    expect("AttributeDefinitions", &Value::Array(got), Value::Array(want));
    let want: Vec<Value> = spec
        .indexes
        .iter()
        .map(|i| {
            json!({
                "IndexName": i.name,
                "KeySchema": [{ "AttributeName": i.pk_attr, "KeyType": "HASH" }, { "AttributeName": i.sk_attr, "KeyType": "RANGE" }],
                "Projection": { "ProjectionType": "ALL" },
            })
        })
        .collect();
    expect("GlobalSecondaryIndexes", &p["GlobalSecondaryIndexes"], Value::Array(want));
    expect("TimeToLiveSpecification", &p["TimeToLiveSpecification"], json!({ "AttributeName": spec.ttl_attr, "Enabled": true }));
    expect("PointInTimeRecoverySpecification", &p["PointInTimeRecoverySpecification"], json!({ "PointInTimeRecoveryEnabled": true }));

    // The listing queues (created at run time by the SQS adapter with queue_spec()).
    let q = &t["Mappings"]["ListingQueues"]["Settings"];
    expect("ListingQueues.MaxReceiveCount", &q["MaxReceiveCount"], json!(qs.max_receive_count));
    expect("ListingQueues.VisibilityTimeout", &q["VisibilityTimeout"], json!(qs.visibility_default_s));
    expect("ListingQueues.MessageRetentionPeriod", &q["MessageRetentionPeriod"], json!(qs.retention_s));
    expect("ListingQueues.DeadLetterRetentionPeriod", &q["DeadLetterRetentionPeriod"], json!(qs.dlq_retention_s));
    expect("ListingQueues.DeadLetterSuffix", &q["DeadLetterSuffix"], json!(qs.dlq_suffix));

    // The template's own queues: a dead-letter queue is named `<name><dlq_suffix>` and keeps its
    // messages dlq_retention_s; any other queue has the listing queues' settings and a redrive
    // policy to its `<name><dlq_suffix>` after max_receive_count receives.
    for (logical, queue) in resources_of_type(t, "AWS::SQS::Queue") {
        let p = &queue["Properties"];
        let name = resolve_maps(t, &p["QueueName"]);
        let Some(name) = name["Fn::Sub"].as_str() else {
            bad.push(format!("{logical}: QueueName must be a Fn::Sub of ${{Prefix}}-..."));
            continue;
        };
        if !name.starts_with("${Prefix}-") {
            bad.push(format!("{logical}: queue name {name} does not start with ${{Prefix}}-"));
        }
        let retention = as_u64(&resolve_maps(t, &p["MessageRetentionPeriod"]));
        if name.ends_with(qs.dlq_suffix) {
            if retention != Some(qs.dlq_retention_s as u64) {
                bad.push(format!("{logical}: dead-letter retention {retention:?}, the spec says {}", qs.dlq_retention_s));
            }
        } else {
            if retention != Some(qs.retention_s as u64) {
                bad.push(format!("{logical}: retention {retention:?}, the spec says {}", qs.retention_s));
            }
            if as_u64(&resolve_maps(t, &p["VisibilityTimeout"])) != Some(qs.visibility_default_s as u64) {
                bad.push(format!("{logical}: visibility differs from the spec's {}", qs.visibility_default_s));
            }
            let redrive = &p["RedrivePolicy"];
            if as_u64(&resolve_maps(t, &redrive["maxReceiveCount"])) != Some(qs.max_receive_count as u64) {
                bad.push(format!("{logical}: maxReceiveCount differs from the spec's {}", qs.max_receive_count));
            }
            let target = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0].as_str().unwrap_or_default();
            let target_name = resolve_maps(t, &t["Resources"][target]["Properties"]["QueueName"]);
            if target_name["Fn::Sub"].as_str() != Some(&format!("{name}{}", qs.dlq_suffix)) {
                bad.push(format!("{logical}: its dead-letter queue must be named {name}{}", qs.dlq_suffix));
            }
        }
    }
    bad
}

#[test]
fn the_template_matches_the_table_and_queue_specs() {
    let mismatches = spec_mismatches(&template());
    assert!(mismatches.is_empty(), "infra/template.yaml differs from aitbc_store's specs:\n{}", mismatches.join("\n"));
}

#[test]
fn the_spec_check_fails_on_each_kind_of_drift() {
    let t = template();
    let table = resources_of_type(&t, "AWS::DynamoDB::Table")[0].0.clone();
    let drifts: Vec<(&str, Box<dyn Fn(&mut Value)>)> = vec![
        ("TableName", Box::new(|t: &mut Value| t["Resources"][&table]["Properties"]["TableName"] = json!({"Fn::Sub": "${Prefix}-items"}))),
        ("BillingMode", Box::new(|t: &mut Value| t["Resources"][&table]["Properties"]["BillingMode"] = json!("PROVISIONED"))),
        ("KeySchema", Box::new(|t: &mut Value| t["Resources"][&table]["Properties"]["KeySchema"][1]["AttributeName"] = json!("sk2"))),
        ("AttributeDefinitions", Box::new(|t: &mut Value| t["Resources"][&table]["Properties"]["AttributeDefinitions"][2]["AttributeType"] = json!("N"))),
        ("GlobalSecondaryIndexes", Box::new(|t: &mut Value| t["Resources"][&table]["Properties"]["GlobalSecondaryIndexes"][1]["Projection"]["ProjectionType"] = json!("KEYS_ONLY"))),
        ("GlobalSecondaryIndexes", Box::new(|t: &mut Value| {
            t["Resources"][&table]["Properties"]["GlobalSecondaryIndexes"].as_array_mut().unwrap().pop();
        })),
        ("GlobalSecondaryIndexes", Box::new(|t: &mut Value| t["Resources"][&table]["Properties"]["GlobalSecondaryIndexes"][0]["IndexName"] = json!("byOwner"))),
        ("TimeToLiveSpecification", Box::new(|t: &mut Value| t["Resources"][&table]["Properties"]["TimeToLiveSpecification"]["AttributeName"] = json!("ttl"))),
        ("PointInTimeRecovery", Box::new(|t: &mut Value| t["Resources"][&table]["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] = json!(false))),
        ("MaxReceiveCount", Box::new(|t: &mut Value| t["Mappings"]["ListingQueues"]["Settings"]["MaxReceiveCount"] = json!(4))),
        ("VisibilityTimeout", Box::new(|t: &mut Value| t["Mappings"]["ListingQueues"]["Settings"]["VisibilityTimeout"] = json!(60))),
        ("DeadLetterSuffix", Box::new(|t: &mut Value| t["Mappings"]["ListingQueues"]["Settings"]["DeadLetterSuffix"] = json!("-dead"))),
        ("DeadLetterRetentionPeriod", Box::new(|t: &mut Value| t["Mappings"]["ListingQueues"]["Settings"]["DeadLetterRetentionPeriod"] = json!(86_400))),
        // A template queue with a redrive policy must follow the spec too.
        ("maxReceiveCount", Box::new(|t: &mut Value| {
            t["Resources"]["ExtraQueue"] = json!({
                "Type": "AWS::SQS::Queue",
                "Properties": {
                    "QueueName": {"Fn::Sub": "${Prefix}-extra"},
                    "MessageRetentionPeriod": 345600, "VisibilityTimeout": 30,
                    "RedrivePolicy": {"maxReceiveCount": 9, "deadLetterTargetArn": {"Fn::GetAtt": ["SchedulerDeadLetterQueue", "Arn"]}}
                }
            });
        })),
    ];
    for (what, drift) in drifts {
        let mut drifted = t.clone();
        drift(&mut drifted);
        let found = spec_mismatches(&drifted);
        assert!(found.iter().any(|m| m.contains(what)), "a drift of {what} went unnoticed: {found:?}");
    }
}

#[test]
fn cfn_lint_passes_on_the_template() {
    let Some(cfn_lint) = venv_tool("cfn-lint") else {
        return missing("cfn-lint: no AITBC_TEST_PYTHON virtual environment with cfn-lint (pip install cfn-lint)");
    };
    let out = std::process::Command::new(&cfn_lint).arg(template_path()).output().expect("cfn-lint runs");
    assert!(
        out.status.success(),
        "cfn-lint found problems (exit {:?}):\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Routes: the template against the routers
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Route {
    group: String,
    method: String,
    path: String,
}

/// The template's routes, each with the group its integration invokes.
fn template_routes(t: &Value) -> Vec<Route> {
    let mut routes = Vec::new();
    for (logical, r) in resources_of_type(t, "AWS::ApiGatewayV2::Route") {
        let p = &r["Properties"];
        let key = p["RouteKey"].as_str().unwrap_or_else(|| panic!("{logical}: RouteKey"));
        let (method, path) = key.split_once(' ').unwrap_or_else(|| panic!("{logical}: RouteKey {key:?} is not METHOD /path"));
        let target = p["Target"]["Fn::Sub"].as_str().unwrap_or_else(|| panic!("{logical}: Target must be Fn::Sub integrations/${{X}}"));
        let integration = target.strip_prefix("integrations/${").and_then(|s| s.strip_suffix('}')).unwrap_or_else(|| panic!("{logical}: Target {target}"));
        let function = t["Resources"][integration]["Properties"]["IntegrationUri"]["Fn::GetAtt"][0].as_str().unwrap_or_else(|| panic!("{integration}: IntegrationUri"));
        let group = function.strip_suffix("Function").unwrap_or_else(|| panic!("{function}")).to_lowercase();
        routes.push(Route { group, method: method.into(), path: path.into() });
    }
    routes.sort();
    routes
}

/// The routes the routers declare, read from `functions/src/routes/<group>.rs`: each
/// `.route("<path>", get(..).post(..))` gives one route per method.
fn source_routes() -> Vec<Route> {
    let mut routes = Vec::new();
    for group in aitbc_functions::FUNCTION_GROUPS {
        // The explorer's routes are merged into the receipts group (`app::Group::routes`); the
        // OpenAI-compatible routes are the chat group's.
        let files: &[&str] = match group {
            "receipts" => &["receipts", "explorer"],
            "chat" => &["openai"],
            // Contracts, reservations and provider insight's monitoring are merged into the
            // registry group; market intelligence into the pricing group.
            "registry" => &["registry", "capacity", "monitoring"],
            "pricing" => &["pricing", "intelligence"],
            _ => &[group],
        };
        let src: String = files
            .iter()
            .map(|name| {
                let file = repo().join(format!("functions/src/routes/{name}.rs"));
                std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            })
            .collect();
        let mut rest = src.as_str();
        while let Some(at) = rest.find(".route(\"") {
            rest = &rest[at + ".route(\"".len()..];
            let end = rest.find('"').expect("the path's closing quote");
            let path = rest[..end].to_string();
            // The method router: up to the parenthesis that closes `.route(`.
            let mut depth = 1;
            let mut close = end;
            for (i, c) in rest[end..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    close = end + i;
                    break;
                }
            }
            let methods = &rest[end + 1..close];
            for method in ["get", "post", "put", "patch", "delete"] {
                let needle = format!("{method}(");
                let mut from = 0;
                while let Some(i) = methods[from..].find(&needle) {
                    let i = from + i;
                    let before = methods[..i].chars().last();
                    if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        routes.push(Route { group: group.to_string(), method: method.to_uppercase(), path: path.clone() });
                    }
                    from = i + needle.len();
                }
            }
            rest = &rest[close..];
        }
    }
    routes.sort();
    routes
}

/// The function URLs of the template, by the group of the function they serve: every path of
/// such a URL reaches that function, so its group's routes need no API Gateway route.
fn url_groups(t: &Value) -> BTreeMap<String, Value> {
    let mut groups = BTreeMap::new();
    for (logical, r) in resources_of_type(t, "AWS::Lambda::Url") {
        let p = &r["Properties"];
        let function = p["TargetFunctionArn"]["Fn::GetAtt"][0].as_str().unwrap_or_else(|| panic!("{logical}: TargetFunctionArn must be Fn::GetAtt [XFunction, Arn]"));
        let group = function.strip_suffix("Function").unwrap_or_else(|| panic!("{function}")).to_lowercase();
        assert!(groups.insert(group.clone(), p.clone()).is_none(), "two function URLs serve {group}");
    }
    groups
}

/// The routes each deployed path serves: API Gateway's routes, and each function URL's group's
/// routes as the routers declare them.
fn deployed_routes(t: &Value) -> Vec<Route> {
    let urls = url_groups(t);
    let mut routes = template_routes(t);
    routes.extend(source_routes().into_iter().filter(|r| urls.contains_key(&r.group)));
    routes.sort();
    routes
}

/// The groups whose answers stream (`Group::streams`) are behind a function URL in
/// response-streaming mode, with no API Gateway route (which would buffer them); every other
/// group is behind API Gateway only.
#[test]
fn streaming_groups_are_served_by_streaming_function_urls_only() {
    let t = template();
    let urls = url_groups(&t);
    let gateway: BTreeSet<String> = template_routes(&t).into_iter().map(|r| r.group).collect();
    assert!(aitbc_functions::FUNCTION_GROUPS.iter().any(|g| group_named(g).streams()), "no group streams: the check below would be vacuous");
    for group in aitbc_functions::FUNCTION_GROUPS {
        if group_named(group).streams() {
            let url = urls.get(group).unwrap_or_else(|| panic!("{group} streams but has no AWS::Lambda::Url"));
            assert_eq!(url["InvokeMode"], "RESPONSE_STREAM", "{group}: {url}");
            // The router authenticates every request with its API key, as behind API Gateway.
            assert_eq!(url["AuthType"], "NONE", "{group}: {url}");
            assert!(!gateway.contains(group), "{group} streams but API Gateway routes to it (its answers would be buffered)");
            let function = format!("{}Function", group[..1].to_uppercase() + &group[1..]);
            let timeout = as_u64(&resolve_maps(&t, &t["Resources"][&function]["Properties"]["Timeout"])).unwrap();
            // The stream's bound (routes/openai.rs: twice a job's default time limit) fits.
            assert!(timeout * 1000 > 2 * aitbc_core::jobspec::JOB_TIMEOUT_MS_DEFAULT, "{function} Timeout {timeout} s");
            let permissions: Vec<&Value> = resources_of_type(&t, "AWS::Lambda::Permission")
                .into_iter()
                .map(|(_, r)| &r["Properties"])
                .filter(|p| p["FunctionName"]["Ref"] == function.as_str())
                .collect();
            assert!(permissions.iter().any(|p| p["Action"] == "lambda:InvokeFunctionUrl" && p["FunctionUrlAuthType"] == "NONE"), "{function}: {permissions:?}");
            assert!(permissions.iter().any(|p| p["Action"] == "lambda:InvokeFunction" && p["InvokedViaFunctionUrl"] == true), "{function}: {permissions:?}");
        } else {
            assert!(!urls.contains_key(group), "{group} does not stream but has a function URL");
        }
    }
    assert!(t["Outputs"]["OpenAiBaseUrl"].is_object(), "the OpenAI clients' base URL is an output");
}

#[test]
fn the_template_routes_are_the_routers_routes() {
    let urls = url_groups(&template());
    let template = template_routes(&template());
    let source: Vec<Route> = source_routes().into_iter().filter(|r| !urls.contains_key(&r.group)).collect();
    assert!(source.len() >= 30, "the route reader found only {} routes: {source:?}", source.len());
    let t: BTreeSet<_> = template.iter().cloned().collect();
    let s: BTreeSet<_> = source.iter().cloned().collect();
    let missing: Vec<_> = s.difference(&t).collect();
    let extra: Vec<_> = t.difference(&s).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routers serve but infra/template.yaml has no AWS::ApiGatewayV2::Route for (add one targeting the group's integration): {missing:?}\n\
         template routes no router serves: {extra:?}"
    );
    assert_eq!(template.len(), t.len(), "a route appears twice in the template");
}

fn group_named(name: &str) -> Group {
    match name {
        "registry" => Group::Registry,
        "pricing" => Group::Pricing,
        "jobs" => Group::Jobs,
        "receipts" => Group::Receipts,
        "accounts" => Group::Accounts,
        "chat" => Group::Chat,
        other => panic!("no function group {other}"),
    }
}

fn test_key() -> NamedSigningKey {
    NamedSigningKey::from_seed(KeyId::parse("aitbc-market-test").unwrap(), [5; 32])
}

/// The router's own "no such route" (404) or "not that method" (405) answer.
async fn is_fallback(response: Response) -> bool {
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status == 404 && body["detail"] == "no such route") || (status == 405 && body["code"] == "method_not_allowed")
}

fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| match seg {
            "{address}" | "{provider}" | "{client}" => "ait1someone0000000",
            "{reservation_id}" => "resv-0190a0a0-0000-7000-8000-000000000000",
            "{gpu_id}" => "gpu-0190a0a0-0000-7000-8000-000000000000",
            "{job_id}" => "job-0190a0a0-0000-7000-8000-000000000000",
            "{receipt_id}" => "rcpt-0190a0a0-0000-7000-8000-000000000000",
            "{file}" => "index.html",
            s if s.starts_with('{') => panic!("no sample value for {s}"),
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn each_template_route_reaches_a_handler_of_its_group_only() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = aitbc_store::provision::sqlite(dir.path().join("m.db"), &[], queue_spec()).await.unwrap();
    let market = Market::new(Arc::new(store), Arc::new(queue), MarketConfig::default(), Settings::default(), test_key(), Arc::new(SystemClock));
    let routes = deployed_routes(&template());
    assert!(routes.iter().any(|r| r.group == "chat"), "the function URL's routes are checked too");
    for route in &routes {
        for other in aitbc_functions::FUNCTION_GROUPS {
            let router = router_for(group_named(other), AppState { market: market.clone() });
            let request = Request::builder().method(route.method.as_str()).uri(concrete(&route.path)).header("content-type", "application/json").body(Body::from("{}")).unwrap();
            let fallback = is_fallback(router.oneshot(request).await.unwrap()).await;
            if other == route.group {
                assert!(!fallback, "{} {} targets {}, whose router has no such route", route.method, route.path, route.group);
            } else {
                assert!(fallback, "{} {} targets {} but the {other} router serves it too", route.method, route.path, route.group);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// IAM: a small evaluator of the policy forms the template uses
// ---------------------------------------------------------------------------------------------

/// moto's account and the region the tests use: the ARNs the calls are checked under.
const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

/// Glob match as IAM does for actions and resources: `*` any run of characters, `?` one.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi].eq_ignore_ascii_case(&t[ti]) && p[pi] != '*') {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The template's values with its intrinsics evaluated for one deployment (`prefix`, moto's
/// account and region): what IAM would see.
struct Deployment<'a> {
    t: &'a Value,
    prefix: String,
}

impl Deployment<'_> {
    fn table_arn(&self) -> String {
        format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{}-{}", self.prefix, table_spec().name_suffix)
    }

    fn queue_arn(&self, physical: &str) -> String {
        format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{physical}")
    }

    fn var(&self, name: &str) -> String {
        match name {
            "AWS::Partition" => "aws".into(),
            "AWS::Region" => REGION.into(),
            "AWS::AccountId" => ACCOUNT.into(),
            "Prefix" => self.prefix.clone(),
            "Table.Arn" => self.table_arn(),
            other => panic!("the IAM checker does not know ${{{other}}}"),
        }
    }

    fn sub(&self, text: &str, vars: &serde_json::Map<String, Value>) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let end = rest[at..].find('}').expect("closing brace") + at;
            let name = &rest[at + 2..end];
            match vars.get(name) {
                Some(v) => out.push_str(&self.eval(v)),
                None => out.push_str(&self.var(name)),
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// One value: a string, Ref, Fn::Sub, Fn::FindInMap or Fn::GetAtt of a resource whose ARN
    /// the checker knows; anything else panics (never guessed).
    fn eval(&self, v: &Value) -> String {
        if let Some(s) = v.as_str() {
            return s.to_string();
        }
        if let Some(n) = v.as_u64() {
            return n.to_string();
        }
        if let Some(name) = v.get("Ref").and_then(Value::as_str) {
            return self.var(name);
        }
        if let Some(sub) = v.get("Fn::Sub") {
            return match sub {
                Value::String(text) => self.sub(text, &serde_json::Map::new()),
                Value::Array(a) => self.sub(a[0].as_str().unwrap(), a[1].as_object().unwrap()),
                _ => panic!("Fn::Sub form {sub}"),
            };
        }
        if v.get("Fn::FindInMap").is_some() {
            return self.eval(&resolve_maps(self.t, v));
        }
        if let Some(att) = v.get("Fn::GetAtt").and_then(Value::as_array) {
            let (logical, attr) = (att[0].as_str().unwrap(), att[1].as_str().unwrap());
            let r = &self.t["Resources"][logical];
            return match (r["Type"].as_str().unwrap_or_default(), attr) {
                ("AWS::DynamoDB::Table", "Arn") => self.table_arn(),
                ("AWS::SQS::Queue", "Arn") => self.queue_arn(&self.eval(&r["Properties"]["QueueName"])),
                ("AWS::IAM::Role", "Arn") => format!("arn:aws:iam::{ACCOUNT}:role/{}", self.eval(&r["Properties"]["RoleName"])),
                (ty, attr) => panic!("the IAM checker does not know {ty}.{attr}"),
            };
        }
        panic!("the IAM checker does not know the value {v}")
    }

    /// The statements of a role's inline policies.
    fn role_statements(&self, role: &str) -> Vec<Value> {
        let r = &self.t["Resources"][role];
        assert_eq!(r["Type"], "AWS::IAM::Role", "{role} is not a role");
        assert!(r["Properties"].get("ManagedPolicyArns").is_none(), "{role}: managed policies are outside what this checker evaluates");
        let mut out = Vec::new();
        for policy in r["Properties"]["Policies"].as_array().into_iter().flatten() {
            out.extend(policy["PolicyDocument"]["Statement"].as_array().unwrap().iter().cloned());
        }
        out
    }
}

/// One call an adapter made (or a worker would make), as IAM authorizes it.
#[derive(Clone, Debug)]
struct Call {
    group: &'static str,
    action: &'static str,
    arn: String,
    /// The partition key of the item, for item actions (`dynamodb:LeadingKeys`).
    leading_key: Option<String>,
    /// What the call costs on DynamoDB on demand, in read and write request units (see `Units`).
    units: Units,
}

fn list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Null => vec![],
        other => vec![other.clone()],
    }
}

/// Whether `statement` applies to `call` (action, resource and condition all match).
fn statement_matches(d: &Deployment, statement: &Value, call: &Call) -> bool {
    assert!(statement.get("NotAction").is_none() && statement.get("NotResource").is_none(), "NotAction/NotResource: {statement}");
    let action = list(&statement["Action"]).iter().any(|a| glob(a.as_str().unwrap(), call.action));
    let resource = list(&statement["Resource"]).iter().any(|r| glob(&d.eval(r), &call.arn));
    if !(action && resource) {
        return false;
    }
    let Some(condition) = statement.get("Condition") else { return true };
    for (operator, tests) in condition.as_object().unwrap() {
        for (key, values) in tests.as_object().unwrap() {
            match (operator.as_str(), key.as_str()) {
                ("ForAllValues:StringLike", "dynamodb:LeadingKeys") => {
                    let Some(pk) = &call.leading_key else { return false };
                    if !list(values).iter().any(|p| glob(p.as_str().unwrap(), pk)) {
                        return false;
                    }
                }
                (op, key) => panic!("the IAM checker does not evaluate {op} on {key}"),
            }
        }
    }
    true
}

/// IAM's decision for one identity policy: an explicit Deny wins, then any Allow, else denied.
fn allowed(d: &Deployment, statements: &[Value], call: &Call) -> bool {
    let matching = |effect: &str| statements.iter().filter(|s| s["Effect"] == effect).any(|s| statement_matches(d, s, call));
    !matching("Deny") && matching("Allow")
}

// ---------------------------------------------------------------------------------------------
// Recording adapters: what each function group calls, as IAM actions on ARNs
// ---------------------------------------------------------------------------------------------

type Log = Arc<Mutex<Vec<Call>>>;

struct RecordingStore {
    inner: Arc<dyn Store>,
    group: &'static str,
    table_arn: String,
    log: Log,
}

/// DynamoDB on-demand request units, as AWS bills them (us-east-1 list rules, README "Cost"):
/// a strongly consistent read of up to 4 KB is 1 read unit (eventually consistent, as every index
/// read is, half); a write of up to 1 KB is 1 write unit; inside TransactWriteItems each item
/// costs twice that. Each secondary index an item is in costs a write of the item's size
/// (projection ALL), two when the write moves it to another index key (delete + put). Item size
/// is approximated by the JSON length of its attributes and names.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Units {
    read: f64,
    write: f64,
}

fn item_bytes(item: &Item) -> usize {
    let attrs: usize = item.attrs.iter().map(|(k, v)| k.len() + v.to_string().len()).sum();
    "pk".len() + item.key.pk.len() + "sk".len() + item.key.sk.len() + attrs
}

fn kib_units(bytes: usize, unit: usize) -> f64 {
    bytes.div_ceil(unit).max(1) as f64
}

/// The index keys an item carries (None where it is not in that index).
fn index_keys(item: Option<&Item>) -> Vec<Option<(Value, Value)>> {
    INDEXES
        .iter()
        .map(|i| {
            let item = item?;
            Some((item.attrs.get(i.pk_attr)?.clone(), item.attrs.get(i.sk_attr)?.clone()))
        })
        .collect()
}

/// Write units of writing one item from `before` to `after`, its index writes included.
fn write_units(before: Option<&Item>, after: Option<&Item>, transactional: bool) -> f64 {
    let size = before.map(item_bytes).unwrap_or(0).max(after.map(item_bytes).unwrap_or(0));
    let base = kib_units(size, 1024);
    let mut units = if transactional { 2.0 * base } else { base };
    for (b, a) in index_keys(before).into_iter().zip(index_keys(after)) {
        units += match (b, a) {
            (None, None) => 0.0,
            (Some(b), Some(a)) if b != a => 2.0 * base,
            _ => base,
        };
    }
    units
}

impl RecordingStore {
    fn record(&self, action: &'static str, arn: String, leading_key: Option<&str>, units: Units) {
        self.log.lock().unwrap().push(Call { group: self.group, action, arn, leading_key: leading_key.map(str::to_string), units });
    }

    /// The item as it is now, read past the recording (for metering only).
    async fn peek(&self, key: &Key) -> Option<Item> {
        self.inner.get(key).await.ok().flatten()
    }
}

#[async_trait::async_trait]
impl Store for RecordingStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        let found = self.inner.get(key).await?;
        let units = Units { read: kib_units(found.as_ref().map(item_bytes).unwrap_or(0), 4096), write: 0.0 };
        self.record("dynamodb:GetItem", self.table_arn.clone(), Some(&key.pk), units);
        Ok(found)
    }

    async fn put(&self, item: Item, condition: Condition) -> Result<(), StoreError> {
        let (key, before) = (item.key.clone(), self.peek(&item.key).await);
        let units = Units { read: 0.0, write: write_units(before.as_ref(), Some(&item), false) };
        let result = self.inner.put(item, condition).await;
        self.record("dynamodb:PutItem", self.table_arn.clone(), Some(&key.pk), units);
        result
    }

    async fn update(&self, key: &Key, update: Update, condition: Condition) -> Result<Item, StoreError> {
        let before = self.peek(key).await;
        let result = self.inner.update(key, update, condition).await;
        let after = result.as_ref().ok().cloned().or(before.clone());
        let units = Units { read: 0.0, write: write_units(before.as_ref(), after.as_ref(), false) };
        self.record("dynamodb:UpdateItem", self.table_arn.clone(), Some(&key.pk), units);
        result
    }

    async fn delete(&self, key: &Key, condition: Condition) -> Result<(), StoreError> {
        let before = self.peek(key).await;
        let units = Units { read: 0.0, write: write_units(before.as_ref(), None, false) };
        let result = self.inner.delete(key, condition).await;
        self.record("dynamodb:DeleteItem", self.table_arn.clone(), Some(&key.pk), units);
        result
    }

    async fn query(&self, query: Query) -> Result<Page, StoreError> {
        let (arn, share) = match query.index {
            Some(index) => (format!("{}/index/{}", self.table_arn, index.spec().name), 0.5),
            None => (self.table_arn.clone(), 1.0),
        };
        let partition = query.partition.clone();
        let page = self.inner.query(query).await?;
        let bytes: usize = page.items.iter().map(item_bytes).sum();
        self.record("dynamodb:Query", arn, Some(&partition), Units { read: share * kib_units(bytes, 4096), write: 0.0 });
        Ok(page)
    }

    /// IAM authorizes TransactWriteItems per item, by the action each write performs.
    async fn transact(&self, writes: Vec<TxWrite>) -> Result<(), StoreError> {
        let mut before = Vec::new();
        for w in &writes {
            before.push(self.peek(w.key()).await);
        }
        let result = self.inner.transact(writes.clone()).await;
        for (w, before) in writes.iter().zip(before) {
            let after = match w {
                TxWrite::Put { item, .. } => Some(item.clone()),
                TxWrite::Update { key, .. } => self.peek(key).await,
                TxWrite::Delete { .. } => None,
                TxWrite::ConditionCheck { .. } => before.clone(),
            };
            let (action, units) = match w {
                TxWrite::Put { .. } => ("dynamodb:PutItem", write_units(before.as_ref(), after.as_ref(), true)),
                TxWrite::Update { .. } => ("dynamodb:UpdateItem", write_units(before.as_ref(), after.as_ref(), true)),
                TxWrite::Delete { .. } => ("dynamodb:DeleteItem", write_units(before.as_ref(), None, true)),
                // A condition check writes nothing, but is billed as a transactional write.
                TxWrite::ConditionCheck { .. } => ("dynamodb:ConditionCheckItem", 2.0 * kib_units(before.as_ref().map(item_bytes).unwrap_or(0), 1024)),
            };
            self.record(action, self.table_arn.clone(), Some(&w.key().pk), Units { read: 0.0, write: units });
        }
        result
    }
}

struct RecordingQueue {
    inner: Arc<dyn Queue>,
    group: &'static str,
    aws: AwsConfig,
    log: Log,
}

impl RecordingQueue {
    /// The SQS calls behind one port call (the adapter may skip GetQueueUrl when it has the
    /// URL cached: recording it anyway asks IAM for no less than the adapter may need).
    fn record(&self, actions: &[&'static str], name: &str) {
        let arn = format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{}", self.aws.queue_name(name));
        let mut log = self.log.lock().unwrap();
        for action in actions {
            log.push(Call { group: self.group, action, arn: arn.clone(), leading_key: None, units: Units::default() });
        }
    }
}

#[async_trait::async_trait]
impl Queue for RecordingQueue {
    async fn create_queue(&self, name: &str) -> Result<(), QueueError> {
        // The adapter creates the dead-letter queue, reads its ARN, then creates the queue.
        self.record(&["sqs:CreateQueue", "sqs:GetQueueAttributes"], &queue_spec().dlq_name(name));
        self.record(&["sqs:CreateQueue"], name);
        self.inner.create_queue(name).await
    }

    async fn send_batch(&self, queue: &str, bodies: Vec<String>) -> Result<Vec<String>, QueueError> {
        // SendMessageBatch is authorized as sqs:SendMessage.
        self.record(&["sqs:GetQueueUrl", "sqs:SendMessage"], queue);
        self.inner.send_batch(queue, bodies).await
    }

    async fn receive(&self, queue: &str, max: usize, wait: Duration, visibility: Duration) -> Result<Vec<Message>, QueueError> {
        self.record(&["sqs:GetQueueUrl", "sqs:ReceiveMessage"], queue);
        self.inner.receive(queue, max, wait, visibility).await
    }

    async fn extend_visibility(&self, queue: &str, receipt_handle: &str, visibility: Duration) -> Result<(), QueueError> {
        self.record(&["sqs:GetQueueUrl", "sqs:ChangeMessageVisibility"], queue);
        self.inner.extend_visibility(queue, receipt_handle, visibility).await
    }

    async fn delete(&self, queue: &str, receipt_handle: &str) -> Result<(), QueueError> {
        self.record(&["sqs:GetQueueUrl", "sqs:DeleteMessage"], queue);
        self.inner.delete(queue, receipt_handle).await
    }

    async fn approximate_depth(&self, queue: &str) -> Result<u64, QueueError> {
        self.record(&["sqs:GetQueueUrl", "sqs:GetQueueAttributes"], queue);
        self.inner.approximate_depth(queue).await
    }
}

// ---------------------------------------------------------------------------------------------
// The workers' queue credentials (infra/queue-access.md)
// ---------------------------------------------------------------------------------------------

/// What a worker may do on its own listings' queues: long-poll, delete what it finished, extend
/// visibility while it works (the heartbeat), read the depth; and look up a URL by name.
const WORKER_QUEUE_ACTIONS: [&str; 5] =
    ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"];
/// STS refuses an inline session policy longer than this many characters (AssumeRole `Policy`).
const SESSION_POLICY_CHARS_MAX: usize = 2_048;
/// Queues one credential may name: 16 ARNs of the longest names (a 24-byte prefix, a
/// `gpu-<uuid>` listing) in the longest region still fit SESSION_POLICY_CHARS_MAX (tested below);
/// a provider with more listings asks for one credential per group of 16.
const SESSION_POLICY_QUEUES_MAX: usize = 16;

/// The inline session policy the registry passes to `sts:AssumeRole` on the worker queue role:
/// the worker actions on exactly these queue ARNs (the caller's listings' queues, never their
/// dead-letter queues). The credentials' rights are this policy intersected with the role's.
fn worker_session_policy(queue_arns: &[String]) -> Result<String, String> {
    if queue_arns.is_empty() || queue_arns.len() > SESSION_POLICY_QUEUES_MAX {
        return Err(format!("1..={SESSION_POLICY_QUEUES_MAX} queues per credential, not {}", queue_arns.len()));
    }
    let dlq = queue_spec().dlq_suffix;
    if let Some(bad) = queue_arns.iter().find(|a| !a.starts_with("arn:") || a.contains('*') || a.ends_with(dlq)) {
        return Err(format!("{bad} is not one listing queue's ARN"));
    }
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{ "Effect": "Allow", "Action": WORKER_QUEUE_ACTIONS, "Resource": queue_arns }],
    });
    let text = serde_json::to_string(&policy).expect("serializable");
    if text.len() > SESSION_POLICY_CHARS_MAX {
        return Err(format!("the session policy has {} characters, STS takes {SESSION_POLICY_CHARS_MAX}", text.len()));
    }
    Ok(text)
}

#[test]
fn the_worker_session_policy_fits_sts_and_names_only_the_given_queues() {
    let longest = |i: usize| format!("arn:aws-us-gov:sqs:ap-southeast-5:{ACCOUNT}:{}-gpu-0190a0a0-0000-7000-8000-{i:012}", "p".repeat(24));
    let arns: Vec<String> = (0..SESSION_POLICY_QUEUES_MAX).map(longest).collect();
    let text = worker_session_policy(&arns).expect("16 of the longest ARNs fit");
    assert!(text.len() <= SESSION_POLICY_CHARS_MAX);
    let policy: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(policy["Statement"].as_array().unwrap().len(), 1);
    assert_eq!(policy["Statement"][0]["Resource"].as_array().unwrap().len(), SESSION_POLICY_QUEUES_MAX);
    // One more queue is refused rather than sent to STS to fail there.
    let too_many: Vec<String> = (0..=SESSION_POLICY_QUEUES_MAX).map(longest).collect();
    assert!(worker_session_policy(&too_many).is_err());
    assert!(worker_session_policy(&[]).is_err());
    // Never a wildcard, never a dead-letter queue.
    assert!(worker_session_policy(&[format!("arn:aws:sqs:{REGION}:{ACCOUNT}:p-gpu-*")]).is_err());
    assert!(worker_session_policy(&[format!("arn:aws:sqs:{REGION}:{ACCOUNT}:p-gpu-1-dlq")]).is_err());
}

// ---------------------------------------------------------------------------------------------
// The stack on moto: the API flow over the template's table and queues
// ---------------------------------------------------------------------------------------------

/// API Gateway's stand-in: routes each request by the template's route keys to its group's
/// router, and answers 404 itself for any other path, as the HTTP API does.
struct Gateway {
    routes: Vec<Route>,
    routers: BTreeMap<String, axum::Router>,
}

fn route_matches(template: &str, path: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    a.len() == b.len() && a.iter().zip(&b).all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}

async fn dispatch(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let route = gw.routes.iter().find(|r| r.method == request.method().as_str() && route_matches(&r.path, &path));
    match route {
        Some(r) => gw.routers[&r.group].clone().oneshot(request).await.into_response(),
        None => (axum::http::StatusCode::NOT_FOUND, "{\"message\":\"Not Found\"}").into_response(),
    }
}

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    async fn call(&self, method: reqwest::Method, path: &str, key: Option<&str>, body: Option<Value>, idem: Option<&str>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(idem) = idem {
            req = req.header("Idempotency-Key", idem);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn post(&self, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, key, Some(body), None).await
    }

    async fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, key, None, None).await
    }
}

fn signed_receipt(job: &Value, signing: &NamedSigningKey, units_ms: u64) -> Value {
    // The job as the API served it; the market's one receipt builder fills the body from it.
    let job: aitbc_market::jobs::JobRecord = serde_json::from_value(job.clone()).unwrap();
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let metered = aitbc_core::receipt::Metered { units: GpuMillis::from_millis(units_ms), unit_type: aitbc_core::receipt::UnitType::CpuSeconds, tokens: None };
    let body = job.receipt_body(metered, now_s - 1, now_s).unwrap();
    serde_json::to_value(body.sign(signing).unwrap()).unwrap()
}

fn run_moto_stack(python: &Path, endpoint: &str, prefix: &str) -> Value {
    let out = std::process::Command::new(python)
        .arg(repo().join("infra/moto_stack.py"))
        .args(["--endpoint", endpoint, "--template"])
        .arg(template_path())
        .args(["--prefix", prefix, "--stack-name", prefix])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "infra/moto_stack.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("moto_stack.py prints JSON")
}

/// What one run of the API flow left for the checks after it.
struct Flow {
    gpu_id: String,
    job_id: String,
    /// Each step's name and the calls it made (from the shared log).
    steps: Vec<(String, Vec<Call>)>,
}

/// The API flow over HTTP: a provider lists a GPU, a client funds an account, quotes and submits
/// a job; the provider's worker receives it from the listing's queue, claims, starts,
/// heartbeats (extending the message's visibility) and completes it with a signed receipt; the
/// client reads and verifies the receipt. Steps named `JOB ...` are what every job costs.
async fn job_flow(api: &Client, worker: &RecordingQueue, log: &Log) -> Flow {
    let steps: Mutex<Vec<(String, Vec<Call>)>> = Mutex::default();
    let seen = Mutex::new(log.lock().unwrap().len());
    let mark = |name: &str| {
        let log = log.lock().unwrap();
        let mut seen = seen.lock().unwrap();
        steps.lock().unwrap().push((name.to_string(), log[*seen..].to_vec()));
        *seen = log.len();
    };
    // A provider lists a GPU.
    let (s, provider) = api.post("/v1/accounts", None, json!({"role": "provider"})).await;
    assert_eq!(s, 201, "{provider}");
    mark("provider opens an account");
    let pkey = provider["api_key"].as_str().unwrap().to_string();
    let signing = NamedSigningKey::from_seed(KeyId::parse(&format!("prov-{}", &provider["address"].as_str().unwrap()[4..16])).unwrap(), [7; 32]);
    let (s, body) = api.post("/v1/providers/keys", Some(&pkey), serde_json::to_value(signing.public()).unwrap()).await;
    assert_eq!(s, 201, "{body}");
    mark("provider registers a signing key");
    let listing = json!({"name": "My-GPU", "memory_gib": 24, "cuda_version": "12.1", "base_price": "0.05", "region": "us-west", "models": ["llama3.2"], "count": 1});
    let (s, body) = api.call(reqwest::Method::POST, "/v1/listings", Some(&pkey), Some(listing), Some("listing-1")).await;
    assert_eq!(s, 201, "{body}");
    let gpu_id = body["gpu_id"].as_str().unwrap().to_string();
    mark("provider lists a GPU (queue created)");
    let (s, body) = api.post(&format!("/v1/listings/{gpu_id}/heartbeat"), Some(&pkey), json!({"worker_id": "wrk-1"})).await;
    assert_eq!(s, 200, "{body}");
    mark("listing heartbeat (every 10 s per worker)");

    // A client funds its account, gets a quote and submits a job.
    let (s, client) = api.post("/v1/accounts", None, json!({"role": "client"})).await;
    assert_eq!(s, 201, "{client}");
    mark("client opens an account");
    let ckey = client["api_key"].as_str().unwrap().to_string();
    let caddr = client["address"].as_str().unwrap().to_string();
    let (s, body) = api.call(reqwest::Method::POST, &format!("/v1/accounts/{caddr}/deposits"), Some(&ckey), Some(json!({"amount": "100"})), Some("fund-1")).await;
    assert_eq!(s, 201, "{body}");
    mark("client deposits");
    let (s, body) = api.get("/v1/rate-card", None).await;
    assert_eq!(s, 200, "{body}");
    mark("rate card");
    let ask = json!({"model": "llama3.2", "units": "2.5", "region": "us-west", "gpu_id": gpu_id});
    // With a key and an Idempotency-Key the pricing group writes an idempotency record.
    let (s, quote) = api.call(reqwest::Method::POST, "/v1/quotes", Some(&ckey), Some(ask), Some("quote-1")).await;
    assert_eq!(s, 200, "{quote}");
    assert_eq!(quote["terms"]["gpu_id"], gpu_id.as_str());
    mark("JOB quote (keyed)");
    let submit = json!({"quote": quote, "spec": {"kind": "vector_add", "n": 1024, "seed": 1}});
    let (s, job) = api.call(reqwest::Method::POST, "/v1/jobs", Some(&ckey), Some(submit), Some("job-1")).await;
    assert_eq!(s, 201, "{job}");
    let job_id = job["job_id"].as_str().unwrap().to_string();
    mark("JOB submit");

    // The provider's worker, with its queue credentials, takes the message off its listing's queue.
    let messages = worker.receive(&gpu_id, 1, Duration::from_secs(1), Duration::from_secs(30)).await.unwrap();
    assert_eq!(messages.len(), 1, "the submitted job's message is on the listing's queue");
    assert!(messages[0].body.contains(&job_id), "{}", messages[0].body);
    mark("JOB worker receives the message");
    let (s, claimed) = api.post(&format!("/v1/jobs/{job_id}/claim"), Some(&pkey), json!({"worker_id": "wrk-1"})).await;
    assert_eq!(s, 200, "{claimed}");
    mark("JOB claim");
    let (s, body) = api.post(&format!("/v1/jobs/{job_id}/start"), Some(&pkey), json!({"worker_id": "wrk-1"})).await;
    assert_eq!(s, 200, "{body}");
    mark("JOB start");
    let (s, claimed) = api.get(&format!("/v1/jobs/{job_id}"), Some(&pkey)).await;
    assert_eq!(s, 200, "{claimed}");
    mark("(test only) read the job");
    let (s, body) = api.post(&format!("/v1/jobs/{job_id}/heartbeat"), Some(&pkey), json!({"worker_id": "wrk-1", "lease_ms": 60000})).await;
    assert_eq!(s, 200, "{body}");
    mark("JOB heartbeat, each (every 10 s while it runs)");
    worker.extend_visibility(&gpu_id, &messages[0].receipt_handle, Duration::from_secs(60)).await.unwrap();
    mark("JOB worker extends visibility, each (with each heartbeat)");
    let completion = json!({
        "worker_id": "wrk-1",
        "receipt": signed_receipt(&claimed, &signing, 1_500),
        "output": {"checksum": "ab", "backend": "cpu", "device_ms": 1500, "wall_ms": 1600}
    });
    let (s, done) = api.post(&format!("/v1/jobs/{job_id}/complete"), Some(&pkey), completion).await;
    assert_eq!(s, 200, "{done}");
    mark("JOB complete (receipt verified and stored)");
    worker.delete(&gpu_id, &messages[0].receipt_handle).await.unwrap();
    mark("JOB worker deletes the message");

    // Reads and a keyed verification on the receipts group, the listing's status on registry.
    let receipt = done["receipt"].clone();
    let (s, body) = api.get(&format!("/v1/receipts/{}", receipt["receipt_id"].as_str().unwrap()), Some(&ckey)).await;
    assert_eq!((s, &body), (200, &receipt));
    mark("client reads the receipt");
    let (s, body) = api.call(reqwest::Method::POST, "/v1/receipts/verify", Some(&ckey), Some(receipt), Some("verify-1")).await;
    assert_eq!((s, &body["valid"]), (200, &json!(true)), "{body}");
    mark("client verifies the receipt (keyed)");
    let (s, body) = api.get(&format!("/v1/listings/{gpu_id}/status"), None).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["completed_jobs"], 1, "{body}");
    mark("listing status");
    let (s, body) = api.get(&format!("/v1/accounts/{caddr}"), Some(&ckey)).await;
    assert_eq!(s, 200, "{body}");
    mark("client reads its balance");
    Flow { gpu_id, job_id, steps: steps.into_inner().unwrap() }
}

/// A group's function URL: every path reaches its router (behind recording adapters), on a
/// loopback port; returns a client of it.
async fn serve_function_url(group: Group, store: Arc<dyn Store>, queue: Arc<dyn Queue>, aws: &AwsConfig, log: &Log) -> Client {
    let name = aitbc_functions::FUNCTION_GROUPS.into_iter().find(|g| group_named(g) == group).expect("a named group");
    let table_arn = format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{}", aws.table_name());
    let store = RecordingStore { inner: store, group: name, table_arn, log: log.clone() };
    let queue = RecordingQueue { inner: queue, group: name, aws: aws.clone(), log: log.clone() };
    let market = Market::new(Arc::new(store), Arc::new(queue), MarketConfig::default(), Settings::default(), test_key(), Arc::new(SystemClock));
    let router = router_for(group, AppState { market });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Client { base, http: reqwest::Client::new() }
}

/// A streamed chat completion through the chat group's function URL, answered by a worker
/// through API Gateway's jobs routes: the client sees the worker's first pieces of text before
/// the job completes, then the finish, the usage the receipt carries, and `[DONE]`.
async fn chat_flow(api: &Client, chat: &Client, worker: &RecordingQueue) {
    let (s, provider) = api.post("/v1/accounts", None, json!({"role": "provider"})).await;
    assert_eq!(s, 201, "{provider}");
    let pkey = provider["api_key"].as_str().unwrap().to_string();
    let signing = NamedSigningKey::from_seed(KeyId::parse(&format!("prov-{}", &provider["address"].as_str().unwrap()[4..16])).unwrap(), [9; 32]);
    let (s, body) = api.post("/v1/providers/keys", Some(&pkey), serde_json::to_value(signing.public()).unwrap()).await;
    assert_eq!(s, 201, "{body}");
    let listing = json!({"name": "Chat-GPU", "memory_gib": 24, "cuda_version": "12.1", "base_price": "0.05", "region": "us-west", "models": ["smollm2:135m"], "count": 1});
    let (s, body) = api.call(reqwest::Method::POST, "/v1/listings", Some(&pkey), Some(listing), Some("chat-listing-1")).await;
    assert_eq!(s, 201, "{body}");
    let gpu_id = body["gpu_id"].as_str().unwrap().to_string();
    // The worker reports the model loaded: only then is it served.
    let (s, body) = api.post(&format!("/v1/listings/{gpu_id}/heartbeat"), Some(&pkey), json!({"worker_id": "wrk-chat", "models": ["smollm2:135m"]})).await;
    assert_eq!(s, 200, "{body}");
    let (s, client) = api.post("/v1/accounts", None, json!({"role": "client"})).await;
    assert_eq!(s, 201, "{client}");
    let ckey = client["api_key"].as_str().unwrap().to_string();
    let caddr = client["address"].as_str().unwrap().to_string();
    let (s, body) = api.call(reqwest::Method::POST, &format!("/v1/accounts/{caddr}/deposits"), Some(&ckey), Some(json!({"amount": "100"})), Some("chat-fund-1")).await;
    assert_eq!(s, 201, "{body}");

    // The models the function URL serves.
    let (s, models) = chat.get("/v1/models", Some(&ckey)).await;
    assert_eq!(s, 200, "{models}");
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == "smollm2:135m"), "{models}");

    // The client's stream, read as it arrives.
    let seen = Arc::new(Mutex::new(String::new()));
    let request = chat.http.post(format!("{}/v1/chat/completions", chat.base)).bearer_auth(&ckey).json(&json!({
        "model": "smollm2:135m", "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 16, "stream": true, "stream_options": {"include_usage": true}, "gpu_id": gpu_id,
    }));
    let reader = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-type"], "text/event-stream");
            while let Some(bytes) = tokio::time::timeout(Duration::from_secs(30), response.chunk()).await.expect("the stream stalls").unwrap() {
                seen.lock().unwrap().push_str(&String::from_utf8_lossy(&bytes));
            }
        })
    };

    // The worker takes the job off its listing's queue and runs it.
    let mut messages = Vec::new();
    for _ in 0..20 {
        messages = worker.receive(&gpu_id, 1, Duration::from_secs(1), Duration::from_secs(30)).await.unwrap();
        if !messages.is_empty() {
            break;
        }
    }
    assert_eq!(messages.len(), 1, "the chat request's job is on the listing's queue");
    let job_id = serde_json::from_str::<Value>(&messages[0].body).ok().and_then(|m| m["job_id"].as_str().map(String::from)).unwrap_or_else(|| panic!("{}", messages[0].body));
    let (s, body) = api.post(&format!("/v1/jobs/{job_id}/claim"), Some(&pkey), json!({"worker_id": "wrk-chat"})).await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = api.post(&format!("/v1/jobs/{job_id}/start"), Some(&pkey), json!({"worker_id": "wrk-chat"})).await;
    assert_eq!(s, 200, "{body}");
    let pieces = ["The capital of France", " is Paris."];
    for (seq, text) in pieces.iter().enumerate() {
        let (s, body) = api.post(&format!("/v1/jobs/{job_id}/chunks"), Some(&pkey), json!({"worker_id": "wrk-chat", "seq": seq, "text": text})).await;
        assert_eq!(s, 204, "{body}");
    }
    // The pieces reach the client while the job is still running.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !seen.lock().unwrap().contains(" is Paris.") {
        assert!(std::time::Instant::now() < deadline, "the streamed pieces did not arrive before completion: {}", seen.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!seen.lock().unwrap().contains("[DONE]"));

    let (s, claimed) = api.get(&format!("/v1/jobs/{job_id}"), Some(&pkey)).await;
    assert_eq!(s, 200, "{claimed}");
    let text = pieces.concat();
    let record: aitbc_market::jobs::JobRecord = serde_json::from_value(claimed).unwrap();
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let metered = aitbc_core::receipt::Metered { units: GpuMillis::from_millis(900), unit_type: aitbc_core::receipt::UnitType::CpuSeconds, tokens: Some((7, 6)) };
    let receipt = serde_json::to_value(record.receipt_body(metered, now_s - 1, now_s).unwrap().sign(&signing).unwrap()).unwrap();
    let output = json!({
        "checksum": aitbc_core::jobspec::checksum_bytes(text.as_bytes()), "backend": "cpu", "device_ms": 900, "wall_ms": 1000,
        "text": {"text": text, "finish_reason": "stop", "prompt_tokens": 7, "completion_tokens": 6, "load_ms": 0, "prefill_ms": 100, "decode_ms": 800, "device": "cpu"},
    });
    let (s, done) = api.post(&format!("/v1/jobs/{job_id}/complete"), Some(&pkey), json!({"worker_id": "wrk-chat", "receipt": receipt, "output": output})).await;
    assert_eq!(s, 200, "{done}");
    worker.delete(&gpu_id, &messages[0].receipt_handle).await.unwrap();

    tokio::time::timeout(Duration::from_secs(30), reader).await.expect("the stream ends").unwrap();
    let events: Vec<Value> = seen.lock().unwrap().lines().filter_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
    let streamed: String = events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(streamed, text);
    assert!(events.iter().any(|e| e["choices"][0]["finish_reason"] == "stop"), "{events:?}");
    let usage = events.iter().rev().find(|e| e["usage"].is_object()).unwrap_or_else(|| panic!("no usage chunk: {events:?}"));
    assert_eq!((usage["usage"]["prompt_tokens"].as_u64(), usage["usage"]["completion_tokens"].as_u64(), usage["usage"]["total_tokens"].as_u64()), (Some(7), Some(6), Some(13)));
    assert!(seen.lock().unwrap().trim_end().ends_with("data: [DONE]"), "{}", seen.lock().unwrap());
}

/// Serves the template's routes over `store` and `queue`, each group's router behind recording
/// adapters, on a loopback port; returns a client of it.
async fn serve_gateway(t: &Value, store: Arc<dyn Store>, queue: Arc<dyn Queue>, aws: &AwsConfig, log: &Log) -> Client {
    let table_arn = format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{}", aws.table_name());
    let market_for = |group: &'static str| {
        let store = RecordingStore { inner: store.clone(), group, table_arn: table_arn.clone(), log: log.clone() };
        let queue = RecordingQueue { inner: queue.clone(), group, aws: aws.clone(), log: log.clone() };
        Market::new(Arc::new(store), Arc::new(queue), MarketConfig::default(), Settings::default(), test_key(), Arc::new(SystemClock))
    };
    // The fee account, opened once per deployment (not a function group's call: not checked).
    market_for("bootstrap").bootstrap().await.unwrap();
    let mut routers = BTreeMap::new();
    for group in aitbc_functions::FUNCTION_GROUPS {
        routers.insert(group.to_string(), router_for(group_named(group), AppState { market: market_for(group) }));
    }
    let gateway = axum::Router::new().fallback(dispatch).with_state(Arc::new(Gateway { routes: template_routes(t), routers }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, gateway).await.unwrap() });
    Client { base, http: reqwest::Client::new() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_on_moto_serves_the_api_flow_within_each_roles_rights() {
    let Some(python) = python() else {
        return missing("AITBC_TEST_PYTHON is not set to a Python with boto3 and PyYAML");
    };
    let Some(endpoint) = aws_endpoint() else {
        return missing("AITBC_TEST_AWS_ENDPOINT is not set (moto_server)");
    };
    let t = template();
    // A fresh prefix per run: the stack, table and queues of earlier runs stay out of the way.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let prefix = format!("infra{:x}", nanos % (1 << 40));
    let stack = run_moto_stack(&python, &endpoint, &prefix);

    // What CloudFormation created is what the spec says (moto's CloudFormation ignores the TTL
    // and point-in-time recovery properties: those are checked in the template above).
    let spec = table_spec();
    let table_name = format!("{prefix}-{}", spec.name_suffix);
    assert_eq!(stack["resources"]["Table"], table_name.as_str(), "{stack}");
    let table = &stack["table"];
    assert_eq!(table["BillingModeSummary"]["BillingMode"], spec.billing_mode);
    assert_eq!(table["KeySchema"], json!([{"AttributeName": spec.pk_attr, "KeyType": "HASH"}, {"AttributeName": spec.sk_attr, "KeyType": "RANGE"}]));
    let attrs: BTreeSet<String> = table["AttributeDefinitions"].as_array().unwrap().iter().map(|a| format!("{}:{}", a["AttributeName"].as_str().unwrap(), a["AttributeType"].as_str().unwrap())).collect();
    let want: BTreeSet<String> = spec.attribute_definitions.iter().map(|a| format!("{a}:S")).collect();
    assert_eq!(attrs, want);
    let gsis = table["GlobalSecondaryIndexes"].as_array().unwrap();
    assert_eq!(gsis.len(), INDEXES.len());
    for index in INDEXES {
        let g = gsis.iter().find(|g| g["IndexName"] == index.name).unwrap_or_else(|| panic!("no index {}", index.name));
        assert_eq!(g["KeySchema"], json!([{"AttributeName": index.pk_attr, "KeyType": "HASH"}, {"AttributeName": index.sk_attr, "KeyType": "RANGE"}]));
        assert_eq!(g["Projection"]["ProjectionType"], "ALL");
    }
    let dlq_name = format!("{prefix}-scheduler{}", queue_spec().dlq_suffix);
    assert_eq!(stack["queues"][&dlq_name]["MessageRetentionPeriod"], queue_spec().dlq_retention_s.to_string(), "{stack}");

    // The functions' adapters, pointed at the stack's resources (no provisioning: the table must
    // be the one CloudFormation made), each group behind recording wrappers.
    let aws = AwsConfig::emulator(&endpoint, &prefix);
    let store: Arc<dyn Store> = Arc::new(DynamoStore::connect(&aws).await.unwrap());
    let queue: Arc<dyn Queue> = Arc::new(SqsQueue::connect(&aws).await.unwrap());
    let d = Deployment { t: &t, prefix: prefix.clone() };
    let log: Log = Arc::default();
    let api = serve_gateway(&t, store.clone(), queue.clone(), &aws, &log).await;

    let worker = RecordingQueue { inner: queue.clone(), group: "worker", aws: aws.clone(), log: log.clone() };
    let flow = job_flow(&api, &worker, &log).await;
    let (gpu_id, job_id) = (flow.gpu_id.clone(), flow.job_id.clone());
    // The OpenAI API behind the chat group's function URL, streamed, over the same resources.
    let chat = serve_function_url(Group::Chat, store.clone(), queue.clone(), &aws, &log).await;
    chat_flow(&api, &chat, &worker).await;
    // A path no route names never reaches a function.
    let (s, _) = api.get("/v1/admin/secrets", None).await;
    assert_eq!(s, 404);

    // The listing's queues, as the registry created them at run time, have the settings the
    // template's ListingQueues mapping states and a name its IAM patterns cover.
    let settings = &t["Mappings"]["ListingQueues"]["Settings"];
    let physical = aws.queue_name(&gpu_id);
    assert!(physical.starts_with(&format!("{prefix}-{}", settings["NamePrefix"].as_str().unwrap())), "{physical}");
    let sqs = SqsQueue::connect(&aws).await.unwrap();
    let url = sqs.client().get_queue_url().queue_name(&physical).send().await.unwrap().queue_url.unwrap();
    let attributes = sqs.client().get_queue_attributes().queue_url(&url).attribute_names("All".into()).send().await.unwrap();
    let attr = |name: &str| attributes.attributes().and_then(|a| a.iter().find(|(k, _)| k.as_str() == name).map(|(_, v)| v.clone())).unwrap_or_default();
    assert_eq!(attr("VisibilityTimeout"), settings["VisibilityTimeout"].to_string());
    assert_eq!(attr("MessageRetentionPeriod"), settings["MessageRetentionPeriod"].to_string());
    let redrive: Value = serde_json::from_str(&attr("RedrivePolicy")).unwrap();
    assert_eq!(as_u64(&redrive["maxReceiveCount"]), as_u64(&settings["MaxReceiveCount"]), "{redrive}");
    let dlq_arn = redrive["deadLetterTargetArn"].as_str().unwrap();
    assert!(dlq_arn.ends_with(&format!(":{physical}{}", settings["DeadLetterSuffix"].as_str().unwrap())), "{dlq_arn}");

    // The scheduler's tasks over the same table and queues.
    scheduler_runs(store.clone(), queue.clone(), &aws, &log).await;

    // Every call each group made is one its role allows.
    let calls = log.lock().unwrap().clone();
    let roles: BTreeMap<&str, &str> = [
        ("registry", "RegistryRole"),
        ("pricing", "PricingRole"),
        ("jobs", "JobsRole"),
        ("receipts", "ReceiptsRole"),
        ("accounts", "AccountsRole"),
        ("chat", "ChatRole"),
        ("worker", "WorkerQueueRole"),
        ("scheduler", "SchedulerRole"),
    ]
    .into();
    let mut denied = Vec::new();
    for call in calls.iter().filter(|c| c.group != "bootstrap") {
        let statements = d.role_statements(roles[call.group]);
        if !allowed(&d, &statements, call) {
            denied.push(format!("{} {} {} (key {:?})", call.group, call.action, call.arn, call.leading_key));
        }
    }
    assert!(denied.is_empty(), "the template's roles refuse calls the code makes:\n{}", denied.join("\n"));
    for group in roles.keys() {
        assert!(calls.iter().any(|c| c.group == *group), "the flow made no call as {group}: the check above would be vacuous");
    }
    // The read-only groups write nothing but idempotency records (and since idempotency covers
    // only the writes the document declares the header on, their reads write none at all).
    for group in ["pricing", "receipts"] {
        let writes: Vec<&Call> = calls.iter().filter(|c| c.group == group && c.action != "dynamodb:GetItem" && c.action != "dynamodb:Query").collect();
        assert!(writes.iter().all(|c| c.leading_key.as_deref().is_some_and(|k| k.starts_with("IDEM#"))), "{group}: {writes:?}");
    }

    // And the roles refuse what the code must not do (the evaluator is not permissive).
    let call = |group: &'static str, action: &'static str, arn: String, pk: Option<&str>| Call { group, action, arn, leading_key: pk.map(str::to_string), units: Units::default() };
    let queue_arn = d.queue_arn(&physical);
    let dlq = d.queue_arn(&format!("{physical}{}", queue_spec().dlq_suffix));
    let refused = [
        ("PricingRole", call("pricing", "dynamodb:PutItem", d.table_arn(), Some(&format!("JOB#{job_id}")))),
        ("ReceiptsRole", call("receipts", "dynamodb:UpdateItem", d.table_arn(), Some("ACCOUNT#x"))),
        ("PricingRole", call("pricing", "dynamodb:Scan", d.table_arn(), None)),
        ("JobsRole", call("jobs", "sqs:CreateQueue", queue_arn.clone(), None)),
        ("JobsRole", call("jobs", "sqs:ReceiveMessage", queue_arn.clone(), None)),
        ("ChatRole", call("chat", "sqs:ReceiveMessage", queue_arn.clone(), None)),
        ("ChatRole", call("chat", "sqs:CreateQueue", queue_arn.clone(), None)),
        ("AccountsRole", call("accounts", "sqs:SendMessage", queue_arn.clone(), None)),
        ("RegistryRole", call("registry", "dynamodb:DeleteTable", d.table_arn(), None)),
        ("RegistryRole", call("registry", "sqs:CreateQueue", d.queue_arn("someone-elses-queue"), None)),
        ("WorkerQueueRole", call("worker", "sqs:ReceiveMessage", dlq.clone(), None)),
        ("WorkerQueueRole", call("worker", "sqs:SendMessage", queue_arn.clone(), None)),
        ("WorkerQueueRole", call("worker", "dynamodb:GetItem", d.table_arn(), Some("JOB#x"))),
    ];
    for (role, c) in &refused {
        assert!(!allowed(&d, &d.role_statements(role), c), "{role} allows {c:?}");
    }

    // The vended credentials: the role's rights intersected with the session policy for this
    // provider's listing queues; another listing's queue is out of reach.
    let session: Value = serde_json::from_str(&worker_session_policy(std::slice::from_ref(&queue_arn)).unwrap()).unwrap();
    let session = session["Statement"].as_array().unwrap().clone();
    let role = d.role_statements("WorkerQueueRole");
    let other = d.queue_arn(&aws.queue_name("gpu-0190a0a0-0000-7000-8000-00000000beef"));
    for action in WORKER_QUEUE_ACTIONS {
        let own = call("worker", action, queue_arn.clone(), None);
        assert!(allowed(&d, &role, &own) && allowed(&d, &session, &own), "{action} on the provider's own queue");
        let theirs = call("worker", action, other.clone(), None);
        assert!(allowed(&d, &role, &theirs) && !allowed(&d, &session, &theirs), "{action} on another listing's queue must be the session policy's to refuse");
    }
    // The role trusts the registry function's role only.
    let trust = &t["Resources"]["WorkerQueueRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0];
    let registry_role = format!("arn:aws:iam::{ACCOUNT}:role/{}", d.eval(&t["Resources"]["RegistryRole"]["Properties"]["RoleName"]));
    assert_eq!(d.eval(&trust["Condition"]["ArnEquals"]["aws:PrincipalArn"]), registry_role);
    let assume = call("registry", "sts:AssumeRole", d.eval(&json!({"Fn::GetAtt": ["WorkerQueueRole", "Arn"]})), None);
    assert!(allowed(&d, &d.role_statements("RegistryRole"), &assume));
    assert!(!allowed(&d, &d.role_statements("JobsRole"), &Call { group: "jobs", ..assume.clone() }));
}

/// What EventBridge delivers for one scheduled rule: its input transformer applied to a
/// scheduled event (string placeholders inside quotes, the `resources` array raw).
fn scheduled_event(target: &Value, rule_arn: &str) -> String {
    let transformer = &target["InputTransformer"];
    let paths = transformer["InputPathsMap"].as_object().expect("InputPathsMap");
    let sample = json!({
        "id": "cdc73f9d-aea9-11e3-9d5a-835b769c0d9c", "time": "2026-11-22T02:00:00Z",
        "account": ACCOUNT, "region": REGION, "resources": [rule_arn],
    });
    let mut text = transformer["InputTemplate"].as_str().expect("InputTemplate").to_string();
    for (name, path) in paths {
        let value = &sample[path.as_str().unwrap().strip_prefix("$.").expect("a top-level path")];
        let value = value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
        text = text.replace(&format!("<{name}>"), &value);
    }
    text
}

#[test]
fn each_schedule_delivers_an_eventbridge_event_naming_its_task() {
    let t = template();
    let want = [("settle", "rate(1 hour)"), ("payout", "cron(0 2 * * ? *)"), ("sweep", "rate(1 minute)")];
    let rules = resources_of_type(&t, "AWS::Events::Rule");
    assert_eq!(rules.len(), want.len());
    let d = Deployment { t: &t, prefix: "aitbc-prod".into() };
    for (task, expression) in want {
        let (logical, rule) = rules
            .iter()
            .find(|(_, r)| d.eval(&r["Properties"]["Name"]).ends_with(&format!("-{task}")))
            .unwrap_or_else(|| panic!("no rule for {task}"));
        assert_eq!(rule["Properties"]["ScheduleExpression"], expression, "{logical}");
        let targets = rule["Properties"]["Targets"].as_array().unwrap();
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0]["Arn"], json!({"Fn::GetAtt": ["SchedulerFunction", "Arn"]}), "{logical}");
        let arn = format!("arn:aws:events:{REGION}:{ACCOUNT}:rule/{}", d.eval(&rule["Properties"]["Name"]));
        let text = scheduled_event(&targets[0], &arn);
        // The type the scheduler's Lambda handler takes (scheduler/src/bin/lambda.rs).
        let event: aws_lambda_events::eventbridge::EventBridgeEvent<Value> =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{logical}: {e}: {text}"));
        assert_eq!(event.detail["task"], task, "{logical}");
        assert_eq!(event.resources.as_deref(), Some(&[arn][..]));
        assert!(event.time.is_some() && event.id.is_some());
    }
}

#[test]
fn glob_matches_as_iam_does() {
    assert!(glob("arn:aws:sqs:*:*:p-gpu-*", "arn:aws:sqs:us-east-1:1:p-gpu-1-dlq"));
    assert!(glob("arn:aws:sqs:*:*:p-gpu-*-dlq", "arn:aws:sqs:us-east-1:1:p-gpu-1-dlq"));
    assert!(!glob("arn:aws:sqs:*:*:p-gpu-*-dlq", "arn:aws:sqs:us-east-1:1:p-gpu-1"));
    assert!(glob("IDEM#*", "IDEM#abc#k"));
    assert!(!glob("IDEM#*", "JOB#1"));
    assert!(glob("sqs:*", "sqs:ReceiveMessage"));
    assert!(!glob("dynamodb:GetItem", "dynamodb:GetItems"));
}

/// The scheduler's three tasks once each, over recording adapters as group `scheduler`: settle
/// (posts every completed receipt), payouts (a threshold of 1 nano-AITBC pays every provider
/// with earnings), sweep. Returns each task's calls.
async fn scheduler_runs(store: Arc<dyn Store>, queue: Arc<dyn Queue>, aws: &AwsConfig, log: &Log) -> Vec<(String, Vec<Call>)> {
    use aitbc_market::payouts::PayoutOptions;
    use aitbc_market::settlement::{NoProgress, SettleOptions};
    use aitbc_market::sweep::SweepOptions;
    let table_arn = format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{}", aws.table_name());
    let store = RecordingStore { inner: store, group: "scheduler", table_arn, log: log.clone() };
    let queue = RecordingQueue { inner: queue, group: "scheduler", aws: aws.clone(), log: log.clone() };
    let market = Market::new(Arc::new(store), Arc::new(queue), MarketConfig::default(), Settings::default(), test_key(), Arc::new(SystemClock));
    let mut out = Vec::new();
    let mut seen = log.lock().unwrap().len();
    let mut mark = |name: &str, out: &mut Vec<(String, Vec<Call>)>| {
        let log = log.lock().unwrap();
        out.push((name.to_string(), log[seen..].to_vec()));
        seen = log.len();
    };
    // One request in flight: moto_server is not safe under concurrent transactions (and the
    // counts do not depend on concurrency).
    // Every completion above was awaited: no grace is needed.
    let options = SettleOptions { in_flight_max: 1, grace_ms: 0, ..SettleOptions::default() };
    let settled = market.settle(&options, &NoProgress).await.expect("settle");
    assert!(settled.receipts > 0, "{settled:?}");
    mark("settle", &mut out);
    let threshold = aitbc_core::money::Amount::parse("0.000000001").unwrap();
    market.run_payouts(&PayoutOptions { threshold }, &NoProgress).await.expect("payouts");
    mark("payouts", &mut out);
    market.sweep(&SweepOptions::default(), &NoProgress).await.expect("sweep");
    mark("sweep", &mut out);
    out
}

/// Totals of one group of steps.
fn totals(calls: &[&Call]) -> (f64, f64, usize, usize) {
    let read: f64 = calls.iter().map(|c| c.units.read).sum::<f64>() + 0.0;
    let write: f64 = calls.iter().map(|c| c.units.write).sum::<f64>() + 0.0;
    let dynamo = calls.iter().filter(|c| c.action.starts_with("dynamodb:")).count();
    let sqs = calls.iter().filter(|c| c.action.starts_with("sqs:") && c.action != "sqs:GetQueueUrl").count();
    (read, write, dynamo, sqs)
}

/// Most DynamoDB request units and SQS requests one job may cost (submit with its quote, the
/// worker's receive, claim, start, one heartbeat with its visibility extension, complete, the
/// message's delete), settlement not included: the cost estimate in infra/README.md is built on
/// these counts, so a code change that raises them past these budgets must revisit it.
const JOB_READ_UNITS_MAX: f64 = 40.0;
const JOB_WRITE_UNITS_MAX: f64 = 120.0;
const JOB_SQS_REQUESTS_MAX: usize = 6;
/// Jobs the budget test settles in one run.
const SETTLED_JOBS: usize = 4;
/// Most request units settlement may spend per job when every job has its own provider and
/// client (the worst case: no two receipts share an account line).
const SETTLE_READ_UNITS_PER_JOB_MAX: f64 = 20.0;
const SETTLE_WRITE_UNITS_PER_JOB_MAX: f64 = 60.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_dynamodb_and_sqs_costs_are_counted_and_within_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = aitbc_store::provision::sqlite(dir.path().join("m.db"), &[], queue_spec()).await.unwrap();
    let (store, queue): (Arc<dyn Store>, Arc<dyn Queue>) = (Arc::new(store), Arc::new(queue));
    // Only for queue names and ARNs: no emulator is contacted.
    let aws = AwsConfig::emulator("http://127.0.0.1:9", "aitbc-prod");
    let log: Log = Arc::default();
    let api = serve_gateway(&template(), store.clone(), queue.clone(), &aws, &log).await;
    let worker = RecordingQueue { inner: queue.clone(), group: "worker", aws: aws.clone(), log: log.clone() };
    let flow = job_flow(&api, &worker, &log).await;
    // More jobs, each by its own provider and client (the most accounts a settlement can touch
    // per receipt), so that a settlement's per-batch work is shared as in production.
    for _ in 1..SETTLED_JOBS {
        job_flow(&api, &worker, &log).await;
    }
    let scheduled = scheduler_runs(store, queue, &aws, &log).await;

    eprintln!("{:<58} {:>6} {:>6} {:>7} {:>5}  calls", "step", "RRU", "WRU", "ddb ops", "sqs");
    for (name, calls) in &flow.steps {
        let calls: Vec<&Call> = calls.iter().collect();
        let (read, write, dynamo, sqs) = totals(&calls);
        let mut by_action: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &calls {
            *by_action.entry(c.action).or_default() += 1;
        }
        eprintln!("{name:<58} {read:>6.1} {write:>6.1} {dynamo:>7} {sqs:>5}  {by_action:?}");
    }
    for (name, calls) in &scheduled {
        let calls: Vec<&Call> = calls.iter().collect();
        let (read, write, dynamo, sqs) = totals(&calls);
        eprintln!("{:<58} {:>6.1} {:>6.1} {:>7.1} {sqs:>5}", format!("{name}, per job ({SETTLED_JOBS} jobs)"), read / SETTLED_JOBS as f64, write / SETTLED_JOBS as f64, dynamo as f64 / SETTLED_JOBS as f64);
    }
    let job: Vec<&Call> = flow.steps.iter().filter(|(n, _)| n.starts_with("JOB")).flat_map(|(_, c)| c.iter()).collect();
    let (read, write, dynamo, sqs) = totals(&job);
    eprintln!("{:<58} {read:>6.1} {write:>6.1} {dynamo:>7} {sqs:>5}", "per job (JOB steps, settlement not included)");
    let settle: Vec<&Call> = scheduled[0].1.iter().collect();
    let (s_read, s_write, _, _) = totals(&settle);
    assert!(s_write > 0.0, "settlement wrote nothing");
    assert!(s_read / SETTLED_JOBS as f64 <= SETTLE_READ_UNITS_PER_JOB_MAX, "settlement reads {} units per job", s_read / SETTLED_JOBS as f64);
    assert!(s_write / SETTLED_JOBS as f64 <= SETTLE_WRITE_UNITS_PER_JOB_MAX, "settlement writes {} units per job", s_write / SETTLED_JOBS as f64);
    assert!(dynamo > 0 && write > 0.0 && sqs > 0, "the job steps made no calls: nothing was counted");
    assert!(read <= JOB_READ_UNITS_MAX, "a job now reads {read} units, budget {JOB_READ_UNITS_MAX} (revisit the README's cost estimate)");
    assert!(write <= JOB_WRITE_UNITS_MAX, "a job now writes {write} units, budget {JOB_WRITE_UNITS_MAX} (revisit the README's cost estimate)");
    assert!(sqs <= JOB_SQS_REQUESTS_MAX, "a job now makes {sqs} SQS requests, budget {JOB_SQS_REQUESTS_MAX}");
}
