/*
 * NAME
 *     smx-postdrop - put one message into smx's maildrop directory
 *
 * SYNOPSIS
 *     smx-postdrop DIRECTORY < maildrop-file
 *
 * DESCRIPTION
 *     smx sendmail (smx/scripts/sendmail.py) runs this program when smx
 *     does not take a message and the user may not write the maildrop
 *     directory himself.  It is the counterpart of Postfix's postdrop:
 *     installed set-group-id to the maildrop group (smxdrop, made by
 *     "smx setup"), it creates one file in DIRECTORY and copies its
 *     standard input into it, and does nothing else.  The file is the
 *     whole maildrop file as smx.queue.maildrop writes it; pickup checks
 *     every byte of it, so this program does not read it.
 *
 *     The file is written under a temporary name (.tmp.NAME.XXXXXXXX),
 *     mode 0640, fsynced, renamed to NAME (SECONDS.MICROSECONDS.PID.RANDOM,
 *     the names of smx.queue.maildrop) and fsynced again, which on ext4
 *     and XFS commits the rename too (the group may not open the
 *     directory to fsync it: it has no read permission).  The name is
 *     printed on standard output, then the program exits with 0.
 *
 * SECURITY
 *     The only privilege is the maildrop group.  The program takes no
 *     environment, follows no symbolic link for the file it creates,
 *     creates it with O_EXCL, and writes only into a directory that
 *     looks like a maildrop directory: it belongs to the program's
 *     effective group, has the sticky bit (nobody removes another's
 *     file), no read permission for the group (nobody lists the files)
 *     and no write permission for others (mode 1730 or 3730).  The file
 *     belongs to the user who ran it, which pickup logs as the sender.
 *     Standard input, output and error are made to exist before any file
 *     is opened.
 *
 * EXIT STATUS
 *     0 done; 64 usage; 75 the directory or the file could not be
 *     written (e.g. smx never ran, the disk is full); 77 DIRECTORY is
 *     not a maildrop directory of this group; 74 reading standard input
 *     failed; 71 a system call that should not fail failed.  A program
 *     that is not set-group-id (not yet made so by "smx setup") says so
 *     (exit 77).
 *
 * Built by tools/bootstrap.sh into .venv/bin/smx-postdrop; made
 * set-group-id by "smx setup".
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define EX_USAGE 64
#define EX_OSERR 71
#define EX_IOERR 74
#define EX_TEMPFAIL 75
#define EX_NOPERM 77

static const char *program = "smx-postdrop";
static int directoryFd = -1;
static char temporary[128];

static void fail(int status, const char *what, const char *why)
{
    if (temporary[0] != '\0' && directoryFd >= 0)
        unlinkat(directoryFd, temporary, 0);
    fprintf(stderr, "%s: %s: %s\n", program, what, why);
    exit(status);
}

/* make sure 0, 1 and 2 are open, so that no file we open becomes one */
static void standardDescriptors(void)
{
    int fd;

    for (fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) == -1 && errno == EBADF) {
            if (open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY) != fd)
                exit(EX_OSERR);
        }
    }
}

static void randomHex(char *out, size_t bytes)
{
    unsigned char buffer[16];
    size_t i;

    if (bytes > sizeof(buffer)
        || getrandom(buffer, bytes, 0) != (ssize_t) bytes)
        fail(EX_OSERR, "getrandom", strerror(errno));
    for (i = 0; i < bytes; i++)
        sprintf(out + 2 * i, "%02x", buffer[i]);
}

int main(int argc, char **argv)
{
    struct stat st;
    struct timeval now;
    char name[96], salt[9], random[17];
    char buffer[65536];
    const char *directory;
    int fd;
    ssize_t got;

    standardDescriptors();
    if (argc != 2 || argv[1][0] == '\0') {
        fprintf(stderr, "usage: %s DIRECTORY < maildrop-file\n", program);
        return EX_USAGE;
    }
    directory = argv[1];
    /* O_PATH: the group may search the directory, not read it */
    directoryFd = open(directory, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (directoryFd < 0)
        fail(EX_TEMPFAIL, directory, strerror(errno));
    if (fstat(directoryFd, &st) < 0)
        fail(EX_OSERR, directory, strerror(errno));
    if (st.st_gid != getegid() && getegid() == getgid())
        fail(EX_NOPERM, "not set-group-id",
             "\"smx setup\" makes it set-group-id the maildrop group "
             "(root:smxdrop, mode 2755; doc/setup.md)");
    if (st.st_gid != getegid() || !(st.st_mode & S_ISVTX)
        || (st.st_mode & (S_IRGRP | S_IWOTH))
        || (st.st_mode & (S_IWGRP | S_IXGRP)) != (S_IWGRP | S_IXGRP))
        fail(EX_NOPERM, directory,
             "not a maildrop directory of this program's group "
             "(mode 1730 or 3730 and the group of smx-postdrop wanted)");

    if (gettimeofday(&now, NULL) < 0)
        fail(EX_OSERR, "gettimeofday", strerror(errno));
    randomHex(random, 8);
    randomHex(salt, 4);
    snprintf(name, sizeof(name), "%ld.%06ld.%ld.%s", (long) now.tv_sec,
             (long) now.tv_usec, (long) getpid(), random);
    snprintf(temporary, sizeof(temporary), ".tmp.%s.%s", name, salt);

    fd = openat(directoryFd, temporary,
                O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (fd < 0) {
        temporary[0] = '\0';
        fail(EX_TEMPFAIL, directory, strerror(errno));
    }
    if (fchmod(fd, 0640) < 0)
        fail(EX_TEMPFAIL, temporary, strerror(errno));
    for (;;) {
        got = read(0, buffer, sizeof(buffer));
        if (got == 0)
            break;
        if (got < 0) {
            if (errno == EINTR)
                continue;
            fail(EX_IOERR, "standard input", strerror(errno));
        }
        char *p = buffer;
        while (got > 0) {
            ssize_t put = write(fd, p, (size_t) got);
            if (put < 0) {
                if (errno == EINTR)
                    continue;
                fail(EX_TEMPFAIL, temporary, strerror(errno));
            }
            p += put;
            got -= put;
        }
    }
    if (fsync(fd) < 0)
        fail(EX_TEMPFAIL, temporary, strerror(errno));
    if (renameat(directoryFd, temporary, directoryFd, name) < 0)
        fail(EX_TEMPFAIL, temporary, strerror(errno));
    temporary[0] = '\0';
    /* commits the journal transaction that holds the rename */
    if (fsync(fd) < 0 || close(fd) < 0) {
        unlinkat(directoryFd, name, 0);
        fail(EX_TEMPFAIL, name, strerror(errno));
    }
    /* root or the directory's owner may also fsync the directory */
    fd = openat(directoryFd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    if (printf("%s\n", name) < 0 || fflush(stdout) != 0)
        return EX_IOERR;
    return 0;
}
