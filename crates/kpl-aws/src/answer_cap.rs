//! Answers are read up to a cap. The SDK reads a whole answer into memory before any of our code
//! sees it; an endpoint that answers with megabytes of text per entry (a proxy, an emulator, a
//! broken gateway) would make each call in flight hold all of it. No real answer comes near the
//! cap: a `PutRecords` answer is at most 500 entries of short text (about 150 KB), a
//! `ListShards` page of 1,000 shards about 350 KB.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;

/// The most bytes of an answer read; a longer one fails its call as an unreadable answer.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Reads each answer's body through a limit of [`MAX_ANSWER_BYTES`].
#[derive(Debug)]
pub(crate) struct AnswerCap;

impl Intercept for AnswerCap {
    fn name(&self) -> &'static str {
        "AnswerCap"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response_mut();
        let declared = response
            .headers()
            .get("content-length")
            .and_then(|length| length.parse::<u64>().ok());
        if declared.is_some_and(|length| length > MAX_ANSWER_BYTES as u64) {
            // Refused before a byte of it is read.
            return Err(too_long().into());
        }
        let body = response.take_body();
        *response.body_mut() =
            SdkBody::from_body_1_x(http_body_util::Limited::new(body, MAX_ANSWER_BYTES));
        Ok(())
    }
}

fn too_long() -> String {
    format!("the answer is longer than {MAX_ANSWER_BYTES} bytes, more than any real one")
}
