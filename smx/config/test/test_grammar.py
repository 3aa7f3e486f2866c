# -*- test-case-name: smx.config.test.test_grammar -*-
"""
Tests for L{smx.config.grammar}: every construct of the seed §5.1 grammar
and every syntax error, with its exact line and column.
"""

from twisted.trial.unittest import SynchronousTestCase

from smx.config.errors import ConfigError
from smx.config.grammar import (
    EOF,
    MAX_DEPTH,
    STRING,
    WORD,
    ListValue,
    OptionEntry,
    Scalar,
    SectionEntry,
    parseEntries,
    parseValueText,
    tokenize,
)


class TokenizeTests(SynchronousTestCase):
    """
    Tests for L{tokenize}.
    """

    def kinds(self, text):
        return [(t.kind, t.text) for t in tokenize(text)]

    def test_punctuationAndWords(self):
        """
        Punctuation characters are tokens of their own; words run up to
        white space or punctuation.
        """
        self.assertEqual(
            self.kinds("a=b;{c,d}"),
            [
                (WORD, "a"),
                ("=", "="),
                (WORD, "b"),
                (";", ";"),
                ("{", "{"),
                (WORD, "c"),
                (",", ","),
                (WORD, "d"),
                ("}", "}"),
                (EOF, ""),
            ],
        )

    def test_unquotedValues(self):
        """
        Paths, addresses and names with C{/ . : - [ ]} are single words.
        """
        for word in (
            "/usr/libexec/smtps",
            "smtps/smtpsf",
            "10.10.10.9",
            "smX-qmgr",
            "CRAM-MD5",
            "[::1]:25",
            ":2525",
            "8bitmime",
        ):
            self.assertEqual(self.kinds(word), [(WORD, word), (EOF, "")])

    def test_positions(self):
        """
        Tokens carry their 1-based line and column.
        """
        tokens = tokenize("a = b;\n  c {\n}\n")
        self.assertEqual(
            [(t.text, t.line, t.column) for t in tokens],
            [
                ("a", 1, 1),
                ("=", 1, 3),
                ("b", 1, 5),
                (";", 1, 6),
                ("c", 2, 3),
                ("{", 2, 5),
                ("}", 3, 1),
                ("", 4, 1),
            ],
        )

    def test_comments(self):
        """
        C{#} starts a comment up to the end of the line, also right after
        a word.
        """
        self.assertEqual(
            self.kinds("a = b;# x = y;\n# whole line\nc"),
            [(WORD, "a"), ("=", "="), (WORD, "b"), (";", ";"), (WORD, "c"), (EOF, "")],
        )
        self.assertEqual(self.kinds("word#comment"), [(WORD, "word"), (EOF, "")])

    def test_crlf(self):
        """
        CR LF line ends count as one line end.
        """
        tokens = tokenize("a;\r\nb;\r\n")
        self.assertEqual([(t.text, t.line) for t in tokens][2:4], [("b", 2), (";", 2)])

    def test_lineEnds(self):
        """
        LF, CR LF and a lone CR each end a line: the same text with any of
        them gives the same tokens at the same lines and columns.
        """
        text = '# comment\na = b; # more\n\n  c = "d";\n'
        expected = [(t.kind, t.text, t.line, t.column) for t in tokenize(text)]
        self.assertEqual(expected[0], (WORD, "a", 2, 1))
        self.assertEqual(expected[4], (WORD, "c", 4, 3))
        for end in ("\r\n", "\r"):
            tokens = tokenize(text.replace("\n", end))
            self.assertEqual(
                [(t.kind, t.text, t.line, t.column) for t in tokens],
                expected,
                repr(end),
            )

    def test_commentEndsAtCR(self):
        """
        A comment ends at a lone CR: it does not swallow the rest of a
        file written with CR line ends.
        """
        self.assertEqual(
            self.kinds("# x\ra = b;\r# y\rc"),
            [(WORD, "a"), ("=", "="), (WORD, "b"), (";", ";"), (WORD, "c"), (EOF, "")],
        )

    def test_mixedLineEnds(self):
        """
        A file whose line ends were mixed by editors counts each of them
        once (CR LF is one line end, LF CR two).
        """
        tokens = tokenize("a\rb\nc\r\nd\n\re")
        self.assertEqual(
            [(t.text, t.line) for t in tokens],
            [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 6), ("", 6)],
        )

    def test_stringEndsAtCR(self):
        """
        A string cannot span lines that end with CR either, nor continue
        with a backslash before the line end.
        """
        for text in ('a = "abc\r";', 'a = "abc\\\r";', 'a = "abc\\\r\n";'):
            e = self.assertRaises(ConfigError, tokenize, text)
            self.assertEqual((e.line, e.column), (1, 5), repr(text))
            self.assertIn("unterminated string", e.message)

    def test_stringEscapes(self):
        """
        Strings know the C escapes, octal and hexadecimal.
        """
        tokens = tokenize(r'"a\nb\tc\\d\"e\rf\101\x42\x4a"')
        self.assertEqual(tokens[0].kind, STRING)
        self.assertEqual(tokens[0].text, 'a\nb\tc\\d"e\rfAB\x4a')

    def test_stringKeepsSpecials(self):
        """
        Inside a string, punctuation and C{#} are ordinary characters.
        """
        self.assertEqual(tokenize('"a;b{c}#d=e,f"')[0].text, "a;b{c}#d=e,f")

    def test_emptyString(self):
        """
        C{""} is an empty string.
        """
        self.assertEqual(self.kinds('""'), [(STRING, ""), (EOF, "")])

    def test_unterminatedString(self):
        """
        A string must end on its line; the error points at the opening
        quote.
        """
        e = self.assertRaises(ConfigError, tokenize, 'a = "abc\n";')
        self.assertEqual(
            str(e),
            "smx.conf:1:5: unterminated string (a string cannot span lines; "
            'write "a" "b" to continue it)',
        )
        e = self.assertRaises(ConfigError, tokenize, 'x\n  "abc')
        self.assertEqual((e.line, e.column), (2, 3))

    def test_unknownEscape(self):
        """
        An unknown escape is an error at the backslash.
        """
        e = self.assertRaises(ConfigError, tokenize, 'a = "x\\qy";')
        self.assertEqual(
            str(e), "smx.conf:1:7: unknown escape sequence '\\q' in string"
        )

    def test_emptyHexEscape(self):
        """
        C{\\x} needs at least one hexadecimal digit.
        """
        e = self.assertRaises(ConfigError, tokenize, '"\\xg"')
        self.assertEqual(
            str(e), "smx.conf:1:2: \\x escape without hexadecimal digits in string"
        )

    def test_controlCharacter(self):
        """
        A control character outside a string is an error.
        """
        e = self.assertRaises(ConfigError, tokenize, "a = b\x00;")
        self.assertEqual(str(e), "smx.conf:1:6: unexpected control character U+0000")

    def test_filename(self):
        """
        Errors name the file given.
        """
        e = self.assertRaises(ConfigError, tokenize, '"', "/etc/smx/smx.conf")
        self.assertTrue(str(e).startswith("/etc/smx/smx.conf:1:1: "))


