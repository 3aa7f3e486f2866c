# -*- test-case-name: smx.config.test.test_grammar -*-
"""
The one exception of L{smx.config}: a mistake in a configuration file.
"""

from __future__ import annotations

from typing import Optional


class ConfigError(Exception):
    """
    A configuration file (or a value given for it) is not acceptable.

    C{str()} of it is one line naming the file and, when known, the line
    and column: C{"smx.conf:12:7: expected '=' or '{' after 'qmgr'"}.

    @ivar filename: the file name as it was given (not made absolute), or
        C{None} when no file is involved.
    @ivar line: 1-based line number, or C{None}.
    @ivar column: 1-based column number (in characters), or C{None}.
    @ivar message: the text of the problem, without the location.
    """

    def __init__(
        self,
        message: str,
        filename: Optional[str] = None,
        line: Optional[int] = None,
        column: Optional[int] = None,
    ) -> None:
        Exception.__init__(self, message, filename, line, column)
        self.message = message
        self.filename = filename
        self.line = line
        self.column = column

    def location(self) -> str:
        """
        @return: C{"file:line:column"}, C{"file:line"}, C{"file"} or C{""}
            depending on what is known.
        """
        parts = []
        if self.filename is not None:
            parts.append(self.filename)
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        where = self.location()
        if where:
            return "%s: %s" % (where, self.message)
        return self.message


class SectionNotFound(ConfigError, KeyError):
    """
    A named section that a program was told to use (e.g. C{smtps -N MSA})
    is not in the configuration file.
    """

    def __str__(self) -> str:
        return ConfigError.__str__(self)
