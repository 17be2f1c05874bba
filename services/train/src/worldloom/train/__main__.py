"""`python -m worldloom.train`: the train API (WORLDLOOM_TRAIN_* settings)."""

from worldloom.core.service import serve
from worldloom.core.settings import load_settings
from worldloom.train.app import build_app
from worldloom.train.settings import TrainSettings


def main() -> None:
    settings = load_settings(TrainSettings)
    serve(build_app(settings), settings, "train")


if __name__ == "__main__":
    main()
