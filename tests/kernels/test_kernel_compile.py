"""Every Triton kernel compiles to a Hopper (sm_90) binary, checked on a machine without a GPU.

The interpreter that runs the other kernel tests is lenient (it does not type-check loop-carried
values, for example), so this compiles the kernels for real with triton's bundled ptxas. It runs in
a subprocess because TRITON_INTERPRET=1, set for the test session, makes `triton.jit` interpret.
"""
import os
import subprocess
import sys

import pytest

BF16 = "bf16"


def variants():
    """(kernel, element type of each pointer argument, constexprs) per compiled variant; the other
    arguments are i32, except the float ones."""
    from budget_sampler_kernels import activation, attention, moe, norm, rope, sampling
    att = dict(Q=BF16, PREFIX_K=BF16, PREFIX_V=BF16, SUFFIX_K=BF16, SUFFIX_V=BF16, OUT=BF16, LSE=BF16,
               ROW_PTR="i32", PREFIX_TABLES="i32", PREFIX_LENS="i32", SUFFIX_TABLES="i32", SUFFIX_LENS="i32",
               RESULT=BF16)
    split = {**att, "OUT": "fp32", "LSE": "fp32"}
    fp32_att = {**split, "Q": "fp32", "PREFIX_K": "fp32", "PREFIX_V": "fp32", "SUFFIX_K": "fp32", "SUFFIX_V": "fp32"}
    tile = dict(HEAD_DIM=128, BLOCK_M=64, BLOCK_N=64, BLOCK_S=4, BLOCK_D=128, BLOCK_G=4, PREFIX_PAGE=16,
                SUFFIX_PAGE=16, PREFIX_MIN=256, SUFFIX_MIN=16, RATIO=6, PRECISION="tf32", SOFTCAP=False, WINDOW=False)
    return [
        # Qwen2.5-1.5B's heads: one launch (n >= 256 on an H100) and the split path
        (attention._attention_kernel, att, dict(tile, SPLIT=False)),
        (attention._attention_kernel, split, dict(tile, SPLIT=True)),
        # a small batch of 16-row tiles (16 suffix tokens a step), and MHA in float32 (one)
        (attention._attention_kernel, att, dict(tile, RATIO=4, BLOCK_M=16, BLOCK_S=16, SUFFIX_MIN=64, SPLIT=False)),
        (attention._attention_kernel, fp32_att, dict(tile, RATIO=1, BLOCK_S=1, SUFFIX_MIN=4, HEAD_DIM=64, BLOCK_D=64,
                                                     PREFIX_PAGE=32, SUFFIX_PAGE=7, PRECISION="ieee", SPLIT=True)),
        # Gemma 2's layers: soft-capped scores, with and without a sliding window; Gemma 3's window alone
        (attention._attention_kernel, att, dict(tile, RATIO=2, HEAD_DIM=256, BLOCK_D=256, SPLIT=False, SOFTCAP=True,
                                                WINDOW=True)),
        (attention._attention_kernel, split, dict(tile, RATIO=2, SPLIT=True, SOFTCAP=True, WINDOW=False)),
        (attention._attention_kernel, split, dict(tile, RATIO=2, SPLIT=True, SOFTCAP=False, WINDOW=True)),
        (attention._merge_kernel, split, dict(HEAD_DIM=128, BLOCK_P=4, BLOCK_H=16, BLOCK_D=128)),
        (norm._rms_norm_kernel, dict(X=BF16, R=BF16, W=BF16, OUT=BF16, NEW_R=BF16),
         dict(HAS_RESIDUAL=True, BLOCK=2048)),
        (norm._rms_norm_kernel, dict(X="fp32", R="fp32", W="fp32", OUT="fp32", NEW_R="fp32"),
         dict(HAS_RESIDUAL=False, BLOCK=64)),
        (rope._rope_write_kv_kernel, dict(Q=BF16, K=BF16, V=BF16, COS="fp32", SIN="fp32", K_CACHE=BF16, V_CACHE=BF16,
                                          ROWS="i64", Q_OUT=BF16), dict(HALF=64, BLOCK_H=16, BLOCK_HALF=64, PASS=0,
                                                                        BLOCK_PASS=1)),
        # Phi-4-mini's partial rotary: 96 of 128 dims rotate
        (rope._rope_write_kv_kernel, dict(Q=BF16, K=BF16, V=BF16, COS="fp32", SIN="fp32", K_CACHE=BF16,
                                          V_CACHE=BF16, ROWS="i64", Q_OUT=BF16),
         dict(HALF=48, BLOCK_H=32, BLOCK_HALF=64, PASS=32, BLOCK_PASS=32)),
        (activation._silu_and_mul_kernel, dict(X=BF16, OUT=BF16), dict(BLOCK=1024)),
        *moe_variants(moe),
        *sampling_variants(sampling),
    ]


