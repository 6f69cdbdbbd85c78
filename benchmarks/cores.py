"""How much arithmetic throughput do the machine's cores add? (why Kaczmarz stays on one thread)

    python -m benchmarks.cores

Runs the same numba FMA loop (L1-resident, no memory traffic) on one thread, then on two threads
at once, and prints the combined throughput ratio: ~2 for two physical cores, ~1 when the two
logical CPUs share one core (SMT siblings) or one core's quota.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
from numba import njit


@njit(nogil=True, fastmath=True)
def fma_loop(a, reps):
    for _ in range(reps):
        for i in range(a.size):
            a[i] = a[i] * np.float32(0.999) + np.float32(0.001)
    return a[0]


def main(reps: int = 1_000_000) -> float:
    a, b = np.ones(4096, np.float32), np.ones(4096, np.float32)
    fma_loop(a, 1)
    t0 = time.perf_counter()
    fma_loop(a, reps)
    one = time.perf_counter() - t0
    th = threading.Thread(target=fma_loop, args=(b, reps))
    t0 = time.perf_counter()
    th.start()
    fma_loop(a, reps)
    th.join()
    two = time.perf_counter() - t0
    ratio = 2 * one / two
    print(f"logical CPUs: {len(os.sched_getaffinity(0))}; one thread {one:.3f} s; two threads (same work "
          f"each) {two:.3f} s; combined throughput {ratio:.2f}x one thread")
    return ratio


if __name__ == "__main__":
    main()
