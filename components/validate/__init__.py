"""The validate component: see component.py and README.md."""
