"""``bench models`` and ``bench measure``: the zoo and one model's measurement table."""

from __future__ import annotations

import argparse
from typing import Any

import pandas as pd

from bench.errors import UserError


def zoo_table(pattern: str = "*") -> pd.DataFrame:
    """Every registered model matching ``pattern`` with exact parameter count and MACs (fvcore).

    MACs are per image at the model's default input size; ``macs_conv_linear`` counts convolutions
    and linear layers only (residual additions excluded), ``macs_fvcore_total`` adds norms and pools.
    """
    from bench.measure import count_compute, count_params
    from bench.models import create_model, list_models, model_info

    names = list_models(pattern)
    if not names:
        raise UserError(f"no model matches {pattern!r} (bench list --models shows them all)")
    rows = []
    for name in names:
        info = model_info(name)
        shape = tuple(info["input_size"])
        model = create_model(name, in_channels=shape[0])
        rows.append({
            "model": name,
            "family": info.get("family", ""),
            "input": "x".join(map(str, shape)),
            "params": count_params(model)["params_total"],
            **{k: v for k, v in count_compute(model, shape).items() if k in ("macs_conv_linear", "macs_fvcore_total")},
        })
    df = pd.DataFrame(rows)
    df["params"] = df["params"].map("{:,}".format)
    for col in ("macs_conv_linear", "macs_fvcore_total"):
        df[col.replace("macs_", "MMACs_")] = (df.pop(col) / 1e6).round(2)
    return df


def _fmt(key: str, value: Any) -> str:
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


def measure_table(args: argparse.Namespace, overrides: dict[str, Any]) -> str:
    """The full measurement of one model as a two-column table, plus the layer view if asked."""
    kwargs: dict[str, Any] = {}
    for k, v in overrides.items():
        if not k.startswith("model_kwargs."):
            raise UserError(f"bench measure takes only --set model_kwargs.<name>=<value>, got {k!r}")
        kwargs[k.split(".", 1)[1]] = v  # parsed by parse_set_args
    m, layers = measure_one(args.model, batch_size=args.batch_size, image_size=args.image_size,
                            in_channels=args.in_channels, num_classes=args.num_classes, device=args.device,
                            precision=args.precision, model_kwargs=kwargs, speed=not args.no_speed,
                            layers=args.layers)
    width = max(len(k) for k in m)
    lines = [f"{k:<{width}}  {_fmt(k, v)}" for k, v in m.items() if k != "environment"]
    if layers is not None:
        lines += ["", layers.to_string(index=False)]
    return "\n".join(lines)
