use candle_core::Device;
use ember_models::batch::{ForwardBatch, LogitsWanted, SeqChunk};
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let prompt = std::env::args()
        .nth(2)
        .unwrap_or("The capital of France is".into());
    let t = std::time::Instant::now();
    let m = ember_models::loader::load(&path, &Device::Cpu).unwrap();
    eprintln!("load {:?}", t.elapsed());
    let mut ids = m.tokenizer.encode(&prompt, true).unwrap();
    let bs = 16;
    let mut cache = m.model.new_kv_cache(64, bs).unwrap();
    let table: Vec<u32> = (0..64).collect();
    let mut done = 0;
    let n_prompt = ids.len();
    let t = std::time::Instant::now();
    for step in 0..24 {
        let chunk = SeqChunk {
            tokens: &ids[done..],
            num_computed: done,
            block_table: &table,
            logits: LogitsWanted::Last,
        };
        let b = ForwardBatch::build(&[chunk], bs).unwrap();
        let logits = m
            .model
            .forward(&b, &mut cache)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        done = ids.len();
        let (best, _) = logits[0]
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a });
        ids.push(best as u32);
        if step == 0 {
            eprintln!("prefill {} tokens {:?}", n_prompt, t.elapsed());
        }
    }
    eprintln!("total {:?}", t.elapsed());
    println!("{}", m.tokenizer.decode(&ids[n_prompt..], false).unwrap());
}
