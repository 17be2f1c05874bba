"""`python -m worldloom.posttrain`: the posttrain API (WORLDLOOM_POSTTRAIN_* settings)."""

from worldloom.core.service import serve
from worldloom.core.settings import load_settings
from worldloom.posttrain.app import build_app
from worldloom.posttrain.settings import PosttrainSettings


def main() -> None:
    settings = load_settings(PosttrainSettings)
    serve(build_app(settings), settings, "posttrain")


if __name__ == "__main__":
    main()
