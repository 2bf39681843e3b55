"""PLACEHOLDER: `vlc compare` is being written; replace this whole module."""


def register(app) -> None:  # noqa: ANN001
    pass
