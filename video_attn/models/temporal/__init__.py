"""video_attn.models.temporal"""
