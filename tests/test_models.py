"""Model zoo: every registered model builds, trains a step and predicts; parameter oracles; options."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from torch import nn
from torchvision.models.resnet import ResNet

from bench.errors import UserError
from bench.models import MODELS, NORMS, create_model, list_models, make_norm_layer, model_info, register_model
from bench.models.units import UNITS, PreActBlock, ShortcutA

ALL_MODELS = list_models()
DEPTHS = (20, 32, 44, 56, 110)
FIVE_UNITS = ("original", "bn_after_add", "relu_before_add", "relu_preact", "full_preact")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Global-pooled models take small inputs; testing them at 16 pixels keeps the file fast.
SMALL_OK_FAMILIES = {
    "cifar_resnet", "cifar_plain", "cifar_preact_resnet", "resnet", "densenet", "googlenet", "cnn"
}


def batch(name: str, b: int = 2, in_channels: int | None = None, small: bool = True) -> torch.Tensor:
    """Random inputs at the model's default size, or 16x16 where the model allows it."""
    info = model_info(name)
    c, h, w = info["input_size"]
    if small and info["family"] in SMALL_OK_FAMILIES:
        h = w = min(h, 16)
    return torch.randn(b, in_channels or c, h, w)


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode logits after setting BatchNorm running stats from ``x``.

    With the initial running stats (mean 0, var 1) BatchNorm does not normalise in eval mode, so
    the activations of an untrained 110- or 1001-layer net grow block by block (to inf/NaN at
    1001 layers); one calibration pass is what a trained net would have.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: after one batch, the running stats are its stats
    with torch.no_grad():
        model.train()(x)
        return model.eval()(x)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


# --------------------------------------------------------------------------- every model


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_trains_and_predicts(name: str) -> None:
    model = create_model(name, num_classes=7)
    x = batch(name)
    model.train()
    out = model(x)
    outs = out if isinstance(out, tuple) else (out,)
    if isinstance(out, tuple):
        assert name == "googlenet" and len(out) == 3  # (logits, aux2, aux1)
    for o in outs:
        assert o.shape == (2, 7) and torch.isfinite(o).all()
    loss = sum(nn.functional.cross_entropy(o, torch.tensor([0, 1])) for o in outs)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads), "some parameter got no gradient"
    assert all(torch.isfinite(g).all() for g in grads)

    logits = predict(model, x)
    assert isinstance(logits, torch.Tensor)  # googlenet: plain logits in eval mode
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_default_input_size_works(name: str) -> None:
    model = create_model(name).eval()
    with torch.no_grad():
        assert model(batch(name, 1, small=False)).shape == (1, 10)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_in_channels_1(name: str) -> None:
    model = create_model(name, num_classes=3, in_channels=1)
    assert torch.isfinite(predict(model, batch(name, 2, in_channels=1))).all()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_info(name: str) -> None:
    info = model_info(name)
    c, h, w = info["input_size"]
    assert c in (1, 3) and h >= 28 and w >= 28
    assert info["family"] and info["description"] and "\n" not in info["description"]


def test_default_input_sizes() -> None:
    assert model_info("alexnet_cifar")["input_size"] == (3, 64, 64)
    assert model_info("resnet18")["input_size"] == (3, 32, 32)  # default stem is 'cifar'
    for name in ("mnist_resnet_identity", "mnist_resnet_resize", "mnist_cnn"):
        assert model_info(name)["input_size"] == (1, 28, 28)
        first_conv = next(m for m in create_model(name).modules() if isinstance(m, nn.Conv2d))
        assert first_conv.in_channels == 1  # create_model's in_channels defaults to the model's


# --------------------------------------------------------------------------- parameter oracles


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("resnet20", {}, 269_722),
        ("resnet56", {}, 853_018),
        ("resnet110", {}, 1_727_962),
        ("resnet20", {"shortcut": "B"}, 272_474),
        ("cifar_resnet", {"depth": 56}, 853_018),
        ("resnet18", {"num_classes": 1000, "stem": "imagenet"}, 11_689_512),
        ("resnet34", {"num_classes": 1000, "stem": "imagenet"}, 21_797_672),
    ],
)
def test_param_oracles(name: str, kwargs: dict, expected: int) -> None:
    assert n_params(create_model(name, **kwargs)) == expected


@pytest.mark.parametrize("depth", DEPTHS)
def test_plain_and_residual_twins_match(depth: int) -> None:
    assert n_params(create_model(f"resnet{depth}")) == n_params(create_model(f"plain{depth}"))


def test_preact_bottleneck_depths() -> None:
    model = create_model("preact_resnet164")
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)] == [18, 18, 18]  # 9n+2, n=18
    assert model.fc.in_features == 256
    assert isinstance(model.bn_final, nn.BatchNorm2d)  # final BN-ReLU of pre-activation nets


