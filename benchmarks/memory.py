"""Peak memory of extraction and encoding on 1x and 8x the documents, each in a fresh process.

The parent saves the base documents' tokens once; each worker (``python benchmarks/memory.py
SPEC.json``) loads them, repeats them ``scale`` times (as one token array split into per-document
views, like the extraction script), loads the model or SAE, resets the kernel's peak-RSS
counter (``/proc/self/clear_refs``) and runs the stage. Reported per run:

- ``stage_peak_mb``: the highest resident set size during the stage alone (VmHWM after the
  reset; where the reset is not allowed, the process peak);
- ``process_peak_mb``: ``ru_maxrss`` of the whole process (model loading included);
- ``rss_before_mb``: resident size when the stage started (model, tokens, libraries);
- on CUDA, ``cuda_peak_mb``: ``torch.cuda.max_memory_allocated`` during the stage.

A stage whose memory is bounded by its batch size, not by the dataset, has the same peak at 8x
as at 1x (target: within 10%). The bare forward pass over the same batches (``forward``) is
measured the same way, without trimming the heap between batches: on CPU its peak grows with
the number of distinct batch shapes (glibc heap fragmentation), which extraction avoids by
handing freed pages back when its resident set grows (:class:`saeprobe.heap.HeapGuard`).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def save_tokens(path: Path, ids: list[np.ndarray], special: list[np.ndarray]) -> None:
    lengths = np.array([len(x) for x in ids], np.int64)
    np.savez(path, ids=np.concatenate(ids), special=np.concatenate(special), lengths=lengths)


def _load_tokens(path: Path, scale: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    z = np.load(path)
    ids, special, lengths = np.tile(z["ids"], scale), np.tile(z["special"], scale), np.tile(z["lengths"], scale)
    cuts = np.cumsum(lengths)[:-1]
    return np.split(ids, cuts), np.split(special, cuts)


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one stage as the spec says; return its memory figures."""
    import torch
    import zarr

    sys.path.insert(0, str(HERE))
    import setups

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    out = Path(spec["out"])
    result: dict[str, Any] = {"stage": spec["stage"], "scale": spec["scale"]}
    if spec["stage"] in ("extract", "forward"):
        import extraction

        from saeprobe.activations import extract

        (model_setup,) = [m for m in setups.from_options(spec["options"]) if m.name == spec["model"]]
        ids, special = _load_tokens(Path(spec["tokens"]), spec["scale"])
        model = model_setup.load(device, getattr(torch, spec["dtype"]))
        result["tokens"] = int(sum(len(x) for x in ids))
        if spec["stage"] == "extract":
            run = lambda: extract(model, ids, special, zarr.open_group(str(out), mode="w"), model_setup.layers,  # noqa: E731
                                  token_budget=spec["token_budget"],
                                  store_dtype=spec.get("store_dtype", model_setup.store_dtype))
        else:  # the bare forward pass over the same batches: what the model itself needs
            batches = [(x.to(device), m.to(device)) for x, m in extraction.saeprobe_batches(ids, spec["token_budget"])]
            run = lambda: extraction.run_bare(model, batches, model_setup.layers, device)  # noqa: E731
    else:
        from sae_lens import SAE

        from saeprobe.sae import encode_store
        from saeprobe.store import ActivationStore

        sae = SAE.load_from_disk(spec["sae"], device=str(device))
        store = ActivationStore(spec["store"])
        heldout = np.arange(int(store.doc_id.max()) + 1) % 5 == 0
        result["tokens"] = store.n_tokens
        run = lambda: encode_store(sae, store, spec["layer"], zarr.open_group(str(out), mode="w"),  # noqa: E731
                                   heldout_docs=heldout, batch_size=spec["batch_size"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result["rss_before_mb"] = _status_kb("VmRSS") / 1024
    result["peak_reset"] = _reset_peak()
    start = time.perf_counter()
    run()
    result["wall_s"] = time.perf_counter() - start
    result["stage_peak_mb"] = _status_kb("VmHWM") / 1024
    result["process_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def launch(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run :func:`worker` in a fresh Python process."""
    path = workdir / f"{spec['stage']}_{spec['scale']}.json"
    path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent / "src"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(HERE / "memory.py"), str(path)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker {spec['stage']} x{spec['scale']} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(Path(sys.argv[1]).read_text()))))
