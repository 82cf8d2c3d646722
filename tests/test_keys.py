"""The resolver: every form researchers write a neuron in resolves to the canonical key."""

import pytest

from kb.graph.keys import BadKey, Catalog, LayerRef, ModelRef, NotFound, Removed

SHA = "0123456789abcdef" * 4
CATALOG = Catalog(
    [
        ModelRef(
            "inceptionv1",
            SHA,
            (
                LayerRef("conv2d0", "conv2d0", 64, ("conv2d0_pre_relu_conv",)),
                LayerRef("mixed4b", "mixed4b", 512, ("4b",)),
                LayerRef("mixed4c", "mixed4c", 512, ("4c",)),
            ),
        ),
        ModelRef("resnet50", "f" * 64, (LayerRef("layer3.5", "layer3.5", 1024, ("3.5",)),)),
        ModelRef("googlenet", "e" * 64, (LayerRef("inception4c", "inception4c", 512, ("4c", "mixed4c")),)),
        ModelRef("oldnet", "d" * 64, (), removed=True),
    ]
)


@pytest.mark.parametrize(
    "text",
    [
        "inceptionv1/mixed4c:447",
        "InceptionV1 4c:447",
        "inceptionv1 mixed4c:447",
        "INCEPTIONV1/4c:447",
        "inceptionv1@0123456789ab/mixed4c:447",
        "models/inceptionv1/mixed4c_0/447",
        "https://microscope.openai.com/models/inceptionv1/mixed4c_0/447",
        "https://microscope.openai.com/models/inceptionv1/mixed4c_0/447/",
        "/n/inceptionv1/mixed4c/447",
        "http://kb.example.org/n/inceptionv1@0123456789ab/mixed4c/447",
        "  inceptionv1/mixed4c:447  ",
    ],
)
def test_forms_resolve_to_the_canonical_key(text):
    assert str(CATALOG.neuron(text)) == "inceptionv1/mixed4c:447"


def test_bare_layer_needs_a_model():
    assert str(CATALOG.neuron("mixed4c:447", default_model="inceptionv1")) == "inceptionv1/mixed4c:447"
    with pytest.raises(BadKey, match="names no model"):
        CATALOG.neuron("mixed4c:447")


def test_module_paths_and_lucent_names():
    assert str(CATALOG.neuron("resnet50/layer3.5:12")) == "resnet50/layer3.5:12"
    assert str(CATALOG.neuron("resnet50/layer3_5:12")) == "resnet50/layer3.5:12"
    assert str(CATALOG.neuron("inceptionv1/conv2d0_pre_relu_conv:3")) == "inceptionv1/conv2d0:3"
    assert str(CATALOG.neuron("GoogLeNet 4c:447")) == "googlenet/inception4c:447"


def test_pinned_key_of_other_weights_is_an_error():
    with pytest.raises(BadKey, match="not the model version"):
        CATALOG.neuron("inceptionv1@ffffffffffff/mixed4c:447")


def test_unknown_layer_gets_a_suggestion():
    with pytest.raises(NotFound) as e:
        CATALOG.neuron("InceptionV1 4x:447")
    assert e.value.code == "NOT_FOUND" and e.value.suggestion in {"inceptionv1/mixed4b", "inceptionv1/mixed4c"}
    assert "did you mean inceptionv1/mixed4" in str(e.value)


def test_unknown_model_gets_a_suggestion():
    with pytest.raises(NotFound) as e:
        CATALOG.neuron("inceptionv2/mixed4c:447")
    assert e.value.suggestion == "inceptionv1"


def test_index_out_of_range():
    with pytest.raises(NotFound, match="512 units"):
        CATALOG.neuron("inceptionv1/mixed4c:512")


def test_removed_model_resolves_to_removed():
    with pytest.raises(Removed, match="removed"):
        CATALOG.neuron("oldnet/conv1:0")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "inceptionv1/mixed4c",
        "inceptionv1/mixed4c:-1",
        "a/b:c",
        "x" * 600,
        "inceptionv1/mixed4c:447; drop table",
    ],
)
def test_malformed_keys(text):
    with pytest.raises(BadKey):
        CATALOG.neuron(text)


def test_layer_keys():
    assert str(CATALOG.layer("inceptionv1/mixed4c")) == "inceptionv1/mixed4c"
    assert str(CATALOG.layer("InceptionV1 4c")) == "inceptionv1/mixed4c"
    assert str(CATALOG.layer("4c", default_model="inceptionv1")) == "inceptionv1/mixed4c"
