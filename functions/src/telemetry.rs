//! Tracing: a span per request with its id, route, status and latency; JSON logs under Lambda,
//! readable ones locally.

use axum::extract::MatchedPath;
use axum::http::Request;
use std::time::Duration;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::TraceLayer;
use tracing::Span;

type MakeSpan = fn(&Request<axum::body::Body>) -> Span;
type OnResponse = fn(&axum::http::Response<axum::body::Body>, Duration, &Span);

/// The request span and its closing log line.
pub fn trace_layer() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, MakeSpan, (), OnResponse> {
    TraceLayer::new_for_http()
        .make_span_with(make_span as MakeSpan)
        .on_request(())
        .on_response(on_response as OnResponse)
}

fn make_span(request: &Request<axum::body::Body>) -> Span {
    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str).unwrap_or("unmatched");
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info_span!("request", method = %request.method(), route, request_id, status = tracing::field::Empty, latency_ms = tracing::field::Empty)
}

fn on_response(response: &axum::http::Response<axum::body::Body>, latency: Duration, span: &Span) {
    span.record("status", response.status().as_u16());
    span.record("latency_ms", latency.as_secs_f64() * 1_000.0);
    tracing::debug!(parent: span, status = response.status().as_u16(), latency_us = latency.as_micros() as u64, "response");
}

/// Installs the subscriber: JSON lines (Lambda, CloudWatch) or human-readable (local).
pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AITBC_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let _ = if json { builder.json().with_current_span(true).try_init() } else { builder.try_init() };
}
