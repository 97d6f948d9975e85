"""Benchmarks of heimdall_lab: one harness, one report.

:mod:`benchmarks.harness` holds the runner, the cases (fetch, processing, store, database,
end to end, memory, batch) and the reporting into ``reports/benchmark.md`` with its plots
under ``reports/benchmark/``; :mod:`benchmarks.orm` the ORM mapping that the database case
compares COPY with; :mod:`benchmarks.localize` the localization accuracy study
(``reports/localize.md``); :mod:`benchmarks.streaming` streamed captures' memory against
time and captures killed at random points then completed by sync (``reports/streaming.md``,
``python -m benchmarks streaming [--quick]``). Front ends: ``notebooks/benchmark.ipynb``
(``heimdall-lab run benchmark`` from a source tree) and ``python -m benchmarks [--quick]``.

Not part of the installed package: import it from the repository root.
"""
