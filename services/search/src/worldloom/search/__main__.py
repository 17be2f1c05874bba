"""`python -m worldloom.search`: run the search API with settings from WORLDLOOM_SEARCH_* variables."""

from worldloom.core.service import serve
from worldloom.core.settings import load_settings
from worldloom.search.app import build_app
from worldloom.search.settings import SearchSettings


def main() -> None:
    settings = load_settings(SearchSettings)
    serve(build_app(settings), settings, "search")


if __name__ == "__main__":
    main()
