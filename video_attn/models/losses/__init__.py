"""video_attn.models.losses"""
