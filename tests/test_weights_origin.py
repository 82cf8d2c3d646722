"""The model page says where the weights come from (issue 24 item 7.5): random weights as random, a checkpoint as
a checkpoint, and only published weights as trained by their publisher (no "as trained by Lucid" on others)."""

from kb.web.templating import published_weights, weights_origin


def test_each_kind_of_weights_is_said_as_it_is():
    random = {"source": "lucent:inceptionv1", "weights": "random seed=0 torch=2.14.1"}
    checkpoint = {"source": "lucent:inceptionv1", "weights": "checkpoint /data/mine.pth"}
    lucid = {"source": "lucent:inceptionv1", "weights": "lucid"}
    tv = {"source": "torchvision:googlenet", "weights": "IMAGENET1K_V1"}
    assert weights_origin(random) == "seeded random weights (random seed=0 torch=2.14.1): not trained, for testing"
    assert weights_origin(checkpoint) == "weights from a checkpoint (/data/mine.pth)"
    assert weights_origin(lucid) == "Lucid's trained weights lucid"
    assert weights_origin(tv) == "torchvision's trained weights IMAGENET1K_V1"
    assert [published_weights(m) for m in (random, checkpoint, lucid, tv)] == [False, False, True, True]


def test_the_model_page_on_random_weights(api):
    page = api.get("/n/inceptionv1").text
    assert "seeded random weights (random seed=0" in page and "not trained, for testing" in page
    assert "trained by" not in page and "Lucid&#39;s trained" not in page
