"""`facecloak.transforms.LeamOcclusion` in real albumentations pipelines and a 2-worker torch DataLoader.

Faces come from skimage's astronaut (installed with scikit-image), so only the weights are needed.
"""

from __future__ import annotations

import json
import multiprocessing
import pickle

import albumentations as A
import numpy as np
import pytest
import torch
from _protect_support import astronaut, need_weights

from facecloak.errors import ConfigError
from facecloak.protection.protect import default_detector
from facecloak.transforms import LeamOcclusion

FAST = {"models": ["mbf-arc"], "parser": "landmarks5"}
# Boxes and keypoints are passed through an image-only pipeline on purpose (to show they stay untouched).
pytestmark = pytest.mark.filterwarnings("ignore:Got processor for:UserWarning")


def _no_face(side: int = 96) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (side, side, 3), dtype=np.uint8)


def test_budget_and_fill_are_sampled_from_the_given_ranges() -> None:
    t = LeamOcclusion(**FAST, budget=(0.5, 3.0), fill=["black", "noise", "cloak"])
    t.set_random_seed(7)
    draws = [t.get_params() for _ in range(300)]
    budgets = np.array([d["leam_budget"] for d in draws])
    assert budgets.min() >= 0.5 and budgets.max() <= 3.0 and budgets.max() - budgets.min() > 2.0
    assert {d["leam_fill"] for d in draws} == {"black", "noise", "cloak"}
    assert len({d["leam_seed"] for d in draws}) == 300  # a fresh fill seed per image
    fixed = LeamOcclusion(**FAST, budget=2, fill="mean")
    assert {(d["leam_budget"], d["leam_fill"]) for d in (fixed.get_params() for _ in range(5))} == {(2.0, "mean")}
    t.set_random_seed(7)
    assert [t.get_params() for _ in range(300)] == draws  # the same seed draws the same parameters


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget": 0}, "budget must be a percentage in (0, 100]"),
        ({"budget": (3, 2)}, "low <= high"),
        ({"fill": "glitter"}, "unknown fill 'glitter'"),
        ({"fill": []}, "at least one fill"),
        ({"parser": "nose"}, "unknown parser"),
        ({"cloak_steps": -1}, "cloak_steps"),
        ({"device": "gpu-please"}, "unknown device"),
        *([] if torch.cuda.is_available() else [({"device": "cuda"}, "CUDA is not available")]),
    ],
)
def test_invalid_arguments_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("]", r"\]")):
        LeamOcclusion(**{**FAST, **kwargs})


def test_unknown_model_is_refused_without_loading_weights() -> None:
    from leam.registry import UnknownNameError

    with pytest.raises(UnknownNameError, match="mbf-arc"):
        LeamOcclusion(models=["mbf-arcc"])


def test_to_dict_from_dict_and_pickle_round_trips() -> None:
    pipeline = A.Compose([A.HorizontalFlip(p=0.5), LeamOcclusion(**FAST, budget=(1, 2), fill=["black", "noise"])])
    as_json = json.loads(json.dumps(A.to_dict(pipeline)))  # through real JSON: tuples come back as lists
    entry = as_json["transform"]["transforms"][1]
    assert entry == {
        "__class_fullname__": "facecloak.transforms.LeamOcclusion", "p": 1.0, "models": ["mbf-arc"],
        "budget": [1.0, 2.0], "fill": ["black", "noise"], "cloak_steps": 20, "parser": "landmarks5",
        "device": "cpu",
    }  # fmt: skip
    for restored in (A.from_dict(as_json), pickle.loads(pickle.dumps(pipeline))):
        t = restored.transforms[1]
        assert isinstance(t, LeamOcclusion)
        assert (t.models, t.budget, t.fill, t.cloak_steps, t.parser, t.device) == (
            ("mbf-arc",), (1.0, 2.0), ("black", "noise"), 20, "landmarks5", "cpu"
        )


