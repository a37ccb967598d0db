//! `aitbc-scheduler-lambda`: the scheduler behind EventBridge schedules. The event names the
//! task (`{"detail": {"task": "settle"}}`, or a rule named like `aitbc-settle`); the handler is
//! `aitbc_scheduler::handle_event`, the same `run_task` the command line uses.

use aitbc_scheduler::progress::{init_logging, LogLines, Reporter};
use aitbc_scheduler::{Config, Scheduler};
use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging(true);
    let scheduler = Arc::new(Scheduler::open(&Config::from_env_for_lambda()?).await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<EventBridgeEvent<serde_json::Value>>| {
        let scheduler = scheduler.clone();
        async move {
            let progress = LogLines::default();
            let event = serde_json::to_value(&event.payload)?;
            let report = aitbc_scheduler::handle_event(&scheduler, &event, &progress).await;
            progress.finish();
            Ok::<_, Error>(report?)
        }
    }))
    .await
}
