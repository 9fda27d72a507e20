"""Rows per forward pass (``optim.micro_batch_size``): time and peak memory of the same work.

The gradient of a mini-batch does not depend on how its rows are split into forward passes
(``sdar sft`` and the PPO update accumulate token sums over micro-batches), so the micro-batch
size is purely a speed and memory setting. This script measures it on real step samples: the
environment's scripted expert plays ``--episodes`` training episodes in the config's prompt format
(as ``benchmarks/learning.py`` writes its demonstrations), ``--rows`` of those turns are drawn with
a fixed seed, and for every size in ``--micro`` one fresh subprocess loads the config's model and
runs, over those same rows sorted by length (as the update groups rows of similar length):

* ``backward``: per micro-batch, the response tokens' negative log-likelihood, then its backward
  pass (what ``sdar sft`` and the update do per micro-batch);
* ``no_grad``: ``score_responses`` under ``torch.no_grad`` (the reference and teacher passes).

Each subprocess first runs one untimed single-row pass (first-call allocations are not the
setting's), then times each mode and reads the resident-set high-water mark above the resident
set before it (glibc told to map large buffers separately, so freed tensors leave the resident set;
see ``benchmarks/logprob_memory.py``). The ratios are each size over one row per pass.

    python benchmarks/micro_batch.py                   # configs/bench/webshop.yaml, 8 rows, 1 2 4 8
    python benchmarks/micro_batch.py --config configs/bench/alfworld.yaml --out \\
        benchmarks/results/micro_batch_alfworld.json
    python benchmarks/micro_batch.py --smoke           # tiny random model, seconds

On a GPU the same command measures ``torch.cuda.max_memory_allocated`` (``model.device`` of the
config decides where it runs).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import machine_info, peak_memory, write_result

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SMOKE_OVERRIDES = ["model={name: tiny-random, lora: null}"]
POLICY = {"alfworld": "expert", "webshop": "oracle", "search": "oracle"}


def measure(spec: dict) -> dict:
    """Time and peak memory of both modes at one micro-batch size (runs in a subprocess)."""
    import torch

    from sdar.models.loading import load_policy
    from sdar.models.scoring import score_responses
    from sdar.trainer.config import load_config

    config = load_config(spec["config"], spec["overrides"])
    torch.manual_seed(0)
    model, tokenizer = load_policy(config.model)
    device = next(model.parameters()).device
    prompts, responses = spec["prompts"], spec["responses"]
    size, pad_id = spec["micro"], tokenizer.pad_token_id
    chunks = [range(k, min(k + size, len(prompts))) for k in range(0, len(prompts), size)]

    def backward(rows):
        for chunk in rows:
            scored = score_responses(
                model, [prompts[i] for i in chunk], [responses[i] for i in chunk], pad_id=pad_id
            )
            mask = scored.response_mask.to(scored.log_probs.device)
            (-(scored.log_probs * mask).sum()).backward()

    def no_grad(rows):
        with torch.no_grad():
            for chunk in rows:
                score_responses(
                    model, [prompts[i] for i in chunk], [responses[i] for i in chunk],
                    pad_id=pad_id,
                )

    padded_tokens = sum(
        len(chunk) * (max(len(prompts[i]) for i in chunk) + max(len(responses[i]) for i in chunk))
        for chunk in chunks
    )
    backward([range(1)])  # untimed warm-up on one row
    model.zero_grad(set_to_none=True)
    results = {}
    for mode, run in (("backward", backward), ("no_grad", no_grad)):
        gc.collect()
        with peak_memory(device) as reading:
            start = time.perf_counter()
            run(chunks)
        results[mode] = {
            "seconds": time.perf_counter() - start,
            **reading,
            "padded_tokens": padded_tokens,
        }
        model.zero_grad(set_to_none=True)
    results["torch_threads"] = torch.get_num_threads()
    return results


def run_in_subprocess(spec: dict) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--measure", handle.name],
            capture_output=True, text=True, check=False, env=env, cwd=ROOT,
        )
    finally:
        os.unlink(handle.name)
    if done.returncode != 0:
        raise RuntimeError(f"micro-batch size {spec['micro']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def expert_turns(config_path: str, overrides: list[str], episodes: int, rows: int):
    """Token ids of ``rows`` expert turns (prompt as the policy sees it, response + end of turn)."""
    from learning import write_demonstrations  # benchmarks/learning.py

    from sdar.models.loading import load_policy
    from sdar.trainer.config import load_config
    from sdar.trainer.sft import encode_demonstration, read_demonstrations

    config = load_config(config_path, overrides)
    env_name = config.env.name
    if env_name not in POLICY:
        raise SystemExit(f"no scripted expert for env {env_name!r}; choose one of {sorted(POLICY)}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "demos.jsonl"
        write_demonstrations(env_name, config, POLICY[env_name], episodes, path)
        demos = read_demonstrations(path)
    if len(demos) < rows:
        raise SystemExit(f"{episodes} episodes gave {len(demos)} turns, fewer than --rows {rows}")
    demos = random.Random(0).sample(demos, rows)
    _, tokenizer = load_policy(config.model)
    encoded = [encode_demonstration(tokenizer, d["prompt"], d["response"]) for d in demos]
    encoded.sort(key=lambda pair: len(pair[0]) + len(pair[1]))
    return [p for p, _ in encoded], [r for _, r in encoded]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/bench/webshop.yaml",
                        help="YAML config: model, env and prompt format (default the WebShop bench)")
    parser.add_argument("--episodes", type=int, default=None,
                        help="expert episodes to draw turns from (default 16, smoke 2)")
    parser.add_argument("--rows", type=int, default=None, help="turns measured (default 8, smoke 4)")
    parser.add_argument("--micro", type=int, nargs="+", default=None,
                        help="rows per forward pass to compare (default 1 2 4 8, smoke 1 2)")
    parser.add_argument("--smoke", action="store_true", help="tiny random model, a few rows")
    parser.add_argument("--out", type=Path, default=None,
                        help="result JSON (default results/micro_batch.json, smoke "
                             "micro_batch_smoke.json)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    args = parser.parse_args(argv)
    if args.measure:
        spec = json.loads(Path(args.measure).read_text(encoding="utf-8"))
        print(json.dumps(measure(spec)))
        return 0

    overrides = (SMOKE_OVERRIDES if args.smoke else []) + list(args.overrides)
    episodes = args.episodes or (2 if args.smoke else 16)
    rows = args.rows or (4 if args.smoke else 8)
    sizes = args.micro or ([1, 2] if args.smoke else [1, 2, 4, 8])
    if min(sizes) < 1 or rows < 1 or episodes < 1:
        parser.error("--micro, --rows and --episodes must be positive")
    if 1 not in sizes:
        sizes = [1, *sizes]  # the ratios are taken against one row per pass
    config_path = Path(args.config)
    if not config_path.is_file() and (ROOT / config_path).is_file():
        config_path = ROOT / config_path
    prompts, responses = expert_turns(str(config_path), overrides, episodes, rows)
    print(f"{rows} turns: prompt tokens {min(map(len, prompts))}-{max(map(len, prompts))}, "
          f"response tokens {min(map(len, responses))}-{max(map(len, responses))}", flush=True)
    measured = {}
    for size in sorted(set(sizes)):
        spec = {"config": str(config_path), "overrides": overrides, "micro": size,
                "prompts": prompts, "responses": responses}
        measured[size] = run_in_subprocess(spec)
        line = ", ".join(
            f"{mode} {measured[size][mode]['seconds']:.1f} s / "
            f"{measured[size][mode]['peak_extra_bytes'] / 2**30:.2f} GiB"
            for mode in ("backward", "no_grad")
        )
        print(f"{size} rows per pass: {line}", flush=True)

    one = measured[1]
    report = {
        "benchmark": "micro_batch",
        "settings": {
            "config": args.config, "overrides": overrides, "episodes": episodes, "rows": rows,
            "micro": sorted(set(sizes)), "smoke": args.smoke,
        },
        "turns": {
            "prompt_tokens": [len(p) for p in prompts],
            "response_tokens": [len(r) for r in responses],
            "mean_prompt_tokens": statistics.mean(map(len, prompts)),
        },
        "results": {
            str(size): {
                mode: {
                    **values[mode],
                    "time_over_one_row": values[mode]["seconds"] / one[mode]["seconds"],
                    "memory_over_one_row": (
                        values[mode]["peak_extra_bytes"] / one[mode]["peak_extra_bytes"]
                        if one[mode]["peak_extra_bytes"] else None
                    ),
                }
                for mode in ("backward", "no_grad")
            }
            for size, values in measured.items()
        },
        "subprocess_torch_threads": one["torch_threads"],
        "machine": machine_info(),
    }
    out = args.out or RESULTS / ("micro_batch_smoke.json" if args.smoke else "micro_batch.json")
    write_result(report, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
