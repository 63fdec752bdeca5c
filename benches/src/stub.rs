//! A minimal Kinesis endpoint for benchmarks: HTTP/1.1 with keep-alive, answering every
//! `PutRecords` with success on the shard that owns each entry's hash key, as fast as it can.
//! It runs on its own thread (the other core); it is not a test double for behaviour.

use std::io;
use std::net::SocketAddr;

use kpl_aggregation::{HashKey, HashKeyRange};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A running stub; it stops when the process ends.
#[derive(Debug)]
pub struct KinesisStub {
    address: SocketAddr,
}

impl KinesisStub {
    /// Starts the stub for a stream with these shard ranges, on a thread of its own.
    pub fn start(ranges: Vec<HashKeyRange>) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        std::thread::Builder::new()
            .name("kinesis-stub".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let Ok(runtime) = runtime else { return };
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    let ranges = std::sync::Arc::new(ranges);
                    while let Ok((socket, _)) = listener.accept().await {
                        let ranges = std::sync::Arc::clone(&ranges);
                        tokio::spawn(async move {
                            let _ = serve(socket, &ranges).await;
                        });
                    }
                });
            })?;
        Ok(Self { address })
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }
}

async fn serve(socket: TcpStream, ranges: &[HashKeyRange]) -> io::Result<()> {
    socket.set_nodelay(true)?;
    let mut reader = BufReader::new(socket);
    let mut line = String::new();
    let mut body = Vec::new();
    let mut sequence = 0u64;
    loop {
        // Request line and headers.
        let mut length = 0usize;
        let mut target = String::new();
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        loop {
            line.clear();
            reader.read_line(&mut line).await?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("x-amz-target") {
                    target = value.trim().to_owned();
                }
            }
        }
        body.resize(length, 0);
        reader.read_exact(&mut body).await?;
        let answer = match target.as_str() {
            "Kinesis_20131202.PutRecords" => put_records(&body, ranges, &mut sequence),
            "Kinesis_20131202.ListShards" => list_shards(ranges),
            _ => r#"{"StreamDescriptionSummary":{"StreamName":"bench","StreamARN":"arn:aws:kinesis:us-east-1:123456789012:stream/bench","StreamStatus":"ACTIVE","RetentionPeriodHours":24,"StreamCreationTimestamp":1.7E9,"EnhancedMonitoring":[],"OpenShardCount":4}}"#.to_owned(),
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n",
            answer.len()
        );
        let socket = reader.get_mut();
        socket.write_all(head.as_bytes()).await?;
        socket.write_all(answer.as_bytes()).await?;
    }
}

fn shard_of(ranges: &[HashKeyRange], key: HashKey) -> usize {
    ranges.partition_point(|range| range.end() < key)
}

fn put_records(body: &[u8], ranges: &[HashKeyRange], sequence: &mut u64) -> String {
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let records = parsed["Records"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut out = String::with_capacity(32 + records.len() * 80);
    out.push_str(r#"{"FailedRecordCount":0,"Records":["#);
    for (i, record) in records.iter().enumerate() {
        let key = record["ExplicitHashKey"]
            .as_str()
            .and_then(|ehk| HashKey::parse_decimal(ehk).ok())
            .unwrap_or_else(|| {
                HashKey::from_partition_key(record["PartitionKey"].as_str().unwrap_or(""))
            });
        *sequence += 1;
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"SequenceNumber":"{}","ShardId":"shardId-{:012}"}}"#,
            sequence,
            shard_of(ranges, key)
        ));
    }
    out.push_str("]}");
    out
}

fn list_shards(ranges: &[HashKeyRange]) -> String {
    let shards: Vec<String> = ranges
        .iter()
        .enumerate()
        .map(|(i, range)| {
            format!(
                r#"{{"ShardId":"shardId-{i:012}","HashKeyRange":{{"StartingHashKey":"{}","EndingHashKey":"{}"}},"SequenceNumberRange":{{"StartingSequenceNumber":"0"}}}}"#,
                range.start(),
                range.end()
            )
        })
        .collect();
    format!(r#"{{"Shards":[{}]}}"#, shards.join(","))
}
