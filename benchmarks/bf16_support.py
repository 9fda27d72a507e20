"""Does this machine compute bfloat16 natively, and what does ``model.autocast: bf16`` cost on it?

A minute-long check for deciding between ``model.autocast`` ``bf16``, ``auto`` and ``none``: the CPU
features PyTorch sees (:func:`sdar.models.loading.native_bf16`), what ``auto`` resolves to, and the
speed of a float32 and a bfloat16 matrix product of ``--size`` on the CPU with this process's
threads (the best of ``--repeats``; a bfloat16 product that takes longer than ``--budget`` seconds
is timed once). The product is the bulk of a forward pass; the whole-iteration comparison on a CPU
with native bfloat16 is ``benchmarks/bf16_iteration.py``.

    python benchmarks/bf16_support.py                  # -> results/bf16_support_<cpu capability>[_amx].json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _results import machine_info, write_result

from sdar.models.loading import ModelConfig, autocast_dtype, native_bf16


def product_gflops(dtype: torch.dtype, size: int, repeats: int, budget: float) -> dict:
    """GFLOPS of ``size x size`` matrix products in ``dtype``: the best of ``repeats`` timed products
    (one, when a product takes longer than ``budget`` seconds), after one untimed warm-up product."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(dtype)
    b = torch.randn(size, size, generator=generator).to(dtype)
    start = time.perf_counter()
    a @ b
    warm_up = time.perf_counter() - start
    times = []
    for _ in range(1 if warm_up > budget else repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    best = min(times)
    return {"seconds": best, "gflops": 2 * size**3 / best / 1e9, "timed": len(times)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="matrix side (default 1024)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=float, default=5.0,
                        help="seconds above which a product is timed once only")
    parser.add_argument("--out", help="result file (default: results/bf16_support_<cpu capability>.json, with _amx where the CPU has AMX tiles)")
    parser.add_argument("--smoke", action="store_true", help="64 x 64 products, 2 repeats (plumbing only)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.repeats = 64, 2
    capability = torch.backends.cpu.get_cpu_capability()
    float32 = product_gflops(torch.float32, args.size, args.repeats, args.budget)
    bfloat16 = product_gflops(torch.bfloat16, args.size, args.repeats, args.budget)
    resolved = autocast_dtype(ModelConfig(name="tiny-random", autocast="auto"), "cpu")
    result = {
        "cpu_capability": capability,
        "cpu_features": {name.removeprefix("_is_").removesuffix("_supported"): getattr(torch.cpu, name)()
                         for name in ("_is_avx2_supported", "_is_avx512_supported", "_is_avx512_bf16_supported",
                                      "_is_amx_tile_supported") if hasattr(torch.cpu, name)},
        "native_bf16": native_bf16("cpu"),
        "autocast_auto_resolves_to": "bf16" if resolved is not None else "none",
        "size": args.size,
        "float32": float32,
        "bfloat16": bfloat16,
        "bf16_time_over_fp32": bfloat16["seconds"] / float32["seconds"],
        "machine": machine_info(),
        "smoke": args.smoke,
        "command": "python benchmarks/bf16_support.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    # AMX and AVX512-BF16 CPUs both report AVX512 and differ several-fold here: one file each
    amx = "_amx" if result["cpu_features"].get("amx_tile") else ""
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"bf16_support_{capability.lower()}{amx}.json"
    write_result(result, out)
    print(f"{capability}: native bfloat16 {result['native_bf16']}, auto -> {result['autocast_auto_resolves_to']}; "
          f"float32 {float32['gflops']:.1f} GFLOPS, bfloat16 {bfloat16['gflops']:.1f} GFLOPS "
          f"({result['bf16_time_over_fp32']:.2f}x the float32 time) -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
