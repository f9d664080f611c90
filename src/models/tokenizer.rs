//! The CLIP BPE tokenizer of both SDXL text encoders, with SDXL's per-encoder rules, equal to what diffusers 0.42 /
//! transformers 5.24 feed the encoders (`tests/parity_tokenizer.rs` checks exact ids).
//!
//! Both encoders share one vocabulary (OpenAI CLIP's BPE, 49408 ids; `assets/tokenizer/README.md` says where it comes
//! from and how it was built). diffusers calls each tokenizer with `padding="max_length", max_length=77,
//! truncation=True`, which gives `BOS, first 75 prompt tokens, EOS, padding`. The encoders differ in two ways:
//!
//! - `tokenizer` (CLIP ViT-L, encoder 1) pads with EOS (49407);
//! - `tokenizer_2` (OpenCLIP bigG, encoder 2) pads with `!` (id 0). Because transformers registers a pad token as a
//!   special *added* token, every `!` in the prompt is also cut out on its own as id 0 for this encoder, where
//!   encoder 1 BPE-encodes `!!!` as one token. That is diffusers' behaviour (diffusers issue #4153), kept here for
//!   parity; the original SGM/open_clip code that SDXL was trained with did not do it.
//!
//! Text handling is the `tokenizers` pipeline transformers builds for `CLIPTokenizer`: NFC, whitespace runs to one
//! space, lowercase, CLIP's split regex, byte-level BPE with `</w>` word ends. There is no ftfy/HTML cleaning (CLIP's
//! own `SimpleTokenizer` has it; transformers 5 does not, so diffusers does not either). The literal texts
//! `<|startoftext|>` / `<|endoftext|>` in a prompt become the special ids, as in transformers.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use thiserror::Error;
use tokenizers::{AddedToken, Tokenizer};

/// Sequence length of both SDXL text encoders (`model_max_length` of both tokenizers).
pub const MAX_LENGTH: usize = 77;
/// Prompt tokens that fit between BOS and EOS; the rest is cut off (diffusers warns, the UI should too).
pub const MAX_PROMPT_TOKENS: usize = MAX_LENGTH - 2;

const BOS_TOKEN: &str = "<|startoftext|>";
const EOS_TOKEN: &str = "<|endoftext|>";
/// `tokenizer_2`'s pad token; its id is 0 in the CLIP vocabulary.
const ZERO_PAD_TOKEN: &str = "!";
/// CLIP's BPE marks the last symbol of a word with this suffix; decoding turns it into a space.
const END_OF_WORD: &str = "</w>";

/// The committed tokenizer (tokenizers JSON), embedded so the binary needs no file next to it.
const BUNDLED_JSON: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/tokenizer/clip-bpe.json"));
const BUNDLED_NAME: &str = "bundled assets/tokenizer/clip-bpe.json";

/// Why a tokenizer could not be loaded or a prompt not encoded.
#[derive(Debug, Error)]
pub enum TokenizerError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: neither tokenizer.json nor vocab.json + merges.txt found")]
    NotFound(PathBuf),
    #[error("invalid tokenizer ({origin}): {message}")]
    Invalid { origin: String, message: String },
    #[error("the tokenizer ({origin}) has no token {token:?}, so it is not a CLIP tokenizer")]
    MissingToken { origin: String, token: &'static str },
    #[error("tokenizing the prompt failed: {0}")]
    Encode(String),
}

pub type Result<T> = std::result::Result<T, TokenizerError>;

/// SDXL's padding rule for one text encoder. It also decides how `!` is tokenized (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Padding {
    /// `tokenizer` / text encoder 1 (CLIP ViT-L): pad with EOS 49407.
    Eos,
    /// `tokenizer_2` / text encoder 2 (OpenCLIP bigG): pad with `!` = id 0, and `!` is a special token.
    Zero,
}

/// One tokenized prompt, ready for a text encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Exactly [`MAX_LENGTH`] ids: BOS, up to [`MAX_PROMPT_TOKENS`] prompt tokens, EOS, padding.
    pub ids: Vec<u32>,
    /// The prompt had more than [`MAX_PROMPT_TOKENS`] tokens and its end was dropped (diffusers' warning case).
    pub truncated: bool,
    /// Number of prompt tokens before truncation, without BOS/EOS (what a "n / 75 tokens" counter shows).
    pub token_count: usize,
}

/// The CLIP BPE tokenizer with SDXL's two encoder rules.
#[derive(Clone)]
pub struct ClipTokenizer {
    /// The plain CLIP pipeline (encoder 1).
    plain: Tokenizer,
    /// The same pipeline with `!` registered as a special token (encoder 2, as transformers loads `tokenizer_2`).
    bang_special: Tokenizer,
    bos: u32,
    eos: u32,
    zero_pad: u32,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.plain.get_vocab_size(true))
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("zero_pad", &self.zero_pad)
            .finish()
    }
}

