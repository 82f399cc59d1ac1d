//! A sequence's logits must not depend on what else is in the batch: 8 different prompts generated
//! together give bit-identical logits and greedy tokens to each generated alone.

use candle_core::quantized::GgmlDType;
use candle_core::Device;
use ember_models::batch::{ForwardBatch, LogitsWanted, SeqChunk};
use ember_models::config::Architecture;
use ember_models::loader::{self, registry};
use ember_models::model::DecoderModel;
use ember_models::testing::{write_tiny_model, TinyFormat};

const BLOCK: usize = 16;

/// Greedy-generates `steps` tokens for every prompt in one batch per step (prompts prefilled together,
/// then one decode token each); returns each sequence's logits rows, one per step.
fn generate(model: &DecoderModel, prompts: &[Vec<u32>], steps: usize) -> Vec<Vec<Vec<f32>>> {
    let per_seq = (prompts.iter().map(|p| p.len()).max().unwrap() + steps).div_ceil(BLOCK);
    let mut cache = model.new_kv_cache(per_seq * prompts.len(), BLOCK).unwrap();
    // Interleave block ids across sequences so each one's blocks are scattered.
    let tables: Vec<Vec<u32>> = (0..prompts.len())
        .map(|s| {
            (0..per_seq)
                .map(|b| (b * prompts.len() + s) as u32)
                .collect()
        })
        .collect();
    let mut seqs: Vec<Vec<u32>> = prompts.to_vec();
    let mut computed = vec![0; prompts.len()];
    let mut rows: Vec<Vec<Vec<f32>>> = vec![Vec::new(); prompts.len()];
    for _ in 0..steps {
        let chunks: Vec<SeqChunk> = seqs
            .iter()
            .enumerate()
            .map(|(i, s)| SeqChunk {
                tokens: &s[computed[i]..],
                num_computed: computed[i],
                block_table: &tables[i],
                logits: LogitsWanted::Last,
            })
            .collect();
        let batch = ForwardBatch::build(&chunks, BLOCK).unwrap();
        let logits = model
            .forward(&batch, &mut cache)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (i, row) in logits.into_iter().enumerate() {
            computed[i] = seqs[i].len();
            let next = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (j, &v)| if v > b.1 { (j, v) } else { b },
                )
                .0;
            seqs[i].push(next as u32);
            rows[i].push(row);
        }
    }
    rows
}

fn assert_batch_invariant(model: &DecoderModel, prompts: &[Vec<u32>], steps: usize, what: &str) {
    let together = generate(model, prompts, steps);
    for (i, prompt) in prompts.iter().enumerate() {
        let alone = generate(model, std::slice::from_ref(prompt), steps);
        for (step, (a, b)) in alone[0].iter().zip(&together[i]).enumerate() {
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "{what}: prompt {i} step {step}: logits differ between alone and batched"
            );
        }
    }
}

fn prompts(vocab: u32) -> Vec<Vec<u32>> {
    (0..8u32)
        .map(|i| {
            (0..(3 + 7 * i))
                .map(|j| (i * 131 + j * 17 + 5) % vocab)
                .collect()
        })
        .collect()
}

#[test]
fn tiny_models_are_batch_invariant() {
    for format in [
        TinyFormat::HfDir,
        TinyFormat::Gguf(GgmlDType::Q8_0),
        TinyFormat::Gguf(GgmlDType::Q4_0),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let arch = Architecture::Qwen2;
        let path = write_tiny_model(dir.path(), arch, format, 3).unwrap();
        let loaded = loader::load(path.to_str().unwrap(), &Device::Cpu).unwrap();
        assert_batch_invariant(
            &loaded.model,
            &prompts(loaded.config.vocab_size as u32),
            6,
            &format!("{format:?}"),
        );
    }
}

#[test]
fn default_model_is_batch_invariant() {
    let path = registry::fetch(registry::DEFAULT_MODEL_ALIAS).unwrap();
    let loaded = loader::load(path.to_str().unwrap(), &Device::Cpu).unwrap();
    let tok = &loaded.tokenizer;
    let texts = [
        "The capital of France is",
        "def fibonacci(n):",
        "Once upon a time, in a land far away, there lived a",
        "1, 2, 3, 4,",
        "The quick brown fox",
        "Water boils at",
        "In 1492, Columbus sailed across the Atlantic Ocean and reached the islands of the",
        "Hello",
    ];
    let prompts: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t, true).unwrap()).collect();
    assert_batch_invariant(&loaded.model, &prompts, 8, "smollm2-135m-instruct");
}
