# -*- test-case-name: smx.test.test_tree -*-
"""
Tests of the source tree itself: what its modules and documents say about
other files is true.

  - the C{test-case-name} header every module starts with names test
    modules that exist;
  - the paths C{doc/architecture.md} names exist;
  - private names of Twisted and of the standard library are used in
    L{smx._twistedcompat} only.

They read the files of the checkout they are run from.
"""

from __future__ import annotations

import ast
import os
import re
from typing import Dict, Iterator, List, Set, Tuple

from twisted.trial import unittest

import smx

PACKAGE = os.path.dirname(os.path.abspath(smx.__file__))
ROOT = os.path.dirname(PACKAGE)
ARCHITECTURE = os.path.join(ROOT, "doc", "architecture.md")

#: the one module allowed to use private names of Twisted and the stdlib,
#: and its tests
COMPAT = (
    os.path.join(PACKAGE, "_twistedcompat.py"),
    os.path.join(PACKAGE, "test", "test_twistedcompat.py"),
)

_HEADER = re.compile(rb"-\*-\s*test-case-name:\s*([^\s]+?)\s*-\*-")


def sourceFiles() -> Iterator[str]:
    """
    Every C{.py} file under C{smx/}, in a stable order.
    """
    for directory, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_trial_temp", ".")))
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(directory, name)


def relative(path: str) -> str:
    return os.path.relpath(path, ROOT)


def moduleExists(dotted: str) -> bool:
    """
    Is C{dotted} (C{smx.x.y}) a module or package of this tree?
    """
    parts = dotted.split(".")
    if not parts or parts[0] != "smx" or not all(p.isidentifier() for p in parts):
        return False
    base = os.path.join(ROOT, *parts)
    return os.path.isfile(base + ".py") or os.path.isfile(
        os.path.join(base, "__init__.py")
    )


def testCaseNames(path: str) -> List[str]:
    """
    The modules named by the C{test-case-name} header of C{path} (in its
    first two lines), or C{[]} if it has none.
    """
    with open(path, "rb") as f:
        head = b"".join([f.readline(), f.readline()])
    m = _HEADER.search(head)
    if m is None:
        return []
    return [n for n in m.group(1).decode("ascii", "replace").split(",") if n]


def hasCode(path: str) -> bool:
    """
    Has C{path} anything but (at most) a docstring?
    """
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), path)
    body = tree.body
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
    ):
        body = body[1:]
    return bool(body)


class TestCaseNameTests(unittest.SynchronousTestCase):
    """
    The C{# -*- test-case-name: ... -*-} header of every module.
    """

    maxDiff = None

    def test_namedModulesExist(self) -> None:
        """
        Every module named in a C{test-case-name} header exists.
        """
        wrong = []
        for path in sourceFiles():
            for name in testCaseNames(path):
                if not moduleExists(name):
                    wrong.append("%s names %s" % (relative(path), name))
        self.assertEqual(wrong, [], "test-case-name headers name missing modules")

    def test_everyModuleHasOne(self) -> None:
        """
        Every module with code in it starts with a C{test-case-name}
        header.
        """
        missing = [
            relative(path)
            for path in sourceFiles()
            if hasCode(path) and not testCaseNames(path)
        ]
        self.assertEqual(missing, [], "modules without a test-case-name header")

    def test_checks(self) -> None:
        """
        L{moduleExists} knows modules and packages from missing names.
        """
        self.assertTrue(moduleExists("smx.test.test_tree"))
        self.assertTrue(moduleExists("smx.test"))
        self.assertFalse(moduleExists("smx.test.test_nothing_here"))
        self.assertFalse(moduleExists("twisted.test"))
        self.assertFalse(moduleExists("smx..test"))


#: a backquoted token of a Markdown text
_CODE = re.compile(r"`([^`\s]+)`")


