"""smx.pmilter"""
