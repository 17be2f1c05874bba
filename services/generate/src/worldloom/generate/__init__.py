"""Generate service: world-model inference (predicted video frames from context frames, actions and text)
served with KServe over the Open Inference Protocol v2, plus an MP4/GIF convenience route."""
