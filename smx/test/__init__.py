"""smx.test"""
