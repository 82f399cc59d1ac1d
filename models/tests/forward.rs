//! The paged, batched forward against a plain contiguous reference, and batch invariance.

mod common;

use candle_core::quantized::GgmlDType;
use candle_core::Device;
use common::ReferenceModel;
use ember_models::batch::{ForwardBatch, LogitsWanted, SeqChunk};
use ember_models::config::Architecture;
use ember_models::loader;
use ember_models::testing::{tiny_config, tiny_weights, write_tiny_model, TinyFormat};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const ARCHS: [Architecture; 3] = [
    Architecture::Llama,
    Architecture::Qwen2,
    Architecture::Qwen3,
];

/// A sequence's tokens and how many of them each step computes.
struct Plan {
    tokens: Vec<u32>,
    chunks: Vec<usize>,
}

/// One plan per chunk list, each with random tokens filling its chunks.
fn random_plans(chunk_lists: &[&[usize]], vocab_size: usize, rng: &mut StdRng) -> Vec<Plan> {
    chunk_lists
        .iter()
        .map(|chunks| Plan {
            tokens: (0..chunks.iter().sum::<usize>())
                .map(|_| rng.random_range(0..vocab_size as u32))
                .collect(),
            chunks: chunks.to_vec(),
        })
        .collect()
}

/// Runs the plans step by step (step `s` computes chunk `s` of every plan that still has one), returning
/// every position's logits per sequence.
fn run_paged(
    model: &ember_models::model::DecoderModel,
    plans: &[Plan],
    block_size: usize,
    rng: &mut StdRng,
) -> Vec<Vec<Vec<f32>>> {
    let blocks_per_seq: Vec<usize> = plans
        .iter()
        .map(|p| p.tokens.len().div_ceil(block_size))
        .collect();
    let total: usize = blocks_per_seq.iter().sum::<usize>() + 3;
    // Shuffled block ids so no sequence's blocks are contiguous.
    let mut ids: Vec<u32> = (0..total as u32).collect();
    ids.shuffle(rng);
    let mut tables = Vec::new();
    let mut next = 0;
    for n in &blocks_per_seq {
        tables.push(ids[next..next + n].to_vec());
        next += n;
    }
    let mut cache = model.new_kv_cache(total, block_size).unwrap();
    let mut done = vec![0usize; plans.len()];
    let mut logits: Vec<Vec<Vec<f32>>> = plans.iter().map(|_| Vec::new()).collect();
    let steps = plans.iter().map(|p| p.chunks.len()).max().unwrap();
    for step in 0..steps {
        let active: Vec<usize> = (0..plans.len())
            .filter(|&i| step < plans[i].chunks.len())
            .collect();
        let chunks: Vec<SeqChunk> = active
            .iter()
            .map(|&i| {
                let n = plans[i].chunks[step];
                SeqChunk {
                    tokens: &plans[i].tokens[done[i]..done[i] + n],
                    num_computed: done[i],
                    block_table: &tables[i],
                    logits: LogitsWanted::All,
                }
            })
            .collect();
        let batch = ForwardBatch::build(&chunks, block_size).unwrap();
        let out = model
            .forward(&batch, &mut cache)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let mut row = 0;
        for &i in &active {
            let n = plans[i].chunks[step];
            logits[i].extend(out[row..row + n].iter().cloned());
            row += n;
            done[i] += n;
        }
    }
    logits
}

fn max_abs_diff(a: &[Vec<Vec<f32>>], b: &[Vec<Vec<f64>>]) -> f64 {
    let mut worst = 0f64;
    for (sa, sb) in a.iter().zip(b) {
        assert_eq!(sa.len(), sb.len());
        for (ra, rb) in sa.iter().zip(sb) {
            for (x, y) in ra.iter().zip(rb) {
                worst = worst.max((*x as f64 - y).abs());
            }
        }
    }
    worst
}

#[test]
fn paged_forward_matches_contiguous_reference() {
    let mut rng = StdRng::seed_from_u64(7);
    for arch in ARCHS {
        let cfg = tiny_config(arch);
        let reference = ReferenceModel::new(&cfg, &tiny_weights(&cfg, 11).unwrap());
        for format in [TinyFormat::HfDir, TinyFormat::Gguf(GgmlDType::F32)] {
            let dir = tempfile::tempdir().unwrap();
            let path = write_tiny_model(dir.path(), arch, format, 11).unwrap();
            let loaded = loader::load(path.to_str().unwrap(), &Device::Cpu).unwrap();
            assert_eq!(loaded.config.architecture, arch);
            for block_size in [1, 16, 32] {
                // Mixed steps: whole prefills, prefill chunks continuing a cache, and single-token decodes.
                let plans = random_plans(
                    &[
                        &[37, 1, 1, 1],
                        &[20, 30, 1, 5],
                        &[5, 1, 1, 1, 1, 1],
                        &[1, 1, 17, 1],
                        &[64, 3],
                    ],
                    cfg.vocab_size,
                    &mut rng,
                );
                let paged = run_paged(&loaded.model, &plans, block_size, &mut rng);
                let expected: Vec<Vec<Vec<f64>>> =
                    plans.iter().map(|p| reference.logits(&p.tokens)).collect();
                let diff = max_abs_diff(&paged, &expected);
                assert!(
                    diff <= 1e-4,
                    "{arch:?} {format:?} block size {block_size}: max |Δlogit| = {diff:e}"
                );
            }
        }
    }
}

/// Fusing q|k|v and gate|up into one matmul each (dense weights) changes no logit on the CPU: every
/// output element of ember's f32 matmul is the same dot product whatever matrix its row sits in.
#[test]
fn fused_projections_give_the_unfused_logits() {
    use ember_models::loader::safetensors::SafetensorsWeights;
    use ember_models::model::DecoderModel;
    let mut rng = StdRng::seed_from_u64(5);
    for arch in ARCHS {
        let cfg = tiny_config(arch);
        let dir = tempfile::tempdir().unwrap();
        let path = write_tiny_model(dir.path(), arch, TinyFormat::HfDir, 13).unwrap();
        let weights = SafetensorsWeights::open(&path, &Device::Cpu).unwrap();
        let fused = DecoderModel::with_fusion(&cfg, &weights, true).unwrap();
        let unfused = DecoderModel::with_fusion(&cfg, &weights, false).unwrap();
        // q|k|v and gate|up in every layer.
        assert_eq!(fused.fused_projections(), 2 * cfg.num_layers, "{arch:?}");
        assert_eq!(unfused.fused_projections(), 0, "{arch:?}");
        let plans = random_plans(&[&[9, 1, 1], &[3, 4, 1]], cfg.vocab_size, &mut rng);
        let a = run_paged(&fused, &plans, 4, &mut StdRng::seed_from_u64(1));
        let b = run_paged(&unfused, &plans, 4, &mut StdRng::seed_from_u64(1));
        assert_eq!(a, b, "{arch:?}: fused and unfused logits differ");
    }
}
