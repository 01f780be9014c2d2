"""Where BatchNorm and ReLU go in a residual unit (He et al. 2016b, "Identity Mappings", Table 2)."""

from __future__ import annotations

from bench.models.units import CONV_UNITS, UNITS
from bench.study import Arm, Claim, Profile, Published, Study, register_study
from experiments._common import HE2016_CIFAR, QUICK_15_EPOCHS, smoke_profile

HE2016B = "He et al. 2016b, Identity Mappings in Deep Residual Networks, Table 2 (ResNet-110, CIFAR-10 test error)"

def unit_arms(model: str) -> tuple[Arm, ...]:
    """The five residual units of Table 2 in ``model``, plus BN before/after ReLU in a plain conv net.

    Both lists come from the model zoo's unit tables (``UNITS``, ``CONV_UNITS``) with their labels.
    """
    arms = [Arm(unit, {"model": model, "model_kwargs.unit": unit}, {"family": "residual", "unit": cls.label})
            for unit, cls in UNITS.items() if cls.identity_mappings]
    # BN before vs. after the activation in a plain (no shortcut) conv net of the same width.
    arms += [Arm(f"plain_{unit}", {"model": "convnet", "model_kwargs.unit": unit},
                 {"family": "plain", "unit": cls.label})  # type: ignore[attr-defined]
             for unit, cls in CONV_UNITS.items()]
    return tuple(arms)


bn_placement = register_study(Study(
    name="bn-placement",
    question="Where should BatchNorm and ReLU sit relative to the residual addition?",
    base=HE2016_CIFAR,
    axes={"unit": unit_arms("resnet110")},
    profiles={
        # He et al. 2016b warm ResNet-110 up at lr 0.01 for the first 400 iterations.
        "full": Profile({"warmup": 400}, seeds=(0, 1, 2),
                        description="ResNet-110, He et al. protocol (64k iterations), 3 seeds"),
        "quick": Profile(QUICK_15_EPOCHS, axes={"unit": unit_arms("resnet32")}, seeds=(0, 1, 2),
                         description="ResNet-32, 15 epochs, 3 seeds"),
        "smoke": smoke_profile(axes={"unit": unit_arms("resnet20")}),
    },
    published=tuple(
        Published({"unit": unit}, "final_test_error_pct", err, HE2016B)
        for unit, err in (("original", 6.61), ("bn_after_add", 8.17), ("relu_before_add", 7.84),
                          ("relu_preact", 6.71), ("full_preact", 6.37))
    ),
    claims=(
        Claim.compare("Full pre-activation ends no worse than the original unit (6.37 vs 6.61)",
                      metric="final_test_error_pct", a={"unit": "full_preact"}, b={"unit": "original"}, less_by=0.2,
                      source=HE2016B),
        Claim.compare("The original unit ends better than BN after addition (6.61 vs 8.17)",
                      metric="final_test_error_pct", a={"unit": "original"}, b={"unit": "bn_after_add"}, less_by=0.5,
                      source=HE2016B),
        Claim.compare("ReLU before addition ends worse than the original unit (7.84 vs 6.61)",
                      metric="final_test_error_pct", a={"unit": "relu_before_add"}, b={"unit": "original"},
                      greater_by=0.5, source=HE2016B),
    ),
    figures=("curves_epoch", "error_by_arm"),
    notes="Published figures are for ResNet-110; the quick profile uses ResNet-32, so expect higher "
          "errors and smaller gaps there.",
))
