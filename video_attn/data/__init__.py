"""video_attn.data"""
