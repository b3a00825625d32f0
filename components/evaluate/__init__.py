"""The evaluate component: see component.py and README.md."""
