"""HTTP API for the detector (FastAPI + uvicorn).

    dfd serve --model artifacts/model --host 127.0.0.1 --port 8000
    curl -F file=@face.jpg http://127.0.0.1:8000/predict

POST /predict (multipart field `file`) -> JSON; GET /health; GET /model (the model card).
The type is detected from the bytes, never the file name. Errors are JSON:
413 too large (bytes, or pixels: decompression bombs are refused from the header, before decoding),
415 not an image, 400 an image that does not decode. Decoding and the model run in a worker
thread, so the event loop (and /health) keeps answering while predictions run.
"""

import io
import json
import threading
from pathlib import Path

from fastapi import FastAPI, File, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image

# magic numbers of the formats Pillow decodes for us
SIGNATURES = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"GIF87a": "gif", b"GIF89a": "gif",
              b"BM": "bmp", b"II*\x00": "tiff", b"MM\x00*": "tiff"}


def sniff(data: bytes) -> "str | None":
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((kind for sig, kind in SIGNATURES.items() if data.startswith(sig)), None)


def create_app(model_dir: str | Path, max_bytes: int = 10 * 2**20, band: float = 0.1,
               max_pixels: int = 40_000_000):
    from starlette.concurrency import run_in_threadpool

    from ..data.images import to_rgb, to_tensor
    from .scoring import TorchScorer, verdict

    scorer = TorchScorer(model_dir)
    size, thr = scorer.image_size, scorer.threshold
    card_path = Path(model_dir) / "model_card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    lock = threading.Lock()  # one forward at a time: torch already uses every core
    app = FastAPI(title="deepfake-detector", version="0.1.0")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": message})

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/model")
    def model_card() -> dict:
        return {"threshold": thr, "image_size": size, "card": card}

    def score(data: bytes, kind: str) -> "dict | JSONResponse":
        """Decode + model, in a worker thread."""
        try:
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > max_pixels:  # header only: nothing decoded yet
                    return error(413, f"image of {img.width}x{img.height} pixels exceeds the {max_pixels}-pixel cap")
                img.load()
                rgb = to_rgb(img)
        except Image.DecompressionBombError as exc:
            return error(413, f"decompression bomb refused: {exc}")
        except Exception as exc:  # noqa: BLE001 - corrupt upload
            return error(400, f"corrupt {kind} image: {type(exc).__name__}: {exc}")
        arr = to_tensor(rgb, size)[None]
        with lock:
            prob = float(scorer.predict(arr)[0])
        return {"detected_type": kind, "fake_probability": round(prob, 6), **verdict(prob, thr, band),
                "threshold": thr}

    @app.post("/predict")
    async def predict(file: UploadFile = File(...)):
        data = await file.read(max_bytes + 1)
        if len(data) > max_bytes:
            return error(413, f"file larger than {max_bytes} bytes")
        kind = sniff(data)
        if kind is None:
            return error(415, "not an image (JPEG, PNG, GIF, BMP, TIFF or WebP expected; detected from content)")
        result = await run_in_threadpool(score, data, kind)
        return result if isinstance(result, JSONResponse) else {"filename": file.filename, **result}

    return app
