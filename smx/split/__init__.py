"""
smx.split: the components of smx in processes of their own (split mode),
calling each other with Twisted AMP over the Unix domain sockets of seed
§5.4; see L{smx.split.service} and C{doc/split.md}.
"""
