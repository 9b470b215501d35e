"""video_attn.data.datasets"""
