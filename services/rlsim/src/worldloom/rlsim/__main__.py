"""`python -m worldloom.rlsim`: the RL-sim API (WORLDLOOM_RLSIM_* settings)."""

from worldloom.core.service import serve
from worldloom.core.settings import load_settings
from worldloom.rlsim.app import build_app
from worldloom.rlsim.settings import RlsimSettings


def main() -> None:
    settings = load_settings(RlsimSettings)
    serve(build_app(settings), settings, "rlsim")


if __name__ == "__main__":
    main()
