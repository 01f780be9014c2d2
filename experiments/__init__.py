"""The registered studies, one module per study (modules starting with ``_`` hold shared pieces).

``bench.study.load_studies()`` imports every module here once; each registers its studies with
``register_study``.
"""
