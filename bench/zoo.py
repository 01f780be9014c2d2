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


def measure_table(args: argparse.Namespace, overrides: dict[str, Any]) -> str:
    """The full measurement of one model as a two-column table, plus the layer view if asked."""
    from bench.measure import layer_table, measure_model
    from bench.models import create_model, model_info
    from bench.device import parse_device

    info = model_info(args.model)
    from bench.config import MIN_SIDE, PRECISIONS

    if args.precision not in PRECISIONS:
        raise UserError(f"bad --precision {args.precision!r} (accepted: {', '.join(PRECISIONS)})")
    for flag, value, low in (("--batch-size", args.batch_size, 1), ("--image-size", args.image_size, MIN_SIDE),
                             ("--in-channels", args.in_channels, 1), ("--num-classes", args.num_classes, 1)):
        if value is not None and value < low:
            raise UserError(f"bad {flag} {value} (accepted: an integer >= {low})")
    c, h, w = info["input_size"]
    if args.in_channels is not None:
        c = args.in_channels
    if args.image_size is not None:
        h = w = args.image_size
    kwargs: dict[str, Any] = {}
    for k, v in overrides.items():
        if not k.startswith("model_kwargs."):
            raise UserError(f"bench measure takes only --set model_kwargs.<name>=<value>, got {k!r}")
        kwargs[k.split(".", 1)[1]] = v  # parsed by parse_set_args
    device = parse_device(args.device)  # the text: measure_model resolves it (and records it as given)
    m = measure_model(args.model, input_shape=(c, h, w), batch_size=args.batch_size, device=device,
                      num_classes=args.num_classes, model_kwargs=kwargs, precision=args.precision,
                      speed=not args.no_speed)
    width = max(len(k) for k in m)
    lines = [f"{k:<{width}}  {_fmt(k, v)}" for k, v in m.items() if k != "environment"]
    if args.layers:
        model = create_model(args.model, num_classes=args.num_classes, in_channels=c, **kwargs)
        lines += ["", layer_table(model, (c, h, w)).to_string(index=False)]
    return "\n".join(lines)
