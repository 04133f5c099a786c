"""flowcept.ops.safefs: the checks a root-run epilog relies on, exercised on real files."""

import os
import stat
import tempfile

import pytest

from flowcept.ops.safefs import (
    UnsafePathError,
    check_dir_chain,
    dir_is_acceptable,
    drop_privileges,
    make_private_dir,
    open_owned,
    safe_listdir,
)

ME = os.geteuid()
FOREIGN_UID = 12345
NOBODY = 65534

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown to another uid / setuid)")


def _read_fd(fd):
    try:
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- open_owned


def test_open_owned_reads_own_regular_file(tmp_path):
    f = tmp_path / "ring.0"
    f.write_bytes(b"records")
    fd = open_owned(f, ME)
    flags = __import__("fcntl").fcntl(fd, __import__("fcntl").F_GETFL)
    assert not flags & os.O_NONBLOCK  # the FIFO guard is not left on the caller's fd
    assert _read_fd(fd) == b"records"


def test_symlink_in_place_of_file_is_refused(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"root only")
    planted = tmp_path / "ring.0"
    planted.symlink_to(secret)
    with pytest.raises(UnsafePathError) as info:
        open_owned(planted, ME)
    assert "symbolic link" in info.value.reason
    assert info.value.path == str(planted)
    assert isinstance(info.value, OSError)


def test_dangling_symlink_is_refused_and_nothing_created(tmp_path):
    target = tmp_path / "would_be_created"
    planted = tmp_path / "spool.bin"
    planted.symlink_to(target)
    with pytest.raises(UnsafePathError):
        open_owned(planted, ME, os.O_WRONLY | os.O_CREAT)
    assert not target.exists()


@needs_root
def test_file_owned_by_another_uid_is_refused(tmp_path):
    f = tmp_path / "ring.0"
    f.write_bytes(b"x")
    os.chown(f, FOREIGN_UID, FOREIGN_UID)
    with pytest.raises(UnsafePathError) as info:
        open_owned(f, ME)
    assert str(FOREIGN_UID) in info.value.reason
    # and the same file is fine for its owner
    assert _read_fd(open_owned(f, FOREIGN_UID)) == b"x"


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "ring.0"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(UnsafePathError) as info:
        open_owned(fifo, ME)  # would block forever without O_NONBLOCK
    assert "regular file" in info.value.reason


def test_directory_is_refused(tmp_path):
    with pytest.raises(UnsafePathError):
        open_owned(tmp_path, ME)


def test_open_owned_relative_to_checked_dir_fd(tmp_path):
    d = tmp_path / "listed"
    d.mkdir()
    (d / "a").write_bytes(b"A")
    dfd = check_dir_chain(d, ME)
    try:
        assert safe_listdir(dfd) == ["a"]
        assert _read_fd(open_owned("a", ME, dir_fd=dfd)) == b"A"
        assert safe_listdir(dfd) == ["a"]  # the listing did not consume the descriptor
    finally:
        os.close(dfd)


# --------------------------------------------------------------------------- check_dir_chain


def test_dir_chain_accepts_own_tree_and_dev_shm(tmp_path):
    d = tmp_path / "job" / "rings"
    d.mkdir(parents=True)
    os.close(check_dir_chain(d, ME))
    if os.path.isdir("/dev/shm") and not os.path.islink("/dev/shm"):
        # root-owned and sticky: acceptable for any uid
        os.close(check_dir_chain("/dev/shm", NOBODY))


def test_symlinked_dir_component_is_refused(tmp_path):
    real = tmp_path / "real"
    (real / "rings").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(UnsafePathError) as info:
        check_dir_chain(tmp_path / "link" / "rings", ME)
    assert info.value.path == str(tmp_path / "link")
    assert "symbolic link" in info.value.reason


def test_symlink_as_last_component_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(UnsafePathError):
        check_dir_chain(tmp_path / "link", ME)


def test_relative_and_dotdot_paths_are_refused(tmp_path):
    with pytest.raises(UnsafePathError):
        check_dir_chain("relative/dir", ME)
    with pytest.raises(UnsafePathError):
        check_dir_chain(f"{tmp_path}/../x", ME)


def test_file_component_is_refused(tmp_path):
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(UnsafePathError):
        check_dir_chain(tmp_path / "f" / "x", ME)


@needs_root
def test_dir_owned_by_another_user_is_refused(tmp_path):
    d = tmp_path / "theirs"
    (d / "inner").mkdir(parents=True)
    os.chown(d, FOREIGN_UID, FOREIGN_UID)
    with pytest.raises(UnsafePathError) as info:
        check_dir_chain(d / "inner", NOBODY)
    assert info.value.path.endswith("/theirs")


