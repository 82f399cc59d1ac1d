//! benchmark_serving's metric definitions on a fully known synthetic timeline.

use ember_evaluator::bench::metrics::{
    calculate_metrics, parse_percentiles, percentile, std_dev, Goodput, RequestError,
    RequestOutcome,
};

fn ok(start: f64, prompt: usize, out: usize, ttft: f64, itl: &[f64]) -> RequestOutcome {
    RequestOutcome {
        success: true,
        prompt_len: prompt,
        output_tokens: Some(out),
        generated_text: String::new(),
        ttft,
        itl: itl.to_vec(),
        latency: ttft + itl.iter().sum::<f64>(),
        start_time: start,
        error: None,
    }
}

fn failed(kind: &str) -> RequestOutcome {
    RequestOutcome {
        prompt_len: 7,
        error: Some(RequestError {
            kind: kind.into(),
            message: format!("{kind} happened"),
        }),
        ..Default::default()
    }
}

/// A: 5 tokens, TTFT 0.1, gaps .02 .03 .05 .1 (latency .3); B: 1 token, TTFT .2;
/// C: 3 tokens, TTFT .4, gaps .1 .3 (latency .8); two failures. Run of 2 s.
fn timeline() -> Vec<RequestOutcome> {
    vec![
        ok(0.0, 10, 5, 0.1, &[0.02, 0.03, 0.05, 0.1]),
        ok(0.5, 20, 1, 0.2, &[]),
        failed("http_500"),
        ok(1.2, 30, 3, 0.4, &[0.1, 0.3]),
        failed("connect"),
    ]
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

#[test]
fn totals_throughputs_and_errors() {
    let m = calculate_metrics(&timeline(), 2.0, &[50.0, 99.0], None, &|_| 0);
    assert_eq!((m.completed, m.failed), (3, 2));
    assert_eq!((m.total_input, m.total_output), (60, 9));
    assert_eq!(m.output_lens, vec![5, 1, 0, 3, 0]);
    close(m.request_throughput, 1.5);
    close(m.output_throughput, 4.5);
    close(m.total_token_throughput, 34.5);
    assert_eq!(m.request_goodput, None);
    assert_eq!(m.errors_by_kind.get("http_500"), Some(&1));
    assert_eq!(m.errors_by_kind.get("connect"), Some(&1));
    close(m.success_rate(), 0.6);
}

#[test]
fn ttft_tpot_itl_e2el() {
    let m = calculate_metrics(&timeline(), 2.0, &[50.0, 99.0], None, &|_| 0);
    // TTFT over successful requests: .1 .2 .4
    close(m.ttft.mean_ms, 700.0 / 3.0);
    close(m.ttft.median_ms, 200.0);
    close(m.ttft.std_ms, 1000.0 * (0.14f64 / 9.0).sqrt());
    close(m.ttft.at(99.0).unwrap(), 396.0); // rank 1.98: .2 + .98 × .2
                                            // TPOT only for > 1 token: (.3 − .1)/4 = .05 and (.8 − .4)/2 = .2
    close(m.tpot.mean_ms, 125.0);
    close(m.tpot.median_ms, 125.0);
    close(m.tpot.std_ms, 75.0);
    close(m.tpot.at(99.0).unwrap(), 198.5);
    // ITL pooled over requests: .02 .03 .05 .1 .1 .3
    close(m.itl.mean_ms, 100.0);
    close(m.itl.median_ms, 75.0);
    close(m.itl.at(99.0).unwrap(), 290.0); // rank 4.95: .1 + .95 × .2
                                           // E2EL: .3 .2 .8
    close(m.e2el.mean_ms, 1300.0 / 3.0);
    close(m.e2el.median_ms, 300.0);
    // Peaks: second 0 holds A's 5 chunks and B's one; A and B are both active in second 0.
    close(m.max_output_tokens_per_s, 6.0);
    assert_eq!(m.max_concurrent_requests, 2);
}

#[test]
fn goodput_counts_requests_meeting_every_slo() {
    let g = |s: &[&str]| Goodput::parse(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
    let both = g(&["ttft:250", "tpot:100"]).unwrap().unwrap();
    let m = calculate_metrics(&timeline(), 2.0, &[99.0], Some(&both), &|_| 0);
    // A (.1, .05) and B (.2, TPOT counted 0) meet both; C's TTFT .4 does not.
    close(m.request_goodput.unwrap(), 1.0);
    let e2el = g(&["e2el:250"]).unwrap().unwrap();
    let m = calculate_metrics(&timeline(), 2.0, &[99.0], Some(&e2el), &|_| 0);
    close(m.request_goodput.unwrap(), 0.5); // only B (.2)
    assert!(g(&["ttft=5"]).is_err());
    assert!(g(&["foo:5"]).is_err());
    assert!(g(&["ttft:-1"]).is_err());
    assert_eq!(g(&[]).unwrap(), None);
}

#[test]
fn unreported_output_tokens_are_counted_from_the_text() {
    let mut o = ok(0.0, 4, 0, 0.1, &[0.1, 0.1]);
    o.output_tokens = None;
    o.generated_text = "one two three".into();
    let words = |t: &str| t.split_whitespace().count();
    let m = calculate_metrics(&[o], 1.0, &[99.0], None, &words);
    assert_eq!(m.total_output, 3);
    close(m.tpot.mean_ms, 100.0);
}

#[test]
fn empty_samples_report_zero_like_numpy_over_zero() {
    let m = calculate_metrics(&[failed("timeout")], 1.0, &[99.0], None, &|_| 0);
    assert_eq!(m.completed, 0);
    close(m.ttft.mean_ms, 0.0);
    close(m.itl.at(99.0).unwrap(), 0.0);
    close(m.request_throughput, 0.0);
}

#[test]
fn percentiles_are_numpy_linear_and_std_is_population() {
    close(percentile(&[1.0, 2.0, 3.0, 4.0], 25.0), 1.75);
    close(percentile(&[50.0, 15.0, 40.0, 20.0, 35.0], 40.0), 29.0);
    close(percentile(&[3.0], 99.0), 3.0);
    close(percentile(&[1.0, 2.0], 100.0), 2.0);
    close(std_dev(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]), 2.0);
    assert_eq!(
        parse_percentiles("50, 95,99.9").unwrap(),
        vec![50.0, 95.0, 99.9]
    );
    assert!(parse_percentiles("101").is_err());
    assert!(parse_percentiles("x").is_err());
}
