"""Train service: world-model pretraining jobs (Ray Train), the model registry and models.trained."""