impl ClipTokenizer {
    /// The tokenizer shipped inside the binary (the same for every SDXL checkpoint: SDXL's `tokenizer/` and
    /// `tokenizer_2/` folders hold this vocabulary and these merges).
    pub fn bundled() -> Result<Self> {
        let tokenizer = Tokenizer::from_bytes(BUNDLED_JSON).map_err(|e| invalid(BUNDLED_NAME, e))?;
        Self::from_tokenizer(tokenizer, BUNDLED_NAME)
    }

    /// A model's own tokenizer: a `tokenizer.json` file, or a folder holding `tokenizer.json` or diffusers'
    /// `vocab.json` + `merges.txt` pair. Load SDXL's `tokenizer/` folder; `tokenizer_2/` has the same files and its
    /// differences are applied by [`Padding::Zero`]. A vocab/merges pair gets the bundled file's pipeline
    /// (normalizer, split regex, special tokens), which is what transformers builds for `CLIPTokenizer`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_file() {
            return Self::from_json_file(path);
        }
        if !path.is_dir() {
            return Err(TokenizerError::NotFound(path.to_path_buf()));
        }
        let json = path.join("tokenizer.json");
        if json.is_file() {
            return Self::from_json_file(&json);
        }
        let (vocab, merges) = (path.join("vocab.json"), path.join("merges.txt"));
        if vocab.is_file() && merges.is_file() {
            return Self::from_vocab_merges(&vocab, &merges);
        }
        Err(TokenizerError::NotFound(path.to_path_buf()))
    }

    /// Tokenizes `prompt` for the encoder whose rule is `pad`: BOS + tokens + EOS, cut to [`MAX_LENGTH`] with EOS
    /// kept last, then padded.
    pub fn encode(&self, prompt: &str, pad: Padding) -> Result<Encoded> {
        let body = self.prompt_ids(prompt, pad)?;
        let kept = body.len().min(MAX_PROMPT_TOKENS);
        let mut ids = Vec::with_capacity(MAX_LENGTH);
        ids.push(self.bos);
        ids.extend_from_slice(&body[..kept]);
        ids.push(self.eos);
        ids.resize(MAX_LENGTH, self.pad_id(pad));
        Ok(Encoded { ids, truncated: body.len() > MAX_PROMPT_TOKENS, token_count: body.len() })
    }

    /// The ids for SDXL's `tokenizer` (text encoder 1) and `tokenizer_2` (text encoder 2), in that order.
    /// diffusers' `prompt_2` defaults to `prompt`; call [`Self::encode`] twice for different prompts.
    pub fn sdxl_pair(&self, prompt: &str) -> Result<(Encoded, Encoded)> {
        Ok((self.encode(prompt, Padding::Eos)?, self.encode(prompt, Padding::Zero)?))
    }

    /// The part of `prompt` that truncation drops, decoded the way diffusers prints it in its warning
    /// (lowercase, tokens separated by spaces); `None` when nothing is dropped. For the UI's truncation notice.
    pub fn dropped_text(&self, prompt: &str, pad: Padding) -> Result<Option<String>> {
        let body = self.prompt_ids(prompt, pad)?;
        if body.len() <= MAX_PROMPT_TOKENS {
            return Ok(None);
        }
        let text = self.tokenizer(pad).decode(&body[MAX_PROMPT_TOKENS..], false).map_err(encode_error)?;
        Ok(Some(text.replace(END_OF_WORD, " ").trim().to_string()))
    }

    /// The id padding uses for `pad`.
    pub fn pad_id(&self, pad: Padding) -> u32 {
        match pad {
            Padding::Eos => self.eos,
            Padding::Zero => self.zero_pad,
        }
    }

    /// The prompt's token ids without BOS/EOS, not truncated.
    fn prompt_ids(&self, prompt: &str, pad: Padding) -> Result<Vec<u32>> {
        // `add_special_tokens = false`: BOS/EOS and the cut are applied by `encode`, like transformers does after
        // tokenizing. Truncation and padding are switched off in `from_tokenizer`.
        let encoding = self.tokenizer(pad).encode_fast(prompt, false).map_err(encode_error)?;
        Ok(encoding.get_ids().to_vec())
    }

    fn tokenizer(&self, pad: Padding) -> &Tokenizer {
        match pad {
            Padding::Eos => &self.plain,
            Padding::Zero => &self.bang_special,
        }
    }

    fn from_json_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io { path: path.to_path_buf(), source })?;
        let origin = path.display().to_string();
        let json = serde_json::from_slice(&bytes).map_err(|e| invalid(&origin, e))?;
        Self::from_json_value(json, &origin)
    }

    /// diffusers' `vocab.json` + `merges.txt`: the bundled JSON with its vocabulary and merges replaced, so the
    /// pipeline around the BPE model stays the one checked against transformers.
    fn from_vocab_merges(vocab_path: &Path, merges_path: &Path) -> Result<Self> {
        let origin = vocab_path.parent().unwrap_or(vocab_path).display().to_string();
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| TokenizerError::Io { path: path.to_path_buf(), source })
        };
        let vocab: Map<String, Value> = serde_json::from_str(&read(vocab_path)?).map_err(|e| invalid(&origin, e))?;
        // merges.txt: an optional `#version` header, then one "left right" pair per line.
        let merges: Vec<Value> = read(merges_path)?
            .lines()
            .filter(|line| !line.starts_with("#version") && !line.trim().is_empty())
            .map(|line| Value::String(line.to_string()))
            .collect();

        let mut json: Value = serde_json::from_slice(BUNDLED_JSON).map_err(|e| invalid(BUNDLED_NAME, e))?;
        let model = json
            .get_mut("model")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| invalid(BUNDLED_NAME, "no model object"))?;
        model.insert("vocab".into(), Value::Object(vocab));
        model.insert("merges".into(), Value::Array(merges));
        Self::from_json_value(json, &origin)
    }

    /// Builds from a user-supplied tokenizers JSON. The BPE model is checked first because `tokenizers` panics
    /// (instead of returning an error) on some inconsistent merges; a panic that still happens is turned into an
    /// error too, so a broken model folder cannot take the app down.
    fn from_json_value(json: Value, origin: &str) -> Result<Self> {
        check_clip_bpe(&json).map_err(|message| invalid(origin, message))?;
        let parsed = std::panic::catch_unwind(AssertUnwindSafe(|| serde_json::from_value::<Tokenizer>(json)))
            .map_err(|_| invalid(origin, "the tokenizers library panicked while loading it"))?;
        Self::from_tokenizer(parsed.map_err(|e| invalid(origin, e))?, origin)
    }

    fn from_tokenizer(mut plain: Tokenizer, origin: &str) -> Result<Self> {
        // A tokenizer.json saved by transformers may carry its last call's truncation/padding; the SDXL rules are
        // applied in `encode` instead, so both are switched off.
        plain.with_truncation(None).map_err(|e| invalid(origin, e))?;
        plain.with_padding(None);
        let id = |token: &'static str| {
            plain.token_to_id(token).ok_or_else(|| TokenizerError::MissingToken { origin: origin.to_string(), token })
        };
        let (bos, eos, zero_pad) = (id(BOS_TOKEN)?, id(EOS_TOKEN)?, id(ZERO_PAD_TOKEN)?);
        // transformers makes every special token an added token, matched in the raw prompt before normalization;
        // BOS/EOS already are in a CLIP tokenizer.json, this makes sure for other files too.
        plain
            .add_special_tokens([AddedToken::from(BOS_TOKEN, true), AddedToken::from(EOS_TOKEN, true)])
            .map_err(|e| invalid(origin, e))?;
        let mut bang_special = plain.clone();
        bang_special.add_special_tokens([AddedToken::from(ZERO_PAD_TOKEN, true)]).map_err(|e| invalid(origin, e))?;
        Ok(Self { plain, bang_special, bos, eos, zero_pad })
    }
}

