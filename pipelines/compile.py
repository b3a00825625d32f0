#!/usr/bin/env python
"""Compile the scratchbert pipeline to YAML for a Kubeflow Pipelines cluster.

    python pipelines/compile.py [--image IMG] [--gpu-image IMG] [--pipeline-root ROOT]
                                [--output pipelines/bert_pipeline.yaml] [--no-node-selector]
    python pipelines/compile.py --cpu [--image IMG] [--pipeline-root ROOT]
                                [--output pipelines/bert_pipeline_cpu.yaml]

Defaults come from ``pipelines/settings.py``; compiled with no options it reproduces the
committed ``pipelines/bert_pipeline.yaml`` byte for byte, and with ``--cpu`` the committed
``pipelines/bert_pipeline_cpu.yaml``, the pipeline for a cluster without GPUs (every task on
the CPU image, the CPU recipe's defaults; tests/static/test_pipeline_yaml.py checks both, so
the YAML cannot drift from the code: recompile after changing either). The standard KFP
command compiles the same GPU pipeline:
``kfp dsl compile --py pipelines/bert_pipeline.py --function bert_pipeline --output FILE``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The YAML beside this file (in a checkout: pipelines/bert_pipeline.yaml); it ships with the package.
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "bert_pipeline.yaml"
# The pipeline for a cluster without GPUs (--cpu), beside it.
DEFAULT_CPU_OUTPUT = DEFAULT_OUTPUT.with_name("bert_pipeline_cpu.yaml")


def compile_pipeline(output: str | Path | None = None, *, image: str | None = None, gpu_image: str | None = None,
                     pipeline_root: str | None = None, node_selector: bool = True, gpu: bool = True) -> Path:
    """Compile the pipeline for the given images into ``output`` (YAML; default
    :data:`DEFAULT_OUTPUT`, or :data:`DEFAULT_CPU_OUTPUT` without ``gpu``) and return its path.

    ``image``/``gpu_image`` default to ``settings.default_image(gpu=False/True)``;
    ``pipeline_root`` to the cluster's default; ``node_selector=False`` drops the GPU node
    selector (the GPU request and the toleration stay); ``gpu=False`` compiles the pipeline for
    a cluster without GPUs (``build_pipeline``'s ``gpu``).
    """
    from kfp import compiler

    from scratchbert_pipelines.bert_pipeline import build_pipeline

    output = Path(output or (DEFAULT_OUTPUT if gpu else DEFAULT_CPU_OUTPUT))
    output.parent.mkdir(parents=True, exist_ok=True)
    pipeline = build_pipeline(image, gpu_image, gpu=gpu, node_selector=node_selector, pipeline_root=pipeline_root)
    compiler.Compiler().compile(pipeline, str(output))
    return output


def main(argv: list[str] | None = None) -> int:
    from scratchbert_pipelines import parameters, settings

    parser = argparse.ArgumentParser(description="Compile the scratchbert pipeline to YAML.")
    parser.add_argument("--image", help=f"image of the CPU tasks (default: {settings.default_image(gpu=False)})")
    parser.add_argument("--gpu-image", help=f"image of the GPU tasks (default: {settings.default_image(gpu=True)})")
    parser.add_argument("--pipeline-root", help="artifact root, e.g. minio://mlpipeline/v2/artifacts (default: the cluster's)")
    parser.add_argument("--output", help=f"YAML file to write (default: {DEFAULT_OUTPUT}, with --cpu {DEFAULT_CPU_OUTPUT})")
    parser.add_argument("--no-node-selector", dest="node_selector", action="store_false",
                        help=f"do not pin GPU tasks to nodes labelled {settings.GPU_NODE_LABEL_KEY}={settings.GPU_NODE_LABEL_VALUE}")
    parser.add_argument("--cpu", action="store_true",
                        help="compile for a cluster without GPUs: every task on the CPU image, the CPU recipe's defaults, "
                             "no GPU parameters (" + ", ".join(parameters.GPU_ONLY) + ")")
    args = parser.parse_args(argv)
    if args.cpu and (args.gpu_image or not args.node_selector):
        parser.error("--gpu-image and --no-node-selector are for GPU tasks, which --cpu has none of")
    if args.output and not args.output.endswith((".yaml", ".yml")):  # kfp's ValueError, a traceback, after the compile
        parser.error(f"--output {args.output} must name a .yaml file: the pipeline's Kubernetes settings are written only to YAML")
    out = compile_pipeline(args.output, image=args.image, gpu_image=args.gpu_image, pipeline_root=args.pipeline_root,
                           node_selector=args.node_selector, gpu=not args.cpu)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
