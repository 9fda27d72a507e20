"""What every side-by-side benchmark records besides its numbers: the machine and the result file;
the peak-memory reading that the memory benchmarks share; and how the grids run their runs
(:func:`run_logged`, :func:`run_lanes`) and stop them cleanly on SIGINT / SIGTERM."""

from __future__ import annotations

import json
import os
import platform
import resource
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; elsewhere what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """Versions, the CPU (model, the instruction set torch uses, whether it computes bfloat16
    natively: on other CPUs ``model.autocast: bf16`` is emulated and far slower), cores, torch
    threads, the 1-minute load average (shared machines are noisy) and the GPU, where there is one."""
    from sdar.models.loading import native_bf16

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": native_bf16("cpu"),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": os.getloadavg()[0],
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def lane_threads(default: int = 1) -> int:
    """Set the threads of one grid lane and return them.

    ``OMP_NUM_THREADS`` (``default`` where unset) goes into the environment, so the runs a grid
    starts inherit it, and into this process's torch, so its machine records show the lanes'
    threads. One thread per run is the default: two torch processes with two threads each on two
    cores slow each other several-fold. Set ``OMP_NUM_THREADS`` yourself on a machine with more cores.
    """
    os.environ.setdefault("OMP_NUM_THREADS", str(default))
    threads = int(os.environ["OMP_NUM_THREADS"])
    torch.set_num_threads(threads)
    return threads


class Stopped(SystemExit):
    """A grid stopped by a stop signal (:func:`stop_on_signals`): raised where a run it was waiting
    for exited after the signal, where a run was about to start, by :func:`run_lanes` once its
    lanes are done, and by the signal itself when the grid was running no run (its own work then
    stops at once); exits with status 128 + the signal's number, as a process killed by it would."""


_RECEIVED: list[int] = []  # every stop signal this process received, in order
_CHILDREN: dict[subprocess.Popen, int] = {}  # the runs run_logged waits for -> how many of _RECEIVED each got
_LAUNCHING: list[int] = []  # one entry per run_logged call between its last check and its run's registration
# re-entrant: the signal handler runs on the main thread, which may hold it (a run_logged call there)
_CHILDREN_LOCK = threading.RLock()
# SIGHUP (the terminal closed) stops a grid as SIGTERM does, unless it is ignored (nohup)
_HANGUP_AS = {signal.SIGHUP: signal.SIGTERM}


