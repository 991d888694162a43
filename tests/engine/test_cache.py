"""The result cache: sizes of real values, least-recently-used eviction, pins, stats."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from nodeflow.engine.cache import OutputCache, default_budget_bytes
from nodeflow.engine.sizing import sizeof


# ------------------------------------------------------------------------- sizing
def test_tensor_counts_its_storage_once_even_through_views():
    tensor = torch.zeros(10, 10, dtype=torch.float32)
    assert sizeof(tensor) == 400
    views = [tensor, tensor[0], tensor.T]
    assert sizeof(views) == 400 + sys.getsizeof(views)
    assert sizeof(torch.zeros(3, dtype=torch.float16)) == 6


def test_module_counts_parameters_and_buffers():
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    params = (4 * 3 + 3) + (3 + 3)  # linear weight+bias, batchnorm weight+bias
    buffers_bytes = 3 * 4 + 3 * 4 + 8  # running mean, running var (float32), num_batches_tracked (int64)
    assert sizeof(module) == params * 4 + buffers_bytes


def test_shared_module_in_two_records_is_counted_once():
    @dataclass
    class Record:
        model: object
        name: str

    linear = torch.nn.Linear(100, 100)
    alone = sizeof(linear)
    both = sizeof({"a": Record(linear, "x"), "b": Record(linear, "y")})
    assert alone == (100 * 100 + 100) * 4
    assert alone < both < alone + 2000  # the containers cost bytes, the weights count once


def test_numpy_pil_bytes_and_strings():
    assert sizeof(np.zeros((5, 5), dtype=np.float64)) == 200
    assert sizeof(Image.new("RGB", (10, 20))) == 600
    assert sizeof(Image.new("F", (10, 10))) == 400
    assert sizeof(b"x" * 1000) >= 1000
    assert sizeof("y" * 1000) >= 1000
    assert sizeof(None) == 0 and sizeof(3.5) == 0


def test_diffusion_record_is_measured_through_the_dataclass():
    from nodes.diffusion.types import Latent

    latent = Latent(torch.zeros(1, 4, 8, 8))
    assert 1 * 4 * 8 * 8 * 4 <= sizeof(latent) < 1 * 4 * 8 * 8 * 4 + 500


# -------------------------------------------------------------------------- cache
def test_least_recently_used_entry_is_evicted_first():
    cache = OutputCache(budget_bytes=100)
    cache.put("a", {"v": 1}, nbytes=40)
    cache.put("b", {"v": 2}, nbytes=40)
    assert cache.get("a") == {"v": 1}  # a is now more recent than b
    cache.put("c", {"v": 3}, nbytes=40)
    assert "b" not in cache and "a" in cache and "c" in cache
    stats = cache.stats()
    assert (stats.entries, stats.bytes, stats.evictions) == (2, 80, 1)
    assert cache.get("b") is None
    assert (cache.stats().hits, cache.stats().misses) == (1, 1)


def test_pinned_entries_survive_over_budget_and_go_when_released():
    cache = OutputCache(budget_bytes=50)
    cache.pin(["big", "small"])
    cache.put("big", {"v": "big"}, nbytes=80)
    cache.put("small", {"v": "small"}, nbytes=10)
    assert len(cache) == 2 and cache.stats().bytes == 90  # over budget, but the run needs both
    cache.unpin(["big"])
    assert "big" not in cache and "small" in cache
    assert cache.stats().bytes == 10


def test_pins_are_counted():
    cache = OutputCache(budget_bytes=0)
    cache.pin(["x"])
    cache.pin(["x"])
    cache.put("x", {}, nbytes=1)
    cache.unpin(["x"])
    assert "x" in cache  # still pinned once
    cache.unpin(["x"])
    assert "x" not in cache


def test_an_entry_larger_than_the_budget_is_not_kept_unless_pinned():
    cache = OutputCache(budget_bytes=10)
    cache.put("huge", {"v": 0}, nbytes=11)
    assert len(cache) == 0 and cache.stats().evictions == 1


def test_lowering_the_budget_evicts_and_clear_forgets_everything():
    cache = OutputCache(budget_bytes=1000)
    for key in "abcd":
        cache.put(key, {}, nbytes=100)
    cache.budget_bytes = 250
    assert [k for k in "abcd" if k in cache] == ["c", "d"]
    cache.clear()
    assert cache.stats().entries == 0 and cache.stats().bytes == 0


def test_put_measures_values_when_no_size_is_given():
    cache = OutputCache(budget_bytes=10_000)
    cache.put("t", {"image": torch.zeros(10, 10)})
    assert 400 <= cache.stats().bytes < 1000


def test_default_budget_is_a_part_of_physical_memory():
    budget = default_budget_bytes()
    import os

    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < budget < physical
    assert OutputCache().budget_bytes == budget


def test_negative_budget_is_refused():
    with pytest.raises(ValueError, match="budget"):
        OutputCache(budget_bytes=-1)
