//! The CUDA engine against the CPU engine on the real registry models: greedy output for the first 32
//! tokens (bf16 drifts from f32 eventually; the first tokens must agree and the first divergence is
//! printed), fp8 KV logits close to bf16 KV logits, and the pool sized from `--gpu-memory-utilization`.
//! Without a CUDA device, or without a model in $EMBER_HOME (a GPU machine has no network), each test
//! prints why it skips.
#![cfg(feature = "cuda")]

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use ember_engine::{
    CacheConfig, EngineOptions, LlmEngine, Request, SamplingParams, SchedulerConfig,
};
use ember_kernels::{DeviceChoice, KvCacheDtype, PagedKvCache};
use ember_models::batch::{ForwardBatch, LogitsWanted, SeqChunk};
use ember_models::loader::{self, LoadOptions, LoadedModel};

const TOKENS: usize = 32;
/// Leading greedy tokens that must agree exactly between bf16 CUDA and f32 CPU.
const MUST_MATCH: usize = 4;

fn gpu() -> Option<Device> {
    // One line saying why (no device, the stub driver, ...), candle's backtrace dropped.
    match DeviceChoice::Cuda(0).open() {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("skipping: {e}");
            None
        }
    }
}

fn load(spec: &str, options: &LoadOptions) -> Option<LoadedModel> {
    match loader::load_with(spec, options) {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("skipping {spec}: cannot load it here ({e})");
            None
        }
    }
}

/// `spec` loaded on the GPU, or `None` (with a line saying why) where there is no GPU or no model file.
fn load_on_gpu(spec: &str) -> Option<LoadedModel> {
    load(spec, &LoadOptions::for_device(&gpu()?))
}

/// Greedy continuations of `prompts`, all in one engine (batched prefill and decode), with its decode
/// steps captured as CUDA graphs or not.
fn greedy(model: &Arc<LoadedModel>, prompts: &[&str], graphs: bool) -> Vec<Vec<u32>> {
    let scheduler = SchedulerConfig {
        max_model_len: 1024,
        ..SchedulerConfig::default()
    };
    let cache = CacheConfig {
        block_size: 16,
        num_blocks: 256,
        enable_prefix_caching: false,
    };
    let mut engine = LlmEngine::new(model.clone(), scheduler, cache).expect("engine");
    if graphs {
        let c = engine
            .capture_cuda_graphs(8, 1024)
            .expect("capture")
            .expect("on CUDA");
        println!(
            "captured {:?} in {:.2} s, replay difference {:e}",
            c.batch_sizes, c.seconds, c.max_replay_difference
        );
        assert_eq!(engine.captured_graphs(), c.batch_sizes.len());
    }
    for (i, p) in prompts.iter().enumerate() {
        let ids = model.tokenizer.encode(p, true).expect("encode");
        let sampling = SamplingParams {
            temperature: 0.0,
            max_tokens: Some(TOKENS),
            ignore_eos: true,
            ..SamplingParams::default()
        };
        engine
            .add_request(Request::new(format!("r{i}").as_str(), ids, sampling))
            .expect("add");
    }
    let mut out = vec![Vec::new(); prompts.len()];
    while engine.has_unfinished() {
        for o in engine.step().expect("step") {
            let i: usize = o.id.as_str()[1..].parse().unwrap();
            out[i].extend(o.new_token_ids);
        }
    }
    out
}

fn compare(spec: &str, prompts: &[&str]) {
    let Some(dev) = gpu() else { return };
    let Some(cpu) = load(spec, &LoadOptions::cpu()) else {
        return;
    };
    let Some(cuda) = load(spec, &LoadOptions::for_device(&dev)) else {
        return;
    };
    let tokenizer = cpu.tokenizer.clone();
    let text = |ids: &[u32]| tokenizer.decode(ids, false).unwrap_or_default();
    let want = greedy(&Arc::new(cpu), prompts, false);
    let got = greedy(&Arc::new(cuda), prompts, false);
    for (i, p) in prompts.iter().enumerate() {
        let first_diff = want[i].iter().zip(&got[i]).position(|(a, b)| a != b);
        println!(
            "{spec} prompt {i} {p:?}: first divergence at {} of {TOKENS}\n  cpu : {:?}\n  cuda: {:?}",
            first_diff.map_or("none".into(), |d| d.to_string()),
            text(&want[i]),
            text(&got[i])
        );
        assert_eq!(got[i].len(), TOKENS);
        assert_eq!(
            want[i][..MUST_MATCH],
            got[i][..MUST_MATCH],
            "{spec} prompt {i}: the first {MUST_MATCH} greedy tokens differ"
        );
    }
}

#[test]
fn smollm2_greedy_matches_the_cpu_engine() {
    compare(
        "smollm2-135m-instruct",
        &["The capital of France is", "1, 2, 3, 4, 5,"],
    );
}

#[test]
fn qwen_coder_greedy_matches_the_cpu_engine() {
    compare(
        "qwen2.5-coder-0.5b-instruct",
        &["def fibonacci(n):", "The three primary colors are"],
    );
}

