# -*- test-case-name: smx.config.test.test_files -*-
"""
Check the files a configuration names, as C{smx config} and C{twistd smx}
do before anything starts: a mistake is found where it was made (the file,
line and column of the option), not when the first client says STARTTLS.

The TLS files of every C{smtps} and C{smtpc} section (seed §5.9 item 18,
§5.10, App. D):

    - C{cert_file} and C{key_file} exist, can be read and are PEM that
      OpenSSL accepts, and the key belongs to the certificate (both are
      loaded into one C{SSL.Context} and C{check_privatekey} is asked);
    - C{CAcert_file} can be loaded, C{CAcert_path} is a directory;
    - a C{key_file} that everybody may read is a warning: App. D says
      private keys are protected only by the permissions of the file
      system (group-readable is allowed, for a key shared by server and
      client).

L{checkFiles} returns the errors and adds the warnings to
L{Configuration.warnings}.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, List

from OpenSSL import SSL, crypto

from smx.config.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from smx.config.model import Configuration, Section


def _why(e: Exception) -> str:
    """
    One line for an OpenSSL or OS error.
    """
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    if isinstance(e, (SSL.Error, crypto.Error)) and e.args and e.args[0]:
        reasons = [
            str(item[2]) for item in e.args[0] if isinstance(item, tuple) and item[2:]
        ]
        if reasons:
            return "; ".join(reasons)
    return str(e) or e.__class__.__name__


def _readable(tls: "Section", name: str, errors: List[ConfigError]) -> bool:
    """
    Whether the file of option C{name} can be opened for reading; if not,
    an error at the option.
    """
    path = tls[name]
    try:
        with open(path, "rb"):
            pass
    except IsADirectoryError:
        errors.append(
            tls.error("%s %s is a directory, not a file" % (name, path), name)
        )
        return False
    except OSError as e:
        errors.append(tls.error("%s %s: %s" % (name, path, _why(e)), name))
        return False
    return True


def _checkKeyMode(tls: "Section") -> None:
    """
    Warn if everybody may read the private key.
    """
    path = tls["key_file"]
    try:
        mode = os.stat(path).st_mode
    except OSError:  # pragma: no cover - it was just opened
        return
    if mode & stat.S_IROTH:
        tls.configuration.warn(
            "key_file %s is readable by everyone (mode %04o); make it 0600 "
            "(0640 for a key shared by server and client, App. D)"
            % (path, stat.S_IMODE(mode)),
            tls.positionOf("key_file"),
        )


def _checkCertificateAndKey(tls: "Section", errors: List[ConfigError]) -> None:
    if not tls.isSet("cert_file") or not tls.isSet("key_file"):
        return  # one without the other is an error of reconcile
    certOK = _readable(tls, "cert_file", errors)
    keyOK = _readable(tls, "key_file", errors)
    if keyOK:
        _checkKeyMode(tls)
    if not (certOK and keyOK):
        return
    try:
        SSL.Context(SSL.TLS_METHOD).use_certificate_chain_file(tls["cert_file"])
    except (OSError, SSL.Error) as e:
        certOK = False
        errors.append(
            tls.error(
                "cert_file %s is not a PEM certificate: %s"
                % (tls["cert_file"], _why(e)),
                "cert_file",
            )
        )
    try:
        SSL.Context(SSL.TLS_METHOD).use_privatekey_file(tls["key_file"])
    except (OSError, SSL.Error) as e:
        keyOK = False
        errors.append(
            tls.error(
                "key_file %s is not an unencrypted PEM private key: %s"
                % (tls["key_file"], _why(e)),
                "key_file",
            )
        )
    if not (certOK and keyOK):
        return
    # both are fine on their own: do they belong together?  (OpenSSL 3
    # already refuses a key that does not match when it is loaded)
    context = SSL.Context(SSL.TLS_METHOD)
    try:
        context.use_certificate_chain_file(tls["cert_file"])
        context.use_privatekey_file(tls["key_file"])
        context.check_privatekey()
    except SSL.Error:
        errors.append(
            tls.error(
                "key_file %s does not belong to the certificate in cert_file %s"
                % (tls["key_file"], tls["cert_file"]),
                "key_file",
            )
        )


def _checkCAs(tls: "Section", errors: List[ConfigError]) -> None:
    if tls.isSet("CAcert_file") and _readable(tls, "CAcert_file", errors):
        context = SSL.Context(SSL.TLS_METHOD)
        try:
            context.load_verify_locations(tls["CAcert_file"].encode(), None)
        except (OSError, SSL.Error) as e:
            errors.append(
                tls.error(
                    "CAcert_file %s has no PEM certificates: %s"
                    % (tls["CAcert_file"], _why(e)),
                    "CAcert_file",
                )
            )
    if tls.isSet("CAcert_path") and not os.path.isdir(tls["CAcert_path"]):
        errors.append(
            tls.error(
                "CAcert_path %s is not a directory" % (tls["CAcert_path"],),
                "CAcert_path",
            )
        )


def _tlsSections(configuration: "Configuration") -> List["Section"]:
    found = []
    for keyword in ("smtps", "smtpc"):
        for section in configuration.sections(keyword):
            found.append(section.section("tls"))
    return found


def checkFiles(configuration: "Configuration") -> List[ConfigError]:
    """
    Check the TLS files of every C{smtps} and C{smtpc} section.

    @return: one L{ConfigError} per problem (at the option that names the
        file), in file order; warnings go to
        L{Configuration.warnings <smx.config.model.Configuration.warnings>}.
    """
    errors: List[ConfigError] = []
    for tls in _tlsSections(configuration):
        _checkCertificateAndKey(tls, errors)
        _checkCAs(tls, errors)
    errors.sort(key=lambda e: (e.line or 0, e.column or 0))
    return errors
