//! Runs the producer benchmark's in-process workload in a loop, for a profiler.
use kpl_benches::{NullTransport, engine_records, even_ranges, run_producer, user_records};
use kpl_engine::Stream;

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let records = user_records(250_000, 42);
    let stream = Stream::new("bench").expect("valid stream name");
    let ranges = even_ranges(4);
    for _ in 0..rounds {
        let input = engine_records(&stream, &records);
        assert_eq!(
            run_producer(input, NullTransport::new(ranges.clone())),
            250_000
        );
    }
}
