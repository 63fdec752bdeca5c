//! Request bodies held at their size while in flight. The SDK writes a `PutRecords` body into a
//! string that grows by doubling, and the body keeps that room: a call of 1.4 MB of JSON holds
//! 2 MiB until its answer comes, for every call in flight (about 260 bytes for a record whose
//! base64 takes 167). A large body is copied once, before it is signed and sent, into one of its
//! exact size, and the grown one is freed.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;

/// Bodies from this size on are copied; below it the room they could waste does not matter.
pub(crate) const COPIED_FROM: usize = 64 * 1024;

/// Replaces each large request body with an exact-size copy of it.
#[derive(Debug)]
pub(crate) struct ExactBody;

impl Intercept for ExactBody {
    fn name(&self) -> &'static str {
        "ExactBody"
    }

    // Before the retry loop: once per call, before anything keeps a copy of the request.
    fn modify_before_retry_loop(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = context.request_mut().body_mut();
        if let Some(exact) = body
            .bytes()
            .filter(|bytes| bytes.len() >= COPIED_FROM)
            .map(<[u8]>::to_vec)
        {
            *body = SdkBody::from(exact);
        }
        Ok(())
    }
}