/// A CLIP-style BPE model: no continuing-subword prefix, and every merge joins two vocabulary tokens into a third.
fn check_clip_bpe(json: &Value) -> std::result::Result<(), String> {
    let model = json.get("model").ok_or("no model")?;
    if model.get("type").and_then(Value::as_str) != Some("BPE") {
        return Err("the model is not BPE, so it is not a CLIP tokenizer".into());
    }
    match model.get("continuing_subword_prefix") {
        None | Some(Value::Null) => {}
        Some(Value::String(prefix)) if prefix.is_empty() => {}
        Some(_) => return Err("a continuing-subword prefix is set, so it is not a CLIP tokenizer".into()),
    }
    let vocab = model.get("vocab").and_then(Value::as_object).ok_or("the model has no vocab map")?;
    let merges = model.get("merges").and_then(Value::as_array).ok_or("the model has no merges list")?;
    for (rank, merge) in merges.iter().enumerate() {
        let pair = match merge {
            Value::String(line) => line.split_once(' ').filter(|(_, b)| !b.contains(' ')),
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] => Some((a.as_str(), b.as_str())),
                _ => None,
            },
            _ => None,
        };
        let (a, b) = pair.ok_or_else(|| format!("merge #{rank} is not a pair: {merge}"))?;
        if !vocab.contains_key(a) || !vocab.contains_key(b) || !vocab.contains_key(&format!("{a}{b}")) {
            return Err(format!("merge #{rank} ({a:?} + {b:?}) uses or makes a token missing from the vocab"));
        }
    }
    Ok(())
}

fn invalid(origin: &str, err: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Invalid { origin: origin.to_string(), message: err.to_string() }
}

fn encode_error(err: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Encode(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_loads_with_clip_ids() {
        let tok = ClipTokenizer::bundled().expect("bundled tokenizer");
        assert_eq!((tok.bos, tok.eos, tok.zero_pad), (49406, 49407, 0));
        assert_eq!(tok.plain.get_vocab_size(true), 49408);
    }

    #[test]
    fn bang_is_special_only_for_encoder_2() {
        let tok = ClipTokenizer::bundled().expect("bundled tokenizer");
        let (one, two) = tok.sdxl_pair("wow!!!").expect("encode");
        assert_eq!(one.token_count, 2);
        assert_eq!(two.token_count, 4);
        assert_eq!(&two.ids[2..5], &[0, 0, 0]);
    }
}