def documentedPaths(text: str) -> List[Tuple[int, str]]:
    """
    The file and directory paths a Markdown document names in backquotes:
    C{smx/...}, C{doc/...}, C{bench/...}, C{twisted/...} paths, and bare
    C{name.py} names, which are taken relative to the last directory
    named before them on the same line (C{`smx/queue/` (`qmgr.py`, ...)}).
    Names with wildcards or placeholders (C{*}, C{<}) are skipped.

    @return: C{(line number, path relative to the checkout)} pairs.
    """
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        directory = None
        for token in _CODE.findall(line):
            if "*" in token or "<" in token or "[" in token:
                continue
            if token.split("/")[0] in ("smx", "doc", "bench", "twisted", "tools"):
                out.append((number, token))
                if token.endswith("/"):
                    directory = token
                else:
                    directory = os.path.dirname(token) + "/"
            elif token.endswith(".py") and "/" not in token:
                if directory is not None:
                    out.append((number, directory + token))
                else:
                    out.append((number, "smx/**/" + token))
    return out


def pathExists(path: str) -> bool:
    """
    Does C{path} (relative to the checkout; C{smx/**/NAME} means NAME
    anywhere under C{smx/}) exist?
    """
    if path.startswith("smx/**/"):
        name = path[len("smx/**/") :]
        return any(os.path.basename(p) == name for p in sourceFiles())
    return os.path.exists(os.path.join(ROOT, path))


class ArchitectureDocumentTests(unittest.SynchronousTestCase):
    """
    C{doc/architecture.md} names files that exist.
    """

    maxDiff = None

    def test_pathsExist(self) -> None:
        """
        Every path (and every bare module name) in backquotes in
        C{doc/architecture.md} exists.
        """
        if not os.path.exists(ARCHITECTURE):
            raise unittest.SkipTest("not run from a source tree")
        with open(ARCHITECTURE, encoding="utf-8") as f:
            text = f.read()
        paths = documentedPaths(text)
        self.assertGreater(len(paths), 20)
        wrong = [
            "doc/architecture.md:%d: %s" % (n, p) for n, p in paths if not pathExists(p)
        ]
        self.assertEqual(wrong, [], "paths named in doc/architecture.md are missing")

    def test_documentedPaths(self) -> None:
        """
        Bare module names are taken relative to the directory named
        before them on their line.
        """
        self.assertEqual(
            documentedPaths(
                "| `smx/queue/` (`qmgr.py`, `nope.py`) | `smx/mail/server.py`, "
                "`address.py` |\n`smx.conf`, `test_integration_*.py`, `cdb.py`"
            ),
            [
                (1, "smx/queue/"),
                (1, "smx/queue/qmgr.py"),
                (1, "smx/queue/nope.py"),
                (1, "smx/mail/server.py"),
                (1, "smx/mail/address.py"),
                (2, "smx/**/cdb.py"),
            ],
        )
        self.assertTrue(pathExists("smx/**/cdb.py"))
        self.assertFalse(pathExists("smx/queue/nope.py"))


def _privateUses(path: str, defined: Set[str]) -> List[str]:
    """
    The private names of other packages that C{path} uses: C{from M import
    _x} and C{import M._x} for a module C{M} outside smx, and C{obj._x}
    for an C{_x} that smx itself never defines (so it comes from Twisted
    or the standard library).
    """
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), path)
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in ("smx", "__future__"):
                continue
            if any(_private(p) for p in node.module.split(".")):
                uses.append("%d: from %s import" % (node.lineno, node.module))
            for alias in node.names:
                if _private(alias.name):
                    uses.append(
                        "%d: from %s import %s" % (node.lineno, node.module, alias.name)
                    )
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] != "smx" and any(_private(p) for p in parts):
                    uses.append("%d: import %s" % (node.lineno, alias.name))
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            if node.attr not in defined:
                uses.append("%d: %s" % (node.lineno, ast.unparse(node)))
    return uses


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _definedNames(paths: List[str]) -> Set[str]:
    """
    Every name smx defines: functions, classes, attributes assigned,
    arguments, names imported from smx modules.
    """
    defined = set()  # type: Set[str]
    for path in paths:
        if path in COMPAT:
            continue
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(
                node.ctx, (ast.Store, ast.Del)
            ):
                defined.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
            elif isinstance(node, ast.arg):
                defined.add(node.arg)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "smx"
            ):
                defined.update(a.asname or a.name for a in node.names)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "setattr"
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
            ):
                defined.add(str(node.args[1].value))
    return defined


