"""bench/ runs under pytest with pytest-benchmark; where the plugin is not installed (e.g. a GPU machine with
only torch preinstalled) a minimal `benchmark` fixture stands in: the benches take their own interleaved
per-provider timings (bench/_record.py) and only use the fixture to drive the rounds."""

import importlib.util

import pytest

if importlib.util.find_spec("pytest_benchmark") is None:

    class _Benchmark:
        def __init__(self):
            self.extra_info = {}

        def pedantic(self, fn, args=(), kwargs=None, rounds=1, iterations=1, warmup_rounds=0, **_):
            result = None
            for _ in range(warmup_rounds + rounds * iterations):
                result = fn(*args, **(kwargs or {}))
            return result

    @pytest.fixture
    def benchmark():
        return _Benchmark()
