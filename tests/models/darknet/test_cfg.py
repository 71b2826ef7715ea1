import pytest
import torch

from edgeprune.errors import ModelError
from edgeprune.models import LoadOptions
from edgeprune.models.darknet import DarknetModel, Section, load, parse_cfg, write_cfg
from tests.conftest import asset
from tests.models.darknet.conftest import CFGS

# (sections after [net], [yolo] layers), counted with grep in the cfg files
LAYERS = {"pjreddie/yolov3.cfg": (107, 3), "pjreddie/yolov3-tiny.cfg": (24, 2), "alexeyab/yolov4.cfg": (162, 3),
          "alexeyab/yolov4-tiny.cfg": (38, 2), "pjreddie/darknet53.cfg": (78, 0)}  # fmt: skip


@pytest.mark.parametrize("name", CFGS)
def test_every_cfg_parses_writes_back_and_rebuilds_the_same_network(name, tmp_path):
    path = asset(f"darknet/{name}")
    sections = parse_cfg(path)
    again = parse_cfg(write_cfg(sections, tmp_path / "again.cfg"))
    assert again == sections and [s.options for s in again] == [s.options for s in sections]
    if name in LAYERS:
        assert (len(sections) - 1, sum(s.kind == "yolo" for s in sections)) == LAYERS[name]
    # seeded alike, equal state dicts (names, shapes, values) mean equal networks; outputs: test_weights.py
    first = load(str(path), LoadOptions()).module.state_dict()
    second = load(str(tmp_path / "again.cfg"), LoadOptions()).module.state_dict()
    assert list(first) == list(second) and all(torch.equal(first[k], second[k]) for k in first)


def test_options_are_kept_as_darknet_reads_them(make_cfg):
    path = make_cfg("""
        # a comment
        ; another
        [convolutional]
        filters = 4   # inline comment
        size=3
        activation=leaky

        [yolo]
        mask = 0, 1
        anchors = 10,13,  16,30,
        classes=0
        num=2
    """)
    net, conv, yolo = parse_cfg(path)
    assert net.options == {"width": "8", "height": "8", "channels": "3"}
    assert conv.options == {"filters": "4", "size": "3", "activation": "leaky"}
    assert (conv.line, conv.option_lines["size"]) == (8, 10)
    assert yolo.integers("mask") == [0, 1] and yolo.numbers("anchors") == [10, 13, 16, 30]


def test_darknet_aliases_and_written_sections_round_trip(make_cfg, tmp_path):
    path = make_cfg("""
        [conv]
        filters=2
        [max]
        [avg]
        [soft]
    """)
    sections = parse_cfg(path)
    assert [s.kind for s in sections] == ["net", "convolutional", "maxpool", "avgpool", "softmax"]
    assert parse_cfg(write_cfg(sections, tmp_path / "out.cfg")) == sections
    made = [Section("net", {"width": "4", "height": "4", "channels": "1"}), Section("convolutional", {"filters": "1"})]
    assert parse_cfg(write_cfg(made, tmp_path / "made.cfg")) == made


