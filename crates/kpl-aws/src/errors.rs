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
    // Why an answer could not be read (cut at the cap, not JSON...).
    let response_cause = match &error {
        SdkError::ResponseError(_) => StdError::source(&error).map(with_causes),
        _ => None,
    };
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
                |error| redact_credentials(&with_causes(error)),
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
            let cause = response_cause
                .map(|cause| format!(": {}", redact_credentials(&cause)))
                .unwrap_or_default();
            TransportError::new(
                kind,
                "MalformedResponse",
                format!("HTTP {status}: the response could not be read{cause}"),
            )
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let error = service.into_err();
            // Without a code the answer could not be read as an error of this service.
            let code = error.code().unwrap_or("MalformedResponse").to_owned();
            let raw = error
                .message()
                .map_or_else(|| format!("HTTP {status}"), str::to_owned);
            let message = redact_credentials(&raw);
            let mut kind = TransportErrorKind::from_code(&code);
            if kind == TransportErrorKind::Other && status >= 500 {
                kind = TransportErrorKind::ServiceUnavailable;
            }
            if message == raw {
                TransportError::new(kind, code, message).with_source(error)
            } else {
                // The SDK's error would print the message as the service wrote it.
                TransportError::new(kind, code, message)
            }
        }
        other => TransportError::new(TransportErrorKind::Other, "Unknown", other.to_string()),
    }
}

/// `error` and its causes, each once: a connector error alone says as little as "other" when
/// the cause is, say, a credentials provider that failed.
fn with_causes(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let said = next.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = next.source();
    }
    text
}

/// A request that could not be built: the input broke a rule of the SDK's builders.
pub(crate) fn construction_failure(reason: impl Display) -> TransportError {
    TransportError::new(
        TransportErrorKind::Validation,
        "ConstructionFailure",
        reason.to_string(),
    )
}

/// Where the service starts quoting the request it expected, signed headers and all.
const CANONICAL_REQUEST_QUOTE: &str = "The Canonical String for this request should have been";
/// Names after which a credential's value follows in a quoted request (compared ignoring case).
const CREDENTIAL_MARKERS: [&str; 4] = [
    "x-amz-security-token:",
    "x-amz-security-token=",
    "credential=",
    "signature=",
];

/// A service message without credential material: signature errors may quote the request the
/// service expected, session token included, and nothing of it may reach logs or errors.
pub(crate) fn redact_credentials(message: &str) -> String {
    let mut text = match message.find(CANONICAL_REQUEST_QUOTE) {
        Some(at) => format!(
            "{}(the request the service quoted is left out: it holds credentials)",
            &message[..at]
        ),
        None => message.to_owned(),
    };
    for marker in CREDENTIAL_MARKERS {
        let mut from = 0;
        // ASCII lowercasing keeps byte offsets, so positions found in it hold in `text`.
        while let Some(found) = text.to_ascii_lowercase()[from..].find(marker) {
            let start = from + found + marker.len();
            // `x-amz-security-token: value`: the value starts after any spaces.
            let spaces = text[start..].len() - text[start..].trim_start_matches(' ').len();
            let start = start + spaces;
            let end = text[start..]
                .find(|c: char| c.is_whitespace() || matches!(c, ',' | '\'' | '"' | '&' | ';'))
                .map_or(text.len(), |length| start + length);
            text.replace_range(start..end, "<redacted>");
            from = start + "<redacted>".len();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_material_is_removed_from_service_messages() {
        let message = "The request signature we calculated does not match the signature you provided. \
            Check your AWS Secret Access Key and signing method. Authorization=AWS4-HMAC-SHA256 \
            Credential=AKIDEXAMPLE/20261130/us-east-1/kinesis/aws4_request, \
            Signature=0123456789abcdef\n\nThe Canonical String for this request should have been\n\
            'POST\n/\n\nhost:kinesis.us-east-1.amazonaws.com\nx-amz-security-token:FwoGZXIvYXdzSECRET\n'";
        let redacted = redact_credentials(message);
        for secret in ["AKIDEXAMPLE", "0123456789abcdef", "FwoGZXIvYXdzSECRET"] {
            assert!(!redacted.contains(secret), "{redacted}");
        }
        assert!(redacted.starts_with("The request signature we calculated does not match"));
        assert!(redacted.contains("Credential=<redacted>"), "{redacted}");
        // A token quoted without the canonical-request preamble is caught too.
        let bare = redact_credentials("bad header X-Amz-Security-Token:abc123 here");
        assert_eq!(bare, "bad header X-Amz-Security-Token:<redacted> here");
        assert_eq!(redact_credentials("Rate exceeded"), "Rate exceeded");
        let spaced = redact_credentials("header x-amz-security-token:   abc123 quoted");
        assert_eq!(spaced, "header x-amz-security-token:   <redacted> quoted");
    }
}
