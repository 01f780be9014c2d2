"""The registered studies, one module per study (modules starting with ``_`` hold shared pieces).

Importing this package imports every module here once; each registers its studies with
``bench.study.register_study``. The ``bench`` command imports it at start; so do the tests.
"""

from __future__ import annotations

import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")
