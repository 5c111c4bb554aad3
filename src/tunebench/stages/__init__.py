"""The workflow's stages (dataset, train, evaluate) and what they run on: models, prompt formats, generation."""
