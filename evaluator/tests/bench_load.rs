//! The arrival process (Poisson / gamma, seeded) and the concurrency limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ember_evaluator::bench::load::{arrival_intervals, arrival_offsets, drive, LoadConfig};

fn config(rate: f64, burstiness: f64, seed: u64) -> LoadConfig {
    LoadConfig {
        request_rate: rate,
        burstiness,
        max_concurrency: None,
        seed,
    }
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let m = xs.iter().sum::<f64>() / xs.len() as f64;
    let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64;
    (m, v.sqrt())
}

#[test]
fn poisson_intervals_have_the_asked_mean_and_unit_cv() {
    let xs = arrival_intervals(&config(10.0, 1.0, 7), 40_000);
    let (m, s) = mean_std(&xs);
    assert!((m - 0.1).abs() < 0.003, "mean interval {m}");
    // Exponential: std = mean.
    assert!((s / m - 1.0).abs() < 0.03, "cv {}", s / m);
}

#[test]
fn gamma_burstiness_keeps_the_mean_and_sets_the_spread() {
    for (k, cv) in [(0.25, 2.0), (4.0, 0.5)] {
        let xs = arrival_intervals(&config(5.0, k, 3), 40_000);
        let (m, s) = mean_std(&xs);
        assert!((m - 0.2).abs() < 0.2 * 0.04, "burstiness {k}: mean {m}");
        assert!(
            (s / m - cv).abs() < cv * 0.06,
            "burstiness {k}: cv {}",
            s / m
        );
    }
}

#[test]
fn arrivals_are_seeded_and_infinite_rate_sends_all_at_once() {
    let a = arrival_offsets(&config(3.0, 1.0, 1), 50);
    assert_eq!(a, arrival_offsets(&config(3.0, 1.0, 1), 50));
    assert_ne!(a, arrival_offsets(&config(3.0, 1.0, 2), 50));
    assert_eq!(a[0], 0.0);
    assert!(a.windows(2).all(|w| w[1] >= w[0]));
    assert_eq!(
        arrival_offsets(&config(f64::INFINITY, 1.0, 1), 5),
        vec![0.0; 5]
    );
    assert!(config(0.0, 1.0, 0).validate().is_err());
    assert!(config(1.0, 0.0, 0).validate().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrency_caps_requests_in_flight() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let load = LoadConfig {
        max_concurrency: Some(3),
        ..config(f64::INFINITY, 1.0, 0)
    };
    let out = drive(&load, (0..12).collect::<Vec<usize>>(), |i, item| {
        let (in_flight, peak) = (in_flight.clone(), peak.clone());
        async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            (i, item)
        }
    })
    .await;
    assert_eq!(out, (0..12).map(|i| (i, i)).collect::<Vec<_>>());
    assert_eq!(peak.load(Ordering::SeqCst), 3);
}
