"""`python -m worldloom.generate`: serve world models over KServe's Open Inference Protocol v2
(settings WORLDLOOM_GENERATE_*, see worldloom.generate.settings)."""

from __future__ import annotations

import sys


def main() -> None:
    # KServe parses sys.argv when kserve.model_server is imported; our configuration is the environment.
    sys.argv = sys.argv[:1]
    from worldloom.core.service.logging import configure_logging
    from worldloom.core.settings import load_settings
    from worldloom.generate.app import GenerateModelServer, build_predictors
    from worldloom.generate.settings import GenerateSettings

    settings = load_settings(GenerateSettings)
    configure_logging("generate", settings.log_level)
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    predictors = build_predictors(settings)
    GenerateModelServer(settings).start(predictors)


if __name__ == "__main__":
    main()
