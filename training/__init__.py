"""D-Persona training, evaluation and model-bundle export (python3 -m training)."""
