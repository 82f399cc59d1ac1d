//! Timing and inputs shared by the kernel benchmarks (the root package's and the kernels crate's).

use std::time::Instant;

/// Seconds per call: the median of three timed runs after one warm-up, each run at least ~40 ms.
///
/// The calls run on a worker of rayon's global pool, as a model's forward pass runs its kernels (see
/// `models/src/model.rs`): from any other thread every parallel kernel call is handed to the pool while
/// the caller sleeps, two context switches (~10 µs here) that the engine never pays.
pub fn time(f: impl FnMut() + Send) -> f64 {
    if rayon::current_thread_index().is_some() {
        time_here(f)
    } else {
        rayon::scope(|_| time_here(f))
    }
}

fn time_here(mut f: impl FnMut()) -> f64 {
    f();
    let once = {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    let reps = ((0.04 / once.max(1e-9)) as usize).clamp(1, 5000);
    let mut runs: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[1]
}

/// `n` values in [-1, 1) from a fixed LCG: the same inputs every run, no RNG crate needed.
pub fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
