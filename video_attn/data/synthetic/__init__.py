"""video_attn.data.synthetic"""
