"""Multi-worker training: who is who in TF_CONFIG, and the checks every task makes before training.

TF_CONFIG (JSON, one per process) names the cluster and this process's task:

    {"cluster": {"chief": ["host0:port"], "worker": ["host1:port", ...]},
     "task": {"type": "worker", "index": 0}}

MultiWorkerMirroredStrategy trains every task in step (each holds a full copy of the variables;
gradients are summed across tasks). Exactly one task writes the model directory: the `chief`
task, or worker 0 when the cluster has no chief (TensorFlow's rule for this strategy). The
others write nothing there; every task reads it (to resume from its last checkpoint), so it must
be storage that all of them share.

`read_task` parses and checks TF_CONFIG (one line naming what is wrong); `check_port_free`
refuses an address that another program holds; `agree` runs one small all-reduce across the
tasks before training so that they confirm they describe the same cluster, that each holds a
distinct place in it, and that all of them see the same latest checkpoint in the model
directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
from typing import Dict, List, Mapping, Optional

import errors

TASK_TYPES = ("chief", "worker")  # what MultiWorkerMirroredStrategy trains with
_UNSUPPORTED = {"ps": "parameter servers belong to ParameterServerStrategy",
                "evaluator": "train_and_eval evaluates on the chief",
                "master": "'master' is the older name of 'chief': rename it"}
# At most this many tasks (the one-hot slot of `agree`; far beyond CPU/GPU multi-worker use).
MAX_TASKS = 256
_HANDSHAKE_KEY = 2 ** 30 + 7


@dataclasses.dataclass(frozen=True)
class Task:
    """This process's place in the cluster of TF_CONFIG."""

    task_type: str
    index: int
    cluster: Mapping[str, tuple]

    @property
    def is_chief(self) -> bool:
        """Whether this task writes the model directory."""
        if "chief" in self.cluster:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.index == 0

    @property
    def addresses(self) -> List[str]:
        """Every task's address, chief first, then the workers in order."""
        return list(self.cluster.get("chief", ())) + list(self.cluster.get("worker", ()))

    @property
    def rank(self) -> int:
        """This task's position in `addresses`."""
        return (self.index if self.task_type == "chief"
                else len(self.cluster.get("chief", ())) + self.index)

    @property
    def address(self) -> str:
        return self.addresses[self.rank]

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.index}"

    def digest(self) -> int:
        """A number (< 2**24, exact in float32) that differs between different clusters."""
        text = json.dumps({k: list(v) for k, v in sorted(self.cluster.items())})
        return int(hashlib.sha256(text.encode()).hexdigest(), 16) % (1 << 24)


def _problem(message: str) -> errors.UsageError:
    return errors.UsageError(f"TF_CONFIG: {message} (--strategy=multi_worker; see "
                             f"docs/multi_worker.md).")


def read_task(environ: Mapping[str, str] = os.environ) -> Task:
    """This process's `Task` from the TF_CONFIG environment variable; UsageError naming what is
    wrong when it is missing, not JSON, or would let no task (or two tasks) save the model."""
    text = environ.get("TF_CONFIG")
    if not text:
        raise _problem("not set: every task needs the cluster and its own task")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise _problem(f"not valid JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cluster"), dict):
        raise _problem('no "cluster": give {"cluster": {"worker": ["host:port", ...]}, '
                       '"task": {"type": "worker", "index": i}}')
    cluster = data["cluster"]
    for kind in cluster:
        if kind in _UNSUPPORTED:
            raise _problem(f'cluster has "{kind}" tasks, which multi_worker does not use: '
                           f"{_UNSUPPORTED[kind]}")
        if kind not in TASK_TYPES:
            raise _problem(f'unknown task type "{kind}" in the cluster (valid: chief, worker)')
        addresses = cluster[kind]
        if (not isinstance(addresses, list) or not addresses
                or not all(isinstance(a, str) and a.rpartition(":")[2].isdigit()
                           for a in addresses)):
            raise _problem(f'cluster "{kind}" must be a non-empty list of "host:port" strings, '
                           f"got {addresses!r}")
    if not cluster:
        raise _problem("the cluster is empty: no task would train or save the model")
    if len(cluster.get("chief", [])) > 1:
        raise _problem(f"{len(cluster['chief'])} chief tasks: at most one may save the model")
    everyone = [a for kind in TASK_TYPES for a in cluster.get(kind, [])]
    repeated = sorted({a for a in everyone if everyone.count(a) > 1})
    if repeated:
        raise _problem(f"address {repeated[0]} is given to two tasks")
    if len(everyone) > MAX_TASKS:
        raise _problem(f"{len(everyone)} tasks; at most {MAX_TASKS} are supported")
    task = data.get("task")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise _problem(f'"task" must name this process\'s type ({", ".join(cluster)}) and '
                       f'index, e.g. {{"type": "worker", "index": 0}}; got {task!r}')
    index = task.get("index", 0)
    if not isinstance(index, int) or isinstance(index, bool) or not (
            0 <= index < len(cluster[task["type"]])):
        raise _problem(f'task index {index!r} is not one of the cluster\'s '
                       f'{len(cluster[task["type"]])} "{task["type"]}" tasks (0-based)')
    return Task(task["type"], index, {k: tuple(v) for k, v in cluster.items()})


