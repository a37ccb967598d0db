//! The conformance suite (`aitbc_store::conformance`), once per adapter pair.

/// SQLite store and queue on a temporary file.
mod sqlite {
    aitbc_store::conformance_tests!(aitbc_store::conformance::sqlite());
}

/// DynamoDB store and SQS queue on moto_server (`AITBC_TEST_AWS_ENDPOINT`, set by
/// scripts/test.sh).
mod aws {
    aitbc_store::conformance_tests!(aitbc_store::conformance::aws());
}
