import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.errors import ConfigError
from edgeprune.train.data import Augmentation, TensorSamples, augment
from edgeprune.train.finetune import FinetuneRecipe, evaluate_top1
from edgeprune.train.finetune import finetune_classifier as _finetune_streamed

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _data(n=256, seed=0):
    """Two classes told apart by the mean brightness of the red channel."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.normal(0, 0.3, (n, 3, 8, 8)).astype(np.float32)
    images[:, 0] += np.where(labels == 1, 1.0, -1.0)[:, None, None]
    return images, labels


def finetune_classifier(model, images, labels, recipe, **kwargs):
    """The streamed trainer on in-memory samples, in this process (no decoding workers)."""
    kwargs.setdefault("num_workers", 0)
    return _finetune_streamed(model, TensorSamples(images, labels), recipe, **kwargs).losses


def top1(model, images, labels) -> float:
    return evaluate_top1(model, TensorSamples(images, labels), num_workers=0)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )


def test_finetuning_learns_a_separable_task_and_lowers_the_loss():
    images, labels = _data()
    model = _net()
    before = top1(model, images, labels)
    losses = finetune_classifier(
        model, images, labels, FinetuneRecipe(epochs=8, batch_size=32, lr=0.05), mean=MEAN, std=STD
    )
    held_out = _data(seed=1)
    assert losses[-1] < losses[0] * 0.5
    assert top1(model, *held_out) > max(0.95, before)
    assert not model.training


def test_same_seed_same_weights():
    images, labels = _data()
    a, b = _net(), _net()
    recipe = FinetuneRecipe(epochs=2, batch_size=64)
    finetune_classifier(a, images, labels, recipe, mean=MEAN, std=STD)
    finetune_classifier(b, images, labels, recipe, mean=MEAN, std=STD)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_sparsity_drives_bn_gamma_down():
    images, labels = _data()
    plain, sparse = _net(), _net()
    finetune_classifier(plain, images, labels, FinetuneRecipe(epochs=4, batch_size=32, lr=0.05), mean=MEAN, std=STD)
    finetune_classifier(
        sparse, images, labels, FinetuneRecipe(epochs=4, batch_size=32, lr=0.05, sparsity=0.5), mean=MEAN, std=STD
    )
    assert sparse[1].weight.abs().sum() < 0.7 * plain[1].weight.abs().sum()


def test_distillation_pulls_the_student_towards_the_teacher():
    images, labels = _data()
    teacher = _net()
    finetune_classifier(teacher, images, labels, FinetuneRecipe(epochs=6, batch_size=32, lr=0.05), mean=MEAN, std=STD)
    student = _net()
    finetune_classifier(
        student,
        images,
        labels,
        FinetuneRecipe(epochs=3, batch_size=32, distill_alpha=1.0, lr=0.05),
        mean=MEAN,
        std=STD,
        teacher=teacher,
    )
    assert top1(student, images, labels) > 0.9  # learnt from soft targets alone
    with pytest.raises(ConfigError, match="teacher"):
        finetune_classifier(_net(), images, labels, FinetuneRecipe(epochs=1, distill_alpha=0.5), mean=MEAN, std=STD)


def test_augmentation_pads_with_black_and_keeps_the_shape():
    padded = Augmentation.of(4, False, MEAN, STD)
    out = torch.stack([augment(torch.ones(3, 8, 8), padded, torch.Generator().manual_seed(i)) for i in range(64)])
    assert out.shape == (64, 3, 8, 8)
    values = set(out.unique().tolist())
    assert values <= {1.0, -2.0} and -2.0 in values  # original pixels and black (0 - 0.5) / 0.25
    flipping = Augmentation.of(0, True, MEAN, STD)
    rows = [augment(torch.arange(8.0).expand(3, 8, 8).clone(), flipping, torch.Generator().manual_seed(i))[0, 0]
            for i in range(16)]  # fmt: skip
    assert {tuple(row.tolist()) for row in rows} == {tuple(range(8)), tuple(range(7, -1, -1))}


def test_bad_recipes_are_config_errors():
    with pytest.raises(ConfigError):
        FinetuneRecipe(epochs=-1).check()
    with pytest.raises(ConfigError):
        FinetuneRecipe(epochs=1, distill_alpha=2).check()


def test_a_model_pruned_between_epochs_trains_on_with_its_new_parameters():
    import torch_pruning as tp

    images, labels = _data()
    model = _net()
    at_prune = {}

    def before_epoch(epoch: int) -> bool:
        if epoch != 2:
            return False
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, 3, 8, 8))
        graph.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[0, 1, 2, 3]).prune()
        at_prune.update(conv=model[0].weight.detach().clone(), head=model[5].weight.detach().clone())
        return True

    recipe = FinetuneRecipe(epochs=6, batch_size=32, lr=0.05)
    losses = finetune_classifier(model, images, labels, recipe, mean=MEAN, std=STD, before_epoch=before_epoch)
    assert model[0].weight.shape[0] == 4 and model[5].weight.shape == (2, 4)
    # the tensors pruning put in place were the ones trained afterwards (not the optimizer's stale originals)
    assert not torch.equal(model[0].weight.detach(), at_prune["conv"])
    assert not torch.equal(model[5].weight.detach(), at_prune["head"])
    assert losses[-1] < losses[2] and top1(model, *_data(seed=1)) > 0.95


def test_without_a_rebind_the_pruned_tensors_would_not_train():
    """The counterfactual for the test above: a hook that prunes but says it did not leaves the new tensors frozen."""
    import torch_pruning as tp

    images, labels = _data()
    model = _net()
    at_prune = {}

    def silent_prune(epoch: int) -> bool:
        if epoch == 1:
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, 3, 8, 8))
            graph.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[0, 1]).prune()
            at_prune["conv"] = model[0].weight.detach().clone()
        return False

    finetune_classifier(
        model,
        images,
        labels,
        FinetuneRecipe(epochs=3, batch_size=32, lr=0.05),
        mean=MEAN,
        std=STD,
        before_epoch=silent_prune,
    )
    assert torch.equal(model[0].weight.detach(), at_prune["conv"])
