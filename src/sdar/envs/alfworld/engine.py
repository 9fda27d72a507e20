"""The real ALFWorld engine (TextWorld ``PddlEnv``) run in worker processes that may be restarted.

One *engine* is a loaded ALFWorld game: TextWorld's PDDL environment wrapped exactly as ALFWorld
wraps it (name demangler, game-file info, and the **planner** expert, passed by keyword because
ALFWorld 0.4.2's own setup passes it positionally and silently falls back to the hand-coded
expert). Engines live in worker processes so that an engine that crashes (even in the compiled
planner) or hangs cannot take the training run with it:

* every request to a worker has a timeout; a worker that dies or does not answer in time is
  killed and replaced, with a log line naming the game, and the episode that was being served is
  reported as failed (``None``);
* the other episodes of that worker are rebuilt in the new worker by replaying their commands
  (the engine is deterministic), so they continue unaffected;
* loaded games are kept per worker and reused by later resets of the same game (a reset of a
  loaded engine costs one PDDL state rebuild plus a plan, not a file parse).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# Request kinds: ("reset", slot, game_path), ("step", slot, command),
# ("replay", slot, game_path, commands), ("plan", slot), ("release", slot), ("stop",).


@dataclass
class EngineState:
    """What the agent-facing environment needs from one engine state."""

    feedback: str
    admissible_commands: list[str]
    won: bool
    expert_plan: list[str] | None  # None: the planner was not asked for this state


def build_engine(game_path: str):
    """Load one game in this process with ALFWorld's wrappers and the planner expert.

    The planner runs only where ``set_planning(engine, True)`` asked for it: replanning after
    every step can take seconds in some states of whole-floorplan games, and only scripted expert
    play needs the plan.
    """
    import textworld
    from alfworld.agents.environment.alfred_tw_env import (
        AlfredDemangler,
        AlfredExpert,
        AlfredExpertType,
        AlfredInfos,
    )
    from textworld.envs import PddlEnv

    class PlannerExpert(AlfredExpert):
        """ALFWorld's expert wrapper, planner type, tolerating steps taken without a plan."""

        def _gather_infos(self):
            self.state["extra.expert_plan"] = self.state.get("policy_commands")

    infos = textworld.EnvInfos(
        won=True, admissible_commands=True, extras=["gamefile", "expert_plan"]
    )
    env = PddlEnv(infos)
    env = AlfredDemangler(env, shuffle=False)
    env = AlfredInfos(env)
    env = PlannerExpert(env, expert_type=AlfredExpertType.PLANNER)
    env.load(game_path)
    set_planning(env, False)
    return env


def set_planning(engine, on: bool) -> None:
    """Whether the next reset/step of ``engine`` computes the planner expert's plan."""
    engine.unwrapped.request_infos.policy_commands = on


def expert_plan(engine) -> list[str]:
    """The planner expert's plan from the engine's current state (runs the planner now)."""
    inner = engine.unwrapped
    return list(inner._pddl_state.replan(inner._entity_infos))


def summarize(state) -> EngineState:
    return EngineState(
        feedback=str(state.feedback),
        admissible_commands=list(state["admissible_commands"]),
        won=bool(state["won"]),
        expert_plan=None
        if state.get("extra.expert_plan") is None
        else list(state["extra.expert_plan"]),
    )


def reuse_translations(max_entries: int = 128) -> None:
    """Make this process translate each PDDL problem to fast-downward's SAS form only once.

    TextWorld re-translates the game's problem on every reset, which is most of a reset's cost in
    a whole floorplan. The translation is a pure function of (domain, problem, options) and
    TextWorld only reads its result, so worker processes memoize it (LRU, ``max_entries``).
    """
    import fast_downward

    if getattr(fast_downward.pddl2sas, "sdar_memoized", False):
        return
    translate = fast_downward.pddl2sas
    cache: OrderedDict[tuple, tuple] = OrderedDict()

    def pddl2sas(domain, problem, verbose=False, optimize=False):
        key = (domain, problem, bool(optimize))
        if key in cache:
            cache.move_to_end(key)
        else:
            cache[key] = translate(domain, problem, verbose=verbose, optimize=optimize)
            if len(cache) > max_entries:
                cache.popitem(last=False)
        return cache[key]

    pddl2sas.sdar_memoized = True
    fast_downward.pddl2sas = pddl2sas


