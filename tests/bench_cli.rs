//! `ember bench` through the binary: in-process runs on a tiny random model complete every request with
//! the asked token counts; unreachable, silent and erroring servers are reported, never a hang.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ember_models::config::Architecture;
use ember_models::testing::{write_tiny_model, TinyFormat};
use serde_json::Value;

fn ember(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(args)
        .output()
        .expect("running ember")
}

fn tiny_model(dir: &Path) -> String {
    let path = write_tiny_model(
        &dir.join("model"),
        Architecture::Qwen2,
        TinyFormat::HfDir,
        11,
    )
    .expect("writing the tiny model");
    path.to_str().unwrap().to_string()
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("result file")).expect("result JSON")
}

fn results_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn in_process_sweep_completes_every_request_with_exact_token_counts() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let results = dir.path().join("results");
    let plot = dir.path().join("sweep.svg");
    let out = ember(&[
        "bench",
        "--model",
        &model,
        "--dataset-name",
        "random",
        "--random-input-len",
        "12",
        "--random-output-len",
        "6",
        "--num-prompts",
        "8",
        "--ignore-eos",
        "--max-concurrency",
        "1,4",
        "--num-warmups",
        "1",
        "--metric-percentiles",
        "50,90",
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--goodput",
        "e2el:600000",
        "--save-result",
        "--result-dir",
        results.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
        "--max-model-len",
        "256",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let files = results_in(&results);
    assert_eq!(files.len(), 2, "one result per concurrency: {files:?}");
    for (file, conc) in files.iter().zip([1, 4]) {
        let r = read_json(file);
        assert_eq!(r["backend"], "ember-inprocess");
        assert_eq!(r["max_concurrency"], conc);
        assert_eq!(r["completed"], 8, "{r}");
        assert_eq!(r["failed"], 0);
        assert_eq!(r["total_input_tokens"], 8 * 12);
        assert_eq!(r["total_output_tokens"], 8 * 6);
        assert!(r["output_lens"].as_array().unwrap().iter().all(|l| l == 6));
        assert!(r["input_lens"].as_array().unwrap().iter().all(|l| l == 12));
        // 6 tokens, one per engine step: 5 gaps per request.
        assert!(r["itls"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g.as_array().unwrap().len() == 5));
        for key in [
            "mean_ttft_ms",
            "median_tpot_ms",
            "std_itl_ms",
            "p90_e2el_ms",
            "p50_ttft_ms",
        ] {
            assert!(r[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {r}");
        }
        assert!(r.get("p99_ttft_ms").is_none(), "only the asked percentiles");
        assert!(r["request_throughput"].as_f64().unwrap() > 0.0);
        // Every request meets a 10-minute E2EL SLO.
        let goodput = r["request_goodput"].as_f64().unwrap();
        assert!((goodput - r["request_throughput"].as_f64().unwrap()).abs() < 1e-9);
        assert_eq!(r["server"]["preemptions"], 0);
        // KV usage is read at every output, so a running request's blocks always show.
        assert!(
            r["server"]["peak_kv_usage"].as_f64().unwrap() > 0.0,
            "{}",
            r["server"]
        );
        assert!(r["server"]["peak_running"].as_u64().unwrap() >= 1);
    }
    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(svg.contains("<svg") && svg.contains("TTFT"), "an SVG plot");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("concurrency-4") && stdout.contains("grade"),
        "{stdout}"
    );
}

#[test]
fn scenarios_file_and_text_datasets_run_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let scenarios = dir.path().join("scen.yaml");
    std::fs::write(
        &scenarios,
        "scenarios:\n  - name: tiny_a\n    max_concurrency: 1\n    input_len: 40\n    output_len: 8\n    \
         num_prompts: 4\n    prefix_len: 64\n  - {name: tiny_b, max_concurrency: 1, input_len: 20, output_len: 4, num_prompts: 2}\n",
    )
    .unwrap();
    let out = ember(&[
        "bench",
        "--model",
        &model,
        "--scenarios",
        scenarios.to_str().unwrap(),
        "--scale",
        "0.5",
        "--ignore-eos",
        "--save-result",
        "--result-filename",
        dir.path().join("scen.json").to_str().unwrap(),
        "--max-model-len",
        "256",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let a = read_json(&dir.path().join("scen-tiny_a.json"));
    // Scale 0.5 halves prompt counts and lengths (the shared prefix too).
    assert_eq!(a["completed"], 2);
    assert_eq!(a["total_input_tokens"], 2 * (20 + 32));
    assert_eq!(a["total_output_tokens"], 2 * 4);
    // The shared prefix's two full blocks come from the prefix cache for the second request.
    assert!(
        a["server"]["prefix_cache_hit_rate"].as_f64().unwrap() > 0.0,
        "{}",
        a["server"]
    );
    let b = read_json(&dir.path().join("scen-tiny_b.json"));
    assert_eq!(
        (b["completed"].clone(), b["total_output_tokens"].clone()),
        (1.into(), 2.into())
    );

    // Prompts from a JSONL file (eval data) and from a ShareGPT file.
    let jsonl = dir.path().join("prompts.jsonl");
    std::fs::write(
        &jsonl,
        "{\"question\": \"hello world\"}\n{\"prompt\": \"the cat sat\"}\n",
    )
    .unwrap();
    let sharegpt = dir.path().join("sharegpt.json");
    std::fs::write(
        &sharegpt,
        serde_json::json!([
            {"conversations": [{"from": "human", "value": "hello there my friend"},
                               {"from": "gpt", "value": "hi there how are you today"}]},
            {"conversations": [{"from": "human", "value": "only one turn"}]},
            {"conversations": [{"from": "human", "value": "what is the cat doing"},
                               {"from": "gpt", "value": "the cat is sitting on the mat"}]}
        ])
        .to_string(),
    )
    .unwrap();
    for (name, path, extra) in [
        ("eval", &jsonl, ["--custom-output-len", "5"]),
        ("sharegpt", &sharegpt, ["--sharegpt-output-len", "5"]),
    ] {
        let result = dir.path().join(format!("{name}.json"));
        let out = ember(&[
            "bench",
            "--model",
            &model,
            "--dataset-name",
            name,
            "--dataset-path",
            path.to_str().unwrap(),
            extra[0],
            extra[1],
            "--num-prompts",
            "2",
            "--ignore-eos",
            "--save-result",
            "--result-filename",
            result.to_str().unwrap(),
            "--max-model-len",
            "256",
        ]);
        assert!(out.status.success(), "{name}: {}", text(&out));
        let r = read_json(&result);
        assert_eq!(r["completed"], 2, "{name}");
        assert_eq!(r["total_output_tokens"], 10, "{name}");
    }
}

#[test]
fn bad_flags_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    for (args, expect) in [
        (vec!["--max-concurrency", "0"], "--max-concurrency"),
        (vec!["--request-rate", "0"], "--request-rate"),
        (vec!["--goodput", "ttft"], "--goodput"),
        (vec!["--dataset-name", "sharegpt"], "--dataset-path"),
        (vec!["--percentile-metrics", "ttft,foo"], "foo"),
        (
            vec![
                "--plot",
                "x.gif",
                "--num-prompts",
                "1",
                "--random-input-len",
                "4",
                "--random-output-len",
                "2",
            ],
            "*.svg or *.png",
        ),
    ] {
        let mut all = vec!["bench", "--model", &model];
        all.extend(args);
        let out = ember(&all);
        assert!(!out.status.success(), "{all:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{all:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn each_sweep_level_draws_its_own_prompts_so_none_hits_the_cache_the_last_one_filled() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let results = dir.path().join("results");
    // 48-token prompts fill three 16-token blocks: a level replaying the previous level's prompts would
    // find two of them cached (a hit rate near 2/3).
    let out = ember(&[
        "bench",
        "--model",
        &model,
        "--random-input-len",
        "48",
        "--random-output-len",
        "2",
        "--num-prompts",
        "4",
        "--num-warmups",
        "0",
        "--ignore-eos",
        "--max-concurrency",
        "1,2,4",
        "--save-result",
        "--result-dir",
        results.to_str().unwrap(),
        "--max-model-len",
        "128",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let files = results_in(&results);
    assert_eq!(files.len(), 3, "{files:?}");
    for file in &files {
        let r = read_json(file);
        assert_eq!(r["completed"], 4, "{r}");
        let hit_rate = r["server"]["prefix_cache_hit_rate"]
            .as_f64()
            .expect("hit rate");
        // At most the probe request (the first level's first prompt, sent before the run) is cached: 1/6.
        assert!(hit_rate < 0.2, "{}: hit rate {hit_rate}", file.display());
    }
}

#[test]
fn sweep_plot_renders_as_png_with_text_and_lines() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let plot = dir.path().join("sweep.png");
    let out = ember(&[
        "bench",
        "--model",
        &model,
        "--random-input-len",
        "8",
        "--random-output-len",
        "3",
        "--num-prompts",
        "4",
        "--ignore-eos",
        "--max-concurrency",
        "1,2",
        "--plot",
        plot.to_str().unwrap(),
        "--max-model-len",
        "128",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    let decoder = png::Decoder::new(std::fs::File::open(&plot).expect("plot written"));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).expect("PNG pixels");
    assert_eq!((frame.width, frame.height), (1200, 900));
    assert_eq!(frame.color_type, png::ColorType::Rgb);
    let rgb = |x: usize, y: usize| {
        let i = (y * frame.width as usize + x) * 3;
        (pixels[i], pixels[i + 1], pixels[i + 2])
    };
    // The title band holds only text: dark pixels there mean the compiled-in font rasterized.
    let dark_in_title = (0..40)
        .flat_map(|y| (0..1200).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let (r, g, b) = rgb(x, y);
            (r as u32 + g as u32 + b as u32) < 300
        })
        .count();
    assert!(
        dark_in_title > 200,
        "{dark_in_title} dark pixels in the title"
    );
    // The throughput line is pure blue, the TTFT/TPOT P50 lines pure green, in the panels they belong to.
    let count = |want: (u8, u8, u8), ys: std::ops::Range<usize>| {
        ys.flat_map(|y| (0..1200).map(move |x| (x, y)))
            .filter(|&(x, y)| rgb(x, y) == want)
            .count()
    };
    assert!(count((0, 0, 255), 0..450) > 100, "throughput line drawn");
    assert!(count((0, 255, 0), 450..900) > 100, "latency lines drawn");
}

/// Reads one HTTP request (headers and a Content-Length body); returns its request line.
fn read_request(stream: &mut TcpStream) -> String {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let mut len = 0;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    line
}

/// A stand-in OpenAI server: the first `good` completion requests stream two tokens, the rest get a
/// 500 with an OpenAI error body; everything else is a 404.
fn flaky_server(good: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let served = served.clone();
            std::thread::spawn(move || {
                let line = read_request(&mut stream);
                let reply = if !line.starts_with("POST /v1/completions") {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                } else if served.fetch_add(1, Ordering::SeqCst) < good {
                    let chunk = |t: &str| {
                        format!("data: {{\"object\":\"text_completion\",\"choices\":[{{\"index\":0,\"text\":\"{t}\"}}]}}\n\n")
                    };
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n{}{}\
                         data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":4,\"completion_tokens\":2}}}}\n\ndata: [DONE]\n\n",
                        chunk("a"),
                        chunk("b")
                    )
                } else {
                    let body = r#"{"error":{"message":"boom","type":"InternalServerError","param":null,"code":500}}"#;
                    format!(
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = stream.write_all(reply.as_bytes());
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn erroring_server_failures_are_counted_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    // The initial test request and one benchmark request succeed; five get a 500.
    let url = flaky_server(2);
    let result = dir.path().join("r.json");
    let out = ember(&[
        "bench",
        "--model",
        &model,
        "--base-url",
        &format!("{url}/v1"),
        "--num-prompts",
        "6",
        "--random-input-len",
        "4",
        "--random-output-len",
        "2",
        "--max-concurrency",
        "1",
        "--save-result",
        "--result-filename",
        result.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let r = read_json(&result);
    assert_eq!(r["backend"], "openai");
    assert_eq!(
        (r["completed"].clone(), r["failed"].clone()),
        (1.into(), 5.into()),
        "{r}"
    );
    assert_eq!(r["errors_by_kind"]["http_500"], 5);
    assert_eq!(r["total_output_tokens"], 2);
    let errors: Vec<&str> = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(
        errors.iter().filter(|e| e.contains("boom")).count(),
        5,
        "{errors:?}"
    );
    assert!(r["server"].is_null(), "no /metrics on this server");
    assert!(String::from_utf8_lossy(&out.stdout).contains("failed: http_500"));

    // Every request failing: the initial test request says so and the exit status is non-zero.
    let url = flaky_server(0);
    let out = ember(&[
        "bench",
        "--model",
        &model,
        "--base-url",
        &url,
        "--num-prompts",
        "2",
        "--random-input-len",
        "4",
        "--random-output-len",
        "2",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http_500") && err.contains("boom"), "{err}");
}

#[test]
fn unreachable_and_silent_servers_fail_fast() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    // Nothing listens on a port we just released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = ember(&[
        "bench",
        "--model",
        &model,
        "--base-url",
        &format!("http://127.0.0.1:{port}"),
        "--num-prompts",
        "4",
        "--random-input-len",
        "4",
        "--random-output-len",
        "2",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("(connect)"), "{err}");

    // A server that accepts and never answers: the request timeout ends it.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming() {
            held.push(s);
        }
    });
    let out = ember(&[
        "bench",
        "--model",
        &model,
        "--base-url",
        &format!("http://{addr}"),
        "--num-prompts",
        "2",
        "--random-input-len",
        "4",
        "--random-output-len",
        "2",
        "--request-timeout",
        "1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("(timeout)"), "{err}");
}
