# -*- test-case-name: smx.config.test.test_values -*-
"""
Tests for L{smx.config.values}: units of times and sizes, and every value
type.
"""

from twisted.trial.unittest import SynchronousTestCase

from smx.config.grammar import parseValueText
from smx.config.values import (
    CONFIG_RELATIVE,
    QUEUE_RELATIVE,
    Address,
    Boolean,
    Character,
    Enum,
    Flags,
    Integer,
    IPAddress,
    ListOf,
    Name,
    Path,
    Size,
    String,
    Time,
    ValueProblem,
    formatSize,
    formatTime,
    quoteValue,
    splitAddress,
)


def convert(valueType, text):
    return valueType.convert(parseValueText(text))


class TimeTests(SynchronousTestCase):
    """
    Tests for L{Time}.
    """

    def test_units(self):
        """
        C{w d h m s} and a bare number in seconds.
        """
        t = Time()
        for text, seconds in [
            ("61", 61.0),
            ("2w", 1209600.0),
            ("5d", 432000.0),
            ("4h", 14400.0),
            ("5m", 300.0),
            ("30s", 30.0),
            ("1.5h", 5400.0),
            ("0", 0.0),
        ]:
            self.assertEqual(convert(t, text), seconds, text)

    def test_sequence(self):
        """
        A sequence of numbers and units adds up, quoted or not, with or
        without spaces.
        """
        t = Time()
        for text in ("1h 5m 12s", '"1h 5m 12s"', "1h5m12s", '"1h" "5m" "12s"'):
            self.assertEqual(convert(t, text), 3912.0, text)

    def test_caseInsensitive(self):
        """
        Units are case-insensitive.
        """
        self.assertEqual(convert(Time(), "1H 1M"), 3660.0)

    def test_microseconds(self):
        """
        An option whose unit is µs reads a bare number as microseconds;
        units still work.
        """
        t = Time("us")
        self.assertEqual(convert(t, "10000"), 0.01)
        self.assertEqual(convert(t, "10ms"), 0.01)
        self.assertEqual(convert(t, "1s"), 1.0)
        self.assertEqual(convert(t, "250us"), 0.00025)

    def test_bad(self):
        """
        Not a time: a clear problem naming the text and an example.
        """
        for text in ("abc", "-5", "5x", "1h -5m", '""', "h"):
            e = self.assertRaises(ValueProblem, convert, Time(), text)
            self.assertIn("time", e.message)
        e = self.assertRaises(ValueProblem, convert, Time(), "5x")
        self.assertEqual(
            e.message, "unknown time unit 'x' in '5x' (valid: w, d, h, m, s, ms, us)"
        )
        e = self.assertRaises(ValueProblem, convert, Time(), "abc")
        self.assertEqual(e.message, "'abc' is not a time (e.g. 1h 5m 12s)")

    def test_bounds(self):
        """
        Times outside the bounds are refused.
        """
        e = self.assertRaises(ValueProblem, convert, Time(minimum=1), "0")
        self.assertEqual(e.message, "0 is out of range (>= 1s)")
        e = self.assertRaises(ValueProblem, convert, Time("us", maximum=10), "11s")
        self.assertEqual(e.message, "11s is out of range (0s..10s)")

    def test_huge(self):
        """
        A number too large for a float is refused, not infinite.
        """
        e = self.assertRaises(ValueProblem, convert, Time(), "9" * 400 + "w")
        self.assertIn("too large", e.message)

    def test_list(self):
        """
        A list is not a time.
        """
        e = self.assertRaises(ValueProblem, convert, Time(), "{1, 2}")
        self.assertEqual(e.message, "expected a single value, not a list")

    def test_format(self):
        """
        L{formatTime} uses the largest unit that divides the time.
        """
        for seconds, text in [
            (432000.0, "5d"),
            (1209600.0, "2w"),
            (14400.0, "4h"),
            (300.0, "5m"),
            (61.0, "61s"),
            (0.0, "0s"),
            (0.01, "10ms"),
            (0.00025, "250us"),
            (1.5, "1.5s"),
        ]:
            self.assertEqual(formatTime(seconds), text)
            self.assertEqual(convert(Time(), text), seconds)


