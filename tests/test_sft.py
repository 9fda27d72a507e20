"""Supervised warm start: demonstrations from scripted play lower the NLL and feed RL's init."""

import json

import torch
import yaml

from sdar.envs import make_env
from sdar.envs.play import play_episodes
from sdar.models.loading import load_policy
from sdar.models.scoring import score_responses
from sdar.trainer.checkpoint import load_checkpoint
from sdar.trainer.config import load_config
from sdar.trainer.sft import encode_demonstration, read_demonstrations, run_sft
from sdar.trainer.trainer import Trainer


def test_sft_learns_the_demonstrations_and_initialises_rl(tmp_path):
    demos = tmp_path / "demos.jsonl"
    summary = play_episodes(make_env("toy"), "expert", episodes=4, seed=0, demos_path=str(demos), think=False)
    assert summary["success"] == 1.0
    rows = read_demonstrations(demos)
    assert len(rows) == 14 and all(r["won"] for r in rows)

    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "model": {"name": "tiny-random"}, "env": {"name": "toy", "prompt_mode": "action_only"},
        "optim": {"micro_batch_size": 4}, "method": "grpo", "iterations": 1,
        "rollout": {"tasks_per_iteration": 1, "group_size": 2, "generation": {"max_new_tokens": 4}},
        "eval": {"every": 0, "before_training": False},
    }))
    config = load_config(cfg_path)
    model, tok = load_policy(config.model)
    encoded = [encode_demonstration(tok, r["prompt"], r["response"]) for r in rows]
    assert tok.decode(encoded[0][1]).startswith(rows[0]["response"])

    def nll(m):
        with torch.no_grad():
            s = score_responses(m, [p for p, _ in encoded], [r for _, r in encoded], pad_id=tok.pad_token_id)
        return float(-(s.log_probs * s.response_mask).sum() / s.response_mask.sum())

    before = nll(model)
    settings = ["sft.epochs=3", "sft.lr=3e-3", "sft.batch_size=7"]
    ckpt = run_sft(load_config(cfg_path, settings), demos, tmp_path / "sft")
    # the warm start's settings are recorded with its config
    recorded = yaml.safe_load((tmp_path / "sft" / "config.yaml").read_text())["sft"]
    assert recorded == {"epochs": 3, "lr": 3e-3, "batch_size": 7, "max_demos": None}
    load_checkpoint(ckpt, model)
    after = nll(model)
    assert after < before - 1.0, (before, after)
    metrics = [json.loads(x) for x in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 6 and metrics[-1]["sft/nll"] < metrics[0]["sft/nll"]

    rl = load_config(cfg_path, [f"init_checkpoint={tmp_path / 'sft'}"])
    trainer = Trainer(rl, tmp_path / "rl")
    assert abs(nll(trainer.model) - after) < 1e-5



def test_lora_warm_start_is_the_kl_reference_and_resumes(tmp_path):
    from sdar.models.loading import reference_log_probs_context

    demos = tmp_path / "demos.jsonl"
    play_episodes(make_env("toy"), "expert", episodes=2, seed=0, demos_path=str(demos), think=False)
    rows = read_demonstrations(demos)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "model": {"name": "tiny-random", "lora": {"r": 4, "alpha": 8}},
        "env": {"name": "toy", "prompt_mode": "action_only"},
        "optim": {"micro_batch_size": 4, "lr": 1e-2}, "method": "grpo", "iterations": 1,
        "rollout": {"tasks_per_iteration": 1, "group_size": 2, "generation": {"max_new_tokens": 4}},
        "eval": {"every": 0, "before_training": False},
    }))
    config = load_config(cfg_path)
    run_sft(load_config(cfg_path, ["sft.epochs=2", "sft.lr=3e-2", "sft.batch_size=4"]), demos, tmp_path / "sft")
    _, tok = load_policy(config.model)
    encoded = [encode_demonstration(tok, r["prompt"], r["response"]) for r in rows]

    def nll(m):
        with torch.no_grad():
            s = score_responses(m, [p for p, _ in encoded], [r for _, r in encoded], pad_id=tok.pad_token_id)
        return float(-(s.log_probs * s.response_mask).sum() / s.response_mask.sum())

    sft_model, _ = load_policy(config.model)
    load_checkpoint(tmp_path / "sft", sft_model)
    warm = nll(sft_model)
    base = nll(load_policy(config.model)[0])
    assert abs(warm - base) > 0.1, (base, warm)  # the warm start is a different model

    rl = load_config(cfg_path, [f"init_checkpoint={tmp_path / 'sft'}"])
    trainer = Trainer(rl, tmp_path / "rl")
    assert abs(nll(trainer.model) - warm) < 1e-4, "the policy starts at the warm start"
    with reference_log_probs_context(trainer.model):
        assert abs(nll(trainer.model) - warm) < 1e-4, "the KL reference is the warm start, not the base"
    assert all(float(p.abs().max()) == 0.0 for n, p in trainer.model.named_parameters() if "lora_B" in n)
    trainer.train()
    trained = nll(trainer.model)
    assert trained != warm
    # the run's checkpoint holds the new adapter; resuming applies the warm start under it
    resumed = Trainer(rl, tmp_path / "rl", resume=True)
    assert abs(nll(resumed.model) - trained) < 1e-5


