"""Long texts: which student shape and which onnxruntime graph clear 5x the teacher, before training any of them.

    python -m bench.long_speed [--lengths 128 256] [--rows 128]

Speed does not depend on the weights, so every shape is built the way the distil stage builds it (the teacher's
layers kept, the feed-forward pruned on the texts) from the bundled encoder with an untrained head, exported and
quantised with each recipe the export stage may ship (pipeline/core/onnx_model.RECIPES, fp32 `none` too), and
timed against the torch teacher side by side in one process (pipeline.core.speed.measure_speed, as evaluate times
them) on real long texts (the news articles) read at 128 and
256 tokens. One more graph per shape: onnxruntime's transformer optimiser (fused Attention, Gelu and LayerNorm
nodes) before the int8 quantisation, which then quantises the fused attention's projections too (QAttention).
Which of these keeps 98% of the teacher is a question for training (bench/students.py); this says which can pay.
Writes bench/results/long_speed.json and LONG_SPEED.md with the machine.
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

from bench.common import OUT, measured, record

SHAPES = {  # name -> (teacher layers kept, feed-forward width; 0 = the teacher's)
    "2 layers [0, 5] (default fallback)": ([0, 5], 0),
    "2 layers, FFN 384": ([0, 5], 384),
    "1 layer [5] (tried first)": ([5], 0),
    "1 layer, FFN 384": ([5], 384),
}
GRAPHS = ("none", "int8_matmul_ffn_fp32", "int8_ffn_fp32", "int8", "fused + int8")  # export recipes, then one more


def save_folder(model, tok, folder: Path, labels: list[str], max_length: int) -> None:
    from pipeline.core.io import write_lineage

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    write_lineage(folder, {"label_names": labels, "resolved": {"max_length": max_length, "truncation": "head_tail"}})


def fuse(fp32: Path, dest: Path, config) -> None:
    """onnxruntime's BERT optimiser: Attention, Gelu, LayerNorm fusions; SkipLayerNorm left unfused as the
    pipeline's session does (its CPU kernel is slower here: pipeline/core/onnx_model.py)."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    opts = FusionOptions("bert")
    opts.enable_skip_layer_norm = False
    m = optimize_model(str(fp32), model_type="bert", num_heads=config.num_attention_heads,
                       hidden_size=config.hidden_size, optimization_options=opts, opt_level=1)
    m.save_model_to_file(str(dest))
    logging.getLogger(__name__).info("fused %s: %s", dest.name, m.get_fused_operator_statistics())


def export(model, tok, folder: Path, labels: list[str], max_length: int, graph: str) -> Path:
    from pipeline.core.onnx_model import FP32_FILE, ONNX_FILE, export_fp32, quantize_int8

    folder.mkdir(parents=True, exist_ok=True)
    export_fp32(model, tok, folder / FP32_FILE, max_length)
    src = folder / FP32_FILE
    fused = graph.startswith("fused")
    if fused:
        fuse(src, folder / "fused.onnx", model.config)
        src = folder / "fused.onnx"
    if fused:  # the fused ops come from onnxruntime's own domain, where shape inference gives no types
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(src), str(folder / ONNX_FILE), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    elif graph == "none":
        (folder / ONNX_FILE).write_bytes(src.read_bytes())
    else:
        quantize_int8(src, folder / ONNX_FILE, graph)
    tok.save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    cfg.update({"id2label": {str(i): n for i, n in enumerate(labels)}, "export_max_length": max_length,
                "export_truncation": "head_tail"})
    (folder / "config.json").write_text(json.dumps(cfg))
    from pipeline.core.io import write_lineage

    write_lineage(folder, {"label_names": labels})
    return folder


