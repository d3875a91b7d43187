#!/usr/bin/env python3
"""Interop of `lowrank tokenize` with Hugging Face `tokenizers`.

usage: hf_interop.py LOWRANK_BINARY CORPUS WORKDIR

For each pre-tokenizer preset (gpt2, llama3, qwen2): train a byte-level BPE with
`lowrank tokenize --train`, load the saved tokenizer.json in `tokenizers`, and check that
- `tokenizers` gives the same ids as `lowrank tokenize --json --batch` on tricky and random strings,
- `lowrank tokenize --batch` decodes them to the text `tokenizers` decodes (with and without
  skip_special_tokens),
- `tokenizers`' BpeTrainer, on the same corpus and settings, learns the same vocabulary and merges.
Exits 77 (skipped) when `tokenizers` cannot be imported.
"""
import json
import os
import random
import subprocess
import sys

try:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
except ImportError as e:
    print(f"skip: cannot import tokenizers ({e})")
    sys.exit(77)

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
          r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
         r"\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<s>", "</s>", "<|eot_id|>"]
VOCAB_SIZE = 500

TRICKY = [
    "Hello, world!", "  leading and   multiple   spaces  ", "line one\nline two\n\n\ttab\r\nwindows\r\n",
    "numbers 1234567 and 3.14159", "héllo wörld, naïve café", "你好，世界。日本語 한국어",
    "emoji 🙂🚀 👨‍👩‍👧 🇫🇷 ❤️", "don't WON'T it's I'M We'Ll", "", " ", "\n\n", "a" * 40,
    "Ünïcödé\u00a0nbsp\u2003em\u3000ideo", "mongolian\u180evowel nel\u0085here", "e\u0301 n\u0303",
    "مرحبا שלום Ελληνικά русский", "<s>special</s> text <|eot_id|>", "x<s>y  </s>  z",
    "def f(x):\n    return x**2  # c\n", "it'ſ İstanbul ǅ", "\u200bzw\u200d\ufeff", "𝔘𝔫𝔦 𝟘𝟙𝟚 ١٢٣ ४५६",
]


def random_strings(n, seed):
    rng = random.Random(seed)
    pools = ["abcdefghij", "ABCXYZ", "0123456789", " \t\n\r", "'s're", ".,;:!?-_()[]{}<>\"", "éüñçß",
             "你好世界日本", "🙂🚀👍🏽", "\u0301\u0303", "\u00a0\u2003\u3000\u0085\u180e", "<s></s>"]
    out = []
    for _ in range(n):
        s = "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 40)))
        out.append(s)
    return out


def lowrank(binary, *args):
    r = subprocess.run([binary, "tokenize", *args], capture_output=True, text=True, encoding="utf-8")
    if r.returncode != 0:
        raise RuntimeError(f"lowrank tokenize {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r.stdout


def hf_train(preset, corpus):
    if preset == "gpt2":
        pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        pre = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3 if preset == "llama3" else QWEN2), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok = Tokenizer(models.BPE(ignore_merges=preset == "llama3"))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([corpus], trainer)
    return json.loads(tok.to_str())


def main():
    binary, corpus, work = sys.argv[1:4]
    os.makedirs(work, exist_ok=True)
    passed = failed = 0

    def check(ok, message):
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
            print("FAIL:", message)

    texts = TRICKY + random_strings(200, 7)
    for preset in ["gpt2", "llama3", "qwen2"]:
        path = os.path.join(work, f"{preset}.json")
        args = ["--json", "--train", corpus, "--vocab-size", str(VOCAB_SIZE), "--min-frequency", "2",
                "--pre-tokenizer", preset, "--output", path]
        for s in SPECIALS:
            args += ["--special-token", s]
        lowrank(binary, *args)
        hf = Tokenizer.from_file(path)  # must load
        # One `lowrank tokenize --batch` call per direction: the binary starts in about half a second.
        batch = os.path.join(work, f"{preset}-texts.json")
        with open(batch, "w", encoding="utf-8") as f:
            json.dump(texts, f, ensure_ascii=False)
        ours = json.loads(lowrank(binary, "--json", "--tokenizer", path, "--batch", batch))
        theirs = [hf.encode(text, add_special_tokens=False).ids for text in texts]
        for text, o, t in zip(texts, ours, theirs):
            check(o["ids"] == t, f"{preset}: encode {text!r}: lowrank {o['ids']} tokenizers {t}")
        id_lists = os.path.join(work, f"{preset}-ids.json")
        with open(id_lists, "w", encoding="utf-8") as f:
            json.dump(theirs, f)
        for skip in (False, True):
            ours_text = json.loads(lowrank(binary, "--json", "--tokenizer", path, "--batch", id_lists,
                                           *(["--skip-special"] if skip else [])))
            for ids, o in zip(theirs, ours_text):
                t = hf.decode(ids, skip_special_tokens=skip)
                check(o["text"] == t, f"{preset}: decode {ids} skip={skip}: {o['text']!r} vs {t!r}")
        ours_model = json.load(open(path, encoding="utf-8"))["model"]
        theirs_model = hf_train(preset, corpus)["model"]
        check(ours_model["vocab"] == theirs_model["vocab"], f"{preset}: trained vocabularies differ")
        check(ours_model["merges"] == theirs_model["merges"], f"{preset}: trained merges differ")
        print(f"{preset}: {len(texts)} strings, {len(ours_model['merges'])} merges compared")

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
