#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/clip_ids.json, the reference ids for tests/parity_tokenizer.rs.

The reference is what diffusers 0.42.1 does with transformers 5.24: an SDXL `tokenizer/` folder (vocab.json +
merges.txt, pad `<|endoftext|>`) and a `tokenizer_2/` folder (same files, pad `!`) loaded with
`CLIPTokenizer.from_pretrained` and called as `StableDiffusionXLPipeline.encode_prompt` calls them
(`padding="max_length", max_length=77, truncation=True`). The folders are written here from the vocabulary and merges
inside the committed assets/tokenizer/clip-bpe.json. transformers then builds its own normalizer, pre-tokenizer and
post-processor from them, so the Rust side's JSON pipeline is checked against transformers' construction.

transformers 5 has no pure-Python ("slow") CLIPTokenizer any more: `CLIPTokenizer` is backed by the `tokenizers`
library, the same Rust code the crate uses. Every id list is therefore also checked against `reference_bpe`, an
independent pure-Python copy of CLIP's SimpleTokenizer BPE loop fed with the text that the HF normalizer produces. The
script stops if the two disagree.

The two encoders differ in more than the padding: in tokenizer_2 the pad token "!" is an added special token, so each
"!" of a prompt becomes id 0 on its own, where tokenizer 1 (and open_clip, which SDXL was trained with) BPE-encodes
"!!!" as one token. This is what diffusers does (diffusers issue #4153); the fixture records it per encoder.

Run from the repository root with the parity venv (tools/parity/README.md):
    /root/.cache/parity-venv/bin/python tools/tokenizer/gen_fixture.py
The output is deterministic.
"""

from __future__ import annotations

import json
import re as stdlib_re
import sys
import tempfile
import unicodedata
from pathlib import Path

import regex as re

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER_JSON = ROOT / "assets" / "tokenizer" / "clip-bpe.json"
FIXTURE = ROOT / "tests" / "fixtures" / "tokenizer" / "clip_ids.json"

MAX_LENGTH = 77
BOS = 49406
EOS = 49407

# A long but ordinary SDXL prompt: about 110 tokens, so it is truncated.
LONG_PROMPT = (
    "A breathtaking panoramic illustration of a small red fox wearing a knitted blue scarf, walking through an "
    "enchanted autumn forest at golden hour, with towering ancient oak trees, glowing mushrooms, drifting leaves, "
    "soft volumetric light rays, a winding stone path, a tiny wooden cottage with smoke rising from the chimney, "
    "a crystal clear stream reflecting the orange sky, watercolor and ink, children's storybook style, highly "
    "detailed, whimsical, warm palette, by a master illustrator, award winning, 8k"
)

# (prompt, why it is here). Ordered; the test reports failures by index and prompt.
PROMPTS: list[tuple[str, str]] = [
    ("", "empty prompt: BOS, EOS, then padding"),
    ("a photo of a cat", "canonical short prompt"),
    ("A PHOTO OF A CAT", "uppercase is lowercased"),
    ("An astronaut riding a green horse, highly detailed, 8k, trending on ArtStation", "typical prompt"),
    ("don't stop, it's what we've said; they'll go, I'm sure you'd see we're here", "all contractions"),
    ("DON'T SHOUT, IT'S LOUD", "uppercase contractions"),
    ("don''t 's 'S rock'n'roll", "contraction edge cases"),
    ("curly \u2018quotes\u2019 and \u201cdouble\u201d, don\u2019t", "curly quotes: not straightened by HF"),
    ("multiple    spaces\tand\ttabs\nand\nnewlines\r\nhere", "whitespace runs collapse"),
    ("   leading and trailing whitespace   ", "outer whitespace"),
    ("\n\n \t \n", "whitespace only: same as empty"),
    ("no-break\u00a0space and zero\u200bwidth space", "NBSP is whitespace, ZWSP is not"),
    ("! !! !!!", "tokenizer_2 only: every '!' is its pad token, id 0 (diffusers #4153)"),
    ("wow! hello!world!!", "'!' next to letters"),
    ("numbers 1234567890 3.14159 1,000,000 2nd 21st 1990s", "digits are single tokens"),
    ("superscript x\u00b2 half \u00bd circled \u2460 roman \u216b", "other \\p{N} numbers"),
    ("punctuation!!! ??? ... --- ((masterpiece)) [best quality] {curly} <angle> @#$%^&*", "punctuation runs"),
    ("(masterpiece:1.2), (best quality:1.1), 1girl, solo, [[blurry]]", "A1111 weights: literal text in diffusers"),
    ("word_with_underscores and-hyphens and/slashes back\\slash", "joiners"),
    ("email@example.com https://example.com/path?q=1&x=y#frag", "URL"),
    ("caf\u00e9 r\u00e9sum\u00e9 na\u00efve fa\u00e7ade \u00c5ngstr\u00f6m", "precomposed accents"),
    ("cafe\u0301 and re\u0301sume\u0301", "decomposed accents: NFC composes"),
    ("\u0301 leading combining mark", "lone combining mark"),
    ("\u00ff \u00fe \u00df \u00f8 \u00e6 \u0153 \u1e9e", "latin-1 letters, capital sharp s"),
    ("\u0130stanbul \u0049STANBUL", "Turkish dotted capital I lowercases to i + U+0307"),
    ("\u039f\u0394\u039f\u03a3 \u03c3\u03af\u03c3\u03c5\u03c6\u03bf\u03c2", "Greek: no final-sigma rule in HF"),
    ("\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440, \u043a\u0440\u0430\u0441\u0438\u0432\u044b\u0439", "Cyrillic"),
    ("\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645", "Arabic"),
    ("\u65e5\u672c\u8a9e\u306e\u30d7\u30ed\u30f3\u30d7\u30c8\u3001\u5bcc\u58eb\u5c71\u3068\u685c", "CJK"),
    ("\ud55c\uad6d\uc5b4 \ud504\ub86c\ud504\ud2b8", "Hangul"),
    ("\u0938\u094d\u0935\u093e\u0917\u0924 \u0939\u0948", "Devanagari: marks split from letters"),
    ("\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22", "Thai"),
    ("emoji \U0001f409\U0001f525 dragon \U0001f469\u200d\U0001f680 astronaut \u2764\ufe0f", "emoji, ZWJ, VS16"),
    ("\U0001f642", "single emoji"),
    ("\ufb01ne \ufb02ower ligatures", "ligatures: kept by HF (NFC, not NFKC)"),
    ("fullwidth \uff21\uff22\uff23\uff11\uff12\uff13", "fullwidth: kept by HF"),
    ("html &amp; entities &lt;b&gt; &quot;q&quot;", "HTML entities: not unescaped by HF"),
    ("control\x07char and\x00nul", "control characters go through as bytes"),
    ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa hellooooooo woooorld", "repeated letters"),
    ("supercalifragilisticexpialidocious" * 8, "one very long word"),
    ("mixed CaSe WoRdS with CamelCaseWords", "mixed case"),
    ("<|endoftext|> injected special token", "special token text is matched (diffusers does too)"),
    ("<|startoftext|>a cat<|endoftext|>", "both special tokens inside the prompt"),
    ("<|ENDOFTEXT|> upper", "special tokens are case-sensitive"),
    ("a " * 74 + "a", "exactly 75 tokens: fits"),
    ("a " * 75 + "a", "76 tokens: truncated by one"),
    ("photo, " * 40, "80 tokens of a repeated phrase"),
    (LONG_PROMPT, "long prompt: truncated, EOS kept last"),
    (" ".join([LONG_PROMPT] * 5), "very long prompt"),
]


def hf_normalize(text: str) -> str:
    """The HF CLIP normalizer: NFC, every whitespace run to one space, char-by-char lowercase.

    tokenizers' Lowercase maps each char on its own (no Greek final-sigma context, unlike `str.lower()`).
    """
    text = unicodedata.normalize("NFC", text)
    text = stdlib_re.sub(r"\s+", " ", text)
    return "".join(c.lower() for c in text)


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable char table (copied from openai/CLIP, MIT)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
    bs += list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


SPECIAL = {"<|startoftext|>": BOS, "<|endoftext|>": EOS}
PAT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", re.IGNORECASE)


class ReferenceBpe:
    """CLIP SimpleTokenizer's BPE loop (openai/CLIP, MIT), without its ftfy/html cleaning."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]]):
        self.encoder = vocab
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.cache: dict[str, list[str]] = {}

    def bpe(self, token: str) -> list[str]:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        self.cache[token] = list(word)
        return list(word)

    def encode_clean(self, text: str) -> list[int]:
        """Ids of already-cleaned text, no BOS/EOS, no special-token matching.

        HF's split pattern also lists the two special-token texts, but its ByteLevel step (use_regex) then cuts such
        a piece into `<|`, letters and `|>`, which is what PAT alone gives. Only an exact-case special-token text in
        the raw prompt becomes a special id (an added token, handled in `encode`).
        """
        ids: list[int] = []
        for piece in PAT.findall(text):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(mapped))
        return ids

    def encode(self, prompt: str, bang_is_special: bool = False) -> list[int]:
        """HF's order: added (special) tokens are found in the raw text, the rest is normalized, then split.

        `bang_is_special` is tokenizer_2's rule: its pad token "!" is an added special token, so every "!" in the
        prompt becomes id 0 on its own (diffusers issue #4153; open_clip would BPE "!!!" to one token).
        """
        special = dict(SPECIAL, **({"!": 0} if bang_is_special else {}))
        pattern = "(" + "|".join(stdlib_re.escape(t) for t in special) + ")"
        ids: list[int] = []
        for part in stdlib_re.split(pattern, prompt):
            if part in special:
                ids.append(special[part])
            elif part:
                ids.extend(self.encode_clean(hf_normalize(part)))
        return ids