MALFORMED = [
    ("[convolutional]\nfilters=2\n[bogus]\n", r"line 7: unknown section \[bogus\]"),
    ("[convolutional]\nfliters=2\n", r"line 6: .*unknown or unsupported option 'fliters' \(did you mean 'filters'\?\)"),
    ("[convolutional]\nfilters=2\ndilation=2\n", r"line 7: .*unsupported option 'dilation'"),
    ("[region]\n", r"line 5: Darknet layer \[region\] is not supported by edgeprune yet"),
    ("[convolutional]\nfilters\n", r"line 6: 'filters' is not an option"),
    ("[convolutional]\nfilters=2\nfilters=3\n", r"line 7: .*sets filters twice \(first on line 6\)"),
    ("[convolutional]\nfilters=two\n", r"line 6: \[convolutional\] filters=two is not an integer"),
    ("[convolutional]\nfilters=2\nactivation=gelu\n", r"line 7: .*activation=gelu is not supported"),
    ("[convolutional]\nfilters=-2\n", r"line 6: .*filters=-2 must be positive"),
    ("[convolutional]\nfilters=4\ngroups=3\n", r"line 7: .*groups=3 does not divide"),
    ("[convolutional]\nsize=9\n", r"line 6: .*size=9 does not fit its 8x8 input"),
    ("[convolutional]\n[route]\nlayers=-1,2\n", r"line 7: .*layers=-1,2 refers to layer 2.*earlier layers only"),
    ("[convolutional]\n[route]\nlayers=-3\n", r"line 7: .*refers to layer -2"),
    ("[convolutional]\n[shortcut]\nfrom=-2\n", r"line 7: .*from=-2 refers to layer -1"),
    (
        "[convolutional]\nfilters=4\n[convolutional]\nfilters=2\n[shortcut]\nfrom=-2\n",
        r"line 10: .*adds layer 0 of shape \(4, 8, 8\).*equal shapes only",
    ),
    (
        "[convolutional]\nfilters=12\n[yolo]\nmask=0,2\nanchors=1,1,2,2\nnum=2\nclasses=1\n",
        r"line 8: .*mask index 2 is not one of the num=2 anchors",
    ),
    (
        "[convolutional]\nfilters=12\n[yolo]\nanchors=1,1,2,2\nnum=3\nclasses=1\n",
        r"line 8: .*has 4 anchor numbers for num=3",
    ),
    (
        "[convolutional]\nfilters=10\n[yolo]\nanchors=1,1,2,2\nnum=2\nclasses=1\n",
        r"line 7: .*reads 10 channels, but 2 anchors x \(5 \+ classes=1\) need 12",
    ),
    (
        "[convolutional]\nfilters=12\n[yolo]\nanchors=1,1,2,2\nnum=2\nclasses=1\nnew_coords=1\n",
        r"line 11: .*new_coords=1 .*not supported yet",
    ),
    (
        "[convolutional]\nfilters=12\n[yolo]\nanchors=1,1,2,2\nnum=2\nclasses=1\n[convolutional]\n",
        r"line 11: .*\(layer 2\) reads the output of \[yolo\] layer 1",
    ),
    ("[route]\ngroups=2\nlayers=-1\n", r"line 7: .*refers to layer -1"),
    ("[upsample]\nstride=-2\n", r"line 6: .*downsampling upsample layers are not supported"),
    ("[net]\nwidth=8\n", r"line 5: \[net\] \(layer 0\) appears again"),
    ("[convolutional]\nsize=3\npadding=-2\n", r"line 7: .*padding=-2 is negative"),
    ("[convolutional]\nstride=4294967297\n", r"line 6: .*stride=4294967297 is outside the 32-bit integers"),
    ("[convolutional]\n[dropout]\nprobability=1\n", r"line 7: .*probability=1 is not a probability of dropping"),
    ("[convolutional]\n[softmax]\ntemperature=0\n", r"line 7: .*temperature=0 must be positive"),
    # 2e9 x 3 x 9 x 9 weights and 2e9 biases (1.95 TB) fit no machine: refused before anything is allocated
    (
        "[convolutional]\nsize=9\npad=1\nfilters=2000000000\n",
        r"line 8: \[convolutional\] \(layer 0\) needs .* GiB at batch 1 in float32 \(488,000,000,000 parameters "
        r"up to it and a 2000000000x8x8 output\), more than the .* this machine has available",
    ),
]


@pytest.mark.parametrize("body, message", MALFORMED, ids=[m[1][:40] for m in MALFORMED])
def test_malformed_cfgs_name_the_line(make_cfg, body, message):
    with pytest.raises(ModelError, match=message):
        load(str(make_cfg(body)), LoadOptions())


def test_file_level_problems_are_model_errors(make_cfg, tmp_path):
    with pytest.raises(ModelError, match="cfg file not found"):
        parse_cfg(tmp_path / "none.cfg")
    (tmp_path / "binary.cfg").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ModelError, match="not a text file"):
        parse_cfg(tmp_path / "binary.cfg")
    (tmp_path / "headless.cfg").write_text("\nwidth=3\n[net]\n")
    with pytest.raises(ModelError, match="line 2: option 'width=3' before the first"):
        parse_cfg(tmp_path / "headless.cfg")
    (tmp_path / "conv_first.cfg").write_text("[convolutional]\n[net]\n")
    with pytest.raises(ModelError, match=r"does not start with a \[net\]"):
        parse_cfg(tmp_path / "conv_first.cfg")
    (tmp_path / "empty_net.cfg").write_text("[net]\nwidth=8\n")
    with pytest.raises(ModelError, match="no layers"):
        parse_cfg(tmp_path / "empty_net.cfg")
    with pytest.raises(ModelError, match=r"tiny.cfg line 1: \[net\] needs channels="):
        DarknetModel([Section("net", {"width": "8", "height": "8"}, line=1, path="tiny.cfg"), Section("avgpool")])
