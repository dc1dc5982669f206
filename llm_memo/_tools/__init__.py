"""Tools: the CLI, the notebook magic, export/import and the demo."""