def load_vocab_merges(path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    model = json.loads(path.read_text(encoding="utf-8"))["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def write_hf_folder(folder: Path, vocab: dict[str, int], merges: list[tuple[str, str]], pad_token: str) -> None:
    """An SDXL-style tokenizer folder: vocab.json, merges.txt and the config fields SDXL's folders carry.

    `clean_up_tokenization_spaces` only changes decoding (diffusers' truncation warning text): " ," -> "," etc.
    """
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
        "do_lower_case": True,
        "errors": "replace",
        "clean_up_tokenization_spaces": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def diffusers_encode(tokenizer, prompt: str) -> dict:
    """Exactly encode_prompt's two tokenizer calls and its truncation test / warning text."""
    ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True).input_ids
    untruncated = tokenizer(prompt, padding="longest").input_ids
    truncated = len(untruncated) >= len(ids) and untruncated != ids
    removed = tokenizer.decode(untruncated[tokenizer.model_max_length - 1 : -1]) if truncated else ""
    return {"ids": ids, "token_count": len(untruncated) - 2, "truncated": truncated, "removed_text": removed}


def check_reference(reference: ReferenceBpe, prompt: str, got: dict, pad_id: int) -> bool:
    """The transformers result must equal BOS + first 75 reference ids + EOS + padding."""
    body = reference.encode(prompt, bang_is_special=pad_id == 0)
    head = [BOS] + body[: MAX_LENGTH - 2] + [EOS]
    want = head + [pad_id] * (MAX_LENGTH - len(head))
    ok = got["ids"] == want and got["token_count"] == len(body) and got["truncated"] == (len(body) > MAX_LENGTH - 2)
    if not ok:
        print(f"MISMATCH with the pure-Python reference (pad {pad_id}) on {prompt!r}", file=sys.stderr)
        print(f"  transformers: {got}\n  reference:    {want}", file=sys.stderr)
    return ok


def main() -> int:
    import tokenizers
    import transformers
    from transformers import CLIPTokenizer

    transformers.logging.set_verbosity_error()
    vocab, merges = load_vocab_merges(TOKENIZER_JSON)
    reference = ReferenceBpe(vocab, merges)

    with tempfile.TemporaryDirectory() as tmp:
        write_hf_folder(Path(tmp) / "tokenizer", vocab, merges, "<|endoftext|>")
        write_hf_folder(Path(tmp) / "tokenizer_2", vocab, merges, "!")
        tok1 = CLIPTokenizer.from_pretrained(Path(tmp) / "tokenizer")
        tok2 = CLIPTokenizer.from_pretrained(Path(tmp) / "tokenizer_2")
    assert (tok1.pad_token_id, tok2.pad_token_id) == (EOS, 0), (tok1.pad_token_id, tok2.pad_token_id)

    cases = []
    for prompt, note in PROMPTS:
        pad_eos = diffusers_encode(tok1, prompt)
        pad_zero = diffusers_encode(tok2, prompt)
        if not (check_reference(reference, prompt, pad_eos, EOS) and check_reference(reference, prompt, pad_zero, 0)):
            return 1
        cases.append({"prompt": prompt, "note": note, "pad_eos": pad_eos, "pad_zero": pad_zero})

    fixture = {
        "about": "SDXL tokenizer / tokenizer_2 ids made by tools/tokenizer/gen_fixture.py; do not edit",
        "made_with": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
        "max_length": MAX_LENGTH,
        "cases": cases,
    }
    # One line per value (ids on one line): readable diffs, small file. ASCII escapes keep odd characters visible.
    lines = ["{"]
    for key in ("about", "made_with", "max_length"):
        lines.append(f"  {json.dumps(key)}: {json.dumps(fixture[key])},")
    lines.append('  "cases": [')
    for i, case in enumerate(cases):
        fields = []
        for key, value in case.items():
            if isinstance(value, dict):
                inner = ",\n".join(f"      {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
                fields.append(f"    {json.dumps(key)}: {{\n{inner}\n    }}")
            else:
                fields.append(f"    {json.dumps(key)}: {json.dumps(value)}")
        lines.append("   {\n" + ",\n".join(fields) + "\n   }" + ("," if i + 1 < len(cases) else ""))
    lines.append("  ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    json.loads(text)
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(text, encoding="utf-8")
    print(f"wrote {FIXTURE.relative_to(ROOT)}: {len(cases)} prompts, {len(text)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
