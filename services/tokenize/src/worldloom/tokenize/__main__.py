"""`python -m worldloom.tokenize`: the tokenize API and its clips.curated consumer (WORLDLOOM_TOKENIZE_*)."""

from worldloom.core.service import serve
from worldloom.core.settings import load_settings
from worldloom.tokenize.app import build_app
from worldloom.tokenize.settings import TokenizeSettings


def main() -> None:
    settings = load_settings(TokenizeSettings)
    serve(build_app(settings), settings, "tokenize")


if __name__ == "__main__":
    main()
