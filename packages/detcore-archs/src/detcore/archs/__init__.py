"""detcore.archs: meta-architectures, configs, build_model, detectron2 checkpoint and config compatibility."""

__all__: list[str] = []
