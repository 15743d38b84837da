"""A loaded model's ``decoding.prefill`` and ``decoding.step`` exported to ONNX and run by ONNX Runtime: the fast
path on a CPU.

A one-token step of a small model is about a hundred operations on a few rows of a hundred numbers: PyTorch
spends more time dispatching each one from Python than doing its arithmetic, while ONNX Runtime runs the
exported graph from C++ with its own fusions. Both functions are exported with a dynamic batch (and, for
``prefill``, time) axis; ONNX Runtime's kernels compute each row alike whatever the batch size (a test checks
it bit for bit), so rows are batched exactly as they come. An export bakes in the weights, so it belongs to a
model whose weights no longer change. It is checked against PyTorch before use; where ONNX Runtime is missing
or the export fails or disagrees, ``export`` warns and returns None, and the caller decodes in PyTorch.
"""

from __future__ import annotations

import io
import threading
import warnings
import weakref

import numpy as np
import torch
import torch.nn as nn

from .decoding import Decoding, KVCache, prefill, step
from .model import GPT

_LOCK = threading.Lock()  # one export at a time in the process: the warnings filter below is process-wide state
_TOLERANCE = 1e-4  # the exported functions must give PyTorch's logits to this


class _Stacked(nn.Module):
    """``prefill`` or ``step`` of one model as a module's forward (what the exporter takes), every layer's keys
    and values stacked into one output each (L, B, nh, T, hs)."""

    def __init__(self, model: GPT, function):
        super().__init__()
        self.model, self.function = model, function

    def forward(self, *args):
        logits, keys, values = self.function(self.model, *args)
        return logits, torch.stack(keys), torch.stack(values)


def _session(model: GPT, function, example: tuple, inputs: list[str], dynamic: dict):
    import onnxruntime as ort  # optional at import time: without it decoding stays in PyTorch

    graph = io.BytesIO()
    outputs = ["logits", "keys", "values"]
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated upstream, but it exports these small functions in a
        # fraction of the dynamo-based exporter's time.
        warnings.simplefilter("ignore")
        # eval(): the exporter puts the module back in the mode it found it in, and a new module starts in
        # training mode.
        torch.onnx.export(_Stacked(model, function).eval(), example, graph, dynamo=False, input_names=inputs,
                          output_names=outputs, dynamic_axes=dynamic)
    options = ort.SessionOptions()
    # One thread per session, and no spinning while idle: the engine drives the models from one thread per core.
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # No arena: what a crowd's large batches took is given back once they are done, and a step is no slower.
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3  # its notices about the optimised graph are not for our users
    return ort.InferenceSession(graph.getvalue(), options, providers=["CPUExecutionProvider"])


