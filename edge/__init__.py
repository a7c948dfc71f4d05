"""polyvox on-device runtime: audio → frontend → VAD → int8 models → decisions → events."""

__version__ = "0.1.0"
