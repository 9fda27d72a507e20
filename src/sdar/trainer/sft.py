"""Supervised warm start on demonstrations (``sdar sft``), applied identically before any RL method.

A small model that never succeeds gets no GRPO signal at all (every group has zero variance). A
short supervised phase on expert turns fixes that. Demonstrations are the JSONL lines that
``sdar env play --policy expert --write-demos FILE`` writes: ``{"prompt": <user message>,
"response": <model-format response>, ...}``. The loss is the token-mean negative log-likelihood of
the response tokens (the end-of-turn token included, so the model learns to stop), the prompt
rendered by the same chat template as in RL. Its settings (epochs, learning rate, batch size, how
many demonstrations) are the config's ``sft`` section (``SFTConfig``); weight decay, gradient
clipping and the micro-batch come from ``optim``. The result is an ordinary checkpoint; start RL
from it with ``init_checkpoint=RUN_DIR``; the KL reference is then the warm-started model (for
LoRA the warm-start adapter is merged into the base weights and RL trains a fresh adapter on top).
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sdar.errors import UserError
from sdar.models.loading import autocast_context, cast_frozen_weights, load_policy
from sdar.models.scoring import score_responses
from sdar.reporting import RunLogger
from sdar.trainer.checkpoint import save_checkpoint
from sdar.trainer.config import TrainConfig, save_config
from sdar.trainer.run_dir import RunLock, check_new_run

logger = logging.getLogger(__name__)


class DemonstrationError(UserError, ValueError):
    """A demonstration file is malformed; the message names the file and the 1-based line."""


def read_demonstrations(path: str | Path, only_won: bool = True) -> list[dict]:
    """Demonstration lines with ``prompt`` and ``response``; by default only those of won episodes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"demonstration file not found: {path} (write one with "
                                f"`sdar env play --env ENV --policy expert --episodes N --write-demos {path}`)")
    demos = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DemonstrationError(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(row, dict) or "prompt" not in row or "response" not in row:
            raise DemonstrationError(f"{path}:{number}: a demonstration needs 'prompt' and 'response' keys")
        if only_won and row.get("won") is False:
            continue
        demos.append(row)
    if not demos:
        raise DemonstrationError(f"{path}: no usable demonstrations (only_won={only_won})")
    return demos


def encode_demonstration(tokenizer, prompt: str, response: str,
                         chat_template_kwargs: dict | None = None) -> tuple[list[int], list[int]]:
    """Prompt ids (chat-rendered user message) and response ids (text + end-of-turn token).
    ``chat_template_kwargs`` (``model.chat_template_kwargs``) reach the template as in RL."""
    kwargs = dict(chat_template_kwargs or {})
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=False, **kwargs)
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    full = tokenizer.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                                         tokenize=False, **kwargs)
    # the end-of-turn token is whatever the template puts right after the assistant's text
    tail = full[len(text) + len(response):] if full.startswith(text + response) else ""
    end = tokenizer(tail, add_special_tokens=False)["input_ids"][:1] if tail.strip() else []
    if not end and tokenizer.eos_token_id is not None:
        end = [tokenizer.eos_token_id]
    return prompt_ids, response_ids + end


def run_sft(config: TrainConfig, demos_path: str | Path, run_dir: str | Path) -> Path:
    """Fine-tune ``config.model`` on the demonstrations with the settings of ``config.sft``;
    returns the checkpoint folder.

    ``run_dir`` must not hold an earlier run (logs or a checkpoint); that and the demonstrations
    are checked before the model loads and before anything is written (the settings were
    checked when the config was loaded). From its first write until it returns, the process holds
    ``run_dir``'s lock (:class:`~sdar.trainer.run_dir.RunLock`): a second ``sdar sft`` or
    ``sdar train`` there raises :class:`~sdar.trainer.run_dir.RunDirError` naming this process."""
    run_dir = Path(run_dir)
    check_new_run(run_dir, resumable=False)
    demos = read_demonstrations(demos_path)
    lock = RunLock(run_dir)  # creates the folder
    try:
        check_new_run(run_dir, resumable=False)  # again under the lock: another process may have written here
        return _fine_tune(config, demos, demos_path, run_dir)
    finally:
        lock.release()


def _fine_tune(config: TrainConfig, demos: list[dict], demos_path: str | Path, run_dir: Path) -> Path:
    """The body of :func:`run_sft`, once ``run_dir`` is checked and locked."""
    epochs, batch_size = config.sft.epochs, config.sft.batch_size
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    model, tokenizer = load_policy(config.model)
    cast_frozen_weights(model, config.model)  # model.autocast: the frozen (LoRA base) weights once
    if config.sft.max_demos is not None:
        demos = demos[: config.sft.max_demos]
    encoded = [encode_demonstration(tokenizer, d["prompt"], d["response"], config.model.chat_template_kwargs)
               for d in demos]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.sft.lr, weight_decay=config.optim.weight_decay)
    save_config(config, run_dir / "config.yaml")
    log = RunLogger(run_dir, tensorboard=config.tensorboard)
    micro = config.optim.micro_batch_size
    model.train()
    step = 0
    for epoch in range(1, epochs + 1):
        order = list(range(len(encoded)))
        rng.shuffle(order)
        bar = tqdm(range(0, len(order), batch_size), desc=f"sft epoch {epoch}/{epochs}", leave=False)
        for start in bar:
            batch = [encoded[i] for i in order[start : start + batch_size]]
            n_tokens = sum(len(r) for _, r in batch)
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for m in range(0, len(batch), micro):
                rows = batch[m : m + micro]
                with autocast_context(config.model, next(model.parameters()).device):
                    scored = score_responses(model, [p for p, _ in rows], [r for _, r in rows],
                                             pad_id=tokenizer.pad_token_id)
                mask = scored.response_mask.to(scored.log_probs.device)
                nll = -(scored.log_probs * mask).sum() / n_tokens
                nll.backward()
                total += float(nll.detach())
            norm = torch.nn.utils.clip_grad_norm_(params, config.optim.grad_clip)
            optimizer.step()
            step += 1
            bar.set_postfix(nll=f"{total:.3f}")
            log.log_metrics(step, {"sft/nll": total, "sft/grad_norm": float(norm), "sft/epoch": float(epoch)})
    log.close()
    path = save_checkpoint(run_dir, 0, model, optimizer, {"rng": None, "sft": True, "demos": str(demos_path)},
                           keep=1)
    logger.info("warm start written to %s; start RL with init_checkpoint=%s", path, run_dir)
    return path
