"""mlx_ddsp: Differentiable Digital Signal Processing (Engel et al., ICLR 2020) on Apple's MLX."""

__version__ = "0.1.0"
