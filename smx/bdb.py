# -*- test-case-name: smx.test.test_bdb -*-
"""
NAME
    smx.bdb - the Berkeley DB module smx uses

SYNOPSIS
    from smx.bdb import db

    d = db.DB()
    d.open(path, dbtype=db.DB_HASH, flags=db.DB_RDONLY)

DESCRIPTION
    Maps (C{hash} maps, C{conf.db}) and DEFEDB are Berkeley DB files, so
    that maps made by sendmail's C{makemap hash} and smx's C{createmap}
    are interchangeable.  L{db} is the C{db} module of the C{berkeleydb}
    package (the maintained continuation of C{bsddb3}, with the same API,
    built against Debian's libdb5.3-dev), or of C{bsddb3} where only that
    is installed.  Every module of smx that opens a Berkeley DB file
    imports it from here.

DIAGNOSTICS
    Importing this module without either package raises C{ImportError}
    saying which package to install.
"""

from __future__ import annotations

try:
    from berkeleydb import db
except ImportError:
    try:
        from bsddb3 import db  # type: ignore[no-redef]
    except ImportError:
        raise ImportError(
            "smx needs Berkeley DB for Python: pip install berkeleydb "
            "(Debian: apt-get install libdb5.3-dev first), or bsddb3"
        ) from None

__all__ = ["db"]
