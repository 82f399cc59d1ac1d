//! `ember serve`: vLLM's OpenAI-compatible HTTP server (the server crate does the work).

pub use ember_server::ServeArgs;

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    ember_server::run(args)?;
    Ok(())
}
