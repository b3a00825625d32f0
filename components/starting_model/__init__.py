"""The starting_model component: see component.py."""