def moe_variants(moe):
    """Qwen3-Coder-30B-A3B's experts (top-8 of 128): gate/up and down at decode tiles, gate/up at prompt tiles."""
    gemm = dict(A=BF16, B=BF16, C=BF16, PAIRS="i32", BLOCK_EXPERT="i32", WEIGHTS="fp32")
    tile = dict(TOP_K=8, A_PER_PAIR=False, MUL_WEIGHTS=False, BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, PRECISION="tf32")
    return [(moe._moe_gemm_kernel, gemm, tile),
            (moe._moe_gemm_kernel, {**gemm, "C": "fp32"}, dict(tile, TOP_K=1, A_PER_PAIR=True, MUL_WEIGHTS=True)),
            (moe._moe_gemm_kernel, gemm, dict(tile, BLOCK_M=64))]


def sampling_variants(sampling):
    rows = dict(LOGITS=BF16, TEMPERATURE="fp32", TOP_K="i32", TOP_P="fp32", MIN_P="fp32", SEEDS="i64",
                SAMPLE_IDX="i64", STEPS="i64", STATS="fp32", ARGMAX="i32", SEARCH="i64", PART="fp32", PART_K="fp32",
                PART_P="fp32", KEYS="i64", KMASS="fp32", DMASS="fp32", OUT="fp32", FIRST="i32", LAST="i32",
                TOKENS="i64", LOGPROBS="fp32", MASS="fp32", COUNT="i32", CAND="i64", DONE="i64")
    tile = dict(BLOCK_C=64, NB=sampling.NB, PASSES=sampling.PASSES)
    last = sampling.ROUNDS
    return [(sampling._stats_kernel, rows, dict(BLOCK_V=1024)),
            *[(sampling._search_kernel, rows, dict(tile, TOP_P_SEARCH=top_p, BLOCK=256)) for top_p in (False, True)],
            *[(sampling._mass_kernel, rows, dict(tile, FINAL=final, BLOCK_V=1024)) for final in (False, True)],
            *[(sampling._pick_kernel, rows, dict(R=r, SALT=sampling._salt(r), DRAW=r < last, BLOCK_V=1024, BLOCK_C=64))
              for r in (0, 2, last)],  # round 2's salt is above 2^31
            *[(sampling._check_kernel, rows, dict(R=r, BLOCK_V=1024, BLOCK_C=64)) for r in (0, 1)],
            (sampling._draw_kernel, rows, dict(SALT=sampling._salt(last), BLOCK_V=1024, BLOCK_C=64)),
            (sampling._finish_kernel, rows, dict(BLOCK_C=64))]


def compile_all() -> None:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    floats = {"eps", "qk_scale", "softcap"}
    for fn, pointers, constexprs in variants():
        sig = {name: "constexpr" if name in constexprs else f"*{pointers[name]}" if name in pointers
               else "fp32" if name in floats else "i32" for name in fn.arg_names}
        # what a launch specialises: 16-byte aligned pointers, strides divisible by 16
        attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names)
                 if sig[name].startswith("*") or name.startswith("stride")}
        triton.compile(ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs),
                       target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
        print("compiled", fn.__name__, flush=True)


def test_kernels_compile_for_sm90():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    probe = subprocess.run([sys.executable, "-c", "from triton.backends.nvidia.compiler import CUDABackend"],
                           env=env, capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"triton's NVIDIA backend is unavailable here: {probe.stderr.strip()[-200:]}")
    run = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    assert run.stdout.count("compiled") == len(variants())


if __name__ == "__main__":
    compile_all()
