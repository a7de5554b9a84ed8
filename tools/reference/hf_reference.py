#!/usr/bin/env python3
"""Reference outputs from Hugging Face transformers for the parity tests.

Nothing here is part of the product: these scripts produce the fixtures under
tests/fixtures/ that the Bazel tests compare our forward pass against. They
need torch + transformers + safetensors (installed on the GPU machine; see
tools/gpu/run_reference.sh, which runs both commands there):

  # Tiny random-weight checkpoints (MHA, GQA, each RoPE scaling, Qwen2 biases,
  # bf16 storage) with reference logits, written as
  # tests/fixtures/hf_tiny/<variant>/{config.json,model.safetensors,reference.safetensors}
  python3 tools/reference/hf_reference.py tiny --out tests/fixtures/hf_tiny

  # Greedy tokens of the default model (SmolLM2-135M-Instruct) from a
  # Hugging Face directory written by //tools/gguf_to_hf, for the prompt ids
  # in the fixture file (kept; only the reference fields are rewritten).
  python3 tools/reference/hf_reference.py greedy --model-dir DIR \
      --fixture tests/fixtures/smollm2_greedy.json --steps 32
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file

SEQ_LEN = 24
SEED = 1234

# Every variant is a small Llama-family model: hidden 64, 4 query heads of
# dim 16, 2 layers, vocabulary 128. Sizes are chosen so that each RoPE
# scaling is actually exercised by a 24-token input.
BASE = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
)

VARIANTS = {
    "mha": dict(),
    "gqa": dict(num_attention_heads=8, num_key_value_heads=2, hidden_size=64),
    "tied": dict(num_key_value_heads=2, tie_word_embeddings=True),
    "linear": dict(num_key_value_heads=2, rope_scaling={"rope_type": "linear", "factor": 2.0}),
    # max_position_embeddings < SEQ_LEN so the NTK base actually grows.
    "dynamic": dict(num_key_value_heads=2, max_position_embeddings=16,
                    rope_scaling={"rope_type": "dynamic", "factor": 2.0}),
    "yarn": dict(num_key_value_heads=2, max_position_embeddings=64,
                 rope_scaling={"rope_type": "yarn", "factor": 4.0,
                               "original_max_position_embeddings": 16}),
    "llama3": dict(num_key_value_heads=2, rope_theta=500000.0,
                   rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    "qwen2": dict(num_key_value_heads=2, model="qwen2"),
    "bf16": dict(num_key_value_heads=2, dtype="bfloat16"),
}


def build(name, spec):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    spec = dict(spec)
    kind = spec.pop("model", "llama")
    dtype = spec.pop("dtype", "float32")
    kwargs = dict(BASE)
    kwargs.update(spec)
    torch.manual_seed(SEED)
    if kind == "qwen2":
        config = Qwen2Config(**kwargs, use_sliding_window=False)
        model = Qwen2ForCausalLM(config)
    else:
        config = LlamaConfig(**kwargs)
        model = LlamaForCausalLM(config)
    # Larger-than-default weights so attention is peaked and logits are O(1):
    # a parity bound of 1e-4 then means something.
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif pname.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    return config, model


def tiny(out_dir):
    gen = torch.Generator().manual_seed(SEED)
    for name, spec in VARIANTS.items():
        config, model = build(name, spec)
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        model.save_pretrained(d, safe_serialization=True)
        for extra in ("generation_config.json",):
            p = os.path.join(d, extra)
            if os.path.exists(p):
                os.remove(p)
        ids = torch.randint(3, config.vocab_size, (1, SEQ_LEN), generator=gen)
        # Reload what was written, in float32: the reference then sees exactly
        # the stored weights (casting the live model would also round its
        # RoPE inv_freq buffer to bf16 for the bf16 variant).
        from transformers import AutoModelForCausalLM
        ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32,
                                                   attn_implementation="eager").eval()
        with torch.no_grad():
            logits = ref(input_ids=ids).logits[0].float().contiguous()
        save_file({"input_ids": ids[0].float().contiguous(), "logits": logits},
                  os.path.join(d, "reference.safetensors"))
        print(f"{name}: logits {tuple(logits.shape)} max |logit| {logits.abs().max():.3f}")


def greedy(model_dir, fixture, steps):
    from transformers import AutoModelForCausalLM

    with open(fixture) as f:
        data = json.load(f)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    ids = torch.tensor([data["prompt_ids"]])
    # Run all `steps` tokens even past an end-of-sequence token.
    model.generation_config.eos_token_id = None
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=steps, do_sample=False, num_beams=1,
                             pad_token_id=0, return_dict_in_generate=True,
                             output_logits=True)
    tokens = out.sequences[0, ids.shape[1]:].tolist()
    first = out.logits[0][0].float()
    top = torch.topk(first, 5)
    data["reference_tokens"] = tokens
    data["reference_first_step_top5"] = {"ids": top.indices.tolist(), "logits": top.values.tolist()}
    data["reference"] = f"transformers {__import__('transformers').__version__}, torch {torch.__version__}, float32, eager attention, CPU"
    with open(fixture, "w") as f:
        json.dump(data, f, indent=1)
    print("greedy tokens:", tokens)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tiny")
    t.add_argument("--out", required=True)
    g = sub.add_parser("greedy")
    g.add_argument("--model-dir", required=True)
    g.add_argument("--fixture", required=True)
    g.add_argument("--steps", type=int, default=32)
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    if a.cmd == "tiny":
        tiny(a.out)
    else:
        greedy(a.model_dir, a.fixture, a.steps)


if __name__ == "__main__":
    main()
