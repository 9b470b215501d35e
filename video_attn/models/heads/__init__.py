"""video_attn.models.heads"""
