//! Tokenizer checks. The Llama-2 references run only when scripts/setup-tokenizer.sh has filled
//! the cache (`$VELA_CACHE/tokenizer` or `~/.cache/vela/tokenizer`); otherwise they say so and
//! pass, because CI machines without the cache use the byte fallback.

use vela_vla::tokenizer::{cache_dir, convert_gguf_vocab, ByteTokenizer, SpmTokenizer, TextTokenizer};

#[test]
fn byte_fallback_uses_llama_byte_ids() {
    let ids = ByteTokenizer.encode("In: a", true);
    assert_eq!(ids, vec![1, 3 + b'I' as u32, 3 + b'n' as u32, 3 + b':' as u32, 3 + b' ' as u32, 3 + b'a' as u32]);
}

#[test]
fn llama_spm_matches_reference_encodings() {
    let dir = cache_dir();
    let gguf = dir.join("ggml-vocab-llama-spm.gguf");
    if !gguf.exists() {
        eprintln!("SKIPPED: {} missing; run scripts/setup-tokenizer.sh", gguf.display());
        return;
    }
    // Convert afresh so the converter itself is under test, not just a cached file.
    let out = std::env::temp_dir().join(format!("vela-tok-{}.json", std::process::id()));
    let merges = convert_gguf_vocab(&gguf, &out).unwrap();
    assert_eq!(merges, 61249);
    let tok = SpmTokenizer::from_file(&out).unwrap();
    assert_eq!(tok.vocab_size(), 32000);
    let inp = std::fs::read_to_string(dir.join("ggml-vocab-llama-spm.gguf.inp")).unwrap();
    let outp = std::fs::read_to_string(dir.join("ggml-vocab-llama-spm.gguf.out")).unwrap();
    let mut cases: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    if cases.last() == Some(&"") {
        cases.pop();
    }
    let expected: Vec<Vec<u32>> =
        outp.lines().map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect()).collect();
    assert_eq!(cases.len(), expected.len());
    let mut bad = Vec::new();
    for (text, want) in cases.iter().zip(&expected) {
        let got = tok.encode(text, false);
        if &got != want {
            bad.push(format!("{text:?}: got {got:?} want {want:?}"));
        }
    }
    assert!(bad.is_empty(), "{} / {} mismatches:\n{}", bad.len(), cases.len(), bad.join("\n"));
    // The OpenVLA prompt, with BOS.
    let ids = tok.encode("In: What action should the robot take to pick up the cup?\nOut:", true);
    assert_eq!(ids, vec![1, 512, 29901, 1724, 3158, 881, 278, 19964, 2125, 304, 5839, 701, 278, 18002, 29973, 13, 3744, 29901]);
    let _ = std::fs::remove_file(out);
}

#[test]
fn reads_pair_style_merges_from_newer_tokenizer_json() {
    let j = r#"{"version":"1.0","model":{"type":"BPE","unk_token":"<unk>","fuse_unk":true,"byte_fallback":true,
        "vocab":{"<unk>":0,"<s>":1,"</s>":2,"\u2581":3,"a":4,"b":5,"\u2581a":6,"\u2581ab":7},
        "merges":[["\u2581","a"],"\u2581a b"]}}"#;
    let p = std::env::temp_dir().join(format!("vela-tok-pairs-{}.json", std::process::id()));
    std::fs::write(&p, j).unwrap();
    let t = SpmTokenizer::from_file(&p).unwrap();
    assert_eq!(t.encode("ab", true), vec![1, 7]);
    assert_eq!(t.encode("ab a", false), vec![7, 6]);
    let _ = std::fs::remove_file(p);
}
