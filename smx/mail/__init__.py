"""smx.mail"""
