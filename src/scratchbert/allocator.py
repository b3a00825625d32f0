"""Keep freed memory in the process while training on a CPU (glibc's malloc).

PyTorch allocates CPU tensors with plain ``malloc``, and it has no caching allocator for
the CPU as it has for CUDA. glibc serves every allocation above its mmap threshold (32 MB
at most) with fresh pages from ``mmap`` and hands them back to the kernel on ``free``, so
a training step that makes the same big tensors every step pays a page fault and a
zeroed page for every 4 KB of them, every step. In scratchbert's pretraining those are
the vocabulary logits: about 58 MB in fp32 for the ~480 masked tokens of a 32-example
batch over 30,522 words; in QA fine-tuning, the fp32 attention scores of 384-token
windows. With mmap off and no trimming, freed blocks stay in the heap and the next step
reuses them.

``benchmarks/pretrain_throughput.py`` measures training with and without it (see
docs/performance.md); memory stays flat.

jemalloc or tcmalloc (Intel's advice for PyTorch on CPUs) would do the same, but need a
system package and ``LD_PRELOAD`` before the process starts; ``mallopt`` works in-process
wherever glibc is, which covers a laptop run and the container images alike.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform

# glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}


def _libc():
    """glibc, when this process trains on a CPU (a CUDA run's big tensors live on the GPU)."""
    import torch

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or torch.cuda.is_available():
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@contextlib.contextmanager
def keep_freed_memory(enabled: bool = True):
    """While inside, freed memory stays in the heap for reuse; afterwards it goes back.

    Yields whether the tuning is active (False with a CUDA GPU, off glibc, or when
    ``enabled`` is False).
    On leaving, glibc's default thresholds are restored and the free heap is trimmed.
    """
    libc = _libc() if enabled else None
    if libc is None:
        yield False
        return
    libc.mallopt(_M_MMAP_MAX, 0)  # every block from the heap, none from mmap
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)  # freed memory at the top of the heap stays
    try:
        yield True
    finally:
        for option, value in _DEFAULTS.items():
            libc.mallopt(option, value)
        libc.malloc_trim(0)
