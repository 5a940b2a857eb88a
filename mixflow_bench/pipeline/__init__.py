"""The reproduction pipeline: stages with manifests, the toy Fréchet distance, GPU-hour estimates."""
