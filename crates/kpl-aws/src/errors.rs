//! From SDK errors to the engine's transport errors. The table is `docs/aws-errors.md`; each row
//! has a test in `tests/errors.rs`.

use std::error::Error as StdError;
use std::fmt::Display;

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use kpl_engine::{TransportError, TransportErrorKind};

/// Maps any operation's `SdkError` to a [`TransportError`]:
///
/// | SDK error | kind |
/// | --- | --- |
/// | construction failure (the request could not be built) | `Validation` |
/// | timeout | `Timeout` |
/// | dispatch failure: timeout | `Timeout` |
/// | dispatch failure: IO, or anything else on the way out | `Connection` |
/// | response error (an unreadable answer) | `ServiceUnavailable` if 5xx, else `Other` |
/// | service error with a code | by the code (`TransportErrorKind::from_code`); an unknown code is `ServiceUnavailable` if 5xx, else `Other` |
/// | service error without a code | `MalformedResponse`: `ServiceUnavailable` if 5xx, else `Other` |
pub fn map_sdk_error<E>(error: SdkError<E, HttpResponse>) -> TransportError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    match error {
        SdkError::ConstructionFailure(_) => construction_failure("the request could not be built"),
        SdkError::TimeoutError(_) => TransportError::new(
            TransportErrorKind::Timeout,
            "RequestTimeout",
            "the call timed out",
        ),
        SdkError::DispatchFailure(failure) => {
            let (kind, code) = if failure.is_timeout() {
                (TransportErrorKind::Timeout, "RequestTimeout")
            } else {
                (TransportErrorKind::Connection, "ConnectionError")
            };
            let message = failure.as_connector_error().map_or_else(
                || "the request could not be sent".to_owned(),
                ToString::to_string,
            );
            TransportError::new(kind, code, message)
        }
        SdkError::ResponseError(response) => {
            let status = response.raw().status().as_u16();
            let kind = if status >= 500 {
                TransportErrorKind::ServiceUnavailable
            } else {
                TransportErrorKind::Other
            };
            TransportError::new(
                kind,
                "MalformedResponse",
                format!("HTTP {status}: the response could not be read"),
            )
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let error = service.into_err();
            // Without a code the answer could not be read as an error of this service.
            let code = error.code().unwrap_or("MalformedResponse").to_owned();
            let message = error
                .message()
                .map_or_else(|| format!("HTTP {status}"), str::to_owned);
            let mut kind = TransportErrorKind::from_code(&code);
            if kind == TransportErrorKind::Other && status >= 500 {
                kind = TransportErrorKind::ServiceUnavailable;
            }
            TransportError::new(kind, code, message).with_source(error)
        }
        other => TransportError::new(TransportErrorKind::Other, "Unknown", other.to_string()),
    }
}

/// A request that could not be built: the input broke a rule of the SDK's builders.
pub(crate) fn construction_failure(reason: impl Display) -> TransportError {
    TransportError::new(
        TransportErrorKind::Validation,
        "ConstructionFailure",
        reason.to_string(),
    )
}