def check_port_free(task: Task) -> None:
    """UsageError when this task's own port is held by another program (TensorFlow would
    abort the process when its server cannot bind)."""
    host, _, port = task.address.rpartition(":")
    with socket.socket() as s:
        try:
            s.bind(("", int(port)))
        except OSError:
            raise _problem(f"{task.name}'s address {task.address}: port {port} is already in "
                           f"use; stop what holds it or give this task another port") from None


def _latest_step(model_dir: str) -> int:
    import checkpoint_io  # local, as TensorFlow: reading TF_CONFIG needs neither

    step = checkpoint_io.latest_step(model_dir)
    return -1 if step is None else step


def _same_everywhere(total_sum: float, total_squares: float, mine: float, n: int) -> bool:
    """Whether n values whose sum and sum of squares are given all equal `mine` (their
    variance is zero exactly when every one equals the mean)."""
    return total_sum == n * mine and total_squares == n * mine * mine


def agree(task: Task, model_dir: str, timeout_seconds: float = 600.0) -> None:
    """Check, with one all-reduce across every task, that all of them were given the same
    cluster, hold distinct places in it, and see the same latest checkpoint in `model_dir`.

    UsageError naming what differs, or naming the tasks when not all of them joined within
    `timeout_seconds` (tasks may be started minutes apart).
    """
    import numpy as np
    import tensorflow as tf

    n = len(task.addresses)
    # float64 sums of values below 2**20 (and their squares) stay exact for MAX_TASKS tasks.
    cluster_id = task.digest() % (1 << 20)
    step = (_latest_step(model_dir) + 1) % 1_000_003  # 0: no checkpoint
    facts = np.zeros(MAX_TASKS + 4, np.float64)
    facts[task.rank] = 1.0  # summed: one per place in the cluster
    facts[MAX_TASKS:] = [cluster_id, cluster_id ** 2, step, step ** 2]
    try:
        # A collective of its own (group and instance keys far from those the strategy hands
        # out, which restart for every graph it builds), on this task's CPU.
        total = tf.raw_ops.CollectiveReduceV2(
            input=tf.constant(facts), group_size=n, group_key=_HANDSHAKE_KEY,
            instance_key=_HANDSHAKE_KEY, ordering_token=[], merge_op="Add", final_op="Id",
            timeout_seconds=timeout_seconds).numpy()
    except tf.errors.DeadlineExceededError:
        raise _problem(f"not every task joined within {timeout_seconds:.0f} s: start all {n} "
                       f"tasks ({', '.join(task.addresses)})") from None
    except (tf.errors.UnavailableError, tf.errors.InternalError) as e:
        raise _problem(f"the tasks could not agree on the cluster ({task.name} has {n} tasks: "
                       f"{', '.join(task.addresses)}; TensorFlow: {_cause(e)}); give every "
                       f"task the same \"cluster\"") from None
    if not _same_everywhere(total[MAX_TASKS], total[MAX_TASKS + 1], cluster_id, n):
        raise _problem(f"the tasks were given different clusters ({task.name} has {n} tasks: "
                       f"{', '.join(task.addresses)}); give every task the same \"cluster\"")
    places = total[:MAX_TASKS]
    if not (np.array_equal(places[:n], np.ones(n)) and not places[n:].any()):
        twice = [task.addresses[i] for i in range(n) if places[i] > 1]
        raise _problem(f"two tasks claim the same place in the cluster ({', '.join(twice)}); "
                       f'give each task its own "task" type and index')
    if not _same_everywhere(total[MAX_TASKS + 2], total[MAX_TASKS + 3], step, n):
        latest = _latest_step(model_dir)
        seen = f"checkpoint step {latest}" if latest >= 0 else "no checkpoint"
        raise _problem(f"the tasks see different checkpoints in --model_dir={model_dir} "
                       f"({task.name} sees {seen}): it must be storage that every task shares "
                       f"(a network file system or gs://)")


def _cause(error) -> str:
    """The line of a collective's error that says what went wrong."""
    lines = [ln.strip() for ln in (error.message or "").splitlines() if ln.strip()]
    for line in lines:
        if "aborted by:" in line:
            return line.split("aborted by:", 1)[1].strip()
    return lines[0] if lines else type(error).__name__


def barrier(task: Task, timeout_seconds: float = 3600.0) -> None:
    """Wait until every task has reached this point (the end of the run): a task that exits
    while others still run makes their servers log failed heartbeats to it."""
    import tensorflow as tf

    tf.raw_ops.CollectiveReduceV2(
        input=tf.constant([1.0]), group_size=len(task.addresses), group_key=_HANDSHAKE_KEY,
        instance_key=_HANDSHAKE_KEY + 1, ordering_token=[], merge_op="Add", final_op="Id",
        timeout_seconds=timeout_seconds).numpy()


def describe(task: Optional[Task]) -> Dict[str, object]:
    """What the run record keeps of the cluster."""
    if task is None:
        return {}
    return {"task": task.name, "chief": task.is_chief, "tasks": len(task.addresses)}
