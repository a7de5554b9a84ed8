#!/usr/bin/env python3
"""Reference dequantization of ggml's block formats, from llama.cpp's own
gguf-py (gguf.quants.dequantize, numpy), written as
models/gguf/testdata/quant_blocks.gguf: for each type a tensor `<type>` of
random blocks (their fp16 scales set to finite values) and `<type>.want`, the
f32 values gguf-py decodes from them. models/gguf/gguf_file_test compares
GgufFile::ReadTensorFloat32 of the first with the second.

Regenerate (from the repository root; the packages are only for this
script, never for the product):

    python3 -m venv /tmp/quantvenv
    /tmp/quantvenv/bin/pip install gguf==0.10.0 numpy sentencepiece
    /tmp/quantvenv/bin/python tools/reference/gguf_quant_reference.py \
        --out models/gguf/testdata/quant_blocks.gguf
"""

import argparse

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFWriter
from gguf.quants import GGML_QUANT_SIZES, dequantize

# Byte offsets of each format's fp16 scale fields within a block.
HALF_FIELDS = {
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
    T.IQ4_NL: [0],
    T.IQ4_XS: [0],
}
BLOCKS = 3  # per type


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    writer = GGUFWriter(args.out, "quant_reference")
    for qtype, halves in HALF_FIELDS.items():
        elems, nbytes = GGML_QUANT_SIZES[qtype]
        blocks = rng.integers(0, 256, size=(BLOCKS, nbytes), dtype=np.uint8)
        for off in halves:
            # Finite scales of either sign, so negative d and dmin are covered.
            scale = rng.uniform(-2.0, 2.0, size=BLOCKS).astype(np.float16)
            blocks[:, off:off + 2] = scale.view(np.uint8).reshape(BLOCKS, 2)
        raw = blocks.reshape(1, BLOCKS * nbytes)
        want = dequantize(raw, qtype).astype(np.float32).reshape(BLOCKS * elems)
        assert np.all(np.isfinite(want)), qtype.name
        name = qtype.name.lower()
        writer.add_tensor(name, raw, raw_dtype=qtype)
        writer.add_tensor(name + ".want", want)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()
