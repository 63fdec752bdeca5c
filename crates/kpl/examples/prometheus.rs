//! The producer's metrics through a Prometheus recorder: produces to the embedded simulated
//! stream, then prints the scrape text.
//!
//! ```sh
//! cargo run -p kpl --example prometheus
//! ```

use std::time::Duration;

use kpl::time::Clock;
use kpl::{Config, KinesisProducer, MetricsGranularity, Record, Stream, TokioClock};
use kpl_sim::{SimKinesis, SimTransport};
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The application installs the recorder; the producer only reports to whatever is installed.
    let recorder = PrometheusBuilder::new().build_recorder();
    let scrape = recorder.handle();
    metrics::set_global_recorder(recorder)?;

    let mut config = Config::default();
    config.metrics_granularity = MetricsGranularity::Stream;
    config.add_metrics_dimension("app", "example", MetricsGranularity::Global);
    let mut sim = SimKinesis::new(1);
    sim.create_stream("orders", 4, TokioClock.now());
    let producer = KinesisProducer::builder()
        .config(config)
        .transport(SimTransport::new(sim, TokioClock))
        .build()?;

    let orders = Stream::new("orders")?;
    let mut deliveries = Vec::new();
    for n in 0..10_000 {
        let record = Record::new(
            orders.clone(),
            format!("customer-{}", n % 500),
            vec![0; 100],
        );
        deliveries.push(producer.send_wait(record).await?);
    }
    producer.flush_and_wait().await;
    for delivery in deliveries {
        delivery.await?;
    }
    // The producer hands its metrics to the recorder every second.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    println!("{}", scrape.render());
    producer.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