# --------------------------------------------------------------------------- units and blocks


def _graph_signature(model: nn.Module) -> tuple[str, ...]:
    """The op sequence of the traced forward, module calls named by type."""
    gm = torch.fx.symbolic_trace(model)
    modules = dict(gm.named_modules())
    sig = []
    for node in gm.graph.nodes:
        if node.op == "call_module":
            sig.append(type(modules[node.target]).__name__)
        elif node.op in ("call_function", "call_method"):
            sig.append(getattr(node.target, "__name__", str(node.target)))
    return tuple(sig)


def test_five_units_differ_structurally() -> None:
    sigs = {}
    for unit in FIVE_UNITS:
        model = create_model("resnet20", unit=unit)
        assert predict(model, batch("resnet20")).shape == (2, 10)
        assert type(model.layer1[0]) is UNITS[unit]
        sigs[unit] = _graph_signature(model)
    assert len(set(sigs.values())) == 5


@pytest.mark.parametrize("unit", FIVE_UNITS)
@pytest.mark.parametrize("depth", (32, 110))
def test_units_at_every_depth(unit: str, depth: int) -> None:
    assert type(create_model(f"resnet{depth}", unit=unit).layer3[-1]) is UNITS[unit]


def test_block_class_equals_unit_name() -> None:
    by_class = create_model("resnet20", block=PreActBlock)
    by_name = create_model("resnet20", unit="full_preact")
    assert _graph_signature(by_class) == _graph_signature(by_name)
    assert n_params(by_class) == n_params(by_name)


def test_shortcut_a_subsamples_and_pads() -> None:
    sc = ShortcutA(16, 32, 2)
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4) and not list(sc.parameters())
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


def test_shortcut_b_projects_only_on_shape_change() -> None:
    model = create_model("resnet20", shortcut="B")
    assert isinstance(model.layer1[0].shortcut, nn.Identity)
    proj = model.layer2[0].shortcut
    assert isinstance(proj[0], nn.Conv2d) and proj[0].kernel_size == (1, 1) and proj[0].stride == (2, 2)


def test_convnet_units_order() -> None:
    a = create_model("convnet", unit="bn_relu").features[0]
    b = create_model("convnet", unit="relu_bn").features[0]
    assert [type(m) for m in a] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert [type(m) for m in b] == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d]


def test_torchvision_resnet_stems() -> None:
    cifar = create_model("resnet18")
    imagenet = create_model("resnet18", stem="imagenet")
    assert isinstance(cifar, ResNet) and isinstance(imagenet, ResNet)
    assert cifar.conv1.kernel_size == (3, 3) and isinstance(cifar.maxpool, nn.Identity)
    assert imagenet.conv1.kernel_size == (7, 7) and isinstance(imagenet.maxpool, nn.MaxPool2d)
    with torch.no_grad():
        assert imagenet.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 10)


# --------------------------------------------------------------------------- norms


NORM_SAMPLE = ("resnet20", "preact_resnet29", "resnet18", "convnet", "simple_cnn", "mnist_resnet_resize")


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", NORM_SAMPLE)
def test_every_norm_builds(name: str, norm: str) -> None:
    model = create_model(name, norm=norm, groups=8)
    assert torch.isfinite(predict(model, batch(name))).all()
    has_norm = any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in model.modules())
    assert has_norm == (norm != "none")


NORM_MODELS = [n for n in ALL_MODELS if "norm" in model_info(n)["options"]]


@pytest.mark.parametrize("name", NORM_MODELS)
def test_norm_none_gives_conv_biases(name: str) -> None:
    model = create_model(name, norm="none")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.bias is not None for c in convs)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in model.modules())


def test_make_norm_layer() -> None:
    assert isinstance(make_norm_layer("bn")(16), nn.BatchNorm2d)
    assert make_norm_layer("gn")(16).num_groups == 16  # min(32, 16)
    assert make_norm_layer("gn")(64).num_groups == 32
    assert make_norm_layer("gn", groups=16)(24).num_groups == 12  # largest divisor of 24 <= 16
    assert make_norm_layer("ln")(64).num_groups == 1
    inorm = make_norm_layer("in")(64)
    assert inorm.num_groups == 64 and inorm.affine
    assert make_norm_layer("none") is None
    with pytest.raises(UserError, match="'xx'.*bn, gn, in, ln, none"):
        make_norm_layer("xx")


class FakeNorm(nn.GroupNorm):
    """A norm the zoo does not ship, added to the table by the tests below."""


