//! The load test's anchor: an axum endpoint that does nothing but answer, on the same runtime
//! and HTTP stack as the API (`scripts/load-test.sh` runs wrk against it with the same settings
//! first). What the API adds over it is the API's own cost.
//!   cargo run --release -p aitbc-functions --example bare_http -- 127.0.0.1:PORT

use axum::routing::{get, post};
use axum::{Json, Router};

fn main() {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(async {
        let answer = || async { Json(serde_json::json!({"ok": true})) };
        let app = Router::new().route("/", get(answer)).route("/", post(answer));
        let listener = tokio::net::TcpListener::bind(&listen).await.expect("binding the listen address");
        println!("listening on {}", listener.local_addr().expect("a bound address"));
        axum::serve(listener, app).await.expect("serving");
    });
}
