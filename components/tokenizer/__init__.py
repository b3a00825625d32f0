"""The tokenizer component: see component.py and README.md."""
