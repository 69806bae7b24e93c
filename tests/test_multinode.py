"""Placement across nodes with ray.cluster_utils.Cluster: a head without GPUs and two GPU nodes.

The scenario (tests/support/multinode.py) owns its own Ray cluster, so it runs in a child process; it
reports what it observed and this test checks it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multinode")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-m", "tests.support.multinode", str(folder)], capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_pack_fills_one_gpu_node_first_and_spread_alternates(observed):
    assert len(set(observed["pack_nodes"])) == 1  # four 0.25-GPU sessions share one GPU
    assert sorted(Counter(observed["spread_nodes"]).values()) == [2, 2]
    assert set(observed["pack_nodes"]) | set(observed["spread_nodes"]) <= set(observed["node_ids"])


def test_the_scheduler_runs_on_the_head_even_when_first_made_on_a_gpu_node_and_after_a_restart(observed):
    assert observed["scheduler_node"] == observed["head_node"]
    assert observed["restarted_scheduler_node"] == observed["head_node"]


def test_removing_a_node_ends_exactly_its_sessions_and_frees_their_slots(observed):
    lost = observed["node_ids"][0]
    before, after = observed["before_loss"], observed["after_loss"]
    print("lost node's sessions ended after", observed["loss_ended_after_s"], "s")
    assert sum(1 for n in before.values() if n == lost) == 3
    for sid, node in before.items():
        if node == lost:
            assert after[sid] == ["failed", "worker_failed"]
        else:
            assert after[sid] == ["started", None]
    cap = observed["capacity_after_loss"]
    assert cap["slots_total"] == 4 and cap["slots_used"] == 3 and [n["node_id"] for n in cap["nodes"]] != [lost]
    made, refused = observed["create_when_one_free"]
    assert made.startswith("sess_") and "CAPACITY_UNAVAILABLE" in refused


def test_an_added_node_adds_capacity_used_without_restart(observed):
    assert observed["capacity_after_add"]["slots_total"] == 8
    assert set(observed["after_add"].values()) == {observed["added_node"]}


def test_scheduler_restarted_mid_way_reconciles_and_leaks_nothing(observed):
    assert len(observed["running_after_restart"]) == 7  # 3 survivors + 1 + 3 on the new node
    assert observed["end_after_restart"] == ["ended", "user_requested"]
    assert observed["groups_left"] == []
    # the node loss, the restart and the shutdown billed every session exactly once, balances = ledgers
    assert observed["active_left"] == 0
    assert observed["money_problems"] == {"double_billed": 0, "unbilled": 0, "ledger_mismatches": 0, "negative": 0}
