"""video_attn.engine"""
