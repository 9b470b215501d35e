"""video_attn.models"""
