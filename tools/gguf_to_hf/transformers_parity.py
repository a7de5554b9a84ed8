#!/usr/bin/env python3
"""Checks a gguf_to_hf output directory with transformers (needs torch).

  transformers_parity.py --hf_dir=DIR [--gguf=FILE.gguf]

1. LlamaForCausalLM.from_pretrained(DIR) must load with no missing,
   unexpected or mismatched keys (and a tied head when the config says so).
2. With --gguf and the `gguf` Python package importable, the same GGUF file is
   also loaded through transformers' own GGUF path (its dequantizer and its
   q/k un-permutation), and weights and logits are compared with (1).
Exits non-zero on any mismatch.
"""

import argparse
import os
import sys

import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM


def load(*args, **kwargs):
    try:
        return AutoModelForCausalLM.from_pretrained(*args, dtype=torch.float32, **kwargs)
    except TypeError:  # transformers < 4.56 names it torch_dtype
        return AutoModelForCausalLM.from_pretrained(*args, torch_dtype=torch.float32, **kwargs)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hf_dir", required=True)
    p.add_argument("--gguf")
    p.add_argument("--tokens", default="1,504,3458,282,4,2,42,17,900,1234,33,7,8000,49151")
    p.add_argument("--tol", type=float, default=1e-3, help="max |logit difference|")
    p.add_argument("--weight_tol", type=float, default=0.0,
                   help="max |weight difference| (0 for f32 output; bf16 output needs ~1e-2)")
    args = p.parse_args()
    failures = []

    model, info = load(args.hf_dir, output_loading_info=True)
    assert isinstance(model, LlamaForCausalLM), type(model)
    print("loaded", args.hf_dir, "as", type(model).__name__,
          "params dtype", next(model.parameters()).dtype)
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        if info.get(key):
            failures.append(f"{key}: {info[key]}")
    cfg = model.config
    if cfg.tie_word_embeddings:
        same = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        print("tied lm_head shares embed_tokens:", same)
        if not same:
            failures.append("lm_head is not tied")

    ids = torch.tensor([[int(t) for t in args.tokens.split(",")]])
    with torch.no_grad():
        logits = model(ids).logits.float()
    print("logits", tuple(logits.shape), "finite:", bool(torch.isfinite(logits).all()),
          "next-token argmax:", logits[0].argmax(-1).tolist())
    if not torch.isfinite(logits).all():
        failures.append("non-finite logits")

    if args.gguf:
        try:
            import gguf  # noqa: F401
        except ImportError:
            print("gguf package missing: skipping the comparison with transformers' GGUF loader")
            args.gguf = None
    if args.gguf:
        ref = load(os.path.dirname(os.path.abspath(args.gguf)),
                   gguf_file=os.path.basename(args.gguf))
        for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps",
                  "rope_theta", "vocab_size", "tie_word_embeddings", "bos_token_id",
                  "eos_token_id"):
            a, b = getattr(cfg, k, None), getattr(ref.config, k, None)
            if k == "rope_theta" and a is None:  # transformers v5 keeps it in rope_parameters
                a = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta")
                b = (getattr(ref.config, "rope_parameters", None) or {}).get("rope_theta")
            # GGUF holds floats as f32: gguf_to_hf writes 1e-05 where transformers
            # keeps 9.999999747378752e-06; both are the same f32.
            ok = a == b or (isinstance(a, float) and isinstance(b, float) and
                            abs(a - b) <= 1e-6 * abs(b))
            print(f"config {k}: ours={a} transformers-gguf={b}{'' if ok else '  <-- DIFFERENT'}")
            if not ok and k not in ("bos_token_id", "eos_token_id"):
                failures.append(f"config {k}: {a} vs {b}")
        sd, rsd = model.state_dict(), ref.state_dict()
        if set(sd) != set(rsd):
            failures.append(f"state dict keys differ: {sorted(set(sd) ^ set(rsd))[:10]}")
        worst, worst_key = 0.0, None
        for k in sorted(set(sd) & set(rsd)):
            d = (sd[k].float() - rsd[k].float()).abs().max().item()
            if d > worst:
                worst, worst_key = d, k
        print(f"weights: {len(sd)} tensors, max |ours - transformers-gguf| = {worst} ({worst_key})")
        if worst > args.weight_tol:
            failures.append(f"weights differ by {worst} at {worst_key}")
        with torch.no_grad():
            ref_logits = ref(ids).logits.float()
        d = (logits - ref_logits).abs().max().item()
        print(f"logits: max |ours - transformers-gguf| = {d}; argmax equal:",
              bool((logits.argmax(-1) == ref_logits.argmax(-1)).all()))
        if d > args.tol:
            failures.append(f"logits differ by {d}")

    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
