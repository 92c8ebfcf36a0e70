"""Why the feature term does not help: per source, the cosine of every LEAM default layer's activation (and of the
embedding) between the protected and the clean crop (exact alignment), for `cloak5-eot-4src` at several feature
weights. Run from the repository root; prints activation-cosines.txt:

    python bench/results/independent-features-lfw/activation_cosines.py 0,1,4,16 \
        ../shared/faces/lfw/Catherine_Deneuve/Catherine_Deneuve_0001.jpg \
        ../shared/faces/lfw/Bill_Callahan/Bill_Callahan_0001.jpg
"""

import sys
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

import facecloak
from bench.independent import _ablation
from facecloak.masking.stage import align_faces, model_templates
from facecloak.models import cached_model, get_spec
from facecloak.photos.io import read_image
from facecloak.protection.levels import CLOAK_SOURCES


def activations(image: np.ndarray, faces: list, matrices: Mapping[str, np.ndarray]
                ) -> dict[str, dict[str, torch.Tensor]]:  # fmt: skip
    batch = align_faces(image, faces, (), crop_templates=model_templates(CLOAK_SOURCES), matrices=matrices)
    out = {}
    for model_id in CLOAK_SOURCES:
        module = cached_model(model_id)
        store: dict[str, torch.Tensor] = {}
        hooks = [module.get_submodule(layer).register_forward_hook(
                     lambda _m, _i, o, layer=layer, store=store: store.__setitem__(layer, o.flatten(1)))
                 for layer in get_spec(model_id).default_layers]
        with torch.no_grad():
            store["emb"] = module(batch.for_model(model_id))
        for hook in hooks:
            hook.remove()
        out[model_id] = store
    return out


weights = [float(w) for w in sys.argv[1].split(",")]
base = _ablation()["cloak5-eot-4src"].cloak
for path in sys.argv[2:]:
    rgb = read_image(path).rgb
    for w in weights:
        result = facecloak.protect(rgb, models=CLOAK_SOURCES, budget=5.0, fill="cloak", seed=0,
                                   cloak_settings=replace(base, features=w))
        faces = [f.face for f in result.faces]
        matrices = align_faces(rgb, faces, model_templates(CLOAK_SOURCES)).matrices
        protected, clean = activations(result.image, faces, matrices), activations(rgb, faces, matrices)
        print(path.split("/")[-1], f"w={w:g}", " | ".join(
            f"{m} " + " ".join(f"{k}:{F.cosine_similarity(protected[m][k], clean[m][k], dim=1).item():.3f}"
                               for k in protected[m])
            for m in CLOAK_SOURCES), flush=True)
