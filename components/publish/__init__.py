"""The publish component: see component.py and README.md."""
