#!/usr/bin/env python3
"""Reference token ids for the default model's tokenizer, from Hugging Face
`tokenizers`, written as tests/fixtures/tokenizer_smollm2/tokenizer_smollm2.json.

Regenerate (from the repository root; the two packages are only for this
script, never for the product):

    python3 -m venv /tmp/tokvenv
    /tmp/tokvenv/bin/pip install gguf==0.19.0 tokenizers==0.23.3
    /tmp/tokvenv/bin/python tools/reference/tokenizer_reference.py \
        --gguf .models/SmolLM2-135M-Instruct.Q4_1.gguf \
        --out tests/fixtures/tokenizer_smollm2/tokenizer_smollm2.json

What the reference is: a `tokenizers.Tokenizer(models.BPE(vocab, merges))`
built from the GGUF's own `tokenizer.ggml.tokens` / `tokenizer.ggml.merges`,
with SmolLM2's pre-tokenizer pipeline (Sequence[Digits(individual_digits=
True), ByteLevel(add_prefix_space=False, use_regex=True)]), no normalizer, a
ByteLevel decoder, and every control token (tokenizer.ggml.token_type 3, also
2 and 4 if present) registered as a special added token (normalized=False),
which is how SmolLM2's tokenizer.json declares them. Valid UTF-8 strings are
encoded with `Tokenizer.encode(text, add_special_tokens=False)`.

Strings that are not valid UTF-8 cannot be given to `tokenizers` (it takes
str). For them the expectation is computed by the same library's pieces:
  1. cut out control tokens (leftmost, longest) from the bytes;
  2. decode each stretch with errors="surrogateescape", so each invalid byte
     becomes one lone surrogate (category Cs, i.e. in [^\\s\\p{L}\\p{N}]), and
     swap each for a private-use code point U+10FF00+byte (category Co: the
     same regex class, and not numeric for Digits) that `tokenizers` accepts;
  3. run the tokenizer's own pre-tokenizer on that (`pre_tokenize_str`) and
     map each piece's character offsets back to the original bytes;
  4. byte-level-map each piece's bytes and run the tokenizer's own BPE model
     on it (`model.tokenize`).
This is exactly the Hugging Face pipeline with the invalid bytes treated as
punctuation-class characters, which is what byte-level BPE needs (every byte
still maps to a token). The script checks that this path gives the same ids
as `Tokenizer.encode` on every valid string in the set, so the emulation is
pinned to the library on all the cases it can be compared on.

Bytes without a token: SmolLM2's vocabulary has byte-level tokens for only
235 of the 256 bytes (it lacks 0x04 0x06 0x13 0x14 0x16 0x1D 0xC0 0xC1 0xF1
0xF2 0xF5..0xFF). `tokenizers`' BPE without an unk_token silently drops such
bytes (llama.cpp does too), so the expected ids simply lack them; the cases
"control_chars_without_tokens" and "plane4_char" show it on valid UTF-8
through `Tokenizer.encode` itself. The fixture lists these bytes as
"bytes_without_token" so a round-trip check knows what cannot come back.
"""

import argparse
import base64
import hashlib
import json
import sys

import gguf
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

CONTROL_TYPES = (2, 3, 4)  # unknown, control, user-defined


def bytes_to_unicode():
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) +
                 list(range(0xAE, 0xFF + 1)))
    mapping = {}
    extra = 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(0x100 + extra)
            extra += 1
    return mapping


BYTE_TO_UNICODE = bytes_to_unicode()


def read_gguf(path):
    reader = gguf.GGUFReader(path)

    def field(key):
        return reader.fields[key].contents()

    return {
        "tokens": field("tokenizer.ggml.tokens"),
        "merges": field("tokenizer.ggml.merges"),
        "token_types": field("tokenizer.ggml.token_type"),
        "pre": field("tokenizer.ggml.pre"),
        "model": field("tokenizer.ggml.model"),
    }


def build_tokenizer(meta):
    if meta["model"] != "gpt2" or meta["pre"] != "smollm":
        sys.exit(f"expected a gpt2/smollm tokenizer, got {meta['model']}/{meta['pre']}")
    tokens = meta["tokens"]
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    if len(vocab) != len(tokens):
        sys.exit("duplicate tokens in the vocabulary")
    merges = [tuple(m.split(" ")) for m in meta["merges"]]
    if any(len(m) != 2 for m in merges):
        sys.exit("malformed merge")
    if len(set(merges)) != len(merges):
        sys.exit("duplicate merges: first-rank vs last-rank semantics would matter")
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    specials = {t: i for i, (t, ty) in enumerate(zip(tokens, meta["token_types"]))
                if ty in CONTROL_TYPES}
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    for t, i in specials.items():
        if tok.token_to_id(t) != i:
            sys.exit(f"special token {t!r} got id {tok.token_to_id(t)}, expected {i}")
    return tok, specials


