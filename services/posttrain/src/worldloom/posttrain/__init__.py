"""Posttrain service: post-training jobs on a registered world model (new domain, labels, embodiment,
rewards; full / heads / LoRA), evaluated before / after / against scratch, announced on models.trained."""
