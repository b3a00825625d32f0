"""Kubeflow Pipelines components of scratchbert: one thin wrapper per library stage.

Installed as ``scratchbert_components``. Each ``<stage>/component.py`` holds a plain Python
function (the component's body: it imports the library inside, turns artifacts into folders,
builds the stage's config, calls the stage, logs metrics) and a ``build(image)`` that turns it
into a KFP component for a given image.

A component's parameters are fields of its stage's config dataclass (pretrain's also of the
pipeline's ``TrainJobConfig``: ``scratchbert_pipelines.parameters.stage_configs``), with the
same names and types (tests/component/test_interfaces.py checks each against the config);
their descriptions are taken from the config's help by :func:`make_component`, so they are
written once.

The image is an argument, not a constant in each file: KFP fixes ``base_image`` when the
component is created, and the pipeline is compiled for whichever images
``scratchbert_pipelines.compile`` is given. Components never ``pip install`` at run time
(``install_kfp_package=False`` and no ``packages_to_install``): the images carry the library.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

from scratchbert_components.helpers import (
    format_number,
    history_series,
    html_page,
    html_table,
    log_numbers,
    logging_interval,
    read_log_history,
    run_stage,
    svg_line_chart,
)

# Helpers pasted into every component / into components that write an HTML report.
BASE_HELPERS = (run_stage, log_numbers, logging_interval)
REPORT_HELPERS = BASE_HELPERS + (read_log_history, history_series, format_number, html_table,
                                 svg_line_chart, html_page)

# Folder names, in pipeline order (the library stages; the pipeline runs ``validate`` before them).
STAGES = ("tokenizer", "dataset", "pretrain", "evaluate", "qa_finetune", "publish", "starting_model")


def describe(func: Callable, config_cls=None) -> str:
    """``func``'s docstring with an ``Args`` line added for each parameter that is a field of
    ``config_cls`` (its help, from the config) and not documented in the docstring itself."""
    from scratchbert import params

    doc = inspect.cleandoc(getattr(func, "_own_doc", None) or func.__doc__ or "")
    if config_cls is None:
        return doc
    known = {name: cls for cls in reversed(_as_tuple(config_cls)) for name in params.fields(cls)}
    lines = [f"    {name}: {params.help_text(known[name], name, with_default=False)}"
             for name in inspect.signature(func).parameters if name in known and f"\n    {name}:" not in doc]
    if not lines:
        return doc
    if "\nArgs:\n" in doc:
        head, _, tail = doc.partition("\nArgs:\n")
        return f"{head}\nArgs:\n" + "\n".join(lines) + "\n" + tail
    return doc + "\n\nArgs:\n" + "\n".join(lines)


def _as_tuple(config_cls) -> tuple:
    return config_cls if isinstance(config_cls, tuple) else (config_cls,)


def make_component(func: Callable, image: str, config_cls=None, helpers: Sequence[Callable] = BASE_HELPERS,
                   **options):
    """A KFP lightweight component running ``func`` in ``image`` with ``helpers`` pasted in.

    The parameters that are fields of ``config_cls`` (a config class, or a tuple of them, the
    first naming a field winning) are described from its help; ``options`` go to
    ``dsl.component`` (e.g. ``task_config_passthroughs``). Nothing is
    pip-installed when the task starts: ``image`` must hold scratchbert and kfp (the images
    under ``images/`` do; so does the project's virtual environment, which is what
    ``kfp.local.SubprocessRunner(use_venv=False)`` uses).
    """
    from kfp import dsl

    if not hasattr(func, "_own_doc"):
        func._own_doc = func.__doc__
    func.__doc__ = describe(func, config_cls)
    return dsl.component(func, base_image=image, install_kfp_package=False, additional_funcs=list(helpers), **options)
