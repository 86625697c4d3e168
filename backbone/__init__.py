"""EfficientNet B0..B7 backbones (Tan & Le, EfficientNet, ICML 2019)."""
