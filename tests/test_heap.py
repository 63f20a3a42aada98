"""Freed memory stays in the process (``equipot.heap``): a large block allocated again after
it was freed faults no fresh pages in, as it did at every call before."""

import resource
import sys

import pytest
import torch

from equipot.heap import keep_freed_memory


def page_faults_of_a_block(mebibytes: int = 64) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(mebibytes * 2**20 // 4)  # float32, every page written
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_freed_block_is_allocated_again_without_page_faults():
    assert keep_freed_memory()
    counts = [page_faults_of_a_block() for _ in range(6)]
    # Before keep_freed_memory: its 16 384 pages of 4 KiB faulted in every time.
    assert counts[-2:] == [0, 0], counts


def test_the_calculator_keeps_freed_memory(monkeypatch):
    from equipot import EquipotCalculator
    from equipot import calculator as module

    from conftest import make_model

    calls = []
    monkeypatch.setattr(module, "keep_freed_memory", lambda: calls.append(1))
    EquipotCalculator(make_model())
    assert calls == [1]