def stop_on_signals() -> None:
    """From now on SIGINT (Ctrl-C), SIGTERM and SIGHUP (unless ignored, as under ``nohup``) stop this
    grid cleanly instead of killing it at once: each signal is passed on once to every run it is
    waiting for (SIGHUP as SIGTERM; ``sdar train`` then stops after its current step and saves a
    checkpoint, and a second signal aborts it, as a second Ctrl-C does), no run starts after the
    first (:func:`run_lanes`), and when no run is running the grid stops at once (:class:`Stopped`);
    rerunning the same command continues. Its runs live in their own sessions (:func:`run_logged`),
    so a terminal's Ctrl-C or a signal to the grid's process group reaches each of them once,
    through the grid. Call from the main thread; calling again changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is _on_stop_signal:
        return
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signum == signal.SIGHUP and signal.getsignal(signum) == signal.SIG_IGN:
            continue
        signal.signal(signum, _on_stop_signal)


def _as_stop(signum: int) -> int:
    """The signal a run is sent, and the grid exits by, for a stop signal the grid received."""
    return _HANGUP_AS.get(signum, signum)


def _catch_up(child: subprocess.Popen) -> None:
    """Send ``child`` the stop signals it has not been sent yet (call with the lock held)."""
    for signum in _RECEIVED[_CHILDREN[child]:]:
        if child.poll() is None:
            child.send_signal(_as_stop(signum))
    _CHILDREN[child] = len(_RECEIVED)


def _on_stop_signal(signum, frame) -> None:
    with _CHILDREN_LOCK:
        _RECEIVED.append(signum)
        alive = [child for child in _CHILDREN if child.poll() is None]
        for child in _CHILDREN:
            _catch_up(child)
        launching = bool(_LAUNCHING)
    name = signal.Signals(signum).name
    if not alive and not launching:  # the grid's own work (demonstrations, tables): nothing to wait for
        # os.write: print() may be in use on this thread at this very moment
        os.write(2, f"{name}: stopped; rerun the same command to continue\n".encode())
        raise stopped_exit()
    if len(_RECEIVED) == 1:
        os.write(2, f"{name}: {len(alive)} running run(s) stop after their current step and save a checkpoint, no "
                    f"new run starts (a second signal aborts them); rerun the same command to continue\n".encode())
    else:
        os.write(2, f"{name} again: the running runs abort without a checkpoint for their current iteration\n".encode())


def stopping() -> bool:
    """Whether this grid received a stop signal (:func:`stop_on_signals`)."""
    return bool(_RECEIVED)


def stopped_exit() -> Stopped:
    """The :class:`Stopped` exception for the first signal that stopped this grid."""
    return Stopped(128 + _as_stop(_RECEIVED[0]))


def run_lanes(fn: Callable, items: list, jobs: int) -> list:
    """``[fn(item) for item in items]`` in ``jobs`` lanes (threads, each waiting for the run that
    ``fn`` starts with :func:`run_logged`), in order, stopping cleanly on a stop signal
    (:func:`stop_on_signals`): an item whose lane frees up after the signal does not start (its
    result is None), and once the running ones have saved their checkpoints :class:`Stopped` ends
    the grid before anything else (tables included) happens."""
    stop_on_signals()

    def lane(item):
        if stopping():
            return None
        try:
            return fn(item)
        except Stopped:
            return None

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(lane, items))
    if stopping():
        raise stopped_exit()
    return results


def run_logged(cmd: list[str], log_path: Path, cwd: Path, error: type[BaseException] = RuntimeError,
               echo: bool = False) -> None:
    """Run ``cmd`` in ``cwd`` with its output appended to ``log_path`` (after a ``$ cmd`` line;
    ``echo`` also prints that line). When it fails, raise ``error`` (``SystemExit`` ends a script,
    ``RuntimeError`` lets a grid go on with its other runs) naming the command and the log's end;
    after a stop signal (:func:`stop_on_signals`, installed here from the main thread) start
    nothing, and when the command exits after one, raise :class:`Stopped` instead. The command runs
    in its own session, so signals reach it only through this process, once each (a signal that
    arrives while it starts reaches it as soon as it is registered); a grid killed with SIGKILL
    leaves it running to its end (``sdar train`` refuses a second process in the same run folder,
    other commands do not)."""
    stop_on_signals()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    line = "$ " + " ".join(cmd)
    if echo:
        print(line, flush=True)
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"\n{line}\n")
        log.flush()
        with _CHILDREN_LOCK:
            _LAUNCHING.append(1)
            try:
                if stopping():
                    raise stopped_exit()
                child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
                _CHILDREN[child] = 0
                _catch_up(child)  # a signal whose handler ran while this call held the lock
            finally:
                _LAUNCHING.pop()
        try:
            returncode = child.wait()
        finally:
            with _CHILDREN_LOCK:
                _CHILDREN.pop(child, None)
    if returncode != 0 and stopping():
        raise stopped_exit()
    if returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise error(f"command failed ({returncode}): {' '.join(cmd)}\n--- {log_path} (end) ---\n{tail}")


def code_commit(root: Path | None = None) -> str:
    """The commit of the checkout at ``root`` (default: this repository) as a short hash, with
    ``+uncommitted`` when source files (``src/``, the benchmark scripts, ``configs/``) differ from
    it or are new. Outside git (a copy of the tree on another machine, say a lent GPU) it is
    ``$SDAR_COMMIT`` with ``+copied`` when that names the commit the copy was made from, else
    ``unknown``. Result files and docs do not count."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=False).stdout.strip()
    except FileNotFoundError:  # no git on this machine
        head = ""
    if not head:
        named = os.environ.get("SDAR_COMMIT", "").strip()
        return f"{named}+copied" if named else "unknown"
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=normal", "--", "src", "benchmarks/*.py",
                              "configs"], cwd=root, capture_output=True, text=True, check=False).stdout.strip()
    return head + ("+uncommitted" if changed else "")


def write_result(result: dict, path: Path) -> Path:
    """Write ``result`` as indented JSON to ``path`` (folders created), with the code's
    :func:`code_commit` under ``commit`` unless the result names one itself."""
    result = {**result, "commit": result.get("commit") or code_commit()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return path


def write_summary(summary: dict, out: Path, markdown: Callable[[dict], str]) -> dict:
    """``summary.json`` (:func:`write_result`: with the commit) and ``summary.md``, the table
    ``markdown`` draws from the JSON as written, into ``out``; prints the table and returns the
    summary as written."""
    write_result(summary, out / "summary.json")
    written = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    table = markdown(written)
    (out / "summary.md").write_text(table, encoding="utf-8")
    print(table)
    return written


def _read_status_kib(key: str) -> int | None:
    """A ``/proc/self/status`` value in KiB (``VmRSS``, ``VmHWM``), or None where there is none."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_cpu_peak() -> str:
    """Reset the resident-set high-water mark if the kernel allows it; return the method in use.

    ``VmHWM`` (reset through ``/proc/self/clear_refs``) where it works, else ``ru_maxrss``, which
    only grows over the process's life: measure one thing per process then.
    """
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return "VmHWM"
    except OSError:
        return "ru_maxrss"


def _cpu_peak_kib(method: str) -> int:
    """The resident-set high-water mark in KiB, read by ``method`` (from ``_reset_cpu_peak``)."""
    if method == "VmHWM":
        value = _read_status_kib("VmHWM")
        if value is not None:
            return value
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """Peak memory of the block above what was in use when it began.

    Yields a dict that, once the block has finished, holds ``peak_extra_bytes`` and
    ``peak_method``: on a GPU ``torch.cuda.max_memory_allocated`` minus the memory allocated
    before (synchronised on both sides); on CPU the resident-set high-water mark minus the
    resident set before (see ``_reset_cpu_peak`` for when that mark cannot be reset).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        method = "cuda.max_memory_allocated"
    else:
        before = _read_status_kib("VmRSS") * 1024
        method = _reset_cpu_peak()
    reading: dict = {}
    yield reading
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = _cpu_peak_kib(method) * 1024
    reading.update(peak_extra_bytes=max(0, peak - before), peak_method=method)


def check_not_in_use(run_dir: Path, error: type[BaseException] = RuntimeError) -> None:
    """Raise ``error`` (one line, naming the holder's pid; ``RuntimeError`` lets a grid go on with
    its other runs, ``SystemExit`` ends a script) when a live process holds ``run_dir``'s lock
    (``sdar.trainer.run_dir.lock_holder``). This only keeps a script from appending to, or deleting, the folder of
    a run still going there (an earlier grid's, or one left by a grid killed with SIGKILL); the
    command it starts takes the lock itself."""
    from sdar.trainer.run_dir import lock_holder

    holder = lock_holder(run_dir)
    if holder is not None:
        raise error(f"{run_dir} is in use: another sdar process (pid {holder}) is training there; let it "
                    f"finish or stop it (SIGINT or SIGTERM writes a checkpoint), then run this again")
