"""The bodies of the ``bench`` commands that are more than a call into a lower layer, one module each:
``plan`` (cells, cost, seeds needed), ``status`` (where each cell stands), ``show`` (one run as text),
``zoo`` (``bench models`` and ``bench measure``), ``perf`` and ``perf_runs`` (the loop benchmark), and
``defaults`` (where results and data go unless told, the results folder's check, the profile chosen).

:mod:`bench.api` calls them with typed values; the command line (:mod:`bench.cli`) parses its
arguments and calls :mod:`bench.api`.
"""
