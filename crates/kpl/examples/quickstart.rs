//! Produce to the embedded simulated Kinesis stream, await every outcome, print a few and a
//! summary, and check the summary against what a KCL consumer would read.
//!
//! ```sh
//! cargo run --release -p kpl --example quickstart            # 100,000 records
//! cargo run --release -p kpl --example quickstart -- 1000000
//! ```

use std::error::Error;
use std::time::Duration;

use kpl::time::Clock;
use kpl::{Config, KinesisProducer, Record, Stream, TokioClock};
use kpl_sim::{SimKinesis, SimTransport};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let total: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);

    // The embedded default: a simulated 4-shard stream with the service's limits.
    let mut sim = SimKinesis::new(42);
    sim.create_stream("quickstart", 4, TokioClock.now());
    let transport = SimTransport::new(sim, TokioClock);

    let producer = KinesisProducer::builder()
        .config(Config::default())
        .transport(transport.clone())
        .build()?;
    let stream = Stream::new("quickstart")?;

    let started = TokioClock.now();
    let mut pending = Vec::with_capacity(total);
    for i in 0..total {
        let record = Record::new(
            stream.clone(),
            format!("user-{}", i % 10_000),
            format!("event {i}"),
        );
        // send_wait waits when the producer's buffer is full instead of failing.
        pending.push(producer.send_wait(record).await?);
    }
    let mut delivered = 0usize;
    let mut failed = 0usize;
    for (i, future) in pending.into_iter().enumerate() {
        match future.await {
            Ok(delivery) => {
                delivered += 1;
                if i < 3 {
                    println!(
                        "record {i}: shard {}, sequence number {}, {} attempt(s)",
                        delivery.shard_id(),
                        delivery.sequence_number(),
                        delivery.attempts().len()
                    );
                }
            }
            Err(error) => {
                failed += 1;
                eprintln!("{error}");
            }
        }
    }
    let elapsed = TokioClock.now().saturating_duration_since(started);
    let report = producer.shutdown(Duration::from_secs(5)).await;

    let (kinesis_records, readable) = transport.with_sim(|sim| {
        (
            sim.counters().written_entries,
            sim.kcl_view("quickstart").records.len(),
        )
    });
    println!("records sent:             {total}");
    println!("delivered:                {delivered}");
    println!("failed:                   {failed}");
    println!("unsent at shutdown:       {}", report.unsent.len());
    println!("Kinesis records written:  {kinesis_records}");
    println!(
        "user records per Kinesis record: {:.1}",
        readable as f64 / kinesis_records.max(1) as f64
    );
    println!(
        "elapsed:                  {:.2} s ({:.0} records/s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    println!("readable by a KCL consumer: {readable}");
    if delivered != total || readable != total {
        return Err("not every record was delivered exactly once".into());
    }
    println!("ok: every record delivered and readable exactly once");
    Ok(())
}
