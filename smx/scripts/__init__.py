"""smx.scripts"""
