#!/usr/bin/env python
"""Compile the scratchbert pipeline to YAML for a Kubeflow Pipelines cluster.

    python pipelines/compile.py [--image IMG] [--gpu-image IMG] [--pipeline-root ROOT]
                                [--output pipelines/bert_pipeline.yaml] [--no-node-selector]

Defaults come from ``pipelines/settings.py``; compiled with no options it reproduces the
committed ``pipelines/bert_pipeline.yaml`` byte for byte (tests/static/test_pipeline_yaml.py
checks that, so the YAML cannot drift from the code: recompile after changing either). The
standard KFP command compiles the same pipeline:
``kfp dsl compile --py pipelines/bert_pipeline.py --function bert_pipeline --output FILE``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The YAML beside this file (in a checkout: pipelines/bert_pipeline.yaml); it ships with the package.
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "bert_pipeline.yaml"


def compile_pipeline(output: str | Path = DEFAULT_OUTPUT, *, image: str | None = None, gpu_image: str | None = None,
                     pipeline_root: str | None = None, node_selector: bool = True) -> Path:
    """Compile the pipeline for the given images into ``output`` (YAML) and return its path.

    ``image``/``gpu_image`` default to ``settings.default_image(gpu=False/True)``;
    ``pipeline_root`` to the cluster's default; ``node_selector=False`` drops the GPU node
    selector (the GPU request and the toleration stay).
    """
    from kfp import compiler

    from scratchbert_pipelines.bert_pipeline import build_pipeline

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    pipeline = build_pipeline(image, gpu_image, node_selector=node_selector, pipeline_root=pipeline_root)
    compiler.Compiler().compile(pipeline, str(output))
    return output


def main(argv: list[str] | None = None) -> int:
    from scratchbert_pipelines import settings

    parser = argparse.ArgumentParser(description="Compile the scratchbert pipeline to YAML.")
    parser.add_argument("--image", help=f"image of the CPU tasks (default: {settings.default_image(gpu=False)})")
    parser.add_argument("--gpu-image", help=f"image of the GPU tasks (default: {settings.default_image(gpu=True)})")
    parser.add_argument("--pipeline-root", help="artifact root, e.g. minio://mlpipeline/v2/artifacts (default: the cluster's)")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="YAML file to write (default: %(default)s)")
    parser.add_argument("--no-node-selector", dest="node_selector", action="store_false",
                        help=f"do not pin GPU tasks to nodes labelled {settings.GPU_NODE_LABEL_KEY}={settings.GPU_NODE_LABEL_VALUE}")
    args = parser.parse_args(argv)
    out = compile_pipeline(args.output, image=args.image, gpu_image=args.gpu_image,
                           pipeline_root=args.pipeline_root, node_selector=args.node_selector)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
