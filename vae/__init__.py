"""Plain-PyTorch VAE with Rényi bounds: data, model, bounds, trainer. Knows nothing of Ray or MLflow."""
