"""MIL generators for transformer kernels, built with :class:`anetrain.mil.Builder`."""