/// Last-token logits of one prompt (a 3-step chunked prefill, then decode steps) with a KV cache of `kv`.
fn logits_with(model: &LoadedModel, kv: KvCacheDtype, ids: &[u32]) -> Vec<Vec<f32>> {
    let m = &model.model;
    let spec = m.kv_cache_spec(64, 16);
    let mut cache =
        PagedKvCache::with_dtype(spec, m.config().num_layers, m.device(), m.dtype(), kv)
            .expect("cache");
    let table: Vec<u32> = (0..64).collect();
    let mut rows = Vec::new();
    let mut done = 0;
    for chunk in ids.chunks(ids.len().div_ceil(3)) {
        let c = SeqChunk {
            tokens: chunk,
            num_computed: done,
            block_table: &table,
            logits: LogitsWanted::Last,
        };
        let l: Tensor = m
            .forward(&ForwardBatch::build(&[c], 16).unwrap(), &mut cache)
            .expect("forward");
        rows.push(l.to_vec2::<f32>().unwrap().remove(0));
        done += chunk.len();
    }
    rows
}

#[test]
fn fp8_kv_logits_are_close_to_bf16_kv_logits() {
    let spec = "qwen2.5-coder-0.5b-instruct";
    let Some(model) = load_on_gpu(spec) else {
        return;
    };
    assert_eq!(model.model.dtype(), DType::BF16);
    let ids = model
        .tokenizer
        .encode(
            "def quicksort(xs):\n    \"\"\"Sort a list of numbers.\"\"\"\n    if len(xs) <= 1:",
            true,
        )
        .unwrap();
    let exact = logits_with(&model, KvCacheDtype::Auto, &ids);
    let fp8 = logits_with(&model, KvCacheDtype::Fp8E4M3, &ids);
    for (i, (a, b)) in exact.iter().zip(&fp8).enumerate() {
        let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let den: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
        let rel = (num / den).sqrt();
        let argmax = |v: &[f32]| {
            v.iter()
                .enumerate()
                .max_by(|x, y| x.1.total_cmp(y.1))
                .map(|(i, _)| i)
        };
        println!(
            "step {i}: fp8 vs bf16 KV logits relative L2 error {rel:.4}; argmax {:?} vs {:?}",
            argmax(b),
            argmax(a)
        );
        assert!(
            rel.is_finite() && rel < 0.1,
            "step {i}: relative error {rel}"
        );
    }
}

#[test]
fn the_pool_is_sized_from_gpu_memory_utilization() {
    let spec = "smollm2-135m-instruct";
    let Some(model) = load_on_gpu(spec) else {
        return;
    };
    let blocks = |u: f64| {
        EngineOptions {
            gpu_memory_utilization: u,
            ..EngineOptions::default()
        }
        .resolve(&model)
        .expect("resolve")
        .cache
        .num_blocks
    };
    let (half, most) = (blocks(0.3), blocks(0.6));
    println!(
        "{spec}: {half} blocks at 0.3, {most} at 0.6 ({} bytes per block)",
        model.model.kv_block_bytes(16)
    );
    assert!(half > 0 && most > half);
    let e = EngineOptions {
        gpu_memory_utilization: 0.0001,
        ..EngineOptions::default()
    }
    .resolve(&model)
    .unwrap_err();
    assert!(e.to_string().contains("--gpu-memory-utilization"), "{e}");
    // The override wins over the memory figures.
    let fixed = EngineOptions {
        num_blocks: Some(4096),
        ..EngineOptions::default()
    }
    .resolve(&model)
    .unwrap();
    assert_eq!(fixed.cache.num_blocks, 4096);
}

/// A small model of random weights on `dev` (head dim 64, GQA 2:1): CUDA-graph checks need no model file.
fn random_model(
    dev: &Device,
    architecture: ember_models::config::Architecture,
) -> ember_models::model::DecoderModel {
    use ember_models::config::{Architecture, ModelConfig};
    let config = ModelConfig {
        architecture,
        vocab_size: 1000,
        hidden_size: 256,
        intermediate_size: 512,
        num_layers: 4,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 64,
        rope_theta: 10_000.0,
        rope_style: ember_kernels::RopeStyle::Half,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 4096,
        tie_word_embeddings: true,
        attention_bias: architecture == Architecture::Qwen2,
        qk_norm: architecture == Architecture::Qwen3,
    };
    ember_models::random_model::RandomWeights::model(&config, dev, DType::BF16).expect("model")
}