def probe(texts: list[str], labels: list[str], max_length: int, work: Path) -> dict:
    import torch

    from pipeline.core.modeling import load_classifier, load_tokenizer, resolve_model
    from pipeline.core.params import EvaluateParams
    from pipeline.core.scoring import open_model
    from pipeline.core.speed import measure_speed
    from pipeline.stages.distill import prune_feed_forward, truncate

    name = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    torch.manual_seed(0)
    teacher = load_classifier(name, num_labels=len(labels), id2label=dict(enumerate(labels)),
                              label2id={n: i for i, n in enumerate(labels)})
    tok = load_tokenizer(name)
    save_folder(teacher, tok, work / "teacher", labels, max_length)
    folders = {"teacher (torch)": work / "teacher"}
    for shape, (layers, width) in SHAPES.items():
        student = truncate(teacher, layers)
        if width:
            prune_feed_forward(student, tok, texts[:128], width, max_length)
        for graph in GRAPHS:
            key = f"{shape} | {graph}"
            folders[key] = export(student, tok, work / key.replace(" ", "_").replace("|", "").replace(",", ""),
                                  labels, max_length, graph)
    models = {k: open_model(f) for k, f in folders.items()}
    speed = measure_speed({k: m.predictor(32) for k, m in models.items()}, texts, EvaluateParams())
    t = speed["teacher (torch)"]
    return {k: {**v, "throughput_vs_teacher": round(v["cpu_samples_per_s_batch"] / t["cpu_samples_per_s_batch"], 2),
                "latency_vs_teacher": round(t["cpu_latency_ms_batch1"] / v["cpu_latency_ms_batch1"], 2),
                "onnx_mib": round((folders[k] / "model.onnx").stat().st_size / 2**20, 1)
                if (folders[k] / "model.onnx").is_file() else None}
            for k, v in speed.items()}


def markdown(results: dict) -> str:
    lines = ["# Long texts: student shapes and graphs against the teacher, untrained", "",
             f"{measured(results['machine'])}. Produced by `python -m bench.long_speed`: every shape built as the "
             "distil stage builds it, exported as the export stage does with each recipe it may ship (fp32 `none`, the partial int8 "
             "recipes, plain `int8`) and once more fused by onnxruntime's transformer optimiser, timed "
             "side by side with the torch teacher in one process (batch 32 throughput, batch 1 latency, as "
             "evaluate times them). Weights untrained: speed does not depend on them; quality does "
             "(STUDENTS.md, LONG_STUDENTS.md).", ""]
    for name, r in results["datasets"].items():
        lines += [f"**{name}** ({r['texts']} texts, {r['cut']} of them longer than the budget)", "",
                  "| model | graph | rows/s (batch 32) | × teacher | latency b1 (ms) | × teacher | int8 file (MiB) |",
                  "|---|---|---|---|---|---|---|"]
        for k, v in r["speed"].items():
            shape, _, graph = k.partition(" | ")
            lines.append(f"| {shape} | {graph or 'torch fp32'} | {v['cpu_samples_per_s_batch']:.1f} | "
                         f"**{v['throughput_vs_teacher']:.2f}×** | {v['cpu_latency_ms_batch1']:.1f} | "
                         f"{v['latency_vs_teacher']:.2f}× | {v['onnx_mib'] if v['onnx_mib'] else '-'} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--rows", type=int, default=128, help="news articles timed (a stratified sample)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from bench.corpora import news_articles_sample
    from pipeline.core.modeling import load_tokenizer, resolve_model

    df = news_articles_sample(args.rows)
    texts, labels = df["text"].astype(str).tolist(), sorted(df["label"].unique())
    tok = load_tokenizer(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    lengths = [len(ids) for ids in tok(texts)["input_ids"]]
    for max_length in args.lengths:
        with tempfile.TemporaryDirectory() as tmp:
            speed = probe(texts, labels, max_length, Path(tmp))
        cut = sum(n > max_length for n in lengths)
        print(record(Path(args.out), "long_speed", f"news articles at {max_length} tokens",
                     {"texts": len(texts), "cut": cut, "max_length": max_length, "speed": speed}, markdown))


if __name__ == "__main__":
    main()