def _worker_main(conn, max_cached: int) -> None:
    """Serve requests until told to stop. Loaded engines are reused per game path (LRU)."""
    reuse_translations()
    idle: OrderedDict[str, list[Any]] = OrderedDict()  # game path -> loaded engines not in use
    active: dict[int, tuple[str, Any]] = {}

    def release(slot: int) -> None:
        if slot in active:
            path, engine = active.pop(slot)
            idle.setdefault(path, []).append(engine)
            idle.move_to_end(path)
            while sum(len(v) for v in idle.values()) > max_cached:
                oldest = next(iter(idle))
                idle[oldest].pop()
                if not idle[oldest]:
                    del idle[oldest]

    def acquire(slot: int, path: str):
        release(slot)
        pool = idle.get(path)
        engine = pool.pop() if pool else build_engine(path)
        if pool is not None and not pool:
            del idle[path]
        active[slot] = (path, engine)
        return engine

    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        kind = request[0]
        if kind == "stop":
            return
        try:
            if kind == "reset":
                _, slot, path = request
                reply = summarize(acquire(slot, path).reset())
            elif kind == "step":
                _, slot, command = request
                state, _, _ = active[slot][1].step(command)
                reply = summarize(state)
            elif kind == "replay":
                _, slot, path, commands = request
                engine = acquire(slot, path)
                state = engine.reset()
                for command in commands:
                    state, _, _ = engine.step(command)
                reply = summarize(state)
            elif kind == "plan":
                reply = expert_plan(active[request[1]][1])
            elif kind == "release":
                release(request[1])
                reply = None
            else:
                raise ValueError(f"unknown engine request {kind!r}")
            conn.send(("ok", reply))
        except Exception:  # noqa: BLE001 - any engine error is reported; its episode is dropped
            if len(request) > 1:
                active.pop(request[1], None)
            conn.send(("error", traceback.format_exc(limit=6)))


MAX_IN_FLIGHT = 256  # requests queued per worker before replies are read (~100 bytes each)


class EngineFailure(RuntimeError):
    """An engine process crashed or did not answer in time (the process must be replaced)."""


class EngineRaised(EngineFailure):
    """The engine raised an exception; its process is healthy and keeps serving other episodes."""


@dataclass
class _Worker:
    process: Any
    conn: Any
    restarts: int = 0


@dataclass
class _Slot:
    path: str | None = None
    commands: list[str] = field(default_factory=list)