class ParseTests(SynchronousTestCase):
    """
    Tests for L{parseEntries}: the constructs of the grammar.
    """

    def test_empty(self):
        """
        An empty file, or one with only comments, has no entries.
        """
        self.assertEqual(parseEntries(""), [])
        self.assertEqual(parseEntries("# nothing\n\n  # here\n"), [])

    def test_option(self):
        """
        C{name = value;} is an option with a scalar value.
        """
        [entry] = parseEntries("port = 25;")
        self.assertIsInstance(entry, OptionEntry)
        self.assertEqual(entry.name.text, "port")
        self.assertIsInstance(entry.value, Scalar)
        self.assertEqual(entry.value.text, "25")
        self.assertFalse(entry.value.quoted)

    def test_noSpaces(self):
        """
        Layout does not matter: C{ident=smX-qmgr;}.
        """
        [entry] = parseEntries("ident=smX-qmgr;")
        self.assertEqual(entry.value.text, "smX-qmgr")

    def test_adjacentStrings(self):
        """
        Adjacent quoted strings are concatenated, also over lines (seed
        §5.1.1).
        """
        [entry] = parseEntries(
            'somemessage = "this is a very long string which is spread "\n'
            '              "out over several lines because otherwise it is too "\n'
            '              "hard too read.";\n'
        )
        self.assertTrue(entry.value.quoted)
        self.assertEqual(
            entry.value.text,
            "this is a very long string which is spread out over several "
            "lines because otherwise it is too hard too read.",
        )

    def test_words(self):
        """
        Several unquoted words make one value, joined by a space (for
        times such as C{1h 5m 12s}).
        """
        [entry] = parseEntries("t = 1h 5m  12s;")
        self.assertEqual(entry.value.text, "1h 5m 12s")
        self.assertEqual(len(entry.value.tokens), 3)

    def test_list(self):
        """
        C{name = { v1, v2 }} is a list, with or without a C{;}.
        """
        for text in ("l = { a, b };", "l = {a,b}", "l = {a, b};"):
            [entry] = parseEntries(text)
            self.assertIsInstance(entry.value, ListValue)
            self.assertEqual([v.text for v in entry.value.items], ["a", "b"])

    def test_emptyList(self):
        """
        C{{}} is an empty list.
        """
        [entry] = parseEntries("l = {};")
        self.assertEqual(entry.value.items, [])

    def test_listOfStrings(self):
        """
        List items may be quoted, and quoted items concatenate.
        """
        [entry] = parseEntries('l = { "a" "b", "c,d" };')
        self.assertEqual([v.text for v in entry.value.items], ["ab", "c,d"])

    def test_section(self):
        """
        C{keyword { entries }} is a section, with an optional C{;}.
        """
        for text in ("smtps { port = 25; }", "smtps { port = 25; };"):
            [entry] = parseEntries(text)
            self.assertIsInstance(entry, SectionEntry)
            self.assertEqual(entry.keyword.text, "smtps")
            self.assertIsNone(entry.name)
            self.assertEqual(entry.entries[0].name.text, "port")

    def test_namedSection(self):
        """
        C{keyword name { entries }} is a named section; the name may be
        quoted.
        """
        [entry] = parseEntries('smtps MTA { } map "my map" { }')[:1]
        self.assertEqual(entry.name.text, "MTA")
        second = parseEntries('map "my map" { }')[0]
        self.assertEqual(second.name.text, "my map")

    def test_nestedSections(self):
        """
        Sections nest.
        """
        [entry] = parseEntries("qmgr { log { facility = daemon; ident=smX-qmgr; } }")
        [log] = entry.entries
        self.assertEqual(log.keyword.text, "log")
        self.assertEqual([e.value.text for e in log.entries], ["daemon", "smX-qmgr"])

    def test_valueText(self):
        """
        L{parseValueText} parses a right-hand side on its own.
        """
        self.assertEqual(parseValueText("5d").text, "5d")
        self.assertEqual([v.text for v in parseValueText("{a, b}").items], ["a", "b"])


