//! The HTTP/1.1 both endpoints speak: one request at a time on a kept-alive connection, read
//! whole (head, then a `content-length` body), and JSON 1.1 answers.

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
    line.clear();
    if reader.read_line(line).await? == 0 {
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
    let mut length = 0usize;
    loop {
        line.clear();
        if reader.read_line(line).await? == 0 {
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
            length = value.parse().unwrap_or(0);
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
    request.body.resize(length, 0);
    reader.read_exact(&mut request.body).await?;
    Ok(Some(request))
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
