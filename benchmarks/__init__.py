"""xaudit benchmarks: side-by-side ratio measurements against the tools users would
otherwise use (lime, alibi, Captum) and against the model's own forward pass.

Run from the repository root::

    python -m benchmarks [--quick] [--only lime,anchors] [--out DIR] [--repeats N]

Every ``benchmarks/bench_<name>.py`` exposes ``run(quick: bool = False, repeats: int = 3)
-> dict`` (shape documented in :mod:`benchmarks._common`) and stays runnable as a script
(``python benchmarks/bench_<name>.py [--quick]``). The runner writes
``<out>/bench_<name>.json`` (result + machine info + load average before/after) and
renders ``RESULTS.md`` (``benchmarks/RESULTS.md`` for the default ``--out``) from every
result file in ``<out>``.
"""
