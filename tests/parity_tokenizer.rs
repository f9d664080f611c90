//! Parity of `models::tokenizer` with SDXL's two tokenizers as diffusers 0.42.1 / transformers 5.24 load and call
//! them. The fixture `tests/fixtures/tokenizer/clip_ids.json` is written by `tools/tokenizer/gen_fixture.py`, which
//! also checks every id list against a pure-Python copy of CLIP's BPE. Ids must be equal, not close.

use std::path::PathBuf;

use serde::Deserialize;
use storymaker::models::tokenizer::{ClipTokenizer, Encoded, Padding, TokenizerError, MAX_LENGTH};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Deserialize)]
struct Fixture {
    max_length: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    prompt: String,
    note: String,
    pad_eos: Expected,
    pad_zero: Expected,
}

#[derive(Deserialize)]
struct Expected {
    ids: Vec<u32>,
    token_count: usize,
    truncated: bool,
    /// diffusers' warning text; empty when nothing was cut.
    removed_text: String,
}

fn manifest_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn fixture() -> Result<Fixture, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(manifest_path("tests/fixtures/tokenizer/clip_ids.json"))?;
    let fixture: Fixture = serde_json::from_str(&text)?;
    assert_eq!(fixture.max_length, MAX_LENGTH);
    assert!(fixture.cases.len() >= 40, "fixture has only {} prompts", fixture.cases.len());
    Ok(fixture)
}

/// Compares every fixture case for both rules; returns one line per mismatch so a failure lists them all.
fn mismatches(tok: &ClipTokenizer, fixture: &Fixture) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut bad = Vec::new();
    for (index, case) in fixture.cases.iter().enumerate() {
        for (pad, want) in [(Padding::Eos, &case.pad_eos), (Padding::Zero, &case.pad_zero)] {
            let got = tok.encode(&case.prompt, pad)?;
            let expected = Encoded { ids: want.ids.clone(), truncated: want.truncated, token_count: want.token_count };
            if got != expected {
                bad.push(format!(
                    "#{index} {pad:?} {:?} ({}):\n  got  {got:?}\n  want {expected:?}",
                    case.prompt, case.note
                ));
            }
            let dropped = tok.dropped_text(&case.prompt, pad)?.unwrap_or_default();
            if dropped != want.removed_text {
                bad.push(format!("#{index} {pad:?} dropped text {dropped:?}, diffusers {:?}", want.removed_text));
            }
        }
    }
    Ok(bad)
}

#[test]
fn bundled_matches_diffusers_ids() -> TestResult {
    let fixture = fixture()?;
    let tok = ClipTokenizer::bundled()?;
    let bad = mismatches(&tok, &fixture)?;
    assert!(bad.is_empty(), "{} mismatches:\n{}", bad.len(), bad.join("\n"));
    Ok(())
}

#[test]
fn fixture_covers_the_edge_cases() -> TestResult {
    let fixture = fixture()?;
    let empty = fixture.cases.iter().find(|c| c.prompt.is_empty()).expect("empty prompt case");
    assert_eq!(&empty.pad_eos.ids[..2], &[49406, 49407]);
    assert!(fixture.cases.iter().filter(|c| c.pad_eos.truncated).count() >= 3);
    assert!(fixture.cases.iter().any(|c| c.pad_eos.token_count == 75 && !c.pad_eos.truncated));
    assert!(fixture.cases.iter().any(|c| c.pad_eos.token_count == 76 && c.pad_eos.truncated));
    assert!(
        fixture.cases.iter().any(|c| c.pad_eos.token_count != c.pad_zero.token_count),
        "no case shows tokenizer_2's '!' rule"
    );
    Ok(())
}

#[test]
fn truncation_keeps_eos_last_and_flags_it() -> TestResult {
    let tok = ClipTokenizer::bundled()?;
    let prompt = "a red fox in the snow, ".repeat(20);
    let (one, two) = tok.sdxl_pair(&prompt)?;
    for enc in [&one, &two] {
        assert_eq!(enc.ids.len(), MAX_LENGTH);
        assert_eq!(enc.ids[0], 49406);
        assert_eq!(enc.ids[MAX_LENGTH - 1], 49407);
        assert!(enc.truncated);
        assert_eq!(enc.token_count, 7 * 20);
    }
    assert_eq!(one, tok.encode(&prompt, Padding::Eos)?);
    assert_eq!(two, tok.encode(&prompt, Padding::Zero)?);
    let dropped = tok.dropped_text(&prompt, Padding::Eos)?.expect("something is dropped");
    assert!(dropped.ends_with("in the snow ,"), "{dropped:?}");
    assert_eq!(tok.dropped_text("a short prompt", Padding::Eos)?, None);
    Ok(())
}

/// diffusers' SDXL folders hold `vocab.json` + `merges.txt`; written here from the bundled file's own vocabulary and
/// merges, they must give the same ids on every fixture prompt.
#[test]
fn vocab_merges_folder_matches_fixture() -> TestResult {
    let bundled: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest_path("assets/tokenizer/clip-bpe.json"))?)?;
    let model = &bundled["model"];
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("vocab.json"), serde_json::to_vec(&model["vocab"])?)?;
    let mut merges = String::from("#version: 0.2\n");
    for merge in model["merges"].as_array().ok_or("merges is not an array")? {
        merges.push_str(merge.as_str().ok_or("merge is not a string")?);
        merges.push('\n');
    }
    std::fs::write(dir.path().join("merges.txt"), merges)?;

    let tok = ClipTokenizer::from_file(dir.path())?;
    let bad = mismatches(&tok, &fixture()?)?;
    assert!(bad.is_empty(), "{} mismatches:\n{}", bad.len(), bad.join("\n"));
    Ok(())
}

#[test]
fn tokenizer_json_file_and_folder_load() -> TestResult {
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("tokenizer.json");
    std::fs::copy(manifest_path("assets/tokenizer/clip-bpe.json"), &json)?;
    let bundled = ClipTokenizer::bundled()?;
    let prompt = "Wow! A PHOTO of a cat, don't  stop!!";
    for tok in [ClipTokenizer::from_file(&json)?, ClipTokenizer::from_file(dir.path())?] {
        assert_eq!(tok.sdxl_pair(prompt)?, bundled.sdxl_pair(prompt)?);
    }
    Ok(())
}

#[test]
fn bad_files_are_errors_not_panics() -> TestResult {
    let dir = tempfile::tempdir()?;
    assert!(matches!(ClipTokenizer::from_file(dir.path()), Err(TokenizerError::NotFound(_))));
    assert!(matches!(ClipTokenizer::from_file(dir.path().join("missing")), Err(TokenizerError::NotFound(_))));

    std::fs::write(dir.path().join("tokenizer.json"), "{ not json")?;
    assert!(matches!(ClipTokenizer::from_file(dir.path()), Err(TokenizerError::Invalid { .. })));

    let pair = tempfile::tempdir()?;
    std::fs::write(pair.path().join("vocab.json"), r#"{"a": 0, "b": 1}"#)?;
    std::fs::write(pair.path().join("merges.txt"), "#version: 0.2\na b\n")?;
    let err = ClipTokenizer::from_file(pair.path()).expect_err("a vocab without CLIP's special tokens");
    assert!(matches!(err, TokenizerError::MissingToken { .. } | TokenizerError::Invalid { .. }), "{err}");
    Ok(())
}
