"""cluster.py: reading TF_CONFIG (who is chief, which forms are refused and how) and the
own-port check. Running several tasks is tested in test_main.py."""

import json
import socket

import pytest

import cluster
import errors

A, B, C = "127.0.0.1:2001", "127.0.0.1:2002", "127.0.0.1:2003"


def _task(cluster_spec, kind="worker", index=0):
    return cluster.read_task({"TF_CONFIG": json.dumps(
        {"cluster": cluster_spec, "task": {"type": kind, "index": index}})})


def test_without_a_chief_worker_zero_saves():
    tasks = [_task({"worker": [A, B, C]}, "worker", i) for i in range(3)]
    assert [t.is_chief for t in tasks] == [True, False, False]
    assert [t.rank for t in tasks] == [0, 1, 2]
    assert tasks[2].address == C and tasks[2].name == "worker 2"


def test_an_explicit_chief_saves_and_no_worker_does():
    spec = {"chief": [A], "worker": [B, C]}
    chief, w0, w1 = _task(spec, "chief"), _task(spec, "worker", 0), _task(spec, "worker", 1)
    assert (chief.is_chief, w0.is_chief, w1.is_chief) == (True, False, False)
    assert chief.addresses == [A, B, C]
    assert (chief.rank, w0.rank, w1.rank) == (0, 1, 2)
    assert w0.address == B


def test_the_same_cluster_has_the_same_digest():
    x = _task({"worker": [A, B]}, "worker", 0)
    y = _task({"worker": [A, B]}, "worker", 1)
    z = _task({"worker": [B, A]}, "worker", 1)
    assert x.digest() == y.digest() != z.digest()
    assert 0 <= x.digest() < 2 ** 24


REFUSED = [
    ("not-set", None, r"TF_CONFIG: not set"),
    ("not-json", "{cluster:", r"not valid JSON"),
    ("no-cluster", json.dumps({"task": {"type": "worker", "index": 0}}), r'no "cluster"'),
    ("empty-cluster", json.dumps({"cluster": {}, "task": {"type": "worker"}}),
     r"cluster is empty"),
    ("ps", json.dumps({"cluster": {"worker": [A], "ps": [B]},
                       "task": {"type": "worker", "index": 0}}), r'"ps" tasks'),
    ("evaluator-only", json.dumps({"cluster": {"evaluator": [A]},
                                   "task": {"type": "evaluator", "index": 0}}),
     r'"evaluator" tasks'),
    ("master", json.dumps({"cluster": {"master": [A]}, "task": {"type": "master"}}),
     r"older name of 'chief'"),
    ("unknown-type", json.dumps({"cluster": {"trainer": [A]}, "task": {"type": "trainer"}}),
     r'unknown task type "trainer"'),
    ("two-chiefs", json.dumps({"cluster": {"chief": [A, B]}, "task": {"type": "chief"}}),
     r"2 chief tasks"),
    ("address-twice", json.dumps({"cluster": {"chief": [A], "worker": [A]},
                                  "task": {"type": "chief"}}), r"address .* two tasks"),
    ("not-a-list", json.dumps({"cluster": {"worker": A}, "task": {"type": "worker"}}),
     r"non-empty list"),
    ("no-port", json.dumps({"cluster": {"worker": ["localhost"]}, "task": {"type": "worker"}}),
     r'"host:port"'),
    ("task-not-in-cluster", json.dumps({"cluster": {"worker": [A]},
                                        "task": {"type": "chief", "index": 0}}),
     r'"task" must name'),
    ("no-task", json.dumps({"cluster": {"worker": [A]}}), r'"task" must name'),
    ("index-out-of-range", json.dumps({"cluster": {"worker": [A, B]},
                                       "task": {"type": "worker", "index": 2}}),
     r"task index 2 is not one of the cluster's 2"),
    ("index-not-int", json.dumps({"cluster": {"worker": [A, B]},
                                  "task": {"type": "worker", "index": "1"}}), r"task index"),
]


@pytest.mark.parametrize("value,pattern", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_forms_name_what_is_wrong(value, pattern):
    environ = {} if value is None else {"TF_CONFIG": value}
    with pytest.raises(errors.UsageError, match=pattern) as caught:
        cluster.read_task(environ)
    assert str(caught.value).startswith("TF_CONFIG: ")
    assert "\n" not in str(caught.value)


def test_a_port_in_use_is_refused():
    with socket.socket() as held:
        held.bind(("", 0))
        port = held.getsockname()[1]
        task = _task({"worker": [f"127.0.0.1:{port}", B]}, "worker", 0)
        with pytest.raises(errors.UsageError, match=f"port {port} is already in use"):
            cluster.check_port_free(task)
    cluster.check_port_free(task)  # free again


def test_same_everywhere_needs_every_value_equal():
    assert cluster._same_everywhere(9.0, 27.0, 3.0, 3)
    # 2, 3 and 4 sum like three 3s, but not their squares.
    assert not cluster._same_everywhere(9.0, 29.0, 3.0, 3)
