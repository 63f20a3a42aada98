"""The timing rule every benchmark script uses."""

import time


def best_ms(function, repeats: int = 5, warmup: int = 1) -> float:
    """Best wall-clock time of ``repeats`` calls after ``warmup`` calls, in milliseconds."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)
