"""What the arcface verifier's old path cost: RSS and seconds of `import insightface` and of `model_zoo.get_model`
for fr_feature.onnx, against a plain onnxruntime session of the same file (after torch, cv2, onnxruntime and dlib
are loaded, as in a protect run). Usage: python import_cost.py (from a checkout with mbf-arc pulled)"""

import time
import warnings

import cv2  # noqa: F401  (loaded before, as in a protect run)
import dlib  # noqa: F401
import onnxruntime
import torch  # noqa: F401

from facecloak.models.mbf_arc import ONNX_FILE, SOURCE
from facecloak.models.pull import cached_source_files


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))


path = str(cached_source_files(SOURCE, "the import-cost measurement")[ONNX_FILE])
before, start = rss_mb(), time.perf_counter()
session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
print(f"onnxruntime session of fr_feature.onnx: +{rss_mb() - before:.0f} MB, {time.perf_counter() - start:.2f} s")
before, start = rss_mb(), time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import insightface  # noqa: F401
print(f"import insightface: +{rss_mb() - before:.0f} MB, {time.perf_counter() - start:.2f} s")
from insightface.model_zoo import get_model  # noqa: E402

before, start = rss_mb(), time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    model = get_model(path, providers=["CPUExecutionProvider"])
print(f"model_zoo.get_model of fr_feature.onnx: +{rss_mb() - before:.0f} MB, {time.perf_counter() - start:.2f} s")
