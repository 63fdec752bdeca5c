//! Produce to a real Kinesis stream (AWS, or a local endpoint) with settings from the
//! environment, await every outcome and print a summary.
//!
//! ```sh
//! KPL_STREAM=my-stream AWS_REGION=eu-west-1 cargo run --release -p kpl --example kinesis -- 10000
//! # A local server, with any credentials:
//! KPL_STREAM=test KPL_ENDPOINT=http://127.0.0.1:4567 AWS_REGION=us-east-1 \
//!   AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local cargo run -p kpl --example kinesis
//! ```
//!
//! `KPL_CONFIG` may name a KPL `.properties` file; `KPL_ENDPOINT` (a URL or host) and
//! `AWS_REGION` override its endpoint and region. Credentials come from the AWS default chain.

use std::error::Error;
use std::time::{Duration, Instant};

use kpl::{Config, KinesisProducer, Record, Stream};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let stream = Stream::new(
        std::env::var("KPL_STREAM").map_err(|_| "set KPL_STREAM to a stream name or ARN")?,
    )?;
    let total: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000);
    let mut config = match std::env::var("KPL_CONFIG") {
        Ok(path) => Config::from_kpl_properties_file(path)?,
        Err(_) => Config::default(),
    };
    if let Ok(endpoint) = std::env::var("KPL_ENDPOINT") {
        config.set("KinesisEndpoint", &endpoint)?;
    }
    if let Ok(region) = std::env::var("AWS_REGION") {
        config.set("Region", &region)?;
    }
    let producer = KinesisProducer::builder().config(config).build()?;

    #[allow(clippy::disallowed_methods, reason = "an example's wall-clock timing")]
    let started = Instant::now();
    let mut pending = Vec::with_capacity(total);
    for i in 0..total {
        let record = Record::new(
            stream.clone(),
            format!("key-{i}"),
            format!("record {i} from kpl-rs"),
        );
        pending.push(producer.send_wait(record).await?);
    }
    let (mut delivered, mut failed) = (0, 0);
    for future in pending {
        match future.await {
            Ok(_) => delivered += 1,
            Err(error) => {
                failed += 1;
                if failed <= 5 {
                    eprintln!("{error}");
                }
            }
        }
    }
    let report = producer.shutdown(Duration::from_secs(30)).await;
    println!(
        "{delivered} delivered, {failed} failed, {} unsent, in {:.2} s",
        report.unsent.len(),
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        Err("some records failed".into())
    } else {
        Ok(())
    }
}