def test_checkpoints_record_their_warm_start_and_eval_and_resume_check_it(tmp_path, capsys):
    import hashlib
    import shutil

    import pytest

    from sdar.cli import main
    from sdar.trainer.checkpoint import (
        CheckpointError,
        latest_checkpoint,
        load_file,
        warm_start_for,
    )
    from sdar.trainer.evaluation import load_eval_policy

    demos = tmp_path / "demos.jsonl"
    play_episodes(make_env("toy"), "expert", episodes=2, seed=0, demos_path=str(demos), think=False)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "model": {"name": "tiny-random", "lora": {"r": 4, "alpha": 8}},
        "env": {"name": "toy", "prompt_mode": "action_only", "max_steps": 3},
        "optim": {"micro_batch_size": 4, "lr": 1e-2}, "method": "grpo", "iterations": 1,
        "rollout": {"tasks_per_iteration": 1, "group_size": 2, "generation": {"max_new_tokens": 4}},
        "eval": {"every": 0, "before_training": False, "num_tasks": 3},
    }))
    run_sft(load_config(cfg_path, ["sft.epochs=2", "sft.lr=3e-2", "sft.batch_size=4"]), demos, tmp_path / "sft")
    run_sft(load_config(cfg_path, ["sft.epochs=1", "sft.lr=1e-2", "sft.batch_size=4"]), demos, tmp_path / "other")
    warm = latest_checkpoint(tmp_path / "sft").resolve()
    trainer = Trainer(load_config(cfg_path, [f"init_checkpoint={tmp_path / 'sft'}"]), tmp_path / "rl")
    trainer.train()
    ckpt = latest_checkpoint(tmp_path / "rl")
    recorded = load_file(ckpt / "trainer_state.pt")["warm_start"]
    assert recorded == {"path": str(warm), "sha256": hashlib.sha256((warm / "model.pt").read_bytes()).hexdigest()}

    def evaluate(*args: str) -> dict:
        out = tmp_path / f"eval-{len(list(tmp_path.glob('eval-*.json')))}.json"
        assert main(["eval", *args, "--output", str(out)]) == 0
        return json.loads(out.read_text())

    # a config without init_checkpoint (the trap: the run's adapter alone on the bare model) gets
    # the recorded warm start, so the trained policy is what plays
    _, tok = load_policy(load_config(cfg_path).model)
    rows = read_demonstrations(demos)
    encoded = [encode_demonstration(tok, r["prompt"], r["response"]) for r in rows]

    def nll(m):
        with torch.no_grad():
            s = score_responses(m, [p for p, _ in encoded], [r for _, r in encoded], pad_id=tok.pad_token_id)
        return float(-(s.log_probs * s.response_mask).sum() / s.response_mask.sum())

    trained = nll(trainer.model)
    model, _, init = load_eval_policy(load_config(cfg_path), ckpt)
    assert init == str(warm) and abs(nll(model) - trained) < 1e-5
    adapter_alone = load_policy(load_config(cfg_path).model)[0]
    load_checkpoint(ckpt, adapter_alone)  # what the trap evaluated
    assert abs(nll(adapter_alone) - trained) > 0.1
    own = evaluate(str(ckpt))  # the run's own config names the warm start
    other_config = evaluate(str(ckpt), "--config", str(cfg_path))
    assert other_config["init_checkpoint"] == str(warm) and other_config["metrics"] == own["metrics"]
    # several passes over the same panel: pass 1 is the single pass; success is their mean
    passes = evaluate(str(ckpt), "--passes", "3")
    assert passes["passes"] == 3 and passes["success_per_pass"][0] == own["success"]
    assert passes["success"] == pytest.approx(sum(passes["success_per_pass"]) / 3)
    # every step of every pass's episodes written beside the result, read back against its metrics
    steps_file = tmp_path / "episodes" / "steps.jsonl"
    again = evaluate(str(ckpt), "--passes", "2", "--episodes", str(steps_file))
    steps = [json.loads(line) for line in steps_file.read_text().splitlines()]
    assert again["success_per_pass"] == passes["success_per_pass"][:2]
    for k in (1, 2):
        ours = [r for r in steps if r["pass"] == k]
        episodes = sorted({r["episode"] for r in ours})
        assert episodes == [0, 1, 2]  # eval.num_tasks
        for e in episodes:
            rows = [r for r in ours if r["episode"] == e]
            assert [r["step"] for r in rows] == list(range(len(rows)))  # each episode's steps in order
            assert len({(r["task_id"], r["won"]) for r in rows}) == 1
            assert all(r["admissible_actions"] and r["observation"] for r in rows)
            assert all(r["valid_action"] == (r["action"] in r["admissible_actions"]) for r in rows)
        won = [next(r["won"] for r in ours if r["episode"] == e) for e in episodes]
        assert sum(won) / 3 == again["success_per_pass"][k - 1]
    rates = [sum(not r["valid_action"] for r in steps if r["pass"] == k) / sum(r["pass"] == k for r in steps)
             for k in (1, 2)]
    assert sum(rates) / 2 == pytest.approx(again["metrics"]["val/invalid_action_rate"])

    # other weights under the adapter are refused, by eval and by resume
    capsys.readouterr()
    assert main(["eval", str(ckpt), "--config", str(cfg_path), f"init_checkpoint={tmp_path / 'other'}"]) == 2
    assert "holds other weights" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="holds other weights"):
        Trainer(load_config(cfg_path, [f"init_checkpoint={tmp_path / 'other'}", "iterations=2"]), tmp_path / "rl",
                resume=True)
    shutil.move(tmp_path / "sft", tmp_path / "moved")
    with pytest.raises(CheckpointError, match="which is gone: give init_checkpoint"):
        warm_start_for(load_file(ckpt / "trainer_state.pt"), None, ckpt)
    assert warm_start_for(load_file(ckpt / "trainer_state.pt"), tmp_path / "moved", ckpt) == str(tmp_path / "moved")
    # a checkpoint trained without a warm start, and one written before the record existed
    with pytest.raises(CheckpointError, match="trained without a warm start"):
        warm_start_for({"warm_start": None}, tmp_path / "other", ckpt)
    assert warm_start_for({}, tmp_path / "other", ckpt) == str(tmp_path / "other")
    assert warm_start_for({}, None, ckpt) is None
