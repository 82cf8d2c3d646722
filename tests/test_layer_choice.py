"""Any model's significant layers and input shape, resolved from its source (issue 26): the default rule, --layers
names and globs, one-line refusals, and keys with module paths. No database: these read models only."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kb.graph import zoo
from kb.graph.keys import Catalog, LayerRef, ModelRef
from kb.graph.zoo import any_model

pytestmark = pytest.mark.database_free  # pure torch/numpy: the same on either backend (see conftest)

sys.path.insert(0, str(Path(__file__).parent))  # user_models: a researcher's own code


def names(arch) -> list[str]:
    return [spec.name for spec in arch.layers]


@pytest.mark.parametrize(
    "source, expected",
    [
        (
            "torchvision:resnet18",
            ["conv1", *(f"layer{s}.{b}" for s in (1, 2, 3, 4) for b in (0, 1)), "fc"],
        ),
        (
            "torchvision:squeezenet1_1",
            ["features.0", *(f"features.{i}" for i in (3, 4, 6, 7, 9, 10, 11, 12)), "classifier"],
        ),
        (
            "torchvision:shufflenet_v2_x0_5",
            ["conv1", *(f"stage{s}.{i}" for s, n in ((2, 4), (3, 8), (4, 4)) for i in range(n)), "conv5", "fc"],
        ),
        ("torchvision:mobilenet_v3_small", [*(f"features.{i}" for i in range(13)), "classifier.0", "classifier.3"]),
        ("timm:resnet10t", ["conv1.0", "conv1.3", "conv1.6", "layer1.0", "layer2.0", "layer3.0", "layer4.0", "fc"]),
    ],
)
def test_default_rule_takes_each_block_and_the_classifier(source, expected):
    arch = zoo.get(source)
    assert names(arch) == expected
    assert arch.trunk == ()  # traced, not declared
    assert arch.source == source and arch.layers_by_path
    assert all(spec.module == spec.name for spec in arch.layers)  # the key is the module path


def test_stages_with_a_downsample_are_walked_into_their_blocks():
    arch = zoo.get("timm:convnext_atto")
    got = names(arch)
    assert got[:4] == ["stem", "stages.0.blocks.0", "stages.0.blocks.1", "stages.1.downsample"]
    assert got[-1] == "head"
    regnet = names(zoo.get("timm:regnetx_002"))  # a stage of its blocks in a row, without an nn.Sequential
    assert regnet[:5] == ["stem", "s1", "s2", "s3.b1", "s3.b2"] and regnet[-1] == "head"


def test_input_shape_from_the_model_or_the_flag():
    assert zoo.get("timm:resnet10t").input_shape == (3, 176, 176)  # timm's pretrained_cfg
    assert zoo.get("torchvision:resnet18").input_shape == (3, 224, 224)
    assert zoo.get("torchvision:resnet18", input_shape=(3, 64, 64)).input_shape == (3, 64, 64)
    mine = zoo.get("module:user_models:four_channel_net")
    assert mine.input_shape == (4, 224, 224)  # the first convolution's in_channels
    assert names(mine) == ["stem", "stages.0", "stages.1", "head"]
    assert zoo.get("module:user_models:four_channel_net", input_shape=(4, 32, 48)).input_shape == (4, 32, 48)
    assert any_model.parse_input_shape("4,64,64") == (4, 64, 64)
    with pytest.raises(any_model.SourceProblem, match="CHANNELS,HEIGHT,WIDTH"):
        any_model.parse_input_shape("64x64")


def test_layers_by_name_and_glob_in_forward_order():
    arch = zoo.get("torchvision:resnet18", layers="layer2.*,layer1,fc")
    assert names(arch) == ["layer1", "layer2.0", "layer2.1", "fc"]  # '*' stays within one name
    everything = names(zoo.get("torchvision:resnet18", layers="layer4.1.**"))
    assert "layer4.1.conv1" in everything and "layer4.1.bn2" in everything


def test_unknown_layer_gets_one_line_with_the_nearest():
    with pytest.raises(zoo.UnknownArchitecture) as exc:
        zoo.get("torchvision:resnet18", layers="layer1,layr2.0")
    message = str(exc.value)
    assert "\n" not in message
    assert "no module 'layr2.0'" in message and "layer2.0" in message


def test_a_module_that_runs_twice_is_refused():
    with pytest.raises(zoo.UnknownArchitecture, match=r"'layer1.0.relu' runs 2 times"):
        zoo.get("torchvision:resnet18", layers="layer1.0.relu")


def test_unknown_sources_name_the_nearest():
    with pytest.raises(zoo.UnknownArchitecture, match="nearest: resnet18"):
        zoo.get("torchvision:resnet17")
    with pytest.raises(zoo.UnknownArchitecture, match="unknown timm model 'timm:no_such_net'"):
        zoo.get("timm:no_such_net")
    with pytest.raises(zoo.UnknownArchitecture, match=r"not a torch\.nn\.Module"):
        zoo.get("module:user_models:not_a_model")
    with pytest.raises(zoo.UnknownArchitecture, match="has no callable 'nope'"):
        zoo.get("module:user_models:nope")
    with pytest.raises(zoo.UnknownArchitecture, match="cannot import no_such_package"):
        zoo.get("module:no_such_package.models:build")
    with pytest.raises(zoo.UnknownArchitecture, match=r"expected module:package\.module:factory"):
        zoo.get("module:user_models")


def test_the_zoo_keeps_precedence_for_its_sources():
    declared = zoo.get("torchvision:resnet50")
    assert declared.trunk and not declared.layers_by_path
    assert names(declared)[0] == "conv1" and declared.layer("conv1").module == "relu"
    with pytest.raises(zoo.UnknownArchitecture, match="declared in the zoo"):
        zoo.get("torchvision:resnet50", layers="layer1.*")


def test_a_layer_chosen_at_import_is_found_by_its_path():
    """Render workers resolve the architecture from its source alone: a --layers choice is found by module path."""
    arch = zoo.get("torchvision:resnet18")
    assert arch.layer("layer3.1.conv2").module == "layer3.1.conv2"


def test_module_path_keys_parse():
    layers = tuple(LayerRef(n, n, 8) for n in ("conv1", "layer3.1", "features.10", "stages.1.downsample"))
    catalog = Catalog([ModelRef("resnet18", "ab" * 32, layers)])
    assert str(catalog.neuron("resnet18/layer3.1:7")) == "resnet18/layer3.1:7"
    assert str(catalog.neuron("resnet18/layer3_1:7")) == "resnet18/layer3.1:7"  # lucent's underscore names
    assert str(catalog.neuron("resnet18 layer3.1:7")) == "resnet18/layer3.1:7"
    assert str(catalog.neuron(f"resnet18@{'ab' * 6}/stages.1.downsample:3")) == "resnet18/stages.1.downsample:3"
    assert str(catalog.neuron("/n/resnet18/features.10/2")) == "resnet18/features.10:2"
    assert str(catalog.neuron("models/resnet18/layer3_1_0/7")) == "resnet18/layer3.1:7"  # Microscope's
    assert str(catalog.neuron("layer3.1:7", default_model="resnet18")) == "resnet18/layer3.1:7"
    assert str(catalog.layer("resnet18/layer3.1")) == "resnet18/layer3.1"
    assert catalog.neuron("resnet18/layer3.1:7").path() == "/n/resnet18/layer3.1/7"


def test_default_keys():
    assert any_model.default_key("torchvision:resnet18") == "resnet18"
    assert any_model.default_key("timm:resnet18.a1_in1k") == "resnet18-a1_in1k"
    assert any_model.default_key("module:lab.nets:build_resnet") == "build_resnet"
