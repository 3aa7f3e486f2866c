"""smx.queue"""
