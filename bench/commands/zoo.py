"""``bench models`` and ``bench measure``: the zoo and one model's measurement table."""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.errors import UserError


COUNTS_SCHEMA = 1  # raise when what zoo_table caches per model changes
COUNTS_FILE = "model-counts.json"


def _counts_version() -> str:
    """What the cached counts depend on besides the key: bench's and torch's versions and the source of
    the model zoo and of the counters (a model edited in a checkout is counted again)."""
    import hashlib
    from pathlib import Path

    import torch

    import bench

    h = hashlib.sha256(f"{COUNTS_SCHEMA}|{bench.__version__}|{torch.__version__}".encode())
    root = Path(bench.__file__).parent
    for f in sorted([*(root / "models").glob("*.py"), root / "measure" / "compute.py", root / "measure" / "params.py"]):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def counts_key(model: str, kwargs: dict[str, Any], shape: tuple[int, ...], num_classes: int) -> str:
    """The cache key of a model's counts: name, arguments, input shape, classes and :func:`_counts_version`."""
    import json

    return json.dumps({"model": model, "kwargs": kwargs, "shape": list(shape), "classes": num_classes,
                       "version": _counts_version()}, sort_keys=True)


def _read_counts(path: Any) -> dict[str, Any]:
    from bench.files import read_json

    try:
        cached = read_json(path)
    except (OSError, ValueError):
        return {}  # missing, empty or damaged: counted again and rewritten
    return cached if isinstance(cached, dict) else {}


def zoo_table(pattern: str = "*", cache_dir: str | None = None) -> pd.DataFrame:
    """Every registered model matching ``pattern`` with exact parameter count and MACs (fvcore).

    MACs are per image at the model's default input size; ``macs_conv_linear`` counts convolutions
    and linear layers only (residual additions excluded), ``macs_fvcore_total`` adds norms and pools.
    Counts are cached in ``<cache dir>/model-counts.json`` (:func:`counts_key`; the cache dir is
    ``bench.data.default_cache_dir()`` unless given), so only new or changed models are built and
    counted; a bar on a terminal (one line per model in a log) says how far it is. The cache is
    written after each model, so an interrupted listing keeps what it counted.
    """
    import sys
    import time
    from pathlib import Path

    from tqdm import tqdm

    from bench.data import default_cache_dir
    from bench.files import write_json
    from bench.measure import count_compute, count_params
    from bench.models import create_model, list_models, model_info
    from bench.text import human_duration

    names = list_models(pattern)
    if not names:
        raise UserError(f"no model matches {pattern!r} (bench list --models shows them all)")
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / COUNTS_FILE
    cache = _read_counts(path)
    infos = {name: model_info(name) for name in names}
    keys = {name: counts_key(name, {}, tuple(infos[name]["input_size"]), 10) for name in names}
    missing = [n for n in names if not isinstance(cache.get(keys[n]), dict)]
    if missing:
        print(f"bench: counting parameters and MACs of {len(missing)} model(s) not in {path} "
              "(once; later listings read the cache)", file=sys.stderr, flush=True)
    tty, writable = sys.stderr.isatty(), True
    for i, name in enumerate(tqdm(missing, desc="counting", unit="model", disable=not tty), 1):
        t0 = time.perf_counter()
        shape = tuple(infos[name]["input_size"])
        model = create_model(name, in_channels=shape[0])
        compute = count_compute(model, shape)
        cache[keys[name]] = {"params": count_params(model)["params_total"],
                             **{k: compute.get(k) for k in ("macs_conv_linear", "macs_fvcore_total")}}
        if not tty:  # a log shows no bar: one line per model counted
            print(f"bench: counted {name} ({i}/{len(missing)}) in {human_duration(time.perf_counter() - t0)}",
                  file=sys.stderr, flush=True)
        if writable:
            try:  # after each model: an interrupted listing keeps what it counted
                write_json(path, cache)
            except OSError as exc:
                print(f"bench: could not write {path} ({exc.strerror or exc}); counts are not cached",
                      file=sys.stderr)
                writable = False
    rows = []
    for name in names:
        info = infos[name]
        got = cache[keys[name]]
        rows.append({
            "model": name,
            "family": info.get("family", ""),
            "input": "x".join(map(str, info["input_size"])),
            "params": got["params"],
            "macs_conv_linear": got.get("macs_conv_linear"),
            "macs_fvcore_total": got.get("macs_fvcore_total"),
        })
    df = pd.DataFrame(rows)
    df["params"] = df["params"].map("{:,}".format)
    for col in ("macs_conv_linear", "macs_fvcore_total"):
        df[col.replace("macs_", "MMACs_")] = (pd.to_numeric(df.pop(col)) / 1e6).round(2)
    return df


