"""smx.maps"""
