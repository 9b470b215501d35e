"""video_attn: video action recognition (TANet) and video person ReID (GLTR) on attention ResNets."""

__version__ = "0.1.0"
