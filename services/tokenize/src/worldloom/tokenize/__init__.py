"""Tokenize service: tokenizer training jobs (Ray Train), a registry, clip encoding and ad-hoc encode/decode."""
