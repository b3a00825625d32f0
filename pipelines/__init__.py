"""The scratchbert Kubeflow pipeline, installed as ``scratchbert_pipelines``.

* :mod:`~scratchbert_pipelines.bert_pipeline`: the ``@dsl.pipeline`` (wiring, GPU, caching, retries);
* :mod:`~scratchbert_pipelines.parameters`: its parameters, derived from the stages' configs;
* :mod:`~scratchbert_pipelines.settings`: every cluster-side value (images, GPU label, Secret, bucket);
* :mod:`~scratchbert_pipelines.compile`: writes the YAML a cluster runs;
* :mod:`~scratchbert_pipelines.local_run`: ``scratchbert run-local``, the pipeline through ``kfp.local``;
* :mod:`~scratchbert_pipelines.submit`: ``scratchbert submit``, upload and run on a Kubeflow cluster;
* :mod:`~scratchbert_pipelines.trainjob`: pretraining on N nodes × M GPUs as a Kubeflow Trainer TrainJob.
"""
