//! ember's evaluator (built in its own issue).

pub mod bench;
