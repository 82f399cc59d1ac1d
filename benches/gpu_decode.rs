//! Decode throughput of a model on a CUDA device against the batch-1 roofline (bf16 weight bytes read
//! per step ÷ the device's measured copy bandwidth), at batch 1, 64 and 256, each sequence with a
//! 128-token context then 32 decode steps; each step's greedy tokens are picked on the device and copied
//! to the host, as the engine does for temperature-0 requests. Each batch is timed with every kernel
//! launched eagerly and with the decode step replayed from a CUDA graph, side by side.
//! `cargo bench --features cuda --bench gpu_decode -- [MODEL | --random qwen2.5-1.5b] [--kv fp8]`.
//! Without the real weights at hand (a GPU machine has no network), `--random qwen2.5-1.5b` times random
//! weights of Qwen2.5-Coder-1.5B's shape: the same bytes and kernels, so the same speed.

use std::time::Instant;

use candle_core::{DType, Device};
use ember_kernels::{argmax_rows, DeviceChoice, KvCacheDtype};
use ember_models::config::ModelConfig;
use ember_models::decode_graph::DecodeGraph;
use ember_models::loader::{self, LoadOptions};
use ember_models::model::DecoderModel;
use ember_models::random_model::{qwen2_5_1_5b_config, RandomWeights};

#[path = "common/decode.rs"]
mod decode;
#[path = "common/gpu_copy.rs"]
mod gpu_copy;
use decode::DecodeWorkload;
use gpu_copy::copy_bandwidth;

/// Bytes of matmul weights one decode step reads (the embedding gather is negligible; a tied table is
/// read once, as the LM head).
fn weight_bytes(c: &ModelConfig, elem: usize) -> usize {
    let (h, f) = (c.hidden_size, c.intermediate_size);
    let (q, kv) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
    let per_layer = h * q + 2 * h * kv + q * h + 3 * h * f;
    (c.num_layers * per_layer + c.vocab_size * h) * elem
}

/// Tokens/s and ms/step of 32 decode steps at `batch`, each step launched eagerly or (`graph`) replayed
/// from a CUDA graph captured for the batch.
fn decode(model: &DecoderModel, batch: usize, graph: bool, dev: &Device) -> (f64, f64) {
    let (steps, ctx) = (32, 128);
    let (workload, mut cache) = DecodeWorkload::new(model, batch, ctx, steps);
    // Captured before the prefill: the capture writes no cache slot.
    let mut graph = graph.then(|| {
        DecodeGraph::capture(model, &mut cache, batch, ctx + steps + 1).expect("CUDA graph capture")
    });
    workload.prefill(model, &mut cache);
    let rows: Vec<u32> = (0..batch as u32).collect();
    let mut step = |i: usize, cache: &mut _| {
        // Greedy requests, as the engine serves them: each row's token picked on the device, only the
        // ids copied back.
        let logits = match graph.as_mut() {
            Some(g) => g
                .run(model, &workload.step_batch(i), cache)
                .expect("graph step"),
            None => workload.step(model, cache, i),
        };
        argmax_rows(&logits, &rows).expect("greedy tokens");
    };
    step(0, &mut cache); // warm-up: module loads, cuBLAS handles
    dev.synchronize().unwrap();
    let t = Instant::now();
    for i in 1..=steps {
        step(i, &mut cache);
    }
    dev.synchronize().unwrap();
    let secs = t.elapsed().as_secs_f64();
    ((batch * steps) as f64 / secs, secs * 1e3 / steps as f64)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let dev = match DeviceChoice::Cuda(0).open() {
        Ok(d) => d,
        Err(e) => {
            let why = e.to_string();
            println!(
                "skipping: no CUDA device ({})",
                why.lines().next().unwrap_or_default()
            );
            return;
        }
    };
    let kv = if args
        .windows(2)
        .any(|w| w[0] == "--kv" && w[1].starts_with("fp8"))
    {
        KvCacheDtype::Fp8E4M3
    } else {
        KvCacheDtype::Auto
    };
    let random = args
        .windows(2)
        .find(|w| w[0] == "--random")
        .map(|w| w[1].clone());
    let started = Instant::now();
    // With random weights a second model of the same shape with unfused projections (one matmul per
    // q/k/v/gate/up, as the checkpoint stores them) is timed beside the fused one.
    let (name, model, unfused) = match random {
        Some(shape) => {
            assert_eq!(shape, "qwen2.5-1.5b", "--random knows qwen2.5-1.5b");
            let cfg = qwen2_5_1_5b_config();
            let build = |fuse: bool| {
                DecoderModel::with_fusion(&cfg, &RandomWeights::new(&cfg, &dev, DType::BF16), fuse)
                    .expect("random model")
                    .with_kv_cache_dtype(kv)
            };
            (
                format!("random weights of {shape}'s shape"),
                build(true),
                Some(build(false)),
            )
        }
        None => {
            let spec = args
                .iter()
                .find(|a| !a.starts_with("--") && !a.starts_with("fp8"))
                .cloned()
                .unwrap_or_else(|| "qwen2.5-coder-1.5b-instruct".into());
            let options = LoadOptions {
                kv_cache_dtype: kv,
                ..LoadOptions::for_device(&dev)
            };
            match loader::load_with(&spec, &options) {
                Ok(l) => (spec, l.model, None),
                Err(e) => {
                    println!("skipping {spec}: {e}");
                    return;
                }
            }
        }
    };
    dev.synchronize().unwrap();
    let load_s = started.elapsed().as_secs_f64();
    let bw = copy_bandwidth(&dev);
    let bytes = weight_bytes(model.config(), model.dtype().size_in_bytes());
    let roofline = bw * 1e9 / bytes as f64;
    println!(
        "model: {name} ({:?}, KV {kv:?}), loaded in {load_s:.1} s; weights read per step {:.2} GB; copy \
         bandwidth {bw:.0} GB/s; batch-1 roofline {roofline:.0} tok/s",
        model.dtype(),
        bytes as f64 / 1e9
    );
    let unfused_head = if unfused.is_some() {
        " unfused projections tok/s | fused ÷ unfused |"
    } else {
        ""
    };
    println!(
        "| batch | tok/s | ms/step | vs weight-read bound (batch × roofline) | CUDA graph tok/s | graph ÷ \
         eager | graph vs bound |{unfused_head}"
    );
    println!(
        "|---|---|---|---|---|---|---|{}",
        if unfused.is_some() { "---|---|" } else { "" }
    );
    let share =
        |tps: f64, batch: usize| 100.0 * tps / (roofline * batch as f64).max(f64::MIN_POSITIVE);
    for batch in [1usize, 64, 256] {
        let (tps, ms) = decode(&model, batch, false, &dev);
        let (graph_tps, _) = decode(&model, batch, true, &dev);
        let mut row = format!(
            "| {batch} | {tps:.0} | {ms:.2} | {:.0}% | {graph_tps:.0} | {:.2} | {:.0}% |",
            share(tps, batch),
            graph_tps / tps.max(f64::MIN_POSITIVE),
            share(graph_tps, batch)
        );
        if let Some(other) = &unfused {
            let (other_tps, _) = decode(other, batch, false, &dev);
            row += &format!(
                " {other_tps:.0} | {:.2} |",
                tps / other_tps.max(f64::MIN_POSITIVE)
            );
        }
        println!("{row}");
    }
}
