"""video_attn.models.backbones"""
