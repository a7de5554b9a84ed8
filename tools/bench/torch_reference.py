#!/usr/bin/env python3
"""Independent references for attention_bench, run in the same GPU session.

PyTorch is not part of the product; it is the yardstick. Prints, for the
shapes attention_bench measures:
  - SDPA decode (one query token, contiguous bf16 K/V, enable_gqa for GQA):
    K+V bytes read per second as a % of a device-to-device copy of the same
    bytes timed here (read + write counted, as attention_bench counts it);
  - torch.matmul TFLOP/s on the GEMM shapes attention_bench runs through
    Backend::Linear;
  - SDPA prefill TFLOP/s (n queries at the end of kv_len keys, causal from
    the bottom right) on the shapes prefill_attention_test benchmarks.

    python3 tools/bench/torch_reference.py [sdpa] [gemms] [prefill]   (default: all)
"""

import sys

import time

import torch
import torch.nn.functional as F

HEAD_DIM = 128
SHAPES = [("MHA 32/32", 32, 32), ("GQA 32/8", 32, 8)]
CONTEXTS = [4096, 32768, 131072]
PREFILL_SHAPES = [(512, 4096, 32, 32), (512, 4096, 32, 8), (512, 32768, 32, 32), (512, 32768, 32, 8),
                  (2048, 32768, 32, 32), (2048, 32768, 32, 8), (4096, 4096, 32, 32), (4096, 4096, 32, 8)]
GEMMS = [(1, 4096, 4096), (1, 11008, 4096), (16, 4096, 4096), (512, 4096, 4096),
         (512, 11008, 4096), (512, 4096, 11008), (4096, 4096, 4096), (4096, 11008, 4096)]


def timed(fn, target_s=0.025, repeats=7):
    """Median seconds per call of fn() over `repeats` batches (after warm-up)."""
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    one = max(time.perf_counter() - t0, 1e-7)
    n = max(2, min(2000, int(target_s / one)))
    samples = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        a = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - a) / n)
    samples.sort()
    return samples[len(samples) // 2]


def sdpa():
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}: SDPA decode, bf16, "
          f"head_dim {HEAD_DIM}, contiguous K/V [b, kv_heads, ctx, d]")
    print(f"{'shape':<10} {'context':>7} {'batch':>5} {'% copy':>8} {'backend':>10}")
    for name, heads, kv_heads in SHAPES:
        for ctx in CONTEXTS:
            for batch in (1, 8):
                kv_bytes = batch * ctx * kv_heads * HEAD_DIM * 2 * 2
                if kv_bytes > 20 * 2**30:
                    print(f"{name:<10} {ctx // 1024:>6}K {batch:>5} {'skipped':>8} (K+V over 20 GiB)")
                    continue
                k = torch.rand(batch, kv_heads, ctx, HEAD_DIM, device="cuda", dtype=torch.bfloat16) - 0.5
                v = torch.rand_like(k) - 0.5
                q = torch.rand(batch, heads, 1, HEAD_DIM, device="cuda", dtype=torch.bfloat16) - 0.5
                src = torch.empty(kv_bytes // 2, device="cuda", dtype=torch.bfloat16)
                dst = torch.empty_like(src)
                copy_s = timed(lambda: dst.copy_(src))
                copy_bw = 2 * kv_bytes / copy_s
                gqa = heads != kv_heads
                attn_s = timed(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa))
                pct = 100 * (kv_bytes / attn_s) / copy_bw
                print(f"{name:<10} {ctx // 1024:>6}K {batch:>5} {pct:>7.1f}% {'sdpa':>10}")
                del k, v, q, src, dst
                torch.cuda.empty_cache()


def gemms():
    print("\ntorch.matmul y = x @ w.T, bf16 (same shapes as attention_bench's GEMM table):")
    print(f"{'m':>6} {'n':>6} {'k':>6} {'TFLOP/s':>10}")
    for m, n, k in GEMMS:
        x = torch.rand(m, k, device="cuda", dtype=torch.bfloat16) - 0.5
        w = torch.rand(n, k, device="cuda", dtype=torch.bfloat16) - 0.5
        s = timed(lambda: torch.matmul(x, w.T))
        print(f"{m:>6} {n:>6} {k:>6} {2 * m * n * k / s / 1e12:>10.1f}")


def prefill():
    from torch.nn.attention.bias import causal_lower_right
    print("\nSDPA prefill, bf16, head_dim 128, contiguous [1, heads, len, d] "
          "(TFLOP/s = 4*d*heads*sum(visible keys) / time, as prefill_attention_test counts):")
    print(f"{'n':>6} {'kv_len':>7} {'heads':>6} {'TFLOP/s':>9}")
    for n, kv_len, heads, kv_heads in PREFILL_SHAPES:
        q = torch.rand(1, heads, n, HEAD_DIM, device="cuda", dtype=torch.bfloat16) - 0.5
        k = torch.rand(1, kv_heads, kv_len, HEAD_DIM, device="cuda", dtype=torch.bfloat16) - 0.5
        v = torch.rand_like(k) - 0.5
        # GQA through repeated K/V: same arithmetic, and the bottom-right
        # causal bias stays on the fused kernels.
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
        mask = causal_lower_right(n, kv_len)
        s = timed(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        visible = sum(kv_len - n + t + 1 for t in range(n))
        print(f"{n:>6} {kv_len:>7} {heads:>3}/{kv_heads:<2} {4 * HEAD_DIM * heads * visible / s / 1e12:>9.1f}")
        del q, k, v
        torch.cuda.empty_cache()


if __name__ == "__main__":
    parts = sys.argv[1:] or ["sdpa", "gemms", "prefill"]
    for part in parts:
        {"sdpa": sdpa, "gemms": gemms, "prefill": prefill}[part]()
