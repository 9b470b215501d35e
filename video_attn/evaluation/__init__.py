"""video_attn.evaluation"""
