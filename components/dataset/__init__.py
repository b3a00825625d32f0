"""The dataset component: see component.py and README.md."""
