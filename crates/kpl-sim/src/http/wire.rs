//! The HTTP/1.1 both endpoints speak: one request at a time on a kept-alive connection, read
//! whole (head, then a `content-length` body), and JSON 1.1 answers.

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest body read: a `PutRecords` of 5 MiB is about 7 MiB in base64 and JSON.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// The longest request line or header line read.
const MAX_LINE_BYTES: u64 = 64 * 1024;

/// One request, with what the endpoints look at.
#[derive(Debug, Default)]
pub(super) struct HttpRequest {
    /// The request target (`/` for the JSON protocol; a REST or RPC path otherwise).
    pub(super) path: String,
    /// `x-amz-target`: `Kinesis_20131202.PutRecords`, say; empty when absent.
    pub(super) target: String,
    /// The access key id the request was signed with.
    pub(super) access_key: String,
    /// The region it was signed for.
    pub(super) region: String,
    /// `x-amz-sso_bearer_token`, IAM Identity Center's portal token.
    pub(super) bearer: String,
    pub(super) body: Vec<u8>,
    /// Why the request cannot be read (its body's framing); it is refused, and the connection
    /// closed, since where the next request starts is unknown.
    pub(super) unreadable: Option<String>,
}

impl HttpRequest {
    /// The operation named by `x-amz-target`: `PutRecords`, say.
    pub(super) fn operation(&self) -> &str {
        self.target.rsplit('.').next().unwrap_or_default()
    }
}

/// Reads the next request; `None` when the client closed the connection.
pub(super) async fn read_request(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut String,
) -> io::Result<Option<HttpRequest>> {
    if read_line(reader, line).await? == 0 {
        return Ok(None);
    }
    let mut request = HttpRequest {
        path: line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned(),
        ..HttpRequest::default()
    };
    let mut length = Some(0usize);
    loop {
        if read_line(reader, line).await? == 0 {
            return Ok(None);
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            length = None;
        } else if name.eq_ignore_ascii_case("x-amz-target") {
            value.clone_into(&mut request.target);
        } else if name.eq_ignore_ascii_case("x-amz-sso_bearer_token") {
            value.clone_into(&mut request.bearer);
        } else if name.eq_ignore_ascii_case("authorization") {
            // `AWS4-HMAC-SHA256 Credential=<key id>/<date>/<region>/...`
            let credential = value.split("Credential=").nth(1).unwrap_or_default();
            let mut scope = credential.split('/');
            request.access_key = scope.next().unwrap_or_default().to_owned();
            request.region = scope.nth(1).unwrap_or_default().to_owned();
        }
    }
    match length {
        Some(length) if length <= MAX_BODY_BYTES => {
            request.body.resize(length, 0);
            reader.read_exact(&mut request.body).await?;
        }
        Some(length) => {
            request.unreadable = Some(format!("a body of {length} bytes, over {MAX_BODY_BYTES}"));
        }
        None => {
            request.unreadable =
                Some("a body without a content-length (chunked or unreadable)".to_owned());
        }
    }
    Ok(Some(request))
}

/// Reads one line into `line` (cleared first), at most `MAX_LINE_BYTES` of it.
async fn read_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut String,
) -> io::Result<usize> {
    line.clear();
    let read = (&mut *reader).take(MAX_LINE_BYTES).read_line(line).await?;
    if read as u64 == MAX_LINE_BYTES && !line.ends_with('\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a header line too long",
        ));
    }
    Ok(read)
}

/// The service's answer to a request it cannot read.
pub(super) fn unreadable_answer(why: &str) -> String {
    format!(
        r#"{{"__type":"SerializationException","message":"the request could not be read: {why}"}}"#
    )
}

/// The head of an answer of `length` bytes with `status`.
pub(super) fn head(status: u16, length: usize) -> String {
    let reason = if status == 200 { "OK" } else { "Error" };
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {length}\r\n\r\n"
    )
}

/// Writes a whole answer.
pub(super) async fn write_answer(
    socket: &mut (impl AsyncWrite + Unpin),
    status: u16,
    body: &str,
) -> io::Result<()> {
    socket
        .write_all(head(status, body.len()).as_bytes())
        .await?;
    socket.write_all(body.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> io::Result<Option<HttpRequest>> {
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        runtime.block_on(async {
            let mut reader = tokio::io::BufReader::new(bytes);
            read_request(&mut reader, &mut String::new()).await
        })
    }

    #[test]
    fn a_request_is_read_whole_and_a_body_it_cannot_frame_is_refused_unread() -> io::Result<()> {
        let request = read(
            b"POST / HTTP/1.1\r\nX-Amz-Target: Kinesis_20131202.PutRecords\r\n\
              Authorization: AWS4-HMAC-SHA256 Credential=AKID/20261207/eu-west-1/kinesis/aws4_request\r\n\
              Content-Length: 2\r\n\r\n{}",
        )?
        .ok_or_else(|| io::Error::other("a request"))?;
        assert_eq!(request.operation(), "PutRecords");
        assert_eq!(
            (request.access_key.as_str(), request.region.as_str()),
            ("AKID", "eu-west-1")
        );
        assert_eq!(request.body, b"{}");
        assert!(request.unreadable.is_none());
        for head in [
            "Content-Length: 99999999999",
            "Content-Length: lots",
            "Transfer-Encoding: chunked",
        ] {
            let bytes = format!("POST / HTTP/1.1\r\n{head}\r\n\r\n");
            let request = read(bytes.as_bytes())?.ok_or_else(|| io::Error::other("a request"))?;
            assert!(request.unreadable.is_some(), "{head}");
            assert!(request.body.is_empty(), "{head}: nothing allocated for it");
        }
        let endless = format!("POST / HTTP/1.1\r\nX: {}", "x".repeat(100_000));
        assert!(
            read(endless.as_bytes()).is_err(),
            "a header line has a bound"
        );
        assert!(read(b"")?.is_none(), "a closed connection");
        Ok(())
    }
}
