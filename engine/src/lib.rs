//! ember's engine: requests, block pool, scheduler, model runner, sampler, engine loop.

pub mod detokenizer;
