"""A vision-language model over HTTP, for the annotate stage's optional captions.

Any OpenAI-compatible chat API that accepts image_url content works (vLLM, Ollama, TGI...), so the
stage needs no model of its own; the stage only sees a ``(jpeg, hint) -> caption`` callable.
"""

from __future__ import annotations

import base64

import httpx


class OpenAIVisionCaptioner:
    """Captions a JPEG with one chat completion; raises on an HTTP error or an empty answer."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 30.0,
                 prompt: str = "Describe this video frame in one factual sentence for a dataset caption.") -> None:
        self.client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s,
                                   headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
        self.model = model
        self.prompt = prompt

    def __call__(self, jpeg: bytes, hint: str) -> str:
        content = [
            {"type": "text", "text": self.prompt + (f" Context: {hint}" if hint else "")},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()}},
        ]
        resp = self.client.post("/chat/completions", json={
            "model": self.model, "max_tokens": 96, "temperature": 0.0,
            "messages": [{"role": "user", "content": content}],
        })
        resp.raise_for_status()
        text = resp.json()["choices"][0]["message"]["content"]
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the model returned an empty caption")
        return " ".join(text.split())[:1000]

    def close(self) -> None:
        self.client.close()
