#!/bin/sh
# Install everything smx needs on a Debian 12 machine: Debian packages
# (only those that are missing, so a second run is fast and needs no
# network) and the Python packages into the local virtual environment .venv.
# Idempotent; used by "make run", "make test" and "make bench".
set -eu
cd "$(dirname "$0")/.."

DEBS="python3 python3-venv python3-dev build-essential libdb5.3-dev db5.3-util \
postfix swaks libnet-ssleay-perl dovecot-lmtpd dovecot-core sasl2-bin dnsmasq-base \
openssl postgrey postfix-policyd-spf-python socat \
python3-milter opendkim opendkim-tools bsd-mailx prometheus iproute2"
# iproute2 is for ss(8), with which split mode's tests see which process
# holds a connection on the port the SMTPS processes share.
# bsd-mailx is the mail(1) the smx sendmail tests run (with their own MAILRC,
# never the system's /usr/sbin/sendmail).
# postgrey and policyd-spf (run through socat) are Postfix policy servers the
# tests start themselves, on their own sockets; the postgrey service Debian
# starts on installation (127.0.0.1:10023) is not used.
# python3-milter (for Debian's /usr/bin/python3, not .venv) and opendkim are
# milters the milter client's tests start themselves, on their own sockets.
# prometheus is there for its promtool, which checks smx's metrics text; the
# tests never start the Prometheus server.

missing=""
for p in $DEBS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "bootstrap: installing Debian packages:$missing"
    # Postfix is installed only for its tools (smtp-sink, smtp-source);
    # "No configuration" leaves the daemon stopped and unconfigured.
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    echo "postfix postfix/mailname string smx-test.localdomain" | $SUDO debconf-set-selections
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi

# The environment is built from Debian's /usr/bin/python3, which every user
# can run: in split mode the components run as smxs, smxq, smxc and smxm
# (an interpreter under /root, e.g. pyenv's, cannot be entered by them).
# A .venv made from another interpreter, or one that no longer runs, is
# made again.
PYTHON=${PYTHON:-/usr/bin/python3}
umask 022   # files in .venv readable by every user
if [ -f .venv/pyvenv.cfg ]; then
    home=$(sed -n 's/^home *= *//p' .venv/pyvenv.cfg)
    if [ "$home" != "$(dirname "$PYTHON")" ] || ! .venv/bin/python -c '' 2>/dev/null; then
        echo "bootstrap: .venv was made from $home, not $(dirname "$PYTHON"): making it again from $PYTHON"
        rm -rf .venv
    fi
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.smx-installed
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip
    # berkeleydb builds against Debian's libdb5.3-dev.
    BERKELEYDB_DIR=/usr .venv/bin/pip install -q --config-settings editable_mode=compat -e '.[test]'
    touch "$stamp"
fi
# smx-postdrop: the set-group-id helper of smx sendmail (contrib/), made
# set-group-id by "smx setup"; a rebuilt one keeps the owner and mode.
if [ ! -x .venv/bin/smx-postdrop ] || [ contrib/smx-postdrop.c -nt .venv/bin/smx-postdrop ]; then
    cc -O2 -Wall -o .venv/bin/smx-postdrop.new contrib/smx-postdrop.c
    if [ -e .venv/bin/smx-postdrop ]; then
        chown --reference=.venv/bin/smx-postdrop .venv/bin/smx-postdrop.new 2>/dev/null || true
        chmod --reference=.venv/bin/smx-postdrop .venv/bin/smx-postdrop.new
    fi
    mv -f .venv/bin/smx-postdrop.new .venv/bin/smx-postdrop
fi
# In split mode every component user must be able to run .venv/bin/python
# and import smx from this checkout.
if [ "$(id -u)" -eq 0 ] && command -v runuser >/dev/null \
        && ! runuser -u nobody -- .venv/bin/python -c 'import smx, twisted' 2>/dev/null; then
    echo "bootstrap: note: other users cannot run $(pwd)/.venv/bin/python with smx;" \
        "for split mode put the checkout where every user can read it (e.g. /opt/smx)"
fi
