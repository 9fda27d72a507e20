"""Advantage estimators: GRPO group advantages, GiGPO step-level advantages, RLSD reweighting.

Headings cited are those of ``docs/algorithm.md``. Everything here works on one value per *step
sample* (one agent turn) and is a constant for the loss: outputs carry no gradient.

Identifiers (``group_ids``, ``traj_ids``, anchor observations) may be a 1-D integer tensor or any
sequence of hashable values (strings, ints, tuples); only equality matters.

Groups without spread, the project's documented choice (section "GRPO", marks it **(ours)**):
a group that holds a single value, or whose values are all equal, gives **zero advantage** to all
its members. The released code instead uses mean 0 / std 1 for a single value (so the raw score
becomes the advantage) and divides by ``0 + eps`` for equal values; we never do either.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from sdar._checks import check_finite, check_mask, check_number, check_same_shape, check_tensor

__all__ = [
    "discounted_returns",
    "gigpo_advantages",
    "grpo_advantages",
    "per_token_advantages",
    "rlsd_advantages",
    "rlsd_mix",
]

Ids = Tensor | Sequence[object]


def _as_scores(where: str, name: str, scores: Tensor | Sequence[float]) -> Tensor:
    """``scores`` as a 1-D float64 tensor (on the input's device), checked finite and non-empty."""
    if isinstance(scores, Tensor):
        if scores.dim() != 1:
            raise ValueError(
                f"{where}: {name} must be 1-D (one value per step sample), got shape "
                f"{tuple(scores.shape)}"
            )
        values = scores.detach().to(torch.float64)
    else:
        try:
            values = torch.tensor([float(s) for s in scores], dtype=torch.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{where}: {name} must be a 1-D tensor or a list of numbers") from err
    if values.numel() == 0:
        raise ValueError(f"{where}: {name} is empty; there are no step samples to score")
    check_finite(where, name, values)
    return values


def _as_index(where: str, name: str, ids: Ids, n: int, device: torch.device) -> Tensor:
    """Map arbitrary ids to dense integer codes ``0..k-1`` (a long tensor of length ``n``)."""
    if isinstance(ids, Tensor):
        if ids.dim() != 1 or ids.is_floating_point() or ids.is_complex():
            raise ValueError(
                f"{where}: {name} must be a 1-D integer tensor or a sequence of hashable ids, "
                f"got a {ids.dtype} tensor of shape {tuple(ids.shape)}"
            )
        codes = torch.unique(ids, return_inverse=True)[1]
    else:
        if isinstance(ids, (str, bytes)):
            raise TypeError(f"{where}: {name} must be a sequence of ids, not a single string")
        table: dict[object, int] = {}
        try:
            codes = torch.tensor([table.setdefault(i, len(table)) for i in ids], dtype=torch.long)
        except TypeError as err:
            raise TypeError(f"{where}: every entry of {name} must be hashable ({err})") from err
    if codes.numel() != n:
        raise ValueError(
            f"{where}: {name} has {codes.numel()} entries but there are {n} step samples; "
            f"give one id per step sample"
        )
    return codes.to(device)


def _pair_index(first: Tensor, second: Tensor) -> Tensor:
    """Dense codes for the pairs ``(first[i], second[i])``."""
    pairs = torch.stack([first, second], dim=1)
    return torch.unique(pairs, dim=0, return_inverse=True)[1]


def _group_normalize(
    values: Tensor, value_group: Tensor, sample_values: Tensor, sample_group: Tensor,
    n_groups: int, norm_by_std: bool, eps: float,
) -> Tensor:
    """``(sample - mean_g) / (std_g + eps)`` with group statistics taken over ``values``.

    ``std`` is Bessel-corrected as ``torch.std``. Groups with one value or all-equal values give 0.
    """
    count = torch.zeros(n_groups, dtype=values.dtype, device=values.device)
    count.index_add_(0, value_group, torch.ones_like(values))
    total = torch.zeros_like(count).index_add_(0, value_group, values)
    mean = total / count.clamp(min=1)
    squared = torch.zeros_like(count).index_add_(0, value_group, (values - mean[value_group]) ** 2)
    std = torch.sqrt(squared / (count - 1).clamp(min=1))
    high = torch.full_like(count, -torch.inf).scatter_reduce(0, value_group, values, "amax")
    low = torch.full_like(count, torch.inf).scatter_reduce(0, value_group, values, "amin")
    no_spread = (count < 2) | (high == low)
    centred = sample_values - mean[sample_group]
    advantages = centred / (std[sample_group] + eps) if norm_by_std else centred
    return torch.where(no_spread[sample_group], torch.zeros_like(advantages), advantages)


def grpo_advantages(
    scores: Tensor | Sequence[float],
    group_ids: Ids,
    traj_ids: Ids,
    cross_steps: bool = True,
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """GRPO advantage of every step sample from its group (section "GRPO").

    ``A_i = (S_i - mean_g) / (std_g + eps)`` (or ``S_i - mean_g`` when ``norm_by_std=False``),
    where ``g`` is the group of sample ``i`` (the rollouts of one task from the same initial state)
    and ``std`` is Bessel-corrected (``n - 1``). The statistics are taken over

    * ``cross_steps=True`` (default): every step sample of the group;
    * ``cross_steps=False``: one value per trajectory, the score of its first step sample in the
      order given (as the released code does).

    A group whose statistic set holds a single value, or only equal values, gives every member an
    advantage of exactly 0 (documented project choice, see the module docstring).

    Args:
        scores: ``[n]`` score of each step sample (``R(episode) - penalty * invalid``).
        group_ids: ``[n]`` group of each step sample (e.g. task index or env seed).
        traj_ids: ``[n]`` trajectory (episode) of each step sample; only used with
            ``cross_steps=False``, but always checked for length.
        cross_steps: which values form the group statistics (see above).
        norm_by_std: divide by ``std + eps`` (GRPO) or only subtract the mean (Dr. GRPO style).
        eps: added to the std, > 0.

    Returns:
        ``[n]`` float32 tensor on the device of ``scores`` (CPU for lists); no gradient.
        Broadcast it onto response tokens with ``per_token_advantages``.
    """
    where = "grpo_advantages"
    check_number(where, "eps", eps, 0.0, low_open=True)
    values = _as_scores(where, "scores", scores)
    n = values.numel()
    group = _as_index(where, "group_ids", group_ids, n, values.device)
    traj = _as_index(where, "traj_ids", traj_ids, n, values.device)
    n_groups = int(group.max()) + 1
    if cross_steps:
        value_index = torch.arange(n, device=values.device)
    else:
        pair = _pair_index(group, traj)
        # First occurrence of every (group, trajectory) pair, in the given order.
        first = torch.full((int(pair.max()) + 1,), n, dtype=torch.long, device=values.device)
        first = first.scatter_reduce(0, pair, torch.arange(n, device=values.device), "amin")
        value_index = first
    advantages = _group_normalize(
        values[value_index], group[value_index], values, group, n_groups, norm_by_std, eps
    )
    return advantages.to(torch.float32)


def discounted_returns(
    step_rewards: Tensor | Sequence[float],
    traj_ids: Ids,
    step_indices: Tensor | Sequence[int] | None = None,
    gamma: float = 0.95,
) -> Tensor:
    """Discounted return ``G_t = r_t + gamma * G_{t+1}`` of every step sample (section "GiGPO").

    Args:
        step_rewards: ``[n]`` reward of each step sample's own transition.
        traj_ids: ``[n]`` trajectory of each step sample.
        step_indices: ``[n]`` position of each step inside its trajectory (any increasing
            numbers; must be distinct within a trajectory). ``None``: the order of appearance.
        gamma: discount in ``[0, 1]``.

    Returns:
        ``[n]`` float64 tensor of returns (CPU or the rewards' device), no gradient.
    """
    where = "discounted_returns"
    check_number(where, "gamma", gamma, 0.0, 1.0)
    rewards = _as_scores(where, "step_rewards", step_rewards)
    n = rewards.numel()
    traj = _as_index(where, "traj_ids", traj_ids, n, torch.device("cpu")).tolist()
    if step_indices is None:
        order = list(range(n))
    else:
        order = step_indices.tolist() if isinstance(step_indices, Tensor) else list(step_indices)
        if len(order) != n:
            raise ValueError(f"{where}: step_indices has {len(order)} entries, expected {n}")
    by_traj: dict[int, list[tuple[object, int]]] = {}
    for i, (t, position) in enumerate(zip(traj, order)):
        by_traj.setdefault(t, []).append((position, i))
    reward_list = rewards.tolist()
    returns = [0.0] * n
    for steps in by_traj.values():
        steps.sort()
        positions = [p for p, _ in steps]
        if len(set(positions)) != len(positions):
            raise ValueError(
                f"{where}: a trajectory has repeated step_indices {positions}; each step of a "
                f"trajectory needs its own index"
            )
        running = 0.0
        for _, i in reversed(steps):
            running = reward_list[i] + gamma * running
            returns[i] = running
    return torch.tensor(returns, dtype=torch.float64, device=rewards.device)


def gigpo_advantages(
    step_rewards: Tensor | Sequence[float],
    group_ids: Ids,
    traj_ids: Ids,
    anchor_observations: Sequence[object],
    step_indices: Tensor | Sequence[int] | None = None,
    gamma: float = 0.95,
    omega: float = 1.0,
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """GiGPO advantage ``A = A_episode + omega * A_step`` (arXiv 2505.10978; section "GiGPO").

    * ``A_episode``: GRPO over trajectories, each counted once by its undiscounted return
      (the sum of its step rewards), given to every step sample of the trajectory.
    * ``A_step``: inside each group, the step samples whose raw anchor observation is identical form
      a *step group*; their discounted returns (``discounted_returns`` with ``gamma``) are
      normalised within it the same way. A step group of one (or of equal returns) gives 0.

    Args:
        step_rewards: ``[n]`` reward of each step sample's transition (environment reward plus any
            invalid-action penalty of that step).
        group_ids: ``[n]`` group (task) of each step sample.
        traj_ids: ``[n]`` trajectory of each step sample.
        anchor_observations: ``[n]`` the raw environment observation each step acted on; compared
            for exact equality (pass strings, not rendered prompts with history).
        step_indices: position inside the trajectory (default: order of appearance).
        gamma: discount of the step-level returns, in ``[0, 1]``.
        omega: weight of the step-level advantage, >= 0.
        norm_by_std, eps: as in ``grpo_advantages``.

    Returns:
        ``[n]`` float32 tensor, no gradient.
    """
    where = "gigpo_advantages"
    check_number(where, "omega", omega, 0.0)
    check_number(where, "eps", eps, 0.0, low_open=True)
    rewards = _as_scores(where, "step_rewards", step_rewards)
    n = rewards.numel()
    device = rewards.device
    group = _as_index(where, "group_ids", group_ids, n, device)
    traj = _as_index(where, "traj_ids", traj_ids, n, device)
    anchor = _as_index(where, "anchor_observations", anchor_observations, n, device)
    pair = _pair_index(group, traj)
    episode_return = torch.zeros(int(pair.max()) + 1, dtype=torch.float64, device=device)
    episode_return.index_add_(0, pair, rewards)
    episode_advantage = grpo_advantages(
        episode_return[pair], group, pair, cross_steps=False, norm_by_std=norm_by_std, eps=eps
    ).to(torch.float64)
    returns = discounted_returns(rewards, pair.cpu(), step_indices, gamma).to(device)
    step_group = _pair_index(group, anchor)
    step_advantage = _group_normalize(
        returns, step_group, returns, step_group, int(step_group.max()) + 1, norm_by_std, eps
    )
    return (episode_advantage + omega * step_advantage).to(torch.float32)


def rlsd_mix(iteration: int, decay_iterations: int = 100) -> float:
    """RLSD's mixing weight ``m = 0.5 * (1 - it / decay)`` for ``it < decay``, else 0 (section
    "RLSD reweighting")."""
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise ValueError(f"rlsd_mix: iteration must be an int >= 0, got {iteration!r}")
    if isinstance(decay_iterations, bool) or not isinstance(decay_iterations, int) \
            or decay_iterations < 1:
        raise ValueError(f"rlsd_mix: decay_iterations must be an int >= 1, got {decay_iterations!r}")
    if iteration >= decay_iterations:
        return 0.0
    return 0.5 * (1.0 - iteration / decay_iterations)


def rlsd_advantages(
    advantages: Tensor,
    teacher_log_probs: Tensor,
    old_log_probs: Tensor,
    response_mask: Tensor,
    iteration: int,
    clip: float = 0.2,
    decay_iterations: int = 100,
) -> Tensor:
    """RLSD's teacher-reweighted per-token advantages (section "RLSD reweighting").

    ::

        w   = clip(exp(sign(A) * (l_T - l_old)), 1 - clip, 1 + clip)
        m   = rlsd_mix(iteration, decay_iterations)
        A_k = A * ((1 - m) + m * w)

    Tokens the teacher prefers get a larger share of a positive advantage and a smaller share of a
    negative one. All inputs are ``[batch, response_len]`` and detached; the result is 0 outside
    ``response_mask`` and carries no gradient.
    """
    where = "rlsd_advantages"
    check_number(where, "clip", clip, 0.0, 1.0, high_open=True)
    mix = rlsd_mix(iteration, decay_iterations)
    check_tensor(where, "advantages", advantages, ndim=2)
    check_same_shape(
        where, "advantages", advantages,
        teacher_log_probs=teacher_log_probs, old_log_probs=old_log_probs,
    )
    mask = check_mask(where, response_mask, advantages.shape, shape_of="advantages")
    zero = torch.zeros((), dtype=advantages.dtype, device=advantages.device)
    cleaned = {}
    for name, value in (
        ("advantages", advantages), ("teacher_log_probs", teacher_log_probs),
        ("old_log_probs", old_log_probs),
    ):
        check_finite(where, name, value, mask)
        cleaned[name] = torch.where(mask, value.detach(), zero)
    adv = cleaned["advantages"]
    gap = cleaned["teacher_log_probs"] - cleaned["old_log_probs"]
    weight = torch.clamp(torch.exp(torch.clamp(torch.sign(adv) * gap, max=20.0)),
                         1.0 - clip, 1.0 + clip)
    return torch.where(mask, adv * ((1.0 - mix) + mix * weight), zero)


def per_token_advantages(advantages: Tensor, response_mask: Tensor) -> Tensor:
    """Broadcast ``[n]`` step-sample advantages onto their response tokens: ``[n, response_len]``.

    The result is ``advantages[i]`` on every token where ``response_mask[i]`` is set and 0
    elsewhere, in float32 and without gradient; this is the ``advantages`` input of the losses.
    """
    where = "per_token_advantages"
    check_tensor(where, "advantages", advantages, ndim=1)
    if not isinstance(response_mask, Tensor) or response_mask.dim() != 2 \
            or response_mask.shape[0] != advantages.shape[0]:
        shape = tuple(response_mask.shape) if isinstance(response_mask, Tensor) else None
        raise ValueError(
            f"{where}: response_mask must be [n, response_len] with n = {advantages.shape[0]} "
            f"(one row per step sample), got shape {shape}"
        )
    mask = check_mask(where, response_mask, response_mask.shape, shape_of="response_mask")
    check_finite(where, "advantages", advantages)
    values = advantages.detach().to(torch.float32)[:, None].expand(mask.shape)
    return torch.where(mask, values, torch.zeros((), dtype=torch.float32, device=values.device))
