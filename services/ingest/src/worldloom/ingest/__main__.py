"""`python -m worldloom.ingest`: run the ingest API with settings from WORLDLOOM_INGEST_* variables."""

from worldloom.core.service import serve
from worldloom.core.settings import load_settings
from worldloom.ingest.app import build_app
from worldloom.ingest.settings import IngestSettings


def main() -> None:
    settings = load_settings(IngestSettings)
    serve(build_app(settings), settings, "ingest")


if __name__ == "__main__":
    main()
