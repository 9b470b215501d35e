"""video_attn.retrieval"""
