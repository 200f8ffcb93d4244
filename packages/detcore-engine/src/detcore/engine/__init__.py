"""detcore.engine: data, augmentation, trainer, evaluation, predictor, visualizer, CLI."""

__all__: list[str] = []
