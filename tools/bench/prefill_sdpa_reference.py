#!/usr/bin/env python3
"""torch SDPA on the shapes ops/cuda/prefill_attention_test's benchmark runs.

The yardstick for the paged prefill kernel: contiguous bf16 Q/K/V (no paging),
queries are the newest n of kv_len positions, causal aligned bottom-right.
TFLOP/s counted as the kernel's benchmark counts them:
4 * head_dim * heads * sum over queries of the keys each attends.

    python3 tools/bench/prefill_sdpa_reference.py
"""

import torch
import torch.nn.functional as F

D = 128
SHAPES = [(512, 4096, 32, 32), (512, 4096, 32, 8), (512, 32768, 32, 32), (512, 32768, 32, 8),
          (4096, 4096, 32, 32), (4096, 4096, 32, 8)]


def time_ms(fn, warmup=2, iters=10):
    for _ in range(warmup):
        fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) / iters


def main():
    print(f"SDPA torch {torch.__version__} on {torch.cuda.get_device_name()}")
    for n, kv, heads, kv_heads in SHAPES:
        q = torch.randn(1, heads, n, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, kv_heads, kv, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, kv_heads, kv, D, device="cuda", dtype=torch.bfloat16)
        # GQA as MHA over expanded K/V (made outside the timing).
        ke = k.repeat_interleave(heads // kv_heads, dim=1)
        ve = v.repeat_interleave(heads // kv_heads, dim=1)
        visible = sum(kv - n + t + 1 for t in range(n))
        flops = 4.0 * D * heads * visible
        label = f"n={n} kv_len={kv} heads {heads}/{kv_heads}"
        if n == kv:
            fn = lambda: F.scaled_dot_product_attention(q, ke, ve, is_causal=True)
            how = "is_causal"
        else:
            try:
                from torch.nn.attention.bias import causal_lower_right
                mask = causal_lower_right(n, kv)
                F.scaled_dot_product_attention(q, ke, ve, attn_mask=mask)
                fn = lambda: F.scaled_dot_product_attention(q, ke, ve, attn_mask=mask)
                how = "causal_lower_right"
            except Exception as e:  # older torch: an explicit boolean mask (slower path)
                pos_q = torch.arange(kv - n, kv, device="cuda")[:, None]
                pos_k = torch.arange(kv, device="cuda")[None, :]
                mask = pos_k <= pos_q
                fn = lambda: F.scaled_dot_product_attention(q, ke, ve, attn_mask=mask)
                how = f"bool mask ({type(e).__name__})"
        ms = time_ms(fn)
        print(f"SDPA {label:34s} {ms:9.3f} ms {flops / ms / 1e9:7.1f} TFLOP/s  [{how}]")


if __name__ == "__main__":
    main()
