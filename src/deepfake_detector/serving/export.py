"""Export the detector to ONNX and check it against torch.

    dfd export artifacts/model                     # -> artifacts/model/detector.onnx (what `serve.backend: onnx` runs)

The file is written under a temporary name and renamed only once ONNX Runtime agrees with torch, so a reader (a
service replica starting) never sees half a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..model.checkpoint import load_detector
from ..model.novelty import features_and_logits


class _Outputs(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, logits = features_and_logits(self.model, image)  # (B, 3, S, S) in [0,1] -> (B,) logits, (B, D)
        return logits, feats


def export_onnx(model_dir: str | Path, out: str | Path, n_check: int = 8, seed: int = 0) -> dict:
    """Write the ONNX file (outputs: logit, features); return {"max_abs_diff": ...} between torch and ONNX
    Runtime logits."""
    import onnxruntime as ort

    model, info = load_detector(model_dir)
    size = int(info["image_size"])
    x = torch.rand(n_check, 3, size, size, generator=torch.Generator().manual_seed(seed))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    torch.onnx.export(_Outputs(model).eval(), (x,), str(tmp), input_names=["image"], output_names=["logit", "features"],
                      dynamic_axes={"image": {0: "batch"}, "logit": {0: "batch"}, "features": {0: "batch"}},
                      opset_version=17, dynamo=False)
    with torch.no_grad():
        ref = model(x).numpy()
    try:
        got = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"onnx": str(out), "max_abs_diff": float(np.abs(ref - got).max()), "n_checked": n_check,
            "image_size": size}
