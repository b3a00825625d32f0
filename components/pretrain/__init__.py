"""The pretrain component: see component.py and README.md."""
