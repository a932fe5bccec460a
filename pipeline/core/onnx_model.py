"""ONNX export, int8 quantisation and inference (onnxruntime) for the transformer classifiers.

torch.onnx.export (TorchScript exporter) writes the fp32 graph with dynamic batch and sequence axes; onnxruntime's
dynamic quantisation stores weights as int8 and quantises activations per batch at run time, which needs no
calibration data and is what onnxruntime recommends for transformer encoders on CPU. Loading an ONNX file runs no
Python code from it (an ONNX graph is data; onnxruntime executes only its own operators).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

ONNX_FILE = "model.onnx"  # the int8 model a user ships
FP32_FILE = "model_fp32.onnx"  # kept for the parity record; not needed for inference


def export_fp32(model: Any, tokenizer: Any, path: Path, max_length: int, per_position: bool = False) -> None:
    """`per_position`: the logits have a sequence axis too (a token classifier's [batch, sequence, labels])."""
    import torch

    model = model.cpu().eval()
    model.config.return_dict = False
    # Eager attention traces to plain MatMul/Softmax. Traced through transformers' sdpa path the graph also carries
    # a Where/IsNaN guard over every [batch, heads, length, length] score tensor: 15-20% of the int8 student's time
    # on this project's CPU, for the same logits (to ~1e-6). The torch model is put back as it was.
    impl = getattr(model.config, "_attn_implementation", None)
    switch = impl not in (None, "eager") and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    enc = tokenizer(["an example text to trace the graph", "another"], padding=True, truncation=True,
                    max_length=max_length, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in enc]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch", 1: "sequence"} if per_position else {0: "batch"}
    try:
        with torch.inference_mode():
            torch.onnx.export(model, tuple(enc[n] for n in names), str(path), input_names=names,
                              output_names=["logits"], dynamic_axes=axes, opset_version=17, dynamo=False)
    finally:
        model.config.return_dict = True
        if switch:
            model.set_attn_implementation(impl)


# int8 recipes, smallest and fastest first (export.quantize: auto takes the first that keeps the torch labels).
# All use per-channel weight scales: with one scale per matrix an outlier column coarsens the whole matrix, and on a
# 3-class tweet student per-tensor int8 changed 3.9% of the test labels, per-channel 2.6%
# (bench/results/export-and-students.md).
RECIPES = {
    "int8": "every MatMul, Gemm and embedding table in int8 (about 4x smaller)",
    "int8_ffn_fp32": "the encoder's MatMuls and the embedding tables in int8, except the feed-forward "
                     "down-projections (their inputs are the GELU outputs, the widest activation range in the "
                     "encoder, quantised per batch); pooler and classifier stay fp32",
    "int8_matmul_ffn_fp32": "as int8_ffn_fp32, with the embedding tables fp32 too (the vocabulary table is most of the "
                            "file, so this one is close to fp32 in size)",
}


def down_projections(path: Path) -> list[str]:
    """MatMul nodes whose weight narrows the width ([k, n], k > n): the feed-forward output projections.

    Found by weight shape rather than by name so it holds for BERT, DistilBERT, RoBERTa and the like alike."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and len(shapes.get(n.input[1], ())) == 2
            and shapes[n.input[1]][0] > shapes[n.input[1]][1]]


def quantize_int8(src: Path, dest: Path, recipe: str = "int8") -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    if recipe not in RECIPES:
        raise ValueError(f"unknown int8 recipe {recipe!r}; one of {sorted(RECIPES)}")
    kwargs: dict[str, Any] = {"per_channel": True}
    if recipe != "int8":
        kwargs["op_types_to_quantize"] = ["MatMul"] if recipe == "int8_matmul_ffn_fp32" else ["MatMul", "Gather"]
        kwargs["nodes_to_exclude"] = down_projections(src)
    logging.disable(logging.WARNING)  # it logs a line per tensor, and a pre-processing hint, on the root logger
    try:
        quantize_dynamic(str(src), str(dest), weight_type=QuantType.QInt8, **kwargs)
    finally:
        logging.disable(logging.NOTSET)


def flush_denormals() -> None:
    """Set the calling thread's CPU to treat denormal floats as zero (x86 FTZ/DAZ; a no-op where unsupported)."""
    import torch

    torch.set_flush_denormal(True)


PROBE_TEXTS = ["an example", "", "Ünïcödé, emoji 🙂 and   spaces", "a long text " * 200]


def fast_encoder(tokenizer: Any, max_length: int, inputs: set[str]) -> Callable[[list[str]], dict] | None:
    """`tokenizer(texts, padding=True, truncation=True, max_length=max_length)` straight from its Rust backend (the
    `tokenizers` library that transformers' fast tokenizers call anyway), as int64 arrays for `inputs`.

    Skips transformers' per-call Python work: 6-9% more rows/s for the int8 students at batch 32
    (bench/results/export-and-students.md). None when the tokenizer has no such backend, a model input is not one
    the backend gives, or on a few probe texts the two do not give the same arrays."""
    import copy

    fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or tokenizer.pad_token_id is None or not set(inputs) <= set(fields):
        return None
    bt = copy.deepcopy(backend)  # the loaded tokenizer keeps its own settings
    bt.enable_truncation(max_length, stride=0, strategy="longest_first", direction=tokenizer.truncation_side)
    bt.enable_padding(direction=tokenizer.padding_side, pad_id=tokenizer.pad_token_id,
                      pad_type_id=tokenizer.pad_token_type_id, pad_token=tokenizer.pad_token)
    batch = getattr(bt, "encode_batch_fast", bt.encode_batch)  # _fast: no character offsets, which we never use

    def encode(texts: list[str]) -> dict[str, np.ndarray]:
        enc = batch(texts)
        return {name: np.array([getattr(e, fields[name]) for e in enc], dtype=np.int64) for name in inputs}

    reference = tokenizer(PROBE_TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    got = encode(PROBE_TEXTS)
    if any(not np.array_equal(got[k], reference[k]) for k in inputs):
        return None
    return encode


class OnnxClassifier:
    """An exported classifier folder: model.onnx + tokenizer + config.json (labels, max_length, temperature)."""

    def __init__(self, folder: str | Path, file: str = ONNX_FILE, threads: int = 0) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        opts = ort.SessionOptions()
        # Padding is masked with the most negative float, and the softmax over masked scores underflows into
        # denormal floats, which x86 handles ~6x slower: 18-23% of the int8 student's time. Flushing them to
        # zero (here for onnxruntime's pool threads, in logits() for the calling thread) changes no value above
        # 1.2e-38 (bench/results/export-and-students.md).
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
        if threads:
            opts.intra_op_num_threads = threads
        # onnxruntime fuses each residual Add + LayerNorm into SkipLayerNormalization, whose CPU kernel took 2.2 ms
        # where Add + LayerNormalization take 0.5 ms (onnxruntime 1.32, [32, 58, 384]): without the fusion the int8
        # student scores 12-18% more rows/s on this project's CPU, with the same logits.
        self.session = ort.InferenceSession(str(self.folder / file), opts, providers=["CPUExecutionProvider"],
                                            disabled_optimizers=["SkipLayerNormFusion"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        cfg = json.loads((self.folder / "config.json").read_text())
        self.label_names = [cfg["id2label"][str(i)] for i in range(len(cfg["id2label"]))]
        self.max_length = int(cfg.get("export_max_length", 128))
        self.truncation = cfg.get("export_truncation", "head")
        self.temperature = float(cfg.get("calibration_temperature") or 1.0)
        self.encode = fast_encoder(self.tokenizer, self.max_length, self.inputs) or self._encode_hf

    def _encode_hf(self, texts: list[str]) -> dict[str, np.ndarray]:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        return {k: v.astype(np.int64) for k, v in enc.items() if k in self.inputs}

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Raw logits in the order of `texts` (length-sorted batches keep padding low).

        Leaves the calling thread flushing denormal floats to zero (torch.set_flush_denormal): onnxruntime runs part
        of each call on this thread and has no switch for it."""
        from pipeline.core.modeling import length_batches, read_texts

        flush_denormals()
        texts = read_texts(texts, self.tokenizer, self.max_length, self.truncation)
        out = np.zeros((len(texts), len(self.label_names)), dtype=np.float32)
        for idx in length_batches(texts, batch_size):
            out[idx] = self.session.run(["logits"], self.encode([texts[i] for i in idx]))[0]
        return out

    def predict_proba(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return self.proba_from_logits(self.logits(texts, batch_size))

    def proba_from_logits(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (the temperature export recorded) from raw logits."""
        from pipeline.core.metrics import softmax

        return softmax(logits, self.temperature)
