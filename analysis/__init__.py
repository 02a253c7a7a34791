"""Latent-space metrics, geometry and figures of the study."""
