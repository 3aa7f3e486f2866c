"""
Mail filters: the client side of the sendmail milter protocol
(L{smx.milter.client}) and of the Postfix policy delegation protocol.
"""