class SizeTests(SynchronousTestCase):
    """
    Tests for L{Size}.
    """

    def test_units(self):
        """
        C{B KB MB GB} are powers of 1024; a bare number is in bytes.
        """
        s = Size()
        for text, size in [
            ("100", 100),
            ("100B", 100),
            ("2KB", 2048),
            ("8MB", 8 * 1024 * 1024),
            ("1GB", 1024**3),
            ("1MB 512KB", 1024 * 1024 + 512 * 1024),
            ("8mb", 8 * 1024 * 1024),
            ("1.5KB", 1536),
            ('"8MB"', 8 * 1024 * 1024),
        ]:
            self.assertEqual(convert(s, text), size, text)

    def test_kilobyteOption(self):
        """
        For an option whose unit is KB (C{max_message_size}) a bare number
        is in KB, and the value is still bytes.
        """
        s = Size("KB")
        self.assertEqual(convert(s, "8192"), 8 * 1024 * 1024)
        self.assertEqual(convert(s, "8MB"), 8 * 1024 * 1024)
        self.assertEqual(convert(s, "512B"), 512)

    def test_bad(self):
        """
        Not a size.
        """
        e = self.assertRaises(ValueProblem, convert, Size(), "8TB")
        self.assertEqual(
            e.message, "unknown size unit 'TB' in '8TB' (valid: B, KB, MB, GB)"
        )
        e = self.assertRaises(ValueProblem, convert, Size(), "lots")
        self.assertEqual(e.message, "'lots' is not a size (e.g. 8MB)")
        e = self.assertRaises(ValueProblem, convert, Size(), "9" * 30 + "GB")
        self.assertIn("too large", e.message)

    def test_bounds(self):
        """
        Sizes outside the bounds are refused.
        """
        e = self.assertRaises(ValueProblem, convert, Size(minimum=512), "1")
        self.assertEqual(e.message, "1 is out of range (>= 512B)")

    def test_zero(self):
        """
        With C{zero}, 0 (no limit) is allowed below the minimum, and the
        bounds say so; other values below it are still refused.
        """
        s = Size("KB", minimum=1024, zero=True)
        self.assertEqual(convert(s, "0"), 0)
        self.assertEqual(convert(s, "0MB"), 0)
        self.assertEqual(convert(s, "1"), 1024)
        self.assertEqual(s.bounds(), "0 or >= 1KB")
        e = self.assertRaises(ValueProblem, convert, s, "100B")
        self.assertEqual(e.message, "100B is out of range (0 or >= 1KB)")
        self.assertRaises(ValueProblem, convert, Size("KB", minimum=1024), "0")

    def test_format(self):
        """
        L{formatSize} uses the largest unit that divides the size.
        """
        self.assertEqual(formatSize(8 * 1024 * 1024), "8MB")
        self.assertEqual(formatSize(1536), "1536B")
        self.assertEqual(formatSize(1024**3), "1GB")
        self.assertEqual(formatSize(0), "0B")
        self.assertEqual(formatSize(10240), "10KB")


