"""polyvox toolchain: phrase catalog → synthetic speech → features → Keras → int8 TFLite bundle."""
