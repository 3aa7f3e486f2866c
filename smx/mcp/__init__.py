"""smx.mcp"""
