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
    - a C{key_file} that others may read or write is an error (seed
      §9.2): App. D says private keys are protected only by the
      permissions of the file system (group-readable is allowed, for a
      key shared by server and client);
    - a certificate past its end is a warning.

The C{certificate} subsections of an C{smtps} C{tls} section (the
certificates chosen by SNI, L{smx.config.tlsserveroptions}) are checked
as its own C{cert_file} and C{key_file} are.

L{checkFiles} returns the errors and adds the warnings to
L{Configuration.warnings}.
"""

from __future__ import annotations

import datetime
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


def _checkKeyMode(tls: "Section", errors: List[ConfigError]) -> None:
    """
    An error if others (not the owner, not the group) may read or write
    the private key (seed §9.2, App. D).
    """
    path = tls["key_file"]
    try:
        mode = os.stat(path).st_mode
    except OSError:  # pragma: no cover - it was just opened
        return
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        errors.append(
            tls.error(
                "key_file %s is %s by others (mode %04o); make it 0600 (0640 "
                "for a key shared by server and client, App. D)"
                % (
                    path,
                    "readable" if mode & stat.S_IROTH else "writable",
                    stat.S_IMODE(mode),
                ),
                "key_file",
            )
        )


def _checkExpiry(tls: "Section") -> None:
    """
    Warn about a certificate past its end: clients that verify refuse
    it (a renewal that did not happen).
    """
    from cryptography import x509

    try:
        with open(tls["cert_file"], "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError):  # pragma: no cover - it was just loaded
        return
    end = cert.not_valid_after_utc
    if end < datetime.datetime.now(datetime.timezone.utc):
        tls.configuration.warn(
            "cert_file %s expired on %s"
            % (tls["cert_file"], end.strftime("%Y-%m-%d %H:%M:%S UTC")),
            tls.positionOf("cert_file"),
        )


def _checkCertificateAndKey(tls: "Section", errors: List[ConfigError]) -> None:
    if not tls.isSet("cert_file") or not tls.isSet("key_file"):
        return  # one without the other is an error of reconcile
    certOK = _readable(tls, "cert_file", errors)
    keyOK = _readable(tls, "key_file", errors)
    if keyOK:
        _checkKeyMode(tls, errors)
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
        return
    _checkExpiry(tls)


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
            tls = section.section("tls")
            found.append(tls)
            if keyword == "smtps":
                # the certificates chosen by server name (SNI)
                found.extend(tls.sections("certificate"))
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
        if tls.keyword.lower() == "tls":
            _checkCAs(tls, errors)
    from smx.tlspolicy.policymap import checkPolicyMaps

    checkPolicyMaps(configuration)  # a warning: the map may come later
    errors.sort(key=lambda e: (e.line or 0, e.column or 0))
    return errors
