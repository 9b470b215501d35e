"""video_attn.models.attention"""