class ScalarTypeTests(SynchronousTestCase):
    """
    Tests for the other single-valued types.
    """

    def test_integer(self):
        """
        Decimal integers within bounds.
        """
        self.assertEqual(convert(Integer(), "8192"), 8192)
        self.assertEqual(convert(Integer(), '"12"'), 12)
        e = self.assertRaises(ValueProblem, convert, Integer(), "12x")
        self.assertEqual(e.message, "'12x' is not an integer")
        e = self.assertRaises(ValueProblem, convert, Integer(1, 10), "11")
        self.assertEqual(e.message, "11 is out of range (1..10)")
        e = self.assertRaises(ValueProblem, convert, Integer(0), "-1")
        self.assertEqual(e.message, "-1 is out of range (>= 0)")

    def test_octal(self):
        """
        A umask is octal.
        """
        t = Integer(0, 0o777, base=8)
        self.assertEqual(convert(t, "007"), 7)
        self.assertEqual(convert(t, "0660"), 0o660)
        self.assertEqual(t.render(0o22), "0022")
        e = self.assertRaises(ValueProblem, convert, t, "9")
        self.assertEqual(e.message, "'9' is not an octal number")

    def test_boolean(self):
        """
        yes/no, true/false, on/off, 1/0.
        """
        for text in ("yes", "TRUE", "on", "1"):
            self.assertIs(convert(Boolean(), text), True)
        for text in ("no", "False", "off", "0"):
            self.assertIs(convert(Boolean(), text), False)
        e = self.assertRaises(ValueProblem, convert, Boolean(), "maybe")
        self.assertEqual(e.message, "'maybe' is not a boolean (use yes or no)")

    def test_enum(self):
        """
        One of a set, case-insensitively, with a suggestion for a typo.
        """
        t = Enum(("nostartaccept", "accept", "pass", "wait"))
        self.assertEqual(convert(t, "PASS"), "pass")
        e = self.assertRaises(ValueProblem, convert, t, "wiat")
        self.assertEqual(
            e.message,
            "'wiat' is not one of nostartaccept, accept, pass, wait; "
            "did you mean 'wait'?",
        )

    def test_string(self):
        """
        A string is taken as written; several unquoted words are refused.
        """
        self.assertEqual(
            convert(String(), '"smtps -f /etc/smx/smx.conf"'),
            "smtps -f /etc/smx/smx.conf",
        )
        e = self.assertRaises(ValueProblem, convert, String(), "smtps -f x")
        self.assertEqual(
            e.message,
            "expected ';' after 'smtps' (quote a value that contains spaces)",
        )
        self.assertEqual(e.token.column, 11)
        e = self.assertRaises(ValueProblem, convert, String(empty=False), '""')
        self.assertEqual(e.message, "the value must not be empty")

    def test_character(self):
        """
        One character, not a space or an address character.
        """
        self.assertEqual(convert(Character(), "+"), "+")
        self.assertEqual(convert(Character(), '"-"'), "-")
        for text in ('"++"', '" "', "@", '""'):
            self.assertRaises(ValueProblem, convert, Character(), text)

    def test_name(self):
        """
        Names are letters, digits and a few punctuation characters.
        """
        self.assertEqual(convert(Name(), "seq_1"), "seq_1")
        self.assertRaises(ValueProblem, convert, Name(), '"a b"')

    def test_ipAddress(self):
        """
        IPv4 and IPv6 literals.
        """
        self.assertEqual(convert(IPAddress(), "127.0.0.1"), "127.0.0.1")
        self.assertEqual(convert(IPAddress(), "::1"), "::1")
        e = self.assertRaises(ValueProblem, convert, IPAddress(), "localhost")
        self.assertEqual(e.message, "'localhost' is not an IP address")

    def test_path(self):
        """
        Paths resolve against the configuration or queue directory; an
        absolute path stays as it is.
        """
        c, q = Path(CONFIG_RELATIVE), Path(QUEUE_RELATIVE)
        self.assertEqual(
            c.resolve("aliases.db", "/etc/smx", "/var/q"), "/etc/smx/aliases.db"
        )
        self.assertEqual(q.resolve("smtps/fd", "/etc/smx", "/var/q"), "/var/q/smtps/fd")
        self.assertEqual(q.resolve("/abs/x", "/etc/smx", "/var/q"), "/abs/x")
        self.assertIsNone(q.resolve(None, "/etc/smx", "/var/q"))
        self.assertEqual(
            Path(QUEUE_RELATIVE, empty=True).resolve("", "/c", "/q"), "/q/"
        )
        e = self.assertRaises(ValueProblem, convert, c, '""')
        self.assertEqual(e.message, "the path must not be empty")
        e = self.assertRaises(ValueProblem, convert, c, '"a\\0b"')
        self.assertEqual(e.message, "a path cannot contain a NUL character")


class ListTypeTests(SynchronousTestCase):
    """
    Tests for L{ListOf} and L{Flags}.
    """

    def test_list(self):
        """
        A list of strings; a single value is a list of one.
        """
        self.assertEqual(
            convert(ListOf(), "{ smtps, smtpc, smar }"), ["smtps", "smtpc", "smar"]
        )
        self.assertEqual(convert(ListOf(), "smtps"), ["smtps"])
        self.assertEqual(convert(ListOf(), "{}"), [])

    def test_maxItems(self):
        """
        Too many items is an error at the first one too many.
        """
        e = self.assertRaises(ValueProblem, convert, ListOf(maxItems=2), "{a, b, c}")
        self.assertEqual(e.message, "at most 2 values are allowed, not 3")
        self.assertEqual(e.token.column, 12)  # after the 'x = ' prefix

    def test_itemType(self):
        """
        Each item is checked by the item type.
        """
        e = self.assertRaises(ValueProblem, convert, ListOf(Name()), '{a, "b c"}')
        self.assertIn("'b c' is not a name", e.message)

    def test_flags(self):
        """
        Flags are a frozenset of lower-case names; case, hyphens and spaces
        do not matter; a single flag needs no braces.
        """
        t = Flags(("use_TCP", "use_connect", "forward_secrecy"))
        self.assertEqual(
            convert(t, "{use_tcp, USE_Connect}"), frozenset({"use_tcp", "use_connect"})
        )
        self.assertEqual(convert(t, "use_TCP"), frozenset({"use_tcp"}))
        self.assertEqual(
            convert(t, "{forward secrecy}"), frozenset({"forward_secrecy"})
        )
        self.assertEqual(convert(t, "{}"), frozenset())
        self.assertEqual(t.render(frozenset({"use_tcp"})), "{use_TCP}")

    def test_flagAlias(self):
        """
        A flag may have another spelling.
        """
        t = Flags(
            ("lmtp_does_not_imply_relaying",),
            {"lmtpl_does_not_imply_relaying": "lmtp_does_not_imply_relaying"},
        )
        self.assertEqual(
            convert(t, "lmtpl_does_not_imply_relaying"),
            frozenset({"lmtp_does_not_imply_relaying"}),
        )

    def test_unknownFlag(self):
        """
        An unknown flag lists the valid ones and suggests the closest.
        """
        t = Flags(("8bitmime", "access"))
        e = self.assertRaises(ValueProblem, convert, t, "{8bitmime, acess}")
        self.assertEqual(
            e.message,
            "unknown flag 'acess' (valid: 8bitmime, access); did you mean 'access'?",
        )
        self.assertEqual(e.token.column, 16)