def fmt_value(key: str, value: Any) -> str:
    """A measurement as shown: thousands separated, 4 significant digits, "not measured" for a missing size."""
    if value is None:
        return "not measured" if "bytes" in key else "-"
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int) and not isinstance(value, bool) and "version" not in key:
        return f"{value:,}"
    return str(value)


def measure_one(model: str, *, batch_size: int = 128, image_size: int | None = None,
                in_channels: int | None = None, num_classes: int = 10, device: str = "auto",
                precision: str = "fp32", model_kwargs: dict[str, Any] | None = None, speed: bool = True,
                layers: bool = False) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """One model's measurements (params, MACs, speed, memory, environment) and, with ``layers``, its
    per-layer table; a bad value is a UserError naming the flag of ``bench measure``."""
    from bench.checks import check_model_input
    from bench.config import MIN_SIDE, PRECISIONS
    from bench.device import parse_device
    from bench.measure import layer_table, measure_model
    from bench.models import create_model, model_info

    info = model_info(model)
    if precision not in PRECISIONS:
        raise UserError(f"bad --precision {precision!r} (accepted: {', '.join(PRECISIONS)})")
    for flag, value, low in (("--batch-size", batch_size, 1), ("--image-size", image_size, MIN_SIDE),
                             ("--in-channels", in_channels, 1), ("--num-classes", num_classes, 1)):
        if value is not None and value < low:
            raise UserError(f"bad {flag} {value} (accepted: an integer >= {low})")
    c, h, w = info["input_size"]
    if in_channels is not None:
        c = in_channels
    if image_size is not None:
        h = w = image_size
    kwargs = dict(model_kwargs or {})
    dev = parse_device(device)  # the text: measure_model resolves it (and records it as given)
    check_model_input(model, kwargs, (c, h, w), num_classes, flag="--image-size")  # on the meta device
    m = measure_model(model, input_shape=(c, h, w), batch_size=batch_size, device=dev, num_classes=num_classes,
                      model_kwargs=kwargs, precision=precision, speed=speed)
    table = None
    if layers and m.get("macs_fvcore_total") is None:
        raise UserError(f"--layers needs {model} built for real, and at {c}x{h}x{w} with {num_classes} classes "
                        "it is too large (accepted: smaller sizes, or no --layers: counted on the meta device)")
    if layers:
        table = layer_table(create_model(model, num_classes=num_classes, in_channels=c, **kwargs), (c, h, w))
    return m, table


def model_kwargs_from_sets(overrides: dict[str, Any]) -> dict[str, Any]:
    """``bench measure``'s ``--set model_kwargs.<name>=<value>`` overrides as the model's arguments;
    any other key is a UserError."""
    kwargs: dict[str, Any] = {}
    for k, v in overrides.items():
        if not k.startswith("model_kwargs."):
            raise UserError(f"bench measure takes only --set model_kwargs.<name>=<value>, got {k!r}")
        kwargs[k.split(".", 1)[1]] = v  # parsed by parse_set_args
    return kwargs


def measurement_text(values: dict[str, Any], layers: pd.DataFrame | None) -> str:
    """One model's measurements as a two-column table (the environment left out), plus the layer view."""
    width = max(len(k) for k in values)
    lines = [f"{k:<{width}}  {fmt_value(k, v)}" for k, v in values.items() if k != "environment"]
    if layers is not None:
        lines += ["", layers.to_string(index=False)]
    return "\n".join(lines)
