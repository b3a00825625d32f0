"""The qa_finetune component: see component.py and README.md."""
