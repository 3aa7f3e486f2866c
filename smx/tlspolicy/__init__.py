# -*- test-case-name: smx.tlspolicy.test.test_policy -*-
"""
TLS policy of SMTPC per destination: the policy value and its sources
(L{smx.tlspolicy.policy}), the policy map, DANE, MTA-STS, TLS reporting.
"""
