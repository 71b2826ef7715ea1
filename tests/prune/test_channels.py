import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgeprune.backends.onnxruntime import OnnxRuntimeBackend
from edgeprune.errors import ConfigError, ModelError, UnknownName
from edgeprune.models import LoadOptions, load_model
from edgeprune.prune.channels import prune_channels, replay_channels
from edgeprune.prune.importance import CRITERIA
from edgeprune.prune.rewrites import replay_rewrites, tied_parts
from edgeprune.types import PrunePlan
from tests.conftest import asset, tiny_vit
from tests.models.test_ultralytics import _recalibrate_bn as recalibrate_bn
from tests.prune.masking import masked_copy, relative_error, rewritten_copy

CONV_TYPES = (torch.nn.Conv2d, torch.nn.Linear)


def _load(spec: str):
    """A model spec, or a Darknet cfg under ../shared/assets (with its .weights when `+weights`)."""
    if spec.startswith("darknet/"):
        cfg, _, weights = spec.partition("+")
        path = asset(cfg)
        return load_model(str(path), LoadOptions(weights=str(path.with_suffix(".weights")) if weights else None))
    return load_model(spec)


def _random_init(model) -> bool:
    """Random-init models get their BN statistics recalibrated: some (ShuffleNet) otherwise barely tell inputs apart."""
    return model.weights is None


def _widths(module) -> dict[str, int]:
    return {name: m.out_channels if isinstance(m, torch.nn.Conv2d) else m.out_features
            for name, m in module.named_modules() if isinstance(m, CONV_TYPES)}  # fmt: skip


def _runtime_error(model, tmp_path, x) -> float:
    artifact = OnnxRuntimeBackend().export(model, tmp_path)
    with torch.inference_mode():
        reference = model.module(x).numpy()
    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    runtime = session.run(None, {artifact.inputs[0].name: x.numpy()})[0]
    return float(np.abs(runtime - reference).max() / np.ptp(reference))