def test_norm_table_is_read_by_models_init_cli_and_study(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from bench.cli import main
    from bench.models.norms import NORM_TABLE, Norm
    from experiments.normalization import norm_arms

    assert NORMS == tuple(NORM_TABLE)
    assert [(a.label, a.tags["norm"]) for a in norm_arms()] == [(n, v.label) for n, v in NORM_TABLE.items()]
    # one entry in the table: the models build with it, init_weights initialises it, the study has an arm
    monkeypatch.setitem(NORM_TABLE, "fake", Norm("FakeNorm", lambda groups: (lambda c: FakeNorm(2, c)), FakeNorm))
    model = create_model("resnet20", norm="fake")
    fakes = [m for m in model.modules() if isinstance(m, FakeNorm)]
    assert fakes and all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in fakes)
    with torch.no_grad():
        fakes[0].weight.fill_(3.0)
    from bench.models.norms import init_weights

    assert torch.all(init_weights(model).layer1[0].bn1.weight == 1)
    assert ("fake", "FakeNorm") in [(a.label, a.tags["norm"]) for a in norm_arms()]
    # the CLI's accepted values are the table's keys
    assert main(["measure", "resnet20", "--device", "cpu", "--no-speed", "--set", "model_kwargs.norm=bogus"]) == 2
    err = capsys.readouterr().err
    assert "'bogus'" in err and f"accepted: {', '.join(sorted(NORM_TABLE))}" in err


def test_units_table_is_read_by_models_and_the_bn_placement_study(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.models.units import BasicBlock
    from bench.models.units import CONV_UNITS
    from experiments.bn_placement import unit_arms

    arms = unit_arms("resnet20")
    residual = [(u, c.label) for u, c in UNITS.items() if c.identity_mappings]
    assert [a.label for a in arms if a.tags["family"] == "residual"] == list(FIVE_UNITS) == [u for u, _ in residual]
    assert [a.tags["unit"] for a in arms if a.tags["family"] == "residual"] == [lbl for _, lbl in residual]
    assert [(a.label, a.tags["unit"]) for a in arms if a.tags["family"] == "plain"] == [
        (f"plain_{u}", c.label) for u, c in CONV_UNITS.items()]

    class NewUnit(BasicBlock):
        label = "a new unit"

    monkeypatch.setitem(UNITS, "new_unit", NewUnit)
    assert type(create_model("resnet20", unit="new_unit").layer2[0]) is NewUnit
    new = [a for a in unit_arms("resnet20") if a.label == "new_unit"]
    assert len(new) == 1 and new[0].tags["unit"] == "a new unit"


# --------------------------------------------------------------------------- user errors


def test_unknown_model_suggests_close_matches() -> None:
    with pytest.raises(UserError, match=r"unknown model 'resnet21'.*did you mean.*resnet20"):
        create_model("resnet21")


def test_unknown_kwarg_names_it_and_the_accepted() -> None:
    with pytest.raises(UserError, match=r"'resnet20'.*'nrom'.*did you mean norm.*accepted:.*shortcut"):
        create_model("resnet20", nrom="gn")
    with pytest.raises(UserError, match=r"'stem'"):
        create_model("vgg16", stem="cifar")


@pytest.mark.parametrize(
    ("name", "kwargs", "pattern"),
    [
        ("resnet20", {"norm": "xx"}, r"unknown norm 'xx'.*accepted: bn, gn, in, ln, none"),
        ("resnet18", {"norm": "xx"}, r"unknown norm 'xx'"),
        ("resnet20", {"unit": "preact"}, r"unknown unit 'preact'.*full_preact"),
        ("resnet20", {"shortcut": "C"}, r"unknown shortcut 'C'.*A, B"),
        ("resnet20", {"unit": "original", "block": PreActBlock}, r"not both"),
        ("resnet32", {"unit": "preact_bottleneck"}, r"depth 32.*9n\+2"),
        ("cifar_resnet", {"depth": 21}, r"depth 21.*6n\+2"),
        ("resnet18", {"stem": "tiny"}, r"unknown stem 'tiny'.*cifar, imagenet"),
        ("googlenet", {"stem": "tiny"}, r"unknown stem"),
        ("convnet", {"unit": "bn"}, r"unknown unit 'bn'.*bn_relu, relu_bn"),
        ("resnet20", {"num_classes": 0}, r"num_classes must be a positive integer"),
        ("resnet20", {"norm": "gn", "groups": 0}, r"groups must be a positive integer"),
    ],
)
def test_bad_values_are_user_errors(name: str, kwargs: dict, pattern: str) -> None:
    with pytest.raises(UserError, match=pattern):
        create_model(name, **kwargs)


def test_duplicate_registration_raises() -> None:
    before = len(MODELS)
    with pytest.raises(ValueError, match="duplicate model name 'resnet20'"):
        register_model("resnet20")(lambda num_classes=10, in_channels=3: nn.Linear(1, 1))
    assert len(MODELS) == before


def test_list_models_pattern() -> None:
    assert list_models("plain*") == [f"plain{d}" for d in sorted(DEPTHS, key=str)]
    assert {"preact_resnet164", "preact_resnet1001"} <= set(list_models("preact_resnet*"))
