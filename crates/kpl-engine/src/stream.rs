//! Stream addresses: a name, or an ARN (which also reaches streams of other accounts).

use std::fmt;
use std::sync::Arc;

/// A validated stream address. Cheap to clone; ordered and compared by its text.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stream(Arc<str>);

/// Why a stream address was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream {input:?}: {reason}")]
pub struct InvalidStream {
    input: String,
    reason: &'static str,
}

impl InvalidStream {
    /// The text that was refused.
    pub fn input(&self) -> &str {
        &self.input
    }
}

const NAME_MAX_CHARS: usize = 128;

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("a stream name has 1 to 128 characters, this one is empty");
    }
    if name.len() > NAME_MAX_CHARS {
        return Err("a stream name has 1 to 128 characters");
    }
    if !name.chars().all(is_name_char) {
        return Err("a stream name may contain only A-Z, a-z, 0-9, '_', '.' and '-'");
    }
    Ok(())
}

fn validate_arn(arn: &str) -> Result<(), &'static str> {
    // arn:<partition>:kinesis:<region>:<account>:stream/<name>
    let mut parts = arn.splitn(6, ':');
    let (
        Some("arn"),
        Some(partition),
        Some("kinesis"),
        Some(region),
        Some(account),
        Some(resource),
    ) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    )
    else {
        return Err("a stream ARN looks like arn:aws:kinesis:<region>:<account>:stream/<name>");
    };
    if !partition.starts_with("aws") {
        return Err("the ARN's partition must be aws, aws-cn, aws-us-gov, ...");
    }
    if region.is_empty()
        || !region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("the ARN's region is missing or malformed");
    }
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return Err("the ARN's account id must be 12 digits");
    }
    let Some(name) = resource.strip_prefix("stream/") else {
        return Err("the ARN's resource must be stream/<name>");
    };
    validate_name(name)
}

impl Stream {
    /// Parses a stream name (`[A-Za-z0-9_.-]{1,128}`) or a Kinesis stream ARN.
    pub fn new(address: impl AsRef<str>) -> Result<Self, InvalidStream> {
        let address = address.as_ref();
        let checked = if address.starts_with("arn:") {
            validate_arn(address)
        } else {
            validate_name(address)
        };
        match checked {
            Ok(()) => Ok(Self(address.into())),
            Err(reason) => Err(InvalidStream {
                input: address.to_owned(),
                reason,
            }),
        }
    }

    /// The address as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The stream's name (taken from the ARN when addressed by ARN).
    pub fn name(&self) -> &str {
        match self.0.rsplit_once("stream/") {
            Some((_, name)) if self.is_arn() => name,
            _ => &self.0,
        }
    }

    /// The ARN, when the stream is addressed by one.
    pub fn arn(&self) -> Option<&str> {
        self.is_arn().then_some(&*self.0)
    }

    /// Whether both handles share one allocation (then they are equal, without comparing text).
    pub(crate) fn same_allocation(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    fn is_arn(&self) -> bool {
        self.0.starts_with("arn:")
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl TryFrom<&str> for Stream {
    type Error = InvalidStream;

    fn try_from(address: &str) -> Result<Self, Self::Error> {
        Self::new(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arns_are_validated() {
        let stream = Stream::new("orders_v2.prod-1").unwrap();
        assert_eq!(stream.name(), "orders_v2.prod-1");
        assert_eq!(stream.arn(), None);

        let arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/orders";
        let stream = Stream::new(arn).unwrap();
        assert_eq!(stream.name(), "orders");
        assert_eq!(stream.arn(), Some(arn));

        for bad in [
            "",
            "has space",
            "ünïcode",
            &"x".repeat(129),
            "arn:aws:kinesis:eu-west-1:1234:stream/orders",
            "arn:aws:s3:eu-west-1:123456789012:stream/orders",
            "arn:aws:kinesis:eu-west-1:123456789012:table/orders",
        ] {
            let error = Stream::new(bad).unwrap_err();
            assert_eq!(error.input(), bad);
        }
        assert!(Stream::new("x".repeat(128)).is_ok());
    }
}
