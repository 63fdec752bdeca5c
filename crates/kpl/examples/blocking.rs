//! The blocking producer from plain threads: four threads send, each waits for its outcomes.
//!
//! ```sh
//! cargo run --release -p kpl --example blocking
//! ```

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use kpl::time::Clock;
use kpl::{BlockingProducer, Record, Stream, TokioClock};
use kpl_sim::{SimKinesis, SimTransport};

fn main() -> Result<(), Box<dyn Error>> {
    let mut sim = SimKinesis::new(7);
    sim.create_stream("blocking", 2, TokioClock.now());
    let transport = SimTransport::new(sim, TokioClock);
    let producer = Arc::new(
        BlockingProducer::builder()
            .transport(transport.clone())
            .build()?,
    );

    let threads: Vec<_> = (0..4)
        .map(|t| {
            let producer = Arc::clone(&producer);
            std::thread::spawn(move || -> Result<usize, String> {
                let stream = Stream::new("blocking").map_err(|e| e.to_string())?;
                let pending = (0..10_000)
                    .map(|i| {
                        producer.send_wait(Record::new(
                            stream.clone(),
                            format!("thread{t}-{i}"),
                            vec![0u8; 64],
                        ))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                let mut delivered = 0;
                for outcome in pending {
                    outcome.wait().map_err(|e| e.to_string())?;
                    delivered += 1;
                }
                Ok(delivered)
            })
        })
        .collect();
    let mut delivered = 0;
    for thread in threads {
        delivered += thread.join().map_err(|_| "a sending thread panicked")??;
    }
    let producer = Arc::try_unwrap(producer).map_err(|_| "the producer is still shared")?;
    let report = producer.shutdown(Duration::from_secs(5));
    let readable = transport.with_sim(|sim| sim.kcl_view("blocking").records.len());
    println!(
        "delivered {delivered} records from 4 threads; {readable} readable; {} unsent",
        report.unsent.len()
    );
    if delivered != 40_000 || readable != 40_000 {
        return Err("not every record was delivered".into());
    }
    Ok(())
}
