//! Forward-pass throughput of a registry model on this machine: load time, prefill tokens/s, decode
//! tokens/s at several batch sizes, and peak RSS, with the batch-1 decode roofline of this machine (memory
//! read bandwidth measured in the same run / bytes of weights read per token). Run:
//! `cargo bench --bench forward -- [MODEL]`.

use std::time::Instant;

use candle_core::Device;
use ember_models::batch::{ForwardBatch, LogitsWanted, SeqChunk};
use ember_models::loader::{self, registry};

#[path = "common/decode.rs"]
mod decode;
use decode::{DecodeWorkload, BLOCK};

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Read bandwidth in GB/s of summing a 256 MiB buffer on every core (best of three): every weight byte is
/// read once per decode step, so this over the weight bytes bounds batch-1 decode.
fn read_bandwidth() -> f64 {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let buf = vec![1u64; 32 << 20];
    let chunk = buf.len().div_ceil(threads);
    (0..3)
        .map(|_| {
            let t = Instant::now();
            std::thread::scope(|s| {
                for part in buf.chunks(chunk) {
                    s.spawn(move || {
                        std::hint::black_box(part.iter().fold(0u64, |a, &v| a.wrapping_add(v)))
                    });
                }
            });
            (buf.len() * 8) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0f64, f64::max)
}

fn main() {
    let model_name = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_else(|| registry::DEFAULT_MODEL_ALIAS.to_string());
    let path = registry::fetch(&model_name)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or(model_name.clone());
    let file_mib = std::fs::metadata(&path).map_or(f64::NAN, |m| m.len() as f64 / 1048576.0);
    let started = Instant::now();
    let loaded = loader::load(&path, &Device::Cpu).expect("load model");
    let load_s = started.elapsed().as_secs_f64();
    let model = &loaded.model;
    let vocab = loaded.config.vocab_size as u32;
    println!(
        "model {model_name}: file {file_mib:.0} MiB, load {load_s:.2} s, RSS after load {:.0} MiB",
        peak_rss_mib()
    );

    // Prefill: one 256-token prompt in one step.
    let prompt: Vec<u32> = (0..256u32).map(|i| (i * 7919 + 13) % vocab).collect();
    let blocks = 64;
    let table: Vec<u32> = (0..blocks).collect();
    let mut cache = model.new_kv_cache(blocks as usize, BLOCK).unwrap();
    let run_prefill = |cache: &mut _| {
        let chunk = SeqChunk {
            tokens: &prompt,
            num_computed: 0,
            block_table: &table,
            logits: LogitsWanted::Last,
        };
        model
            .forward(&ForwardBatch::build(&[chunk], BLOCK).unwrap(), cache)
            .unwrap();
    };
    run_prefill(&mut cache);
    let t = Instant::now();
    let reps = 3;
    for _ in 0..reps {
        run_prefill(&mut cache);
    }
    let prefill_tps = (reps * prompt.len()) as f64 / t.elapsed().as_secs_f64();
    println!("prefill (256-token prompt): {prefill_tps:.1} tok/s");

    // Decode at batch sizes 1, 8, 32: each sequence has a 128-token context, then 32 decode steps.
    for batch in [1usize, 8, 32] {
        let steps = 32;
        let (workload, mut cache) = DecodeWorkload::new(model, batch, 128, steps);
        workload.prefill(model, &mut cache);
        let t = Instant::now();
        for step in 0..steps {
            workload.step(model, &mut cache, step);
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "decode batch {batch:>2}: {:.1} tok/s ({:.1} ms/step)",
            (batch * steps) as f64 / secs,
            secs * 1000.0 / steps as f64
        );
        if batch == 1 {
            // The GGUF file is (almost) all weights; the token embedding is only gathered, but with tied
            // embeddings it is also the LM head, so the file size is the bytes one step reads.
            let bw = read_bandwidth();
            let file_bytes = file_mib * 1048576.0;
            let roofline = bw * 1e9 / file_bytes;
            println!(
                "  roofline: memory read {bw:.1} GB/s / {file_mib:.0} MiB of weights = {roofline:.1} tok/s \
                 (batch 1 at {:.0}% of it)",
                100.0 * steps as f64 / secs / roofline
            );
        }
    }
    println!(
        "peak RSS {:.0} MiB (GGUF file {file_mib:.0} MiB)",
        peak_rss_mib()
    );
}
