"""scratchbert.allocator: inside the context, a big tensor made every step reuses freed memory.

Counted with the kernel's minor page faults: a 64 MB tensor served by fresh ``mmap`` pages
faults once per 4 KB page (16,384 times); one served from memory the process kept faults
(almost) never.
"""

from __future__ import annotations

import platform
import resource

import pytest
import torch

from scratchbert.allocator import keep_freed_memory

glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the tuning is for glibc's malloc")
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="the tuning is for CPU training")
PAGES = 16 * 2**20 * 4 // 4096  # a 64 MB float32 tensor, in 4 KB pages


def _faults_per_step(steps: int) -> float:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        t = torch.empty(16 * 2**20)
        t.fill_(1.0)  # touch every page, as a training step writes its logits
        del t
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps


@glibc_only
@cpu_only
def test_big_tensors_reuse_kept_memory():
    with keep_freed_memory() as active:
        assert active
        _faults_per_step(12)  # glibc settles its free blocks within a few steps
        assert _faults_per_step(5) < PAGES / 20


def test_disabled_is_a_no_op():
    with keep_freed_memory(enabled=False) as active:
        assert not active
