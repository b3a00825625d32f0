"""Kubeflow Pipelines components of scratchbert: one thin wrapper per library stage.

Each ``components/<stage>/component.py`` holds a plain Python function (the component's
body: it imports the library inside, turns artifacts into folders, calls the stage, logs
metrics) and a ``build(image)`` that turns it into a KFP component for a given image.

The image is an argument, not a constant in each file: KFP fixes ``base_image`` when the
component is created, and the pipeline is compiled for whichever images
``pipelines/compile.py`` is given (defaults: ``pipelines/settings.default_image``). So the
pipeline builds its components inside ``build_pipeline(image, gpu_image)``.

Components never ``pip install`` at run time (``install_kfp_package=False`` and no
``packages_to_install``): the scratchbert images carry the library and kfp.
"""

from __future__ import annotations

from typing import Callable, Sequence

from components.helpers import (format_number, history_series, html_page, html_table, log_numbers,
                                 logging_interval, read_log_history, run_stage, svg_line_chart)

# Helpers pasted into every component / into components that write an HTML report.
BASE_HELPERS = (run_stage, log_numbers, logging_interval)
REPORT_HELPERS = BASE_HELPERS + (read_log_history, history_series, format_number, html_table,
                                 svg_line_chart, html_page)

# Folder names under components/, in pipeline order.
STAGES = ("tokenizer", "dataset", "pretrain", "evaluate", "qa_finetune", "publish")


def make_component(func: Callable, image: str, helpers: Sequence[Callable] = BASE_HELPERS):
    """A KFP lightweight component running ``func`` in ``image`` with ``helpers`` pasted in.

    Nothing is pip-installed when the task starts: ``image`` must hold scratchbert and kfp
    (the images under ``images/`` do; so does the project's virtual environment, which is
    what ``kfp.local.SubprocessRunner(use_venv=False)`` uses).
    """
    from kfp import dsl

    return dsl.component(func, base_image=image, install_kfp_package=False,
                         additional_funcs=list(helpers))
