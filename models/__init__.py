"""Reference detectors built on pydet_ops."""
