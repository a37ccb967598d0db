//! The jobs function group on AWS Lambda.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    aitbc_functions::lambda::serve(aitbc_functions::Group::Jobs).await
}
