"""`python -m worldloom.curate`: the curate API and its videos.ingested consumer (WORLDLOOM_CURATE_* settings)."""

from worldloom.core.service import serve
from worldloom.core.settings import load_settings
from worldloom.curate.app import build_app
from worldloom.curate.settings import CurateSettings


def main() -> None:
    settings = load_settings(CurateSettings)
    serve(build_app(settings), settings, "curate")


if __name__ == "__main__":
    main()
