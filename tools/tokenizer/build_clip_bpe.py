#!/usr/bin/env python3
"""Builds assets/tokenizer/clip-bpe.json, the CLIP BPE tokenizer both SDXL text encoders use.

Source: `open_clip/bpe_simple_vocab_16e6.txt.gz` inside the PyPI wheel open_clip_torch 3.3.0 (MIT). It is OpenAI's
original CLIP merges file (also MIT), which open_clip copies unchanged. The vocabulary is not stored in that file;
CLIP derives it, and so does this script, exactly as CLIP's `SimpleTokenizer.__init__` does:

    256 byte symbols (bytes_to_unicode order), the same 256 with "</w>" appended,
    one token per merge for the first 49152-256-2 = 48894 merges (the merged pair, concatenated),
    "<|startoftext|>" = 49406, "<|endoftext|>" = 49407          -> 49408 ids

The result is written as an HF-style vocab.json + merges.txt pair (what an SDXL `tokenizer/` folder holds), loaded
with transformers' `CLIPTokenizer.from_pretrained` (the class diffusers uses) and its `backend_tokenizer` saved as
tokenizers JSON. To keep the committed file small the JSON is compact and the merges use the legacy "a b" string form,
which tokenizers still reads (no CLIP token contains a space). Truncation and padding are left out of the JSON: the
Rust side applies SDXL's rules itself.

Checks before writing (the script stops on any failure):
  * 49408 distinct tokens, the known ids of a few tokens;
  * the saved JSON, reloaded with `tokenizers`, gives the same ids as `CLIPTokenizer` on every prompt of
    gen_fixture.PROMPTS and on the same prompts as the pure-Python `ReferenceBpe`;
  * if ftfy is importable: open_clip's own `SimpleTokenizer` (its tokenizer.py from the same wheel) gives, for every
    prompt, the ids that our vocabulary gives for the text *after its own cleaning*; so any difference between
    open_clip and HF ids is due to cleaning (ftfy, html.unescape) alone. The differences are printed.

Usage, from the repository root, with the parity venv (tools/parity/README.md):
    /root/.cache/parity-venv/bin/python tools/tokenizer/build_clip_bpe.py [--wheel open_clip_torch-3.3.0-...whl]
Without --wheel it runs `pip download --no-deps open_clip_torch==3.3.0`. For the open_clip cross-check put ftfy on the
path, e.g. `pip install --target /tmp/pydeps --no-deps ftfy wcwidth` and PYTHONPATH=/tmp/pydeps.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_fixture import PROMPTS, ReferenceBpe, bytes_to_unicode, write_hf_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "assets" / "tokenizer" / "clip-bpe.json"

WHEEL_NAME = "open_clip_torch-3.3.0-py3-none-any.whl"
WHEEL_SHA256 = "c549ad5ed6bfc119cc11105033c0a2b9d7a2a4afeb40a58a09aab3da1a0043ce"
BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
N_MERGES = 49152 - 256 - 2


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_wheel(dest: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "open_clip_torch==3.3.0", "-d", str(dest)], check=True
    )
    return dest / WHEEL_NAME


def clip_vocab_and_merges(bpe_gz: bytes) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP SimpleTokenizer's construction; the first line of the file is a version header."""
    lines = gzip.decompress(bpe_gz).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    assert all(len(m) == 2 for m in merges)
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens) == 49408, len(vocab)
    return vocab, merges


def load_open_clip_tokenizer(wheel: zipfile.ZipFile, folder: Path):
    """open_clip's tokenizer.py, loaded alone (the package __init__ needs torchvision/timm); None without ftfy."""
    if importlib.util.find_spec("ftfy") is None:
        return None
    (folder / "open_clip").mkdir(parents=True)
    for member in ("open_clip/tokenizer.py", BPE_MEMBER):
        (folder / member).write_bytes(wheel.read(member))
    spec = importlib.util.spec_from_file_location("open_clip_tokenizer", folder / "open_clip" / "tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheel", type=Path, help=f"a downloaded {WHEEL_NAME}")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    import tokenizers
    import transformers
    from transformers import CLIPTokenizer

    transformers.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        wheel_path = args.wheel or fetch_wheel(tmp)
        wheel_bytes = wheel_path.read_bytes()
        assert sha256(wheel_bytes) == WHEEL_SHA256, f"unexpected wheel {wheel_path}"
        wheel = zipfile.ZipFile(wheel_path)
        bpe_gz = wheel.read(BPE_MEMBER)
        assert sha256(bpe_gz) == BPE_SHA256

        vocab, merges = clip_vocab_and_merges(bpe_gz)
        # Ids every CLIP user knows: "a</w>", "photo</w>", "cat</w>", "!".
        assert (vocab["a</w>"], vocab["photo</w>"], vocab["cat</w>"], vocab["!"]) == (320, 1125, 2368, 0)

        write_hf_folder(tmp / "hf", vocab, merges, "<|endoftext|>")
        hf = CLIPTokenizer.from_pretrained(tmp / "hf")
        backend = hf.backend_tokenizer
        backend.no_truncation()
        backend.no_padding()
        data = json.loads(backend.to_str())
        data["model"]["merges"] = [f"{a} {b}" for a, b in data["model"]["merges"]]
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"

        saved = tokenizers.Tokenizer.from_str(text)
        reference = ReferenceBpe(vocab, merges)
        for prompt, _ in PROMPTS:
            want = hf(prompt).input_ids
            got = saved.encode(prompt).ids
            assert got == want, f"saved JSON differs from CLIPTokenizer on {prompt!r}"
            assert want[1:-1] == reference.encode(prompt), f"pure-Python BPE differs on {prompt!r}"

        oc = load_open_clip_tokenizer(wheel, tmp / "oc")
        if oc is None:
            print("ftfy not importable: open_clip SimpleTokenizer cross-check skipped")
        else:
            simple = oc.SimpleTokenizer()
            assert len(simple.encoder) == 49408
            differ = []
            for prompt, note in PROMPTS:
                oc_ids = simple.encode(prompt)
                assert oc_ids == reference.encode_clean(oc._clean_lower(prompt)), f"open_clip BPE differs: {prompt!r}"
                if oc_ids != hf(prompt).input_ids[1:-1]:
                    differ.append(f"  {prompt[:60]!r} ({note})")
            print(f"open_clip SimpleTokenizer: same BPE on all {len(PROMPTS)} prompts; ids differ (cleaning) on:")
            print("\n".join(differ) if differ else "  none")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text.encode())} bytes, sha256 {sha256(text.encode())})")
    print(f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
