//! The floor of a first apply: the CMS's Argon2id work for every new key, spread over the
//! machine's cores. Measured here, on this machine, so the ratio a benchmark prints is honest.

use std::time::{Duration, Instant};

/// One Argon2id hash of a new key value (the fastest of 15 on one thread: a shared host's noise
/// only ever adds time), and the cores.
pub fn per_hash() -> (Duration, usize) {
    let mut times: Vec<Duration> = (0..15)
        .map(|_| {
            let raw = keyward::cms::secret::RawKey::generate("floor");
            let t = Instant::now();
            std::hint::black_box(raw.hash());
            t.elapsed()
        })
        .collect();
    times.sort();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (times[0], cores)
}

/// The time per hash with every core hashing at once (memory-hard: cores share the memory
/// bandwidth, so this is what the CMS can reach at best); the best of three rounds.
pub fn per_hash_all_cores(cores: usize) -> Duration {
    const EACH: u32 = 8;
    let round = || {
        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..cores {
                s.spawn(|| {
                    for _ in 0..EACH {
                        let raw = keyward::cms::secret::RawKey::generate("floor");
                        std::hint::black_box(raw.hash());
                    }
                });
            }
        });
        t.elapsed() / EACH
    };
    (0..3).map(|_| round()).min().unwrap_or_default()
}

/// Prints the floor for `hashes` new keys and returns it.
pub fn floor(hashes: usize) -> Duration {
    let (one, cores) = per_hash();
    let floor = one * hashes as u32 / cores as u32;
    let busy = per_hash_all_cores(cores);
    println!(
        "Argon2id floor: {hashes} hashes x {:.1} ms / {cores} cores = {:.1} s (with all {cores} cores hashing at once, a hash takes {:.1} ms: {:.1} s)",
        one.as_secs_f64() * 1000.0,
        floor.as_secs_f64(),
        busy.as_secs_f64() * 1000.0,
        (busy * hashes as u32 / cores as u32).as_secs_f64()
    );
    floor
}

/// `took` against the floor.
pub fn ratio(took: Duration, floor: Duration) -> String {
    format!(
        "{:.2}x the Argon2id floor",
        took.as_secs_f64() / floor.as_secs_f64()
    )
}