class OnnxDecoding(Decoding):
    """One model's ``step`` and ``prefill`` as ONNX Runtime sessions, weights baked in."""

    def __init__(self, model: GPT):
        if model.training:
            raise ValueError("export a model in eval mode: dropout would be baked into the graph")
        super().__init__(model)
        cfg = model.config
        layers = range(cfg.n_layer)
        self.step_inputs = ["idx", "pos", *(f"keys.{i}" for i in layers), *(f"values.{i}" for i in layers)]
        # An example batch of 2: the exporter would specialise a dimension of size 1.
        scratch = KVCache(cfg, 2)
        two = torch.zeros(2, dtype=torch.long)
        batch = {"logits": {0: "B"}, "keys": {1: "B"}, "values": {1: "B"}}
        self.step = _session(model, step, (two, two, tuple(torch.from_numpy(k) for k in scratch.keys),
                                           tuple(torch.from_numpy(v) for v in scratch.values)),
                             self.step_inputs, {**{name: {0: "B"} for name in self.step_inputs}, **batch})
        self.prefill = _session(model, prefill, (torch.zeros(2, 3, dtype=torch.long),), ["idx"],
                                {"idx": {0: "B", 1: "T"}, "logits": {0: "B", 1: "T"}, "keys": {1: "B", 3: "T"},
                                 "values": {1: "B", 3: "T"}})
        # Per cache, the step's inputs and outputs bound where they lie (made on first use, kept as long as the
        # cache): a step then passes no arrays through Python, and allocates nothing.
        self._bound: weakref.WeakKeyDictionary[KVCache, _Bound] = weakref.WeakKeyDictionary()
        self._binding = threading.Lock()
        self.check()

    def encode(self, windows: np.ndarray):
        logits, keys, values = self.prefill.run(None, {"idx": np.ascontiguousarray(windows, dtype=np.int64)})
        return logits[:, -1], keys, values

    def advance(self, cache: KVCache, n: int, idx: np.ndarray, pos: np.ndarray):
        """As ``Decoding.advance``; the arrays returned are overwritten by the next step on this cache."""
        bound = self._bound.get(cache) or self._bind(cache)
        binding, outputs = bound.first(n, cache)
        bound.idx[:n] = idx
        bound.pos[:n] = pos
        self.step.run_with_iobinding(binding)
        return outputs

    def _bind(self, cache: KVCache) -> _Bound:
        with self._binding:
            return self._bound.setdefault(cache, _Bound(self, cache.rows))

    def check(self) -> None:
        """Encode a window and take one step in both runtimes and compare: an exporter that mistranslates
        something raises here, and the caller falls back, instead of sampling wrong text."""
        vocab, block = self.config.vocab_size, self.config.block_size
        ids = (np.arange(min(block, 9)) % vocab).astype(np.int64)
        cache = KVCache(self.config, 1)
        logits, keys, values = self.encode(ids[None, :-1])
        cache.fill(np.array([0]), keys, values)
        got = [logits[0], self.advance(cache, 1, ids[-1:], cache.lengths[:1])[0][0]]
        with torch.no_grad():
            expected = self.model(torch.from_numpy(ids[None]))[0][0, -2:].numpy()
        for logits, want in zip(got, expected):
            if not np.allclose(logits, want, rtol=0, atol=_TOLERANCE):
                raise ValueError(f"the exported model's logits differ from PyTorch's by "
                                 f"{np.abs(logits - want).max():.2g}")


class _Bound:
    """``decoding``'s step bound to a cache of ``rows`` rows: buffers as many rows long for the new tokens, their
    positions and the outputs, and per number of rows n (bound on first use) a binding of the cache's first n rows,
    read where they lie, and of the buffers' first n. Holds no reference to the cache, which it must not outlive."""

    def __init__(self, decoding: OnnxDecoding, rows: int):
        cfg = decoding.config
        self.step, self.inputs = decoding.step, decoding.step_inputs
        self.idx, self.pos = np.zeros(rows, np.int64), np.zeros(rows, np.int64)
        self.logits = np.zeros((rows, cfg.vocab_size), np.float32)
        self.shape = (cfg.n_layer, cfg.n_head, 1, cfg.n_embd // cfg.n_head)  # a row's new keys, with rows second
        self.new_keys, self.new_values = (np.zeros(rows * int(np.prod(self.shape)), np.float32) for _ in range(2))
        self.bindings: dict[int, tuple] = {}

    def first(self, n: int, cache: KVCache) -> tuple:
        """The binding for the first ``n`` rows, and its outputs: logits (n, V), new keys and values
        (L, n, nh, 1, hs)."""
        if (found := self.bindings.get(n)) is None:
            L, nh, _, hs = self.shape
            outputs = (self.logits[:n], *(flat[:L * n * nh * hs].reshape(L, n, nh, 1, hs)
                                          for flat in (self.new_keys, self.new_values)))
            binding = self.step.io_binding()
            keys, values = cache.first(n)  # views made once, kept by the cache: their memory never moves
            for name, array in zip(self.inputs, (self.idx[:n], self.pos[:n], *keys, *values)):
                binding.bind_input(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
            for name, array in zip(("logits", "keys", "values"), outputs):
                binding.bind_output(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
            found = self.bindings[n] = (binding, outputs)
        return found


def export(model: GPT) -> OnnxDecoding | None:
    """``model``'s decoding in ONNX Runtime, or None where none is needed or possible: no attention, a context
    of under two tokens or not on the CPU in float32 (silently), no ONNX Runtime or a failed export (warning)."""
    param = next(model.parameters())
    if (not model.config.has_attention or model.config.block_size < 2 or param.device.type != "cpu"
            or param.dtype != torch.float32):
        return None
    with _LOCK:
        try:
            return OnnxDecoding(model)
        except Exception as error:  # no onnxruntime, or an exporter that cannot take this build's model
            warnings.warn(f"decoding in PyTorch, more slowly: the ONNX Runtime decoding is unavailable ({error!r})",
                          RuntimeWarning, stacklevel=2)
            return None