def encode_by_pieces(tok, specials, data):
    """Steps 1-4 of the module docstring."""
    by_length = sorted(((t.encode("utf-8"), i) for t, i in specials.items()),
                       key=lambda ti: -len(ti[0]))
    ids = []

    def encode_stretch(stretch):
        if not stretch:
            return
        text = stretch.decode("utf-8", errors="surrogateescape")
        swapped = "".join(chr(0x10FF00 + ord(c) - 0xDC00) if 0xDC80 <= ord(c) <= 0xDCFF else c
                          for c in text)
        for _, (begin, end) in tok.pre_tokenizer.pre_tokenize_str(swapped):
            raw = text[begin:end].encode("utf-8", errors="surrogateescape")
            mapped = "".join(BYTE_TO_UNICODE[b] for b in raw)
            ids.extend(t.id for t in tok.model.tokenize(mapped))

    pos = start = 0
    while pos < len(data):
        for text, i in by_length:
            if data.startswith(text, pos):
                encode_stretch(data[start:pos])
                ids.append(i)
                pos += len(text)
                start = pos
                break
        else:
            pos += 1
    encode_stretch(data[start:])
    return ids


PARAGRAPH = (
    "The Quest algorithm keeps, for every page of the key-value cache, the "
    "element-wise minimum and maximum of its keys. At each decoding step it "
    "estimates an upper bound of the attention score for every page, selects "
    "the top-K pages, and runs attention over those pages only. On 32K-token "
    "contexts this cuts self-attention latency by up to 7.03x (2.23x end to "
    "end) with negligible accuracy loss; see arXiv:2406.10774 for details.\n")

