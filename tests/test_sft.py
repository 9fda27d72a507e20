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