@needs_root
def test_root_dir_writable_by_others_without_sticky_is_refused(tmp_path):
    d = tmp_path / "open"
    d.mkdir()
    os.chmod(d, 0o777)  # anyone may swap entries
    with pytest.raises(UnsafePathError) as info:
        check_dir_chain(d, NOBODY)
    assert "sticky" in info.value.reason
    os.chmod(d, 0o1777)  # like /tmp: acceptable
    os.close(check_dir_chain(d, NOBODY))


def test_dir_rule_table():
    def st(mode, uid):
        return os.stat_result((stat.S_IFDIR | mode, 0, 0, 2, uid, 0, 0, 0, 0, 0))

    assert dir_is_acceptable(st(0o755, 0), 1000) is None
    assert dir_is_acceptable(st(0o1777, 0), 1000) is None
    assert dir_is_acceptable(st(0o700, 1000), 1000) is None
    assert dir_is_acceptable(st(0o777, 0), 1000) is not None
    assert dir_is_acceptable(st(0o775, 0), 1000) is not None
    assert dir_is_acceptable(st(0o755, 1001), 1000) is not None
    assert dir_is_acceptable(os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 1000, 0, 0, 0, 0, 0)), 1000)


# --------------------------------------------------------------------------- make_private_dir


def test_make_private_dir_creates_0700(tmp_path):
    old = os.umask(0o077 | 0o200)  # even a hostile umask ends at exactly 0700
    try:
        d = make_private_dir(tmp_path / "priv")
    finally:
        os.umask(old)
    st = os.lstat(d)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == ME


def test_make_private_dir_narrows_existing_mode(tmp_path):
    d = tmp_path / "wide"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    make_private_dir(d)
    assert stat.S_IMODE(os.lstat(d).st_mode) == 0o700


def test_make_private_dir_refuses_symlink(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o755)
    os.chmod(target, 0o755)
    (tmp_path / "priv").symlink_to(target)
    with pytest.raises(UnsafePathError):
        make_private_dir(tmp_path / "priv")
    assert stat.S_IMODE(os.lstat(target).st_mode) == 0o755  # not touched through the link


@needs_root
def test_make_private_dir_refuses_foreign_owned(tmp_path):
    d = tmp_path / "theirs"
    d.mkdir(mode=0o700)
    os.chown(d, FOREIGN_UID, FOREIGN_UID)
    with pytest.raises(UnsafePathError):
        make_private_dir(d)


# --------------------------------------------------------------------------- drop_privileges


def _in_child(fn):
    """Run ``fn`` in a forked child; return its exit status (fn's int, 70 on exception)."""
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 70
        try:
            code = int(fn())
        except BaseException:
            code = 70
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), status
    return os.WEXITSTATUS(status)


@needs_root
def test_drop_privileges_in_forked_child():
    # a traversable directory (pytest's tmp dirs are 0700 root) with a 0600 and a 0644 file
    d = tempfile.mkdtemp(prefix="safefs-")
    try:
        os.chmod(d, 0o755)
        secret = os.path.join(d, "secret")
        public = os.path.join(d, "public")
        for p, mode in ((secret, 0o600), (public, 0o644)):
            with open(p, "wb") as f:
                f.write(b"data")
            os.chmod(p, mode)

        def child():
            drop_privileges(NOBODY)
            if os.getresuid() != (NOBODY,) * 3:
                return 10
            if os.getresgid() != (NOBODY,) * 3 or 0 in os.getgroups():
                return 11
            try:
                os.setuid(0)
                return 12  # regained root: the drop failed
            except PermissionError:
                pass
            with open(public, "rb") as f:  # control: the dir is traversable
                if f.read() != b"data":
                    return 13
            try:
                open(secret, "rb").close()
            except PermissionError:
                return 0  # the expected outcome
            return 14

        assert _in_child(child) == 0
    finally:
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)


@needs_root
def test_drop_privileges_explicit_gid_for_unknown_uid():
    def child():
        drop_privileges(FOREIGN_UID, FOREIGN_UID + 1)
        ok = os.getresuid() == (FOREIGN_UID,) * 3 and os.getresgid() == (FOREIGN_UID + 1,) * 3
        return 0 if ok and os.getgroups() == [FOREIGN_UID + 1] else 20

    assert _in_child(child) == 0


def test_drop_privileges_unknown_uid_needs_gid():
    with pytest.raises(KeyError):
        drop_privileges(987654)


def test_drop_privileges_as_non_root_is_refused_or_noop():
    def child():
        if os.geteuid() == 0:
            drop_privileges(NOBODY)
        # now unprivileged: dropping to ourselves is a no-op, to anyone else an error
        drop_privileges(os.getuid(), os.getgid())
        try:
            drop_privileges(FOREIGN_UID, FOREIGN_UID)
        except PermissionError:
            return 0
        return 30

    assert _in_child(child) == 0