CASES = [
    ("ascii", "Hello, world!"),
    ("empty", ""),
    ("single_space", " "),
    ("single_newline", "\n"),
    ("leading_spaces", "   leading spaces"),
    ("trailing_spaces", "trailing spaces   "),
    ("tabs", "tabs\tand\t\ttabs\t"),
    ("newlines_crlf", "newlines\n\nand\r\nCRLF\n"),
    ("mixed_whitespace", "mixed \t \n  \n\t end  \n"),
    ("long_space_run", "x" + " " * 17 + "y" + "\n" * 5 + "z"),
    ("digits", "12345 3.14"),
    ("numbers_mixed", "Version 2.0.1-rc3 (2024-11-23) costs $1,234.56 or 99%"),
    ("non_ascii_numbers", "\u0663\u0664\u0665 \u00bd \u00b2 \u216b x\u2079"),
    ("contractions", "I'm sure you're right, it's what they'd've said; we'll see. "
                     "DON'T 'S 'll"),
    ("emoji", "\U0001F44D\U0001F3FD ok \u2764\ufe0f smile\U0001F600end"),
    ("emoji_zwj", "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466 "
                  "\U0001F9D1\U0001F3FF\u200d\U0001F4BB \U0001F1FA\U0001F1F8"),
    ("cjk", "\u4e2d\u6587\u5b57\u7b26\u6d4b\u8bd5\uff0c\u4f60\u597d\u3002"
            "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3001"
            "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8"),
    ("arabic", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645\u060c "
               "\u0643\u064a\u0641 \u062d\u0627\u0644\u0643\u061f"),
    ("hebrew_cyrillic_greek", "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd "
                              "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440! "
                              "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5"),
    ("accented_latin", "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c6r\u00f8sk\u00f8bing "
                       "Stra\u00dfe \u00f1and\u00fa \u0141\u00f3d\u017a"),
    ("combining_marks", "e\u0301 vs \u00e9, n\u0303"),
    ("unicode_spaces", "a\u00a0b\u3000c\u2003d\u200be\u2028f\u0085g"),
    ("code_python", "def fib(n):\n    if n < 2:\n        return n\n"
                    "    return fib(n-1) + fib(n-2)\n"),
    ("code_c", "int main() { printf(\"%d\\n\", x->y[0]); return 0; }"),
    ("html", "<div class=\"a\">&nbsp;</div><br/>"),
    ("url_email", "https://example.com/path?q=1&r=two#frag user@example.org"),
    ("repeats", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa !!!!!!!!!!!!????----------------"),
    ("control_chars", "\x00\x01\x1b[0m bell\x07 del\x7f"),
    ("control_chars_without_tokens", "a\x04b\x13\x14c \x1d!"),
    ("plane4_char", "x\U00040000y"),
    ("chat_turn", "<|im_start|>user\nhi<|im_end|>"),
    ("chat_full", "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
                  "trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?"
                  "<|im_end|>\n<|im_start|>assistant\n"),
    ("specials_adjacent", "<|im_start|><|im_end|><|endoftext|>"),
    ("specials_partial", "<|im_start <|im_end|>x<|im_end <|im_start|"),
    ("specials_other", "<filename>a.py<file_sep><repo_name>quest<gh_stars>10"),
    ("paragraph", PARAGRAPH * 3),
]

# Random strings over an alphabet chosen to hit every regex branch and their
# boundaries (contractions, space runs before words/digits/punctuation, CR/LF,
# Unicode spaces, letters of several scripts, non-ASCII digits, marks, emoji,
# ZWJ, special-token fragments). Seeded: the fixture is reproducible.
RANDOM_ALPHABET = (list("aAzZeE sS tT'\"lLdDmMrRvV01239.,!?-_()<>|/\\#@$%^&*+=~`:;") +
                   [" ", " ", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2003",
                    "\u00e9", "\u00df", "\u4e2d", "\u6587", "\u0627", "\u0644", "\u0416",
                    "\u0663", "\u00bd", "\u00b2", "\u216b", "\u0301", "\u200d", "\U0001F600",
                    "\U0001F44D", "\U0001F3FD", "\u2764", "\ufe0f", "<|im_end|>", "<|im_",
                    "'s", "'ll", "'re", "'ve", "n't", "the", " the", "ing", "1234", "\x00",
                    "\x7f", "\x04"])
RANDOM_COUNT = 300


def random_cases():
    import random
    rng = random.Random(20241123)
    cases = []
    for i in range(RANDOM_COUNT):
        n = rng.randint(1, 24)
        cases.append((f"random_{i:03d}", "".join(rng.choice(RANDOM_ALPHABET) for _ in range(n))))
    return cases


INVALID_CASES = [
    ("invalid_ff_fe", b"\xff\xfe"),
    ("invalid_stray_continuation", b"abc\x80def"),
    ("invalid_truncated_end", b"caf\xc3"),
    ("invalid_truncated_mid", b"\xe2\x82 \xe2\x82\xac euro"),
    ("invalid_overlong", b"\xc0\xaf overlong"),
    ("invalid_surrogate", b"\xed\xa0\x80 surrogate"),
    ("invalid_above_max", b"ok \xf4\x90\x80\x80 above"),
    ("invalid_in_digits", b"12\xff34"),
    ("invalid_after_special", b"<|im_start|>\xf0\x9f\x98"),
    ("invalid_with_space_and_punct", b"a \x80!! \xfe\xfe b"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", default=".models/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--out", default="tests/fixtures/tokenizer_smollm2/tokenizer_smollm2.json")
    args = parser.parse_args()

    with open(args.gguf, "rb") as f:
        sha256 = hashlib.sha256(f.read()).hexdigest()
    meta = read_gguf(args.gguf)
    tok, specials = build_tokenizer(meta)

    in_vocab = set(meta["tokens"])
    without_token = [b for b in range(256) if BYTE_TO_UNICODE[b] not in in_vocab]
    unicode_to_byte = {u: b for b, u in BYTE_TO_UNICODE.items()}

    def check_round_trip(name, data, ids):
        """The ids' bytes are the input less the bytes that have no token."""
        out = bytearray()
        for i in ids:
            token = meta["tokens"][i]
            if i in specials.values():
                out += token.encode("utf-8")
            else:
                out += bytes(unicode_to_byte[c] for c in token)
        expected = bytes(b for b in data if b not in without_token)
        if bytes(out) != expected:
            sys.exit(f"{name}: ids give back {bytes(out)!r}, expected {expected!r}")

    cases = []
    for name, text in CASES + random_cases():
        data = text.encode("utf-8")
        ids = tok.encode(text, add_special_tokens=False).ids
        by_pieces = encode_by_pieces(tok, specials, data)
        if by_pieces != ids:
            sys.exit(f"{name}: piecewise path {by_pieces} != encode {ids}")
        if not set(data) & set(without_token):
            decoded = tok.decode(ids, skip_special_tokens=False)
            if decoded != text:
                sys.exit(f"{name}: decode gives {decoded!r}, not {text!r}")
        check_round_trip(name, data, ids)
        cases.append({"name": name, "reference": "encode", "text_base64":
                      base64.b64encode(data).decode(), "ids": ids})
    for name, data in INVALID_CASES:
        try:
            data.decode("utf-8")
            sys.exit(f"{name} is valid UTF-8")
        except UnicodeDecodeError:
            pass
        ids = encode_by_pieces(tok, specials, data)
        check_round_trip(name, data, ids)
        cases.append({"name": name, "reference": "pieces_surrogateescape", "text_base64":
                      base64.b64encode(data).decode(), "ids": ids})

    fixture = {
        "generator": "tools/reference/tokenizer_reference.py",
        "tokenizers_version": __import__("tokenizers").__version__,
        "gguf_file": args.gguf.rsplit("/", 1)[-1],
        "gguf_sha256": sha256,
        "note": "reference=encode: Tokenizer.encode(text, add_special_tokens=False); "
                "reference=pieces_surrogateescape: invalid UTF-8, the library's "
                "pre-tokenizer and BPE model on the bytes (see the script's docstring)",
        "bytes_without_token": without_token,
        "cases": cases,
    }
    # One case per line: compact and diff-friendly.
    header = json.dumps({k: v for k, v in fixture.items() if k != "cases"}, indent=1)
    lines = ",\n".join("  " + json.dumps(c, separators=(",", ":")) for c in cases)
    with open(args.out, "w") as f:
        f.write(header[:-2] + ',\n "cases": [\n' + lines + "\n ]\n}\n")
    json.loads(open(args.out).read())  # Well-formed.
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
