//! Runs the engine benchmark's workload in a loop, for a profiler: `perf record` or
//! `valgrind --tool=callgrind` this binary. Arguments: rounds (default 5), records per round
//! (default 1,000,000).
use kpl_benches::{RECORDS, engine_records, even_ranges, run_engine, user_records};
use kpl_engine::Stream;

fn main() {
    let count: usize = std::env::args()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(RECORDS);
    let records = user_records(count, 42);
    let ranges = even_ranges(4);
    let stream = Stream::new("bench").expect("valid stream name");
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let inputs: Vec<_> = (0..rounds)
        .map(|_| engine_records(&stream, &records))
        .collect();
    for input in inputs {
        assert_eq!(run_engine(input, &ranges), count);
    }
}
