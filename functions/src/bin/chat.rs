//! The chat function group (the OpenAI-compatible API) on AWS Lambda, answering in response
//! streaming mode behind a function URL.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    aitbc_functions::lambda::serve(aitbc_functions::Group::Chat).await
}