/// A captured decode step replays what the eager forward computes: on fresh inputs at every step (stale
/// inputs baked into the graph would show), for full and padded batches, with sequences at different
/// context lengths crossing blocks and decode partitions (256 keys), for the fused-RoPE path (Qwen2), the
/// q/k-norm path (Qwen3) and Llama's.
#[test]
fn decode_graph_replays_match_the_eager_forward() {
    use ember_models::config::Architecture;
    use ember_models::decode_graph::{relative_difference, DecodeGraph};
    let Some(dev) = gpu() else { return };
    for arch in [
        Architecture::Qwen2,
        Architecture::Qwen3,
        Architecture::Llama,
    ] {
        let model = random_model(&dev, arch);
        let bs = 16;
        let per_seq = 40; // 640 tokens of room per sequence
        let capacity = 8;
        let mut cache = model
            .new_kv_cache(per_seq * capacity + 4, bs)
            .expect("cache");
        let mut graph = DecodeGraph::capture(&model, &mut cache, capacity, 1024).expect("capture");
        let check = graph.verify(&model, &mut cache).expect("verify");
        println!("{arch:?}: verify() replay difference {check:e}");
        assert!(check <= 1e-3, "{arch:?}: verify() difference {check}");
        let tables: Vec<Vec<u32>> = (0..capacity)
            .map(|s| ((s * per_seq) as u32..((s + 1) * per_seq) as u32).collect())
            .collect();
        // Prompts of different lengths, written eagerly: 1, 90, 255, 300, ... tokens.
        let lens: Vec<usize> = (0..capacity)
            .map(|s| [1, 90, 255, 300, 17, 256, 511, 64][s])
            .collect();
        let prompts: Vec<Vec<u32>> = (0..capacity)
            .map(|s| {
                (0..lens[s] as u32)
                    .map(|i| (i * 37 + s as u32 * 11) % 1000)
                    .collect()
            })
            .collect();
        let chunks: Vec<SeqChunk> = (0..capacity)
            .map(|s| SeqChunk {
                tokens: &prompts[s],
                num_computed: 0,
                block_table: &tables[s],
                logits: LogitsWanted::None,
            })
            .collect();
        model
            .forward(&ForwardBatch::build(&chunks, bs).unwrap(), &mut cache)
            .expect("prefill");
        let mut done = lens.clone();
        // Full batches, then padded ones (fewer sequences than the graph holds).
        for (step, n) in [8usize, 8, 5, 1, 8, 3].into_iter().enumerate() {
            let tokens: Vec<[u32; 1]> = (0..n)
                .map(|s| [((step * 131 + s * 17 + 5) % 1000) as u32])
                .collect();
            let chunks: Vec<SeqChunk> = (0..n)
                .map(|s| SeqChunk {
                    tokens: &tokens[s],
                    num_computed: done[s],
                    block_table: &tables[s],
                    logits: LogitsWanted::Last,
                })
                .collect();
            let batch = ForwardBatch::build(&chunks, bs).unwrap();
            assert!(graph.fits(&batch));
            let eager = model.forward(&batch, &mut cache).expect("eager");
            let replayed = graph.run(&model, &batch, &mut cache).expect("replay");
            assert_eq!(replayed.dims(), eager.dims());
            let diff = relative_difference(&eager, &replayed).expect("difference");
            println!("{arch:?} step {step}: {n} of {capacity} sequences, difference {diff:e}");
            // A full batch runs the same kernels on the same shapes as the eager step; a padded one runs
            // its GEMMs on more rows, which cuBLAS may split differently (bf16 rounding).
            let tolerance = if n == capacity { 1e-3 } else { 2e-2 };
            assert!(diff <= tolerance, "{arch:?} step {step}: difference {diff}");
            for d in done.iter_mut().take(n) {
                *d += 1;
            }
        }
        // A step the graph cannot hold is refused, not run.
        let too_long = [1u32];
        let long_table: Vec<u32> = (0..65).collect(); // room for 1025 tokens
        let chunk = SeqChunk {
            tokens: &too_long,
            num_computed: 1024,
            block_table: &long_table,
            logits: LogitsWanted::Last,
        };
        let batch = ForwardBatch::build(&[chunk], bs).unwrap();
        assert!(!graph.fits(&batch));
        assert!(graph.run(&model, &batch, &mut cache).is_err());
    }
}

/// Greedy tokens from the engine with CUDA graphs captured for its decode steps equal those of the same
/// engine run eagerly (batched decode of several prompts, so padded graphs run too).
#[test]
fn greedy_output_is_the_same_with_and_without_cuda_graphs() {
    let spec = "qwen2.5-coder-0.5b-instruct";
    let Some(model) = load_on_gpu(spec) else {
        return;
    };
    let model = Arc::new(model);
    let prompts = [
        "def fibonacci(n):",
        "The three primary colors are",
        "1, 2, 3,",
    ];
    let eager = greedy(&model, &prompts, false);
    let graphed = greedy(&model, &prompts, true);
    for (i, p) in prompts.iter().enumerate() {
        let first_diff = eager[i].iter().zip(&graphed[i]).position(|(a, b)| a != b);
        println!("{spec} prompt {i} {p:?}: graphs vs eager first divergence {first_diff:?}");
        assert_eq!(graphed[i].len(), TOKENS);
        assert_eq!(
            eager[i][..MUST_MATCH],
            graphed[i][..MUST_MATCH],
            "prompt {i}: greedy tokens differ with CUDA graphs"
        );
    }
}