@pytest.mark.parametrize(("spec", "rewrites"), [
    ("cifar:resnet56", ("cifar-option-a-shortcut-parts",)),
    ("torchvision:resnet18", ()),
    ("torchvision:mobilenet_v3_small", ()),
    ("torchvision:shufflenet_v2_x0_5", ("shufflenet-v2-shuffle-free",)),
    ("yolov3-tiny.yaml", ()),
    ("yolov8n.yaml", ("ultralytics-c2f-split-cv1",)),
    ("yolo11n.yaml", ("ultralytics-c2f-split-cv1", "ultralytics-c2psa-split-cv1")),
    ("darknet/alexeyab/yolov4-tiny.cfg", ("darknet-grouped-route-parts",)),
    ("darknet/yolo-fastest/yolo-fastest-1.1.cfg+weights", ()),
])  # fmt: skip
def test_30_percent_prunes_exactly_exports_and_replays(spec, rewrites, tmp_path):
    model = _load(spec)
    base_fingerprint = model.fingerprint
    size = model.inputs[0].shape[-1]
    if _random_init(model):
        recalibrate_bn(model.module, size)
    unpruned = rewritten_copy(model)

    plan = prune_channels(model, 0.3, "l1")

    assert plan.rewrites == rewrites and plan.base_fingerprint == base_fingerprint != model.fingerprint
    assert plan.params_after < 0.75 * plan.params_before and plan.macs_after < 0.75 * plan.macs_before
    assert sum(p.numel() for p in model.module.parameters()) == plan.params_after
    assert PrunePlan.from_json(plan.to_json()) == plan
    # the pruned model computes what the unpruned one computes with the removed channels zeroed at their source
    x = torch.rand(2, *model.inputs[0].shape[1:], generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        pruned_out, masked_out = model.module(x), masked_copy(unpruned, plan.channel_history)(x)
    assert relative_error(pruned_out[0], pruned_out[1]) > 1e-3  # the outputs depend on the input
    assert relative_error(pruned_out, masked_out) < 1e-4
    assert _runtime_error(model, tmp_path, x) <= 1e-4

    fresh = _load(spec)
    assert fresh.fingerprint == plan.base_fingerprint
    replay_rewrites(fresh, plan.rewrites)
    replay_channels(fresh, plan.channel_history)
    replayed, pruned = fresh.module.state_dict(), model.module.state_dict()
    assert {k: v.shape for k, v in replayed.items()} == {k: v.shape for k, v in pruned.items()}
    assert all(torch.equal(p, dict(model.module.named_parameters())[n]) for n, p in fresh.module.named_parameters())


@pytest.mark.parametrize(
    "spec", ["cifar:resnet56", "torchvision:mobilenet_v3_small", "darknet/alexeyab/yolov4-tiny.cfg"]
)
def test_round_to_keeps_widths_on_the_hardware_step(spec):
    model = _load(spec)
    before = _widths(rewritten_copy(model).module)
    prune_channels(model, 0.3, "l1", round_to=8)
    after = _widths(model.module)
    changed = [name for name in after if after[name] != before[name]]
    assert len(changed) > len(after) / 3
    for name in changed:
        assert after[name] % 8 == 0 or before[name] < 8, (name, before[name], after[name])
    model.module(*model.example_inputs(1))


@pytest.mark.parametrize("round_to", [None, 8])
@pytest.mark.parametrize("spec", ["cifar:resnet56", "darknet/alexeyab/yolov4-tiny.cfg"])
def test_no_layer_is_emptied_even_at_95_percent(spec, round_to):
    model = _load(spec)
    before = _widths(rewritten_copy(model).module)
    prune_channels(model, 0.95, "l1", round_to=round_to, global_ranking=True)
    after = _widths(model.module)
    minimum = {n: min(before[n], round_to or 1) for n in after}
    assert all(after[n] >= minimum[n] for n in after)
    # small layers are pruned down to the minimum, not left alone (torch-pruning alone skips them)
    assert sum(after.values()) < 0.5 * sum(before.values())
    assert any(after[n] == minimum[n] < before[n] for n in after)
    model.module(*model.example_inputs(1))


def test_global_ranking_keeps_grouped_route_parts_equal_and_exact():
    model = _load("darknet/alexeyab/yolov4-tiny.cfg")
    recalibrate_bn(model.module, 416)
    unpruned = rewritten_copy(model)
    plan = prune_channels(model, 0.4, "l1", global_ranking=True)
    widths = [tuple(conv.out_channels for conv in tie) for tie in tied_parts(model.module)]
    assert all(len(set(w)) == 1 for w in widths) and widths != [(32, 32), (64, 64), (128, 128)]
    x = torch.rand(1, 3, 416, 416, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert relative_error(model.module(x), masked_copy(unpruned, plan.channel_history)(x)) < 1e-4


@pytest.mark.parametrize("criterion", ["bn", *sorted(name for name, spec in CRITERIA.items() if spec.needs_data)])
def test_data_criteria_prune_a_real_network_exactly(criterion):
    model = load_model("cifar:resnet20")
    unpruned = rewritten_copy(model)
    g = torch.Generator().manual_seed(1)
    data = [(torch.rand(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(2)]
    plan = prune_channels(model, 0.3, criterion, data=data, global_ranking=True)
    assert plan.criterion == criterion and plan.params_after < plan.params_before
    x = data[0][0]
    with torch.no_grad():
        assert relative_error(model.module(x), masked_copy(unpruned, plan.channel_history)(x)) < 1e-4


@pytest.mark.parametrize("criterion", ["apoz", "thinet"])
def test_a_reader_criterion_scores_a_layer_read_several_times_per_channel(criterion):
    # SPPF's cv2 reads cv1's channels four times (x and three max-poolings of it); the group's score must still
    # have one entry per channel of cv1 (torch-pruning's own reduction sizes it 4x and the pruning fails)
    model = load_model("yolov8n.yaml", LoadOptions(input_shape=(1, 3, 160, 160)))
    recalibrate_bn(model.module, 160)
    unpruned = rewritten_copy(model)
    x = torch.rand(4, 3, 160, 160, generator=torch.Generator().manual_seed(2))
    plan = prune_channels(model, 0.3, criterion, data=[(x, None)])
    assert model.module.model[9].cv1.conv.out_channels < 128  # SPPF's cv1 (256 → 128 in yolov8n) was pruned too
    with torch.no_grad():
        assert relative_error(model.module(x)[0], masked_copy(unpruned, plan.channel_history)(x)[0]) < 1e-4


def test_options_are_checked():
    model = load_model("cifar:resnet20")
    for ratio in (1.0, -0.1, "0.3", True):
        with pytest.raises(ConfigError, match="ratio"):
            prune_channels(model, ratio, "l1")
    with pytest.raises(ConfigError, match="round_to 0"):
        prune_channels(model, 0.3, "l1", round_to=0)
    with pytest.raises(UnknownName, match="pruning criterion 'l2'"):
        prune_channels(model, 0.3, "l2")
    plan = prune_channels(model, 0.0, "l1")
    assert plan.channel_history == () and plan.params_after == plan.params_before


def test_replay_on_another_model_is_refused():
    plan = prune_channels(load_model("torchvision:resnet18"), 0.3, "l1")
    with pytest.raises(ModelError, match="does not fit cifar:resnet20"):
        replay_channels(load_model("cifar:resnet20"), plan.channel_history)


def test_protected_layers_are_the_outputs_and_detection_heads():
    from edgeprune.prune.groups import dependency_graph, protected_layers

    resnet = load_model("torchvision:resnet18")
    assert protected_layers(resnet, dependency_graph(resnet)) == [resnet.module.fc]
    yolo = load_model("yolov8n.yaml")
    head = yolo.module.model[-1]
    protected = protected_layers(yolo, dependency_graph(yolo))
    assert all(any(m is p for p in protected) for m in [*(b[-1] for b in (*head.cv2, *head.cv3)), head.dfl])
    tiny = _load("darknet/alexeyab/yolov4-tiny.cfg")
    protected = protected_layers(tiny, dependency_graph(tiny))
    blocks = tiny.module.blocks
    assert {i for i, b in enumerate(blocks) if any(getattr(b, "conv", None) is p for p in protected)} == {29, 36}


class _ChunkNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = torch.nn.Conv2d(3, 8, 1), torch.nn.Conv2d(4, 4, 1)

    def forward(self, x):
        _, second = self.conv1(x).chunk(2, 1)  # only the second half is read
        return self.conv2(second).mean((2, 3))


def test_a_channel_split_torch_pruning_would_map_wrongly_is_refused():
    from edgeprune.models.base import LoadedModel, image_input

    model = LoadedModel(module=_ChunkNet().eval(), spec="python:chunk", task="classification",
                        inputs=image_input(4, 4), preprocessing=None)  # fmt: skip
    with pytest.raises(ModelError, match="conv1 is split along channels"):
        prune_channels(model, 0.5, "l1")


def test_vision_transformer_keeps_whole_heads_and_its_hidden_dim(tmp_path):
    model = tiny_vit()
    plan = prune_channels(model, 0.3, "l1")
    net = model.module
    widths = {layer.self_attention.embed_dim for layer in net.encoder.layers}
    assert widths == {net.hidden_dim} == {net.conv_proj.out_channels} and net.hidden_dim < 48
    assert net.hidden_dim % 3 == 0 and net.encoder.layers[0].mlp[0].out_features < 96  # 3 heads of equal width
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = net(x)
    assert out.shape == (2, 10) and relative_error(out[0], out[1]) > 1e-3
    assert _runtime_error(model, tmp_path, x) <= 1e-4

    fresh = tiny_vit()
    replay_channels(fresh, plan.channel_history)
    assert fresh.module.hidden_dim == net.hidden_dim
    with torch.no_grad():
        assert torch.equal(fresh.module(x), out)


@pytest.mark.parametrize("name", ["swin_t", "maxvit_t"])
def test_architectures_torch_pruning_cannot_trace_are_refused_before_tracing(name):
    import torchvision

    from edgeprune.models.base import LoadedModel, image_input

    net = torchvision.models.get_model(name)
    model = LoadedModel(module=net.eval(), spec=f"torchvision:{name}", task="classification",
                        inputs=image_input(224, 224), preprocessing=None)  # fmt: skip
    with pytest.raises(ModelError, match=f"torchvision:{name}: torch-pruning cannot trace torchvision's"):
        prune_channels(model, 0.3, "l1")
