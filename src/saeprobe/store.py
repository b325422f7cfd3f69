"""Ragged per-token stores in Zarr: dense activations and sparse SAE codes.

Both stores hold a variable number of tokens per document, concatenated along axis 0:

- ``offsets`` (n_docs + 1, int64): stored document i is rows ``offsets[i]:offsets[i+1]``;
- ``doc_id`` (n_docs, int64): the dataset doc_id of stored document i (documents are stored
  in processing order — length-sorted — not doc_id order);
- ``special`` (n_tokens, bool): the token is a special token (BOS/CLS/SEP/EOS). Padding is
  never stored.

Dense activation store (``activations/{model}/{dataset}.zarr``): one array ``layer_{L}`` of
shape (n_tokens, d_model) per layer, float16 or float32, chunked along tokens
(:data:`ACTIVATION_CHUNK_TOKENS` rows per chunk; stores written before are 16,384 rows per
chunk, and read the same way).

Sparse code store (``features/.../layer_{L}.zarr``): CSR over tokens — ``indptr``
(n_tokens + 1, int64), ``indices`` (nnz, int32, feature index), ``values`` (nnz, float32) —
with ``attrs['d_sae']``.

Every chunk ends with a CRC32C checksum (:func:`compressors`), verified on read before Blosc
decodes it, and the readers turn any decode error into a :class:`~saeprobe.errors.CacheError`
naming the store and the chunk.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from saeprobe.io import damaged, reading

CHUNK_TOKENS = 16384
# Dense activation chunks are smaller: 4,096 rows (19 MB of float16 Gemma-2B rows), written
# WRITE_ROWS (4 chunks) per ``append``, which Zarr compresses concurrently (one
# ``asyncio.to_thread`` per chunk, up to ``async.concurrency`` = 10 at a time), and one writer
# thread per layer (:class:`BackgroundWriter`). A 16,384-row chunk is compressed by one thread
# only: ~0.22 s per 75 MB chunk, so a GPU producing ~1.3 GB/s of activations would wait.
ACTIVATION_CHUNK_TOKENS = 4096
WRITE_ROWS = 16384
COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")
# Dense activations: LZ4 level 1 after bit-shuffling. On MiniLM's float16 residual stream (16,384
# rows of layer 4, one core): ratio 0.747 at 1.42 GB/s, against 0.738 at 1.01 GB/s for level 5
# and 0.783 at 0.20 GB/s for zstd-3 with byte shuffling; decompression 2.3 GB/s for both LZ4
# levels. Byte-shuffled LZ4 is faster still (2.5 GB/s) but does not compress (0.998). One writer
# core then outruns an H200's Gemma 2 2B forward pass (~1.3 GB/s of three float16 layers, see
# benchmarks/extraction.py), and there is one writer thread per layer. Sparse codes keep zstd-3
# (indices compress 15% better with it, and there are few bytes to write).
ACTIVATION_COMPRESSOR = BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle")


def compressors(compressor: BloscCodec = COMPRESSOR) -> list[Any]:
    """The bytes-to-bytes codecs of every array saeprobe writes: ``compressor``, then CRC32C.

    The checksum covers the compressed bytes, so on read a truncated or altered chunk fails its
    check (``ValueError``) before Blosc decodes it: Blosc given garbage can crash the process.
    """
    return [compressor, Crc32cCodec()]


def create_array(group: zarr.Group, name: str, row_shape: tuple[int, ...], dtype: Any, chunk_rows: int,
                 compressor: BloscCodec = COMPRESSOR) -> zarr.Array:
    """An empty array of shape (0, *row_shape), chunked by ``chunk_rows`` rows, for appending."""
    return group.create_array(
        name, shape=(0, *row_shape), chunks=(chunk_rows, *row_shape), dtype=dtype, compressors=compressors(compressor)
    )


class AppendWriter:
    """Appends rows to a Zarr array, writing only whole chunks until :meth:`close`.

    Rows are copied (and cast to the array's dtype) into one preallocated buffer of
    ``chunks_per_write`` chunks, which is written (one ``append``: Zarr compresses its chunks
    concurrently) when full; a write of at least that many rows arriving at an empty buffer goes
    straight to the array. So every chunk is written once, never read back and rewritten, and
    memory is one buffer per array (allocated once: no per-batch buffers for the allocator to
    fragment). The chunk bytes do not depend on ``chunks_per_write``.
    """

    def __init__(self, array: zarr.Array, chunks_per_write: int = 1):
        self.array = array
        self.chunk = array.chunks[0]
        self.step = self.chunk * max(1, chunks_per_write)  # rows per append
        self.buf: np.ndarray | None = None
        self.n_buf = 0
        self.n_written = 0

    def write(self, rows: np.ndarray) -> None:
        """Append ``rows`` ((n, *row_shape), any dtype castable to the array's).

        Raises:
            ValueError: rows of another row shape.
        """
        rows = np.asarray(rows)
        if rows.shape[1:] != self.array.shape[1:]:
            raise ValueError(f"{self.array.name}: rows of shape {rows.shape[1:]} do not fit an array of rows {self.array.shape[1:]}")
        i, n = 0, len(rows)
        while i < n:
            if self.n_buf == 0 and n - i >= self.step:
                n_full = (n - i) // self.step * self.step
                self._flush(np.asarray(rows[i : i + n_full], dtype=self.array.dtype))
                i += n_full
                continue
            if self.buf is None:
                self.buf = np.empty((self.step, *self.array.shape[1:]), dtype=self.array.dtype)
            take = min(self.step - self.n_buf, n - i)
            self.buf[self.n_buf : self.n_buf + take] = rows[i : i + take]  # casts like astype
            self.n_buf += take
            i += take
            if self.n_buf == self.step:
                self._flush(self.buf)
                self.n_buf = 0

    def _flush(self, data: np.ndarray) -> None:
        if len(data):
            self.array.append(data, axis=0)  # synchronous: the buffer may be reused afterwards
            self.n_written += len(data)

    def close(self) -> int:
        """Write what is left; return the total number of rows written."""
        if self.buf is not None and self.n_buf:
            self._flush(self.buf[: self.n_buf])
        self.buf, self.n_buf = None, 0
        return self.n_written


class BackgroundWriter:
    """Runs :class:`AppendWriter` writes on worker threads, one per array, fed through bounded queues.

    The producer (the forward pass or the SAE encoder) hands over one batch of rows per array
    with :meth:`submit` and goes on computing while the workers convert, compress and write
    (Blosc releases the GIL), each array on its own thread, so several layers are compressed at
    once. Rows reach each array in submission order, through the same :class:`AppendWriter`, so
    the store is byte-identical to writing synchronously.

    Memory: per array, at most ``max_pending`` submitted batches wait in its queue (``submit``
    blocks when one is full), plus its AppendWriter's buffer.

    ``busy_s`` maps each array to the seconds its worker spent writing (conversion, compression,
    I/O; not waiting for work): the writer keeps up when the largest is below the producer's
    wall time.

    Errors raised on a worker (e.g. a full disk) are re-raised in the producer by the next
    :meth:`submit` or by :meth:`close` (``RuntimeError`` from the worker's error); after one,
    later batches are discarded. Use as a context manager so that an exception in the producer
    stops the workers too.
    """

    def __init__(self, writers: Mapping[str, AppendWriter], max_pending: int = 2):
        self.writers = dict(writers)
        self.queues: dict[str, queue.Queue[np.ndarray | None]] = {
            key: queue.Queue(maxsize=max(1, max_pending)) for key in self.writers}
        self.error: BaseException | None = None
        self.busy_s = dict.fromkeys(self.writers, 0.0)
        self.threads = [threading.Thread(target=self._work, args=(key,), name=f"saeprobe-writer-{key}", daemon=True)
                        for key in self.writers]
        for thread in self.threads:
            thread.start()

    def _work(self, key: str) -> None:
        q, writer = self.queues[key], self.writers[key]
        while True:
            rows = q.get()
            if rows is None:
                return
            if self.error is not None:
                continue  # keep draining so that the producer never blocks on a dead worker
            start = time.perf_counter()
            try:
                writer.write(rows)
            except BaseException as exc:  # noqa: BLE001 - handed to the producer thread
                self.error = exc
            self.busy_s[key] += time.perf_counter() - start

    def _raise(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"writing the store failed: {self.error}") from self.error

    def submit(self, rows: Mapping[str, np.ndarray]) -> None:
        """Queue one batch: ``{array name: rows}`` (the arrays must not be modified afterwards).

        Raises:
            KeyError: an array without a writer.
            RuntimeError: an earlier write failed on a worker.
        """
        self._raise()
        unknown = set(rows) - set(self.writers)
        if unknown:
            raise KeyError(f"no writer for {sorted(unknown)}")
        for key, value in rows.items():
            self.queues[key].put(value)

    def _stop(self) -> None:
        for key, thread in zip(self.writers, self.threads, strict=True):
            if thread.is_alive():
                self.queues[key].put(None)
        for thread in self.threads:
            thread.join()

    def close(self) -> dict[str, int]:
        """Wait for the queued batches, flush every writer; return rows written per array."""
        self._stop()
        self._raise()
        out = {}
        for key, w in self.writers.items():
            start = time.perf_counter()
            out[key] = w.close()
            self.busy_s[key] += time.perf_counter() - start
        return out

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop()  # on success close() has already run; on error just stop the workers


T = TypeVar("T")


def prefetch(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Iterate ``items``, producing up to ``depth`` of them ahead on a worker thread.

    For reads that release the GIL (Zarr decompression, file I/O) while the consumer computes.
    Exceptions of the producer are re-raised in the consumer, in order.
    """
    done = object()
    q: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put((item, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put((None, exc))
            return
        q.put((done, None))

    thread = threading.Thread(target=produce, name="saeprobe-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.01)


def write_index(group: zarr.Group, offsets: np.ndarray, doc_id: np.ndarray) -> None:
    """Store the per-document ``offsets`` (n_docs+1) and ``doc_id`` (n_docs) arrays."""
    for name, arr in (("offsets", np.asarray(offsets, np.int64)), ("doc_id", np.asarray(doc_id, np.int64))):
        group.create_array(name, data=arr, chunks=(max(1, min(len(arr), 1 << 20)),), compressors=compressors())


class RaggedStore:
    """Read access to a ragged token store (dense or sparse), block by block.

    Memory is bounded by the block size, not by the dataset: only the per-document index
    (``offsets``, ``doc_id``) is held whole.

    Raises (on opening and on every read):
        CacheError: the store or a file in it cannot be decoded (missing or truncated
            ``zarr.json``, a chunk that fails its checksum); names the store and the array
            metadata or chunk(s), e.g. ``layer_1/c/3/0``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with reading(self.path, part="zarr.json"):
            self.group = zarr.open_group(str(path), mode="r")
        self.offsets = np.asarray(self._read("offsets"), dtype=np.int64)
        self.doc_id = np.asarray(self._read("doc_id"), dtype=np.int64)
        self.attrs: dict[str, Any] = dict(self.group.attrs)

    def _array(self, name: str) -> zarr.Array:
        with reading(self.path, part=f"{name}/zarr.json"):
            array = self.group[name]
        assert isinstance(array, zarr.Array)
        return array

    def _read(self, name: str, row_start: int = 0, row_stop: int | None = None) -> np.ndarray:
        """Rows ``row_start:row_stop`` of array ``name``; a failed read names the failing chunk(s)."""
        array = self._array(name)
        try:
            return np.asarray(array[row_start:row_stop])
        except MemoryError:
            raise
        except Exception as exc:
            bad = self._bad_chunks(array, row_start, array.shape[0] if row_stop is None else row_stop)
            part = ", ".join(key for key, _ in bad[:5]) + (f" and {len(bad) - 5} more chunks" if len(bad) > 5 else "")
            raise damaged(self.path, bad[0][1] if bad else exc, part=part or name) from exc

    @staticmethod
    def _bad_chunks(array: zarr.Array, row_start: int, row_stop: int) -> list[tuple[str, Exception]]:
        """The chunks of rows ``row_start:row_stop`` whose read fails, as (``name/chunk key``, error)."""
        step, bad = array.chunks[0], []
        for i in range(max(row_start, 0) // step, -(-min(row_stop, array.shape[0]) // step)):
            try:
                array[i * step : (i + 1) * step]
            except Exception as exc:  # noqa: BLE001 - reported by the caller
                bad.append((f"{array.path}/{array.metadata.encode_chunk_key((i, *[0] * (array.ndim - 1)))}", exc))
        return bad

    @property
    def n_docs(self) -> int:
        return len(self.doc_id)

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    def doc_blocks(self, max_tokens: int = 1 << 16) -> Iterator[tuple[int, int]]:
        """Yield (first, last+1) ranges of stored documents with at most ``max_tokens`` rows
        (a single longer document forms its own block)."""
        start = 0
        while start < self.n_docs:
            limit = self.offsets[start] + max_tokens
            stop = int(np.searchsorted(self.offsets, limit, side="right")) - 1
            stop = min(max(stop, start + 1), self.n_docs)
            yield start, stop
            start = stop

    def special(self, row_start: int, row_stop: int) -> np.ndarray:
        """The special-token mask of rows ``row_start:row_stop``, (n,) bool."""
        return np.asarray(self._read("special", row_start, row_stop), dtype=bool)


class ActivationStore(RaggedStore):
    """Dense per-token activations: ``layer_{L}`` arrays of shape (n_tokens, d_model)."""

    @property
    def layers(self) -> list[int]:
        with reading(self.path):
            return sorted(int(k.removeprefix("layer_")) for k in self.group.array_keys() if k.startswith("layer_"))

    def rows(self, layer: int, row_start: int, row_stop: int, dtype: Any = np.float32) -> np.ndarray:
        """Rows of layer ``layer``, shape (row_stop - row_start, d_model), as ``dtype``
        (float32 by default; None = the stored dtype, e.g. to cast on a GPU instead).

        Raises:
            KeyError: the store has no such layer.
            CacheError: see :class:`RaggedStore`.
        """
        key = f"layer_{layer}"
        with reading(self.path, part=f"{key}/zarr.json"):
            stored = key in self.group
        if not stored:
            raise KeyError(f"{self.path}: no layer {layer} (stored: {self.layers})")
        rows = self._read(key, row_start, row_stop)
        return rows if dtype is None else np.asarray(rows, dtype=dtype)

    def width(self, layer: int) -> int:
        """d_model of layer ``layer`` (from the array's metadata: no chunk is read).

        Raises:
            KeyError: the store has no such layer. CacheError: see :class:`RaggedStore`.
        """
        if f"layer_{layer}" not in self.group:
            raise KeyError(f"{self.path}: no layer {layer} (stored: {self.layers})")
        return int(self._array(f"layer_{layer}").shape[1])

    def chunk_blocks(self, layer: int, min_rows: int) -> Iterator[tuple[int, int]]:
        """Row ranges (start, stop) covering all tokens, each a whole number of ``layer_{layer}``'s
        chunks and at least ``min_rows`` rows (the last one shorter): reading them decodes every
        chunk exactly once (Zarr 3 has no chunk cache, so a chunk read in slices is decoded per slice).

        Raises:
            CacheError: see :class:`RaggedStore`.
        """
        chunk = int(self._array(f"layer_{layer}").chunks[0])
        step = -(-max(min_rows, 1) // chunk) * chunk
        for start in range(0, self.n_tokens, step):
            yield start, min(start + step, self.n_tokens)


class CodeStore(RaggedStore):
    """Sparse per-token SAE codes in CSR form."""

    @property
    def d_sae(self) -> int:
        return int(self.attrs["d_sae"])

    def rows(self, row_start: int, row_stop: int) -> sp.csr_matrix:
        """Codes of tokens ``row_start:row_stop`` as a (n, d_sae) float32 CSR matrix.

        Raises:
            CacheError: see :class:`RaggedStore`.
        """
        indptr = np.asarray(self._read("indptr", row_start, row_stop + 1), dtype=np.int64)
        lo, hi = int(indptr[0]), int(indptr[-1])
        indices = np.asarray(self._read("indices", lo, hi), dtype=np.int32)
        values = np.asarray(self._read("values", lo, hi), dtype=np.float32)
        return sp.csr_matrix((values, indices, indptr - lo), shape=(row_stop - row_start, self.d_sae))
