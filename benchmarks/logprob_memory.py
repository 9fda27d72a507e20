"""Peak memory of ``sdar.models.logprobs.log_probs_from_logits`` vs the textbook one-liner.

The reference is ``torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None])`` (plus the
naive entropy ``-(p * log p).sum(-1)`` when entropies are asked for). Each measurement runs in a
fresh subprocess so that allocator caches of one run cannot hide the peak of another:

* on a GPU: ``torch.cuda.max_memory_allocated`` minus the memory allocated before the call;
* on CPU: the process's resident-set high-water mark (``VmHWM``, reset through
  ``/proc/self/clear_refs``; ``ru_maxrss`` where that is unavailable) minus the resident set
  before the call, with glibc told to map every buffer over 64 KiB separately
  (``MALLOC_MMAP_THRESHOLD_``) so that freed tensors leave the resident set at once. ``tracemalloc`` cannot see torch's allocations, so it is not used.

"peak" is the extra memory on top of the logits, which exist before the call in both cases. In
``backward`` mode it includes the logits' gradient (the same size as the logits, in both cases).

Usage::

    python benchmarks/logprob_memory.py            # V = 152064 and 49152, < 2 min on 2 CPU cores
    python benchmarks/logprob_memory.py --smoke    # tiny sizes, a few seconds
    python benchmarks/logprob_memory.py --rows 4096 --device cuda

Results (settings included) go to ``benchmarks/results/logprob_memory.json``
(``logprob_memory_smoke.json`` with ``--smoke``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from _results import peak_memory  # benchmarks/_results.py

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "logprob_memory.json"
SMOKE_OUTPUT = DEFAULT_OUTPUT.with_name("logprob_memory_smoke.json")
QWEN_VOCAB = 152064  # Qwen2.5 / Qwen3 embedding rows
SMOLLM_VOCAB = 49152  # SmolLM2


# --- measurement (runs inside a subprocess) ------------------------------------------------------

def _run_reference(torch, logits, token_ids, with_entropy: bool, backward: bool) -> None:
    log_softmax = torch.log_softmax(logits.float(), dim=-1)
    log_probs = log_softmax.gather(-1, token_ids[..., None]).squeeze(-1)
    total = log_probs.sum()
    if with_entropy:
        total = total + (-(log_softmax.exp() * log_softmax).sum(-1)).sum()
    del log_softmax
    if backward:
        total.backward()


def _run_chunked(torch, logits, token_ids, with_entropy: bool, backward: bool,
                 chunk_size: int | None) -> None:
    from sdar.models.logprobs import log_probs_from_logits

    log_probs, entropy = log_probs_from_logits(logits, token_ids, with_entropy, chunk_size)
    total = log_probs.sum() + (entropy.sum() if entropy is not None else 0.0)
    if backward:
        total.backward()


def measure(spec: dict) -> list[dict]:
    """Measure one implementation at one size for every ``(mode, with_entropy)`` in ``spec``.

    The logits are built once; before each run the gradient is dropped, the peak counter reset
    and the current usage taken as the baseline. Returns one result per setting.
    """
    import torch

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    rows, vocab = spec["rows"], spec["vocab"]

    def run(logits, token_ids, mode, with_entropy):
        backward = mode == "backward"
        logits.requires_grad_(backward)
        with torch.set_grad_enabled(backward):
            if spec["impl"] == "reference":
                _run_reference(torch, logits, token_ids, with_entropy, backward)
            else:
                _run_chunked(torch, logits, token_ids, with_entropy, backward,
                             spec["chunk_size"])

    def make(n_rows):
        logits = torch.empty(1, n_rows, vocab, dtype=dtype, device=device).normal_()
        return logits, torch.randint(0, vocab, (1, n_rows), device=device)

    # First-call allocations (kernels, autograd engine) are not the function's.
    warm_logits, warm_ids = make(2)
    for mode, with_entropy in spec["settings"]:
        run(warm_logits, warm_ids, mode, with_entropy)
    del warm_logits, warm_ids
    logits, token_ids = make(rows)
    results = []
    for mode, with_entropy in spec["settings"]:
        logits.grad = None
        gc.collect()
        with peak_memory(device) as reading:
            start = time.perf_counter()
            run(logits, token_ids, mode, with_entropy)
        seconds = time.perf_counter() - start
        results.append({
            "mode": mode, "with_entropy": with_entropy,
            "peak_extra_bytes": reading["peak_extra_bytes"], "seconds": seconds,
            "peak_method": reading["peak_method"],
            "logits_bytes": logits.numel() * logits.element_size(),
        })
    return results


# --- driver ------------------------------------------------------------------------------------

def run_in_subprocess(spec: dict) -> list[dict]:
    # A fixed glibc mmap threshold makes every large buffer its own mapping, returned to the system
    # when freed, so the resident set tracks live tensors instead of allocator caches.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    completed = subprocess.run(
        [sys.executable, __file__, "--measure", json.dumps(spec)],
        capture_output=True, text=True, check=False, env=env,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"measurement {spec} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (a few seconds)")
    parser.add_argument("--vocab", type=int, nargs="+", default=None,
                        help=f"vocabulary sizes (default {QWEN_VOCAB} {SMOLLM_VOCAB})")
    parser.add_argument("--rows", type=int, default=None,
                        help="positions B*T per call (default 512, smoke 64)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="rows per chunk for log_probs_from_logits (default: its own)")
    parser.add_argument("--modes", nargs="+", default=["no_grad", "backward"],
                        choices=["no_grad", "backward"])
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON file (default {DEFAULT_OUTPUT.name}; with --smoke "
                             f"{SMOKE_OUTPUT.name}, so a smoke run never overwrites real results)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return 0

    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    vocabs = args.vocab or ([4096] if args.smoke else [QWEN_VOCAB, SMOLLM_VOCAB])
    rows = args.rows or (64 if args.smoke else 512)
    chunk_size = args.chunk_size if args.chunk_size is not None else (8 if args.smoke else None)

    settings = [[mode, with_entropy] for mode in args.modes for with_entropy in (False, True)]
    results = []
    for vocab in vocabs:
        measured = {
            impl: run_in_subprocess({
                "impl": impl, "vocab": vocab, "rows": rows, "device": device,
                "dtype": args.dtype, "chunk_size": chunk_size, "settings": settings,
            })
            for impl in ("reference", "chunked")
        }
        for reference_run, chunked_run in zip(measured["reference"], measured["chunked"]):
            mode, with_entropy = reference_run["mode"], reference_run["with_entropy"]
            reference = reference_run["peak_extra_bytes"]
            chunked = chunked_run["peak_extra_bytes"]
            # The logits' gradient is needed whatever computes the log-probs; without it the
            # ratio shows the working memory of the two methods alone.
            grad_bytes = reference_run["logits_bytes"] if mode == "backward" else 0
            working = reference - grad_bytes
            row = {
                "vocab": vocab, "rows": rows, "mode": mode, "with_entropy": with_entropy,
                "logits_bytes": reference_run["logits_bytes"],
                "reference_peak_bytes": reference, "chunked_peak_bytes": chunked,
                "reference_seconds": round(reference_run["seconds"], 4),
                "chunked_seconds": round(chunked_run["seconds"], 4),
                "ratio": round(chunked / reference, 4) if reference else None,
                "logits_grad_bytes": grad_bytes,
                "ratio_excluding_logits_grad": (
                    round(max(0, chunked - grad_bytes) / working, 4) if working > 0 else None
                ),
                "peak_method": reference_run["peak_method"],
            }
            results.append(row)
            print(f"V={vocab:>6} rows={rows} {mode:>8} entropy={with_entropy!s:>5}: "
                  f"reference {reference / 2**20:8.1f} MiB, chunked {chunked / 2**20:8.1f} MiB, "
                  f"ratio {row['ratio']} "
                  f"(without the logits gradient {row['ratio_excluding_logits_grad']})",
                  flush=True)

    from sdar.models.logprobs import DEFAULT_CHUNK_ELEMENTS

    report = {
        "benchmark": "logprob_memory",
        "reference": "torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None])",
        "settings": {
            "smoke": args.smoke, "device": device, "dtype": args.dtype, "rows": rows,
            "vocabs": vocabs, "modes": args.modes,
            "chunk_size": chunk_size, "default_chunk_elements": DEFAULT_CHUNK_ELEMENTS,
        },
        "environment": {
            "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "torch_threads": torch.get_num_threads(),
            "cuda_device": torch.cuda.get_device_name(device) if device.startswith("cuda")
            else None,
        },
        "results": results,
    }
    output = args.out or (SMOKE_OUTPUT if args.smoke else DEFAULT_OUTPUT)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