class PrivateNamesTests(unittest.SynchronousTestCase):
    """
    Private names of Twisted and the standard library are used in
    L{smx._twistedcompat} only.
    """

    maxDiff = None

    def test_onlyInCompat(self) -> None:
        """
        No module but L{smx._twistedcompat} imports a private name of
        another package or uses an underscore attribute that smx does not
        define itself.
        """
        paths = list(sourceFiles())
        defined = _definedNames(paths)
        found: Dict[str, List[str]] = {}
        for path in paths:
            if path in COMPAT:
                continue
            uses = _privateUses(path, defined)
            if uses:
                found[relative(path)] = uses
        self.assertEqual(
            found, {}, "private names of Twisted or the stdlib outside _twistedcompat"
        )

    def test_detects(self) -> None:
        """
        The check finds private imports and attributes, and not smx's own.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                "from twisted.mail.maildir import _MaildirNameGenerator\n"
                "import twisted.internet._sslverify\n"
                "from smx.x import _mine\n"
                "d._runningCallbacks\n"
                "self._ours\n"
            )
        self.assertEqual(
            _privateUses(path, {"_ours"}),
            [
                "1: from twisted.mail.maildir import _MaildirNameGenerator",
                "2: import twisted.internet._sslverify",
                "4: d._runningCallbacks",
            ],
        )


class BerkeleyDBImportTests(unittest.SynchronousTestCase):
    """
    The choice between C{berkeleydb} and C{bsddb3} is made in L{smx.bdb}
    only.
    """

    def test_onlyInBdb(self) -> None:
        """
        No other module imports C{berkeleydb} or C{bsddb3}.
        """
        wrong = []
        for path in sourceFiles():
            if path in (
                os.path.join(PACKAGE, "bdb.py"),
                os.path.join(PACKAGE, "test", "test_bdb.py"),
            ):
                continue
            with open(path, "rb") as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                names = []  # type: List[str]
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module or ""]
                for name in names:
                    if name.split(".")[0] in ("berkeleydb", "bsddb3"):
                        wrong.append("%s:%d" % (relative(path), node.lineno))
        self.assertEqual(wrong, [], "import smx.bdb instead")


class SwallowedExceptionTests(unittest.SynchronousTestCase):
    """
    No failure is swallowed whole: C{except Exception: pass} (or a bare
    C{except:} or C{except BaseException:} doing nothing) hides bugs; name
    the exception expected, or log what happened with C{sev=}.
    """

    def test_none(self) -> None:
        """
        No handler of every exception has just C{pass} for its body.
        """
        wrong = []
        for path in sourceFiles():
            with open(path, "rb") as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if not isinstance(node, ast.ExceptHandler):
                    continue
                catchAll = node.type is None or (
                    isinstance(node.type, ast.Name)
                    and node.type.id in ("Exception", "BaseException")
                )
                if catchAll and all(isinstance(s, ast.Pass) for s in node.body):
                    wrong.append("%s:%d" % (relative(path), node.lineno))
        self.assertEqual(wrong, [], "except Exception: pass")


#: the most lines a module of smx/mail (not its tests) may have
MAIL_MODULE_LINES = 800


class ModuleSizeTests(unittest.SynchronousTestCase):
    """
    The modules of C{smx/mail} stay small enough to read: one job each,
    at most L{MAIL_MODULE_LINES} lines (split a growing one by its jobs,
    as C{smtps.py} was into C{commit.py}, C{authcommands.py}, ...).
    """

    def test_mailModules(self) -> None:
        """
        No module of C{smx/mail} outside its tests is longer than
        L{MAIL_MODULE_LINES} lines.
        """
        mail = os.path.join(PACKAGE, "mail")
        long = []
        for name in sorted(os.listdir(mail)):
            if name.endswith(".py"):
                with open(os.path.join(mail, name), "rb") as f:
                    lines = f.read().count(b"\n")
                if lines > MAIL_MODULE_LINES:
                    long.append("smx/mail/%s: %d lines" % (name, lines))
        self.assertEqual(long, [])