class AddressTests(SynchronousTestCase):
    """
    Tests for L{Address} and L{splitAddress}.
    """

    def test_daemonAddress(self):
        """
        The formats of seed §5.9 item 2, and IPv6 in brackets.
        """
        t = Address(8000, True, "address")
        for text, split in [
            ("127.0.0.1:2525", ("127.0.0.1", 2525)),
            (":25", ("0.0.0.0", 25)),
            ("localhost", ("localhost", 8000)),
            ("mx.example.com:25", ("mx.example.com", 25)),
            ("[::1]:25", ("::1", 25)),
            ("[::1]", ("::1", 8000)),
            ("::1", ("::1", 8000)),
        ]:
            self.assertEqual(convert(t, '"%s"' % (text,)), text)
            self.assertEqual(splitAddress(text, 8000), split)

    def test_badAddresses(self):
        """
        Malformed addresses and ports are refused with the reason.
        """
        t = Address(8000, True, "address")
        for text, message in [
            ("127.0.0.1:", "missing port after ':' in '127.0.0.1:'"),
            ("127.0.0.1:99999", "'99999' is not a port number (1..65535)"),
            ("127.0.0.1:x", "'x' is not a port number (1..65535)"),
            ("[::1", "missing ']' in '[::1'"),
            ("[::1]25", "expected ':port' after ']' in '[::1]25'"),
            ("[foo]:25", "'foo' is not an IPv6 address"),
            (
                "1:2:3",
                "'1:2:3' is not an address (write IPv6 addresses in brackets, e.g. [::1]:25)",
            ),
            ("300.1.1.1:25", "'300.1.1.1' is not an IP address"),
            ("bad_host!:25", "'bad_host!' is not a host name or address"),
        ]:
            e = self.assertRaises(ValueProblem, convert, t, '"%s"' % (text,))
            self.assertEqual(e.message, message)
        self.assertRaises(ValueError, splitAddress, "x:", 25)

    def test_nameserver(self):
        """
        Nameservers are IP addresses, with an optional port.
        """
        t = Address(53, False, "address")
        self.assertEqual(convert(t, "10.10.10.9"), "10.10.10.9")
        self.assertEqual(splitAddress("127.0.0.53:5353", 53), ("127.0.0.53", 5353))
        self.assertEqual(splitAddress("[::1]:5353", 53), ("::1", 5353))
        e = self.assertRaises(ValueProblem, convert, t, "ns.example.com")
        self.assertEqual(e.message, "'ns.example.com' is not an IP address")


class QuoteTests(SynchronousTestCase):
    """
    Tests for L{quoteValue}.
    """

    def test_plain(self):
        """
        Plain words are not quoted.
        """
        for text in ("/usr/libexec/smtps", "smX-qmgr", "127.0.0.1:25", "-i", "a\\b"):
            self.assertEqual(quoteValue(text), text)
            self.assertEqual(parseValueText(quoteValue(text)).text, text)

    def test_quoted(self):
        """
        Anything else is quoted, with escapes, and reads back the same.
        """
        for text in ("", "a b", "a;b", 'say "hi"', "tab\there", "x#y", "\x01"):
            quoted = quoteValue(text)
            self.assertTrue(quoted.startswith('"'), quoted)
            self.assertEqual(parseValueText(quoted).text, text)
