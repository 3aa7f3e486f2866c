#!/usr/bin/python3
# -*- test-case-name: smx.mcp.test.test_integration_mcp -*-
"""
A small program the tests of the MCP start (standard library only, so
that any user can run it with C{/usr/bin/python3}):

    child.py [-i ID] RECORD NAME MODE

It appends C{"start NAME PID UID ID"} to the file RECORD (C{-} without
C{-i}), then
acts by MODE: C{sleep} (until a signal), C{crash} (exit 3 at once),
C{usage} (exit 64), C{config} (exit 78), C{accept} (accept on descriptor
0 and answer C{"220 PID"}), C{inetd} (answer C{"220 PID"} on descriptor 1
and read descriptor 0 until the end), C{serve} (fetch the listening
socket over the C{pass_fd_socket} named by C{$SMX_TEST_PASS} and answer
every connection with C{"220 PID"} until the client closes it).  On
SIGTERM it appends C{"term NAME PID"} and exits 0; on SIGUSR1 and SIGUSR2
it appends C{"usr1 NAME PID"} / C{"usr2 NAME PID"}.
"""

import os
import signal
import socket
import sys
import time


def record(path, line):
    with open(path, "a") as f:
        f.write(line + "\n")


def main():
    args = sys.argv[1:]
    number = "-"
    if args[0] == "-i":
        number, args = args[1], args[2:]
    path, name, mode = args[:3]
    pid = os.getpid()
    record(path, "start %s %d %d %s" % (name, pid, os.getuid(), number))

    def term(signum, frame):
        record(path, "term %s %d" % (name, pid))
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGUSR1, lambda s, f: record(path, "usr1 %s %d" % (name, pid)))

    def usr2(signum, frame):
        record(path, "usr2 %s %d" % (name, pid))
        print("%s got SIGUSR2" % (name,), flush=True)

    signal.signal(signal.SIGUSR2, usr2)
    if mode != "inetd":
        print("%s running as %d" % (name, os.getuid()), flush=True)
    if mode == "crash":
        sys.exit(3)
    if mode == "usage":
        sys.exit(64)
    if mode == "config":
        sys.exit(78)
    if mode == "accept":
        # mcp_type = accept: the listening socket is descriptor 0
        listener = socket.socket(fileno=0)
        while True:
            connection, peer = listener.accept()
            connection.sendall(b"220 %d\r\n" % (pid,))
            connection.close()
    if mode == "inetd":
        # mcp_type = nostartaccept: the connection is descriptors 0 and 1
        os.write(1, b"220 %d\r\n" % (pid,))
        while os.read(0, 1024):
            pass
        sys.exit(0)
    if mode == "serve":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        for i in range(100):
            try:
                sock.connect(os.environ["SMX_TEST_PASS"])
                break
            except OSError:
                time.sleep(0.05)
        data, fds, flags, address = socket.recv_fds(sock, 16, 1)
        sock.close()
        listener = socket.socket(fileno=fds[0])
        listener.setblocking(True)
        while True:
            connection, peer = listener.accept()
            connection.sendall(b"220 %d\r\n" % (pid,))
            while connection.recv(1024):
                pass
            connection.close()
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