@pytest.mark.real
def test_same_seed_same_output_and_faces_change_only_where_masked() -> None:
    need_weights()
    image = astronaut(256)

    def run(seed: int) -> np.ndarray:
        pipeline = A.Compose([LeamOcclusion(**FAST, budget=(1.0, 3.0), fill=["noise", "black"])], seed=seed)
        return pipeline(image=image)["image"]

    first, again, other = run(11), run(11), run(12)
    assert np.array_equal(first, again)
    changed = (first != image).any(2)
    assert 0 < changed.sum() < 0.05 * changed.size  # a few % of the face, nothing else
    (face,) = default_detector().detect(image)
    x1, y1, x2, y2 = face.box
    grow = 0.25 * max(x2 - x1, y2 - y1)  # the face region reaches a little beyond the detector's box
    ys, xs = np.nonzero(changed)
    assert xs.min() >= x1 - grow and xs.max() <= x2 + grow and ys.min() >= y1 - grow and ys.max() <= y2 + grow
    assert not np.array_equal(first, other)


@pytest.mark.real
def test_image_without_face_and_other_targets_pass_unchanged() -> None:
    need_weights()
    image = _no_face()
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[10:20, 10:30] = 1
    pipeline = A.Compose(
        [LeamOcclusion(**FAST)],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]),
        keypoint_params=A.KeypointParams(format="xy"),
        seed=0,
    )
    out = pipeline(image=image, mask=mask, bboxes=[(5, 6, 50, 60)], labels=[1], keypoints=[(12.5, 30.0)])
    assert np.array_equal(out["image"], image)
    assert np.array_equal(out["mask"], mask)
    assert np.allclose(out["bboxes"], [(5, 6, 50, 60)]) and list(out["labels"]) == [1]
    assert np.allclose(out["keypoints"], [(12.5, 30.0)])


class _Photos(torch.utils.data.Dataset):
    """Two face photos and one without a face, each with a mask, a box and a keypoint."""

    def __init__(self) -> None:
        face = astronaut(192)
        self.images = [face, np.ascontiguousarray(face[:, ::-1]), _no_face(128)]
        self.pipeline = A.Compose(
            [LeamOcclusion(**FAST, budget=(1.0, 2.0), fill=["black", "noise"])],
            bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]),
            keypoint_params=A.KeypointParams(format="xy"),
            seed=5,
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        image = self.images[index]
        mask = np.full(image.shape[:2], index, np.uint8)
        out = self.pipeline(image=image, mask=mask, bboxes=[(1, 2, 30, 40)], labels=[index], keypoints=[(3.0, 4.0)])
        return {
            "index": index, "image": out["image"], "mask": out["mask"], "bboxes": np.asarray(out["bboxes"]),
            "keypoints": np.asarray(out["keypoints"]), "pid": multiprocessing.current_process().pid,
        }  # fmt: skip


def _as_is(item: dict) -> dict:
    return item  # module level: spawned workers must be able to unpickle the collate function


@pytest.mark.real
@pytest.mark.slow
def test_two_worker_dataloader_loads_models_lazily_in_each_worker() -> None:
    need_weights()
    dataset = _Photos()
    # spawn: workers start without the parent's loaded models, so each one must load them itself (lazily).
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=2, multiprocessing_context="spawn", collate_fn=_as_is
    )
    items = sorted(loader, key=lambda item: item["index"])
    assert [item["index"] for item in items] == [0, 1, 2]
    assert len({item["pid"] for item in items}) == 2  # really two worker processes
    changed = []
    for item, original in zip(items, dataset.images, strict=True):
        assert np.array_equal(item["mask"], np.full(original.shape[:2], item["index"], np.uint8))
        assert np.allclose(item["bboxes"], [(1, 2, 30, 40)]) and np.allclose(item["keypoints"], [(3.0, 4.0)])
        changed.append(int((item["image"] != original).any(2).sum()))
    assert changed[0] > 0 and changed[1] > 0 and changed[2] == 0  # faces protected, the no-face image untouched