class EnginePool:
    """Engines for numbered episode slots, spread over ``num_workers`` processes.

    Args:
        num_workers: worker processes; slot ``i`` lives in worker ``i % num_workers``.
        reset_timeout_s: seconds a reset (which may load a game file) may take before the engine
            counts as hung.
        step_timeout_s: the same for one step (the engine steps in about 20 ms).
        max_cached_engines: loaded-but-idle engines each worker keeps for reuse.
    """

    def __init__(
        self,
        num_workers: int = 1,
        reset_timeout_s: float = 120.0,
        step_timeout_s: float = 30.0,
        max_cached_engines: int = 64,
    ):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.num_workers = num_workers
        self.reset_timeout_s = reset_timeout_s
        self.step_timeout_s = step_timeout_s
        self.max_cached_engines = max_cached_engines
        self._ctx = mp.get_context("spawn")  # never fork a process that may hold torch threads
        self._workers: list[_Worker | None] = [None] * num_workers
        self._slots: dict[int, _Slot] = {}
        self.lost_slots: set[int] = set()
        self.failures = 0
        self._closed = False

    # ----- worker lifecycle ----------------------------------------------------------------
    def _start(self, w: int) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_worker_main,
            args=(child, self.max_cached_engines),
            daemon=True,
            name=f"sdar-alfworld-engine-{w}",
        )
        process.start()
        child.close()
        old = self._workers[w]
        worker = _Worker(process, parent, restarts=old.restarts + 1 if old else 0)
        self._workers[w] = worker
        return worker

    def _worker(self, w: int) -> _Worker:
        worker = self._workers[w]
        if worker is None:
            return self._start(w)
        if not worker.process.is_alive():  # died while idle: rebuild its episodes, lose none
            log.warning(
                "ALFWorld engine process %d exited (code %s) while idle; restarting it and "
                "replaying its episodes",
                worker.process.pid,
                worker.process.exitcode,
            )
            self._kill(w)
            self._start(w)
            self._rebuild(w, exclude=set())
        return self._workers[w]

    def _kill(self, w: int) -> None:
        worker = self._workers[w]
        if worker is None:
            return
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=5)
        worker.conn.close()

    def worker_pid(self, slot: int) -> int | None:
        """Process id of the worker serving ``slot`` (for diagnostics and tests)."""
        worker = self._workers[slot % self.num_workers]
        return worker.process.pid if worker else None

    # ----- requests ------------------------------------------------------------------------
    def _receive(self, worker: _Worker, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                ready = worker.conn.poll(max(0.0, min(remaining, 1.0)))
            except (EOFError, OSError) as err:
                raise EngineFailure(f"engine process died during {what}: {err}") from err
            if ready:
                try:
                    status, payload = worker.conn.recv()
                except (EOFError, OSError) as err:
                    raise EngineFailure(f"engine process died during {what}: {err}") from err
                if status == "error":
                    raise EngineRaised(f"engine raised during {what}:\n{payload}")
                return payload
            if not worker.process.is_alive():
                raise EngineFailure(
                    f"engine process exited (code {worker.process.exitcode}) during {what}"
                )
            if remaining <= 0:
                raise EngineFailure(f"engine did not answer within {timeout:.0f} s during {what}")

    def run(self, requests: dict[int, tuple]) -> dict[int, EngineState | None]:
        """Serve one request per slot (``("reset", path)`` or ``("step", command)``).

        Returns the new engine state of each slot, or ``None`` for a slot whose engine failed;
        that slot's episode is over (the caller marks it failed). Requests to different workers
        run in parallel.
        """
        if self._closed:
            raise RuntimeError("the ALFWorld engine pool is closed")
        if len(requests) > MAX_IN_FLIGHT * self.num_workers:
            # Bounded batches keep every pipe below its buffer size (no send/send deadlock).
            items = sorted(requests.items())
            chunk = MAX_IN_FLIGHT * self.num_workers
            results = {}
            for start in range(0, len(items), chunk):
                results.update(self.run(dict(items[start : start + chunk])))
            return results
        results: dict[int, EngineState | None] = {}
        by_worker: dict[int, list[int]] = {}
        for slot in requests:
            by_worker.setdefault(slot % self.num_workers, []).append(slot)
        sent: dict[int, list[int]] = {}
        for w, slots in by_worker.items():
            sent[w] = self._send(w, slots, requests)
        for w, slots in sent.items():
            self._collect(w, slots, requests, results)
        return results

    def release(self, slots) -> None:
        """Return the engines of ``slots`` to their worker's cache (their episodes are over)."""
        slots = [s for s in slots if s in self._slots]
        if slots:
            self.run({s: ("release", None) for s in slots})

    def plan(self, slot: int) -> list[str] | None:
        """The planner expert's plan from the current state of ``slot`` (``None`` if its engine
        failed while planning; the episode is then over)."""
        return self.run({slot: ("plan", None)})[slot]

    def _message(self, slot: int, request: tuple) -> tuple:
        kind, arg = request
        return (kind, slot, arg)

    def _send(self, w: int, slots: list[int], requests: dict[int, tuple]) -> list[int]:
        worker = self._worker(w)
        try:
            for slot in slots:
                worker.conn.send(self._message(slot, requests[slot]))
        except (BrokenPipeError, OSError):
            pass  # the collect step notices the dead worker and recovers
        return list(slots)

    def _collect(
        self,
        w: int,
        pending: list[int],
        requests: dict[int, tuple],
        results: dict[int, EngineState | None],
    ) -> None:
        while pending:
            slot = pending[0]
            kind, arg = requests[slot]
            timeout = self.reset_timeout_s if kind == "reset" else self.step_timeout_s
            what = self._describe(slot, kind, arg)
            try:
                state = self._receive(self._workers[w], timeout, what)
            except EngineRaised as err:
                self.failures += 1
                log.error(
                    "ALFWorld engine error; the episode counts as failed and training goes on: %s",
                    err,
                )
                self._slots.pop(slot, None)
                results[slot] = None
                pending.pop(0)
                continue
            except EngineFailure as err:
                self._fail(w, slot, err)
                results[slot] = None
                pending.pop(0)
                self._rebuild(w, exclude={slot})
                self._send(w, pending, requests)
                continue
            pending.pop(0)
            record = self._slots.setdefault(slot, _Slot())
            if kind == "reset":
                record.path, record.commands = arg, []
            elif kind == "step":
                record.commands.append(arg)
            elif kind == "release":
                self._slots.pop(slot, None)
            results[slot] = state

    def _describe(self, slot: int, kind: str, arg: str) -> str:
        record = self._slots.get(slot)
        game = arg if kind == "reset" else (record.path if record else "?")
        detail = "" if kind == "reset" else f" of command {arg!r}"
        return f"{kind}{detail} (episode slot {slot}, game {game})"

    def _fail(self, w: int, slot: int, err: Exception) -> None:
        self.failures += 1
        log.error(
            "ALFWorld engine failure, restarting its worker process; the episode counts as "
            "failed and training goes on: %s",
            err,
        )
        self._kill(w)
        self._start(w)
        self._slots.pop(slot, None)

    def _rebuild(self, w: int, exclude: set[int]) -> None:
        """Replay the live episodes of a freshly restarted worker so they continue unchanged."""
        for slot in sorted(
            s for s in self._slots if s % self.num_workers == w and s not in exclude
        ):
            record = self._slots[slot]
            if record.path is None:
                continue
            worker = self._workers[w]
            timeout = self.reset_timeout_s + self.step_timeout_s * len(record.commands)
            try:
                worker.conn.send(("replay", slot, record.path, list(record.commands)))
                self._receive(worker, timeout, f"replay (episode slot {slot}, game {record.path})")
            except EngineRaised as err:
                log.error("could not rebuild ALFWorld episode slot %d: %s", slot, err)
                self._slots.pop(slot, None)
                self.lost_slots.add(slot)
            except (EngineFailure, BrokenPipeError, OSError) as err:
                # This episode cannot be rebuilt: drop it and start over for the others.
                self._fail(w, slot, EngineFailure(str(err)))
                self.lost_slots.add(slot)
                return self._rebuild(w, exclude | {slot})

    def take_lost(self) -> set[int]:
        """Slots whose episode was lost while rebuilding a worker (their engine is gone)."""
        lost, self.lost_slots = set(self.lost_slots), set()
        return lost

    def close(self) -> None:
        """Stop all workers. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for w, worker in enumerate(self._workers):
            if worker is None:
                continue
            try:
                worker.conn.send(("stop",))
                worker.process.join(timeout=5)
            except (BrokenPipeError, OSError):
                pass
            if worker.process.is_alive():
                self._kill(w)
            else:
                worker.conn.close()
        self._workers = [None] * self.num_workers