class ParseErrorTests(SynchronousTestCase):
    """
    Every syntax error is one line with the exact line and column.
    """

    def error(self, text):
        return str(self.assertRaises(ConfigError, parseEntries, text))

    def test_missingEqualsOrBrace(self):
        """
        A name followed by something other than C{=}, C{{} or a section
        name.
        """
        self.assertEqual(
            self.error("\n\n\n\n\n\n\n\n\n\n\nqmgr  ;"),
            "smx.conf:12:7: expected '=' or '{' after 'qmgr'",
        )
        self.assertEqual(
            self.error("qmgr }"), "smx.conf:1:6: expected '=' or '{' after 'qmgr'"
        )
        self.assertEqual(
            self.error("\n" * 11 + "qmgr  AQ_max_entries = 8192;"),
            "smx.conf:12:7: expected '=' or '{' after 'qmgr'",
        )
        self.assertEqual(
            self.error("port 25;"), "smx.conf:1:6: expected '=' or '{' after 'port'"
        )
        self.assertEqual(
            self.error("smtps MTA"), "smx.conf:1:7: expected '=' or '{' after 'smtps'"
        )

    def test_missingBraceAfterName(self):
        """
        C{keyword name} must be followed by C{{}.
        """
        self.assertEqual(
            self.error("smtps MTA port = 25;"),
            "smx.conf:1:11: expected '{' after 'smtps MTA'",
        )
        self.assertEqual(
            self.error('map "my map" type = hash;'),
            "smx.conf:1:14: expected '{' after 'map my map'",
        )

    def test_missingSemicolon(self):
        """
        A scalar value must end with C{;}, also before C{}}.
        """
        self.assertEqual(
            self.error("smtps {\n  port = 25\n}"),
            "smx.conf:3:1: expected ';' after the value of 'port'",
        )
        self.assertEqual(
            self.error("a = b"), "smx.conf:1:6: expected ';' after the value of 'a'"
        )
        self.assertEqual(
            self.error("a = b,"), "smx.conf:1:6: expected ';' after the value of 'a'"
        )

    def test_missingValue(self):
        """
        C{=} must be followed by a value or a list.
        """
        self.assertEqual(
            self.error("a = ;"), "smx.conf:1:5: expected a value after '=' for 'a'"
        )
        self.assertEqual(
            self.error("a ="), "smx.conf:1:4: expected a value after '=' for 'a'"
        )

    def test_badList(self):
        """
        List items are separated by commas; a trailing comma or a nested
        list is an error.
        """
        self.assertEqual(
            self.error("f = { a b; }"),
            "smx.conf:1:10: expected ',' or '}' in the list of 'f'",
        )
        self.assertEqual(
            self.error("f = { a, };"),
            "smx.conf:1:10: expected a value in the list of 'f'",
        )
        self.assertEqual(
            self.error("f = { {a} };"),
            "smx.conf:1:7: expected a value in the list of 'f'",
        )
        self.assertEqual(
            self.error("f = { a"),
            "smx.conf:1:8: expected ',' or '}' in the list of 'f'",
        )

    def test_unclosedSection(self):
        """
        A section open at the end of the file names where it was opened.
        """
        self.assertEqual(
            self.error("a = b;\nsmtps MTA {\n  port = 25;\n"),
            "smx.conf:4:1: expected '}' to close section 'smtps MTA' opened at line 2",
        )

    def test_strayBrace(self):
        """
        A C{}} without an open section.
        """
        self.assertEqual(
            self.error("a = b; }"), "smx.conf:1:8: unexpected '}' (no section is open)"
        )

    def test_unexpectedToken(self):
        """
        An entry must start with a name.
        """
        self.assertEqual(
            self.error("a = b;;"),
            "smx.conf:1:7: expected an option name or a section keyword, found ';'",
        )
        self.assertEqual(
            self.error('"a" = b;'),
            "smx.conf:1:1: expected an option name or a section keyword, "
            "found string 'a'",
        )
        self.assertEqual(
            self.error("= b;"),
            "smx.conf:1:1: expected an option name or a section keyword, found '='",
        )

    def test_extraSemicolonAfterSection(self):
        """
        Only one C{;} may follow a section.
        """
        self.assertEqual(
            self.error("a { };;"),
            "smx.conf:1:7: expected an option name or a section keyword, found ';'",
        )

    def test_mixedValue(self):
        """
        A value is either quoted strings or unquoted words.
        """
        self.assertEqual(
            self.error('a = "x" y;'),
            "smx.conf:1:9: cannot mix quoted and unquoted text in one value",
        )

    def test_tooDeep(self):
        """
        Deeply nested sections are an error, not a crash.
        """
        text = "a { " * (MAX_DEPTH + 1) + "}" * (MAX_DEPTH + 1)
        self.assertEqual(
            self.error(text),
            "smx.conf:1:%d: sections nested too deeply (more than %d levels)"
            % (MAX_DEPTH * 4 + 1, MAX_DEPTH),
        )
        self.assertEqual(self.error("a {" * 100000)[:9], "smx.conf:")

    def test_errorLinesWithCR(self):
        """
        A syntax error names the same line whether the file ends its lines
        with LF, CR LF or CR.
        """
        text = "# one\nsmtps {\n  # three\n  io_timeout = 5m\n}\n"
        for end in ("\n", "\r\n", "\r"):
            e = self.assertRaises(ConfigError, parseEntries, text.replace("\n", end))
            self.assertEqual(
                str(e), "smx.conf:5:1: expected ';' after the value of 'io_timeout'"
            )

    def test_errorAttributes(self):
        """
        L{ConfigError} carries the parts of its location.
        """
        e = self.assertRaises(ConfigError, parseEntries, "x y z", "f.conf")
        self.assertEqual((e.filename, e.line, e.column), ("f.conf", 1, 5))
        self.assertEqual(e.message, "expected '{' after 'x y'")
        e = self.assertRaises(ConfigError, parseEntries, "x y", "f.conf")
        self.assertEqual((e.line, e.column), (1, 3))
